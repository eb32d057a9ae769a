"""Passes over weighted samples held in NumPy or spread over a Dask array's blocks.

`NumpyRows` and `DaskRows` implement the `kmdist._lloyd.Rows` interface. For Dask input
each pass is one graph: a per-block kernel and a tree reduction whose result, a few
kilobytes of statistics, is all that reaches the client. Samples never do, except the
rows explicitly asked for by `take` (seeding samples and mini-batches).
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt

from ._lloyd import F64, FloatArray, block_far_points, block_stats, nearest
from ._validation import check_finite

__all__ = ["DaskRows", "NumpyRows", "assign_blocks", "make_rows"]


class NumpyRows:
    """Weighted samples in memory."""

    def __init__(self, X: FloatArray, w: F64) -> None:
        self.X = X
        self.w = w

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features."""
        return int(self.X.shape[1])

    def stats(self, centers: F64) -> F64:
        """Packed per-cluster statistics for each run (see `block_stats`)."""
        return block_stats(self.X, self.w, centers)

    def far_points(self, centers: F64, m: int) -> F64:
        """Return the `m` samples farthest from their nearest centre, for each run."""
        return block_far_points(self.X, self.w, centers, m)

    def take(self, idx: npt.NDArray[np.intp]) -> tuple[FloatArray, F64]:
        """Rows `idx` and their weights."""
        return self.X[idx], self.w[idx]

    def weighted_variance(self) -> float:
        """Mean over features of the weighted variance."""
        total = self.w.sum()
        mean = (self.w @ self.X) / total
        return float((self.w @ (self.X - mean) ** 2).mean() / total)

    def labels_inertia(self, centers: F64) -> tuple[npt.NDArray[np.int32], float]:
        """Nearest-centre labels and the weighted inertia."""
        labels, dist = nearest(self.X, centers)
        return labels, float(dist @ self.w)


def _stats_kernel(x: FloatArray, w: F64, centers: F64, check: bool) -> F64:
    if check:
        check_finite(x)
    return block_stats(x, w[:, 0], centers)[None]


def _far_kernel(x: FloatArray, w: F64, centers: F64, m: int) -> F64:
    return block_far_points(x, w[:, 0], centers, m)[None]


def _moments_kernel(x: FloatArray, w: F64) -> F64:
    # Weighted zeroth, first and second moments, in float64: they add across blocks.
    check_finite(x)
    xw = x.astype(np.float64) * w
    return np.concatenate([[w.sum()], xw.sum(axis=0), (xw * x).sum(axis=0)])[None]


def _labels_kernel(x: FloatArray, centers: F64) -> npt.NDArray[np.int32]:
    return nearest(x, centers)[0]


def assign_blocks(X: da.Array, centers: F64) -> da.Array:
    """Lazy nearest-centre labels (int32) of a Dask sample matrix, chunked like its rows."""
    return da.map_blocks(
        _labels_kernel,
        X,
        centers,
        drop_axis=1,
        dtype=np.int32,
        meta=np.empty((0,), dtype=np.int32),
    )


class DaskRows:
    """Weighted samples spread over the row blocks of a Dask array.

    Parameters
    ----------
    X : dask.array.Array of shape (n, d)
        Samples, one chunk along the features.
    w : dask.array.Array of shape (n,)
        Weights, chunked like `X`'s rows.
    """

    def __init__(self, X: da.Array, w: da.Array) -> None:
        self.X = X
        self.w = w[:, None]
        # Values are checked for NaN/inf on the workers during the first pass only.
        self._checked = False

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features."""
        return int(self.X.shape[1])

    def _per_block(self, kernel: Any, width: tuple[int, ...], *args: Any) -> da.Array:
        nb = self.X.numblocks[0]
        return da.map_blocks(
            kernel,
            self.X,
            self.w,
            *args,
            chunks=((1,) * nb, *((s,) for s in width)),
            new_axis=list(range(2, 1 + len(width))),
            dtype=np.float64,
            meta=np.empty((0,) * (1 + len(width)), dtype=np.float64),
        )

    def stats(self, centers: F64) -> F64:
        """Packed per-cluster statistics for each run, one pass on the cluster."""
        runs, k, d = centers.shape
        parts = self._per_block(_stats_kernel, (runs, k, d + 2), centers, not self._checked)
        out: F64 = parts.sum(axis=0).compute()
        self._checked = True
        return out

    def far_points(self, centers: F64, m: int) -> F64:
        """Return the `m` samples farthest from their nearest centre, for each run."""
        runs, _, d = centers.shape
        nb = self.X.numblocks[0]
        sizes = [min(m, int(c)) for c in self.X.chunks[0]]
        parts = da.map_blocks(
            _far_kernel,
            self.X,
            self.w,
            centers,
            m,
            chunks=((1,) * nb, (runs,), tuple(sizes), (d + 3,)),
            new_axis=[2, 3],
            dtype=np.float64,
            meta=np.empty((0, 0, 0, 0), dtype=np.float64),
        )
        blocks = [b[0] for b in parts.to_delayed().ravel()]
        merged = (
            np.concatenate(da.compute(*blocks), axis=1) if blocks else np.zeros((runs, 0, d + 3))
        )
        order = np.argsort(-merged[:, :, 0], axis=1, kind="stable")[:, :m]
        return np.take_along_axis(merged, order[:, :, None], axis=1)

    def take(self, idx: npt.NDArray[np.intp]) -> tuple[FloatArray, F64]:
        """Rows `idx` (any order, repeats allowed) and their weights.

        The rows are cut out of their blocks on the workers; only they travel.
        """
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        x, w = da.compute(self.X[sorted_idx], self.w[sorted_idx, 0])
        check_finite(x)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        return x[inverse], w[inverse]

    def weighted_variance(self) -> float:
        """Mean over features of the weighted variance, one pass on the cluster."""
        d = self.n_features
        parts = da.map_blocks(
            _moments_kernel,
            self.X,
            self.w,
            chunks=((1,) * self.X.numblocks[0], (1 + 2 * d,)),
            dtype=np.float64,
            meta=np.empty((0, 0), dtype=np.float64),
        )
        m = parts.sum(axis=0).compute()
        self._checked = True
        total, s1, s2 = m[0], m[1 : 1 + d], m[1 + d :]
        return float(np.maximum(s2 / total - (s1 / total) ** 2, 0).mean())

    def labels_inertia(self, centers: F64) -> tuple[da.Array, float]:
        """Lazy nearest-centre labels and the weighted inertia (one pass)."""
        stats = self.stats(centers[None])
        return assign_blocks(self.X, centers), float(stats[0, :, -1].sum())


def make_rows(X: Any, w: Any) -> NumpyRows | DaskRows:
    """Wrap validated samples and weights in the matching `Rows` implementation."""
    if isinstance(X, da.Array):
        return DaskRows(X, w)
    return NumpyRows(X, w)
