"""Target 1: the palette of a sample photo, kmdist exact beside every peer, in one process.

Every method learns k colours from every pixel of the photo; all are scored by
`common.inertia` (each pixel to its nearest colour, float64). Peers: scikit-learn
MiniBatchKMeans (defaults) and KMeans (n_init=1 and 10), dask-ml KMeans, OpenCV
``cv2.kmeans`` with the seed notebook's criteria (EPS+MAX_ITER, 100, 0.85; 10 attempts;
random centres), Pillow's median-cut and fast-octree quantisers, and scikit-learn's
colour-quantisation recipe as its docs give it (KMeans on a sample, here 1% of the
pixels, float64) and as a user writes it for speed (float32).

Usage: ``python bench/palette.py [--quick] [--only NAME ...]`` (quick: china.jpg, k=16,
one repeat; ``--only`` keeps the methods whose name contains one of the NAMEs).
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


def _kmdist(k: int) -> Callable[[np.ndarray], np.ndarray]:
    def fit(img: np.ndarray) -> np.ndarray:
        return kmdist.learn_palette(img, k).colors

    return fit


def methods(k: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Every method, kmdist first; each returns the palette's colours."""
    return {
        "kmdist exact": _kmdist(k),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="methods whose name has NAME")
    args = parser.parse_args()
    name = "palette-quick" if args.quick else "palette"
    save(name + ("-only" if args.only else ""), run(args.quick, args.only))


if __name__ == "__main__":
    main()
