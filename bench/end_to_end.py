"""Targets 2 and 4: a large photo-like image end to end, every method as a whole process.

Builds (once, cached in the work folder) a SIDE x SIDE 8-bit RGB image from rescaled
crops of the sample photos with mild noise, stored as Zarr with 1024 x 1024 chunks
(`gigapixel.make_image`). Then runs, each as its own process with start-up included:

- ``kmdist segment -k 16`` on a 2-worker LocalCluster (and on a 1-worker one: target 4);
- scikit-learn's colour-quantisation recipe scaled up (KMeans(16) on a 1% sample), in
  float64 as documented and in float32 as a user writes it for speed, and faiss
  `Kmeans(3, 16)` on the same sample;
- the seed's path (MiniBatchKMeans(16) on every pixel) and dask-ml KMeans(16), each
  capped (killed after ``--cap`` seconds and reported as capped);
- the I/O floor: Dask doing kmdist's reads and level-0 writes with no computation, and
  the raw floor: the same reads and writes by zarr in one process, with no Dask.

Every method is scored by inertia over all pixels (`common.inertia`) from its own
labels and float palette. Usage: ``python bench/end_to_end.py [--side 8192] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from common import Measured, Row, check_ok, inertia, machine, python, run_measured, save
from gigapixel import make_image

RECIPES = Path(__file__).with_name("recipes.py")


def labelled_inertia(src: Path, labels: da.Array, centers: np.ndarray) -> float:
    """`common.inertia` of the labelled image, chunk by chunk (it does not fit in memory)."""
    img = da.from_zarr(str(src))

    def block(x: np.ndarray, lab: np.ndarray) -> np.ndarray:
        return np.array([[inertia(x, centers, lab[..., 0])]])

    parts = da.map_blocks(
        block,
        img,
        labels.rechunk(img.chunks[:2])[..., None],
        drop_axis=2,
        chunks=(1, 1),
        dtype=np.float64,
    )
    return float(parts.sum().compute(scheduler="threads", num_workers=2))


def _kmdist(src: Path, out: Path, workers: int, score: bool) -> tuple[Measured, float | None]:
    import kmdist

    shutil.rmtree(out, ignore_errors=True)
    m = run_measured(
        [
            python(),
            "-m",
            "kmdist.cli",
            "segment",
            str(src),
            "-k",
            "16",
            "-o",
            str(out),
            "--overwrite",
            "--workers",
            str(workers),
        ]
    )
    check_ok(m, f"kmdist segment --workers {workers}")
    if not score:
        return m, None
    (info,) = kmdist.list_segmentations(out)
    seg = kmdist.open_segmentation(out, info.name)
    return m, labelled_inertia(src, seg.labels, seg.palette.colors)


def _recipe(
    name: str, src: Path, out: Path, cap: float | None = None, score: bool = True
) -> tuple[Measured, float | None]:
    shutil.rmtree(out, ignore_errors=True)
    m = run_measured([python(), str(RECIPES), name, str(src), str(out)], timeout=cap)
    check_ok(m, name)
    if m.capped or name == "io-floor" or not score:
        return m, None
    centers = json.loads(m.output.strip().splitlines()[-1])["centers"]
    return m, labelled_inertia(src, da.from_zarr(str(out / "labels")), np.asarray(centers))


def _raw_floor(src: Path, out: Path) -> tuple[Measured, float | None]:
    """The raw floor, into level-0 arrays made here as kmdist makes them (not timed)."""
    import zarr
    from recipes import level0_targets

    shutil.rmtree(out, ignore_errors=True)
    level0_targets(out, zarr.open_array(str(src), mode="r").shape)
    m = run_measured([python(), str(RECIPES), "raw-floor", str(src), str(out)])
    check_ok(m, "raw-floor")
    return m, None


def run(side: int, work: Path, cap: float, scaling: bool, repeats: int) -> dict[str, Any]:
    """Measure every method on the SIDE x SIDE image.

    Methods that finish are run `repeats` times, interleaved so that any drift of the
    machine touches them alike, and reported by their median run; capped ones once.
    """
    src = work / f"photo-{side}.zarr"
    make_image(src, side)
    case = f"{side * side / 1e6:.0f} MP image"
    rows: list[Row] = []

    def add(method: str, runs: list[tuple[Measured, float | None]]) -> None:
        m, _ = sorted(runs, key=lambda r: r[0].seconds)[len(runs) // 2]
        score = next((i for _, i in runs if i is not None), None)  # the same every run
        note = f"capped: killed after {cap:.0f} s" if m.capped else ""
        times = [r[0].seconds for r in runs]
        # A killed run's children were never waited for: their CPU is not counted.
        cores = None if m.capped else m.cores
        rows.append(Row(case, method, m.seconds, score, m.peak_rss_gb, note, times, cores))
        shown = ", ".join(f"{t:.1f}" for t in times)
        print(f"{method:<34}{m.seconds:>8.1f} s ({shown}) {m.peak_rss_gb:5.2f} GB {score} {note}")

    plan: list[tuple[str, Callable[[bool], tuple[Measured, float | None]]]] = [
        ("kmdist segment (2 workers)", lambda s: _kmdist(src, work / "e2e-kmdist.zarr", 2, s)),
        (
            "I/O floor (Dask, 2 workers)",
            lambda s: _recipe("io-floor", src, work / "e2e-floor.zarr"),
        ),
        (
            "raw floor (zarr, one process)",
            lambda s: _raw_floor(src, work / "e2e-raw.zarr"),
        ),
        (
            "sklearn KMeans(16) on 1% sample",
            lambda s: _recipe("sklearn-sample", src, work / "e2e-sk", score=s),
        ),
        (
            "sklearn KMeans(16) on 1% sample, float32",
            lambda s: _recipe("sklearn-sample-f32", src, work / "e2e-sk32", score=s),
        ),
        (
            "faiss Kmeans(16) on 1% sample",
            lambda s: _recipe("faiss-sample", src, work / "e2e-faiss", score=s),
        ),
    ]
    if scaling:
        plan.append(
            ("kmdist segment (1 worker)", lambda s: _kmdist(src, work / "e2e-kmdist1.zarr", 1, s))
        )
    done: dict[str, list[tuple[Measured, float | None]]] = {name: [] for name, _ in plan}
    for i in range(repeats):
        for name, measure in plan:
            done[name].append(measure(i == 0))  # inertia is scored once: it is the same
    for name, _ in plan:
        add(name, done[name])
    add(
        "sklearn MiniBatchKMeans(16), all pixels",
        [_recipe("sklearn-minibatch", src, work / "e2e-mbk", cap)],
    )
    add("dask-ml KMeans(16) (2 workers)", [_recipe("dask-ml", src, work / "e2e-daskml", cap)])
    return {"machine": machine(), "side": side, "cap_seconds": cap, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=8192)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kmdist-bench"))
    parser.add_argument("--cap", type=float, default=900.0, help="seconds for capped peers")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each uncapped method")
    parser.add_argument("--quick", action="store_true", help="2048 x 2048, 30 s caps, 1 run")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    side, cap = (2048, min(args.cap, 30.0)) if args.quick else (args.side, args.cap)
    repeats = 1 if args.quick else args.repeats
    save(
        "end_to_end-quick" if args.quick else "end_to_end",
        run(side, args.work, cap, True, repeats),
    )


if __name__ == "__main__":
    main()
