"""Reading segmentations back: lazily, as Dask arrays, and as summaries for `kmdist info`."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import zarr

from kmdist.palette import Palette, PaletteError
from kmdist.store._errors import OutputError
from kmdist.store._layout import SEG_PATH, check_name
from kmdist.store._root import StoreRoot, open_root

__all__ = [
    "Segmentation",
    "SegmentationInfo",
    "is_complete",
    "iter_segmentations",
    "list_segmentations",
    "open_segmentation",
    "palette_from_block",
    "read_block",
]


@dataclass(frozen=True, eq=False)
class Segmentation:
    """A stored segmentation, read back lazily.

    Instances compare by identity: comparing Dask arrays would build new arrays.

    Attributes
    ----------
    name : str
        The image's group name in the store.
    labels : dask.array.Array of shape (y, x)
        Full-resolution labels.
    image : dask.array.Array of shape (y, x, c)
        Full-resolution recoloured image (stored as (c, y, x), transposed back here).
    palette : Palette
        The colours, label ``i`` having colour ``palette.colors[i]``.
    attrs : dict
        The ``kmdist`` metadata block (palette, provenance, extra items).
    n_levels : int
        Pyramid levels; level ``i`` is subsampled by ``2**i`` in y and x.
    """

    name: str
    labels: da.Array
    image: da.Array
    palette: Palette
    attrs: dict[str, Any]
    n_levels: int
    _label_levels: tuple[da.Array, ...] = field(repr=False, compare=False)
    _image_levels: tuple[da.Array, ...] = field(repr=False, compare=False)

    def labels_level(self, i: int) -> da.Array:
        """Labels at pyramid level `i`, shape (y, x)."""
        return self._label_levels[self._check_level(i)]

    def image_level(self, i: int) -> da.Array:
        """Recoloured image at pyramid level `i`, shape (y, x, c)."""
        return self._image_levels[self._check_level(i)]

    def _check_level(self, i: int) -> int:
        if not 0 <= i < self.n_levels:
            raise IndexError(f"level {i!r} out of range: {self.name} has {self.n_levels} levels")
        return i


@dataclass(frozen=True)
class SegmentationInfo:
    """Summary of one image group in a store, as `kmdist info` shows it.

    Fields other than `name`, `complete` and `missing` are None when the group lacks
    them (an interrupted or failed run, or a group that kmdist did not write).

    Attributes
    ----------
    missing : str or None
        For an incomplete group, what it lacks first, in the order a write creates
        them: ``"group metadata"`` (nothing, or only some arrays' files, was written),
        ``"segmentation metadata"`` or ``"completion marker"``; None when complete.
    """

    name: str
    complete: bool
    shape: tuple[int, ...] | None
    k: int | None
    palette: Palette | None
    inertia: float | None
    source: str | None
    missing: str | None = None


def open_segmentation(store: str | os.PathLike[str], name: str) -> Segmentation:
    """Open image `name` of `store`, as written by `write_segmentation`.

    Parameters
    ----------
    store : str or path-like
        The output store: a local directory or a storage URL (``s3://...``).
    name : str
        The image's group name.

    Returns
    -------
    Segmentation
        Lazy Dask arrays for every pyramid level, the palette and the metadata.

    Raises
    ------
    OutputError
        The store or the image is missing, or the image is incomplete.
    """
    root = open_root(store)
    check_name(name)
    where = f"{root}/{name}"
    if not root.has(name):
        raise OutputError(f"{where}: no such segmentation in the store")
    block = read_block(root, name)
    if block is None or block.get("complete") is not True:
        raise OutputError(f"{where}: is incomplete (an interrupted run); rerun to finish it")
    palette = palette_from_block(block, where)
    try:
        image_group = zarr.open_group(root.store, path=name, mode="r")
        seg_group = zarr.open_group(root.store, path=f"{name}/{SEG_PATH}", mode="r")
        image_levels = tuple(
            _lazy(_array(image_group, p)).transpose(1, 2, 0) for p in _dataset_paths(image_group)
        )
        label_levels = tuple(_lazy(_array(seg_group, p)) for p in _dataset_paths(seg_group))
    except (LookupError, TypeError, ValueError, OSError) as exc:
        raise OutputError(f"{where}: damaged OME-Zarr metadata or arrays: {exc}") from exc
    if len(image_levels) != len(label_levels) or not label_levels:
        raise OutputError(f"{where}: image and label pyramids differ in their levels")
    return Segmentation(
        name=name,
        labels=label_levels[0],
        image=image_levels[0],
        palette=palette,
        attrs=block,
        n_levels=len(label_levels),
        _label_levels=label_levels,
        _image_levels=image_levels,
    )


def is_complete(store: str | os.PathLike[str], name: str) -> bool:
    """Tell whether image `name` of `store` was fully written (its marker says so)."""
    try:
        root = open_root(store)
        check_name(name)
    except OutputError:
        return False
    block = read_block(root, name)
    return block is not None and block.get("complete") is True


def list_segmentations(store: str | os.PathLike[str]) -> list[SegmentationInfo]:
    """Summaries of the image groups present in `store`, sorted by name.

    See `iter_segmentations`, which yields them one at a time.
    """
    return list(iter_segmentations(store))


def iter_segmentations(store: str | os.PathLike[str]) -> Iterator[SegmentationInfo]:
    """Yield a summary of each image group in `store`, sorted by name, as it is read.

    The store keeps no list of its images: its root is listed (one listing; on object
    storage, a request per 1,000 names) and each group's metadata read in turn, so the
    first summaries come before the last group is read.

    Every folder (prefix) at the root whose name could be an image's is an image
    group, complete only when its marker says so: a write that failed or was
    interrupted may leave anything from an empty folder on (a full disk), and
    ``--resume`` redoes each of them. Hidden names (``.kmdist.lock``), names no image
    can have (``__pycache__``) and files at the root are not kmdist's, and not listed.

    Raises
    ------
    OutputError
        The store is missing or is not a Zarr v3 store.
    """
    root = open_root(store)
    if not root.has_root_group():
        raise OutputError(f"{root}: not a Zarr store")
    try:
        zarr.open_group(root.store, mode="r")
        names = sorted(root.names())
    except (ValueError, TypeError, OSError) as exc:
        raise OutputError(f"{root}: not a Zarr v3 group: {exc}") from exc
    for name in names:
        if _image_name(name):
            yield _info(root, name)


def _image_name(name: str) -> bool:
    """Tell whether kmdist could have given an image group the name `name`."""
    try:
        check_name(name)
    except OutputError:
        return False
    return True


def _missing(root: StoreRoot, name: str, block: Mapping[str, Any] | None) -> str:
    """Say what incomplete group `name` lacks first (see `SegmentationInfo.missing`)."""
    if block is not None:
        return "completion marker"
    try:
        if not root.has(f"{name}/zarr.json"):
            return "group metadata"
    except OutputError:  # the store could not answer: say no more than is known
        pass
    return "segmentation metadata"


def _info(root: StoreRoot, name: str) -> SegmentationInfo:
    block = read_block(root, name) or {}
    where = f"{root}/{name}"
    try:
        palette: Palette | None = palette_from_block(block, where)
    except OutputError:
        palette = None
    try:
        seg = zarr.open_group(root.store, path=f"{name}/{SEG_PATH}", mode="r")
        shape: tuple[int, ...] | None = tuple(_array(seg, _dataset_paths(seg)[0]).shape)
    except (LookupError, TypeError, ValueError, OSError):
        shape = None
    k, inertia, source = block.get("k"), block.get("inertia"), block.get("source")
    complete = block.get("complete") is True
    return SegmentationInfo(
        name=name,
        complete=complete,
        missing=None if complete else _missing(root, name, block or None),
        shape=shape,
        k=k if isinstance(k, int) else None,
        palette=palette,
        inertia=float(inertia) if isinstance(inertia, int | float) else None,
        source=source if isinstance(source, str) else None,
    )


def read_block(root: StoreRoot, name: str) -> dict[str, Any] | None:
    """Read the ``kmdist`` block of image `name`; None when it cannot be read."""
    try:
        seg = zarr.open_group(root.store, path=f"{name}/{SEG_PATH}", mode="r")
    except Exception:  # missing, damaged, or (a storage URL) unreachable: not readable
        return None
    block = seg.attrs.get("kmdist")
    return dict(block) if isinstance(block, Mapping) else None


def palette_from_block(block: Mapping[str, Any], where: str) -> Palette:
    try:
        return Palette(
            colors=np.asarray(block["palette"], dtype=np.float64),
            counts=np.asarray(block["counts"]),
            inertia=block["inertia"],
            color_space=block.get("color_space", "rgb"),
            method=block.get("method", "exact"),
            dtype=block.get("dtype", "uint8"),
            seed=block.get("seed"),
            n_clusters=block.get("n_clusters", 0),
        )
    except (KeyError, TypeError, ValueError, PaletteError) as exc:
        raise OutputError(f"{where}: the stored palette is unreadable: {exc}") from exc


def _dataset_paths(group: zarr.Group) -> list[str]:
    attrs: Any = group.attrs.asdict()
    return [str(d["path"]) for d in attrs["ome"]["multiscales"][0]["datasets"]]


def _array(group: zarr.Group, path: str) -> zarr.Array[Any]:
    node = group[path]
    if not isinstance(node, zarr.Array):
        raise TypeError(f"{group.path}/{path} is a group, not an array")
    return node


def _lazy(array: zarr.Array[Any]) -> da.Array:
    # Read by shard when sharded: one task per file rather than per inner chunk.
    return da.from_zarr(array, chunks=array.shards or array.chunks)
