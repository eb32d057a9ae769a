"""Target 1: the palette of a sample photo, kmdist exact beside every peer, in one process.

Every method learns k colours from every pixel of the photo; all are scored by
`common.inertia` (each pixel to its nearest colour, float64). Peers: scikit-learn
MiniBatchKMeans (defaults) and KMeans (n_init=1 and 10), dask-ml KMeans, OpenCV
``cv2.kmeans`` with the seed notebook's criteria (EPS+MAX_ITER, 100, 0.85; 10 attempts;
random centres), Pillow's median-cut and fast-octree quantisers, and scikit-learn's
colour-quantisation recipe as its docs give it (KMeans on a sample, here 1% of the
pixels, float64) and as a user writes it for speed (float32).

With ``--crops`` it measures the exact palette's seedings and stopping rules instead, on
random 256 x 256 crops of the same photos and of scikit-image's (as bench/archive.py
makes its thumbnails, once plain and once flipped with +-2 noise as that archive is):
`palette_from_histogram` timed on each crop's histogram (the histogram excluded, best of
3 per crop, the median over crops), inertia as a ratio to today's default on each crop.

Usage: ``python bench/palette.py [--quick] [--only NAME ...] [--crops [--n 50]]``
(quick: china.jpg, k=16, one repeat; ``--only`` keeps the methods whose name contains
one of the NAMEs).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from common import Row, inertia, machine, median_time, save

import kmdist


def _sklearn(cls: str, k: int, **kw: Any) -> Callable[[np.ndarray], np.ndarray]:
    def fit(img: np.ndarray) -> np.ndarray:
        from sklearn import cluster

        X = img.reshape(-1, 3).astype(np.float64)
        return getattr(cluster, cls)(k, random_state=0, **kw).fit(X).cluster_centers_

    return fit


def _dask_ml(k: int) -> Callable[[np.ndarray], np.ndarray]:
    def fit(img: np.ndarray) -> np.ndarray:
        import dask
        import dask.array as da
        from dask_ml.cluster import KMeans

        X = da.from_array(img.reshape(-1, 3).astype(np.float64), chunks=(1 << 16, 3))
        with dask.config.set(scheduler="threads"):
            return np.asarray(KMeans(n_clusters=k, random_state=0).fit(X).cluster_centers_)

    return fit


def _opencv(k: int) -> Callable[[np.ndarray], np.ndarray]:
    def fit(img: np.ndarray) -> np.ndarray:
        import cv2

        X = img.reshape(-1, 3).astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 0.85)
        cv2.setRNGSeed(0)
        _, _, centers = cv2.kmeans(X, k, None, criteria, 10, cv2.KMEANS_RANDOM_CENTERS)
        return np.asarray(centers, dtype=np.float64)

    return fit


def _pillow(k: int, method: str) -> Callable[[np.ndarray], np.ndarray]:
    def fit(img: np.ndarray) -> np.ndarray:
        from PIL import Image

        quantized = Image.fromarray(img).quantize(k, method=getattr(Image.Quantize, method))
        used = np.unique(np.asarray(quantized))
        palette = np.asarray(quantized.getpalette(), dtype=np.float64).reshape(-1, 3)
        return palette[used]

    return fit


def _sample_recipe(k: int, dtype: type[np.floating[Any]]) -> Callable[[np.ndarray], np.ndarray]:
    def fit(img: np.ndarray) -> np.ndarray:
        from sklearn.cluster import KMeans

        X = img.reshape(-1, 3).astype(dtype)
        rng = np.random.default_rng(0)
        sample = X[rng.choice(len(X), max(k, len(X) // 100), replace=False)]
        return KMeans(k, random_state=0).fit(sample).cluster_centers_.astype(np.float64)

    return fit


def _kmdist(k: int, **kw: Any) -> Callable[[np.ndarray], np.ndarray]:
    def fit(img: np.ndarray) -> np.ndarray:
        return kmdist.learn_palette(img, k, **kw).colors

    return fit


# The exact palette's defaults until issue 28, reproduced by these arguments.
OLD_DEFAULT = {"init": "k-means++", "n_init": 3, "tol": 0.0}


def methods(k: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Every method, kmdist first; each returns the palette's colours."""
    return {
        "kmdist exact": _kmdist(k),
        "kmdist exact, old default (k-means++ x3, tol 0)": _kmdist(k, **OLD_DEFAULT),
        "sklearn MiniBatchKMeans": _sklearn("MiniBatchKMeans", k),
        "sklearn KMeans(n_init=1)": _sklearn("KMeans", k, n_init=1),
        "sklearn KMeans(n_init=10)": _sklearn("KMeans", k, n_init=10),
        "dask-ml KMeans": _dask_ml(k),
        "OpenCV kmeans (seed criteria)": _opencv(k),
        "Pillow median cut": _pillow(k, "MEDIANCUT"),
        "Pillow fast octree": _pillow(k, "FASTOCTREE"),
        "sklearn recipe, KMeans on 1%, float64": _sample_recipe(k, np.float64),
        "sklearn recipe, KMeans on 1%, float32": _sample_recipe(k, np.float32),
    }


def run(quick: bool, only: list[str] | None = None) -> dict[str, Any]:
    """Time every method on every case; return the payload saved as palette.json."""
    from sklearn.datasets import load_sample_image

    repeats = 1 if quick else 5
    cases = (
        [("china.jpg", 16)]
        if quick
        else [(name, k) for name in ("china.jpg", "flower.jpg") for k in (3, 10, 16, 64)]
    )
    rows: list[Row] = []
    for name, k in cases:
        img = load_sample_image(name)
        kmdist.learn_palette(img, k)  # compiles kmdist's kernels once (cached on disk)
        for label, fit in methods(k).items():
            if only and not any(name in label for name in only):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence chatter from the peers
                first, _, centers = median_time(lambda fit=fit, img=img: fit(img), 1)
                # Slow peers (over 2 s a fit) get 3 runs in all instead of `repeats`.
                more = (min(repeats, 3) if first > 2 else repeats) - 1
                runs = [first]
                if more > 0:
                    _, rest, centers = median_time(lambda fit=fit, img=img: fit(img), more)
                    runs += rest
                seconds = float(np.median(runs))
            row = Row(f"{name} k={k}", label, seconds, inertia(img, centers), runs=runs)
            rows.append(row)
            print(f"{row.case:<16}{label:<32}{seconds:>8.3f} s{row.inertia:>14.5g}", flush=True)
    return {"machine": machine(), "repeats": repeats, "rows": rows}


# Seedings and stopping rules of the exact palette compared on crops (keyword arguments
# of `palette_from_histogram`; {} is its default).
CROP_METHODS: dict[str, dict[str, Any]] = {
    "old default: k-means++ x3, tol 0": OLD_DEFAULT,
    "default: Wu + 2 k-means++, tol 1e-4": {},
    "Wu + 4 k-means++, tol 1e-4": {"init": "wu", "n_init": 5},
    "Wu + 2 k-means++, tol 0": {"init": "wu", "n_init": 3, "tol": 0.0},
    "Wu alone, tol 1e-4": {"init": "wu", "n_init": 1},
    "Wu alone, tol 1e-3": {"init": "wu", "n_init": 1, "tol": 1e-3},
    "k-means++ x3, tol 1e-4": {"init": "k-means++", "n_init": 3},
    "k-means++ x1, tol 1e-4": {"init": "k-means++", "n_init": 1},
}


def crops(n: int, *, noisy: bool, side: int = 256) -> list[np.ndarray]:
    """`n` random crops of the sample photos; `noisy`: flipped half the time, +-2 noise."""
    from archive import _photos

    rng = np.random.default_rng(1 if noisy else 0)
    photos = _photos()
    out = []
    for i in range(n):
        src = photos[i % len(photos)]
        y = rng.integers(0, src.shape[0] - side + 1)
        x = rng.integers(0, src.shape[1] - side + 1)
        tile = src[y : y + side, x : x + side, :3]
        if noisy:
            tile = tile.astype(np.int16)
            if rng.random() < 0.5:
                tile = tile[:, ::-1]
            tile = tile + rng.integers(-2, 3, size=tile.shape, dtype=np.int16)
            tile = np.clip(tile, 0, 255)
        out.append(np.ascontiguousarray(tile, dtype=np.uint8))
    return out


def run_crops(n: int) -> dict[str, Any]:
    """Time and score every entry of `CROP_METHODS` on `n` crops, k=16 and k=8."""
    from kmdist.palette import chunk_histogram, palette_from_histogram

    rows: list[Row] = []
    for noisy in (False, True):
        images = crops(n, noisy=noisy)
        hists = [chunk_histogram(img) for img in images]
        hist_s = [median_time(lambda img=img: chunk_histogram(img), 3)[0] for img in images]
        colours = int(np.median([h.n_colors for h in hists]))
        label = "archive-style crops" if noisy else "crops"
        print(
            f"\n{n} {label}, median {colours} colours, histogram "
            f"{1e3 * np.median(hist_s):.2f} ms\n| k | palette | median ms | p90 ms "
            "| inertia / old default: mean | max | min | crops above 1.003x |",
            flush=True,
        )
        for k in (16, 8):
            palette_from_histogram(hists[0], k)  # compiles the kernels (cached on disk)
            base: np.ndarray | None = None
            for method, kw in CROP_METHODS.items():
                seconds, inertias = [], []
                for h in hists:
                    fit = lambda h=h, k=k, kw=kw: palette_from_histogram(h, k, **kw)  # noqa: E731
                    _, times, pal = median_time(fit, 3)
                    seconds.append(min(times))
                    inertias.append(pal.inertia)
                ratio = np.asarray(inertias) / (base if base is not None else inertias)
                if base is None:
                    base = np.asarray(inertias)
                row = Row(
                    f"{n} {label} k={k}",
                    method,
                    float(np.median(seconds)),
                    float(np.mean(inertias)),
                    note=(
                        f"p90 {1e3 * np.percentile(seconds, 90):.2f} ms; inertia / old default:"
                        f" mean {ratio.mean():.4f}, max {ratio.max():.4f},"
                        f" min {ratio.min():.4f}, above 1.003x on {(ratio > 1.003).sum()}"
                    ),
                    runs=seconds,
                )
                rows.append(row)
                print(
                    f"| {k} | {method} | {1e3 * row.seconds:.2f} | "
                    f"{1e3 * np.percentile(seconds, 90):.2f} | {ratio.mean():.4f} | "
                    f"{ratio.max():.4f} | {ratio.min():.4f} | {(ratio > 1.003).sum()} |",
                    flush=True,
                )
    return {"machine": machine(), "crops": n, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="methods whose name has NAME")
    parser.add_argument("--crops", action="store_true", help="the exact palette on crops")
    parser.add_argument("--n", type=int, default=50, help="crops (with --crops)")
    args = parser.parse_args()
    if args.crops:
        save("palette-crops", run_crops(args.n))
        return
    name = "palette-quick" if args.quick else "palette"
    save(name + ("-only" if args.only else ""), run(args.quick, args.only))


if __name__ == "__main__":
    main()
