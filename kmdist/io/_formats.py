"""Open one image source lazily: a file, a Zarr store or a member of a zip or tar archive.

Picks the reader by what the source is: TIFF files and Zarr stores are read lazily
(`kmdist.io._tiled`), everything else is decoded whole (`kmdist.io._decoded`). Arguments are
checked here, and no error but `ImageReadError` (or `MemoryError`) escapes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import dask.array as da
import numpy as np
from numpy.typing import NDArray

from kmdist._fs import Stamp, open_input, stat
from kmdist.io._archive import member_file
from kmdist.io._chunks import Chunks, check_chunks
from kmdist.io._decoded import (
    Header,
    decode_file,
    decode_member,
    whole_file,
    whole_header,
    whole_member,
)
from kmdist.io._errors import ImageReadError, describe
from kmdist.io._tiled import TIFF_MAGIC, is_zarr, open_tiff, open_zarr

__all__ = ["open_or_read", "open_source"]


def open_source(
    path: str, member: str | None, source: str, chunks: Chunks, max_pixels: int
) -> da.Array:
    """Open file or Zarr store `path`, or its `member` if it is an archive, as (y, x, c).

    `source` names the image in errors: the path, or ``ARCHIVE::MEMBER``.
    """
    image = open_or_read(path, member, source, chunks, max_pixels, most=0)
    assert isinstance(image, da.Array)
    return image


def open_or_read(
    path: str, member: str | None, source: str, chunks: Chunks, max_pixels: int, most: int
) -> da.Array | NDArray[Any]:
    """`open_source`, or a NumPy array for a small image that is decoded whole anyway.

    An image of at most `most` pixels that is not a TIFF file or Zarr store (those are
    read lazily) is decoded straight into memory, with no Dask graph.
    """
    yx = check_chunks(chunks)
    _check_max_pixels(max_pixels)
    with _reading(source):
        kind, header, stamp = _probe(path, member, source, max_pixels)
        if kind == "zarr":
            return open_zarr(path, source, yx)
        if kind == "tiff":
            return open_tiff(path, source, yx, stamp)
        assert header is not None
        small = header.shape[0] * header.shape[1] <= most
        if member is not None:
            if small:
                return decode_member(path, member, source, header, max_pixels, stamp)
            return whole_member(path, member, source, header, max_pixels, stamp, yx)
        if small:
            return decode_file(path, source, header, max_pixels, stamp)
        return whole_file(path, source, header, max_pixels, stamp, yx)


def _check_max_pixels(max_pixels: int) -> None:
    if (
        isinstance(max_pixels, bool)
        or not isinstance(max_pixels, int | np.integer)
        or max_pixels < 1
    ):
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")


@contextlib.contextmanager
def _reading(source: str) -> Iterator[None]:
    """No bare OSError, Pillow, tifffile or Zarr error escapes: say which input failed."""
    try:
        yield
    except (ImageReadError, MemoryError):
        raise
    except Exception as exc:
        raise ImageReadError(source, f"cannot read it ({describe(exc)})") from exc


def _probe(
    path: str, member: str | None, source: str, max_pixels: int
) -> tuple[Literal["zarr", "tiff", "whole"], Header | None, Stamp]:
    """Say how to read a source; for images decoded whole, with their checked header."""
    try:
        st = stat(path)
    except FileNotFoundError:
        raise ImageReadError(source, "archive not found" if member else "file not found") from None
    stamp = st.stamp
    if member is not None:
        with member_file(path, member, source) as fp:
            return "whole", whole_header(fp, source, max_pixels), stamp
    if st.is_dir:
        if is_zarr(path):
            return "zarr", None, stamp
        raise ImageReadError(
            source, "a folder, not an image; open_images lists the images in a folder"
        )
    if st.size == 0:
        raise ImageReadError(source, "empty file")
    with open_input(path) as fp:
        if fp.read(4) in TIFF_MAGIC:
            return "tiff", None, stamp
        fp.seek(0)
        return "whole", whole_header(fp, source, max_pixels), stamp
