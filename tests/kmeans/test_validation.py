"""Input validation (kmdist.kmeans._validation): arrays, seeds, weights, feature names."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp

from kmdist import KMeans
from kmdist.kmeans._sparse import CSR
from kmdist.kmeans._validation import (
    check_array,
    check_feature_names,
    check_random_state,
    check_sample_weight,
)


class Frame:
    """DataFrame-like: column names are all `feature_names` looks at."""

    def __init__(self, *columns):
        self.columns = list(columns)


def test_dask_array_of_sparse_blocks_refused(sparse_data):
    X = da.from_array(sparse_data, chunks=(100, 8)).map_blocks(sp.csr_matrix)
    with pytest.raises(TypeError, match="Dask arrays of sparse blocks"):
        KMeans(3).fit(X)


def test_seeds_become_generators():
    gen = np.random.default_rng(3)
    assert check_random_state(gen) is gen  # shared, so successive calls differ
    assert check_random_state(7).random() == check_random_state(np.int64(7)).random()
    legacy = [check_random_state(np.random.RandomState(5)).random() for _ in range(2)]
    assert legacy[0] == legacy[1]
    assert check_random_state(None).random() != check_random_state(None).random()
    with pytest.raises(ValueError, match=r"random_state='a' cannot be used to seed"):
        check_random_state("a")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.ones((2, 2, 2)), r"Expected 2D array, got 3D array instead \(shape=\(2, 2, 2\)\)"),
        (np.ones((4, 0)), r"0 feature\(s\) \(shape=\(4, 0\)\) .* required by Est\."),
        (np.ones((2, 3)), r"2 sample\(s\) \(shape=\(2, 3\)\) while a minimum of 3 is required"),
        (np.ones((4, 2)) * 1j, "Complex data not supported"),
        (sp.csr_matrix(np.ones((4, 2)) * 1j), "Complex data not supported"),
        (da.ones((4, 2)) * 1j, "Complex data not supported"),
        (sp.csr_matrix(np.array([[np.nan, 1.0]] * 4)), "Input X contains NaN"),
    ],
)
def test_bad_arrays_are_named(X, message):
    with pytest.raises(ValueError, match=message):
        check_array(X, estimator="Est", min_samples=3)


def test_arrays_are_converted_to_float_and_dask_stays_lazy():
    assert check_array(np.ones((3, 2), np.int8), estimator="E").dtype == np.float64
    assert check_array(np.ones((3, 2), np.float32), estimator="E").dtype == np.float32
    fortran = np.asfortranarray(np.ones((3, 2)))
    assert not check_array(fortran, estimator="E").flags.c_contiguous
    assert check_array(fortran, estimator="E", order_c=True).flags.c_contiguous
    assert isinstance(check_array(sp.coo_matrix(np.eye(3)), estimator="E"), CSR)
    # Finite values whose sum overflows: the fast check's slow path accepts them (the
    # overflowing sum is expected, NumPy's warning about it is not the point here).
    with np.errstate(over="ignore"):
        check_array(np.full((2, 2), np.finfo(np.float64).max), estimator="E")
    lazy = da.from_array(np.full((10, 4), np.nan, np.float32), chunks=(5, 2))
    got = check_array(lazy, estimator="E")
    assert got.dtype == np.float32 and got.numblocks == (2, 1)  # values read later
    unknown = da.ones((10, 2), chunks=5)[da.ones(10, chunks=5) > 0]
    with pytest.raises(ValueError, match=r"unknown chunk sizes; call X\.compute_chunk_sizes"):
        check_array(unknown, estimator="E")


def test_sample_weights_checked_against_x():
    X = np.ones((4, 2))
    assert check_sample_weight(None, X).tolist() == [1.0] * 4
    assert check_sample_weight(2, X).tolist() == [2.0] * 4
    assert check_sample_weight(da.arange(4), X).tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match=r"sample_weight.shape == \(3,\), expected \(4,\)!"):
        check_sample_weight(np.ones(3), X)
    with pytest.raises(ValueError, match="Sample weights must be 1D array or scalar"):
        check_sample_weight(np.ones((4, 1)), X)
    with pytest.raises(ValueError, match="Negative values in data passed to sample_weight"):
        check_sample_weight([1.0, -1.0, 1.0, 1.0], X)
    with pytest.raises(ValueError, match="Input sample_weight contains infinity"):
        check_sample_weight([1.0, np.inf, 1.0, 1.0], X)
    Xd = da.ones((10, 2), chunks=(3, 2))
    assert check_sample_weight(None, Xd).chunks == (Xd.chunks[0],)
    assert check_sample_weight(np.arange(10.0), Xd).chunks == (Xd.chunks[0],)
    with pytest.raises(ValueError, match=r"expected \(10,\)"):
        check_sample_weight(da.ones(9), Xd)


def test_feature_names_compared_as_scikit_learn_does():
    fitted = np.array(["a", "b"], dtype=object)
    check_feature_names(fitted, Frame("a", "b"), "Est")
    with pytest.raises(ValueError, match="must be in the same order as they were in fit"):
        check_feature_names(fitted, Frame("b", "a"), "Est")
    with pytest.raises(ValueError, match=r"unseen at fit time:\n- \['c'\]\n.*missing:\n- \['b'\]"):
        check_feature_names(fitted, Frame("a", "c"), "Est")
    with pytest.warns(UserWarning, match="X has feature names, but Est was fitted without"):
        check_feature_names(None, Frame("a", "b"), "Est")
    with pytest.warns(UserWarning, match="X does not have valid feature names, but Est"):
        check_feature_names(fitted, Frame(0, 1), "Est")  # names that are not strings: none
    with pytest.raises(TypeError, match=r"\['int', 'str'\] as feature name / column name"):
        check_feature_names(None, Frame("a", 1), "Est")
