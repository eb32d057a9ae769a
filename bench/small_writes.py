"""Per-image cost of writing small images' OME-Zarr groups (NumPy labels).

Labels 256 x 256 with k=16 (the nearest of 16 colours drawn from random crops of
scikit-learn's china.jpg and flower.jpg) are written with ``kmdist.write_segmentation``
to a fresh local store, one image after another; the report is wall and CPU time per
image (the labels are made before the clock starts). The first image, which creates
the store's root group, is not counted.

Usage: ``python bench/small_writes.py [--images 200] [--repeats 3] [--store DIR]``;
prefix ``PYTHONPATH=OTHER_CHECKOUT`` to measure another version of kmdist.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_sample_images

import kmdist
from kmdist import Palette, write_segmentation


def crops(n: int, side: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, Palette]]:
    """`n` label images of `side` x `side` with `k` labels, and their palettes."""
    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    out = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        y = rng.integers(photo.shape[0] - side + 1)
        x = rng.integers(photo.shape[1] - side + 1)
        pixels = photo[y : y + side, x : x + side].reshape(-1, 3).astype(np.float64)
        colors = pixels[rng.choice(len(pixels), k, replace=False)]
        dist = ((pixels[:, None, :] - colors[None, :, :]) ** 2).sum(-1)
        raw = dist.argmin(1)
        counts = np.bincount(raw, minlength=k)
        order = np.argsort(-counts, kind="stable")  # label 0 the most common, as kmdist
        rank = np.empty(k, dtype=np.int64)
        rank[order] = np.arange(k)
        labels = rank[raw].reshape(side, side).astype(np.uint8)
        out.append((labels, Palette(colors[order], counts[order], 0.0)))
    return out


def run(images: list[tuple[np.ndarray, Palette]], store: Path) -> tuple[float, float]:
    """Write every image to a fresh `store`; return wall and CPU seconds per image."""
    shutil.rmtree(store, ignore_errors=True)
    write_segmentation(store, "warm-up", *images[0])  # creates the root group
    wall, cpu = time.perf_counter(), time.process_time()
    for i, (labels, palette) in enumerate(images):
        write_segmentation(store, f"im{i:05d}", labels, palette, source=f"crop{i}.png")
    n = len(images)
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store", type=Path, default=None)
    args = parser.parse_args(argv)
    images = crops(args.images, args.side, args.k)
    work = Path(tempfile.mkdtemp(prefix="kmdist-small-writes-"))
    store = args.store or work / "out.zarr"
    try:
        results = [run(images, store) for _ in range(args.repeats)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.store is not None:
            shutil.rmtree(args.store, ignore_errors=True)
    wall = statistics.median(r[0] for r in results)
    cpu = statistics.median(r[1] for r in results)
    print(
        f"kmdist from {Path(kmdist.__file__).parent}: {args.images} images of "
        f"{args.side}x{args.side}, k={args.k}, median of {args.repeats} runs: "
        f"{wall * 1e3:.2f} ms wall, {cpu * 1e3:.2f} ms CPU per image "
        f"(runs: {', '.join(f'{r[0] * 1e3:.2f}' for r in results)} ms wall)"
    )
    return {"wall": wall, "cpu": cpu, "runs": results}


if __name__ == "__main__":
    main()
