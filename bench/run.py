"""Benchmarks: kmdist beside scikit-learn on the same data, in the same process.

Each row pairs a kmdist estimator with its scikit-learn peer and reports the time ratio
(kmdist / peer, lower is better) and both inertias over all samples; absolute times are
context only. ``--quick`` runs one repeat (CI smoke); the default reports the median of
five. Run with ``make bench`` (``make bench BENCH_ARGS=--quick`` for the short form).
The image benchmarks of the performance issue will join this file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn import cluster as skcluster
from sklearn.datasets import load_digits, load_sample_image

import kmdist


def timed(
    make: Callable[..., Any], X: np.ndarray, repeats: int, **params: Any
) -> tuple[float, Any]:
    """Median wall time of ``make(**params).fit(X)`` and the last fitted estimator."""
    times, est = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        est = make(**params).fit(X)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), est


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repeat (CI smoke)")
    repeats = 1 if parser.parse_args().quick else 5
    china = load_sample_image("china.jpg").reshape(-1, 3).astype(np.float64)
    datasets = [("digits", load_digits().data, 10), ("china.jpg pixels", china, 16)]
    pairs = [
        ("KMeans", kmdist.KMeans, skcluster.KMeans, {"n_init": 1}),
        ("MiniBatchKMeans", kmdist.MiniBatchKMeans, skcluster.MiniBatchKMeans, {}),
    ]
    print(
        f"{'data':<18}{'k':>3}  {'estimator':<16}{'kmdist s':>9}{'peer s':>9}{'ratio':>7}"
        f"{'kmdist inertia':>16}{'peer inertia':>14}"
    )
    for name, X, k in datasets:
        for label, ours, theirs, extra in pairs:
            params = {"n_clusters": k, "random_state": 0, **extra}
            t_ours, a = timed(ours, X, repeats, **params)
            t_peer, b = timed(theirs, X, repeats, **params)
            print(
                f"{name:<18}{k:>3}  {label:<16}{t_ours:>9.3f}{t_peer:>9.3f}"
                f"{t_ours / t_peer:>7.2f}{a.inertia_:>16.6g}{b.inertia_:>14.6g}"
            )


def palettes(repeats: int) -> None:
    """Palette of a sample photo: kmdist exact beside scikit-learn on every pixel."""
    print(f"\n{'image':<12}{'k':>3}  {'method':<28}{'time s':>8}{'ratio':>7}{'inertia':>14}")
    for name in ("china.jpg", "flower.jpg"):
        img = load_sample_image(name)
        X = img.reshape(-1, 3).astype(np.float64)
        for k in (3, 10, 16, 64):
            t_ours, pal = _timed_call(lambda img=img, k=k: kmdist.learn_palette(img, k), repeats)
            peers = {
                "sklearn MiniBatchKMeans": skcluster.MiniBatchKMeans(k, random_state=0),
                "sklearn KMeans(n_init=1)": skcluster.KMeans(k, n_init=1, random_state=0),
                "sklearn KMeans(n_init=10)": skcluster.KMeans(k, n_init=10, random_state=0),
            }
            print(
                f"{name:<12}{k:>3}  {'kmdist exact':<28}{t_ours:>8.3f}{'':>7}{pal.inertia:>14.5g}"
            )
            for label, est in peers.items():
                t_peer, fitted = _timed_call(lambda est=est, X=X: est.fit(X), repeats)
                print(
                    f"{'':<12}{'':>3}  {label:<28}{t_peer:>8.3f}{t_ours / t_peer:>7.2f}"
                    f"{_inertia(X, fitted.cluster_centers_):>14.5g}"
                )


def _timed_call(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _inertia(X: np.ndarray, centers: np.ndarray) -> float:
    """Inertia over every pixel, computed the same way for every method."""
    return float(kmdist.KMeans(len(centers), init=centers, max_iter=1).fit(X).score(X) * -1)


if __name__ == "__main__":
    main()
    palettes(1 if "--quick" in sys.argv else 3)
