"""Read TIFF series and Zarr arrays lazily, chunk by chunk, as Dask arrays (y, x, c).

TIFF files are read tile by tile or strip by strip through tifffile's Zarr store, so an
image far larger than memory never sits whole anywhere; Zarr arrays and OME-Zarr images
are read chunk by chunk. A `Layout` says how the source's axes become (y, x, c), and the
Dask chunks are made of whole source chunks (see `kmdist.io._chunks`).
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt
import tifffile
import zarr
from PIL import Image

from kmdist._fs import Stamp, is_url, join, open_input, remote, stat
from kmdist.io._chunks import MAX_CHUNK_BYTES, WHOLE_CHUNK, aligned_chunks
from kmdist.io._errors import ImageReadError, decode_errors, describe
from kmdist.io._header import TIFF_MAGIC

__all__ = ["TIFF_MAGIC", "Layout", "is_zarr", "open_tiff", "open_zarr", "tiff_source", "to_yxc"]

NDArray = npt.NDArray[Any]

_DECODE_THREADS = max(2, os.cpu_count() or 2)


@dataclass(frozen=True)
class Layout:
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
    cmyk: bool = False  # four ink channels, converted to RGB
    ycbcr: bool = False  # 8-bit YCbCr samples that tifffile leaves unconverted

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
        if self.palette is not None or self.cmyk or self.ycbcr:
            c = 3
        return self.shape[self.roles.index("y")], self.shape[self.roles.index("x")], c

    @property
    def out_dtype(self) -> np.dtype[Any]:
        """Dtype of the (y, x, c) array: native byte order, booleans as uint8."""
        if self.palette is not None or self.dtype == np.bool_:
            return np.dtype(np.uint8)
        return self.dtype.newbyteorder("=")


def to_yxc(arr: Any, layout: Layout) -> Any:
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
        return _to_rgb(_lookup, arr, np.dtype(np.uint8), layout.palette)
    if layout.cmyk:
        return _to_rgb(_cmyk_to_rgb, arr, arr.dtype)
    if layout.ycbcr:
        return _to_rgb(_ycbcr_to_rgb, arr, arr.dtype)
    if layout.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)  # like a bilevel PNG
    if arr.dtype != layout.out_dtype:
        return arr.astype(layout.out_dtype)
    return arr


def _to_rgb(convert: Any, arr: Any, dtype: np.dtype[Any], *args: Any) -> Any:
    """Apply a (y, x, c) -> (y, x, 3) conversion to a NumPy array or block by block."""
    if isinstance(arr, da.Array):
        chunks = (*arr.chunks[:2], (3,))
        meta = np.empty((0, 0, 0), dtype)
        return da.map_blocks(convert, arr, *args, chunks=chunks, meta=meta)
    return convert(arr, *args)


def _lookup(block: NDArray, palette: NDArray) -> NDArray:
    return np.take(palette, block[..., 0], axis=0, mode="clip")


def _cmyk_to_rgb(block: NDArray) -> NDArray:
    """Ink to light as Pillow converts CMYK: R = (max - K) * (1 - C / max), and G, B.

    For 8 bits with Pillow's integer rounding, so a CMYK TIFF gives the colours Pillow
    gives (and a CMYK JPEG, which Pillow decodes, gets).
    """
    top = int(np.iinfo(block.dtype).max)
    ink = block[..., :3].astype(np.int64)
    nk = top - block[..., 3:4].astype(np.int64)
    if top == 255:
        t = ink * nk + 128
        scaled = ((t >> 8) + t) >> 8  # Pillow's MULDIV255: round(ink * nk / 255)
    else:
        scaled = (ink * nk + top // 2) // top
    return np.clip(nk - scaled, 0, top).astype(block.dtype)


def _ycbcr_to_rgb(block: NDArray) -> NDArray:
    """YCbCr to RGB by Pillow's own conversion, so a YCbCr TIFF gets Pillow's colours."""
    ycbcr = Image.fromarray(np.ascontiguousarray(block[..., :3]), mode="YCbCr")
    return np.asarray(ycbcr.convert("RGB"))


def _read_plan(
    layout: Layout, yx: tuple[int, int] | None
) -> tuple[tuple[int, ...], tuple[int, int] | None]:
    """Chunks to read the source with, and the (y, x) chunks to rechunk to afterwards."""
    iy, ix = layout.roles.index("y"), layout.roles.index("x")
    size = (layout.shape[iy], layout.shape[ix])
    units = (max(1, min(layout.units[iy], size[0])), max(1, min(layout.units[ix], size[1])))
    pixel_bytes = layout.out_shape[2] * layout.out_dtype.itemsize
    aligned = aligned_chunks(units, size, pixel_bytes)
    read, after = aligned, None
    if yx is not None:
        if all(c % u == 0 or c >= s for c, u, s in zip(yx, units, size, strict=True)):
            read = yx  # whole source chunks: read them directly
        else:
            after = yx  # read whole source chunks once, then cut
    elif units[0] * units[1] * pixel_bytes > MAX_CHUNK_BYTES:
        after = (WHOLE_CHUNK, WHOLE_CHUNK)  # one huge strip: read it once, then cut
    sizes = {"y": read[0], "x": read[1], "c": -1, "0": 1}
    return tuple(sizes[r] for r in layout.roles), after


class _LazySource:
    """A TIFF series or Zarr array read region by region, on whichever process asks.

    tifffile's Zarr store holds an open file and cannot be pickled. This holds the path
    only and opens the source once per process (`_cached_source`), so graphs can travel
    to workers. Read errors become `ImageReadError` naming the source.
    """

    def __init__(
        self, kind: str, path: str, inner: str, source: str, layout: Layout, stamp: object
    ) -> None:
        self.kind, self.path, self.inner, self.source = kind, path, inner, source
        self.shape, self.dtype, self.ndim = layout.shape, layout.dtype, len(layout.shape)
        self.stamp = stamp

    def __dask_tokenize__(self) -> object:
        return ("kmdist-io", self.kind, self.path, self.inner, self.shape, str(self.dtype))

    def __getitem__(self, key: Any) -> NDArray:
        with decode_errors(self.source):
            return np.asarray(_cached_source(self.kind, self.path, self.inner, self.stamp)[key])


@functools.lru_cache(maxsize=32)
def _cached_source(kind: str, path: str, inner: str, stamp: object) -> Any:
    # `stamp` (size, mtime) reopens a file that changed. The TiffFile stays open for as
    # long as its store is cached.
    if kind == "tiff":
        store = tifffile.TiffFile(open_input(path)).aszarr(
            series=0, level=0, maxworkers=_DECODE_THREADS, read_only=True
        )
        return zarr.open_array(store, mode="r")
    return zarr.open_array(_zarr_store(path), path=inner, mode="r")


def _zarr_stamp(path: str) -> Stamp:
    """Return what changes when a Zarr store is rewritten.

    At a URL, its metadata object's stamp (a prefix has no size, time or ETag of its
    own); locally, the folder's.
    """
    if is_url(path):
        for name in ("zarr.json", ".zarray", ".zgroup"):
            with contextlib.suppress(FileNotFoundError):
                return stat(join(path, name)).stamp
    return stat(path).stamp


def _zarr_store(path: str) -> Any:
    # Zarr opens URLs through fsspec too, but read-only only when told so.
    if is_url(path):
        return zarr.storage.FsspecStore.from_url(path, read_only=True)
    return path


def _lazy_array(source: _LazySource, layout: Layout, yx: tuple[int, int] | None) -> da.Array:
    read, after = _read_plan(layout, yx)
    meta = np.empty((0,) * len(layout.shape), layout.dtype)
    arr = da.from_array(source, chunks=read, asarray=False, fancy=False, meta=meta)
    arr = to_yxc(arr, layout)
    return arr if after is None else arr.rechunk((*after, -1))


def open_tiff(path: str, source: str, yx: tuple[int, int] | None, stamp: Stamp) -> da.Array:
    """Open a TIFF file's first series, level 0, lazily; `stamp` is its (size, mtime)."""
    try:
        with open_input(path) as fh, tifffile.TiffFile(fh) as tif:
            _, layout = tiff_source(tif, source)
    except (ImageReadError, MemoryError):
        raise
    except Exception as exc:
        raise ImageReadError(source, f"not a readable TIFF ({describe(exc)})") from exc
    return _lazy_array(_LazySource("tiff", path, "", source, layout, stamp), layout, yx)


def tiff_source(tif: Any, source: str) -> tuple[Any, Layout]:
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
    # Separated (ink) samples, inkset CMYK (1, the default): four inks become RGB.
    inks = (keep or shape[roles.index("c")]) if "c" in roles else 1
    cmyk = (
        keyframe.photometric == tifffile.PHOTOMETRIC.SEPARATED
        and keyframe.tags.valueof(332, 1) == 1  # InkSet tag
        and inks == 4
        and np.dtype(z.dtype).kind == "u"
    )
    # tifffile converts JPEG-compressed YCbCr to RGB itself; other YCbCr it returns as
    # stored (Pillow converts it: so does kmdist). Chroma subsampling is decoded by
    # tifffile only inside JPEG.
    ycbcr = (
        keyframe.photometric == tifffile.PHOTOMETRIC.YCBCR
        and keyframe.compression != tifffile.COMPRESSION.JPEG
        and "c" in roles
        and (keep or shape[roles.index("c")]) == 3
    )
    if ycbcr and (np.dtype(z.dtype) != np.uint8 or tuple(keyframe.subsampling) != (1, 1)):
        raise ImageReadError(
            source,
            f"unsupported YCbCr TIFF ({np.dtype(z.dtype)}, chroma subsampling "
            f"{tuple(keyframe.subsampling)}); convert it to RGB",
        )
    units = tuple(int(u) for u in z.chunks)
    layout = Layout(shape, np.dtype(z.dtype), roles, units, keep, palette, cmyk, ycbcr)
    return z, layout


def _tiff_palette(colormap: NDArray) -> NDArray:
    # TIFF colour maps are 16-bit; some writers store 8-bit values in them.
    if colormap.max() > 255:
        colormap = colormap >> 8
    return np.ascontiguousarray(colormap.T, dtype=np.uint8)


def is_zarr(path: str) -> bool:
    """Whether folder `path` is a Zarr store: named ``*.zarr``, or holding Zarr metadata."""
    names = ("zarr.json", ".zarray", ".zgroup")
    if path.rstrip("/\\").lower().endswith(".zarr"):
        return True
    if is_url(path):
        fs, root = remote(path)
        return any(fs.isfile(f"{root.rstrip('/')}/{n}") for n in names)
    return any(os.path.isfile(os.path.join(path, n)) for n in names)


def open_zarr(path: str, source: str, yx: tuple[int, int] | None) -> da.Array:
    """Open the image in a Zarr store (an array, or an OME-Zarr image's level 0) lazily."""
    try:
        node = zarr.open(_zarr_store(path), mode="r")
    except Exception as exc:
        raise ImageReadError(source, f"not a readable Zarr store ({describe(exc)})") from exc
    arr, inner, axes = _zarr_image(node, source)
    shape = tuple(int(s) for s in arr.shape)
    if 0 in shape:
        raise ImageReadError(source, f"the image has a zero dimension (shape {shape})")
    roles = _zarr_roles(axes, shape, source)
    units = tuple(int(u) for u in (arr.shards or arr.chunks))
    layout = Layout(shape, np.dtype(arr.dtype), roles, units)
    lazy = _LazySource("zarr", path, inner, source, layout, _zarr_stamp(path))
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
