"""Weighted k-means steps shared by the estimators and the palettes.

Everything here works on in-memory NumPy blocks of samples. Passes over data that may
live on a cluster go through the `Rows` interface (see `kmdist.kmeans._rows`), so that one
Lloyd driver serves NumPy arrays, Dask arrays and weighted colour histograms alike.

Statistics of a pass are packed as an array of shape ``(runs, k, d + 2)``: for each run
(restart) and cluster, the weighted sum of its samples (``d`` columns), its total weight
and its inertia. They add up across blocks, so a pass is one tree reduction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from kmdist.kmeans._lloyd_kernels import bounded_lloyd, canonical_order, dense_lloyd
from kmdist.kmeans._sparse import CSR

__all__ = [
    "LloydResult",
    "Rows",
    "Samples",
    "block_far_points",
    "block_stats",
    "cluster_sums",
    "kmeans_plusplus",
    "lloyd",
    "lloyd_dense",
    "nearest",
    "seed_centers",
    "squared_distances",
]

FloatArray = npt.NDArray[np.floating[Any]]
F64 = npt.NDArray[np.float64]
Samples = FloatArray | CSR
"""In-memory samples: a dense array or compressed sparse rows."""

# Rows per slab when a block is processed piecewise: bounds the (rows, k) distance matrix.
_SLAB = 1 << 15
# A sample is on its centre when their squared distance is at most this times the larger
# squared norm: a relative distance of 64 float64 roundings, what a mean's round-off can
# leave between a sample and the mean of its copies.
_ON_CENTRE = (64 * float(np.finfo(np.float64).eps)) ** 2


def squared_distances(
    X: Samples, centers: FloatArray, x_sq: FloatArray | None = None
) -> FloatArray:
    """Squared Euclidean distances between rows of `X` and `centers`, shape (n, k).

    Uses ``|x|^2 - 2 x.c + |c|^2`` so that the bulk of the work is one matrix product;
    negative round-off is clipped to zero. `x_sq` may hold precomputed ``|x|^2``.
    Sparse `X` gives float64 distances.
    """
    if isinstance(X, CSR):
        c = np.asarray(centers, dtype=np.float64)
        d = X.dot_t(-2.0 * c)
        d += np.einsum("ij,ij->i", c, c)[None, :]
        d += (X.row_norms_sq() if x_sq is None else x_sq)[:, None]
        np.maximum(d, 0, out=d)
        return d
    centers = centers.astype(X.dtype, copy=False)
    d = X @ (-2.0 * centers).T
    d += np.einsum("ij,ij->i", centers, centers)[None, :]
    d += (np.einsum("ij,ij->i", X, X) if x_sq is None else x_sq)[:, None]
    np.maximum(d, 0, out=d)
    return d


def nearest(X: Samples, centers: FloatArray) -> tuple[npt.NDArray[np.int32], F64]:
    """Index of the nearest centre for each row of `X` and the squared distance to it."""
    n = X.shape[0]
    if isinstance(X, CSR):
        labels = np.empty(n, dtype=np.int32)
        dist = np.empty(n, dtype=np.float64)
        for start in range(0, n, _SLAB):
            d = squared_distances(X[start : start + _SLAB], centers)
            lab = np.argmin(d, axis=1)
            labels[start : start + len(lab)] = lab
            dist[start : start + len(lab)] = np.take_along_axis(d, lab[:, None], axis=1)[:, 0]
        return labels, dist
    labels = np.empty(n, dtype=np.int32)
    dist = np.empty(n, dtype=np.float64)
    c = centers.astype(X.dtype, copy=False)
    c_sq = np.einsum("ij,ij->i", c, c)
    for start in range(0, n, _SLAB):
        x = X[start : start + _SLAB]
        # |c|^2 - 2 x.c ranks centres like the full distance; |x|^2 is added to the
        # minimum only, saving two passes over the (rows, k) matrix.
        d = x @ (-2.0 * c).T
        d += c_sq
        lab = np.argmin(d, axis=1)
        labels[start : start + len(x)] = lab
        best = np.take_along_axis(d, lab[:, None], axis=1)[:, 0] + np.einsum("ij,ij->i", x, x)
        dist[start : start + len(x)] = np.maximum(best, 0)
    return labels, dist


def block_stats(X: Samples, w: F64, centers: FloatArray) -> F64:
    """Per-cluster weighted sums, weights and inertia of one block, for each run.

    Parameters
    ----------
    X : ndarray or CSR of shape (n, d)
        Samples.
    w : ndarray of shape (n,)
        Their weights.
    centers : ndarray of shape (runs, k, d)
        One set of centres per run.

    Returns
    -------
    ndarray of shape (runs, k, d + 2)
        ``[..., :d]`` weighted sums, ``[..., d]`` weights, ``[..., d + 1]`` inertia.
    """
    runs, k, _ = centers.shape
    return np.stack([cluster_sums(X, w, *nearest(X, centers[r]), k) for r in range(runs)])


def cluster_sums(
    X: Samples, w: F64, labels: npt.NDArray[np.integer[Any]], dist: F64, k: int
) -> F64:
    """Packed statistics (k, d + 2) of one run from its labels and squared distances."""
    d = X.shape[1]
    out = np.empty((k, d + 2), dtype=np.float64)
    if isinstance(X, CSR):
        out[:, :d] = X.label_sums(w, labels, k)
    else:
        for j in range(d):
            out[:, j] = np.bincount(labels, weights=w * X[:, j], minlength=k)
    out[:, d] = np.bincount(labels, weights=w, minlength=k)
    out[:, d + 1] = np.bincount(labels, weights=w * dist, minlength=k)
    return out


def block_far_points(X: Samples, w: F64, centers: FloatArray, m: int) -> F64:
    """Return the `m` samples of a block farthest from their nearest centre, for each run.

    Returns an array of shape (runs, m', d + 3) with ``m' = min(m, n)`` whose columns are
    the squared distance, the weight, the nearest centre's index and the sample itself.
    Zero-weight samples are never chosen, since they cannot seed a cluster.
    """
    runs, _, d = centers.shape
    m = min(m, X.shape[0])
    out = np.zeros((runs, m, d + 3), dtype=np.float64)
    for r in range(runs):
        labels, dist = nearest(X, centers[r])
        dist = np.where(w > 0, dist, -1.0)
        idx = np.argsort(-dist, kind="stable")[:m]
        out[r, :, 0] = dist[idx]
        out[r, :, 1] = w[idx]
        out[r, :, 2] = labels[idx]
        out[r, :, 3:] = dense(X[idx])
    return out


def dense(X: Samples) -> FloatArray:
    """`X` as a dense array (sparse rows densified)."""
    return X.toarray() if isinstance(X, CSR) else X


class Rows(Protocol):
    """Passes over a weighted set of samples, wherever they live."""

    @property
    def n_features(self) -> int:
        """Number of features ``d``."""

    def stats(self, centers: F64) -> F64:
        """Sum of `block_stats` over all blocks."""

    def far_points(self, centers: F64, m: int) -> F64:
        """`block_far_points` over all blocks, merged and cut to the `m` farthest."""

    @property
    def n_samples(self) -> int:
        """Number of samples ``n``."""

    def take(self, idx: npt.NDArray[np.intp]) -> tuple[Samples, F64]:
        """Gather samples `idx` (numbered independently of chunking) and their weights."""


@dataclass(frozen=True)
class LloydResult:
    """Outcome of `lloyd` for each run."""

    centers: F64
    """Shape (runs, k, d)."""
    inertia: F64
    """Shape (runs,): weighted sum of squared distances to the final centres."""
    weights: F64
    """Shape (runs, k): total weight of each final cluster."""
    n_iter: npt.NDArray[np.int64]
    """Shape (runs,): Lloyd iterations run."""


def _relocate_empty(stats: F64, rows: Rows, centers: F64) -> None:
    """Move empty clusters onto the samples farthest from their centres, in place.

    As in scikit-learn: each empty cluster takes one far sample, which leaves the cluster
    it belonged to. Works on the packed sums, before they are turned into centres.
    Only samples away from their centre are taken: one sitting on its centre cannot
    lower the inertia, and with fewer distinct samples than clusters moving it would
    only swap identical centres every iteration (scikit-learn stops relocating when
    every sample sits on its centre). "On its centre" allows for the round-off of a
    mean: a squared distance (from differences) within `_ON_CENTRE` of the squared norms.
    """
    d = centers.shape[2]
    empty = stats[:, :, d] <= 0
    if not empty.any():
        return
    far = rows.far_points(centers, int(empty.sum(axis=1).max()))
    for r in np.flatnonzero(empty.any(axis=1)):
        for slot, j in enumerate(np.flatnonzero(empty[r])):
            if slot >= far.shape[1] or far[r, slot, 1] <= 0:
                break  # fewer usable samples than empty clusters: leave the rest
            wt, old, x = far[r, slot, 1], int(far[r, slot, 2]), far[r, slot, 3:]
            c = centers[r, old]
            # The distance again, from differences: no cancellation of the norms.
            if float(((x - c) ** 2).sum()) <= _ON_CENTRE * max(float(x @ x), float(c @ c)):
                break  # the farthest samples left sit on their centres: nothing to gain
            stats[r, old, :d] -= wt * x
            stats[r, old, d] -= wt
            stats[r, old, d + 1] -= far[r, slot, 0] * wt
            stats[r, j, :d] = wt * x
            stats[r, j, d] = wt
            stats[r, j, d + 1] = 0.0


def centers_from_stats(stats: F64, previous: F64) -> F64:
    """Weighted means from packed stats; a cluster with no weight keeps its centre."""
    d = previous.shape[2]
    weights = stats[:, :, d : d + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        new = stats[:, :, :d] / weights
    return np.where(weights > 0, new, previous)


def lloyd(
    rows: Rows,
    centers: F64,
    *,
    max_iter: int,
    tol: float,
    eps: float | None = None,
    log: Callable[[str], None] | None = None,
) -> LloydResult:
    """Run Lloyd's algorithm from several sets of initial centres at once.

    Each iteration is one pass over the rows computing every active run's statistics,
    so restarts share the reads. A run stops when the squared shift of its centres is at
    most `tol` (absolute); a shift of zero means its labels no longer change. After a
    non-strict stop a last pass computes inertia and weights for the final centres, as
    scikit-learn's final E-step does.

    Parameters
    ----------
    rows : Rows
        The weighted samples.
    centers : ndarray of shape (runs, k, d)
        Initial centres of each run.
    max_iter : int
        Most iterations per run.
    tol : float
        Absolute tolerance on the squared centre shift (summed over centres).
    eps : float, optional
        Also stop once no centre moves by more than `eps` (OpenCV's ``EPS``
        criterion for ``cv2.kmeans``).
    log : callable, optional
        Called with a line of progress each iteration and at convergence, in
        scikit-learn's verbose wording (``print`` for ``verbose=1``).

    Returns
    -------
    LloydResult
    """
    centers = np.array(centers, dtype=np.float64)
    runs, k, _ = centers.shape
    inertia = np.zeros(runs)
    weights = np.zeros((runs, k))
    n_iter = np.zeros(runs, dtype=np.int64)
    active = np.ones(runs, dtype=bool)
    final_pass = np.zeros(runs, dtype=bool)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        stats = rows.stats(centers[idx])
        # With unchanged centres this pass's assignment is final: keep its inertia and
        # weights before relocation edits the sums.
        inertia[idx] = stats[:, :, -1].sum(axis=1)
        weights[idx] = stats[:, :, -2]
        _relocate_empty(stats, rows, centers[idx])
        new = centers_from_stats(stats, centers[idx])
        moved = ((new - centers[idx]) ** 2).sum(axis=2)
        shift = moved.sum(axis=1)
        strict = shift == 0
        stopped = shift <= tol
        if eps is not None:
            stopped |= moved.max(axis=1) <= eps**2
        if log is not None:
            _log_iteration(log, idx, runs, n_iter[idx], inertia[idx], shift, strict, stopped, tol)
        n_iter[idx] += 1
        centers[idx] = new
        final_pass[idx] = ~strict
        active[idx[stopped]] = False
    todo = np.flatnonzero(final_pass)
    if todo.size:
        stats = rows.stats(centers[todo])
        inertia[todo] = stats[:, :, -1].sum(axis=1)
        weights[todo] = stats[:, :, -2]
    return LloydResult(centers=centers, inertia=inertia, weights=weights, n_iter=n_iter)


def lloyd_dense(
    X: FloatArray,
    w: F64,
    centers: F64,
    *,
    max_iter: int,
    tol: float,
    eps: float | None = None,
    bounds: bool = False,
) -> LloydResult:
    """`lloyd` on dense in-memory samples, each run compiled from start to end.

    The same steps, stopping rules and relocation as `lloyd`, for inputs small enough
    that `lloyd`'s NumPy calls each iteration cost more than the arithmetic. Without
    `bounds` every iteration computes every distance: best for a few thousand samples
    times clusters (a thumbnail's coarse 4-bit histogram, 800 colours and 3 restarts of
    k=8, in about 1 ms instead of 11). With `bounds`, Hamerly's bounds are kept between
    iterations as `lloyd` keeps them for a single run, so later iterations search few
    samples: for tens of thousands (a thumbnail's distinct colours). Runs one after the
    other.
    """
    dense: F64 = np.ascontiguousarray(X, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    starts = np.asarray(centers, dtype=np.float64)
    runs, k, _ = starts.shape
    out = np.empty_like(starts)
    inertia = np.empty(runs)
    weights = np.empty((runs, k))
    n_iter = np.empty(runs, dtype=np.int64)
    eps_sq = -1.0 if eps is None else float(eps) ** 2
    for r in range(runs):
        out[r], inertia[r], weights[r], n_iter[r] = (bounded_lloyd if bounds else dense_lloyd)(
            dense, w, np.ascontiguousarray(starts[r]), max_iter, tol, eps_sq, _ON_CENTRE
        )
    return LloydResult(centers=out, inertia=inertia, weights=weights, n_iter=n_iter)


def _log_iteration(
    log: Callable[[str], None],
    idx: npt.NDArray[np.intp],
    runs: int,
    it: npt.NDArray[np.int64],
    inertia: F64,
    shift: F64,
    strict: npt.NDArray[np.bool_],
    stopped: npt.NDArray[np.bool_],
    tol: float,
) -> None:
    """One iteration's verbose lines for each active run, as scikit-learn words them."""
    for pos, r in enumerate(idx):
        head = f"Run {r}: " if runs > 1 else ""
        log(f"{head}Iteration {it[pos]}, inertia {inertia[pos]}.")
        if strict[pos]:
            log(f"{head}Converged at iteration {it[pos]}: strict convergence.")
        elif stopped[pos]:
            log(
                f"{head}Converged at iteration {it[pos]}: center shift {shift[pos]} within "
                f"tolerance {tol}."
            )


def kmeans_plusplus(
    X: Samples,
    n_clusters: int,
    *,
    sample_weight: F64,
    rng: np.random.Generator,
    n_local_trials: int | None = None,
    order: npt.NDArray[np.intp] | None = None,
) -> tuple[F64, npt.NDArray[np.intp]]:
    """Greedy weighted k-means++ seeding (Arthur and Vassilvitskii, 2007).

    Each new centre is the best of `n_local_trials` candidates drawn with probability
    proportional to weight times squared distance to the nearest chosen centre, "best"
    meaning the lowest resulting potential, as in scikit-learn. Candidates are drawn by
    inverting the cumulative weights, so integer weights select the same samples as
    repeating rows would.

    Parameters
    ----------
    X : ndarray or CSR of shape (n, d)
        Samples.
    n_clusters : int
        Number of centres.
    sample_weight : ndarray of shape (n,)
        Non-negative weights, not all zero.
    rng : numpy.random.Generator
        Source of randomness.
    n_local_trials : int, optional
        Candidates per step; ``2 + int(log(k))`` by default.
    order : ndarray of shape (n,), optional
        Invert the cumulative weights over the rows in this order instead of their own
        (see `kmdist.kmeans._lloyd_kernels.canonical_order`); only the weights are
        permuted, never `X`.

    Returns
    -------
    centers : ndarray of shape (n_clusters, d)
    indices : ndarray of shape (n_clusters,)
        Row of `X` each centre was taken from.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]])
    >>> centers, idx = kmeans_plusplus(X, 2, sample_weight=np.ones(4),
    ...                                rng=np.random.default_rng(0))
    >>> sorted(int(c) for c in centers[:, 0])
    [0, 10]
    """
    d = X.shape[1]
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    w = np.asarray(sample_weight, dtype=np.float64)
    draw = _drawer(rng, w, order)
    if isinstance(X, CSR):
        return _kmeans_plusplus_csr(X, n_clusters, w, draw, n_local_trials)
    x_sq = np.einsum("ij,ij->i", X, X)
    indices = np.empty(n_clusters, dtype=np.intp)
    centers = np.empty((n_clusters, d), dtype=np.float64)
    first = int(draw(w, 1)[0])
    indices[0], centers[0] = first, X[first]
    closest = squared_distances(X, X[first : first + 1], x_sq)[:, 0].astype(np.float64)
    # squared_distances(X[cand], X, x_sq[cand]) with its two passes over X hoisted out
    # of the loop: -2 X and |X|^2 (= x_sq) are the same every step. Same bits.
    minus_2x_t = (-2.0 * X).T
    for c in range(1, n_clusters):
        cand = draw(w * closest, n_local_trials)
        d = X[cand] @ minus_2x_t
        d += x_sq[None, :]
        d += x_sq[cand][:, None]
        np.maximum(d, 0, out=d)
        dist = d.astype(np.float64)
        np.minimum(dist, closest[None, :], out=dist)
        best = int(np.argmin(dist @ w))
        closest = dist[best]
        indices[c], centers[c] = cand[best], X[cand[best]]
    return centers, indices


def _drawer(
    rng: np.random.Generator, w: F64, order: npt.NDArray[np.intp] | None
) -> Callable[[F64, int], npt.NDArray[np.intp]]:
    """Draw row indices with probability proportional to `p`, or to `w` if p sums to 0.

    Inverts the cumulative sums of `p` over the rows in `order` (their own by default),
    so that the rows drawn depend on that order only.
    """
    n = w.shape[0]

    def draw(p: F64, size: int) -> npt.NDArray[np.intp]:
        cum = np.cumsum(p if order is None else p[order])
        if cum[-1] <= 0:
            # Every sample sits on a chosen centre (fewer distinct points than k).
            cum = np.cumsum(w if order is None else w[order])
        picks = np.searchsorted(cum, rng.random(size) * cum[-1], side="right")
        picks = np.minimum(picks, n - 1)
        return (picks if order is None else order[picks]).astype(np.intp)

    return draw


def _kmeans_plusplus_csr(
    X: CSR,
    n_clusters: int,
    w: F64,
    draw: Callable[[F64, int], npt.NDArray[np.intp]],
    n_local_trials: int,
) -> tuple[F64, npt.NDArray[np.intp]]:
    """`kmeans_plusplus` for sparse rows: the same draws, distances from sparse rows."""
    d = X.shape[1]
    x_sq = X.row_norms_sq()
    indices = np.empty(n_clusters, dtype=np.intp)
    centers = np.empty((n_clusters, d), dtype=np.float64)
    first = int(draw(w, 1)[0])
    indices[0], centers[0] = first, X[first : first + 1].toarray()[0]
    closest = squared_distances(X, centers[:1], x_sq)[:, 0]
    for c in range(1, n_clusters):
        cand = draw(w * closest, n_local_trials)
        dist = squared_distances(X, X[cand].toarray(), x_sq).T
        np.minimum(dist, closest[None, :], out=dist)
        best = int(np.argmin(dist @ w))
        closest = dist[best]
        indices[c], centers[c] = cand[best], X[cand[best : best + 1]].toarray()[0]
    return centers, indices


def seed_centers(
    rows: Rows,
    n_clusters: int,
    init: Literal["k-means++", "random"],
    n_runs: int,
    rng: np.random.Generator,
    sample_size: int,
    *,
    order_free: bool = False,
) -> F64:
    """Seed `n_runs` sets of initial centres, each on a uniform sample of the rows.

    The sample's indices are drawn on the client from `rng` alone, so the sample, and
    hence the centres, do not depend on how the rows are chunked. ``"random"`` picks
    distinct samples of positive weight.

    With `order_free`, a seeding on all the rows visits them in a canonical order (by
    their values, see `canonical_order`) instead of their given order, so that the
    centres do not depend on the order of the rows, and integer weights give the
    centres repeated rows would, in any order.

    Returns
    -------
    ndarray of shape (n_runs, n_clusters, n_features)
    """
    n = rows.n_samples
    out = np.empty((n_runs, n_clusters, rows.n_features))
    full = sample_size >= n
    everything: tuple[Samples, F64] | None = None
    order: npt.NDArray[np.intp] | None = None
    for r in range(n_runs):
        if full and order_free:
            if everything is None:
                # All rows, in place for in-memory rows (no copy), and their order.
                everything = (
                    (rows.X, rows.w)  # type: ignore[attr-defined]
                    if getattr(rows, "in_memory", False)
                    else rows.take(np.arange(n))
                )
                order = canonical_order(everything[0])
            Xs, ws = everything
        else:
            idx = np.arange(n) if full else np.sort(rng.choice(n, size=sample_size, replace=False))
            Xs, ws = rows.take(idx)
        if init == "k-means++":
            if ws.sum() <= 0:
                ws = np.ones_like(ws)
            out[r] = kmeans_plusplus(Xs, n_clusters, sample_weight=ws, rng=rng, order=order)[0]
        else:
            positive = np.flatnonzero(ws > 0)
            if order is not None:
                positive = order[ws[order] > 0]
            pool = positive if positive.size >= n_clusters else np.arange(len(ws))
            out[r] = dense(Xs[rng.permutation(pool)[:n_clusters]])
    return out
