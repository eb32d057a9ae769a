"""Threads or processes: the LocalCluster's workers as threads of one process or as processes.

The one-large-image issue asks which is faster for the CLI and the flows, on the 64 MP
image, 1,000 thumbnails and the 1 GP image. Each case runs the same command with
``--processes`` and with ``--threads``, interleaved (A, B, A, B, ...), each run its own
process into an empty output, and reports per kind the median wall time, the CPU
seconds of the whole process tree, the cores kept busy and the peak memory (summed
over the tree), and the ratio threads / processes.

The flow runs against a ``prefect server`` started before (its start-up is not a
property of the cluster's kind).

Usage: ``python bench/cluster_kind.py [--repeats 3] [--gigapixel 32768] [--no-flow]``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    Measured,
    Row,
    check_ok,
    machine,
    prefect_server,
    python,
    run_measured,
    save,
)
from gigapixel import make_image
from store_growth import make_thumbnails

KINDS = ("--processes", "--threads")


def _doors(src: Path, out: Path, k: int, flow: bool) -> dict[str, list[str]]:
    args = [str(src), "-k", str(k), "-o", str(out), "--workers", "2"]
    doors = {"kmdist segment": [python(), "-m", "kmdist.cli", "segment", *args]}
    if flow:
        doors["flow segment_archive"] = [python(), str(ROOT / "flows/segment.py"), *args]
    return doors


def _case(
    name: str, src: Path, work: Path, k: int, repeats: int, flow: bool
) -> list[tuple[str, str, list[Measured]]]:
    """Run every front door with each kind `repeats` times, interleaved."""
    out = work / "kind-out.zarr"
    runs: dict[tuple[str, str], list[Measured]] = {}
    for door, cmd in _doors(src, out, k, flow).items():
        for i in range(repeats):
            for kind in KINDS:
                shutil.rmtree(out, ignore_errors=True)
                m = run_measured([*cmd, kind])
                check_ok(m, f"{door} {kind} on {name}")
                runs.setdefault((door, kind), []).append(m)
                print(
                    f"{name}, {door} {kind} #{i + 1}: {m.seconds:.1f} s, "
                    f"{m.cpu_seconds:.1f} CPU-s, {m.peak_rss_gb:.2f} GB",
                    flush=True,
                )
    shutil.rmtree(out, ignore_errors=True)
    return [(door, kind, ms) for (door, kind), ms in runs.items()]


def _rows(name: str, measured: list[tuple[str, str, list[Measured]]]) -> list[Row]:
    rows, medians = [], {}
    for door, kind, ms in measured:
        wall = statistics.median(m.seconds for m in ms)
        cpu = statistics.median(m.cpu_seconds for m in ms)
        peak = max(m.peak_rss_gb for m in ms)
        medians[door, kind] = wall
        note = f"{cpu:.1f} CPU-s, {cpu / wall:.2f} cores"
        if kind == "--threads":
            note += f"; threads / processes {wall / medians[door, '--processes']:.2f}x"
        row = Row(name, f"{door} {kind}", wall, None, peak, note, [m.seconds for m in ms])
        row.cores = cpu / wall
        rows.append(row)
    return rows


def run(work: Path, repeats: int, gigapixel: int | None, flow: bool) -> dict[str, Any]:
    """Measure both kinds on each case; the 1 GP case runs once a kind, CLI only."""
    work.mkdir(parents=True, exist_ok=True)
    photo = work / "photo-8192.zarr"
    make_image(photo, 8192)
    thumbs = work / "thumbs-1000"
    make_thumbnails(thumbs, 1000)
    cases = [
        ("64 MP image, k=16", photo, 16, repeats, flow),
        ("1,000 64x64 PNGs, k=8", thumbs, 8, repeats, flow),
    ]
    if gigapixel:
        big = work / f"photo-{gigapixel}.zarr"
        make_image(big, gigapixel)
        mp = gigapixel * gigapixel / 1e6
        cases.append((f"{mp:,.0f} MP image, k=16", big, 16, 1, False))
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        if flow:
            startup = stack.enter_context(prefect_server(work))
            print(f"prefect server start-up: {startup:.1f} s", flush=True)
        for name, src, k, n, with_flow in cases:
            rows += _rows(name, _case(name, src, work, k, n, with_flow))
    return {"machine": machine(), "repeats": repeats, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kmdist-bench"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gigapixel", type=int, default=None, metavar="SIDE", help="e.g. 32768")
    parser.add_argument("--no-flow", dest="flow", action="store_false")
    args = parser.parse_args()
    result = run(args.work, args.repeats, args.gigapixel, args.flow)
    for row in result["rows"]:
        head = f"{row.case:<26} {row.method:<40} {row.seconds:7.1f} s"
        print(f"{head} {row.peak_rss_gb:5.2f} GB  {row.note}")
    save("cluster-kind", result)


if __name__ == "__main__":
    main()
