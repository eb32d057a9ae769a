"""Decode images whole, in one task: every format but TIFF and Zarr, and archive members.

PNG, JPEG, BMP, GIF, WebP and the like are decoded by Pillow, 16-bit colour PNGs by
`kmdist.io._png16`, TIFF archive members by tifffile. Each image is refused up front, from
its header, when it has more than `max_pixels` pixels, and the header says the shape and
dtype the decoding task will produce.
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

    kind: Literal["pillow", "png16", "tiff"]
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
    else:
        if png is not None:  # Pillow calls a PNG without pixels "not an image"
            _check_pixels(png.height, png.width, source, max_pixels)
        header = _pillow_header(fp, source, max_pixels)
    _check_pixels(header.shape[0], header.shape[1], source, max_pixels)
    return header


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
    return _pillow_decode(fp, header, max_pixels, source)


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


def _allow_pixels(max_pixels: int) -> None:
    """Lift Pillow's decompression-bomb guard to `max_pixels`, which is checked first.

    Pillow refuses images over twice ``Image.MAX_IMAGE_PIXELS`` (89 Mpx by default). The
    setting is process-wide, so it is only ever raised: a concurrent decode with a larger
    limit must not be refused.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _pillow_mode(mode: str, source: str) -> tuple[str | None, int, str]:
    try:
        return _PILLOW_MODES[mode]
    except KeyError:
        raise ImageReadError(source, f"unsupported image mode {mode!r}") from None


def _pillow_header(fp: IO[bytes], source: str, max_pixels: int) -> Header:
    _allow_pixels(max_pixels)
    try:
        with Image.open(fp) as img:  # reads the header only
            mode, (width, height) = img.mode, img.size
    except UnidentifiedImageError:
        raise ImageReadError(source, "not an image (unknown or unsupported format)") from None
    except Image.DecompressionBombError as exc:
        # Pillow refuses from the header, before kmdist sees the size: take it from
        # Pillow's message, so the error says how large the image claims to be.
        size = re.search(r"Image size \((\d+) pixels\)", str(exc))
        claimed = f"{int(size.group(1)):,} pixels" if size else "the image"
        raise ImageReadError(source, _too_large(claimed, max_pixels)) from None
    _, channels, dtype = _pillow_mode(mode, source)
    return Header("pillow", (height, width, channels), np.dtype(dtype))


def _pillow_decode(fp: IO[bytes], header: Header, max_pixels: int, source: str) -> NDArray:
    _allow_pixels(max_pixels)
    with Image.open(fp) as img:
        img.load()
        target, channels, _ = _pillow_mode(img.mode, source)
        if img.mode == "P" and "transparency" in img.info:
            target = "RGBA"  # the palette's transparency needs RGBA; alpha then dropped
        arr = np.asarray(img.convert(target) if target else img)
    arr = arr.reshape(arr.shape[0], arr.shape[1], -1)[..., :channels]
    return np.ascontiguousarray(arr, dtype=header.dtype)
