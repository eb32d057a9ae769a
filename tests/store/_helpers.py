"""Labels, palettes and store readers that the store's test files share."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np

from kmdist.palette._palette import Palette
from kmdist.store._read import list_segmentations
from kmdist.store._write import write_segmentation


def make_labels(shape, k, rng, *, random=True):
    """Labels 0..k-1 renumbered so that label 0 is the most common, and their counts."""
    if random:
        raw = rng.integers(0, k, shape)
    else:  # a stripy pattern: compresses well, so large arrays stay quick to write
        y, x = np.indices(shape)
        raw = (y // 37 + x // 53) % k
    counts = np.bincount(raw.ravel(), minlength=k)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    dtype = np.uint8 if k <= 256 else np.uint16
    return rank[raw].astype(dtype), counts[order]


def make_palette(counts, rng, *, channels=3, dtype="uint8", seed=7):
    hi = np.iinfo(dtype).max
    colors = rng.integers(0, hi + 1, (len(counts), channels)).astype(np.float64)
    return Palette(colors, counts, 123.25, dtype=dtype, seed=seed, n_clusters=len(counts))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def attrs_of(path: Path) -> dict:
    return read_json(path / "zarr.json")["attributes"]


def images_of(store: Path) -> list[str]:
    """The store's images, found by listing it; the root itself keeps no list."""
    assert "images" not in attrs_of(store).get("kmdist", {})
    return [info.name for info in list_segmentations(store)]


def complete_images_of(store: Path) -> list[str]:
    return [info.name for info in list_segmentations(store) if info.complete]


def write(store, name, labels, palette, chunks=128, **kwargs):
    write_segmentation(store, name, da.from_array(labels, chunks=chunks), palette, **kwargs)
