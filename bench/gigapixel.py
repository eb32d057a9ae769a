"""End-to-end ``kmdist segment`` on a large photo-like Zarr image: time and peak memory.

Builds (once, cached in the work folder) a SIDE x SIDE 8-bit RGB image from crops of
scikit-learn's sample photos, rescaled and with a little noise, stored as Zarr with
1024 x 1024 chunks; then runs ``kmdist segment -k 16`` on a 2-worker LocalCluster as a
separate process and samples the resident memory of that process and all its children
(client and workers) every 0.2 s.

Usage: ``python bench/gigapixel.py --side 32768 --work /tmp/kmdist-bench``
(32768**2 is 1.07 gigapixels; 16384 for 268 megapixels). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import psutil

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


def run_measured(cmd: list[str]) -> dict[str, Any]:
    """Run `cmd`; return wall time, exit code and peak RSS of its process tree."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak_total = peak_client = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.NoSuchProcess:
                    rss.append(0)
            peak_total = max(peak_total, sum(rss))
            peak_client = max(peak_client, rss[0])
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.2)
    out = proc.stdout.read() if proc.stdout else ""
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "returncode": proc.returncode,
        "peak_rss_total_gb": round(peak_total / 2**30, 2),
        "peak_rss_client_gb": round(peak_client / 2**30, 2),
        "output_tail": out.strip().splitlines()[-3:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=32768)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kmdist-bench"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    src = args.work / f"photo-{args.side}.zarr"
    t0 = time.perf_counter()
    make_image(src, args.side)
    build = time.perf_counter() - t0
    out = args.work / f"out-{args.side}.zarr"
    cmd = [
        sys.executable,
        "-m",
        "kmdist.cli",
        "segment",
        str(src),
        "-k",
        "16",
        "-o",
        str(out),
        "--workers",
        str(args.workers),
        "--overwrite",
    ]
    result = run_measured(cmd)
    result.update(
        side=args.side,
        megapixels=round(args.side**2 / 1e6, 1),
        workers=args.workers,
        build_seconds=round(build, 1),
        input_gb=round(args.side**2 * 3 / 2**30, 2),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
