"""A flow's fixed cost: one small image through the flow against ``kmdist segment``.

Issue 28 asks that a flow run on one small image cost at most 3x the CLI, and that a
new ``PREFECT_HOME`` cost at most 1.5x a used one. This script runs, interleaved, each
its own process into an empty output (a 64x64 PNG, k=4):

- ``kmdist segment IMAGE -k 4 -o OUT``;
- ``segment_image(IMAGE, OUT, k=4)`` on Prefect's default ephemeral API (no
  ``PREFECT_API_URL``): every run starts and stops its own temporary server, with a used
  ``PREFECT_HOME`` (its database made by an earlier run) and with a new one each run;
- the same call against a local ``prefect server start`` that outlives the runs
  (``PREFECT_API_URL`` set, as a user sets it in a profile), with the used
  ``PREFECT_HOME`` and with a new one each run. The server's own start-up (a new
  database) is reported apart: a user pays it once, not per run.

It reports the medians, each flow / CLI and new / used ``PREFECT_HOME`` for both APIs.

Usage: ``python bench/flow_overhead.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
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

CASE = "64x64 PNG, k=4"
CLI = "kmdist segment"
EPHEMERAL = "flow, temporary server per run"
EPHEMERAL_NEW = "flow, temporary server per run, new PREFECT_HOME"
SERVER = "flow, running local server"
SERVER_NEW = "flow, running local server, new PREFECT_HOME"


def _flow_script(image: Path, out: Path) -> str:
    return (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from flows.segment import segment_image\n"
        f"segment_image({str(image)!r}, {str(out)!r}, k=4)\n"
    )


def run(work: Path, repeats: int) -> dict[str, Any]:
    """Measure the five processes `repeats` times each, interleaved."""
    import imageio.v3 as iio
    import numpy as np

    work.mkdir(parents=True, exist_ok=True)
    image = work / "small.png"
    rng = np.random.default_rng(0)
    iio.imwrite(image, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    out = work / "overhead-out.zarr"
    used_home = work / "prefect-home-used"
    shutil.rmtree(used_home, ignore_errors=True)
    used_home.mkdir(parents=True)
    script = _flow_script(image, out)
    cli_args = ["-k", "4", "-o", str(out)]

    def flow(home: Path, api: str | None) -> list[str]:
        # `env` sets the child's settings as a user's shell would, and execs python.
        api_setting = ["-u", "PREFECT_API_URL"] if api is None else [f"PREFECT_API_URL={api}"]
        return ["env", *api_setting, f"PREFECT_HOME={home}", python(), "-c", script]

    def measure(cmd: list[str], door: str) -> Measured:
        shutil.rmtree(out, ignore_errors=True)
        m = run_measured(cmd, timeout=600)
        check_ok(m, door)
        return m

    runs: dict[str, list[Measured]] = {
        door: [] for door in (CLI, EPHEMERAL, EPHEMERAL_NEW, SERVER, SERVER_NEW)
    }
    # The used PREFECT_HOME: one untimed run makes its database.
    measure(flow(used_home, None), "warming PREFECT_HOME")
    shutil.rmtree(work / "prefect-home", ignore_errors=True)  # the server's: a new database
    with prefect_server(work) as startup:
        api = _api_url()
        print(f"local server start-up (new database): {startup:.1f} s at {api}", flush=True)
        measure(flow(used_home, api), "first run against the server")  # untimed
        for i in range(repeats):
            with (
                tempfile.TemporaryDirectory(dir=work) as new1,
                tempfile.TemporaryDirectory(dir=work) as new2,
            ):
                doors = {
                    CLI: [python(), "-m", "kmdist.cli", "segment", str(image), *cli_args],
                    EPHEMERAL: flow(used_home, None),
                    EPHEMERAL_NEW: flow(Path(new1), None),
                    SERVER: flow(used_home, api),
                    SERVER_NEW: flow(Path(new2), api),
                }
                for door, cmd in doors.items():
                    m = measure(cmd, door)
                    runs[door].append(m)
                    print(f"#{i + 1} {door}: {m.seconds:.2f} s", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    wall = {door: statistics.median(m.seconds for m in ms) for door, ms in runs.items()}
    notes = {
        CLI: "",
        EPHEMERAL: f"flow / CLI {wall[EPHEMERAL] / wall[CLI]:.2f}x",
        EPHEMERAL_NEW: f"flow / CLI {wall[EPHEMERAL_NEW] / wall[CLI]:.2f}x; "
        f"new / used PREFECT_HOME {wall[EPHEMERAL_NEW] / wall[EPHEMERAL]:.2f}x",
        SERVER: f"flow / CLI {wall[SERVER] / wall[CLI]:.2f}x",
        SERVER_NEW: f"flow / CLI {wall[SERVER_NEW] / wall[CLI]:.2f}x; "
        f"new / used PREFECT_HOME {wall[SERVER_NEW] / wall[SERVER]:.2f}x",
    }
    rows = [
        Row(
            CASE,
            door,
            wall[door],
            None,
            max(m.peak_rss_gb for m in ms),
            notes[door],
            [m.seconds for m in ms],
            statistics.median(m.cores for m in ms),
        )
        for door, ms in runs.items()
    ]
    return {
        "machine": machine(),
        "repeats": repeats,
        "server_startup_s": startup,
        "ratios": {
            "ephemeral_over_cli": wall[EPHEMERAL] / wall[CLI],
            "ephemeral_new_home_over_used": wall[EPHEMERAL_NEW] / wall[EPHEMERAL],
            "server_over_cli": wall[SERVER] / wall[CLI],
            "server_new_home_over_used": wall[SERVER_NEW] / wall[SERVER],
        },
        "rows": rows,
    }


def _api_url() -> str:
    import os

    return os.environ["PREFECT_API_URL"]  # set by prefect_server for its children


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kmdist-bench/flow-overhead"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = run(args.work, args.repeats)
    for row in result["rows"]:
        runs = ", ".join(f"{s:.1f}" for s in row.runs)
        print(f"{row.method:<48} {row.seconds:6.2f} s ({runs})  {row.note}")
    print(f"saved {save('flow-overhead', result)}", file=sys.stderr)


if __name__ == "__main__":
    main()
