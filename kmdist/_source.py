"""Open one image source lazily: a file, a Zarr store or a member of a zip or tar archive.

Picks the reader by what the source is: TIFF files and Zarr stores are read lazily
(`kmdist._lazy`), everything else is decoded whole (`kmdist._whole`). Arguments are
checked here, and no error but `ImageReadError` (or `MemoryError`) escapes.
"""

from __future__ import annotations

import os
import stat

import dask.array as da
import numpy as np

from ._archive import member_file
from ._chunks import Chunks, check_chunks
from ._errors import ImageReadError, describe
from ._lazy import TIFF_MAGIC, is_zarr, open_tiff, open_zarr
from ._whole import whole_file, whole_header, whole_member

__all__ = ["open_source"]


def open_source(
    path: str, member: str | None, source: str, chunks: Chunks, max_pixels: int
) -> da.Array:
    """Open file or Zarr store `path`, or its `member` if it is an archive, as (y, x, c).

    `source` names the image in errors: the path, or ``ARCHIVE::MEMBER``.
    """
    yx = check_chunks(chunks)
    if (
        isinstance(max_pixels, bool)
        or not isinstance(max_pixels, int | np.integer)
        or max_pixels < 1
    ):
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    try:
        if member is not None:
            return _open_member(path, member, source, yx, max_pixels)
        return _open_path(path, source, yx, max_pixels)
    except (ImageReadError, MemoryError):
        raise
    except Exception as exc:
        # No bare OSError, Pillow, tifffile or Zarr error escapes: say which input failed.
        raise ImageReadError(source, f"cannot read it ({describe(exc)})") from exc


def _open_path(path: str, source: str, yx: tuple[int, int] | None, max_pixels: int) -> da.Array:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageReadError(source, "file not found") from None
    if stat.S_ISDIR(st.st_mode):
        if is_zarr(path):
            return open_zarr(path, source, yx)
        raise ImageReadError(
            source, "a folder, not an image; open_images lists the images in a folder"
        )
    if st.st_size == 0:
        raise ImageReadError(source, "empty file")
    stamp = (st.st_size, st.st_mtime_ns)
    with open(path, "rb") as fp:
        if fp.read(4) in TIFF_MAGIC:
            return open_tiff(path, source, yx, stamp)
        fp.seek(0)
        header = whole_header(fp, source, max_pixels)
    return whole_file(path, source, header, max_pixels, stamp, yx)


def _open_member(
    archive: str, member: str, source: str, yx: tuple[int, int] | None, max_pixels: int
) -> da.Array:
    try:
        st = os.stat(archive)
    except FileNotFoundError:
        raise ImageReadError(source, "archive not found") from None
    with member_file(archive, member, source) as fp:
        header = whole_header(fp, source, max_pixels)
    stamp = (st.st_size, st.st_mtime_ns)
    return whole_member(archive, member, source, header, max_pixels, stamp, yx)
