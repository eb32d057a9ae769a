"""Sparse rows (kmdist.kmeans._sparse) and the estimators on SciPy sparse input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal

from kmdist import KMeans, MiniBatchKMeans
from kmdist.kmeans._lloyd import nearest, squared_distances
from kmdist.kmeans._sparse import from_scipy


def test_csr_operations_match_dense(sparse_data, rng):
    X = sparse_data
    csr = from_scipy(sp.csc_matrix(X), np.dtype(np.float64))
    idx = rng.integers(0, len(X), 50)
    assert_array_equal(csr.toarray(), X)
    assert_array_equal(csr[idx].toarray(), X[idx])
    assert_array_equal(csr[10:40].toarray(), X[10:40])
    assert_allclose(csr.row_norms_sq(), (X**2).sum(axis=1))
    C = rng.normal(size=(4, 8))
    assert_allclose(csr.dot_t(C), X @ C.T)
    assert_allclose(squared_distances(csr, C), squared_distances(X, C), atol=1e-12)
    w = rng.random(len(X))
    labels = rng.integers(0, 4, len(X))
    ref = np.stack([(w[labels == j, None] * X[labels == j]).sum(axis=0) for j in range(4)])
    assert_allclose(csr.label_sums(w, labels, 4), ref)
    assert_array_equal(nearest(csr, C)[0], nearest(X, C)[0])


def test_duplicate_entries_are_summed():
    coo = sp.coo_matrix(([1.0, 2.0, 5.0], ([0, 0, 1], [1, 1, 0])), shape=(2, 2))
    csr = from_scipy(coo, np.dtype(np.float64))
    assert_array_equal(csr.toarray(), [[0.0, 3.0], [5.0, 0.0]])
    assert_allclose(csr.row_norms_sq(), [9.0, 25.0])


@pytest.mark.parametrize("Est", [KMeans, MiniBatchKMeans])
@pytest.mark.parametrize("fmt", [sp.csr_matrix, sp.csr_array, sp.csc_matrix, sp.coo_array])
def test_sparse_fit_equals_dense(Est, fmt, sparse_data, rng):
    w = rng.random(len(sparse_data))
    dense = Est(4, random_state=0, n_init=2).fit(sparse_data, sample_weight=w)
    sparse = Est(4, random_state=0, n_init=2).fit(fmt(sparse_data), sample_weight=w)
    assert_array_equal(sparse.labels_, dense.labels_)
    assert_allclose(sparse.cluster_centers_, dense.cluster_centers_, rtol=1e-9, atol=1e-12)
    assert sparse.inertia_ == pytest.approx(dense.inertia_, rel=1e-9)
    assert_allclose(sparse.transform(fmt(sparse_data)), dense.transform(sparse_data), atol=1e-7)
    assert_array_equal(sparse.predict(sparse_data), dense.labels_)


def test_sparse_float32_kept(sparse_data):
    km = KMeans(4, random_state=0).fit(sp.csr_matrix(sparse_data.astype(np.float32)))
    assert km.cluster_centers_.dtype == np.float32
