"""Decode the 16-bit colour PNGs that Pillow cannot keep at 16 bits, with imagecodecs.

Pillow reduces 16-bit RGB, RGBA and grey+alpha PNGs to 8 bits; imagecodecs (libpng)
keeps them. An interlaced one is decoded a pass at a time: libpng prints a line to
stderr for every interlaced PNG imagecodecs hands it whole ("Interlace handling should be
turned on when using png_read_image"), which no setting silences. Each Adam7 pass is a
small non-interlaced PNG of its own (its filtered rows, wrapped in IHDR and IDAT), so
libpng still does the unfiltering and this module only places the passes' pixels.
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
    import imagecodecs  # here: `kmdist.io` is imported by runs that read no such PNG

    arr = _passes(data, info) if info.interlaced else imagecodecs.png_decode(data)
    arr = np.asarray(arr).reshape(info.height, info.width, -1)
    return np.ascontiguousarray(arr[..., : info.channels])


def _passes(data: bytes, info: PngInfo) -> NDArray:
    """Decode an Adam7 PNG pass by pass, each pass's rows as a PNG of their own."""
    import imagecodecs

    samples = _PNG16_SAMPLES[info.colour]
    raw = zlib.decompress(_png_idat(data))
    out = np.empty((info.height, info.width, samples), np.uint16)
    pos = 0
    for x0, y0, dx, dy in _ADAM7:
        h, w = -(-(info.height - y0) // dy), -(-(info.width - x0) // dx)
        if h <= 0 or w <= 0:
            continue  # an empty pass has no bytes at all
        size = h * (1 + w * 2 * samples)  # a filter byte, then the row's samples
        if pos + size > len(raw):
            raise ValueError(f"truncated PNG data: {len(raw):,} bytes")
        png = _png(w, h, info, raw[pos : pos + size])
        out[y0::dy, x0::dx] = np.asarray(imagecodecs.png_decode(png)).reshape(h, w, samples)
        pos += size
    return out


def _png(width: int, height: int, info: PngInfo, rows: bytes) -> bytes:
    """Wrap the filtered `rows` as they are in a non-interlaced PNG of `info`'s kind."""
    ihdr = struct.pack(">IIBBBBB", width, height, info.depth, info.colour, 0, 0, 0)
    # Stored, not compressed again: the pass is decoded at once and thrown away.
    return b"".join(
        (_PNG_SIGNATURE, _chunk(b"IHDR", ihdr), _chunk(b"IDAT", zlib.compress(rows, 0)))
    ) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


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
