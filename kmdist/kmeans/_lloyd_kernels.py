"""Compiled Lloyd steps with Hamerly's bounds (numba), threaded over slices of the samples.

The step fuses what would be a chain of whole-array NumPy operations into one pass over
the samples. It is compiled on first use and cached on disk (``cache=True``), so a process
pays the compilation once per installation, not per call.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from kmdist.kmeans._sparse import CSR

__all__ = ["bounded_lloyd", "canonical_order", "dense_lloyd", "hamerly_step", "pairwise_distances"]

# Below this many samples a Lloyd step runs in one thread: a thread hand-off costs more.
# (342,000 colours, 103 steps: 0.10 s in one thread, 0.067 s in two.)
_PARALLEL_ABOVE = 1 << 17
# Most slices a Lloyd step is split into (2**17 samples or more each, a power of two).
_MAX_PARTS = 8
_pool: ThreadPoolExecutor | None = None


def _threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


@numba.njit(cache=True, nogil=True)
def _hamerly_step(
    X: npt.NDArray[np.floating[Any]],
    w: npt.NDArray[np.float64],
    centers: npt.NDArray[np.float64],
    drift: npt.NDArray[np.float64],
    max_drift: float,
    labels: npt.NDArray[np.int32],
    upper: npt.NDArray[np.float64],
    lower: npt.NDArray[np.float64],
    sums: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    sq: npt.NDArray[np.float64],
    scale: float,
) -> int:
    n, d = X.shape
    k = centers.shape[0]
    searched = 0
    for i in range(n):
        old = labels[i]
        # Bounds are stored net of the drifts (see `hamerly_step`): a sample whose
        # bounds hold is only read, never written.
        u = upper[i] + drift[old]
        lo = lower[i] - max_drift
        # Same margin as the NumPy path: covers the distances' round-off.
        if u < lo - (1e-7 * (u + lo + scale) + 1e-12):
            continue
        searched += 1
        best = np.inf
        second = np.inf
        new = 0
        for j in range(k):
            dist = 0.0
            for f in range(d):
                t = X[i, f] - centers[j, f]
                dist += t * t
            if dist < best:
                second = best
                best = dist
                new = j
            elif dist < second:
                second = dist
        upper[i] = math.sqrt(best) - drift[new]
        lower[i] = math.sqrt(second) + max_drift
        if new != old:
            labels[i] = new
            # The sample's moments, computed where needed rather than stored (40 bytes
            # a sample that would be written once and read rarely).
            wi = w[i]
            xx = 0.0
            for f in range(d):
                wx = np.float64(X[i, f]) * wi
                xx += wx * X[i, f]
                sums[new, f] += wx
                if old >= 0:
                    sums[old, f] -= wx
            weights[new] += wi
            sq[new] += xx
            if old >= 0:
                weights[old] -= wi
                sq[old] -= xx
    return searched


@numba.njit(cache=True, nogil=True)
def _hamerly_step_csr(
    data: npt.NDArray[np.floating[Any]],
    indices: npt.NDArray[np.int64],
    indptr: npt.NDArray[np.int64],
    x_sq: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    centers: npt.NDArray[np.float64],
    c_sq: npt.NDArray[np.float64],
    drift: npt.NDArray[np.float64],
    max_drift: float,
    labels: npt.NDArray[np.int32],
    upper: npt.NDArray[np.float64],
    lower: npt.NDArray[np.float64],
    sums: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    sq: npt.NDArray[np.float64],
    scale: float,
) -> int:
    # `_hamerly_step` for rows in CSR form: a distance is |x|^2 - 2 x.c + |c|^2 over the
    # row's stored values only, as scikit-learn computes sparse distances.
    n = indptr.size - 1
    k = centers.shape[0]
    searched = 0
    for i in range(n):
        old = labels[i]
        u = upper[i] + drift[old]
        lo = lower[i] - max_drift
        if u < lo - (1e-7 * (u + lo + scale) + 1e-12):
            continue
        searched += 1
        best = np.inf
        second = np.inf
        new = 0
        a, b = indptr[i], indptr[i + 1]
        for j in range(k):
            dot = 0.0
            for e in range(a, b):
                dot += np.float64(data[e]) * centers[j, indices[e]]
            dist = max(x_sq[i] - 2.0 * dot + c_sq[j], 0.0)
            if dist < best:
                second = best
                best = dist
                new = j
            elif dist < second:
                second = dist
        upper[i] = math.sqrt(best) - drift[new]
        lower[i] = math.sqrt(second) + max_drift
        if new != old:
            labels[i] = new
            wi = w[i]
            for e in range(a, b):
                wx = np.float64(data[e]) * wi
                sums[new, indices[e]] += wx
                if old >= 0:
                    sums[old, indices[e]] -= wx
            weights[new] += wi
            sq[new] += wi * x_sq[i]
            if old >= 0:
                weights[old] -= wi
                sq[old] -= wi * x_sq[i]
    return searched


@numba.njit(cache=True, nogil=True)
def _add_shifts(
    centers: npt.NDArray[np.float64],
    placed: npt.NDArray[np.float64],
    drift: npt.NDArray[np.float64],
) -> tuple[float, float]:
    """Add each centre's shift from `placed` to `drift`; return the largest shift and norm.

    The largest norm scales the rounding margin of `_hamerly_step`'s bound tests.
    """
    k, d = centers.shape
    largest = 0.0
    scale = 0.0
    for j in range(k):
        moved = 0.0
        norm = 0.0
        for f in range(d):
            moved += (centers[j, f] - placed[j, f]) ** 2
            norm += centers[j, f] * centers[j, f]
        drift[j] += math.sqrt(moved)
        largest = max(largest, math.sqrt(moved))
        scale = max(scale, math.sqrt(norm))
    return largest, scale


def hamerly_step(bounds: Any, X: Any, centers: npt.NDArray[np.float64]) -> int:
    """Move Hamerly bounds to new centres in compiled passes; return samples searched.

    `X` is a dense array or a `kmdist.kmeans._sparse.CSR` (whose bounds carry the rows'
    squared norms, ``x_sq``). Updates `bounds` (a ``kmdist.kmeans._rows._Bounds``) in
    place: each sample's bounds grow by the centre shifts; a sample whose bounds overlap
    is searched against every centre, and the cluster moments follow samples that change
    cluster. Samples labelled -1, with infinite upper bounds, are searched and added to
    the moments: the first step.
    Large inputs are split over the cores' threads (the kernel releases the GIL), each
    slice with its own moment changes, added up afterwards.
    """
    global _pool
    # Hamerly adds each centre's shift to the upper bounds of its samples and the largest
    # shift to every lower bound, a write of every sample each step. Bounds are stored
    # instead net of the shifts summed since the run began (`drift` a centre, and the
    # largest shifts' sum): a step reads 20 bytes a sample and writes only the samples
    # it searches (2.06 million colours: 3.7 to 2.6 ms a step, with the moments below).
    largest, scale = _add_shifts(centers, bounds.centers, bounds.drift)
    bounds.max_drift += largest
    n = X.shape[0]
    # The split depends on n only, not on the cores, so that the moments are summed in
    # the same order, and the palette comes out the same to the last bit, on every
    # machine; the pool's threads (one a core) take the parts in turn. A power of two
    # parts divides evenly among 2, 4 or 8 threads.
    parts = 1 << (min(_MAX_PARTS, max(1, n // _PARALLEL_ABOVE)).bit_length() - 1)

    def run(a: int, b: int, sums: Any, weights: Any, sq: Any) -> int:
        """One pass over samples [a, b), moment changes added to `sums`, `weights`, `sq`."""
        if isinstance(X, CSR):
            part = X[a:b]
            return int(
                _hamerly_step_csr(
                    part.data,
                    part.indices,
                    part.indptr,
                    bounds.x_sq[a:b],
                    bounds.w[a:b],
                    centers,
                    np.einsum("ij,ij->i", centers, centers),
                    bounds.drift,
                    bounds.max_drift,
                    bounds.labels[a:b],
                    bounds.upper[a:b],
                    bounds.lower[a:b],
                    sums,
                    weights,
                    sq,
                    scale,
                )
            )
        return int(
            _hamerly_step(
                X[a:b],
                bounds.w[a:b],
                centers,
                bounds.drift,
                bounds.max_drift,
                bounds.labels[a:b],
                bounds.upper[a:b],
                bounds.lower[a:b],
                sums,
                weights,
                sq,
                scale,
            )
        )

    if parts == 1:
        return run(0, n, bounds.sums, bounds.weights, bounds.sq)
    edges: list[int] = np.linspace(0, n, parts + 1).astype(int).tolist()
    deltas = [
        (np.zeros_like(bounds.sums), np.zeros_like(bounds.weights), np.zeros_like(bounds.sq))
        for _ in range(parts)
    ]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="kmdist-lloyd")

    def part(i: int) -> int:
        return run(edges[i], edges[i + 1], *deltas[i])

    searched = sum(_pool.map(part, range(parts)))
    for sums, weights, sq in deltas:
        bounds.sums += sums
        bounds.weights += weights
        bounds.sq += sq
    return searched


@numba.njit(cache=True, nogil=True)
def _row_keys(
    X: npt.NDArray[np.floating[Any]], r: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    # x . r summed in column order over the non-zero values only: bit for bit the key
    # `_csr_row_keys` gives the same row in compressed sparse form.
    n, d = X.shape
    out = np.empty(n)
    for i in range(n):
        s = 0.0
        for f in range(d):
            v = np.float64(X[i, f])
            if v != 0.0:
                s += v * r[f]
        out[i] = s
    return out


@numba.njit(cache=True, nogil=True)
def _csr_row_keys(
    data: npt.NDArray[np.floating[Any]],
    indices: npt.NDArray[np.int64],
    indptr: npt.NDArray[np.int64],
    r: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    n = indptr.size - 1
    out = np.empty(n)
    for i in range(n):
        s = 0.0
        for e in range(indptr[i], indptr[i + 1]):
            v = np.float64(data[e])
            if v != 0.0:
                s += v * r[indices[e]]
        out[i] = s
    return out


def canonical_order(X: Any) -> npt.NDArray[np.intp]:
    """Order the rows of `X` by their values only, whatever order they come in.

    Rows are sorted by a fixed random projection of their values, ``x . r`` (`r` drawn
    from a constant seed for each number of features), so equal rows end up next to each
    other and distinct rows come in the same order however the input was ordered. A
    projection, unlike a hash, barely moves when the values do: float32 and float64
    copies of the same data, or the same rows dense and sparse, come in the same order
    but for near-ties. Distinct rows with equal keys (a measure-zero event for data
    that is not built for it) are ordered by their values, exactly. Cost: one pass over
    the values and one sort of n floats (100,000 rows of 10 features: about 6 ms).

    Parameters
    ----------
    X : ndarray or CSR of shape (n, d)
        Samples.

    Returns
    -------
    ndarray of shape (n,)
        Row indices in canonical order.
    """
    d = X.shape[1]
    r = np.random.default_rng([0x6B6D64, d]).uniform(0.5, 1.5, d)
    if isinstance(X, CSR):
        keys = _csr_row_keys(X.data, X.indices, X.indptr, r)
    else:
        keys = _row_keys(np.asarray(X), r)
    order = np.argsort(keys)
    same = np.flatnonzero(keys[order[1:]] == keys[order[:-1]])
    if same.size:
        a, b = order[same], order[same + 1]
        rows_a = X[a].toarray() if isinstance(X, CSR) else X[a]
        rows_b = X[b].toarray() if isinstance(X, CSR) else X[b]
        differ = (rows_a != rows_b).any(axis=1)
        if differ.any():
            # Distinct rows with equal keys: order the rows of those runs by their values.
            tied = np.unique(np.concatenate([same[differ], same[differ] + 1]))
            starts = tied[np.r_[True, np.diff(tied) > 1]]
            for start in starts:
                # The run of equal keys may begin with identical rows, before the first
                # pair that differs: it is sorted whole, from where its key begins.
                while start > 0 and keys[order[start - 1]] == keys[order[start]]:
                    start -= 1
                stop = start
                while stop + 1 < len(order) and keys[order[stop + 1]] == keys[order[start]]:
                    stop += 1
                run = order[start : stop + 1]
                values = X[run].toarray() if isinstance(X, CSR) else np.asarray(X)[run]
                sub = np.lexsort([values[:, f] for f in range(d - 1, -1, -1)])
                order[start : stop + 1] = run[sub]
    return order.astype(np.intp)


@numba.njit(cache=True, nogil=True)
def _pairwise(
    X: npt.NDArray[np.floating[Any]], centers: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    n, d = X.shape
    k = centers.shape[0]
    out = np.empty((n, k))
    for i in range(n):
        for j in range(k):
            s = 0.0
            for f in range(d):
                t = X[i, f] - centers[j, f]
                s += t * t
            out[i, j] = math.sqrt(s)
    return out


def pairwise_distances(
    X: npt.NDArray[np.floating[Any]], centers: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Euclidean distances (n, k) computed from differences.

    Exact down to zero, unlike the expansion ``|x|^2 - 2 x.c + |c|^2``: a centre's
    distance to itself is 0.0.
    """
    return _pairwise(X, np.ascontiguousarray(centers, dtype=np.float64))


@numba.njit(cache=True, nogil=True)
def _dense_pass(
    X: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    centers: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int64],
    dist: npt.NDArray[np.float64],
    stats: npt.NDArray[np.float64],
) -> None:
    """Nearest centres, squared distances and packed (k, d + 2) stats in one pass.

    The distances are `kmdist.kmeans._lloyd.nearest`'s (``|c|^2 - 2 x.c`` ranks the
    centres, the first lowest wins, ``|x|^2`` is added to the minimum), so the labels
    are those of the NumPy path.
    """
    n, d = X.shape
    k = centers.shape[0]
    c_sq = np.zeros(k)
    for j in range(k):
        for f in range(d):
            c_sq[j] += centers[j, f] * centers[j, f]
    stats[:] = 0.0
    for i in range(n):
        best = np.inf
        lab = 0
        for j in range(k):
            s = 0.0
            for f in range(d):
                s += X[i, f] * (-2.0 * centers[j, f])
            s += c_sq[j]
            if s < best:
                best = s
                lab = j
        x_sq = 0.0
        for f in range(d):
            x_sq += X[i, f] * X[i, f]
        dd = max(best + x_sq, 0.0)
        labels[i] = lab
        dist[i] = dd
        wi = w[i]
        for f in range(d):
            stats[lab, f] += wi * X[i, f]
        stats[lab, d] += wi
        stats[lab, d + 1] += wi * dd


@numba.njit(cache=True, nogil=True)
def _relocate(
    X: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    centers: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int64],
    dist: npt.NDArray[np.float64],
    stats: npt.NDArray[np.float64],
    on_centre: float,
) -> None:
    """`kmdist.kmeans._lloyd._relocate_empty` for one run, edited into packed `stats`.

    `labels` and `dist` are every sample's nearest centre and squared distance (as
    `_dense_pass` gives them).
    """
    n, d = X.shape
    k = centers.shape[0]
    empty = stats[:, d] <= 0
    m = min(int(empty.sum()), n)
    if m == 0:
        return
    # The farthest samples from their centres (zero weights last), stable order.
    far = np.argsort(-np.where(w > 0, dist, -1.0), kind="mergesort")[:m]
    slot = 0
    for j in range(k):
        if not empty[j]:
            continue
        if slot >= m or w[far[slot]] <= 0:
            break
        s = far[slot]
        old = labels[s]
        gap = 0.0
        xx = 0.0
        cc = 0.0
        for f in range(d):
            gap += (X[s, f] - centers[old, f]) ** 2
            xx += X[s, f] * X[s, f]
            cc += centers[old, f] * centers[old, f]
        if gap <= on_centre * max(xx, cc):
            break  # the farthest samples left sit on their centres
        wt = w[s]
        for f in range(d):
            stats[old, f] -= wt * X[s, f]
            stats[j, f] = wt * X[s, f]
        stats[old, d] -= wt
        stats[old, d + 1] -= dist[s] * wt
        stats[j, d] = wt
        stats[j, d + 1] = 0.0
        slot += 1


@numba.njit(cache=True, nogil=True)
def _new_centers(
    stats: npt.NDArray[np.float64], centers: npt.NDArray[np.float64]
) -> tuple[float, float]:
    """Move `centers` to the means in packed `stats` (an empty cluster's stays), in place.

    Returns the summed squared shift and the largest squared shift of one centre, as
    `kmdist.kmeans._lloyd.lloyd` computes them for its stopping rules.
    """
    k, d = centers.shape
    shift = 0.0
    largest = 0.0
    for j in range(k):
        moved = 0.0
        for f in range(d):
            c = stats[j, f] / stats[j, d] if stats[j, d] > 0 else centers[j, f]
            moved += (c - centers[j, f]) ** 2
            centers[j, f] = c
        shift += moved
        largest = max(largest, moved)
    return shift, largest


@numba.njit(cache=True, nogil=True)
def dense_lloyd(
    X: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    init: npt.NDArray[np.float64],
    max_iter: int,
    tol: float,
    eps_sq: float,
    on_centre: float,
) -> tuple[npt.NDArray[np.float64], float, npt.NDArray[np.float64], int]:
    """One Lloyd run on dense in-memory samples, every iteration compiled.

    The steps, stopping rules and empty-cluster relocation of
    `kmdist.kmeans._lloyd.lloyd` for one run (``eps_sq < 0``: no `eps` criterion), with
    no Python between iterations: on a few thousand samples (a thumbnail's coarse
    histogram) each NumPy iteration's overhead costs more than its arithmetic.
    Returns the centres, the inertia, the cluster weights and the iterations run.
    """
    n, d = X.shape
    k = init.shape[0]
    centers = init.copy()
    labels = np.zeros(n, dtype=np.int64)
    dist = np.zeros(n)
    stats = np.zeros((k, d + 2))
    inertia = 0.0
    weights = np.zeros(k)
    n_iter = 0
    final_pass = False
    for _ in range(max_iter):
        _dense_pass(X, w, centers, labels, dist, stats)
        inertia = stats[:, d + 1].sum()
        weights = stats[:, d].copy()
        if (stats[:, d] <= 0).any():
            _relocate(X, w, centers, labels, dist, stats, on_centre)
        shift, largest = _new_centers(stats, centers)
        n_iter += 1
        final_pass = shift != 0
        if shift <= tol or (eps_sq >= 0 and largest <= eps_sq):
            break
    if final_pass:
        _dense_pass(X, w, centers, labels, dist, stats)
        inertia = stats[:, d + 1].sum()
        weights = stats[:, d].copy()
    return centers, inertia, weights, n_iter


@numba.njit(cache=True, nogil=True)
def _bounded_stats(
    centers: npt.NDArray[np.float64],
    sums: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    sq: npt.NDArray[np.float64],
    stats: npt.NDArray[np.float64],
) -> None:
    """Packed (k, d + 2) stats from running moments, as `_rows._Bounds.stats` packs them."""
    k, d = centers.shape
    for j in range(k):
        cs = 0.0
        cc = 0.0
        for f in range(d):
            cs += centers[j, f] * sums[j, f]
            cc += centers[j, f] * centers[j, f]
            stats[j, f] = sums[j, f]
        stats[j, d] = weights[j]
        stats[j, d + 1] = max(sq[j] - 2 * cs + weights[j] * cc, 0.0)


@numba.njit(cache=True, nogil=True)
def _move_bounds(
    X: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    centers: npt.NDArray[np.float64],
    placed: npt.NDArray[np.float64],
    drift: npt.NDArray[np.float64],
    max_drift: float,
    labels: npt.NDArray[np.int32],
    upper: npt.NDArray[np.float64],
    lower: npt.NDArray[np.float64],
    sums: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    sq: npt.NDArray[np.float64],
) -> float:
    """`hamerly_step` in one thread: bounds and moments moved from `placed` to `centers`.

    Returns the new `max_drift`; `placed` becomes `centers`.
    """
    largest, scale = _add_shifts(centers, placed, drift)
    max_drift += largest
    _hamerly_step(X, w, centers, drift, max_drift, labels, upper, lower, sums, weights, sq, scale)
    placed[:] = centers
    return max_drift


@numba.njit(cache=True, nogil=True)
def bounded_lloyd(
    X: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    init: npt.NDArray[np.float64],
    max_iter: int,
    tol: float,
    eps_sq: float,
    on_centre: float,
) -> tuple[npt.NDArray[np.float64], float, npt.NDArray[np.float64], int]:
    """`dense_lloyd` keeping Hamerly's bounds between iterations, as `lloyd` does.

    The single-run `lloyd` on `kmdist.kmeans._rows.NumpyRows` (its `_Bounds`, one
    unthreaded `hamerly_step` an iteration) with no Python between iterations: on tens
    of thousands of samples (a thumbnail's distinct colours) most iterations search few
    samples, and `lloyd`'s NumPy calls around each step cost more than the step.
    Returns the centres, the inertia, the cluster weights and the iterations run.
    """
    n, d = X.shape
    k = init.shape[0]
    centers = init.copy()
    placed = init.copy()  # the centres the bounds hold for
    labels = np.full(n, -1, dtype=np.int32)  # -1: the first step searches every sample
    upper = np.full(n, np.inf)
    lower = np.zeros(n)
    drift = np.zeros(k)
    sums = np.zeros((k, d))
    weights = np.zeros(k)
    sq = np.zeros(k)
    max_drift = _move_bounds(
        X, w, centers, placed, drift, 0.0, labels, upper, lower, sums, weights, sq
    )
    stats = np.zeros((k, d + 2))
    near = np.zeros(n, dtype=np.int64)  # every sample's nearest centre, to relocate
    dist = np.zeros(n)
    scratch = np.zeros((k, d + 2))
    inertia = 0.0
    cluster_w = np.zeros(k)
    n_iter = 0
    final_pass = False
    for it in range(max_iter):
        if it > 0 and k > 1:  # one centre: every label is 0 (as `_Bounds.move`)
            max_drift = _move_bounds(
                X, w, centers, placed, drift, max_drift, labels, upper, lower, sums, weights, sq
            )
        _bounded_stats(centers, sums, weights, sq, stats)
        inertia = stats[:, d + 1].sum()
        cluster_w = stats[:, d].copy()
        if (stats[:, d] <= 0).any():
            _dense_pass(X, w, centers, near, dist, scratch)
            _relocate(X, w, centers, near, dist, stats, on_centre)
        shift, largest = _new_centers(stats, centers)
        n_iter += 1
        final_pass = shift != 0
        if shift <= tol or (eps_sq >= 0 and largest <= eps_sq):
            break
    if final_pass:
        if k > 1:
            max_drift = _move_bounds(
                X, w, centers, placed, drift, max_drift, labels, upper, lower, sums, weights, sq
            )
        _bounded_stats(centers, sums, weights, sq, stats)
        inertia = stats[:, d + 1].sum()
        cluster_w = stats[:, d].copy()
    return centers, inertia, cluster_w, n_iter
