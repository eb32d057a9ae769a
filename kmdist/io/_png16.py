"""Decode the 16-bit colour PNGs that Pillow cannot keep at 16 bits.

Pillow reduces 16-bit RGB, RGBA and grey+alpha PNGs to 8 bits, so these few are decoded
here, with zlib and NumPy.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["PngInfo", "png16_decode", "png_info"]

NDArray = npt.NDArray[Any]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG16_SAMPLES = {2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel: RGB, LA, RGBA
# Adam7 interlacing passes as (x0, y0, dx, dy).
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


@dataclass(frozen=True)
class PngInfo:
    """What the IHDR chunk of a PNG says."""

    width: int
    height: int
    depth: int
    colour: int
    interlaced: bool

    @property
    def own_decoder(self) -> bool:
        """Whether the PNG must be decoded here rather than by Pillow."""
        return self.depth == 16 and self.colour in _PNG16_SAMPLES

    @property
    def channels(self) -> int:
        """Channels kept: alpha dropped."""
        return 1 if self.colour in (0, 4) else 3


def png_info(head: bytes) -> PngInfo | None:
    """Parse the IHDR of a PNG; None if `head` does not start a PNG."""
    if len(head) < 29 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return PngInfo(width, height, depth, colour, interlace == 1)


def png16_decode(data: bytes, info: PngInfo) -> NDArray:
    """Decode a whole 16-bit colour PNG to uint16 (y, x, c), alpha dropped."""
    samples = _PNG16_SAMPLES[info.colour]
    bpp = 2 * samples
    passes = _ADAM7 if info.interlaced else ((0, 0, 1, 1),)
    sizes = [
        (-(-(info.height - y0) // dy), -(-(info.width - x0) // dx)) for x0, y0, dx, dy in passes
    ]
    expected = sum(h * (1 + w * bpp) for h, w in sizes if h > 0 and w > 0)
    raw = zlib.decompressobj().decompress(_png_idat(data), expected)
    if len(raw) < expected:
        raise ValueError(f"truncated PNG data: {len(raw):,} of {expected:,} bytes")
    out = np.empty((info.height, info.width, samples), np.uint16)
    pos = 0
    for (x0, y0, dx, dy), (h, w) in zip(passes, sizes, strict=True):
        if h <= 0 or w <= 0:
            continue  # an empty Adam7 pass has no bytes at all
        rows = np.frombuffer(raw, np.uint8, h * (1 + w * bpp), pos).reshape(h, 1 + w * bpp)
        pos += rows.size
        pixels = _png_unfilter(rows[:, 1:], rows[:, 0], bpp)
        out[y0::dy, x0::dx] = pixels.reshape(h, -1).view(">u2").reshape(h, w, samples)
    return np.ascontiguousarray(out[..., : info.channels])


def _png_idat(data: bytes) -> bytes:
    """Concatenate the IDAT payloads, checking every chunk's CRC."""
    parts, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if len(crc) < 4:
            raise ValueError("truncated PNG chunk")
        if zlib.crc32(kind + body) != struct.unpack(">I", crc)[0]:
            raise ValueError(f"bad CRC in PNG chunk {kind.decode('latin-1')!r}")
        if kind == b"IDAT":
            parts.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    return b"".join(parts)


def _png_unfilter(filtered: NDArray, kinds: NDArray, bpp: int) -> NDArray:
    """Undo PNG's per-row filters; returns uint8 of shape (h, w, bpp)."""
    h = filtered.shape[0]
    cur = filtered.reshape(h, -1, bpp)
    if h and int(kinds.max()) > 4:
        raise ValueError(f"invalid PNG filter type {int(kinds.max())}")
    if h == 0 or int(kinds.max()) <= 2:
        return _unfilter_rows(cur, kinds)
    return _unfilter_wavefront(cur, kinds)


def _unfilter_rows(cur: NDArray, kinds: NDArray) -> NDArray:
    # None, Sub and Up only: each row is one vectorised step (Sub is a running sum).
    out = np.empty_like(cur)
    prev = np.zeros_like(cur[0])
    for i, kind in enumerate(kinds):
        if kind == 1:
            row = np.cumsum(cur[i], axis=0, dtype=np.uint8)
        elif kind == 2:
            row = cur[i] + prev
        else:
            row = cur[i]
        out[i] = prev = row
    return out


def _unfilter_wavefront(cur: NDArray, kinds: NDArray) -> NDArray:
    # Average and Paeth need the pixel to the left, decoded just before. Pixels on one
    # anti-diagonal only depend on earlier ones, so the image is done a diagonal at a
    # time: h + w vectorised steps instead of h * w scalar ones.
    h, w, bpp = cur.shape
    out = np.zeros((h + 1, w + 1, bpp), np.uint8)  # a zero row above, a zero column left
    kind = kinds.astype(np.intp)
    for t in range(h + w - 1):
        r = np.arange(max(0, t - w + 1), min(h, t + 1))
        x = t - r
        a = out[r + 1, x].astype(np.int16)  # left
        b = out[r, x + 1].astype(np.int16)  # up
        c = out[r, x].astype(np.int16)  # up-left
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        k = kind[r, None]
        pred = np.select([k == 1, k == 2, k == 3, k == 4], [a, b, (a + b) >> 1, paeth], 0)
        out[r + 1, x + 1] = (cur[r, x] + pred).astype(np.uint8)
    return out[1:, 1:]
