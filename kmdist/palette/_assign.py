"""Label assignment: every pixel gets the label of its nearest palette colour.

8-bit RGB uses a lookup table indexed by the packed 24-bit colour, built once per
palette and shipped to each worker once (one key in the graph). Other images use a
nearest-centre search per block.
"""

from __future__ import annotations

from typing import Any, cast

import dask.array as da
import numpy as np
import numpy.typing as npt
from dask.delayed import delayed
from distributed import Future

from kmdist._dask import active_client
from kmdist.kmeans import nearest
from kmdist.palette._assign_kernels import color_planes, lut_labels
from kmdist.palette._color import to_clustering_space
from kmdist.palette._palette import Palette

__all__ = [
    "assign_pixels",
    "build_lut",
    "codes_labels",
    "is_rgb8",
    "label_dtype",
    "pack_rgb8",
    "recolor",
    "recolor_planes",
    "scatter_everywhere",
    "segment",
]

_LUT_SLAB = 1 << 20
_LUT_MIN_PIXELS = 1 << 22


def _shipped(table: npt.NDArray[Any] | Future[Any]) -> Any:
    """Make the table one graph dependency, so each worker receives it once.

    On a distributed cluster it is scattered to every worker up front (and not put into
    the graph), unless it is there already (a Future); otherwise it becomes a single
    delayed key.
    """
    if isinstance(table, Future):
        return table  # already on the cluster
    client = active_client()
    if client is None:
        return delayed(table, pure=True)
    return scatter_everywhere(client, table)


def scatter_everywhere(client: Any, table: npt.NDArray[Any]) -> Future[Any]:
    """Scatter `table` to every worker under a key of its own.

    Not under a key hashed from its bytes: images labelled with the same table (a shared
    palette) would share the key, and one image's release of it could reach the
    scheduler while the next one's broadcast was replicating it. CI saw that: "Key lost
    during replication", and the image's write cancelled for lost dependencies.
    """
    return cast("Future[Any]", client.scatter(table, broadcast=True, hash=False))


def label_dtype(k: int) -> np.dtype[Any]:
    """uint8 for up to 256 labels, uint16 up to 65,536."""
    if k <= 256:
        return np.dtype(np.uint8)
    if k <= 65536:
        return np.dtype(np.uint16)
    raise ValueError(f"at most 65,536 colours are supported, got {k}")


def pack_rgb8(block: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint32]:
    """Pack the last axis of an 8-bit RGB array into 24-bit codes ``r << 16 | g << 8 | b``."""
    codes = block[..., 0].astype(np.uint32) << 16
    codes |= block[..., 1].astype(np.uint32) << 8
    codes |= block[..., 2]
    return codes.astype(np.uint32, copy=False)


def is_rgb8(image: Any) -> bool:
    """Whether `image` (y, x, c) is 8-bit RGB, the case histograms handle."""
    return bool(image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8)


def unpack_rgb8(codes: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.uint8]:
    """Inverse of `pack_rgb8`: codes to an (..., 3) uint8 array."""
    c = np.asarray(codes, dtype=np.uint32)
    return np.stack([(c >> 16) & 255, (c >> 8) & 255, c & 255], axis=-1).astype(np.uint8)


def build_lut(
    palette: Palette, codes: npt.NDArray[np.integer[Any]] | None = None
) -> npt.NDArray[np.integer[Any]]:
    """Lookup table from packed 24-bit colour to label, for an 8-bit RGB palette.

    Parameters
    ----------
    palette : Palette
        An 8-bit, 3-channel palette.
    codes : ndarray, optional
        Packed colours that need an entry (for instance those of an image's
        histogram). Entries of other colours stay 0. None fills all 2**24 entries.

    Returns
    -------
    ndarray of shape (2**24,)
        Labels, dtype from `label_dtype`.
    """
    if palette.dtype != "uint8" or palette.channels != 3:
        raise ValueError("a lookup table needs an 8-bit RGB palette")
    lut = np.zeros(1 << 24, dtype=label_dtype(palette.k))
    todo = np.arange(1 << 24, dtype=np.uint32) if codes is None else np.asarray(codes, np.uint32)
    centers = _centers_in_space(palette)
    for start in range(0, todo.size, _LUT_SLAB):
        part = todo[start : start + _LUT_SLAB]
        rgb = unpack_rgb8(part)
        pts = to_clustering_space(rgb, palette.color_space, "uint8")
        lut[part] = nearest(pts, centers)[0]
    return lut


def codes_labels(
    pixels: npt.NDArray[np.uint8], palette: Palette, codes: npt.NDArray[np.uint32]
) -> npt.NDArray[Any]:
    """Label an in-memory 8-bit RGB image through its sorted distinct colours `codes`.

    The labels `build_lut(palette, codes)` would give, without the table: a nearest-colour
    search over the distinct colours, then a binary search of each pixel's packed colour.
    On a thumbnail, faulting in a fresh 2**24-entry table costs more (65,536 pixels,
    28,000 colours: about 1.5 against 8 ms).
    """
    if palette.dtype != "uint8" or palette.channels != 3 or not is_rgb8(pixels):
        raise ValueError("labelling through colour codes needs 8-bit RGB pixels and palette")
    pts = to_clustering_space(unpack_rgb8(codes), palette.color_space, "uint8")
    per_color = nearest(pts, _centers_in_space(palette))[0].astype(label_dtype(palette.k))
    return per_color[np.searchsorted(codes, pack_rgb8(pixels))]


def _centers_in_space(palette: Palette) -> npt.NDArray[np.float64]:
    return to_clustering_space(palette.colors, palette.color_space, palette.dtype)


def _nearest_kernel(
    block: npt.NDArray[Any], centers: npt.NDArray[np.float64], space: str, dtype: str, out: str
) -> npt.NDArray[Any]:
    pts = to_clustering_space(block.reshape(-1, block.shape[-1]), space, dtype)
    return nearest(pts, centers)[0].astype(out).reshape(block.shape[:-1])


def segment(
    image: da.Array, palette: Palette, *, lut: npt.NDArray[Any] | Future[Any] | None = None
) -> da.Array:
    """Label every pixel of `image` with its nearest palette colour, block by block.

    Parameters
    ----------
    image : dask.array.Array of shape (y, x, c)
        The image, with `palette.channels` channels.
    palette : Palette
        Colours to assign.
    lut : ndarray or distributed.Future, optional
        A ready lookup table for 8-bit RGB (see `build_lut`), or a Future of one held
        on the cluster; built when omitted.

    Returns
    -------
    dask.array.Array of shape (y, x)
        Labels (uint8 for k <= 256, else uint16), chunked like `image`.
    """
    if image.ndim != 3 or image.shape[2] != palette.channels:
        raise ValueError(
            f"image of shape {image.shape} does not match a {palette.channels}-channel palette"
        )
    if image.numblocks[2] != 1:
        image = image.rechunk({2: -1})
    dtype = label_dtype(palette.k)
    meta = np.empty((0, 0), dtype=dtype)
    rgb8 = image.dtype == np.uint8 and palette.channels == 3 and palette.dtype == "uint8"
    # A full 2**24-entry table costs more than a direct search on a small image.
    if rgb8 and (lut is not None or image.shape[0] * image.shape[1] >= _LUT_MIN_PIXELS):
        table = build_lut(palette) if lut is None else lut
        return da.map_blocks(
            lut_labels, image, _shipped(table), drop_axis=2, dtype=dtype, meta=meta
        )
    centers = _centers_in_space(palette)
    return da.map_blocks(
        _nearest_kernel,
        image,
        centers,
        palette.color_space,
        str(image.dtype),
        dtype.name,
        drop_axis=2,
        dtype=dtype,
        meta=meta,
    )


def assign_pixels(
    pixels: npt.NDArray[Any], palette: Palette, lut: npt.NDArray[Any] | None = None
) -> npt.NDArray[Any]:
    """Label the pixels of an in-memory image (y, x, c) now; `segment` for NumPy input.

    With `lut` (8-bit RGB) each pixel is one table lookup; otherwise a nearest-colour
    search, which on a small image costs less than building a table.
    """
    if pixels.ndim != 3 or pixels.shape[2] != palette.channels:
        raise ValueError(
            f"image of shape {pixels.shape} does not match a {palette.channels}-channel palette"
        )
    dtype = label_dtype(palette.k)
    if lut is not None and pixels.dtype == np.uint8 and palette.channels == 3:
        return np.asarray(lut_labels(pixels, lut), dtype=dtype)
    centers = _centers_in_space(palette)
    return _nearest_kernel(pixels, centers, palette.color_space, str(pixels.dtype), dtype.name)


def recolor(labels: da.Array, palette: Palette) -> da.Array:
    """Replace each label by its palette colour: shape (y, x, c), the palette's dtype."""
    colors = palette.colors_as()
    return da.map_blocks(
        _take_kernel,
        labels,
        colors,
        new_axis=2,
        chunks=(*labels.chunks, (palette.channels,)),
        dtype=colors.dtype,
        meta=np.empty((0, 0, 0), dtype=colors.dtype),
    )


def _take_kernel(labels: npt.NDArray[Any], colors: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return colors[labels]


def recolor_planes(labels: da.Array, palette: Palette) -> da.Array:
    """`recolor` channel first, shape (c, y, x), as OME-Zarr stores an image."""
    colors = palette.colors_as()
    return da.map_blocks(
        color_planes,
        labels,
        colors,
        new_axis=0,
        chunks=((palette.channels,), *labels.chunks),
        dtype=colors.dtype,
        meta=np.empty((0, 0, 0), dtype=colors.dtype),
    )
