"""Open images of any format and size as lazy Dask arrays of shape (y, x, c).

Each kind of source is read the cheapest way that keeps memory bounded:

- TIFF files are read lazily, tile by tile or strip by strip, through tifffile's Zarr
  store, so an image far larger than memory never sits whole anywhere;
- Zarr arrays and OME-Zarr images are read lazily, chunk by chunk;
- every other format (PNG, JPEG, BMP, GIF, WebP, ...) is decoded whole, in one task on a
  worker, and is refused up front, from its header, when it has more than `max_pixels`.

`open_images` turns files, folders, glob patterns and zip or tar archives into a sorted
list of `ImageRef`, each with a unique name fit for a Zarr group. Archive members are read
from the archive, never extracted to disk. Problems found while listing become refs whose
`ImageRef.open` raises, so that a batch reports them as failed images and runs the others.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import io
import os
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePath, PurePosixPath
from typing import IO, Any, Literal

import dask.array as da
import numpy as np
import numpy.typing as npt
import tifffile
import zarr
from dask.delayed import delayed
from PIL import Image, UnidentifiedImageError

__all__ = ["DEFAULT_MAX_PIXELS", "ImageReadError", "ImageRef", "open_image", "open_images"]

DEFAULT_MAX_PIXELS: int = 1 << 30
"""Most pixels (y * x) accepted in an image that has to be decoded whole."""

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)
"""File name extensions picked up from folders, glob patterns and archives."""

Chunks = int | tuple[int, int] | None
NDArray = npt.NDArray[Any]

_WHOLE_CHUNK = 2048  # chunk side for images decoded whole
_MIN_CHUNK = 1024  # smaller source tiles are grouped: fewer, larger tasks
_MAX_CHUNK_BYTES = 64 << 20  # ... but not into chunks larger than this
_MAX_MEMBER_BYTES = 4 << 30  # largest archive member read into memory
_BOMB_RATIO = 100  # a zip member expanding more than this ...
_BOMB_BYTES = 64 << 20  # ... to more than this is taken for a zip bomb
_MAX_NAME = 200  # characters; leaves room in a 255-byte file name for suffixes
_DECODE_THREADS = max(2, os.cpu_count() or 2)

_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ARCHIVES: tuple[tuple[str, Literal["zip", "tar"]], ...] = (
    (".zip", "zip"),
    (".tar", "tar"),
    (".tar.gz", "tar"),
    (".tgz", "tar"),
    (".tar.bz2", "tar"),
    (".tbz2", "tar"),
    (".tar.xz", "tar"),
    (".txz", "tar"),
)


class ImageReadError(ValueError):
    """An input cannot be read as an image.

    ``str(err)`` is ``"SOURCE: problem"``, where SOURCE is the path, or
    ``ARCHIVE::MEMBER`` for a member of a zip or tar archive, and the problem is said in
    plain words.

    Parameters
    ----------
    source : str
        The path, or ``ARCHIVE::MEMBER``.
    problem : str
        What is wrong with it.
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem

    def __reduce__(self) -> tuple[type[ImageReadError], tuple[str, str]]:
        # Raised on workers and pickled back to the client: rebuild it from both parts.
        return (type(self), (self.source, self.problem))


@dataclass(frozen=True)
class ImageRef:
    """An image found by `open_images`, opened on demand.

    Attributes
    ----------
    name : str
        Unique among the refs of one `open_images` call (ignoring case), made of
        ``[A-Za-z0-9._-]`` only and never starting with ``.`` or ``_``: usable as a Zarr
        group name, also on case-insensitive file systems.
    source : str
        Where the image comes from: its path, or ``ARCHIVE::MEMBER``.
    """

    name: str
    source: str
    _path: str = field(default="", repr=False)
    _member: str | None = field(default=None, repr=False)
    _problem: str | None = field(default=None, repr=False)

    def open(self, *, chunks: Chunks = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> da.Array:
        """Open the image as a lazy Dask array of shape (y, x, c); see `open_image`.

        Parameters
        ----------
        chunks : int or (int, int), optional
            Chunk size along y and x; by default the source's own.
        max_pixels : int, default=DEFAULT_MAX_PIXELS
            Most pixels (y * x) accepted in an image decoded whole.

        Returns
        -------
        dask.array.Array
            The image, shape (y, x, c).

        Raises
        ------
        ImageReadError
            If the image cannot be read, or a problem was found while listing it (an
            unsafe archive member, an unreadable archive, a link out of the folder).
        """
        if self._problem is not None:
            raise ImageReadError(self.source, self._problem)
        return _open(self._path or self.source, self._member, self.source, chunks, max_pixels)


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
    if sep and member and _archive_kind(archive) and not os.path.exists(path):
        return _open(archive, member, path, chunks, max_pixels)
    return _open(path, None, path, chunks, max_pixels)


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
      encrypted members and likely zip bombs are refused.
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
    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    refs: list[ImageRef] = []
    for item in items:
        refs.extend(_expand(os.fspath(item), follow_symlinks))
    return _unique_names(refs)


# --- Opening -------------------------------------------------------------------------


def _open(path: str, member: str | None, source: str, chunks: Chunks, max_pixels: int) -> da.Array:
    yx = _check_chunks(chunks)
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
        raise ImageReadError(source, f"cannot read it ({_describe(exc)})") from exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _check_chunks(chunks: Chunks) -> tuple[int, int] | None:
    if chunks is None:
        return None
    pair = (chunks, chunks) if isinstance(chunks, int) else tuple(chunks)
    if len(pair) != 2 or not all(
        isinstance(c, int | np.integer) and not isinstance(c, bool) and c > 0 for c in pair
    ):
        raise ValueError(f"chunks must be a positive int or a pair of them, got {chunks!r}")
    return int(pair[0]), int(pair[1])


def _open_path(path: str, source: str, yx: tuple[int, int] | None, max_pixels: int) -> da.Array:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageReadError(source, "file not found") from None
    if stat.S_ISDIR(st.st_mode):
        if _is_zarr(path):
            return _open_zarr(path, source, yx)
        raise ImageReadError(
            source, "a folder, not an image; open_images lists the images in a folder"
        )
    if st.st_size == 0:
        raise ImageReadError(source, "empty file")
    stamp = (st.st_size, st.st_mtime_ns)
    with open(path, "rb") as fp:
        if fp.read(4) in _TIFF_MAGIC:
            return _open_tiff(path, source, yx, stamp)
        fp.seek(0)
        header = _whole_header(fp, source, max_pixels)
    decode = delayed(_decode_file, pure=True)(path, source, header, max_pixels, stamp)
    return _from_whole(decode, header, yx)


def _open_member(
    archive: str, member: str, source: str, yx: tuple[int, int] | None, max_pixels: int
) -> da.Array:
    try:
        st = os.stat(archive)
    except FileNotFoundError:
        raise ImageReadError(source, "archive not found") from None
    with _member_file(archive, member, source) as fp:
        header = _whole_header(fp, source, max_pixels)
    stamp = (st.st_size, st.st_mtime_ns)
    decode = delayed(_decode_member, pure=True)(archive, member, source, header, max_pixels, stamp)
    return _from_whole(decode, header, yx)


# --- Images decoded whole ------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    """What decoding will produce, known from the header alone."""

    kind: Literal["pillow", "png16", "tiff"]
    shape: tuple[int, int, int]
    dtype: np.dtype[Any]


def _whole_header(fp: IO[bytes], source: str, max_pixels: int) -> _Header:
    """Read the header at the start of seekable `fp`; check the size before any decoding."""
    head = fp.read(64)
    fp.seek(0)
    if not head:
        raise ImageReadError(source, "empty file")
    if head[:4] in _TIFF_MAGIC:
        with tifffile.TiffFile(fp) as tif:
            _, layout = _tiff_source(tif, source)
        header = _Header("tiff", layout.out_shape, layout.out_dtype)
    elif (png := _png_info(head)) is not None and png.own_decoder:
        header = _Header("png16", (png.height, png.width, png.channels), np.dtype(np.uint16))
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


def _from_whole(decode: Any, header: _Header, yx: tuple[int, int] | None) -> da.Array:
    meta = np.empty((0, 0, 0), header.dtype)
    arr = da.from_delayed(decode, header.shape, dtype=header.dtype, meta=meta)
    cy, cx = yx or (_WHOLE_CHUNK, _WHOLE_CHUNK)
    return arr.rechunk((cy, cx, -1))


def _decode_file(
    path: str, source: str, header: _Header, max_pixels: int, stamp: tuple[int, int]
) -> NDArray:
    """Decode a whole image file; `stamp` (size, mtime) makes the task key follow the file."""
    with _decode_errors(source), open(path, "rb") as fp:
        arr = _decode(fp, header, max_pixels, source)
    return _checked(arr, header, source)


def _decode_member(
    archive: str,
    member: str,
    source: str,
    header: _Header,
    max_pixels: int,
    stamp: tuple[int, int],
) -> NDArray:
    """Decode an archive member from its bytes in memory; nothing touches the disk."""
    with _decode_errors(source):
        with _member_file(archive, member, source) as fp:
            data = fp.read(_MAX_MEMBER_BYTES + 1)
        if len(data) > _MAX_MEMBER_BYTES:
            raise ImageReadError(source, f"more than {_MAX_MEMBER_BYTES:,} bytes; refused")
        arr = _decode(io.BytesIO(data), header, max_pixels, source)
    return _checked(arr, header, source)


@contextlib.contextmanager
def _decode_errors(source: str) -> Iterator[None]:
    try:
        yield
    except (ImageReadError, MemoryError):
        raise
    except Exception as exc:
        # Truncated or corrupt data surface here, on a worker, whatever the decoder.
        raise ImageReadError(source, f"cannot decode the image ({_describe(exc)})") from exc


def _decode(fp: IO[bytes], header: _Header, max_pixels: int, source: str) -> NDArray:
    if header.kind == "png16":
        data = fp.read()
        info = _png_info(data[:64])
        if info is None or not info.own_decoder:
            raise ValueError("not a 16-bit colour PNG any more")
        return _png16_decode(data, info)
    if header.kind == "tiff":
        with tifffile.TiffFile(fp) as tif:
            z, layout = _tiff_source(tif, source)
            return np.ascontiguousarray(_to_yxc(z[layout.selection], layout))
    return _pillow_decode(fp, header, max_pixels, source)


def _checked(arr: NDArray, header: _Header, source: str) -> NDArray:
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


def _pillow_header(fp: IO[bytes], source: str, max_pixels: int) -> _Header:
    _allow_pixels(max_pixels)
    try:
        with Image.open(fp) as img:  # reads the header only
            mode, (width, height) = img.mode, img.size
    except UnidentifiedImageError:
        raise ImageReadError(source, "not an image (unknown or unsupported format)") from None
    except Image.DecompressionBombError:
        raise ImageReadError(source, _too_large("the image", max_pixels)) from None
    _, channels, dtype = _pillow_mode(mode, source)
    return _Header("pillow", (height, width, channels), np.dtype(dtype))


def _pillow_decode(fp: IO[bytes], header: _Header, max_pixels: int, source: str) -> NDArray:
    _allow_pixels(max_pixels)
    with Image.open(fp) as img:
        img.load()
        target, channels, _ = _pillow_mode(img.mode, source)
        if img.mode == "P" and "transparency" in img.info:
            target = "RGBA"  # the palette's transparency needs RGBA; alpha then dropped
        arr = np.asarray(img.convert(target) if target else img)
    arr = arr.reshape(arr.shape[0], arr.shape[1], -1)[..., :channels]
    return np.ascontiguousarray(arr, dtype=header.dtype)


# --- 16-bit colour PNG ---------------------------------------------------------------
# Pillow reduces 16-bit RGB, RGBA and grey+alpha PNGs to 8 bits, so these few are
# decoded here, with zlib and NumPy.

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
class _PngInfo:
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


def _png_info(head: bytes) -> _PngInfo | None:
    """Parse the IHDR of a PNG; None if `head` does not start a PNG."""
    if len(head) < 29 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return _PngInfo(width, height, depth, colour, interlace == 1)


def _png16_decode(data: bytes, info: _PngInfo) -> NDArray:
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


# --- Lazy sources: TIFF and Zarr -----------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """How a source array becomes (y, x, c).

    `roles` has one letter per source axis: ``y``, ``x``, ``c``, or ``0`` for an axis
    reduced to its first element. `units` is the source's chunk (tile, strip) shape.
    """

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    roles: str
    units: tuple[int, ...]
    keep: int | None = None  # channels kept: drops trailing alpha
    palette: NDArray | None = field(default=None, compare=False)  # (n, 3) uint8 colours

    @property
    def selection(self) -> tuple[int | slice, ...]:
        """The source index that keeps the first element of the ``0`` axes."""
        return tuple(0 if r == "0" else slice(None) for r in self.roles)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """Shape of the (y, x, c) array."""
        c = self.shape[self.roles.index("c")] if "c" in self.roles else 1
        if self.keep is not None:
            c = min(c, self.keep)
        if self.palette is not None:
            c = 3
        return self.shape[self.roles.index("y")], self.shape[self.roles.index("x")], c

    @property
    def out_dtype(self) -> np.dtype[Any]:
        """Dtype of the (y, x, c) array: native byte order, booleans as uint8."""
        if self.palette is not None or self.dtype == np.bool_:
            return np.dtype(np.uint8)
        return self.dtype.newbyteorder("=")


def _to_yxc(arr: Any, layout: _Layout) -> Any:
    """Select, transpose and convert a source array (NumPy or Dask) to (y, x, c)."""
    arr = arr[layout.selection]
    kept = [r for r in layout.roles if r != "0"]
    order = [kept.index("y"), kept.index("x")] + ([kept.index("c")] if "c" in kept else [])
    arr = arr.transpose(order)
    if "c" not in kept:
        arr = arr[..., None]
    if layout.keep is not None:
        arr = arr[..., : layout.keep]
    if layout.palette is not None:
        if isinstance(arr, da.Array):
            chunks = (*arr.chunks[:2], (3,))
            meta = np.empty((0, 0, 0), np.uint8)
            return da.map_blocks(_lookup, arr, layout.palette, chunks=chunks, meta=meta)
        return _lookup(arr, layout.palette)
    if layout.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)  # like a bilevel PNG
    if arr.dtype != layout.out_dtype:
        return arr.astype(layout.out_dtype)
    return arr


def _lookup(block: NDArray, palette: NDArray) -> NDArray:
    return np.take(palette, block[..., 0], axis=0, mode="clip")


def _grouped(unit: int, size: int) -> int:
    """Smallest multiple of `unit` that is at least _MIN_CHUNK, but no more than `size`."""
    unit = max(1, min(unit, size))
    return min(size, -(-_MIN_CHUNK // unit) * unit)


def _aligned_chunks(
    units: tuple[int, int], size: tuple[int, int], pixel_bytes: int
) -> tuple[int, int]:
    """Chunk (y, x) made of whole source chunks: at least 1024 a side, at most ~64 MB."""
    uy, ux = max(1, min(units[0], size[0])), max(1, min(units[1], size[1]))
    cy, cx = _grouped(uy, size[0]), _grouped(ux, size[1])
    # Too large: shrink by whole source chunks, rows first (full-width strips), then columns.
    if cy * cx * pixel_bytes > _MAX_CHUNK_BYTES:
        cy = max(uy, _MAX_CHUNK_BYTES // (cx * pixel_bytes) // uy * uy)
    if cy * cx * pixel_bytes > _MAX_CHUNK_BYTES:
        cx = max(ux, _MAX_CHUNK_BYTES // (cy * pixel_bytes) // ux * ux)
    return cy, cx


def _read_plan(
    layout: _Layout, yx: tuple[int, int] | None
) -> tuple[tuple[int, ...], tuple[int, int] | None]:
    """Chunks to read the source with, and the (y, x) chunks to rechunk to afterwards."""
    iy, ix = layout.roles.index("y"), layout.roles.index("x")
    size = (layout.shape[iy], layout.shape[ix])
    units = (max(1, min(layout.units[iy], size[0])), max(1, min(layout.units[ix], size[1])))
    pixel_bytes = layout.out_shape[2] * layout.out_dtype.itemsize
    aligned = _aligned_chunks(units, size, pixel_bytes)
    read, after = aligned, None
    if yx is not None:
        if all(c % u == 0 or c >= s for c, u, s in zip(yx, units, size, strict=True)):
            read = yx  # whole source chunks: read them directly
        else:
            after = yx  # read whole source chunks once, then cut
    elif units[0] * units[1] * pixel_bytes > _MAX_CHUNK_BYTES:
        after = (_WHOLE_CHUNK, _WHOLE_CHUNK)  # one huge strip: read it once, then cut
    sizes = {"y": read[0], "x": read[1], "c": -1, "0": 1}
    return tuple(sizes[r] for r in layout.roles), after


class _LazySource:
    """A TIFF series or Zarr array read region by region, on whichever process asks.

    tifffile's Zarr store holds an open file and cannot be pickled. This holds the path
    only and opens the source once per process (`_cached_source`), so graphs can travel
    to workers. Read errors become `ImageReadError` naming the source.
    """

    def __init__(
        self, kind: str, path: str, inner: str, source: str, layout: _Layout, stamp: object
    ) -> None:
        self.kind, self.path, self.inner, self.source = kind, path, inner, source
        self.shape, self.dtype, self.ndim = layout.shape, layout.dtype, len(layout.shape)
        self.stamp = stamp

    def __dask_tokenize__(self) -> object:
        return ("kmdist-io", self.kind, self.path, self.inner, self.shape, str(self.dtype))

    def __getitem__(self, key: Any) -> NDArray:
        with _decode_errors(self.source):
            return np.asarray(_cached_source(self.kind, self.path, self.inner, self.stamp)[key])


@functools.lru_cache(maxsize=32)
def _cached_source(kind: str, path: str, inner: str, stamp: object) -> Any:
    # `stamp` (size, mtime) reopens a file that changed. The TiffFile stays open for as
    # long as its store is cached.
    if kind == "tiff":
        store = tifffile.TiffFile(path).aszarr(
            series=0, level=0, maxworkers=_DECODE_THREADS, read_only=True
        )
        return zarr.open_array(store, mode="r")
    return zarr.open_array(path, path=inner, mode="r")


def _lazy_array(source: _LazySource, layout: _Layout, yx: tuple[int, int] | None) -> da.Array:
    read, after = _read_plan(layout, yx)
    meta = np.empty((0,) * len(layout.shape), layout.dtype)
    arr = da.from_array(source, chunks=read, asarray=False, fancy=False, meta=meta)
    arr = _to_yxc(arr, layout)
    return arr if after is None else arr.rechunk((*after, -1))


def _open_tiff(
    path: str, source: str, yx: tuple[int, int] | None, stamp: tuple[int, int]
) -> da.Array:
    try:
        with tifffile.TiffFile(path) as tif:
            _, layout = _tiff_source(tif, source)
    except (ImageReadError, MemoryError):
        raise
    except Exception as exc:
        raise ImageReadError(source, f"not a readable TIFF ({_describe(exc)})") from exc
    return _lazy_array(_LazySource("tiff", path, "", source, layout, stamp), layout, yx)


def _tiff_source(tif: Any, source: str) -> tuple[Any, _Layout]:
    """Open the first series' level 0 as a Zarr array; say how it becomes (y, x, c)."""
    if not tif.pages or not tif.series:
        raise ImageReadError(source, "the TIFF holds no image")
    series = tif.series[0]
    z = zarr.open_array(
        tif.aszarr(series=0, level=0, maxworkers=_DECODE_THREADS, read_only=True), mode="r"
    )
    shape, axes = tuple(z.shape), str(series.axes)
    if 0 in shape or len(shape) < 2:
        raise ImageReadError(source, f"the image has a zero dimension (shape {shape})")
    channel = "S" if "S" in axes else "C" if "C" in axes else ""
    roles = "".join({"Y": "y", "X": "x"}.get(a, "c" if a == channel else "0") for a in axes.upper())
    if len(roles) != len(shape) or roles.count("y") != 1 or roles.count("x") != 1:
        raise ImageReadError(source, f"unsupported TIFF layout (axes {axes!r}, shape {shape})")
    keyframe = series.keyframe
    keep = palette = None
    alpha = sum(1 for e in keyframe.extrasamples or () if e in (1, 2))
    if channel == "S" and alpha and shape[roles.index("c")] > alpha:
        keep = shape[roles.index("c")] - alpha  # extra alpha samples come last
    colormap = keyframe.colormap
    is_palette = keyframe.photometric == tifffile.PHOTOMETRIC.PALETTE
    if is_palette and colormap is not None and "c" not in roles:
        palette = _tiff_palette(np.asarray(colormap))
    units = tuple(int(u) for u in z.chunks)
    layout = _Layout(shape, np.dtype(z.dtype), roles, units, keep, palette)
    return z, layout


def _tiff_palette(colormap: NDArray) -> NDArray:
    # TIFF colour maps are 16-bit; some writers store 8-bit values in them.
    if colormap.max() > 255:
        colormap = colormap >> 8
    return np.ascontiguousarray(colormap.T, dtype=np.uint8)


def _is_zarr(path: str) -> bool:
    names = ("zarr.json", ".zarray", ".zgroup")
    return path.rstrip("/\\").lower().endswith(".zarr") or any(
        os.path.isfile(os.path.join(path, n)) for n in names
    )


def _open_zarr(path: str, source: str, yx: tuple[int, int] | None) -> da.Array:
    try:
        node = zarr.open(path, mode="r")
    except Exception as exc:
        raise ImageReadError(source, f"not a readable Zarr store ({_describe(exc)})") from exc
    arr, inner, axes = _zarr_image(node, source)
    shape = tuple(int(s) for s in arr.shape)
    if 0 in shape:
        raise ImageReadError(source, f"the image has a zero dimension (shape {shape})")
    roles = _zarr_roles(axes, shape, source)
    units = tuple(int(u) for u in (arr.shards or arr.chunks))
    layout = _Layout(shape, np.dtype(arr.dtype), roles, units)
    lazy = _LazySource("zarr", path, inner, source, layout, os.stat(path).st_mtime_ns)
    return _lazy_array(lazy, layout, yx)


def _zarr_image(node: Any, source: str) -> tuple[Any, str, list[tuple[str, str]] | None]:
    """Find the image array in a Zarr node: the array, its path, its (name, type) axes."""
    if isinstance(node, zarr.Array):
        return node, "", _dimension_names(node)
    attrs = node.attrs.asdict()
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
    if multiscales:
        image = multiscales[0]
        inner = str(image["datasets"][0]["path"])
        axes = [
            (str(a.get("name", "")), str(a.get("type", "")))
            if isinstance(a, dict)
            else (str(a), "")
            for a in image.get("axes", [])
        ]
    else:
        names = sorted(node.array_keys())
        if "0" not in names and len(names) != 1:
            raise ImageReadError(
                source,
                f"a Zarr group with {len(names)} arrays and no multiscales metadata; "
                "give the path of the image array itself",
            )
        inner, axes = ("0" if "0" in names else names[0]), []
    arr = node[inner]
    if not isinstance(arr, zarr.Array):
        raise ImageReadError(source, f"{inner!r} in this Zarr group is not an array")
    return arr, inner, axes or _dimension_names(arr)


def _dimension_names(arr: Any) -> list[tuple[str, str]] | None:
    names = getattr(arr.metadata, "dimension_names", None)  # Zarr v3 only
    return [(str(n), "") for n in names] if names and all(names) else None


def _axis_role(name: str, kind: str) -> str:
    name = name.lower()
    if name in ("y", "x"):
        return name
    return "c" if kind == "channel" or name in ("c", "s", "channel") else "0"


def _zarr_roles(axes: list[tuple[str, str]] | None, shape: tuple[int, ...], source: str) -> str:
    if axes is not None and len(axes) == len(shape):
        roles = "".join(_axis_role(name, kind) for name, kind in axes)
        if roles.count("y") == 1 and roles.count("x") == 1 and roles.count("c") <= 1:
            return roles
    if len(shape) < 2:
        raise ImageReadError(source, f"not an image: a Zarr array of shape {shape}")
    if len(shape) == 2:
        return "yx"
    # Without usable names: channels last if there are few of them, first otherwise.
    return "0" * (len(shape) - 3) + ("yxc" if shape[-1] <= 4 else "cyx")


# --- Archives ------------------------------------------------------------------------


def _archive_kind(path: str) -> Literal["zip", "tar"] | None:
    lower = path.lower()
    for suffix, kind in _ARCHIVES:
        if lower.endswith(suffix):
            return kind
    return None


def _path_problem(member: str) -> str | None:
    parts = member.replace("\\", "/").split("/")
    if member.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", member):
        return "an absolute path in the archive; refused"
    if ".." in parts:
        return "a path that leaves the archive ('..'); refused"
    return None


def _size_problem(size: int, packed: int | None) -> str | None:
    if size > _MAX_MEMBER_BYTES:
        return f"{size:,} bytes uncompressed, more than the {_MAX_MEMBER_BYTES:,} accepted; refused"
    if packed is not None and size > _BOMB_BYTES and size > _BOMB_RATIO * max(packed, 1):
        return (
            f"declares {size:,} bytes uncompressed from {packed:,} compressed (more than "
            f"{_BOMB_RATIO}:1), a likely zip bomb; refused"
        )
    return None


def _zip_problem(info: zipfile.ZipInfo) -> str | None:
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link; refused"
    if info.flag_bits & 0x1:
        return "encrypted; cannot be read"
    return _size_problem(info.file_size, info.compress_size)


def _tar_problem(info: tarfile.TarInfo) -> str | None:
    if info.issym():
        return f"a symbolic link (to {info.linkname!r}); refused"
    if info.islnk():
        return f"a hard link (to {info.linkname!r}); refused"
    if info.isdev():
        return "a device file; refused"
    if not info.isfile():
        return "not a regular file; refused"
    return _size_problem(info.size, None)


@contextlib.contextmanager
def _member_file(archive: str, member: str, source: str) -> Iterator[IO[bytes]]:
    """Open one archive member as a seekable stream, checked again: archives change."""
    problem = _path_problem(member)
    if problem:
        raise ImageReadError(source, problem)
    if _archive_kind(archive) == "zip":
        with zipfile.ZipFile(archive) as zf:
            zinfo = _archive_member(zf.getinfo, member, source)
            _refuse(_zip_problem(zinfo), source)
            with zf.open(zinfo) as fp:
                yield fp
    else:
        with tarfile.open(archive, "r:*") as tf:
            tinfo = _archive_member(tf.getmember, member, source)
            _refuse(_tar_problem(tinfo), source)
            tfp = tf.extractfile(tinfo)
            if tfp is None:
                raise ImageReadError(source, "not a regular file; refused")
            with tfp:
                yield tfp


def _archive_member[T](get: Callable[[str], T], member: str, source: str) -> T:
    try:
        return get(member)
    except KeyError:
        raise ImageReadError(source, "no such member in the archive") from None


def _refuse(problem: str | None, source: str) -> None:
    if problem is not None:
        raise ImageReadError(source, problem)


def _list_archive(archive: str) -> list[ImageRef]:
    try:
        if _archive_kind(archive) == "zip":
            with zipfile.ZipFile(archive) as zf:
                # Later duplicates win, as in ZipFile.getinfo.
                zinfos = {i.filename: i for i in zf.infolist() if not i.is_dir()}
            found = {n: _path_problem(n) or _zip_problem(i) for n, i in zinfos.items()}
        else:
            with tarfile.open(archive, "r:*") as tf:
                tinfos = {i.name: i for i in tf.getmembers() if not i.isdir()}
            found = {n: _path_problem(n) or _tar_problem(i) for n, i in tinfos.items()}
    except MemoryError:
        raise
    except Exception as exc:
        # Reported as a failed image, not raised: the other inputs still run.
        name = _sanitise(_strip_archive_suffix(os.path.basename(archive)))
        problem = f"cannot read the archive ({_describe(exc)})"
        return [ImageRef(name, archive, archive, None, problem)]
    return [
        ImageRef(_name(member), f"{archive}::{member}", archive, member, problem)
        for member, problem in sorted(found.items())
        if _is_image_name(member)
    ]


def _strip_archive_suffix(name: str) -> str:
    for suffix, _ in _ARCHIVES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# --- Listing files, folders and patterns ---------------------------------------------


def _hidden(part: str) -> bool:
    return (part.startswith(".") and part not in (".", "..")) or part == "__MACOSX"


def _is_image_name(path: str) -> bool:
    parts = path.replace("\\", "/").split("/")
    return PurePosixPath(parts[-1]).suffix.lower() in IMAGE_SUFFIXES and not any(
        _hidden(p) for p in parts
    )


def _expand(path: str, follow_symlinks: bool) -> list[ImageRef]:
    if os.path.lexists(path):
        if os.path.isdir(path):
            if _is_zarr(path):
                return [_file_ref(os.path.basename(os.path.normpath(path)), path)]
            return _walk_folder(path, follow_symlinks)
        if _archive_kind(path):
            return _list_archive(path)
        return [_file_ref(os.path.basename(path), path)]
    if any(ch in path for ch in "*?["):
        return _expand_glob(path)
    raise ImageReadError(path, "file not found")


def _file_ref(rel: str, path: str, problem: str | None = None) -> ImageRef:
    return ImageRef(_name(rel), path, path, None, problem)


def _walk_folder(root: str, follow_symlinks: bool) -> list[ImageRef]:
    real_root = os.path.realpath(root)
    found: list[tuple[str, ImageRef]] = []
    seen: set[str] = set()

    def unlisted(err: OSError) -> None:
        # A folder that cannot be listed is reported as a failed image, not skipped.
        where = err.filename if isinstance(err.filename, str) else root
        rel = PurePath(os.path.relpath(where, root)).as_posix()
        found.append((rel, _file_ref(rel, where, f"cannot list this folder ({_describe(err)})")))

    walk = os.walk(root, onerror=unlisted, followlinks=follow_symlinks)
    for dirpath, dirnames, filenames in walk:
        if follow_symlinks:
            real = os.path.realpath(dirpath)
            if real in seen:  # a link cycle, or a second way into the same folder
                dirnames.clear()
                continue
            seen.add(real)
        subdirs = []
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if _hidden(d):
                continue
            if d.lower().endswith(".zarr"):
                found.append(_walk_ref(full, root, real_root, follow_symlinks))
            else:
                subdirs.append(d)
        dirnames[:] = subdirs
        for f in filenames:
            if not _hidden(f) and PurePosixPath(f).suffix.lower() in IMAGE_SUFFIXES:
                found.append(_walk_ref(os.path.join(dirpath, f), root, real_root, follow_symlinks))
    return [ref for _, ref in sorted(found, key=lambda item: item[0])]


def _walk_ref(full: str, root: str, real_root: str, follow: bool) -> tuple[str, ImageRef]:
    rel = PurePath(os.path.relpath(full, root)).as_posix()
    problem = None
    if os.path.islink(full):
        target = os.path.realpath(full)
        if not os.path.exists(target):
            problem = "a broken symbolic link"
        elif not follow and os.path.commonpath([target, real_root]) != real_root:
            problem = (
                f"a symbolic link to {target}, outside {root}; not followed "
                "(pass follow_symlinks=True to read it)"
            )
    return rel, _file_ref(rel, full, problem)


def _expand_glob(pattern: str) -> list[ImageRef]:
    matches = sorted(glob.glob(pattern, recursive=True))
    if not matches:
        raise ImageReadError(pattern, "no file matches this pattern")
    head: list[str] = []
    for part in PurePath(pattern).parts:
        if any(ch in part for ch in "*?["):
            break
        head.append(part)
    root = os.path.join(*head) if head else os.curdir
    refs: list[ImageRef] = []
    for match in matches:
        rel = PurePath(os.path.relpath(match, root)).as_posix()
        if os.path.isdir(match):
            if _is_zarr(match):
                refs.append(_file_ref(rel, match))
        elif _archive_kind(match):
            refs.extend(_list_archive(match))
        elif PurePosixPath(match).suffix.lower() in IMAGE_SUFFIXES:
            refs.append(_file_ref(rel, match))
    return refs


# --- Names ---------------------------------------------------------------------------


def _name(rel: str) -> str:
    """Make a group name from a relative path: ``sub/dir/img.png`` gives ``sub_dir_img``."""
    path = PurePosixPath(rel.replace("\\", "/"))
    if path.suffix:
        path = path.with_suffix("")
    return _sanitise(str(path))


def _sanitise(name: str) -> str:
    # Zarr reserves names starting with "__"; names starting with "." are hidden.
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip("._")[:_MAX_NAME]
    return clean or "image"


def _unique_names(refs: list[ImageRef]) -> list[ImageRef]:
    taken: set[str] = set()
    out = []
    for ref in refs:
        name, n = ref.name, 1
        while name.lower() in taken:  # case-insensitive file systems hold the groups
            n += 1
            name = f"{ref.name}-{n}"
        taken.add(name.lower())
        out.append(ref if name == ref.name else replace(ref, name=name))
    return out
