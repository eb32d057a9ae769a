"""Hypothesis properties: labels do not depend on chunking; weights equal repetition."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from kmdist import KMeans, MiniBatchKMeans
from kmdist.kmeans._lloyd import squared_distances

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def chunked_problem(draw):
    n = draw(st.integers(8, 120))
    d = draw(st.integers(1, 4))
    k = draw(st.integers(1, min(6, n)))
    seed = draw(st.integers(0, 2**32 - 1))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=6)))
    sizes = tuple(np.diff([0, *cuts, n]).tolist())
    # Continuous data: exact distance ties, which no chunking can break consistently,
    # have probability zero.
    X = np.random.default_rng(seed).normal(size=(n, d)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    return X, k, seed, sizes


def clear_margin(X, centers):
    """Samples whose nearest centre beats the second by more than round-off."""
    if len(centers) == 1:
        return np.ones(len(X), dtype=bool)
    d = np.sort(squared_distances(X, centers), axis=1)
    return d[:, 1] - d[:, 0] > 1e-9 * (1 + d[:, 1])


@SETTINGS
@given(chunked_problem())
def test_kmeans_labels_do_not_depend_on_chunking(problem):
    X, k, seed, sizes = problem
    ref = KMeans(k, random_state=seed).fit(X)
    with dask.config.set(scheduler="sync"):
        got = KMeans(k, random_state=seed).fit(da.from_array(X, chunks=(sizes, -1)))
        labels = got.labels_.compute()
    assert_allclose(
        got.cluster_centers_, ref.cluster_centers_, rtol=1e-7, atol=1e-9 * np.abs(X).max()
    )
    sure = clear_margin(X, ref.cluster_centers_)
    assert_array_equal(labels[sure], ref.labels_[sure])


@SETTINGS
@given(chunked_problem())
def test_minibatch_labels_do_not_depend_on_chunking(problem):
    X, k, seed, sizes = problem
    ref = MiniBatchKMeans(k, random_state=seed, batch_size=16).fit(X)
    with dask.config.set(scheduler="sync"):
        got = MiniBatchKMeans(k, random_state=seed, batch_size=16).fit(
            da.from_array(X, chunks=(sizes, -1))
        )
        labels = got.labels_.compute()
    assert_allclose(
        got.cluster_centers_, ref.cluster_centers_, rtol=1e-7, atol=1e-9 * np.abs(X).max()
    )
    sure = clear_margin(X, ref.cluster_centers_)
    assert_array_equal(labels[sure], ref.labels_[sure])


@st.composite
def weighted_problem(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    d = draw(st.integers(1, 3))
    # Distinct integer points: every sum and distance is exact, so "equal" means equal.
    X = np.unique(rng.integers(-20, 20, size=(draw(st.integers(4, 60)), d)), axis=0).astype(float)
    w = rng.integers(0, 5, size=len(X))
    if (w > 0).sum() == 0:
        w[0] = 1
    k = draw(st.integers(1, int((w > 0).sum())))
    return X, w, k, seed


@SETTINGS
@given(weighted_problem())
def test_integer_weights_equal_repeated_rows(problem):
    X, w, k, seed = problem
    weighted = KMeans(k, random_state=seed, tol=0.0).fit(X, sample_weight=w)
    repeated = KMeans(k, random_state=seed, tol=0.0).fit(np.repeat(X, w, axis=0))
    assert_allclose(weighted.cluster_centers_, repeated.cluster_centers_, rtol=1e-12, atol=1e-12)
    assert weighted.inertia_ == np.float64(repeated.inertia_) or np.isclose(
        weighted.inertia_, repeated.inertia_, rtol=1e-12
    )
    assert_array_equal(weighted.labels_[w > 0], repeated.predict(X[w > 0]))
