"""Lloyd driver details (kmdist.kmeans._lloyd): relocation, restarts in any order, logs."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import kmdist
from kmdist import KMeans


def test_fewer_distinct_points_than_clusters_stops_early():
    # Issue 16: an empty cluster was relocated onto a sample sitting on its centre every
    # iteration, for 300 iterations (300 passes over Dask input).
    X = np.array([[0.6, 0.1], [0.1, -0.1]]).repeat(3, 0)
    with pytest.warns(kmdist.ConvergenceWarning, match=r"distinct clusters \(2\)"):
        km = KMeans(3, tol=0, random_state=0).fit(X)
    assert km.n_iter_ <= 3


def test_relocation_still_moves_a_far_empty_centre():
    X = np.array([[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [1.0, 1.0]])
    km = KMeans(2, init=np.array([[0.5, 0.5], [3.0, 3.0]]), n_init=1).fit(X)
    assert km.inertia_ == pytest.approx(0.25)
    assert km.n_iter_ == 3


def test_weights_equal_repeated_rows_in_any_order(rng):
    X = rng.normal(size=(40, 3))
    w = rng.integers(0, 4, len(X))
    w[0] = 1
    repeated = np.repeat(X, w, axis=0)
    shuffled = rng.permutation(len(X))
    a = KMeans(4, random_state=3, n_init=2).fit(X[shuffled], sample_weight=w[shuffled])
    b = KMeans(4, random_state=3, n_init=2).fit(repeated)
    assert_allclose(a.transform(X), b.transform(X), rtol=1e-10)


@pytest.mark.parametrize("tol", [0.0, 1e-2])
def test_verbose_lines(tol, capsys):
    X = np.random.default_rng(0).normal(size=(200, 3))
    KMeans(3, random_state=0, verbose=1, tol=tol, algorithm="elkan").fit(X)
    out = capsys.readouterr().out
    assert "Initialization complete" in out and "Iteration 0, inertia" in out
    assert ("strict convergence" if tol == 0 else "within tolerance") in out


def test_elkan_is_lloyd(rng):
    X = rng.normal(size=(300, 4))
    a = KMeans(5, random_state=0).fit(X)
    b = KMeans(5, random_state=0, algorithm="elkan").fit(X)
    assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    with pytest.raises(ValueError, match="algorithm must be 'lloyd' or 'elkan', got 'full'"):
        KMeans(2, algorithm="full").fit(X)
