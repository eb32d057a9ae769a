"""Writing segmentations: labels, recoloured image and pyramid levels as OME-Zarr 0.5.

Pixels are written chunk-aligned by the Dask workers, all pyramid levels in one graph;
only metadata passes through the calling process. The ``complete`` marker is set last.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
from collections.abc import Mapping
from typing import Any

import dask.array as da
import numpy as np
import zarr
from dask.base import compute
from zarr.codecs import BloscCodec

from kmdist.palette._assign import label_dtype, recolor_planes
from kmdist.palette._assign_kernels import color_planes
from kmdist.palette._palette import Palette
from kmdist.store._blocks import Labels, chunk_shape, level_shapes, sharding
from kmdist.store._claims import clear_previous, process_start
from kmdist.store._errors import OutputError
from kmdist.store._layout import OME_VERSION, SEGMENTATION, check_name, multiscales, omero
from kmdist.store._root import StoreRoot, open_root

__all__ = ["level_writes", "write_segmentation"]

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
    # Clearing and claiming the group is atomic between runs; writing is not locked.
    with root.lock():
        clear_previous(root, name, overwrite, run)
        image_group, seg_group = _create_groups(root, name, palette, len(shapes), block)
    sources: list[Any] = []
    targets: list[Any] = []
    level = labels
    for i in range(len(shapes)):
        if i:
            level = level[::2, ::2]
        sources_i, targets_i = level_writes(image_group, seg_group, str(i), level, palette, chunk)
        sources += sources_i
        targets += targets_i
    released = {k: v for k, v in block.items() if k != "claimed"}
    try:
        if isinstance(labels, np.ndarray):
            for source, target in zip(sources, targets, strict=True):
                target[...] = source
        else:
            # One graph for every level, so each label block is computed once and shared.
            compute(da.store(sources, targets, lock=False, compute=False))
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: the error below matters more
            seg_group.update_attributes({"kmdist": released})
        raise

    seg_group.update_attributes({"kmdist": {**released, "complete": True}})
    _register(root, name)


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


def _kmdist_block(
    palette: Palette, source: str, extra: Mapping[str, Any] | None, run: str | None
) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        kmdist_version = version("kmdist")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        kmdist_version = "0+unknown"
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
        },
        "claimed": True,
        "complete": False,
    }


def level_writes(
    image_group: zarr.Group,
    seg_group: zarr.Group,
    path: str,
    labels: Labels,
    palette: Palette,
    chunk: tuple[int, int],
) -> tuple[list[Any], list[Any]]:
    """Create one level's two arrays; return the sources (Dask or NumPy) and targets.

    Each source is rechunked to the target's shard shape (or chunk shape when not
    sharded), starting at 0: every write task then fills whole shards that no other
    task touches, so writes run in parallel without locks.
    """
    shape = (int(labels.shape[0]), int(labels.shape[1]))
    chunk = (min(chunk[0], shape[0]), min(chunk[1], shape[1]))
    channels = palette.channels
    image_dtype = palette.colors_as().dtype

    label_shard = sharding(shape, chunk, labels.dtype.itemsize)
    label_array = seg_group.create_array(
        path,
        shape=shape,
        chunks=chunk,
        shards=label_shard,
        dtype=labels.dtype,
        # Zstd level 1: on 64 MP, 6x the speed of level 5 (780 vs 120 MB/s for the
        # recoloured image) for files about 20% larger (bench/end_to_end.py).
        compressors=BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"),
        fill_value=0,
        dimension_names=("y", "x"),
    )
    image_shard = sharding(shape, chunk, channels * image_dtype.itemsize)
    image_array = image_group.create_array(
        path,
        shape=(channels, *shape),
        chunks=(channels, *chunk),
        shards=None if image_shard is None else (channels, *image_shard),
        dtype=image_dtype,
        compressors=BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),
        fill_value=0,
        dimension_names=("c", "y", "x"),
    )
    if isinstance(labels, np.ndarray):
        return [labels, color_planes(labels, palette.colors_as())], [label_array, image_array]
    label_source = labels.rechunk(label_shard or chunk)
    image_source = recolor_planes(labels.rechunk(image_shard or chunk), palette)
    return [label_source, image_source], [label_array, image_array]


def _create_groups(
    root: StoreRoot, name: str, palette: Palette, n_levels: int, block: dict[str, Any]
) -> tuple[zarr.Group, zarr.Group]:
    """Create the image, labels and segmentation groups; return the first and the last.

    The segmentation group starts with ``kmdist.complete: false``, so an interruption
    from here on leaves an output that reads as incomplete.
    """
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
    try:
        group = zarr.open_group(root.store, mode="r+")
        image = group.create_group(name, attributes={"ome": image_ome})
        labels = image.create_group(
            "labels", attributes={"ome": {"version": OME_VERSION, "labels": [SEGMENTATION]}}
        )
        seg = labels.create_group(SEGMENTATION, attributes={"ome": seg_ome, "kmdist": block})
    except OSError as exc:
        raise OutputError(f"{root}/{name}: cannot write: {exc.strerror or exc}") from exc
    return image, seg


def _register(root: StoreRoot, name: str) -> None:
    """Add `name` to the root's image list, pruning names whose groups are gone."""
    with root.lock():
        group = zarr.open_group(root.store, mode="r+")
        attrs: Any = group.attrs.asdict()
        listed = attrs.get("kmdist", {}).get("images", [])
        images = sorted(root.present(set(listed) | {name}))
        group.update_attributes({"kmdist": {**attrs.get("kmdist", {}), "images": images}})
