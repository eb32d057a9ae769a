"""Decode images whole, in one task: every format but TIFF and Zarr, and archive members.

PNG, JPEG, BMP, GIF, WebP and the like are decoded by Pillow, 16-bit colour PNGs by
`kmdist.io._png16`, TIFF archive members by tifffile. Each image is refused up front, from
its header, when it has more than `max_pixels` pixels, and the header says the shape and
dtype the decoding task will produce.

Pillow refuses images over twice ``PIL.Image.MAX_IMAGE_PIXELS`` (89 Mpx by default) and
warns over it, a setting of the whole process that kmdist leaves alone (Pillow has no
per-call limit). PNGs and JPEGs larger than Pillow's limit, whose size kmdist reads from
their own header, are decoded by imagecodecs instead, to the same pixels.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import IO, Any, Literal

import dask.array as da
import numpy as np
import numpy.typing as npt
import tifffile
from dask.delayed import delayed
from PIL import Image, UnidentifiedImageError

from kmdist._fs import Stamp, open_input
from kmdist.io._archive import read_member
from kmdist.io._chunks import WHOLE_CHUNK
from kmdist.io._errors import ImageReadError, decode_errors
from kmdist.io._png16 import png16_decode, png_info
from kmdist.io._tiled import TIFF_MAGIC, tiff_source, to_yxc

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Header",
    "decode_file",
    "decode_member",
    "whole_file",
    "whole_header",
    "whole_member",
]

DEFAULT_MAX_PIXELS: int = 1 << 30
"""Most pixels (y * x) accepted in an image that has to be decoded whole."""

NDArray = npt.NDArray[Any]


@dataclass(frozen=True)
class Header:
    """What decoding will produce, known from the header alone."""

    kind: Literal["pillow", "png16", "tiff", "png", "jpeg"]
    shape: tuple[int, int, int]
    dtype: np.dtype[Any]


def whole_header(fp: IO[bytes], source: str, max_pixels: int) -> Header:
    """Read the header at the start of seekable `fp`; check the size before any decoding."""
    head = fp.read(64)
    fp.seek(0)
    if not head:
        raise ImageReadError(source, "empty file")
    if head[:4] in TIFF_MAGIC:
        with tifffile.TiffFile(fp) as tif:
            _, layout = tiff_source(tif, source)
        header = Header("tiff", layout.out_shape, layout.out_dtype)
    elif (png := png_info(head)) is not None and png.own_decoder:
        header = Header("png16", (png.height, png.width, png.channels), np.dtype(np.uint16))
    elif png is not None:
        # Pillow calls a PNG without pixels "not an image": the size is checked first.
        _check_pixels(png.height, png.width, source, max_pixels)
        if _beyond_pillow(png.height * png.width):
            depth = np.uint16 if png.depth == 16 else np.uint8
            header = Header("png", (png.height, png.width, png.channels), np.dtype(depth))
        else:
            header = _pillow_header(fp, source, max_pixels)
    elif (jpeg := _jpeg_frame(fp)) is not None and _beyond_pillow(jpeg[0] * jpeg[1]):
        height, width, components = jpeg
        _check_pixels(height, width, source, max_pixels)
        if components not in (1, 3):
            raise ImageReadError(
                source,
                f"a {components}-channel JPEG of {height} x {width} pixels is more than "
                f"Pillow decodes ({Image.MAX_IMAGE_PIXELS:,} pixels); convert it to RGB",
            )
        header = Header("jpeg", (height, width, components), np.dtype(np.uint8))
    else:
        header = _pillow_header(fp, source, max_pixels)
    _check_pixels(header.shape[0], header.shape[1], source, max_pixels)
    return header


def _beyond_pillow(pixels: int) -> bool:
    """Whether Pillow would warn about, or refuse, an image of `pixels` pixels."""
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and pixels > limit


# JPEG start-of-frame markers (baseline, extended, progressive, lossless; Huffman or
# arithmetic coding); the others, and the standalone ones, do not say the image's size.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD})
_JPEG_SOF |= {0xCE, 0xCF}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg_frame(fp: IO[bytes]) -> tuple[int, int, int] | None:
    """Height, width and components of an 8-bit JPEG's frame; None if not one."""
    try:
        if fp.read(2) != b"\xff\xd8":
            return None
        while True:
            if fp.read(1) != b"\xff":
                return None
            marker = fp.read(1)
            while marker == b"\xff":  # fill bytes
                marker = fp.read(1)
            if not marker:
                return None
            code = marker[0]
            if code in _JPEG_STANDALONE:
                continue
            if code in (0xD8, 0xD9, 0xDA):  # no frame before the scan
                return None
            length = int.from_bytes(fp.read(2), "big")
            if code in _JPEG_SOF:
                segment = fp.read(6)
                if len(segment) < 6 or segment[0] != 8:
                    return None
                height, width = (int.from_bytes(segment[i : i + 2], "big") for i in (1, 3))
                return height, width, segment[5]
            if length < 2:
                return None
            fp.seek(length - 2, io.SEEK_CUR)
    finally:
        fp.seek(0)


def _check_pixels(height: int, width: int, source: str, max_pixels: int) -> None:
    if height == 0 or width == 0:
        raise ImageReadError(source, f"the image has a zero dimension ({height} x {width} pixels)")
    if height * width > max_pixels:
        raise ImageReadError(source, _too_large(f"{height} x {width} pixels", max_pixels))


def _too_large(size: str, max_pixels: int) -> str:
    return (
        f"{size} is more than max_pixels={max_pixels:,} for an image decoded whole; convert "
        "it to a tiled TIFF (e.g. `vips tiffsave IN OUT.tif --tile --bigtiff`), which is "
        "read tile by tile, or raise max_pixels if it fits in a worker's memory"
    )


def _from_whole(decode: Any, header: Header, yx: tuple[int, int] | None) -> da.Array:
    meta = np.empty((0, 0, 0), header.dtype)
    arr = da.from_delayed(decode, header.shape, dtype=header.dtype, meta=meta)
    cy, cx = yx or (WHOLE_CHUNK, WHOLE_CHUNK)
    return arr.rechunk((cy, cx, -1))


def whole_file(
    path: str,
    source: str,
    header: Header,
    max_pixels: int,
    stamp: Stamp,
    yx: tuple[int, int] | None,
) -> da.Array:
    """Open an image file to be decoded whole, in one task, as a Dask array in chunks."""
    decode = delayed(decode_file, pure=True)(path, source, header, max_pixels, stamp)
    return _from_whole(decode, header, yx)


def whole_member(
    archive: str,
    member: str,
    source: str,
    header: Header,
    max_pixels: int,
    stamp: Stamp,
    yx: tuple[int, int] | None,
) -> da.Array:
    """Open an archive member to be decoded whole, in one task, as a Dask array in chunks."""
    decode = delayed(decode_member, pure=True)(archive, member, source, header, max_pixels, stamp)
    return _from_whole(decode, header, yx)


def decode_file(path: str, source: str, header: Header, max_pixels: int, stamp: Stamp) -> NDArray:
    """Decode a whole image file; `stamp` (size, mtime) makes the task key follow the file."""
    with decode_errors(source), open_input(path) as fp:
        arr = _decode(fp, header, max_pixels, source)
    return _checked(arr, header, source)


def decode_member(
    archive: str,
    member: str,
    source: str,
    header: Header,
    max_pixels: int,
    stamp: Stamp,
) -> NDArray:
    """Decode an archive member from its bytes in memory; nothing touches the disk."""
    with decode_errors(source):
        data = read_member(archive, member, source)
        arr = _decode(io.BytesIO(data), header, max_pixels, source)
    return _checked(arr, header, source)


def _decode(fp: IO[bytes], header: Header, max_pixels: int, source: str) -> NDArray:
    if header.kind == "png16":
        data = fp.read()
        info = png_info(data[:64])
        if info is None or not info.own_decoder:
            raise ValueError("not a 16-bit colour PNG any more")
        return png16_decode(data, info)
    if header.kind == "tiff":
        with tifffile.TiffFile(fp) as tif:
            z, layout = tiff_source(tif, source)
            return np.ascontiguousarray(to_yxc(z[layout.selection], layout))
    if header.kind in ("png", "jpeg"):
        return _codecs_decode(fp.read(), header)
    return _pillow_decode(fp, header, max_pixels, source)


def _codecs_decode(data: bytes, header: Header) -> NDArray:
    """Decode a PNG or an 8-bit JPEG larger than Pillow's limit, as Pillow would."""
    import imagecodecs

    # imagecodecs expands PNG palettes to RGB(A) and grey of 1, 2 and 4 bits to 8, as
    # kmdist's Pillow modes do; alpha is dropped below.
    decode = imagecodecs.png_decode if header.kind == "png" else imagecodecs.jpeg8_decode
    arr = np.asarray(decode(data))
    arr = arr.reshape(arr.shape[0], arr.shape[1], -1)[..., : header.shape[2]]
    return np.ascontiguousarray(arr, dtype=header.dtype)


def _checked(arr: NDArray, header: Header, source: str) -> NDArray:
    if arr.shape != header.shape or arr.dtype != header.dtype:
        raise ImageReadError(
            source,
            f"decoded as {arr.shape} {arr.dtype}, not {header.shape} {header.dtype} as its "
            "header said; did the file change?",
        )
    return arr


# Pillow mode -> (mode to convert to, channels kept, dtype). Alpha goes by conversion or
# by keeping the first channels.
_PILLOW_MODES: dict[str, tuple[str | None, int, str]] = {
    "1": ("L", 1, "uint8"),
    "L": (None, 1, "uint8"),
    "LA": ("L", 1, "uint8"),
    "La": ("L", 1, "uint8"),
    "P": ("RGB", 3, "uint8"),
    "PA": ("RGBA", 3, "uint8"),
    "RGB": (None, 3, "uint8"),
    "RGBA": (None, 3, "uint8"),
    "RGBX": (None, 3, "uint8"),
    "CMYK": ("RGB", 3, "uint8"),
    "YCbCr": ("RGB", 3, "uint8"),
    "I;16": (None, 1, "uint16"),
    "I;16L": (None, 1, "uint16"),
    "I;16B": (None, 1, "uint16"),
    "I;16N": (None, 1, "uint16"),
    "I": (None, 1, "int32"),
    "F": (None, 1, "float32"),
}


def _pillow_mode(mode: str, source: str) -> tuple[str | None, int, str]:
    try:
        return _PILLOW_MODES[mode]
    except KeyError:
        raise ImageReadError(source, f"unsupported image mode {mode!r}") from None


def _pillow_header(fp: IO[bytes], source: str, max_pixels: int) -> Header:
    try:
        with Image.open(fp) as img:  # reads the header only
            mode, (width, height) = img.mode, img.size
    except UnidentifiedImageError:
        raise ImageReadError(source, "not an image (unknown or unsupported format)") from None
    except Image.DecompressionBombError as exc:
        # A format whose size kmdist does not read itself, over twice Pillow's limit:
        # Pillow refuses from the header. Take the size from Pillow's message.
        size = re.search(r"Image size \((\d+) pixels\)", str(exc))
        pixels = int(size.group(1)) if size else None
        if pixels is not None and pixels > max_pixels:
            raise ImageReadError(source, _too_large(f"{pixels:,} pixels", max_pixels)) from None
        claimed = f"{pixels:,} pixels" if pixels is not None else "the image"
        raise ImageReadError(
            source,
            f"{claimed} is more than Pillow decodes in this format (twice "
            f"PIL.Image.MAX_IMAGE_PIXELS); convert it to PNG or to a tiled TIFF",
        ) from None
    _, channels, dtype = _pillow_mode(mode, source)
    return Header("pillow", (height, width, channels), np.dtype(dtype))


def _pillow_decode(fp: IO[bytes], header: Header, max_pixels: int, source: str) -> NDArray:
    with Image.open(fp) as img:
        img.load()
        target, channels, _ = _pillow_mode(img.mode, source)
        if img.mode == "P" and "transparency" in img.info:
            target = "RGBA"  # the palette's transparency needs RGBA; alpha then dropped
        arr = np.asarray(img.convert(target) if target else img)
    arr = arr.reshape(arr.shape[0], arr.shape[1], -1)[..., :channels]
    return np.ascontiguousarray(arr, dtype=header.dtype)
