"""Fixtures of the k-means tests."""

from __future__ import annotations

import pytest
from sklearn.datasets import make_blobs


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(n_samples=300, centers=4, cluster_std=0.60, random_state=0)


@pytest.fixture
def sparse_data(rng):
    X = rng.normal(size=(300, 8))
    X[X < 0.3] = 0.0  # about 60% zeros
    return X
