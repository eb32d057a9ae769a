"""Open images of any format and size as lazy Dask arrays of shape (y, x, c).

Each kind of source is read the cheapest way that keeps memory bounded:

- TIFF files are read lazily, tile by tile or strip by strip, through tifffile's Zarr
  store, so an image far larger than memory never sits whole anywhere;
- Zarr arrays and OME-Zarr images are read lazily, chunk by chunk;
- every other format (PNG, JPEG, BMP, GIF, WebP, ...) is decoded whole, in one task on a
  worker, and is refused up front, from its header, when it has more than `max_pixels`.

`iter_images` turns files, folders, glob patterns and zip or tar archives into a stream
of `ImageRef` sorted by path, each with a unique name fit for a Zarr group, listing one
folder at a time; `open_images` is its list. Archive members are read from the archive,
never extracted to disk. Problems found while listing become refs whose
`ImageRef.open` raises, so that a batch reports them as failed images and runs the others.

The work is done in small modules, one job each: `kmdist.io._listing` lists inputs as refs,
`kmdist.io._formats` opens one of them, `kmdist.io._tiled` reads TIFF and Zarr lazily,
`kmdist.io._decoded` decodes other formats whole (`kmdist.io._png16` for 16-bit colour PNG),
`kmdist.io._archive` reads archive members safely, `kmdist.io._chunks` sets chunk sizes and
`kmdist.io._errors` holds `ImageReadError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import dask.array as da

from kmdist._fs import is_url
from kmdist.io._archive import archive_kind
from kmdist.io._chunks import (
    Chunks,
    aligned_chunks as _aligned_chunks,  # noqa: F401  (tests import it from here)
)
from kmdist.io._decoded import DEFAULT_MAX_PIXELS
from kmdist.io._errors import ImageReadError
from kmdist.io._formats import open_source
from kmdist.io._listing import (
    IMAGE_SUFFIXES as IMAGE_SUFFIXES,
    ImageRef,
    stream_input,
    unique_names,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageReadError",
    "ImageRef",
    "iter_images",
    "open_image",
    "open_images",
]


def open_image(
    source: str | os.PathLike[str],
    *,
    chunks: Chunks = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> da.Array:
    """Open an image as a lazy Dask array of shape (y, x, c), in the source's dtype.

    TIFF files and Zarr stores are read lazily, chunk by chunk. Every other format is
    decoded whole, in one task, after its header has been checked against `max_pixels`.

    - Grayscale gives ``c == 1`` (uint8, uint16, int32 or float32); bilevel images give
      uint8 0 and 255; palette, CMYK and YCbCr images give RGB.
    - The alpha channel is dropped (RGBA to RGB, LA to L): transparent pixels are
      clustered by their stored colour.
    - 16-bit PNG stays uint16, colour included.
    - GIF and other animations: the first frame. EXIF orientation is not applied: pixels
      come in stored order.
    - TIFF: the first series, at full resolution. Its samples (S) or channels (C) axis
      becomes c; any other axis (pages, planes, time points) is reduced to its first
      element, so a multi-page TIFF gives its first page. Palette TIFFs give RGB.
    - Zarr: an array, or a group holding an OME-Zarr image (level 0, axes read from its
      ``multiscales`` metadata) or a single array. Without axis names a 3-D array is
      (y, x, c) when its last dimension is at most 4, (c, y, x) otherwise.

    Parameters
    ----------
    source : str or os.PathLike
        Path of an image file or Zarr store, or ``ARCHIVE::MEMBER`` for a member of a
        zip or tar archive.
    chunks : int or (int, int), optional
        Chunk size along y and x; the channels are always one chunk. By default TIFF and
        Zarr chunks follow the source's tiles (grouped into chunks of at least 1024 px a
        side when the tiles are smaller, and of at most about 64 MB), strips are grouped
        by whole strips, and images decoded whole are cut into 2048 x 2048 chunks.
    max_pixels : int, default=DEFAULT_MAX_PIXELS
        Most pixels (y * x) accepted in an image decoded whole.

    Returns
    -------
    dask.array.Array
        The image, shape (y, x, c).

    Raises
    ------
    ImageReadError
        If the file is missing, empty, not an image, has a zero dimension, or has more
        than `max_pixels` pixels and must be decoded whole. Data that turn out corrupt or
        truncated when decoded raise it from ``compute``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> path = tempfile.mkdtemp() + "/tiny.png"
    >>> Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(path)
    >>> img = open_image(path)
    >>> img.shape, img.dtype.name
    ((4, 6, 3), 'uint8')
    """
    path = os.fspath(source)
    archive, sep, member = path.partition("::")
    if sep and member and archive_kind(archive) and (is_url(path) or not os.path.exists(path)):
        return open_source(archive, member, path, chunks, max_pixels)
    return open_source(path, None, path, chunks, max_pixels)


def open_images(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    follow_symlinks: bool = False,
) -> list[ImageRef]:
    """List the images in files, folders, glob patterns and archives.

    - A file gives one ref named after its stem, whatever its extension.
    - A folder gives every image file below it (by extension: ``.png``, ``.jpg``,
      ``.jpeg``, ``.jpe``, ``.jfif``, ``.bmp``, ``.gif``, ``.tif``, ``.tiff``, ``.webp``,
      in any case) and every ``*.zarr`` store, named after the path relative to the
      folder without the extension, separators turned into ``_``: ``sub/dir/img.png``
      gives ``sub_dir_img``.
      Hidden files and folders (``.name``) and ``__MACOSX`` folders are skipped, as are
      archives. Symbolic links to folders are not descended into, and links to files
      outside the folder give failing refs, unless `follow_symlinks` is true.
    - A glob pattern (``*``, ``?``, ``[``; ``**`` recurses) gives the image files, Zarr
      stores and archives it matches, named relative to the pattern's leading folder.
    - A zip or tar archive (``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2``,
      ``.tar.xz``) gives one ref per image member, named like files in a folder, with
      source ``ARCHIVE::MEMBER``. Members are read from the archive, never extracted.
      Members with an absolute path or a ``..`` component, links, device files,
      encrypted members and likely decompression bombs are refused.
    - A sequence of the above gives the concatenation.

    Each input's refs are sorted by path. Names are made unique, ignoring case, by
    appending ``-2``, ``-3``, ... in order of appearance. Problems found while listing
    (a refused member, an unreadable archive, a link out of the folder) are returned as
    refs whose ``open()`` raises `ImageReadError`, so that they are reported, not lost.

    Parameters
    ----------
    inputs : str, os.PathLike or sequence of them
        What to list.
    follow_symlinks : bool, default=False
        Follow symbolic links to folders, and to files outside the folder listed.

    Returns
    -------
    list of ImageRef
        The images found, possibly none (a folder without images).

    Raises
    ------
    ImageReadError
        If an input does not exist, or a glob pattern matches nothing.
    """
    return list(iter_images(inputs, follow_symlinks=follow_symlinks))


def iter_images(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    follow_symlinks: bool = False,
) -> Iterator[ImageRef]:
    """Yield the images in files, folders, glob patterns and archives as they are found.

    The same refs, in the same order and with the same names, as `open_images`, which is
    ``list(iter_images(...))``; but a folder is walked one sub-folder at a time, depth
    first, so the first ref comes before the walk ends and memory does not grow with the
    folder (only with its largest directory, whose names are sorted). What grows is the
    set of names taken (see `kmdist.io._listing.unique_names`): a few tens of bytes per
    image, where a list of refs holds some 350.

    Every input is checked when the iterator is created, before anything is yielded, so
    that a missing input or a pattern matching nothing raises up front. The checks are
    cheap: a ``stat``, a pattern's first match, one request for a URL. Listed whole, as
    their sources give them: a pattern's matches (sorted paths; `glob` has no order to
    stream in), a storage-URL pattern's matches (fsspec's ``glob`` returns a list) and an
    archive's members (its index).

    Parameters
    ----------
    inputs : str, os.PathLike or sequence of them
        What to list; see `open_images`.
    follow_symlinks : bool, default=False
        Follow symbolic links to folders, and to files outside the folder listed.

    Returns
    -------
    Iterator of ImageRef
        The images found, possibly none (a folder without images).

    Raises
    ------
    ImageReadError
        When called, if an input does not exist, or a glob pattern matches nothing;
        while iterating, if a storage URL's listing fails for a reason other than I/O.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for rel in ["b.png", "a/x.png", "a.png", "a-b.png"]:
    ...     (root / rel).parent.mkdir(exist_ok=True)
    ...     (root / rel).touch()
    >>> [ref.name for ref in iter_images(root)]
    ['a-b', 'a', 'a_x', 'b']
    """
    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    # Every input checked (and its listing set up) before the first ref is yielded.
    streams = [stream_input(os.fspath(item), follow_symlinks) for item in items]
    return unique_names(ref for stream in streams for ref in stream)
