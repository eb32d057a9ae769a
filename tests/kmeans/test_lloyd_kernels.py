"""Compiled Lloyd kernels (kmdist.kmeans._lloyd_kernels): Hamerly steps, order, runs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal

from kmdist.kmeans._lloyd_kernels import canonical_order, hamerly_step, pairwise_distances
from kmdist.kmeans._sparse import from_scipy


def fresh_bounds(X, w, centers):
    """Bounds as `_rows._Bounds` sets them before its first step: nothing labelled yet."""
    n, k = X.shape[0], centers.shape[0]
    return SimpleNamespace(
        x_sq=None,
        centers=centers.copy(),
        w=w,
        labels=np.full(n, -1, dtype=np.int32),
        upper=np.full(n, np.inf),
        lower=np.zeros(n),
        drift=np.zeros(k),
        max_drift=0.0,
        sums=np.zeros((k, X.shape[1])),
        weights=np.zeros(k),
        sq=np.zeros(k),
    )


def test_hamerly_step_searches_all_first_then_only_what_the_bounds_cannot_settle(rng):
    X = rng.normal(size=(3000, 3))
    w = rng.uniform(0.5, 2.0, len(X))
    centers = X[:6].copy()
    bounds = fresh_bounds(X, w, centers)
    assert hamerly_step(bounds, X, centers) == len(X)  # unlabelled: every sample searched
    dist = ((X[:, None] - centers[None]) ** 2).sum(axis=2)
    labels = dist.argmin(axis=1)
    assert_array_equal(bounds.labels, labels)
    assert_allclose(bounds.weights, np.bincount(labels, w, minlength=6))
    assert_allclose(bounds.sums[2], (w[labels == 2, None] * X[labels == 2]).sum(axis=0))
    assert_allclose(bounds.sq, np.bincount(labels, w * (X**2).sum(axis=1), minlength=6))
    # Centres unchanged: the bounds settle every sample not on a near-tie.
    root = np.sqrt(np.sort(dist, axis=1))
    near_ties = int((root[:, 1] - root[:, 0] < 1e-5 * (1 + root.max())).sum())
    before = bounds.sums.copy()
    assert hamerly_step(bounds, X, centers) <= near_ties
    assert_array_equal(bounds.sums, before)
    # Moved centres: labels and moments follow a full search.
    moved = centers + rng.normal(size=centers.shape) * 0.2
    searched = hamerly_step(bounds, X, moved)
    labels = ((X[:, None] - moved[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert 0 < searched < len(X)
    assert_array_equal(bounds.labels, labels)
    assert_allclose(bounds.weights, np.bincount(labels, w, minlength=6), rtol=1e-12)


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


def test_canonical_order_sorts_a_run_of_equal_keys_by_value_in_any_input_order(rng):
    # x . r is exactly 0 for [0, 0] and for every multiple of [r1, -r0] (the products
    # r1 * r0 and r0 * r1 are the same float): five distinct rows, one key.
    r = np.random.default_rng([0x6B6D64, 2]).uniform(0.5, 1.5, 2)
    tied = np.array([[m * r[1], -m * r[0]] for m in (2.0, -1.0, 0.0, 1.0, -3.0)])
    X = np.vstack([tied, rng.normal(size=(20, 2)) + 10])
    want = X[canonical_order(X)]
    start = int(np.flatnonzero((want == tied[4]).all(axis=1))[0])
    assert_array_equal(want[start : start + 5], tied[np.lexsort(tied.T[::-1])])
    for _ in range(10):
        perm = rng.permutation(len(X))
        assert_array_equal(X[perm][canonical_order(X[perm])], want)
    csr = from_scipy(sp.csr_matrix(X), np.dtype(np.float64))
    assert_array_equal(X[canonical_order(csr)], want)


def test_canonical_order_sorts_a_run_of_equal_keys_starting_with_equal_rows():
    # A, A, B, 0 and 2A all have the key 0 (A = [r1, -r0], B = -A); a run that begins
    # with two equal rows was once sorted only from its first differing pair, so the
    # order depended on the input's.
    import itertools

    r = np.random.default_rng([0x6B6D64, 2]).uniform(0.5, 1.5, 2)
    a = np.array([r[1], -r[0]])
    X = np.array([a, a, -a, np.zeros(2), 2 * a])
    orders = {
        tuple(map(tuple, X[list(p)][canonical_order(X[list(p)])]))
        for p in itertools.permutations(range(len(X)))
    }
    assert len(orders) == 1
    (got,) = orders
    assert_array_equal(got, X[np.lexsort(X.T[::-1])])


def test_pairwise_distances_exact_at_zero(rng):
    C = rng.normal(size=(5, 3)) * 1e3
    d = pairwise_distances(C, C)
    assert_array_equal(np.diag(d), 0.0)
    assert_allclose(d, np.sqrt(((C[:, None] - C[None]) ** 2).sum(axis=2)))


def _lloyd_case(seed: int, runs: int, n_max: int, k_min: int):
    """Random weighted samples and starts that exercise every rule of `lloyd`:
    duplicates (every 4th), zero weights (every 3rd), starts far from the data that
    leave clusters empty so that relocation runs (every 5th), `tol` and `eps`."""
    rng = np.random.default_rng(seed)
    n, d, k = int(rng.integers(5, n_max)), int(rng.integers(1, 5)), int(rng.integers(k_min, 16))
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 100)
    if seed % 4 == 0:
        X = np.round(X)  # duplicate samples
    w = rng.uniform(0.1, 5, n) if seed % 2 else np.ones(n)
    if seed % 3 == 0:
        w[rng.random(n) < 0.3] = 0.0
    starts = X[rng.choice(n, (runs, k))] if seed % 5 else rng.normal(size=(runs, k, d)) * 500
    tol = 0.0 if seed % 4 else 1e-4
    eps = 0.5 if seed % 6 == 0 else None
    return X, w, starts, tol, eps


@pytest.mark.parametrize("case", range(24))
def test_compiled_dense_lloyd_runs_as_lloyd_does(case):
    """`lloyd_dense` (every iteration compiled) takes `lloyd`'s steps: same iterations,
    centres, weights and inertia, with duplicates, zero weights, empty clusters, `tol`
    and `eps`."""
    from kmdist.kmeans._lloyd import lloyd, lloyd_dense
    from kmdist.kmeans._rows import NumpyRows

    X, w, starts, tol, eps = _lloyd_case(case, runs=3, n_max=2000, k_min=1)
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

    X, w, start, tol, eps = _lloyd_case(1000 + case, runs=1, n_max=20_000, k_min=2)
    if case == 7:
        start = start[:, :1]  # a single centre
    max_iter = 5 if case == 11 else 300  # stopped by max_iter: the final pass still runs
    want = lloyd(NumpyRows(X, w), start, max_iter=max_iter, tol=tol, eps=eps)
    got = lloyd_dense(X, w, start, max_iter=max_iter, tol=tol, eps=eps, bounds=True)
    assert_array_equal(got.n_iter, want.n_iter)
    assert_array_equal(got.centers, want.centers)
    assert_array_equal(got.weights, want.weights)
    assert_allclose(got.inertia, want.inertia, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("case", range(6))
def test_compiled_bounded_lloyd_runs_restarts_one_after_the_other(case):
    """Several runs with `bounds=True` (a photo's restarts on its 6-bit histogram) give
    each run what `lloyd` gives it alone, to the bit."""
    from kmdist.kmeans._lloyd import lloyd, lloyd_dense
    from kmdist.kmeans._rows import NumpyRows

    X, w, starts, tol, eps = _lloyd_case(2000 + case, runs=3, n_max=20_000, k_min=2)
    got = lloyd_dense(X, w, starts, max_iter=300, tol=tol, eps=eps, bounds=True)
    for r in range(starts.shape[0]):
        want = lloyd(NumpyRows(X, w), starts[[r]], max_iter=300, tol=tol, eps=eps)
        assert got.n_iter[r] == want.n_iter[0]
        assert_array_equal(got.centers[r], want.centers[0])
        assert_array_equal(got.weights[r], want.weights[0])
