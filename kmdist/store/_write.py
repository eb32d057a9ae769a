"""Writing segmentations: labels, recoloured image and pyramid levels as OME-Zarr 0.5.

Pixels are written chunk-aligned by the Dask workers, all pyramid levels in one graph;
only metadata passes through the calling process. The ``complete`` marker is set last.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import dask.array as da
import numpy as np
import numpy.typing as npt
import zarr
from dask.base import compute
from zarr.codecs import BloscCodec
from zarr.core.group import GroupMetadata, create_nodes
from zarr.core.metadata.v2 import ArrayV2Metadata
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync_group import create_nodes as create_nodes_sync

from kmdist.palette import Palette, color_planes, label_dtype, recolor_planes
from kmdist.store._blocks import Labels, chunk_shape, level_shapes, sharding
from kmdist.store._claims import clear_previous, process_start, writing
from kmdist.store._errors import OutputError
from kmdist.store._layout import OME_VERSION, SEG_PATH, SEGMENTATION, check_name, multiscales, omero
from kmdist.store._root import StoreRoot, image_lock, open_root

__all__ = ["RESERVED_KEYS", "level_arrays", "write_segmentation"]

RESERVED_KEYS = frozenset(
    {
        "palette",
        "counts",
        "inertia",
        "k",
        "n_clusters",
        "color_space",
        "method",
        "seed",
        "dtype",
        "source",
        "version",
        "writer",
        "claimed",
        "complete",
    }
)


def write_segmentation(
    store: str | os.PathLike[str],
    name: str,
    labels: Labels,
    palette: Palette,
    *,
    source: str = "",
    overwrite: bool = False,
    n_levels: int | None = None,
    extra: Mapping[str, Any] | None = None,
    chunks: tuple[int, int] | None = None,
    run: str | None = None,
) -> None:
    """Write labels, their recoloured image and lower-resolution levels as OME-Zarr 0.5.

    Every level of both pyramids is written by one Dask computation, chunk by chunk on
    the workers (a distributed Client is used when one is active); NumPy labels (a
    small image segmented in memory) are written directly by this process. The
    ``complete`` marker is set only after all of it has been written.

    Parameters
    ----------
    store : str or path-like
        Output store: a local directory, created when missing, or a storage URL.
    name : str
        Group name for this image: no ``/``, not empty, not starting with ``.`` or ``__``.
    labels : dask.array.Array or ndarray of shape (y, x)
        Labels from ``0`` to ``palette.k - 1``; stored as uint8 (k <= 256) or uint16.
    palette : Palette
        The colours that the labels index.
    source : str, optional
        Where the image came from, recorded in the metadata.
    overwrite : bool, default False
        Replace a complete output of the same name. Incomplete outputs (interrupted
        runs) are always replaced.
    n_levels : int, optional
        Pyramid levels to write (at least 1). By default, levels are added until the
        largest side is at most 256 pixels.
    extra : mapping, optional
        JSON-serialisable items added to the ``kmdist`` metadata block.
    chunks : (int, int), optional
        Zarr chunk shape (y, x). By default the labels' own chunks when regular, else
        1024 x 1024; given, the labels may come in larger blocks (`write_blocks`).
    run : str, optional
        Identifies the run (batch) writing. A claim left by the same run, such as a
        task retried on another host after its worker died, does not hold against it.

    Raises
    ------
    OutputExistsError
        The image is complete in the store and `overwrite` is False.
    OutputError
        The store cannot be written (a file, a foreign directory, no permission) or
        `name` is not a valid group name.
    ValueError
        Bad `labels`, `n_levels` or `extra`.

    Examples
    --------
    >>> import shutil, tempfile
    >>> from pathlib import Path
    >>> from kmdist import is_complete, open_segmentation
    >>> labels = da.from_array(np.array([[0, 0, 1], [0, 1, 1]], dtype=np.uint8))
    >>> palette = Palette(np.array([[255, 0, 0], [0, 0, 255]]), np.array([3, 3]), 0.0)
    >>> store = Path(tempfile.mkdtemp()) / "out.zarr"
    >>> write_segmentation(store, "tiny", labels, palette, source="tiny.png")
    >>> seg = open_segmentation(store, "tiny")
    >>> seg.image[0, 2].compute().tolist(), seg.n_levels, is_complete(store, "tiny")
    ([0, 0, 255], 1, True)
    >>> shutil.rmtree(store.parent)
    """
    root = open_root(store)
    check_name(name)
    labels = _check_labels(labels, palette)
    shapes = level_shapes(labels.shape, n_levels)
    block = _kmdist_block(palette, source, extra, run)
    root.prepare()
    if chunks is not None:
        # Labels may come in shard-sized blocks (see `write_blocks`): each level is
        # rechunked to its own shards below, never split to chunks and gathered again.
        chunk = (min(chunks[0], labels.shape[0]), min(chunks[1], labels.shape[1]))
    else:
        chunk = chunk_shape(labels)
        if isinstance(labels, da.Array) and labels.chunks != da.core.normalize_chunks(
            chunk, labels.shape
        ):
            labels = labels.rechunk(chunk)
    layout = [_LevelLayout.of(s, chunk, labels.dtype, palette) for s in shapes]
    nodes = _image_nodes(name, palette, layout, block)
    released = {k: v for k, v in block.items() if k != "claimed"}
    seg_path = f"{name}/{SEG_PATH}"
    if isinstance(labels, np.ndarray):
        # A small image: its nodes, its pixels and the completion marker in one pass of
        # zarr's event loop (the arrays written concurrently), under this image's lock.
        data = _numpy_levels(name, labels, layout, palette)
        with root.lock(image_lock(name)):
            clear_previous(root, name, overwrite, run)
            with writing(block["writer"]["write"]):
                _sync(_write_whole(root, nodes, data, seg_path, released))
        return
    # Clearing and claiming the group is atomic between runs (this image's own lock,
    # no lock shared by the store); writing is not locked.
    with contextlib.ExitStack() as claimed:
        with root.lock(image_lock(name)):
            clear_previous(root, name, overwrite, run)
            claimed.enter_context(writing(block["writer"]["write"]))
            made = _create_nodes(root, nodes)
        _write_levels(labels, layout, palette, made, name, released)


def _write_levels(
    labels: da.Array,
    layout: list[_LevelLayout],
    palette: Palette,
    made: dict[str, Any],
    name: str,
    released: dict[str, Any],
) -> None:
    """Write every level of a claimed image with one Dask computation, then mark it."""
    sources: list[Any] = []
    targets: list[Any] = []
    level = labels
    for i, lay in enumerate(layout):
        if i:
            level = level[::2, ::2]
        sources += _level_sources(level, lay, palette)
        targets += [made[f"{name}/{SEG_PATH}/{i}"], made[f"{name}/{i}"]]
    seg_group = made[f"{name}/{SEG_PATH}"]
    try:
        # One graph for every level, so each label block is computed once and shared.
        compute(da.store(sources, targets, lock=False, compute=False))
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: the error below matters more
            seg_group.update_attributes({"kmdist": released})
        raise
    seg_group.update_attributes({"kmdist": {**released, "complete": True}})


def _numpy_levels(
    name: str, labels: npt.NDArray[Any], layout: list[_LevelLayout], palette: Palette
) -> dict[str, npt.NDArray[Any]]:
    """Every level's labels and recoloured planes, by array path."""
    data: dict[str, npt.NDArray[Any]] = {}
    level = labels
    for i, lay in enumerate(layout):
        if i:
            level = level[::2, ::2]
        data[f"{name}/{SEG_PATH}/{i}"], data[f"{name}/{i}"] = _level_sources(level, lay, palette)
    return data


async def _write_whole(
    root: StoreRoot,
    nodes: dict[str, Any],
    data: dict[str, npt.NDArray[Any]],
    seg_path: str,
    released: dict[str, Any],
) -> None:
    """Create `nodes`, write `data` to its arrays, then mark the image complete."""
    try:
        # Not `create_hierarchy`, for the reason `_create_nodes` gives.
        made = {
            path: node async for path, node in create_nodes(store=root.zarr_store(), nodes=nodes)
        }
    except OSError as exc:
        raise _cannot_write(root, nodes, exc) from exc
    seg_group = made[seg_path]
    assert isinstance(seg_group, zarr.AsyncGroup)
    writes = []
    for path, value in data.items():
        array = made[path]
        assert isinstance(array, zarr.AsyncArray)
        writes.append(array.setitem(Ellipsis, value))
    try:
        await asyncio.gather(*writes)
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: the error below matters more
            await seg_group.update_attributes({"kmdist": released})
        raise
    await seg_group.update_attributes({"kmdist": {**released, "complete": True}})


def _sync(coroutine: Any) -> Any:
    """Run `coroutine` on zarr's event loop, as zarr's own synchronous API does."""
    from zarr.core.sync import sync

    return sync(coroutine)


def _check_labels(labels: Labels, palette: Palette) -> Labels:
    if not isinstance(labels, (da.Array, np.ndarray)):
        raise ValueError(f"labels must be a Dask or NumPy array, got {type(labels).__name__}")
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (y, x), got {labels.shape}")
    if any(math.isnan(s) for s in labels.shape) or 0 in labels.shape:
        raise ValueError(f"labels must have a known, non-empty shape, got {labels.shape}")
    if labels.dtype.kind not in "ui":
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    dtype = label_dtype(palette.k)
    return labels if labels.dtype == dtype else labels.astype(dtype)


@functools.cache
def _version() -> str:
    # Looked up once: reading the package metadata costs milliseconds an image.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kmdist")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def _kmdist_block(
    palette: Palette, source: str, extra: Mapping[str, Any] | None, run: str | None
) -> dict[str, Any]:
    kmdist_version = _version()
    extra = dict(extra or {})
    clash = sorted(RESERVED_KEYS & extra.keys())
    if clash:
        raise ValueError(f"extra must not set the reserved keys {clash}")
    try:
        json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"extra must be JSON-serialisable: {exc}") from exc
    return {
        "palette": palette.colors.tolist(),
        "counts": palette.counts.tolist(),
        "inertia": palette.inertia,
        "k": palette.k,
        "n_clusters": palette.n_clusters,
        "color_space": palette.color_space,
        "method": palette.method,
        "seed": palette.seed,
        "dtype": palette.dtype,
        "source": str(source),
        "version": kmdist_version,
        **extra,
        # Who wrote it. While "claimed", a second run refuses while that process lives
        # (or, from another host, while the group keeps changing: `live_writer`); the
        # claim ends when the write completes or fails, so a long-lived Dask worker that
        # wrote an image does not hold it afterwards.
        "writer": {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": process_start(os.getpid()),
            "run": run,
            # This write's own token: within this process, its claim holds while the
            # token is among those being written (`kmdist.store._claims.writing`).
            "write": uuid.uuid4().hex,
        },
        "claimed": True,
        "complete": False,
    }


@dataclass(frozen=True)
class _LevelLayout:
    """One pyramid level's two arrays: shape, chunk, shards (None: not sharded)."""

    shape: tuple[int, int]
    chunk: tuple[int, int]
    label_shard: tuple[int, int] | None
    image_shard: tuple[int, int] | None
    label_dtype: str
    image_dtype: str
    channels: int

    @classmethod
    def of(
        cls, shape: tuple[int, int], chunk: tuple[int, int], dtype: Any, palette: Palette
    ) -> _LevelLayout:
        chunk = (min(chunk[0], shape[0]), min(chunk[1], shape[1]))
        image_dtype = palette.colors_as().dtype
        return cls(
            shape=shape,
            chunk=chunk,
            label_shard=sharding(shape, chunk, np.dtype(dtype).itemsize),
            image_shard=sharding(shape, chunk, palette.channels * image_dtype.itemsize),
            label_dtype=np.dtype(dtype).str,
            image_dtype=image_dtype.str,
            channels=palette.channels,
        )

    def label_metadata(self) -> ArrayV3Metadata:
        return _array_metadata(
            self.shape, self.chunk, self.label_shard, self.label_dtype, ("y", "x"), "bitshuffle"
        )

    def image_metadata(self) -> ArrayV3Metadata:
        shard = None if self.image_shard is None else (self.channels, *self.image_shard)
        return _array_metadata(
            (self.channels, *self.shape),
            (self.channels, *self.chunk),
            shard,
            self.image_dtype,
            ("c", "y", "x"),
            "shuffle",
        )


@functools.lru_cache(maxsize=256)
def _array_metadata(
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    shards: tuple[int, ...] | None,
    dtype: str,
    dims: tuple[str, ...],
    shuffle: Literal["shuffle", "bitshuffle"],
) -> ArrayV3Metadata:
    """Zarr v3 metadata of one stored array, made by zarr itself in memory.

    zarr builds the codec chain (sharding, Blosc) as it would for `create_array`; the
    metadata then goes to `_create_nodes` with the rest of the image's nodes.
    """
    array = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=shape,
        chunks=chunks,
        shards=shards,
        dtype=dtype,
        # Zstd level 1: on 64 MP, 6x the speed of level 5 (780 vs 120 MB/s for the
        # recoloured image) for files about 20% larger (docs/benchmarks.md).
        compressors=BloscCodec(cname="zstd", clevel=1, shuffle=shuffle),
        fill_value=0,
        dimension_names=dims,
    )
    metadata = array.metadata
    assert isinstance(metadata, ArrayV3Metadata)
    return metadata


def _level_sources(labels: Labels, lay: _LevelLayout, palette: Palette) -> list[Any]:
    """Return the label and recoloured-image sources (Dask or NumPy) of one level.

    Each Dask source is rechunked to its target's shard shape (or chunk shape when not
    sharded), starting at 0: every write task then fills whole shards that no other
    task touches, so writes run in parallel without locks.
    """
    if isinstance(labels, np.ndarray):
        return [labels, color_planes(labels, palette.colors_as())]
    label_source = labels.rechunk(lay.label_shard or lay.chunk)
    image_source = recolor_planes(labels.rechunk(lay.image_shard or lay.chunk), palette)
    return [label_source, image_source]


def level_arrays(
    store: Any,
    label_path: str,
    image_path: str,
    shape: tuple[int, int],
    chunk: tuple[int, int],
    palette: Palette,
) -> tuple[zarr.Array[Any], zarr.Array[Any]]:
    """Create level arrays as `write_segmentation` does, at the given paths of `store`.

    For a caller (bench/) that writes one level the way kmdist does. Returns the label
    array (uint8 or uint16, as for ``palette.k``) and the recoloured-image array.
    """
    lay = _LevelLayout.of(shape, chunk, label_dtype(palette.k), palette)
    nodes: dict[str, GroupMetadata | ArrayV2Metadata | ArrayV3Metadata] = {
        label_path: lay.label_metadata(),
        image_path: lay.image_metadata(),
    }
    made = dict(zarr.create_hierarchy(store=store, nodes=nodes))
    label_array, image_array = made[label_path], made[image_path]
    assert isinstance(label_array, zarr.Array) and isinstance(image_array, zarr.Array)
    return label_array, image_array


def _image_nodes(
    name: str,
    palette: Palette,
    layout: list[_LevelLayout],
    block: dict[str, Any],
) -> dict[str, GroupMetadata | ArrayV2Metadata | ArrayV3Metadata]:
    """Return the metadata of an image's groups and arrays by path, for `_create_nodes`.

    The segmentation group starts with ``kmdist.complete: false``, so an interruption
    from its creation on leaves an output that reads as incomplete.
    """
    n_levels = len(layout)
    image_ome: dict[str, Any] = {
        "version": OME_VERSION,
        "multiscales": multiscales(name, n_levels, channel_axis=True),
    }
    channels = omero(palette)
    if channels is not None:
        image_ome["omero"] = channels
    colors = [
        {"label-value": i, "rgba": [int(v) for v in rgba]}
        for i, rgba in enumerate(palette.display_rgba())
    ]
    seg_ome = {
        "version": OME_VERSION,
        "multiscales": multiscales(SEGMENTATION, n_levels, channel_axis=False),
        "image-label": {"version": OME_VERSION, "colors": colors, "source": {"image": "../../"}},
    }
    labels_ome = {"version": OME_VERSION, "labels": [SEGMENTATION]}
    nodes: dict[str, GroupMetadata | ArrayV2Metadata | ArrayV3Metadata] = {
        name: GroupMetadata(attributes={"ome": image_ome}),
        f"{name}/labels": GroupMetadata(attributes={"ome": labels_ome}),
        f"{name}/{SEG_PATH}": GroupMetadata(attributes={"ome": seg_ome, "kmdist": block}),
    }
    for i, lay in enumerate(layout):
        nodes[f"{name}/{i}"] = lay.image_metadata()
        nodes[f"{name}/{SEG_PATH}/{i}"] = lay.label_metadata()
    return nodes


def _create_nodes(root: StoreRoot, nodes: dict[str, Any]) -> dict[str, Any]:
    """Create an image's `nodes` in one call; return them by path.

    zarr writes the nodes' metadata concurrently: a constant number of store requests,
    whatever the store holds. zarr's `create_nodes`, not `create_hierarchy`: the caller
    found the image's group absent (or removed it) under the image's lock, so the
    hierarchy's checks (the root's metadata read twice, and each node looked up, two
    requests a node on object storage) would find nothing. Without them an image takes
    15 requests on S3 instead of 29.
    """
    try:
        return dict(create_nodes_sync(store=root.zarr_store(), nodes=nodes))
    except OSError as exc:
        raise _cannot_write(root, nodes, exc) from exc


def _cannot_write(root: StoreRoot, nodes: dict[str, Any], exc: OSError) -> OutputError:
    """Return the error for an image whose `nodes` the store refused, naming its group."""
    return OutputError(f"{root}/{next(iter(nodes))}: cannot write: {exc.strerror or exc}")
