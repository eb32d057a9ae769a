"""The output contract: segmentations stored as OME-Zarr 0.5 images on Zarr v3.

For an image NAME, a store S (a local directory, or a storage URL such as
``s3://bucket/out.zarr``) holds::

    S/zarr.json                          root group; attributes {"kmdist": {"images": [...]}}
    S/NAME/0, 1, ...                     recoloured image pyramid, axes (c, y, x)
    S/NAME/labels                        {"ome": {"labels": ["segmentation"]}}
    S/NAME/labels/segmentation/0, 1, ... label pyramid, axes (y, x), unsigned integers

The segmentation group carries ``ome.image-label`` (each label's display colour) and a
``kmdist`` block with the palette and provenance whose ``complete`` flag turns true only
after every array is fully written: an interrupted run leaves ``complete: false`` (or no
block), and the next run rewrites that image.

Pixels are written chunk-aligned by the Dask workers, all pyramid levels in one graph;
only metadata passes through the calling process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt
import zarr
from dask.base import compute
from zarr.codecs import BloscCodec
from zarr.errors import ZarrUserWarning

from ._assign import label_dtype, recolor_planes
from ._kernels import color_planes
from ._palette import Palette, PaletteError
from ._root import OutputError, StoreRoot, open_root

__all__ = [
    "OutputError",
    "OutputExistsError",
    "Segmentation",
    "SegmentationInfo",
    "is_complete",
    "list_segmentations",
    "open_segmentation",
    "write_segmentation",
]

OME_VERSION = "0.5"
SEGMENTATION = "segmentation"
_SEG_PATH = f"labels/{SEGMENTATION}"
# A claim from another host holds until this long after the group's last write.
_FOREIGN_LEASE = 15 * 60
# Pyramids stop once the largest side fits a viewer's overview tile.
_TOP_SIDE = 256
# Chunk side used when the labels' Dask chunks are irregular.
_DEFAULT_CHUNK = 1024
# Labels to write: a Dask array, or NumPy for a small image segmented in memory.
Labels = da.Array | npt.NDArray[Any]
# Arrays larger than this are sharded, so that small chunks do not become millions of files.
_SHARD_ABOVE = 64 * 2**20
# Largest shard, which is also the largest block one write task holds.
_MAX_SHARD = 256 * 2**20
_RESERVED_KEYS = frozenset(
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


class OutputExistsError(OutputError):
    """An image's output is complete and overwrite was not asked for."""


# --- Reading ------------------------------------------------------------------------


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

    Fields other than `name` and `complete` are None when the group lacks them (an
    interrupted run, or a group that kmdist did not write).
    """

    name: str
    complete: bool
    shape: tuple[int, ...] | None
    k: int | None
    palette: Palette | None
    inertia: float | None
    source: str | None


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
    _check_name(name)
    where = f"{root}/{name}"
    if not root.has(name):
        raise OutputError(f"{where}: no such segmentation in the store")
    block = _read_block(root, name)
    if block is None or block.get("complete") is not True:
        raise OutputError(f"{where}: is incomplete (an interrupted run); rerun to finish it")
    palette = _palette_from_block(block, where)
    try:
        image_group = zarr.open_group(root.store, path=name, mode="r")
        seg_group = zarr.open_group(root.store, path=f"{name}/{_SEG_PATH}", mode="r")
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
        _check_name(name)
    except OutputError:
        return False
    block = _read_block(root, name)
    return block is not None and block.get("complete") is True


def list_segmentations(store: str | os.PathLike[str]) -> list[SegmentationInfo]:
    """Summaries of the image groups present in `store`, sorted by name.

    The groups actually present are the truth; the root's ``kmdist.images`` list is only
    a convenience for other readers.
    """
    root = open_root(store)
    if not root.has_root_group():
        raise OutputError(f"{root}: not a Zarr store")
    try:
        group = zarr.open_group(root.store, mode="r")
    except (ValueError, TypeError, OSError) as exc:
        raise OutputError(f"{root}: not a Zarr v3 group: {exc}") from exc
    return [_info(root, name) for name in sorted(_group_names(group))]


def _info(root: StoreRoot, name: str) -> SegmentationInfo:
    block = _read_block(root, name) or {}
    where = f"{root}/{name}"
    try:
        palette: Palette | None = _palette_from_block(block, where)
    except OutputError:
        palette = None
    try:
        seg = zarr.open_group(root.store, path=f"{name}/{_SEG_PATH}", mode="r")
        shape: tuple[int, ...] | None = tuple(_array(seg, _dataset_paths(seg)[0]).shape)
    except (LookupError, TypeError, ValueError, OSError):
        shape = None
    k, inertia, source = block.get("k"), block.get("inertia"), block.get("source")
    return SegmentationInfo(
        name=name,
        complete=block.get("complete") is True,
        shape=shape,
        k=k if isinstance(k, int) else None,
        palette=palette,
        inertia=float(inertia) if isinstance(inertia, int | float) else None,
        source=source if isinstance(source, str) else None,
    )


def _read_block(root: StoreRoot, name: str) -> dict[str, Any] | None:
    """Read the ``kmdist`` block of image `name`; None when it cannot be read."""
    try:
        seg = zarr.open_group(root.store, path=f"{name}/{_SEG_PATH}", mode="r")
    except Exception:  # missing, damaged, or (a storage URL) unreachable: not readable
        return None
    block = seg.attrs.get("kmdist")
    return dict(block) if isinstance(block, Mapping) else None


def _palette_from_block(block: Mapping[str, Any], where: str) -> Palette:
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


def _group_names(group: zarr.Group) -> list[str]:
    # The lock file sits among the members while a writer holds it; it is not a node.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZarrUserWarning)
        return list(group.group_keys())


# --- Writing ------------------------------------------------------------------------


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
    _check_name(name)
    labels = _check_labels(labels, palette)
    shapes = _level_shapes(labels.shape, n_levels)
    block = _kmdist_block(palette, source, extra, run)
    root.prepare()
    if chunks is not None:
        # Labels may come in shard-sized blocks (see `write_blocks`): each level is
        # rechunked to its own shards below, never split to chunks and gathered again.
        chunk = (min(chunks[0], labels.shape[0]), min(chunks[1], labels.shape[1]))
    else:
        chunk = _chunk_shape(labels)
        if isinstance(labels, da.Array) and labels.chunks != da.core.normalize_chunks(
            chunk, labels.shape
        ):
            labels = labels.rechunk(chunk)
    # Clearing and claiming the group is atomic between runs; writing is not locked.
    with root.lock():
        _clear_previous(root, name, overwrite, run)
        image_group, seg_group = _create_groups(root, name, palette, len(shapes), block)
    sources: list[Any] = []
    targets: list[Any] = []
    level = labels
    for i in range(len(shapes)):
        if i:
            level = level[::2, ::2]
        sources_i, targets_i = _level_writes(image_group, seg_group, str(i), level, palette, chunk)
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


def _check_name(name: str) -> None:
    bad = (
        not isinstance(name, str)
        or not name
        or name.startswith((".", "__"))
        or name.lower() == "zarr.json"  # would clash with the root's own metadata file
        or any(c in name for c in "/\\")
        or any(ord(c) < 32 for c in name)
        or len(name.encode("utf-8", "surrogateescape")) > 255
    )
    if bad:
        raise OutputError(
            f"{name!r} is not a valid image name: use a non-empty name without '/' or '\\' "
            "that does not start with '.' or '__' and is not 'zarr.json'"
        )


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


def _level_shapes(shape: tuple[int, ...], n_levels: int | None) -> list[tuple[int, int]]:
    """Shapes of the pyramid levels: each the previous one subsampled by 2."""
    shapes = [(int(shape[0]), int(shape[1]))]

    def halve(s: tuple[int, int]) -> tuple[int, int]:
        return (-(-s[0] // 2), -(-s[1] // 2))

    if n_levels is None:
        while max(shapes[-1]) > _TOP_SIDE:
            shapes.append(halve(shapes[-1]))
        return shapes
    if isinstance(n_levels, bool) or not isinstance(n_levels, int) or n_levels < 1:
        raise ValueError(f"n_levels must be a positive integer or None, got {n_levels!r}")
    while len(shapes) < n_levels:
        if shapes[-1] == (1, 1):
            raise ValueError(
                f"n_levels={n_levels} is too many for shape {shape}: "
                f"level {len(shapes) - 1} is already one pixel"
            )
        shapes.append(halve(shapes[-1]))
    return shapes


def _kmdist_block(
    palette: Palette, source: str, extra: Mapping[str, Any] | None, run: str | None
) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        kmdist_version = version("kmdist")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        kmdist_version = "0+unknown"
    extra = dict(extra or {})
    clash = sorted(_RESERVED_KEYS & extra.keys())
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
        # (or, from another host, while the group keeps changing: `_live_writer`); the
        # claim ends when the write completes or fails, so a long-lived Dask worker that
        # wrote an image does not hold it afterwards.
        "writer": {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _process_start(os.getpid()),
            "run": run,
        },
        "claimed": True,
        "complete": False,
    }


def _clear_previous(root: StoreRoot, name: str, overwrite: bool, run: str | None) -> None:
    if not root.has(name):
        return
    block = _read_block(root, name)
    if block is not None and block.get("complete") is True and not overwrite:
        raise OutputExistsError(
            f"{root}/{name}: already complete; pass overwrite=True (--overwrite) to replace it"
        )
    writer = _live_writer(root, name, block, run)
    if writer is not None:
        raise OutputError(
            f"{root}/{name}: being written by another run ({writer}); wait for it to finish"
        )
    root.remove(name)


def _live_writer(
    root: StoreRoot, name: str, block: Mapping[str, Any] | None, run: str | None
) -> str | None:
    """Describe another run still writing image `name` of `root`, or return None.

    A claim of this same `run` never holds: it is a retried task of the run.

    A claim by a process on this machine holds while that process lives (a reused pid is
    told apart by its start time). A process on another host (a Kubernetes pod, a
    container sharing the volume) cannot be checked from here, so its claim holds while
    the group keeps changing: until `_FOREIGN_LEASE` seconds after its last write.
    """
    if block is None or block.get("complete") is True or block.get("claimed") is not True:
        return None
    writer = block.get("writer")
    if not isinstance(writer, dict) or (run is not None and writer.get("run") == run):
        return None
    pid = writer.get("pid")
    if writer.get("host") != socket.gethostname():
        idle = time.time() - root.last_write(name)
        if idle >= _FOREIGN_LEASE:
            return None
        return (
            f"process {pid} on host {writer.get('host')!r}, which wrote to it {idle:.0f} s "
            f"ago; a run that stopped is taken over {_FOREIGN_LEASE // 60} min after its "
            "last write"
        )
    if not isinstance(pid, int) or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    started = writer.get("started")
    if started is not None and started != _process_start(pid):
        return None  # the pid now belongs to another process
    return f"process {pid}"


def _process_start(pid: int) -> str | None:
    """Start time of process `pid` in clock ticks since boot (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # Field 22; the command name (field 2) may hold spaces, so split after it.
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _chunk_shape(labels: Labels) -> tuple[int, int]:
    """Choose the Zarr chunk: the labels' own when regular, else 1024 x 1024 (clipped)."""
    default = (min(_DEFAULT_CHUNK, labels.shape[0]), min(_DEFAULT_CHUNK, labels.shape[1]))
    if isinstance(labels, np.ndarray):
        return default
    rows, cols = labels.chunks[:2]
    if all(len(set(c[:-1])) <= 1 and c[-1] <= c[0] for c in (rows, cols)):
        return (int(rows[0]), int(cols[0]))
    return default


def write_blocks(image: da.Array, palette: Palette) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return the output's Zarr chunk for `image` and the block to label it in.

    See `blocks_for`; the recoloured image has `palette`'s channels and dtype.
    """
    return blocks_for(image, palette.channels * palette.colors_as().dtype.itemsize)


def blocks_for(image: da.Array, bytes_per_pixel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return the output's Zarr chunk for `image` and the block to label it in.

    The block is the recoloured image's shard when the output has at least 16 shards (a
    multiple of the chunk), else the chunk. Labels computed in such blocks are written without
    gathering blocks from other workers, so a write task holds one shard however large
    the image (pass the chunk to `write_segmentation` as `chunks`).
    """
    shape = (int(image.shape[0]), int(image.shape[1]))
    chunk = _chunk_shape(image)
    chunk = (min(chunk[0], shape[0]), min(chunk[1], shape[1]))
    shard = _sharding(shape, chunk, bytes_per_pixel)
    if shard is None or math.ceil(shape[0] / shard[0]) * math.ceil(shape[1] / shard[1]) < 16:
        # Too few shards to spread over the workers (a 64 MP image has 4): label in
        # chunks. What a write task then gathers is bounded by the image's small size.
        return chunk, chunk
    return chunk, shard


def _sharding(
    shape: tuple[int, int], chunk: tuple[int, int], bytes_per_pixel: int
) -> tuple[int, int] | None:
    """Shard shape (y, x) for an array, or None when it stays unsharded.

    Arrays above 64 MiB group up to 4 x 4 chunks per shard (2 x 2 when chunks are
    large), keeping a shard under 256 MiB since one write task holds a whole shard.
    """
    if shape[0] * shape[1] * bytes_per_pixel <= _SHARD_ABOVE:
        return None
    chunk_bytes = chunk[0] * chunk[1] * bytes_per_pixel
    factor = next((f for f in (4, 2) if f * f * chunk_bytes <= _MAX_SHARD), 1)
    shard = (
        min(factor * chunk[0], -(-shape[0] // chunk[0]) * chunk[0]),
        min(factor * chunk[1], -(-shape[1] // chunk[1]) * chunk[1]),
    )
    return None if shard == chunk else shard


def _level_writes(
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

    label_shard = _sharding(shape, chunk, labels.dtype.itemsize)
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
    image_shard = _sharding(shape, chunk, channels * image_dtype.itemsize)
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


def _multiscales(name: str, n_levels: int, channel_axis: bool) -> list[dict[str, Any]]:
    axes: list[dict[str, str]] = [
        {"name": "y", "type": "space"},
        {"name": "x", "type": "space"},
    ]
    lead: list[float] = []
    if channel_axis:
        axes.insert(0, {"name": "c", "type": "channel"})
        lead = [1.0]
    datasets = [
        {
            "path": str(i),
            "coordinateTransformations": [
                {"type": "scale", "scale": [*lead, float(2**i), float(2**i)]}
            ],
        }
        for i in range(n_levels)
    ]
    return [{"name": name, "axes": axes, "datasets": datasets}]


def _omero(palette: Palette) -> dict[str, Any] | None:
    """Channel display hints so viewers compose RGB (or grey) images as such."""
    if palette.channels == 3:
        colors = ["FF0000", "00FF00", "0000FF"]
        labels = ["red", "green", "blue"]
    elif palette.channels == 1:
        colors, labels = ["FFFFFF"], ["grey"]
    else:
        return None
    dtype = np.dtype(palette.dtype)
    if dtype.kind in "iu":
        lo, hi = float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
    else:
        lo, hi = min(float(palette.colors.min()), 0.0), max(float(palette.colors.max()), 1.0)
    window = {"min": lo, "max": hi, "start": lo, "end": hi}
    channels = [
        {"label": label, "color": color, "active": True, "window": window}
        for label, color in zip(labels, colors, strict=True)
    ]
    return {"channels": channels, "rdefs": {"model": "color"}}


def _create_groups(
    root: StoreRoot, name: str, palette: Palette, n_levels: int, block: dict[str, Any]
) -> tuple[zarr.Group, zarr.Group]:
    """Create the image, labels and segmentation groups; return the first and the last.

    The segmentation group starts with ``kmdist.complete: false``, so an interruption
    from here on leaves an output that reads as incomplete.
    """
    image_ome: dict[str, Any] = {
        "version": OME_VERSION,
        "multiscales": _multiscales(name, n_levels, channel_axis=True),
    }
    omero = _omero(palette)
    if omero is not None:
        image_ome["omero"] = omero
    colors = [
        {"label-value": i, "rgba": [int(v) for v in rgba]}
        for i, rgba in enumerate(palette.display_rgba())
    ]
    seg_ome = {
        "version": OME_VERSION,
        "multiscales": _multiscales(SEGMENTATION, n_levels, channel_axis=False),
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
