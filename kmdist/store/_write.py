"""Writing segmentations: labels, recoloured image and pyramid levels as OME-Zarr 0.5.

Pixels are written chunk-aligned by the Dask workers, all pyramid levels in one graph;
only metadata passes through the calling process. A small image held in memory (NumPy
labels) is encoded here and written directly: its documents, then its chunks, in a
batch each. An image's ``zarr.json`` documents are those zarr writes, made once per
array layout by zarr itself (`_array_document`). The ``complete`` marker is set last.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import dask.array as da
import numcodecs  # type: ignore[import-untyped]  # zarr's Blosc; no type hints
import numpy as np
import numpy.typing as npt
import zarr
from dask.base import compute
from zarr.codecs import BloscCodec

from kmdist.store._blocks import Labels, chunk_shape, level_shapes, sharding
from kmdist.store._claims import clear_previous, process_start, writing
from kmdist.store._errors import OutputError
from kmdist.store._layout import (
    OME_VERSION,
    SEG_PATH,
    SEGMENTATION,
    Colours,
    check_name,
    multiscales,
    omero,
)
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
    palette: Colours,
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
    palette : Palette (or any `kmdist.store._layout.Colours`)
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
    >>> from kmdist import Palette, is_complete, open_segmentation
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
    groups = _group_attributes(name, palette, len(layout), block)
    seg_path = f"{name}/{SEG_PATH}"
    documents = _image_documents(name, groups, layout)
    if isinstance(labels, np.ndarray):
        # A small image: its documents (the claim, complete: false), its encoded chunks
        # and then the marker, written directly in three batches under this image's lock:
        # no event loop, no reads.
        data = _numpy_levels(name, labels, layout, palette)
        with root.lock(image_lock(name)):
            clear_previous(root, name, overwrite, run)
            with writing(block["writer"]["write"]):
                _put(root, name, documents)
                try:
                    _write_arrays(root, name, data, documents)
                except BaseException:
                    with contextlib.suppress(Exception):  # best effort: the error matters more
                        root.put(_ended(seg_path, groups[seg_path], complete=False))
                    raise
                _put(root, name, _ended(seg_path, groups[seg_path], complete=True))
        return
    # Clearing and claiming the group is atomic between runs (this image's own lock,
    # no lock shared by the store); writing is not locked.
    with contextlib.ExitStack() as claimed:
        with root.lock(image_lock(name)):
            clear_previous(root, name, overwrite, run)
            claimed.enter_context(writing(block["writer"]["write"]))
            _put(root, name, documents)
        try:
            _write_levels(root, labels, layout, palette, name, documents)
        except BaseException:
            with contextlib.suppress(Exception):  # best effort: the error below matters more
                root.put(_ended(seg_path, groups[seg_path], complete=False))
            raise
        _put(root, name, _ended(seg_path, groups[seg_path], complete=True))


def _write_levels(
    root: StoreRoot,
    labels: da.Array,
    layout: list[_LevelLayout],
    palette: Colours,
    name: str,
    documents: Mapping[str, bytes],
) -> None:
    """Write every level of a claimed image with one Dask computation."""
    sources: list[Any] = []
    targets: list[Any] = []
    level = labels
    for i, lay in enumerate(layout):
        if i:
            level = level[::2, ::2]
        sources += _level_sources(level, lay, palette)
        for path in (f"{name}/{SEG_PATH}/{i}", f"{name}/{i}"):
            targets.append(_open_array(root, path, documents[f"{path}/zarr.json"]))
    # One graph for every level, so each label block is computed once and shared.
    compute(da.store(sources, targets, lock=False, compute=False))


def _ended(seg_path: str, attributes: Mapping[str, Any], *, complete: bool) -> dict[str, bytes]:
    """Return the segmentation group's document once its write has ended, by key.

    The claim is released; ``complete`` is true only when every pixel was written.
    """
    block = {k: v for k, v in attributes["kmdist"].items() if k != "claimed"}
    if complete:
        block["complete"] = True  # in the place it had, last
    return {f"{seg_path}/zarr.json": _group_document({**attributes, "kmdist": block})}


def _numpy_levels(
    name: str, labels: npt.NDArray[Any], layout: list[_LevelLayout], palette: Colours
) -> dict[str, npt.NDArray[Any]]:
    """Every level's labels and recoloured planes, by array path."""
    data: dict[str, npt.NDArray[Any]] = {}
    level = labels
    for i, lay in enumerate(layout):
        if i:
            level = level[::2, ::2]
        data[f"{name}/{SEG_PATH}/{i}"], data[f"{name}/{i}"] = _level_sources(level, lay, palette)
    return data


def _put(root: StoreRoot, name: str, items: Mapping[str, bytes]) -> None:
    """Write `items` of image `name` as one batch; a refusal names the image's group."""
    try:
        root.put(items)
    except OSError as exc:
        raise _cannot_write(root, name, exc) from exc


def _write_arrays(
    root: StoreRoot,
    name: str,
    data: Mapping[str, npt.NDArray[Any]],
    documents: Mapping[str, bytes],
) -> None:
    """Write NumPy arrays whole, by path, into the arrays that `documents` describe.

    Chunks of a plain chain (bytes, then Blosc) are encoded here and written in one
    batch; any other chain (a sharded level of a large image) goes through zarr.
    """
    chunks: dict[str, bytes] = {}
    for path, value in data.items():
        document = documents[f"{path}/zarr.json"]
        codec = _chunk_codec(document)
        if codec is None:
            _open_array(root, path, document)[...] = value
        else:
            chunks.update(codec.encode(path, value))
    _put(root, name, chunks)


def _open_array(root: StoreRoot, path: str, document: bytes) -> zarr.Array[Any]:
    """Return the array at `path` whose ``zarr.json`` is `document`, without reading it."""
    store_path = zarr.storage.StorePath(root.zarr_store(), path)
    return zarr.Array(zarr.AsyncArray(json.loads(document), store_path))


@dataclass(frozen=True)
class _ChunkCodec:
    """How one array's chunks are stored: a regular grid, bytes then Blosc, fill 0.

    This is the chain `_array_document` declares. Encoded with numcodecs' Blosc and the
    parameters the document records, a chunk has the bytes zarr's own `BloscCodec` writes
    (zarr encodes with that same numcodecs codec). zarr's synchronous encode
    (`_encode_sync`) is private: zarr-developers/zarr-python#4243 asks for a public one.
    """

    chunk: tuple[int, ...]
    dtype: np.dtype[Any]
    separator: str
    blosc: numcodecs.Blosc

    def encode(self, path: str, value: npt.NDArray[Any]) -> dict[str, bytes]:
        """Return the encoded chunks of `value` (the whole array) by key, as zarr writes them.

        Edge chunks are padded with the fill value, and chunks holding only the fill
        value are not written (zarr's default, ``write_empty_chunks=False``).
        """
        value = np.asarray(value, dtype=self.dtype)
        grid = [range(-(-n // c)) for n, c in zip(value.shape, self.chunk, strict=True)]
        out: dict[str, bytes] = {}
        for index in itertools.product(*grid):
            window = tuple(
                slice(i * c, (i + 1) * c) for i, c in zip(index, self.chunk, strict=True)
            )
            block = value[window]
            if not block.any():
                continue
            if block.shape != self.chunk:
                padded = np.zeros(self.chunk, dtype=self.dtype)
                padded[tuple(slice(0, n) for n in block.shape)] = block
                block = padded
            key = self.separator.join(["c", *map(str, index)])
            out[f"{path}/{key}"] = bytes(self.blosc.encode(np.ascontiguousarray(block)))
        return out


_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


@functools.lru_cache(maxsize=256)
def _chunk_codec(document: bytes) -> _ChunkCodec | None:
    """Return the `_ChunkCodec` of the array that ``zarr.json`` `document` describes.

    None for any chain, grid, key encoding or fill value other than the ones
    `_array_document` declares (a sharded array), which zarr then writes.
    """
    meta = json.loads(document)
    codecs = meta["codecs"]
    names = [c["name"] for c in codecs]
    keys = meta["chunk_key_encoding"]
    if (
        names != ["bytes", "blosc"]
        or meta["chunk_grid"]["name"] != "regular"
        or keys["name"] != "default"
        or meta["fill_value"] != 0
    ):
        return None
    dtype = np.dtype(meta["data_type"])
    endian = codecs[0].get("configuration", {}).get("endian")
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    config = codecs[1]["configuration"]
    blosc = numcodecs.Blosc(
        cname=config["cname"],
        clevel=config["clevel"],
        shuffle=_SHUFFLES[config["shuffle"]],
        blocksize=config["blocksize"],
        typesize=config["typesize"],
    )
    return _ChunkCodec(
        chunk=tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]),
        dtype=dtype,
        separator=keys.get("configuration", {}).get("separator", "/"),
        blosc=blosc,
    )


def _check_labels(labels: Labels, palette: Colours) -> Labels:
    if not isinstance(labels, (da.Array, np.ndarray)):
        raise ValueError(f"labels must be a Dask or NumPy array, got {type(labels).__name__}")
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (y, x), got {labels.shape}")
    if any(math.isnan(s) for s in labels.shape) or 0 in labels.shape:
        raise ValueError(f"labels must have a known, non-empty shape, got {labels.shape}")
    if labels.dtype.kind not in "ui":
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    dtype = _label_dtype(palette.k)
    return labels if labels.dtype == dtype else labels.astype(dtype)


def _label_dtype(k: int) -> np.dtype[Any]:
    """Return the stored labels' dtype (the output contract): uint8 to 256 labels, else uint16."""
    return np.dtype(np.min_scalar_type(max(k - 1, 0)))


@functools.cache
def _version() -> str:
    # Looked up once: reading the package metadata costs milliseconds an image.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kmdist")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def _kmdist_block(
    palette: Colours, source: str, extra: Mapping[str, Any] | None, run: str | None
) -> dict[str, Any]:
    kmdist_version = _version()
    described = palette.to_dict()
    extra = dict(extra or {})
    clash = sorted(RESERVED_KEYS & extra.keys())
    if clash:
        raise ValueError(f"extra must not set the reserved keys {clash}")
    try:
        json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"extra must be JSON-serialisable: {exc}") from exc
    return {
        "palette": described["colors"],
        "counts": described["counts"],
        "inertia": described["inertia"],
        "k": palette.k,
        "n_clusters": described["n_clusters"],
        "color_space": described["color_space"],
        "method": described["method"],
        "seed": described["seed"],
        "dtype": described["dtype"],
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
        cls, shape: tuple[int, int], chunk: tuple[int, int], dtype: Any, palette: Colours
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

    def label_args(self) -> _ArrayArgs:
        return (
            self.shape,
            self.chunk,
            self.label_shard,
            self.label_dtype,
            ("y", "x"),
            "bitshuffle",
        )

    def image_args(self) -> _ArrayArgs:
        shard = None if self.image_shard is None else (self.channels, *self.image_shard)
        return (
            (self.channels, *self.shape),
            (self.channels, *self.chunk),
            shard,
            self.image_dtype,
            ("c", "y", "x"),
            "shuffle",
        )


# shape, chunks, shards, dtype, dimension names, Blosc shuffle: `_create_array`'s arguments.
_ArrayArgs = tuple[
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...] | None,
    str,
    tuple[str, ...],
    Literal["shuffle", "bitshuffle"],
]


def _create_array(store: Any, path: str, args: _ArrayArgs) -> zarr.Array[Any]:
    """Create one stored array at `path` of `store`, as kmdist stores every array."""
    shape, chunks, shards, dtype, dims, shuffle = args
    return zarr.create_array(
        store,
        name=path,
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


@functools.lru_cache(maxsize=256)
def _array_document(args: _ArrayArgs) -> bytes:
    """Return the ``zarr.json`` of one stored array, as zarr itself writes it.

    zarr creates the array (its codec chain, sharding and Blosc, as for any array) in a
    store in memory, and the document it wrote there is the one kmdist writes.
    """
    written: dict[str, Any] = {}
    _create_array(zarr.storage.MemoryStore(written), "", args)
    return bytes(written["zarr.json"].to_bytes())


def _level_sources(labels: Labels, lay: _LevelLayout, palette: Colours) -> list[Any]:
    """Return the label and recoloured-image sources (Dask or NumPy) of one level.

    Each Dask source is rechunked to its target's shard shape (or chunk shape when not
    sharded), starting at 0: every write task then fills whole shards that no other
    task touches, so writes run in parallel without locks.
    """
    if isinstance(labels, np.ndarray):
        return [labels, palette.planes(labels)]
    label_source = labels.rechunk(lay.label_shard or lay.chunk)
    return [label_source, palette.planes(labels.rechunk(lay.image_shard or lay.chunk))]


def level_arrays(
    store: Any,
    label_path: str,
    image_path: str,
    shape: tuple[int, int],
    chunk: tuple[int, int],
    palette: Colours,
) -> tuple[zarr.Array[Any], zarr.Array[Any]]:
    """Create level arrays as `write_segmentation` does, at the given paths of `store`.

    For a caller (bench/) that writes one level the way kmdist does. Returns the label
    array (uint8 or uint16, as for ``palette.k``) and the recoloured-image array.
    """
    lay = _LevelLayout.of(shape, chunk, _label_dtype(palette.k), palette)
    return _create_array(store, label_path, lay.label_args()), _create_array(
        store, image_path, lay.image_args()
    )


def _group_attributes(
    name: str, palette: Colours, n_levels: int, block: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Return the attributes of an image's three groups, by path.

    The segmentation group's carry the `kmdist` block as given (the claim, and
    ``complete: false``), so an interruption from its creation on leaves an output that
    reads as incomplete.
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
    labels_ome = {"version": OME_VERSION, "labels": [SEGMENTATION]}
    return {
        name: {"ome": image_ome},
        f"{name}/labels": {"ome": labels_ome},
        f"{name}/{SEG_PATH}": {"ome": seg_ome, "kmdist": block},
    }


def _image_documents(
    name: str, groups: Mapping[str, dict[str, Any]], layout: list[_LevelLayout]
) -> dict[str, bytes]:
    """Return every ``zarr.json`` of an image (its groups', then its arrays'), by key.

    Written in one batch: one request a node, no reads. The caller found the image's
    group absent (or removed it) under the image's lock, so the checks of zarr's
    `create_hierarchy` (the root read twice, each node looked up: two requests a node
    on object storage) would find nothing.
    """
    documents = {f"{path}/zarr.json": _group_document(attrs) for path, attrs in groups.items()}
    for i, lay in enumerate(layout):
        documents[f"{name}/{i}/zarr.json"] = _array_document(lay.image_args())
        documents[f"{name}/{SEG_PATH}/{i}/zarr.json"] = _array_document(lay.label_args())
    return documents


def _group_document(attributes: Mapping[str, Any]) -> bytes:
    """Return the ``zarr.json`` of a Zarr v3 group with `attributes`, as zarr writes it.

    The document is the specification's; its layout (key order, zarr's ``json_indent``
    setting, NaN allowed) is the one zarr writes for `zarr.create_group`, which a test
    compares. Made here because zarr's group creation goes through its event loop.
    """
    document = {"attributes": attributes, "zarr_format": 3, "node_type": "group"}
    text = json.dumps(document, indent=zarr.config.get("json_indent"), allow_nan=True)
    return text.encode()


def _cannot_write(root: StoreRoot, name: str, exc: OSError) -> OutputError:
    """Return the error for an image whose writes the store refused, naming its group."""
    return OutputError(f"{root}/{name}: cannot write: {exc.strerror or exc}")
