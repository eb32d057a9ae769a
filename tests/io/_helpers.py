"""Helpers the io tests share: random images, files written with Pillow, 16-bit PNG by hand."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from kmdist.io._open import open_image


def rgb(rng: np.random.Generator, h: int = 37, w: int = 53) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path: Path, arr: np.ndarray, mode: str | None = None, **kw: object) -> Path:
    img = Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    img.save(path, **kw)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(width: int, height: int, depth: int, colour: int, raw: bytes, interlace: int = 0):
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def _filter_row(line: np.ndarray, prev: np.ndarray, kind: int, bpp: int) -> np.ndarray:
    x = line.astype(np.int16)
    up = prev.astype(np.int16)
    left = np.concatenate([np.zeros(bpp, np.int16), x[:-bpp]])
    upleft = np.concatenate([np.zeros(bpp, np.int16), up[:-bpp]])
    if kind == 1:
        pred = left
    elif kind == 2:
        pred = up
    elif kind == 3:
        pred = (left + up) >> 1
    elif kind == 4:
        pa, pb, pc = np.abs(up - upleft), np.abs(left - upleft), np.abs(left + up - 2 * upleft)
        pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    else:
        pred = np.zeros_like(x)
    return ((x - pred) & 0xFF).astype(np.uint8)


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
ADAM7 += ((0, 1, 1, 2),)


def png_by_hand(arr: np.ndarray, colour: int, filters=(0, 1, 2, 3, 4), interlace: int = 0) -> bytes:
    """A PNG of 8- or 16-bit samples (the array's dtype) written by hand, every filter
    type in turn: Pillow cannot write 16-bit colour."""
    h, w, samples = arr.shape
    size = arr.dtype.itemsize
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    raw, n = bytearray(), 0
    for x0, y0, dx, dy in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        lines = sub.astype(f">u{size}").reshape(sub.shape[0], -1).view(np.uint8)
        prev = np.zeros(lines.shape[1], np.uint8)
        for line in lines:
            kind = filters[n % len(filters)]
            n += 1
            raw += bytes([kind]) + _filter_row(line, prev, kind, size * samples).tobytes()
            prev = line
    return png_file(w, h, 8 * size, colour, bytes(raw), interlace)


def png16(arr: np.ndarray, colour: int, filters=(0, 1, 2, 3, 4), interlace: int = 0) -> bytes:
    """A 16-bit PNG written by hand."""
    return png_by_hand(arr.astype(np.uint16), colour, filters, interlace)


def read(path: Path | str, **kw: object) -> np.ndarray:
    return open_image(path, **kw).compute()
