"""The Hamerly-bounded Lloyd statistics of NumpyRows (kmdist.kmeans._rows)."""

from __future__ import annotations

import numpy as np
import pytest

from kmdist.kmeans import _lloyd_kernels


@pytest.mark.parametrize(
    ("dtype", "k", "threads"),
    [(np.float64, 7, 1), (np.float32, 7, 1), (np.float64, 7, 3), (np.float64, 1, 3)],
)
def test_hamerly_bounds_give_the_full_search_statistics(monkeypatch, rng, dtype, k, threads):
    # Bounds stored net of the summed centre shifts skip samples; the statistics of
    # every step must still be those of a search of every sample against every centre,
    # also when each step (and the first, unlabelled one) is split over threads.
    from kmdist.kmeans._lloyd import block_stats
    from kmdist.kmeans._rows import NumpyRows

    if threads > 1:
        monkeypatch.setattr(_lloyd_kernels, "_PARALLEL_ABOVE", 1 << 10)
        monkeypatch.setattr(_lloyd_kernels, "_threads", lambda: threads)
    X = rng.normal(size=(5000, 3)).astype(dtype) * 40 + 128
    w = rng.integers(1, 9, X.shape[0]).astype(np.float64)
    rows = NumpyRows(X, w)
    centers = X[rng.choice(X.shape[0], k, replace=False)].astype(np.float64)
    for step in range(25):
        got = rows.stats(centers[None])
        want = block_stats(X, w, centers[None])
        np.testing.assert_allclose(got[0, :, :4], want[0, :, :4], rtol=1e-9, atol=1e-6)
        # Inertia: the reference computes distances in X's precision.
        rtol = 1e-5 if dtype == np.float32 else 1e-9
        np.testing.assert_allclose(got[0, :, 4], want[0, :, 4], rtol=rtol)
        # Large moves early, small late: both bound outcomes are exercised.
        centers = centers + rng.normal(size=centers.shape) * (8.0 if step < 5 else 0.3)
