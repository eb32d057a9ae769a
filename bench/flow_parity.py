"""The flow against the CLI on one large image, with Prefect's own floor measured beside.

Issue 14 asks that a 64 MP image through the flow cost at most 1.15x ``kmdist segment``.
Both run the same engine (`kmdist.pipeline.Plan`); what the flow adds is Prefect's: its
imports, the flow and task runs it creates through the API, the flow run's heartbeat
and a slower interpreter exit. This script runs, interleaved (each its own process, into
an empty output, against a ``prefect server`` started before, whose start-up is
reported apart):

- ``kmdist segment IMAGE -k 16 --workers 2``;
- ``python flows/segment.py IMAGE -k 16 --workers 2`` (the `segment_archive` flow);
- Prefect's floor: a flow with one task that returns at once, in a script that imports
  Prefect as the flow's does. It is the least any Prefect flow costs on this machine.

It reports the medians, flow / CLI, and (flow - floor) / CLI: the flow's cost net of
what any flow pays.

Usage: ``python bench/flow_parity.py [--repeats 5] [--side 8192]``.
"""

from __future__ import annotations

import argparse
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

FLOOR = """
from prefect import flow, task

@task
def nothing():
    return None

@flow
def floor():
    return nothing.submit().result()

if __name__ == "__main__":
    floor()
"""


def run(work: Path, side: int, repeats: int) -> dict[str, Any]:
    """Measure the three processes `repeats` times each, interleaved."""
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"photo-{side}.zarr"
    make_image(src, side)
    out = work / "parity-out.zarr"
    floor = work / "prefect_floor.py"
    floor.write_text(FLOOR)
    args = [str(src), "-k", "16", "-o", str(out), "--workers", "2"]
    doors = {
        "kmdist segment": [python(), "-m", "kmdist.cli", "segment", *args],
        "flow segment_archive": [python(), str(ROOT / "flows/segment.py"), *args],
        "Prefect's floor (a no-op flow)": [python(), str(floor)],
    }
    runs: dict[str, list[Measured]] = {door: [] for door in doors}
    with prefect_server(work) as startup:
        print(f"prefect server start-up: {startup:.1f} s", flush=True)
        for i in range(repeats):
            for door, cmd in doors.items():
                shutil.rmtree(out, ignore_errors=True)
                m = run_measured(cmd)
                check_ok(m, door)
                runs[door].append(m)
                print(f"#{i + 1} {door}: {m.seconds:.2f} s", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    wall = {door: statistics.median(m.seconds for m in ms) for door, ms in runs.items()}
    cli, flow, base = wall.values()
    mp = side * side / 1e6
    rows = [
        Row(
            f"{mp:.0f} MP image, k=16",
            door,
            wall[door],
            None,
            max(m.peak_rss_gb for m in ms),
            "",
            [m.seconds for m in ms],
        )
        for door, ms in runs.items()
    ]
    rows[1].note = f"flow / CLI {flow / cli:.2f}x; net of the floor {(flow - base) / cli:.2f}x"
    return {"machine": machine(), "repeats": repeats, "server_startup_s": startup, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kmdist-bench"))
    parser.add_argument("--side", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = run(args.work, args.side, args.repeats)
    for row in result["rows"]:
        runs = ", ".join(f"{s:.1f}" for s in row.runs)
        print(f"{row.case:<20} {row.method:<32} {row.seconds:6.2f} s ({runs})  {row.note}")
    save("flow-parity", result)


if __name__ == "__main__":
    main()
