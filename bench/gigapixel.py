"""End-to-end ``kmdist segment`` on a large photo-like Zarr image: time and peak memory.

Builds (once, cached in the work folder) a SIDE x SIDE 8-bit RGB image from crops of
scikit-learn's sample photos, rescaled and with a little noise, stored as Zarr with
1024 x 1024 chunks; then runs ``kmdist segment -k 16`` on a 2-worker LocalCluster as a
separate process and samples the resident memory of that process and all its children
(client and workers) every 0.2 s.

Usage: ``python bench/gigapixel.py --side 16384 32768 --work /tmp/kmdist-bench``
(16384**2 is 268 megapixels, 32768**2 1.07 gigapixels): target 3 of the performance
issue. Prints a JSON line per size and saves bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from common import check_ok, machine, python, run_measured, save

CHUNK = 1024


def _sources() -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return np.concatenate([load_sample_image("china.jpg"), load_sample_image("flower.jpg")], 1)


def _tile(block_info: dict[Any, Any] | None = None, *, src: np.ndarray) -> np.ndarray:
    """A photo-like tile: a rescaled crop of the sample photos plus mild noise."""
    assert block_info is not None
    (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
    rng = np.random.default_rng([y0, x0])
    scale = rng.uniform(1.0, 3.0)
    h, w = y1 - y0, x1 - x0
    oy = (
        rng.integers(0, src.shape[0] - int(np.ceil(h / scale)) + 1)
        if h / scale < src.shape[0]
        else 0
    )
    ox = rng.integers(0, src.shape[1] - int(np.ceil(w / scale)))
    ys = np.minimum(oy + (np.arange(h) / scale).astype(int), src.shape[0] - 1)
    xs = np.minimum(ox + (np.arange(w) / scale).astype(int), src.shape[1] - 1)
    tile = src[ys[:, None], xs[None, :]].astype(np.int16)
    tile += rng.integers(-2, 3, size=tile.shape, dtype=np.int16)
    return np.clip(tile, 0, 255).astype(np.uint8)


def make_image(path: Path, side: int) -> None:
    """Write the SIDE x SIDE x 3 benchmark image to a Zarr array at `path`."""
    if (path / "zarr.json").exists():
        return
    src = _sources()
    image = da.map_blocks(
        _tile,
        src=src,
        chunks=((CHUNK,) * (side // CHUNK), (CHUNK,) * (side // CHUNK), (3,)),
        dtype=np.uint8,
        meta=np.empty((0, 0, 0), np.uint8),
    )
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster):
        image.to_zarr(str(path), overwrite=True)


def run(side: int, work: Path, workers: int = 2) -> dict[str, Any]:
    """Build the SIDE x SIDE image (once) and measure ``kmdist segment`` on it."""
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"photo-{side}.zarr"
    t0 = time.perf_counter()
    make_image(src, side)
    build = time.perf_counter() - t0
    out = work / f"out-{side}.zarr"
    cmd = [python(), "-m", "kmdist.cli", "segment", str(src), "-k", "16", "-o", str(out)]
    m = run_measured([*cmd, "--workers", str(workers), "--overwrite"])
    check_ok(m, "kmdist segment")
    return {
        "side": side,
        "megapixels": round(side**2 / 1e6, 1),
        "input_gb": round(side**2 * 3 / 2**30, 2),
        "workers": workers,
        "build_seconds": round(build, 1),
        "seconds": round(m.seconds, 1),
        "cores_busy": round(m.cores, 2),
        "peak_rss_total_gb": round(m.peak_rss_gb, 2),
        "peak_rss_client_gb": round(m.peak_client_gb, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, nargs="+", default=[16384, 32768])
    parser.add_argument("--work", type=Path, default=Path("/tmp/kmdist-bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--save", default="memory", help="results name (bench/results/NAME.json)")
    args = parser.parse_args()
    runs = []
    for side in args.side:
        runs.append(run(side, args.work, args.workers))
        print(json.dumps(runs[-1]), flush=True)
    save(args.save, {"machine": machine(), "runs": runs})


if __name__ == "__main__":
    main()
