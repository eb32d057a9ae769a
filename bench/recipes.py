"""The peers' recipes as standalone programs, so each runs as its own measured process.

Subcommands (each reads an 8-bit RGB image or folder and writes its outputs):

- ``sklearn-loop FOLDER OUT``: the seed's per-image loop over PNGs: MiniBatchKMeans(16)
  fit, predict, recoloured PNG written.
- ``sklearn-sample ZARR OUT``: scikit-learn's colour-quantisation recipe scaled up:
  KMeans(16) fitted on a 1% random sample of pixels, every pixel predicted, labels and
  recoloured image written to Zarr (1024 x 1024 chunks).
- ``sklearn-sample-f32 ZARR OUT``: the same recipe as a competent user writes it for
  speed: pixels in float32 (scikit-learn keeps float32), so the fit and the prediction
  of every pixel run in single precision.
- ``faiss-sample ZARR OUT``: faiss ``Kmeans(3, 16)`` (a user's fast choice) trained on
  the same 1% sample in float32, every pixel assigned with its index, written the same.
- ``sklearn-minibatch ZARR OUT``: the seed's path: MiniBatchKMeans(16).fit on every
  pixel, predict, write.
- ``dask-ml ZARR OUT``: dask-ml KMeans(16) on the chunked pixels on a 2-worker
  LocalCluster, predict, write.
- ``io-floor ZARR OUT``: no k-means at all: Dask reads the input as kmdist does (once
  when kmdist holds it in the cluster's memory between its two passes, else twice) and
  writes arrays shaped, chunked and compressed like kmdist's labels and recoloured level 0.
- ``raw-floor ZARR OUT``: the I/O floor's reads and writes by zarr in one process, with
  no Dask: the image read once, whole, and level 0 written into arrays that OUT already
  holds, made with kmdist's codecs (`bench/end_to_end.py` makes them).

The Zarr recipes print one JSON line with the palette (float centres), so the benchmark
scores every method the same way.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

K = 16
CHUNK = 1024
# Where the floors write level 0's labels and recoloured image, inside their output.
LEVEL0_LABELS, LEVEL0_IMAGE = "image/segmentation/0", "image/0"


def sklearn_loop(folder: Path, out: Path) -> None:
    import imageio.v3 as iio
    from sklearn.cluster import MiniBatchKMeans

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.glob("*.png")):
        img = iio.imread(path)
        X = img.reshape(-1, 3).astype(np.float64) / 255
        km = MiniBatchKMeans(K, random_state=0).fit(X)
        labels = km.predict(X)
        recoloured = np.rint(km.cluster_centers_[labels] * 255).astype(np.uint8)
        iio.imwrite(out / path.name, recoloured.reshape(img.shape))


def _write_zarr(out: Path, labels: np.ndarray, recoloured: np.ndarray) -> None:
    import zarr

    group = zarr.open_group(str(out), mode="w")
    for name, data in (("labels", labels), ("recoloured", recoloured)):
        chunks = (CHUNK, CHUNK, *data.shape[2:])
        array = group.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype)
        array[...] = data


def _in_memory(src: Path, out: Path, fit: str) -> list[list[float]]:
    import zarr

    img = zarr.open_array(str(src), mode="r")[...]
    dtype = np.float64 if fit in ("sample", "minibatch") else np.float32
    X = img.reshape(-1, 3).astype(dtype) / dtype(255)
    rng = np.random.default_rng(0)
    sample = X[rng.choice(len(X), size=len(X) // 100, replace=False)]
    if fit == "faiss":
        import faiss

        km = faiss.Kmeans(3, K, niter=300, seed=0)
        km.train(np.ascontiguousarray(sample))
        labels = km.index.search(X, 1)[1][:, 0].astype(np.uint8).reshape(img.shape[:2])
        centers = km.centroids.astype(np.float64) * 255
    else:
        from sklearn.cluster import KMeans, MiniBatchKMeans

        if fit == "minibatch":
            est = MiniBatchKMeans(K, random_state=0).fit(X)
        else:  # sample, sample-f32
            est = KMeans(K, random_state=0).fit(sample)
        labels = est.predict(X).astype(np.uint8).reshape(img.shape[:2])
        centers = est.cluster_centers_.astype(np.float64) * 255
    del X
    recoloured = np.rint(centers[labels]).astype(np.uint8)
    _write_zarr(out, labels, recoloured)
    return centers.tolist()


def _dask_ml(src: Path, out: Path) -> list[list[float]]:
    import dask.array as da
    from dask_ml.cluster import KMeans
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster):
        img = da.from_zarr(str(src))
        X = img.reshape(-1, 3).astype(np.float64) / 255
        km = KMeans(n_clusters=K, random_state=0).fit(X)
        labels = km.predict(X).astype(np.uint8).reshape(img.shape[:2]).rechunk(CHUNK)
        centers = np.asarray(km.cluster_centers_) * 255
        recoloured = da.map_blocks(
            lambda b: np.rint(centers[b]).astype(np.uint8),
            labels,
            new_axis=2,
            chunks=(*labels.chunks, (3,)),
            dtype=np.uint8,
        )
        da.to_zarr(labels, str(out / "labels"), overwrite=True)
        da.to_zarr(recoloured, str(out / "recoloured"), overwrite=True)
    return centers.tolist()


def _touch(block: np.ndarray) -> np.ndarray:
    return np.zeros((1, 1, 1), dtype=np.uint8)


def level0_targets(out: Path, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """Make level 0's label and recoloured-image arrays in a new store `out`, as kmdist does.

    `kmdist.store.level_arrays`: the same shards, chunks and codecs, uint8 labels
    (k = `K`). Returns the two zarr arrays.
    """
    import zarr

    from kmdist import Palette
    from kmdist.store import level_arrays

    zarr.open_group(str(out), mode="w")
    palette = Palette(colors=np.zeros((K, 3)), counts=np.ones(K, dtype=np.int64), inertia=0.0)
    store = zarr.storage.LocalStore(str(out))
    yx = (int(shape[0]), int(shape[1]))
    return level_arrays(store, LEVEL0_LABELS, LEVEL0_IMAGE, yx, (CHUNK, CHUNK), palette)


def io_floor(src: Path, out: Path) -> None:
    """kmdist's reads and level-0 writes with nothing computed in between."""
    from kmdist.pipeline import Plan, Run

    # kmdist's own LocalCluster (same kind, workers and settings, started as `kmdist
    # segment` starts it, overlapping the imports), so only the compute differs.
    with Plan(Run.from_values(str(src), out, {"n_workers": 2})).cluster() as client:
        import dask.array as da

        from kmdist.pipeline import hold_if_small

        client()
        # Held in the workers' memory exactly when kmdist holds it: then read once.
        img = hold_if_small(da.from_zarr(str(src)))
        # First read: what the histogram pass reads.
        img.map_blocks(_touch, chunks=(1, 1, 1), dtype=np.uint8).compute()
        # Second read, written as kmdist writes level 0: the first channel stands in
        # for the labels (uint8 as for k <= 256) and the pixels for the recoloured image.
        labels = img[..., 0]
        label_target, image_target = level0_targets(out, labels.shape)
        targets = [label_target, image_target]
        sources = [
            labels.rechunk(label_target.shards or label_target.chunks),
            img.transpose(2, 0, 1).rechunk(image_target.shards or image_target.chunks),
        ]
        da.store(sources, targets, lock=False)


def raw_floor(src: Path, out: Path) -> None:
    """The I/O floor's reads and level-0 writes by zarr alone, in one process.

    `out` holds the level-0 arrays, made beforehand by `level0_targets` (the benchmark
    does it), so that this process imports nothing but zarr and NumPy.
    """
    import zarr

    img = zarr.open_array(str(src), mode="r")[...]
    label_target = zarr.open_array(str(out / LEVEL0_LABELS), mode="r+")
    image_target = zarr.open_array(str(out / LEVEL0_IMAGE), mode="r+")
    # The same stand-ins as `io_floor`: the first channel for the labels, the pixels
    # channel first for the recoloured image.
    label_target[...] = np.ascontiguousarray(img[..., 0])
    image_target[...] = np.ascontiguousarray(img.transpose(2, 0, 1))


_IN_MEMORY = {
    "sklearn-sample": "sample",
    "sklearn-sample-f32": "sample-f32",
    "faiss-sample": "faiss",
    "sklearn-minibatch": "minibatch",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "recipe",
        choices=[
            "sklearn-loop",
            "sklearn-sample",
            "sklearn-sample-f32",
            "faiss-sample",
            "sklearn-minibatch",
            "dask-ml",
            "io-floor",
            "raw-floor",
        ],
    )
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    t0 = time.perf_counter()
    centers = None
    if args.recipe == "sklearn-loop":
        sklearn_loop(args.src, args.out)
    elif args.recipe in _IN_MEMORY:
        centers = _in_memory(args.src, args.out, _IN_MEMORY[args.recipe])
    elif args.recipe == "dask-ml":
        centers = _dask_ml(args.src, args.out)
    elif args.recipe == "raw-floor":
        raw_floor(args.src, args.out)
    else:
        io_floor(args.src, args.out)
    print(json.dumps({"centers": centers, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
