"""Where `kmdist segment`'s time goes on one large image: phase timers and task stream.

Runs the steps of `kmdist.pipeline.segment_one` for an 8-bit RGB image (the exact
palette path) on kmdist's LocalCluster, with a timer between steps, then prints, from
Dask's task stream, the compute and transfer seconds of each kind of task and how busy
each worker was. The profile section of docs/benchmarks.md quotes its output.

Usage: ``python bench/phases.py /tmp/kmdist-bench/photo-8192.zarr [--workers 2]``
(bench/end_to_end.py builds that image).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

T0 = time.perf_counter()


def _mark(what: str, last: list[float]) -> None:
    now = time.perf_counter()
    print(f"{now - T0:6.2f} s  (+{now - last[0]:5.2f} s)  {what}", flush=True)
    last[0] = now


def _summary(records: list[dict[str, Any]]) -> None:
    """Seconds per task prefix and action (compute, transfer), and per worker."""
    per_kind: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    per_worker: dict[str, float] = defaultdict(float)
    for r in records:
        key = r["key"][0] if isinstance(r["key"], tuple) else r["key"]
        prefix = str(key).rsplit("-", 1)[0]
        for s in r["startstops"]:
            seconds = s["stop"] - s["start"]
            per_kind[f"{prefix} ({s['action']})"][0] += 1
            per_kind[f"{prefix} ({s['action']})"][1] += seconds
            if s["action"] == "compute":
                per_worker[r["worker"]] += seconds
    print("\ntask kind                                          tasks  seconds")
    for kind, (n, seconds) in sorted(per_kind.items(), key=lambda kv: -kv[1][1])[:15]:
        print(f"  {kind:<50}{n:5d}  {seconds:7.2f}")
    for worker, seconds in sorted(per_worker.items()):
        print(f"  worker {worker}: {seconds:.2f} s computing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("image", help="an 8-bit RGB image kmdist can read")
    parser.add_argument("--workers", type=int, default=2)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--processes", dest="processes", action="store_true", default=None)
    kind.add_argument("--threads", dest="processes", action="store_false")
    args = parser.parse_args()
    last = [T0]
    from kmdist.pipeline import Plan, Run

    out = Path(tempfile.mkdtemp()) / "phases.zarr"
    values = {"k": 16, "n_workers": args.workers, "processes": args.processes}
    # As `kmdist segment` does: a cluster of the same kind starts while the pipeline is
    # imported.
    with Plan(Run.from_values(args.image, out, values)).cluster() as soon:
        from distributed import get_task_stream

        from kmdist import open_images
        from kmdist.pipeline import SegmentOptions, hold_if_small, label_and_write, palette_for

        _mark("imports", last)
        soon()
        _mark("cluster ready", last)
        (ref,) = open_images(args.image)
        opts = SegmentOptions(n_colors=16)
        try:
            with get_task_stream() as stream:
                image = hold_if_small(ref.open(chunks=opts.chunks, max_pixels=opts.max_pixels))
                palette, table = palette_for(image, opts)
                _mark("histogram, palette and lookup table (on the workers)", last)
                label_and_write(ref, image, out, palette, opts, lut=table)
                _mark("labels and recoloured image written, every level", last)
        finally:
            shutil.rmtree(out.parent, ignore_errors=True)
    _mark("cluster closed", last)
    _summary(stream.data)


if __name__ == "__main__":
    main()
