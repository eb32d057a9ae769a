"""Mini-batch k-means steps, after scikit-learn's algorithm, over any `Rows`.

Shared by `MiniBatchKMeans` and the palettes of images that are not 8-bit RGB.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt

from kmdist.kmeans._lloyd import F64, Samples, block_stats, dense, seed_centers
from kmdist.kmeans._rows import ConcatRows, DaskRows, InMemoryRows, in_memory_rows

__all__ = ["MiniBatchState", "best_seeding", "run_minibatch"]

Rows = InMemoryRows | DaskRows | ConcatRows
Log = Callable[[str], None]
SeedFn = Callable[[Samples, F64], F64]
"""Seeds centres from a sample and its weights (a callable ``init``)."""


def best_seeding(
    rows: Rows,
    n_clusters: int,
    init: Literal["k-means++", "random"] | F64 | SeedFn,
    n_runs: int,
    init_size: int,
    rng: np.random.Generator,
    log: Log | None = None,
) -> F64:
    """Seed `n_runs` times on `init_size` random samples; keep the best on a validation set.

    As scikit-learn's MiniBatchKMeans: the validation samples are drawn first, and the
    seeding with the lowest inertia on them wins. Given centres are returned as they are;
    a callable `init` seeds from each run's sample of `init_size` rows.
    """
    if not isinstance(init, str) and not callable(init):
        return np.asarray(init, dtype=np.float64)
    valid_X, valid_w = rows.take(rng.integers(0, rows.n_samples, init_size))
    if callable(init):
        candidates = np.empty((n_runs, n_clusters, rows.n_features))
        for r in range(n_runs):
            idx = np.sort(rng.choice(rows.n_samples, size=init_size, replace=False))
            candidates[r] = init(*rows.take(idx))
    else:
        candidates = seed_centers(rows, n_clusters, init, n_runs, rng, init_size)
    if len(candidates) == 1:
        return candidates[0]
    inertia = block_stats(valid_X, valid_w, candidates)[:, :, -1].sum(axis=1)
    if log is not None:
        for r, value in enumerate(inertia):
            log(f"Inertia for init {r + 1}/{n_runs}: {value}")
    return candidates[int(np.argmin(inertia))]


def run_minibatch(
    rows: Rows,
    centers: F64,
    state: MiniBatchState,
    *,
    max_steps: int,
    tol: float,
    max_no_improvement: int | None,
    batch_rng: np.random.Generator,
    reassign_rng: np.random.Generator,
    pool_values: int,
    log: Log | None = None,
) -> tuple[F64, int]:
    """Run mini-batch steps until early stopping or `max_steps`.

    Batches are drawn uniformly with replacement by sample index from `batch_rng`, a
    pool of batches (about `pool_values` values) at a time, for every kind of rows, so
    the sequence of batches is the same whatever the input type and chunking; for Dask
    input a pool is one gather from the workers. Reassignments draw from their own
    stream, `reassign_rng`, so they do not shift the batch sequence. `log` receives
    scikit-learn's verbose lines (each step's inertia, the reason for stopping).

    Returns
    -------
    centers : ndarray of shape (k, d)
    steps : int
        Mini-batch steps run.
    """
    n, batch = rows.n_samples, state.batch_size
    pool_steps = max(1, pool_values // (batch * rows.n_features))
    step = 0
    while step < max_steps:
        chunk = min(pool_steps, max_steps - step)
        pool_X, pool_w = rows.take(batch_rng.integers(0, n, chunk * batch))
        for b in range(chunk):
            xb = pool_X[b * batch : (b + 1) * batch]
            wb = pool_w[b * batch : (b + 1) * batch]
            new, batch_inertia = state.step(xb, wb, centers, reassign_rng)
            shift = float(((new - centers) ** 2).sum()) if tol > 0 else 0.0
            centers = new
            step += 1
            stop = state.converged(step, shift, tol, batch_inertia, max_no_improvement)
            if log is not None:
                log(
                    f"Minibatch step {step}/{max_steps}: mean batch inertia: "
                    f"{batch_inertia / batch}, ewa inertia: {state.ewa_inertia}"
                )
                if stop:
                    log(f"Converged ({state.stop_reason}) at step {step}/{max_steps}")
            if stop:
                return centers, step
    return centers, step


class MiniBatchState:
    """Counts, smoothed inertia and reassignment clock of a mini-batch run."""

    def __init__(
        self,
        *,
        counts: F64,
        batch_size: int,
        n_samples: int,
        reassignment_ratio: float,
        log: Log | None = None,
    ) -> None:
        self.log = log
        self.stop_reason = ""
        self.counts = counts
        self.batch_size = batch_size
        self.n_samples = n_samples
        self.reassignment_ratio = reassignment_ratio
        self.since_reassign = 0
        self.ewa_inertia: float | None = None
        self.ewa_min: float | None = None
        self.no_improvement = 0

    def _reassign_due(self) -> bool:
        # scikit-learn's clock: reassign when a centre is empty or every 10 * (1 + min
        # count) steps, so that reassignment becomes rare as counts grow.
        self.since_reassign += 1
        if (self.counts == 0).any() or self.since_reassign >= 10 * (1 + self.counts.min()):
            self.since_reassign = 0
            return True
        return False

    def _update(self, stats: F64, centers: F64) -> F64:
        """Move each centre to the running weighted mean of its samples."""
        d = centers.shape[1]
        sums, wsum = stats[:, :d], stats[:, d]
        hit = wsum > 0
        new = centers.copy()
        total = self.counts[hit] + wsum[hit]
        new[hit] = (centers[hit] * self.counts[hit, None] + sums[hit]) / total[:, None]
        self.counts[hit] = total
        return new

    def _to_reassign(self, n_batch: int) -> npt.NDArray[np.bool_]:
        if self.reassignment_ratio <= 0:
            return np.zeros(self.counts.shape, dtype=bool)
        to = self.counts < self.reassignment_ratio * self.counts.max()
        if to.sum() > 0.5 * n_batch:
            keep = np.argsort(self.counts, kind="stable")[int(0.5 * n_batch) :]
            to[keep] = False
        return to

    def _finish_reassign(self, to: npt.NDArray[np.bool_]) -> None:
        if (~to).any():
            self.counts[to] = self.counts[~to].min()

    def step(self, X: Samples, w: F64, centers: F64, rng: np.random.Generator) -> tuple[F64, float]:
        """One step on an in-memory batch; returns new centres and the batch inertia."""
        return self.step_rows(in_memory_rows(X, w), centers, rng)

    def step_rows(self, rows: Rows, centers: F64, rng: np.random.Generator) -> tuple[F64, float]:
        """One step whose batch is all of `rows`; returns new centres and batch inertia.

        For Dask rows the batch statistics are computed on the workers and only the
        samples picked for reassignment travel.
        """
        stats = rows.stats(centers[None])[0]
        new = self._update(stats, centers)
        if self._reassign_due():
            to = self._to_reassign(rows.n_samples)
            n_re = int(to.sum())
            if n_re:
                w = rows.all_weights()
                p = w / w.sum()
                n_re = min(n_re, int((p > 0).sum()))
                picks = np.sort(rng.choice(rows.n_samples, size=n_re, replace=False, p=p))
                new[np.flatnonzero(to)[:n_re]] = dense(rows.take(picks)[0])
                if self.log is not None:
                    self.log(f"[MiniBatchKMeans] Reassigning {n_re} cluster centers.")
            self._finish_reassign(to)
        return new, float(stats[:, -1].sum())

    def converged(
        self,
        step: int,
        shift: float,
        tol: float,
        batch_inertia: float,
        max_no_improvement: int | None,
    ) -> bool:
        """scikit-learn's early stopping on the smoothed batch inertia or centre shift."""
        batch_inertia /= self.batch_size
        if step == 1:
            return False  # the first step's inertia reflects the seeding only
        if self.ewa_inertia is None:
            self.ewa_inertia = batch_inertia
        else:
            alpha = min(1.0, self.batch_size * 2.0 / (self.n_samples + 1))
            self.ewa_inertia = self.ewa_inertia * (1 - alpha) + batch_inertia * alpha
        if tol > 0 and shift <= tol:
            self.stop_reason = "small centers change"
            return True
        if self.ewa_min is None or self.ewa_inertia < self.ewa_min:
            self.no_improvement = 0
            self.ewa_min = self.ewa_inertia
        else:
            self.no_improvement += 1
        if max_no_improvement is not None and self.no_improvement >= max_no_improvement:
            self.stop_reason = "lack of improvement in inertia"
            return True
        return False
