"""Run the benchmarks of the performance issue and write their report.

``make bench`` runs the full suite (by hand: about 30 minutes on 2 cores) and rewrites
the measured part of docs/benchmarks.md (between its ``results`` markers) and
docs/images/benchmarks.png. ``make bench BENCH_ARGS=--quick`` is the smoke version
(small sizes, one repeat, a few minutes): it writes bench/results/*-quick.json and
bench/results/report-quick.md and leaves the docs alone.

Each benchmark runs as its own process, and within it every peer runs on the same data
in the same run: see bench/palette.py, bench/end_to_end.py, bench/archive.py and
bench/gigapixel.py for what each measures. bench/estimators.py (KMeans and
MiniBatchKMeans beside scikit-learn's) prints its own table; docs/benchmarks.md quotes it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import report
from common import RESULTS, ROOT, python

DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "images" / "benchmarks.png"
START, END = "<!-- results:start -->", "<!-- results:end -->"
BENCHES = ("palette", "end_to_end", "archive", "memory", "scaling", "estimators", "store_growth")


def _command(name: str, quick: bool, work: Path, cap: float) -> list[str] | None:
    here = Path(__file__).parent
    if name in ("memory", "scaling"):
        if quick:
            return None  # gigapixel inputs take minutes to build: full mode only
        cmd = [python(), str(here / "gigapixel.py"), "--work", str(work)]
        if name == "scaling":
            # Target 4 at 268 MP: 1 worker here, 2 workers in the memory run.
            cmd += ["--side", "16384", "--workers", "1", "--save", "scaling"]
        return cmd
    cmd = [python(), str(here / f"{name}.py")]
    if name == "store_growth":
        cmd += ["--work", str(work)]
    elif name not in ("palette", "estimators"):
        cmd += ["--work", str(work), "--cap", str(cap)]
    return [*cmd, "--quick"] if quick else cmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run; docs untouched")
    parser.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/kmdist-bench"))
    parser.add_argument("--cap", type=float, default=900.0, help="seconds for capped peers")
    parser.add_argument("--report-only", action="store_true", help="render saved results")
    args = parser.parse_args()
    if not args.report_only:
        for name in args.only:
            cmd = _command(name, args.quick, args.work, args.cap)
            if cmd is None:
                continue
            print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)
    suffix = "-quick" if args.quick else ""
    results = report.load(suffix)
    text = report.render(results)
    print("\n" + text)
    if args.quick:
        (RESULTS / "report-quick.md").write_text(text)
        return
    doc = DOC.read_text()
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    block = f"{START}\n\n{report.machine_line(results)}\n\n{text}\n{END}"
    DOC.write_text(head + block + tail)
    report.plot(results, PLOT)
    print(f"wrote {DOC.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
