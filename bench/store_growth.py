"""The huge-archives issue: an image's cost must not grow with the images in the store.

Builds N_NEW 64 x 64 photo-like PNG thumbnails and output stores that already hold
0, 10,000 and 100,000 images (synthetic groups, as kmdist leaves them: a group and its
segmentation block marked complete), then times ``kmdist segment`` writing the same new
thumbnails into each store, as whole processes, interleaved, and reports per-image
milliseconds and peak memory (the largest process) against the empty store's.

Usage: ``python bench/store_growth.py [--new 500] [--sizes 0 10000 100000] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from common import Measured, Row, check_ok, machine, python, run_measured, save

SIDE = 64


def make_thumbnails(folder: Path, n: int) -> None:
    import imageio.v3 as iio
    from sklearn.datasets import load_sample_image

    if folder.is_dir() and len(list(folder.glob("*.png"))) == n:
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    photo = load_sample_image("china.jpg")
    for i in range(n):
        y, x = rng.integers(0, photo.shape[0] - SIDE), rng.integers(0, photo.shape[1] - SIDE)
        tile = photo[y : y + SIDE, x : x + SIDE].astype(np.int16)
        tile += rng.integers(-2, 3, size=tile.shape, dtype=np.int16)
        iio.imwrite(folder / f"new{i:05d}.png", np.clip(tile, 0, 255).astype(np.uint8))


def make_store(store: Path, n: int) -> None:
    """A store holding `n` complete images (their metadata: what a write could read)."""
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    root = {"zarr_format": 3, "node_type": "group", "attributes": {"kmdist": {}}}
    (store / "zarr.json").write_text(json.dumps(root))
    group = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})
    block = {"complete": True, "k": 8, "palette": [[0, 0, 0]] * 8, "counts": [1] * 8}
    seg = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"kmdist": block}})
    for i in range(n):
        folder = store / f"old{i:06d}" / "labels" / "segmentation"
        folder.mkdir(parents=True)
        (store / f"old{i:06d}" / "zarr.json").write_text(group)
        (folder / "zarr.json").write_text(seg)


def run(n_new: int, sizes: list[int], work: Path, repeats: int) -> dict[str, Any]:
    thumbs = work / f"thumbs-{n_new}"
    make_thumbnails(thumbs, n_new)
    runs: dict[int, list[Measured]] = {n: [] for n in sizes}
    for _ in range(repeats):
        for n in sizes:
            store = work / f"growth-{n}.zarr"
            make_store(store, n)
            cmd = [python(), "-m", "kmdist.cli", "segment", str(thumbs), "-k", "8"]
            m = run_measured([*cmd, "-o", str(store), "--workers", "2"])
            check_ok(m, f"kmdist segment into a store of {n}")
            runs[n].append(m)
            print(f"store of {n}: {m.seconds:.1f} s, {m.peak_rss_gb:.2f} GB", flush=True)
    rows = []
    base = None
    for n, measured in runs.items():
        mid = sorted(measured, key=lambda m: m.seconds)[len(measured) // 2]
        per_image = 1000 * mid.seconds / n_new
        base = base or (per_image, mid.peak_rss_gb)
        note = (
            f"{per_image:.1f} ms an image, {per_image / base[0]:.2f}x the empty store's; "
            f"peak memory {mid.peak_rss_gb / base[1]:.2f}x"
        )
        case = f"{n_new} new {SIDE}x{SIDE} images into a store of {n:,}"
        rows.append(
            Row(
                case,
                "kmdist segment",
                mid.seconds,
                None,
                mid.peak_rss_gb,
                note,
                [m.seconds for m in measured],
            )
        )
    return {"machine": machine(), "new_images": n_new, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new", type=int, default=500)
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 10_000, 100_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/kmdist-bench"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="100 new images, stores of 0 and 2,000"
    )
    args = parser.parse_args()
    if args.quick:
        args.new, args.sizes, args.repeats = 100, [0, 2_000], 1
    result = run(args.new, args.sizes, args.work, args.repeats)
    save("store-growth-quick" if args.quick else "store-growth", result)


if __name__ == "__main__":
    main()
