"""kmdist's KMeans and MiniBatchKMeans beside scikit-learn's, on the same NumPy data.

Cases: ``make_blobs(100_000, centers=10, n_features=10)`` with k = 10, and the digits
(1797 x 64) with k = 10. Each estimator is fitted with its defaults and
``random_state=0``; runs are interleaved (every method once, then again, `repeats`
times) so that load from other processes falls on all of them alike, and the median is
reported with the inertia of the fit (scored by `common.inertia`). The first fit of each
method is a warm-up (numba compiles kmdist's kernels on first use) and is not timed.

Usage: ``python bench/estimators.py [--quick] [--repeats N] [--save NAME]``
(quick: 3 repeats). Results go to bench/results/estimators[-quick].json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
from common import RESULTS, Row, inertia, machine, save

import kmdist


def cases(quick: bool) -> dict[str, tuple[np.ndarray, int]]:
    """The data sets by name, each with its number of clusters."""
    from sklearn.datasets import load_digits, make_blobs

    X, _ = make_blobs(n_samples=100_000, centers=10, n_features=10, random_state=0)
    return {"blobs 100000x10 k=10": (X, 10), "digits 1797x64 k=10": (load_digits().data, 10)}


def methods() -> dict[str, Callable[[np.ndarray, int], Any]]:
    """Each method fits an estimator with its defaults and returns it."""
    from sklearn import cluster

    return {
        "kmdist KMeans": lambda X, k: kmdist.KMeans(k, random_state=0).fit(X),
        "sklearn KMeans": lambda X, k: cluster.KMeans(k, random_state=0).fit(X),
        "kmdist MiniBatchKMeans": lambda X, k: kmdist.MiniBatchKMeans(k, random_state=0).fit(X),
        "sklearn MiniBatchKMeans": lambda X, k: cluster.MiniBatchKMeans(k, random_state=0).fit(X),
    }


def run(quick: bool, repeats: int | None = None) -> dict[str, Any]:
    """Time every method on every case, interleaved; return the saved payload."""
    repeats = repeats or (3 if quick else 9)
    rows: list[Row] = []
    for case, (X, k) in cases(quick).items():
        fits = methods()
        times: dict[str, list[float]] = {name: [] for name in fits}
        last: dict[str, Any] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for fit in fits.values():
                fit(X, k)  # warm-up: compilation, caches
            for _ in range(repeats):
                for name, fit in fits.items():
                    t0 = time.perf_counter()
                    last[name] = fit(X, k)
                    times[name].append(time.perf_counter() - t0)
        for name in fits:
            est = last[name]
            seconds = float(np.median(times[name]))
            score = inertia(X, est.cluster_centers_)
            note = f"n_iter_={est.n_iter_}"
            rows.append(Row(case, name, seconds, score, note=note, runs=times[name]))
            print(f"{case:<24}{name:<26}{seconds * 1e3:>9.1f} ms{score:>14.6g}  {note}", flush=True)
    return {
        "machine": machine(),
        "repeats": repeats,
        "load_average": os.getloadavg(),
        "kmdist": kmdist.__file__,
        "rows": rows,
    }


def table(payload: dict[str, Any]) -> str:
    """Markdown table of one run: time, ratio to scikit-learn's same estimator, inertia."""
    rows = [asdict(r) if isinstance(r, Row) else r for r in payload["rows"]]
    by = {(r["case"], r["method"]): r for r in rows}
    lines = [
        "| case | estimator | kmdist ms | scikit-learn ms | ratio | kmdist inertia | "
        "scikit-learn inertia |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for case in dict.fromkeys(r["case"] for r in rows):
        for est in ("KMeans", "MiniBatchKMeans"):
            ours, theirs = by[(case, f"kmdist {est}")], by[(case, f"sklearn {est}")]
            lines.append(
                f"| {case} | {est} | {ours['seconds'] * 1e3:.1f} | {theirs['seconds'] * 1e3:.1f}"
                f" | {ours['seconds'] / theirs['seconds']:.2f}x | {ours['inertia']:.6g} | "
                f"{theirs['inertia']:.6g} |"
            )
    return "\n".join(lines)


_ONE_FIT = """
import sys, time, warnings
import numpy as np
from sklearn.datasets import make_blobs
import kmdist
X, _ = make_blobs(n_samples=100_000, centers=10, n_features=10, random_state=0)
est = getattr(kmdist, sys.argv[1])
warnings.simplefilter("ignore")
est(10, random_state=0).fit(X)
best = []
for _ in range(int(sys.argv[2])):
    t0 = time.process_time()
    est(10, random_state=0).fit(X)
    best.append(time.process_time() - t0)
print(min(best))
"""


def overhead(base: str, rounds: int, fits: int) -> dict[str, Any]:
    """CPU time of kmdist's estimators on blobs(100_000): this checkout against `base`.

    `base` is the directory holding another kmdist package (e.g. a copy of the tree
    before a change). Processes alternate between the two, `rounds` times; each reports
    the least CPU time (``time.process_time``) of `fits` fits in one thread (BLAS and
    numba limited to one), the measure least disturbed by other load on the machine.
    """
    import subprocess
    import sys

    env1 = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMBA_NUM_THREADS": "1",
    }
    out: dict[str, Any] = {}
    for est in ("KMeans", "MiniBatchKMeans"):
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(rounds):
            for label, path in (("before", base), ("after", None)):
                env = dict(env1)
                if path:
                    env["PYTHONPATH"] = path
                cmd = [sys.executable, "-c", _ONE_FIT, est, str(fits)]
                res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                times[label].append(float(res.stdout.split()[-1]))
        b, a = min(times["before"]), min(times["after"])
        out[est] = {"before_s": b, "after_s": a, "ratio": a / b, "runs": times}
        print(f"{est:<16} before {b * 1e3:7.1f} ms  after {a * 1e3:7.1f} ms  ratio {a / b:.3f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--save", default=None, help="results name (default: estimators)")
    parser.add_argument("--table", default=None, help="print the table of saved results NAME")
    parser.add_argument(
        "--overhead", metavar="BASE", default=None, help="CPU time against the kmdist in BASE"
    )
    args = parser.parse_args()
    if args.overhead:
        result = overhead(args.overhead, rounds=args.repeats or 6, fits=7)
        save(args.save or "estimators-overhead", {"machine": machine(), "rows": [], **result})
        return
    if args.table:
        print(table(json.loads((RESULTS / f"{args.table}.json").read_text())))
        return
    payload = run(args.quick, args.repeats)
    name = args.save or ("estimators-quick" if args.quick else "estimators")
    save(name, payload)
    print("\n" + table(payload))


if __name__ == "__main__":
    main()
