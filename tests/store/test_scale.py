"""An image's write costs the same number of store operations however many images the
store holds: counted, on a local store and on S3, against stores of very different size.
"""

from __future__ import annotations

import collections
import functools
import inspect
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from kmdist import Palette, is_complete, list_segmentations, write_segmentation
from kmdist.store import _root


def tiny_palette() -> Palette:
    return Palette(np.array([[255, 0, 0], [0, 0, 255]]), np.array([3, 3]), 0.0)


def labels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 2, (64, 64)).astype(np.uint8)


def synthetic_groups(store: Path, n: int) -> None:
    """`n` image groups as kmdist leaves them (a complete segmentation block), quickly."""
    block = {"complete": True, "k": 2, "palette": [[255, 0, 0], [0, 0, 255]], "counts": [3, 3]}
    group = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})
    seg = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"kmdist": block}})
    for i in range(n):
        folder = store / f"old{i:06d}" / "labels" / "segmentation"
        folder.mkdir(parents=True)
        (store / f"old{i:06d}" / "zarr.json").write_text(group)
        (folder / "zarr.json").write_text(seg)


class Counter:
    """Counts calls to every operation of zarr's stores and to `os` stats and listings.

    The stores' synchronous operations (``set_sync``, ...), through which a small image
    is written without zarr's event loop, count as much as the asynchronous ones.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.own: str | None = None
        self.touched: set[tuple[str, str]] = set()
        for cls in (zarr.storage.LocalStore, zarr.storage.FsspecStore):
            for name, method in inspect.getmembers(cls):
                if name.startswith("_"):
                    continue
                if inspect.iscoroutinefunction(method):
                    monkeypatch.setattr(cls, name, self._async(name, method))
                elif inspect.isasyncgenfunction(method):
                    monkeypatch.setattr(cls, name, self._asyncgen(name, method))
                elif name.endswith("_sync") and inspect.isfunction(method):
                    monkeypatch.setattr(cls, name, self._sync(name, method))
        for name in ("stat", "lstat", "scandir", "listdir"):
            monkeypatch.setattr(os, name, self._plain(name, getattr(os, name)))

    def _plain(self, name: str, fn):
        @functools.wraps(fn)
        def counted(*args, **kwargs):
            # The image's own folders are left out: zarr's threads create them with
            # `mkdir(exist_ok=True)`, whose number of stats depends on their timing.
            path = os.fspath(args[0]) if args and isinstance(args[0], str | Path) else ""
            if path and self.own is not None and not (path + "/").startswith(self.own + "/"):
                # What a call touches in the store, not how often: zarr's threads create
                # folders with `mkdir(exist_ok=True)`, whose number of stats depends on
                # timing; paths outside the store (/proc, read by a Dask cluster's
                # monitor thread) are not the write's.
                rel = os.path.relpath(path, os.path.dirname(self.own))
                if not rel.startswith(".."):
                    self.touched.add((name, rel))
            return fn(*args, **kwargs)

        return counted

    def _async(self, name: str, method):
        @functools.wraps(method)
        async def counted(*args, **kwargs):
            self.calls[name] += 1
            return await method(*args, **kwargs)

        return counted

    def _sync(self, name: str, method):
        @functools.wraps(method)
        def counted(*args, **kwargs):
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted

    def _asyncgen(self, name: str, method):
        @functools.wraps(method)
        async def counted(*args, **kwargs):
            self.calls[name] += 1
            async for item in method(*args, **kwargs):
                yield item

        return counted

    def during(self, fn, own: Path) -> tuple[collections.Counter[str], set[tuple[str, str]]]:
        """Store operations that `fn()` makes, and the paths outside `own` it stats or lists.

        Paths come relative to the store (the parent of `own`).
        """
        before = collections.Counter(self.calls)
        self.own, self.touched = os.fspath(own), set()
        try:
            fn()
        finally:
            self.own = None
        return self.calls - before, self.touched


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    yield Counter(monkeypatch)


def test_an_image_write_does_not_grow_with_the_local_store(tmp_path, counter):
    small, large = tmp_path / "small.zarr", tmp_path / "large.zarr"
    lab, pal = labels(), tiny_palette()
    for store, n in ((small, 20), (large, 20_000)):
        write_segmentation(store, "first", lab, pal)  # creates and checks the root
        synthetic_groups(store, n)
    counts = {}
    for store in (small, large):
        counts[store.name] = counter.during(
            lambda s=store: write_segmentation(s, "new", lab, pal), own=store / "new"
        )
        assert is_complete(store, "new")
    assert counts["small.zarr"] == counts["large.zarr"]
    # Nothing lists the root, and a constant handful of store operations (metadata
    # of five nodes, two chunks, the marker: 8 writes) is all an image costs;
    # zarr's hierarchy checks added 7 reads.
    ops, touched = counts["large.zarr"]
    assert 0 < sum(ops.values()) <= 10, ops
    assert ops == {"set_sync": 8}, ops  # written directly: no read, no event loop
    # Outside its own group an image touches the root's metadata and its own lock only.
    assert {path for _, path in touched} <= {".", "zarr.json", _root.image_lock("new")}, touched
    assert not {call for call, _ in touched} & {"scandir", "listdir"}, touched
    # Overwriting one image of the large store costs the same as in the small one.
    again = {
        s.name: counter.during(
            lambda s=s: write_segmentation(s, "new", lab, pal, overwrite=True), own=s / "new"
        )
        for s in (small, large)
    }
    assert again["small.zarr"] == again["large.zarr"]


def test_the_root_keeps_no_list_of_images(tmp_path):
    store = tmp_path / "out.zarr"
    for i in range(3):
        write_segmentation(store, f"im{i}", labels(), tiny_palette())
    before = (store / "zarr.json").read_bytes()
    write_segmentation(store, "im3", labels(), tiny_palette())
    assert (store / "zarr.json").read_bytes() == before  # untouched by an image's write
    assert [s.name for s in list_segmentations(store)] == ["im0", "im1", "im2", "im3"]
    # No lock file is left behind, neither the store's nor an image's.
    assert not [p for p in os.listdir(store) if p.startswith(_root.LOCK_NAME)]


def moto_requests(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if '] "' in line and "HTTP/1" in line)


@pytest.mark.slow
def test_an_image_write_does_not_grow_with_the_s3_store(bucket, s3_log):
    import fsspec

    fs = fsspec.filesystem("s3")
    lab, pal = labels(), tiny_palette()
    block = {"complete": True, "k": 2}
    seg = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"kmdist": block}})
    group = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})
    counts = {}
    for name, n in (("small.zarr", 10), ("large.zarr", 1_500)):
        url = f"s3://{bucket}/{name}"
        write_segmentation(url, "first", lab, pal)
        objects = {}
        for i in range(n):
            objects[f"{bucket}/{name}/old{i:05d}/zarr.json"] = group.encode()
            objects[f"{bucket}/{name}/old{i:05d}/labels/segmentation/zarr.json"] = seg.encode()
        fs.pipe(objects)
        start = moto_requests(s3_log)
        write_segmentation(url, "new", lab, pal)
        counts[name] = moto_requests(s3_log) - start
        assert is_complete(url, "new")
    assert counts["small.zarr"] == counts["large.zarr"], counts
    # The image's lock (create, read, remove), a look for the image and for the root,
    # five nodes' metadata, two chunks, the marker: 15. zarr's hierarchy checks would
    # double it (two requests a node, and the root read twice).
    assert counts["large.zarr"] <= 16, counts


def test_listing_a_store_streams_one_group_at_a_time(tmp_path, monkeypatch):
    from kmdist.store import _read

    store = tmp_path / "out.zarr"
    write_segmentation(store, "first", labels(), tiny_palette())
    synthetic_groups(store, 2_000)
    read = []
    real = _read._info
    monkeypatch.setattr(_read, "_info", lambda root, name: read.append(name) or real(root, name))
    stream = _read.iter_segmentations(store)
    assert next(stream).name == "first" and read == ["first"]  # the rest not read yet
    rest = list(stream)
    assert len(rest) == 2_000 and all(info.complete for info in rest)
    assert [info.name for info in rest] == sorted(info.name for info in rest)
