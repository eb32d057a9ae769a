"""Passes over weighted samples held in NumPy or spread over a Dask array's blocks.

`NumpyRows`, `SparseRows` and `DaskRows` implement the `kmdist.kmeans._lloyd.Rows`
interface. For Dask input each pass is one graph: a kernel per block and a tree
reduction whose result, a few kilobytes of statistics, is all that reaches the client.
Samples never do, except those explicitly asked for by `take` (seeding samples and
mini-batches).

A Dask array of any number of dimensions can serve as rows: the last axis holds the
features and every other axis indexes samples in C order. An image (y, x, c) is thus a
set of y * x pixels without reshaping, which would force a rechunk across its tiles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt
from dask.base import compute
from dask.delayed import Delayed, delayed

from kmdist.kmeans._lloyd import (
    F64,
    FloatArray,
    Samples,
    block_far_points,
    block_stats,
    nearest,
)
from kmdist.kmeans._lloyd_kernels import hamerly_step
from kmdist.kmeans._sparse import CSR
from kmdist.kmeans._validation import check_finite

__all__ = [
    "ConcatRows",
    "DaskRows",
    "InMemoryRows",
    "NumpyRows",
    "SparseRows",
    "assign_blocks",
    "in_memory_rows",
    "make_rows",
    "tree_reduce",
]


class InMemoryRows:
    """Weighted samples in memory, shape (n, d): a dense array or sparse rows (`CSR`).

    `NumpyRows` and `SparseRows` narrow the type of `X`; the passes are the same, the
    kernels they call reading either form.
    """

    in_memory = True
    X: Samples

    def __init__(self, X: Samples, w: F64) -> None:
        self.X = X
        self.w = w
        self._bounds: _Bounds | None = None

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features."""
        return int(self.X.shape[1])

    def stats(self, centers: F64) -> F64:
        """Packed per-cluster statistics for each run (see `block_stats`).

        Successive single-run calls (the iterations of one Lloyd run) keep Hamerly's
        distance bounds between calls and recompute distances only for samples whose
        nearest centre may have changed; the labels are those of a full search.
        """
        if centers.shape[0] != 1:
            self._bounds = None
            return block_stats(self.X, self.w, centers)
        if self._bounds is None or self._bounds.centers.shape != centers[0].shape:
            self._bounds = _Bounds(self.X, self.w, centers[0])
        else:
            self._bounds.move(self.X, centers[0])
        return self._bounds.stats()[None]

    def far_points(self, centers: F64, m: int) -> F64:
        """Return the `m` samples farthest from their nearest centre, for each run."""
        return block_far_points(self.X, self.w, centers, m)

    def take(self, idx: npt.NDArray[np.intp]) -> tuple[Samples, F64]:
        """Rows `idx` and their weights."""
        return self.X[idx], self.w[idx]

    def all_weights(self) -> F64:
        """Every sample's weight."""
        return self.w

    def weighted_variance(self) -> float:
        """Mean over features of the weighted variance."""
        total = self.w.sum()
        if isinstance(self.X, CSR):
            s1, s2 = self.X.weighted_moments(self.w)
            return float(np.maximum(s2 / total - (s1 / total) ** 2, 0).mean())
        mean = (self.w @ self.X) / total
        return float((self.w @ (self.X - mean) ** 2).mean() / total)

    def labels_inertia(self, centers: F64) -> tuple[npt.NDArray[np.int32], float]:
        """Nearest-centre labels and the weighted inertia."""
        labels, dist = nearest(self.X, centers)
        return labels, float(dist @ self.w)


class NumpyRows(InMemoryRows):
    """Weighted samples in a dense in-memory array, shape (n, d)."""

    X: FloatArray

    def __init__(self, X: FloatArray, w: F64) -> None:
        super().__init__(X, w)

    def take(self, idx: npt.NDArray[np.intp]) -> tuple[FloatArray, F64]:
        """Rows `idx` and their weights."""
        return self.X[idx], self.w[idx]


class SparseRows(InMemoryRows):
    """Weighted samples in compressed sparse rows, shape (n, d)."""

    X: CSR

    def __init__(self, X: CSR, w: F64) -> None:
        super().__init__(X, w)

    def take(self, idx: npt.NDArray[np.intp]) -> tuple[CSR, F64]:
        """Rows `idx` (sparse) and their weights."""
        return self.X[idx], self.w[idx]


def in_memory_rows(X: Samples, w: F64) -> NumpyRows | SparseRows:
    """`NumpyRows` or `SparseRows`, whichever holds `X`."""
    return SparseRows(X, w) if isinstance(X, CSR) else NumpyRows(X, w)


class _Bounds:
    """Hamerly's bounds and running cluster moments for one Lloyd run.

    Keeps each sample's label, an upper bound on the distance to its centre and a lower
    bound on the distance to any other centre, plus per-cluster moments (weighted sums
    of x and |x|^2, and weights) updated only for samples that change cluster. An
    iteration then costs O(n) cheap bound updates instead of O(n k d) distances.
    """

    def __init__(self, X: Samples, w: F64, centers: F64) -> None:
        n = X.shape[0]
        # Sparse rows: their squared norms, for |x|^2 - 2 x.c + |c|^2.
        self.x_sq = X.row_norms_sq() if isinstance(X, CSR) else None
        self.k = centers.shape[0]
        self.centers = centers.copy()
        self.w = w
        # No sample labelled yet, so the first step searches every one (threaded,
        # compiled) and adds it to the moments.
        self.labels = np.full(n, -1, dtype=np.int32)
        self.upper = np.full(n, np.inf)
        self.lower = np.zeros(n)
        # Shifts summed since these bounds were set, per centre and the largest's sum:
        # the bounds in effect are ``upper + drift[label]`` and ``lower - max_drift``.
        self.drift = np.zeros(self.k)
        self.max_drift = 0.0
        self.sums = np.zeros((self.k, X.shape[1]))
        self.weights = np.zeros(self.k)
        self.sq = np.zeros(self.k)
        hamerly_step(self, X, centers)

    def move(self, X: Samples, centers: F64) -> None:
        """Update for new centres; re-search only samples the bounds cannot settle."""
        if self.k > 1:  # one centre: every label is 0, and the lower bound is infinite
            hamerly_step(self, X, centers)
        self.centers = centers.copy()

    def stats(self) -> F64:
        """Packed (k, d + 2) statistics; inertia from the moments, sum w|x - c|^2."""
        c = self.centers
        inertia = self.sq - 2 * np.einsum("ij,ij->i", c, self.sums)
        inertia += self.weights * np.einsum("ij,ij->i", c, c)
        return np.column_stack([self.sums, self.weights, np.maximum(inertia, 0)])


def tree_reduce(parts: Sequence[Delayed], combine: Callable[..., Any], split_every: int = 8) -> Any:
    """Combine delayed parts in a tree of `combine` calls, `split_every` at a time."""
    level = list(parts)
    while len(level) > 1:
        level = [
            delayed(combine, pure=True)(*level[i : i + split_every])
            for i in range(0, len(level), split_every)
        ]
    return level[0]


def _add(*arrays: F64) -> F64:
    return np.sum(arrays, axis=0)


def _flat(x: FloatArray, w: F64 | None) -> tuple[FloatArray, F64]:
    """Reshape a block to (samples, features); weights default to ones."""
    x2 = x.reshape(-1, x.shape[-1])
    w1 = np.ones(x2.shape[0]) if w is None else np.asarray(w, dtype=np.float64).reshape(-1)
    return x2, w1


def _stats_kernel(x: FloatArray, w: F64 | None, centers: F64, check: bool, name: str = "X") -> F64:
    x2, w1 = _flat(x, w)
    if check:
        check_finite(x2, name)
    return block_stats(x2, w1, centers)


def _far_kernel(x: FloatArray, w: F64 | None, centers: F64, m: int) -> F64:
    return block_far_points(*_flat(x, w), centers, m)


def _moments_kernel(x: FloatArray, w: F64 | None, name: str = "X") -> F64:
    # Weighted zeroth, first and second moments in float64: they add across blocks.
    x2, w1 = _flat(x, w)
    check_finite(x2, name)
    xw = x2.astype(np.float64) * w1[:, None]
    return np.concatenate([[w1.sum()], xw.sum(axis=0), (xw * x2).sum(axis=0)])


def _variance(moments: F64, d: int) -> float:
    """Mean feature variance from packed moments ``[sum w, sum w x, sum w x^2]``."""
    total, s1, s2 = moments[0], moments[1 : 1 + d], moments[1 + d :]
    return float(np.maximum(s2 / total - (s1 / total) ** 2, 0).mean())


def _labels_kernel(x: FloatArray, centers: F64) -> npt.NDArray[np.int32]:
    return nearest(x.reshape(-1, x.shape[-1]), centers)[0].reshape(x.shape[:-1])


def assign_blocks(X: da.Array, centers: F64) -> da.Array:
    """Lazy nearest-centre labels (int32) of Dask samples, chunked like the samples.

    `X` has the features on its last axis; the labels have the other axes.
    """
    return da.map_blocks(
        _labels_kernel,
        X,
        centers,
        drop_axis=X.ndim - 1,
        dtype=np.int32,
        meta=np.empty((0,) * (X.ndim - 1), dtype=np.int32),
    )


class DaskRows:
    """Weighted samples spread over the blocks of a Dask array.

    Parameters
    ----------
    X : dask.array.Array of shape (..., d)
        Samples along every axis but the last, features on the last axis (one chunk).
    w : dask.array.Array of shape X.shape[:-1], optional
        Weights, chunked like `X` without its last axis; None means all ones.
    name : str, default='X'
        What the samples are called in error messages (NaN or infinity found).
    """

    in_memory = False

    def __init__(self, X: da.Array, w: da.Array | None = None, name: str = "X") -> None:
        self.name = name
        if X.numblocks[-1] != 1:
            X = X.rechunk({X.ndim - 1: -1})
        self.X = X
        self.w = None if w is None else w.rechunk(X.chunks[:-1])
        self._lead = tuple(int(s) for s in X.shape[:-1])
        # Values are checked for NaN/inf on the workers during the first pass only.
        self._checked = False

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return int(np.prod(self._lead))

    @property
    def n_features(self) -> int:
        """Number of features."""
        return int(self.X.shape[-1])

    def _blocks(self) -> list[tuple[Delayed, Delayed | None]]:
        xs = self.X.to_delayed().reshape(-1)
        if self.w is None:
            return [(x, None) for x in xs]
        return list(zip(xs, self.w.to_delayed().reshape(-1), strict=True))

    def _reduce(self, kernel: Callable[..., F64], *args: Any) -> F64:
        return _reduce_blocks(self._blocks(), kernel, *args)

    def stats(self, centers: F64) -> F64:
        """Packed per-cluster statistics for each run, one pass on the cluster."""
        out = self._reduce(_stats_kernel, centers, not self._checked, self.name)
        self._checked = True
        return out

    def far_points(self, centers: F64, m: int) -> F64:
        """Return the `m` samples farthest from their nearest centre, for each run."""
        return _far_blocks(self._blocks(), centers, m)

    def _selection(self, idx: npt.NDArray[np.intp]) -> tuple[da.Array, da.Array | None]:
        """Lazy selection of samples `idx` (sorted) and their weights."""
        coords = np.unravel_index(idx, self._lead)
        x_sel = self.X.vindex[coords] if len(coords) > 1 else self.X[coords[0]]
        if self.w is None:
            return x_sel, None
        return x_sel, self.w.vindex[coords] if len(coords) > 1 else self.w[coords[0]]

    def take(self, idx: npt.NDArray[np.intp]) -> tuple[FloatArray, F64]:
        """Gather samples `idx` (C-order numbers, any order, repeats allowed) and weights.

        The samples are cut out of their blocks on the workers; only they travel.
        """
        return _gather([self], [0], idx)

    def all_weights(self) -> F64:
        """Every sample's weight, brought to the client (n floats)."""
        if self.w is None:
            return np.ones(self.n_samples)
        return np.asarray(self.w.compute(), dtype=np.float64).reshape(-1)

    def weighted_variance(self) -> float:
        """Mean over features of the weighted variance, one pass on the cluster."""
        m = self._reduce(_moments_kernel, self.name)
        self._checked = True
        return _variance(m, self.n_features)

    def labels_inertia(self, centers: F64) -> tuple[da.Array, float]:
        """Lazy nearest-centre labels and the weighted inertia (one pass)."""
        stats = self.stats(centers[None])
        return assign_blocks(self.X, centers), float(stats[0, :, -1].sum())


def _gather(
    parts: Sequence[DaskRows], offsets: Sequence[int], idx: npt.NDArray[np.intp]
) -> tuple[FloatArray, F64]:
    """Gather samples numbered across `parts` (part i starts at offsets[i]), in one compute."""
    order = np.argsort(idx, kind="stable")
    sorted_idx = idx[order]
    bounds = np.searchsorted(sorted_idx, [*offsets[1:], np.iinfo(np.int64).max])
    lazy: list[tuple[da.Array, da.Array]] = []
    start = 0
    for part, offset, stop in zip(parts, offsets, bounds, strict=True):
        if stop > start:
            x_sel, w_sel = part._selection(sorted_idx[start:stop] - offset)
            lazy.append((x_sel, da.ones(stop - start) if w_sel is None else w_sel))
        start = stop
    (got,) = compute(lazy)
    x = np.concatenate([g[0] for g in got]) if got else np.empty((0, parts[0].n_features))
    w = np.concatenate([np.asarray(g[1], dtype=np.float64) for g in got]) if got else np.empty(0)
    check_finite(x, parts[0].name)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return x[inverse], w[inverse]


class ConcatRows:
    """The samples of several `DaskRows` (e.g. the pixels of many images) as one set.

    Passes over all parts run as one graph; sample numbers run through the parts in order.
    """

    in_memory = False

    def __init__(self, parts: Sequence[DaskRows]) -> None:
        if not parts:
            raise ValueError("no samples given")
        if len({p.n_features for p in parts}) != 1:
            raise ValueError("all parts need the same number of features")
        self.parts = list(parts)
        self.offsets = np.cumsum([0, *(p.n_samples for p in parts[:-1])]).tolist()

    @property
    def n_samples(self) -> int:
        """Number of samples over all parts."""
        return sum(p.n_samples for p in self.parts)

    @property
    def n_features(self) -> int:
        """Number of features."""
        return self.parts[0].n_features

    def _blocks(self) -> list[tuple[Delayed, Delayed | None]]:
        return [b for p in self.parts for b in p._blocks()]

    def stats(self, centers: F64) -> F64:
        """Packed per-cluster statistics for each run, one pass over every part."""
        return _reduce_blocks(self._blocks(), _stats_kernel, centers, True, self.parts[0].name)

    def far_points(self, centers: F64, m: int) -> F64:
        """Return the `m` samples farthest from their nearest centre, for each run."""
        return _far_blocks(self._blocks(), centers, m)

    def take(self, idx: npt.NDArray[np.intp]) -> tuple[FloatArray, F64]:
        """Gather samples `idx` numbered through the parts in order."""
        return _gather(self.parts, self.offsets, idx)

    def all_weights(self) -> F64:
        """Every sample's weight."""
        return np.concatenate([p.all_weights() for p in self.parts])

    def weighted_variance(self) -> float:
        """Mean over features of the weighted variance, one pass over every part."""
        moments = _reduce_blocks(self._blocks(), _moments_kernel, self.parts[0].name)
        return _variance(moments, self.n_features)


def _reduce_blocks(
    blocks: Sequence[tuple[Delayed, Delayed | None]], kernel: Callable[..., F64], *args: Any
) -> F64:
    parts = [delayed(kernel, pure=True)(x, w, *args) for x, w in blocks]
    (out,) = compute(tree_reduce(parts, _add))
    return np.asarray(out, dtype=np.float64)


def _far_blocks(blocks: Sequence[tuple[Delayed, Delayed | None]], centers: F64, m: int) -> F64:
    parts = [delayed(_far_kernel, pure=True)(x, w, centers, m) for x, w in blocks]
    merged = np.concatenate(compute(*parts), axis=1)
    order = np.argsort(-merged[:, :, 0], axis=1, kind="stable")[:, :m]
    return np.take_along_axis(merged, order[:, :, None], axis=1)


def make_rows(X: Any, w: Any) -> NumpyRows | SparseRows | DaskRows:
    """Wrap validated samples and weights in the matching `Rows` implementation."""
    if isinstance(X, da.Array):
        return DaskRows(X, w)
    return in_memory_rows(X, w)
