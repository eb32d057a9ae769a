"""Lloyd driver details (kmdist.kmeans._lloyd, _lloyd_kernels): relocation, order, logs."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import kmdist
from kmdist import KMeans
from kmdist.kmeans._lloyd_kernels import canonical_order, pairwise_distances
from kmdist.kmeans._sparse import from_scipy


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


def test_canonical_order_ignores_row_order_and_representation(rng):
    import scipy.sparse as sp

    X = rng.normal(size=(500, 4))
    X[X < 0] = 0
    X = np.vstack([X, X[:50]])  # duplicates end up next to each other
    perm = rng.permutation(len(X))
    assert_array_equal(X[canonical_order(X)], X[perm][canonical_order(X[perm])])
    csr = from_scipy(sp.csr_matrix(X), np.dtype(np.float64))
    assert_array_equal(canonical_order(csr), canonical_order(X))


def test_canonical_order_breaks_equal_keys_by_value():
    # Rows [r1, 0] and [0, r0] have the same key r1 * r0 = r0 * r1 (r the projection).
    r = np.random.default_rng([0x6B6D64, 2]).uniform(0.5, 1.5, 2)
    X = np.array([[r[1], 0.0], [0.0, r[0]], [5.0, 5.0]])
    a = canonical_order(X)
    b = canonical_order(X[::-1])
    assert_array_equal(X[a], X[::-1][b])
    assert_array_equal(X[a][:2], [[0.0, r[0]], [r[1], 0.0]])


def test_weights_equal_repeated_rows_in_any_order(rng):
    X = rng.normal(size=(40, 3))
    w = rng.integers(0, 4, len(X))
    w[0] = 1
    repeated = np.repeat(X, w, axis=0)
    shuffled = rng.permutation(len(X))
    a = KMeans(4, random_state=3, n_init=2).fit(X[shuffled], sample_weight=w[shuffled])
    b = KMeans(4, random_state=3, n_init=2).fit(repeated)
    assert_allclose(a.transform(X), b.transform(X), rtol=1e-10)


def test_pairwise_distances_exact_at_zero(rng):
    C = rng.normal(size=(5, 3)) * 1e3
    d = pairwise_distances(C, C)
    assert_array_equal(np.diag(d), 0.0)
    assert_allclose(d, np.sqrt(((C[:, None] - C[None]) ** 2).sum(axis=2)))


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


@pytest.mark.parametrize("case", range(24))
def test_compiled_dense_lloyd_runs_as_lloyd_does(case):
    """`lloyd_dense` (every iteration compiled) takes `lloyd`'s steps: same iterations,
    centres, weights and inertia, with duplicates, zero weights, empty clusters, `tol`
    and `eps`."""
    from kmdist.kmeans._lloyd import lloyd, lloyd_dense
    from kmdist.kmeans._rows import NumpyRows

    rng = np.random.default_rng(case)
    n, d, k = int(rng.integers(5, 2000)), int(rng.integers(1, 5)), int(rng.integers(1, 16))
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 100)
    if case % 4 == 0:
        X = np.round(X)  # duplicate samples
    w = rng.uniform(0.1, 5, n) if case % 2 else np.ones(n)
    if case % 3 == 0:
        w[rng.random(n) < 0.3] = 0.0
    # Seeds far from the data leave clusters empty: relocation runs.
    starts = X[rng.choice(n, (3, k))] if case % 5 else rng.normal(size=(3, k, d)) * 500
    tol = 0.0 if case % 4 else 1e-4
    eps = 0.5 if case % 6 == 0 else None
    want = lloyd(NumpyRows(X, w), starts, max_iter=300, tol=tol, eps=eps)
    got = lloyd_dense(X, w, starts, max_iter=300, tol=tol, eps=eps)
    assert_array_equal(got.n_iter, want.n_iter)
    assert_allclose(got.centers, want.centers, rtol=1e-9, atol=1e-9)
    assert_allclose(got.weights, want.weights, rtol=1e-12)
    assert_allclose(got.inertia, want.inertia, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", range(24))
def test_compiled_bounded_lloyd_runs_as_single_run_lloyd_does(case):
    """`lloyd_dense(bounds=True)` keeps Hamerly's bounds between compiled iterations as
    `lloyd` keeps them for one run (`NumpyRows`' bounds): the same iterations, and the
    same centres, weights and inertia to the bit, with duplicates, zero weights, empty
    clusters (relocation), `tol`, `eps` and a single centre."""
    from kmdist.kmeans._lloyd import lloyd, lloyd_dense
    from kmdist.kmeans._rows import NumpyRows

    rng = np.random.default_rng(1000 + case)
    n, d = int(rng.integers(5, 20_000)), int(rng.integers(1, 5))
    k = 1 if case == 7 else int(rng.integers(2, 20))
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 100)
    if case % 4 == 0:
        X = np.round(X)  # duplicate samples
    w = rng.uniform(0.1, 5, n) if case % 2 else np.ones(n)
    if case % 3 == 0:
        w[rng.random(n) < 0.3] = 0.0
    # Seeds far from the data leave clusters empty: relocation runs.
    start = X[rng.choice(n, (1, k))] if case % 5 else rng.normal(size=(1, k, d)) * 500
    tol = 0.0 if case % 4 else 1e-4
    eps = 0.5 if case % 6 == 0 else None
    max_iter = 5 if case == 11 else 300  # stopped by max_iter: the final pass still runs
    want = lloyd(NumpyRows(X, w), start, max_iter=max_iter, tol=tol, eps=eps)
    got = lloyd_dense(X, w, start, max_iter=max_iter, tol=tol, eps=eps, bounds=True)
    assert_array_equal(got.n_iter, want.n_iter)
    assert_array_equal(got.centers, want.centers)
    assert_array_equal(got.weights, want.weights)
    assert_allclose(got.inertia, want.inertia, rtol=1e-12, atol=1e-9)
