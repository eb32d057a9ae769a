"""KMeans and MiniBatchKMeans against scikit-learn, on NumPy and Dask input."""

from __future__ import annotations

import pickle
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import cluster as skcluster
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.metrics import adjusted_rand_score

from kmdist import ConvergenceWarning, KMeans, MiniBatchKMeans
from kmdist.kmeans import NotFittedError
from tests._computes import recorded_computes

ESTIMATORS = [KMeans, MiniBatchKMeans]


def same_partition(a, b) -> bool:
    """Labels equal up to a permutation of label values."""
    return adjusted_rand_score(np.asarray(a), np.asarray(b)) == 1.0


@pytest.fixture(scope="module")
def digits():
    return load_digits().data


@pytest.fixture(scope="module")
def digits_reference(digits) -> float:
    return float(skcluster.KMeans(10, n_init=10, random_state=0).fit(digits).inertia_)


def uneven(X, sizes):
    """Dask array of X with the given (uneven) row chunk sizes."""
    assert sum(sizes) == X.shape[0]
    return da.from_array(X, chunks=(tuple(sizes), X.shape[1]))


# --- The seed's examples -----------------------------------------------------------


@pytest.mark.parametrize("Est", ESTIMATORS)
def test_blobs_recovered(Est, blobs):
    X, truth = blobs
    est = Est(4, random_state=0).fit(X)
    assert same_partition(est.labels_, truth)
    assert est.cluster_centers_.shape == (4, 2)


@pytest.mark.parametrize("Est", ESTIMATORS)
@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_blobs_recovered_from_uneven_dask_chunks(Est, blobs, scheduler):
    X, truth = blobs
    with dask.config.set(scheduler=scheduler):
        est = Est(4, random_state=0).fit(uneven(X, [120, 31, 149]))
        labels = est.labels_.compute()
    assert same_partition(labels, truth)
    assert est.cluster_centers_.shape == (4, 2)


def test_digits_within_one_percent_of_sklearn(digits, digits_reference):
    km = KMeans(10, random_state=0).fit(digits)
    assert km.cluster_centers_.shape == (10, 64)
    assert km.inertia_ <= 1.01 * digits_reference


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_dask_uneven_chunks_match_numpy(digits, digits_reference, scheduler):
    ref = KMeans(10, random_state=0).fit(digits)
    X = uneven(digits, [100, 901, 7, 789])
    with dask.config.set(scheduler=scheduler):
        km = KMeans(10, random_state=0).fit(X)
        labels = km.labels_.compute()
    assert isinstance(km.labels_, da.Array)
    assert km.labels_.chunks[0] == X.chunks[0]
    assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-9, atol=1e-9)
    assert_array_equal(labels, ref.labels_)
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-12)
    assert km.inertia_ <= 1.01 * digits_reference


@pytest.mark.slow
def test_dask_on_local_cluster(digits, digits_reference, blobs, local_client):
    X = uneven(digits, [333, 1000, 464])
    km = KMeans(10, random_state=0).fit(X)
    ref = KMeans(10, random_state=0).fit(digits)
    assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-9, atol=1e-9)
    assert_array_equal(km.labels_.compute(), ref.labels_)
    assert km.inertia_ <= 1.01 * digits_reference
    Xb, truth = blobs
    mb = MiniBatchKMeans(4, random_state=0, batch_size=50).fit(uneven(Xb, [120, 31, 149]))
    assert same_partition(mb.labels_.compute(), truth)
    km4 = KMeans(4, random_state=0).fit(uneven(Xb, [120, 31, 149]))
    assert same_partition(km4.labels_.compute(), truth)


@pytest.mark.slow
def test_dask_on_external_scheduler(digits, external_scheduler):
    from distributed import Client

    with Client(external_scheduler) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        km = KMeans(10, random_state=0).fit(uneven(digits, [1000, 797]))
        ref = KMeans(10, random_state=0).fit(digits)
        assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-9, atol=1e-9)
        assert_array_equal(km.predict(uneven(digits, [1797])).compute(), ref.labels_)


# --- Agreement with scikit-learn's algorithm ------------------------------------


def test_lloyd_matches_sklearn_from_same_init(digits, rng):
    init = digits[rng.choice(len(digits), 10, replace=False)]
    ours = KMeans(10, init=init, tol=0.0, max_iter=300).fit(digits)
    theirs = skcluster.KMeans(10, init=init, n_init=1, tol=0.0, max_iter=300).fit(digits)
    assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=1e-7, atol=1e-7)
    assert_array_equal(ours.labels_, theirs.labels_)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.inertia_ == pytest.approx(theirs.inertia_, rel=1e-9)


def test_float32_kept_in_centres_transform_and_predict(blobs):
    # scikit-learn's dtype: float32 input gives float32 centres (computed in float64).
    X = blobs[0].astype(np.float32)
    km = KMeans(4, random_state=0).fit(X)
    assert km.cluster_centers_.dtype == np.float32
    assert km.transform(X).dtype == np.float32
    assert km.predict(X).dtype == np.int32
    ref = KMeans(4, random_state=0).fit(blobs[0])
    assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-5)
    assert_array_equal(km.labels_, ref.labels_)


def test_restarts_keep_lowest_inertia(digits):
    single = [KMeans(10, init="random", n_init=1, random_state=s).fit(digits) for s in range(3)]
    multi = KMeans(10, init="random", n_init=10, random_state=0).fit(digits)
    assert multi.inertia_ <= min(s.inertia_ for s in single) * 1.001


def test_tol_is_relative_to_variance(blobs):
    X = blobs[0]
    a = KMeans(4, random_state=1, tol=1e-2).fit(X)
    b = KMeans(4, random_state=1, tol=1e-2).fit(X * 1000.0)
    assert a.n_iter_ == b.n_iter_
    assert_allclose(a.cluster_centers_ * 1000.0, b.cluster_centers_, rtol=1e-9)


def test_empty_cluster_relocated_to_far_point(blobs):
    X = blobs[0]
    init = np.array([[0.0, 4.0], [2.0, 1.0], [-1.5, 3.0], [1e6, 1e6]])
    km = KMeans(4, init=init).fit(X)
    assert np.abs(km.cluster_centers_).max() < 100  # never left at the far start
    assert len(np.unique(km.labels_)) == 4


def test_duplicate_points_warn_fewer_distinct_clusters():
    X = np.repeat([[0.0, 0.0], [1.0, 1.0]], 10, axis=0)
    with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(2\).*n_clusters \(3\)"):
        km = KMeans(3, random_state=0).fit(X)
    assert len(np.unique(km.labels_)) == 2


def test_transform_score_fit_predict_consistent(blobs):
    X = blobs[0]
    km = KMeans(4, random_state=0)
    labels = km.fit_predict(X)
    dist = km.transform(X)
    assert_array_equal(dist.argmin(axis=1), labels)
    assert km.score(X) == pytest.approx(-km.inertia_)
    assert_allclose(km.fit_transform(X), dist)


def test_dask_predict_transform_score_lazy(blobs):
    X = blobs[0]
    km = KMeans(4, random_state=0).fit(X)
    Xd = uneven(X, [7, 200, 93])
    pred = km.predict(Xd)
    assert isinstance(pred, da.Array) and pred.chunks[0] == Xd.chunks[0]
    assert_array_equal(pred.compute(), km.predict(X))
    assert_allclose(km.transform(Xd).compute(), km.transform(X))
    assert km.score(Xd) == pytest.approx(km.score(X))


# --- Mini-batch ---------------------------------------------------------------------


def test_minibatch_quality_close_to_sklearn(digits):
    ours = MiniBatchKMeans(10, random_state=0).fit(digits)
    theirs = [skcluster.MiniBatchKMeans(10, random_state=s).fit(digits).inertia_ for s in range(5)]
    assert ours.inertia_ <= 1.05 * np.median(theirs)
    assert ours.n_steps_ >= 1 and ours.n_iter_ >= 1
    assert ours.inertia_ == pytest.approx(-ours.score(digits))


def test_minibatch_dask_equals_numpy(digits):
    ref = MiniBatchKMeans(10, random_state=3, batch_size=100).fit(digits)
    with dask.config.set(scheduler="threads"):
        got = MiniBatchKMeans(10, random_state=3, batch_size=100).fit(uneven(digits, [5, 1700, 92]))
        labels = got.labels_.compute()
    assert got.n_steps_ == ref.n_steps_
    assert_allclose(got.cluster_centers_, ref.cluster_centers_, rtol=1e-9, atol=1e-9)
    assert_array_equal(labels, ref.labels_)


def test_minibatch_partial_fit_stream(blobs):
    X, truth = blobs
    mb = MiniBatchKMeans(4, random_state=0)
    order = np.random.default_rng(0).permutation(len(X))
    for _ in range(5):
        for part in np.array_split(order, 6):
            mb.partial_fit(X[part])
    assert mb.n_steps_ == 30
    assert same_partition(mb.predict(X), truth)


def test_minibatch_partial_fit_dask_batch(blobs):
    X, truth = blobs
    mb = MiniBatchKMeans(4, random_state=0)
    for _ in range(10):
        mb.partial_fit(uneven(X, [100, 100, 100]))
    assert same_partition(mb.predict(X), truth)


def test_minibatch_without_labels(blobs):
    mb = MiniBatchKMeans(4, random_state=0, compute_labels=False).fit(blobs[0])
    assert not hasattr(mb, "labels_")
    assert mb.inertia_ > 0


# --- Seeds, weights, chunking -------------------------------------------------------


@pytest.mark.parametrize("Est", ESTIMATORS)
def test_same_seed_same_result(Est, digits):
    a = Est(10, random_state=5).fit(digits)
    b = Est(10, random_state=5).fit(digits)
    assert_array_equal(a.cluster_centers_, b.cluster_centers_)


def test_integer_weights_equal_repetition_default_params(rng):
    X = rng.integers(0, 50, size=(120, 3)).astype(float)
    X = np.unique(X, axis=0)
    w = rng.integers(0, 4, size=len(X))
    a = KMeans(5, random_state=1).fit(X, sample_weight=w)
    b = KMeans(5, random_state=1).fit(np.repeat(X, w, axis=0))
    assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-12)
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-12)


def test_dask_weights_accepted(blobs):
    X = blobs[0]
    w = np.random.default_rng(0).integers(1, 3, len(X)).astype(float)
    ref = KMeans(4, random_state=0).fit(X, sample_weight=w)
    got = KMeans(4, random_state=0).fit(uneven(X, [150, 150]), sample_weight=da.from_array(w))
    assert_allclose(got.cluster_centers_, ref.cluster_centers_, rtol=1e-9)


def test_dask_fit_never_pulls_samples_to_client(rng):
    """Every result a compute returns to the client during fit is small next to X."""
    X = da.from_array(rng.normal(size=(1_000_000, 3)), chunks=(150_000, 3))
    with recorded_computes() as computes:
        KMeans(8, random_state=0, init_size=2000).fit(X)
    assert computes.returned and max(computes.returned) < 100_000  # statistics, a sample
    with recorded_computes() as computes:
        MiniBatchKMeans(8, random_state=0, batch_size=1024, max_iter=1).fit(X)
    # Mini-batches travel a bounded pool at a time, however large X is.
    pool_rows = MiniBatchKMeans._POOL_VALUES // (1024 * 3) * 1024
    assert max(computes.returned) <= pool_rows * (3 + 1) * 8 < X.nbytes  # rows and their weights


# --- Parameters and bad input -------------------------------------------------------


@pytest.mark.parametrize("Est", ESTIMATORS)
def test_fitted_estimator_pickles(Est, blobs):
    est = Est(4, random_state=0).fit(blobs[0])
    again = pickle.loads(pickle.dumps(est))
    assert_array_equal(again.predict(blobs[0]), est.predict(blobs[0]))


@pytest.mark.parametrize("Est", ESTIMATORS)
@pytest.mark.parametrize(
    ("params", "X", "message"),
    [
        ({"n_clusters": 0}, np.ones((5, 2)), r"n_clusters must be >= 1, got 0"),
        ({"n_clusters": 2.5}, np.ones((5, 2)), r"n_clusters must be an integer, got 2.5"),
        ({"n_clusters": 6}, np.eye(5), r"n_samples=5 should be >= n_clusters=6"),
        ({"init": "bogus"}, np.ones((5, 2)), r"init must be .* got 'bogus'"),
        ({"init": np.zeros((2, 3)), "n_clusters": 2}, np.eye(5, 2), r"initial centers \(2, 3\)"),
        ({}, np.array([[0.0, np.nan]] * 10), r"Input X contains NaN"),
        ({}, np.array([[0.0, np.inf]] * 10), r"Input X contains infinity"),
        ({}, np.ones(10), r"Expected 2D array, got 1D array"),
        ({}, np.ones((0, 3)), r"Found array with 0 sample\(s\)"),
        ({"max_iter": -1}, np.ones((10, 2)), r"max_iter must be >= 1, got -1"),
    ],
)
def test_bad_input_raises_clear_error(Est, params, X, message):
    params = {"n_clusters": 2, **params}
    with pytest.raises(ValueError, match=message):
        Est(**params).fit(X)


def test_dask_nan_detected_on_workers():
    X = np.ones((100, 2))
    X[77, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        KMeans(2, random_state=0, init_size=5).fit(uneven(X, [50, 50]))


@pytest.mark.parametrize("Est", ESTIMATORS)
def test_predict_checks(Est, blobs):
    est = Est(4, random_state=0)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        est.predict(blobs[0])
    with pytest.raises(SkNotFittedError):  # code written against scikit-learn catches it
        est.transform(blobs[0])
    est.fit(blobs[0])
    with pytest.raises(ValueError, match=r"X has 3 features, but .* expecting 2 features"):
        est.predict(np.ones((4, 3)))


def test_all_zero_weights_refused():
    with pytest.raises(ValueError, match="at least one non-zero"):
        KMeans(2).fit(np.eye(4), sample_weight=np.zeros(4))


def test_explicit_init_with_n_init_warns(blobs):
    init = blobs[0][:4]
    with pytest.warns(RuntimeWarning, match="performing only one init"):
        KMeans(4, init=init, n_init=5).fit(blobs[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        KMeans(4, init=init).fit(blobs[0])


# --- scikit-learn's remaining parameters (issue 16) --------------------------------


@pytest.mark.parametrize("Est", ESTIMATORS)
def test_feature_names_in_and_out(Est, blobs):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(blobs[0], columns=["a", "b"])
    est = Est(4, random_state=0).fit(df)
    assert list(est.feature_names_in_) == ["a", "b"]
    prefix = Est.__name__.lower()
    assert list(est.get_feature_names_out()) == [f"{prefix}{i}" for i in range(4)]
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        est.predict(blobs[0])
    with pytest.raises(ValueError, match="feature names should match"):
        est.predict(df.rename(columns={"a": "z"}))
    est.fit(blobs[0])
    assert not hasattr(est, "feature_names_in_")


@pytest.mark.parametrize("Est", ESTIMATORS)
def test_callable_init_gets_data_k_and_a_random_state(Est, blobs):
    seen = []

    def init(X, k, random_state):
        seen.append((X.shape[1], k, type(random_state)))
        return X[:k] + random_state.uniform(size=(k, X.shape[1])) * 1e-3

    est = Est(4, init=init, n_init=2, random_state=0).fit(blobs[0])
    assert seen == [(2, 4, np.random.RandomState)] * 2
    assert est._n_init == 2
    assert Est(4, init=init, random_state=0).fit(blobs[0])._n_init == (10 if Est is KMeans else 3)


def test_copy_x_keeps_fortran_input_unchanged(blobs):
    X = np.asfortranarray(blobs[0])
    before = X.copy()
    a = KMeans(4, random_state=0, copy_x=False).fit(X)
    b = KMeans(4, random_state=0).fit(X)
    assert_array_equal(X, before)
    assert_array_equal(a.labels_, b.labels_)
    assert_allclose(a.cluster_centers_, b.cluster_centers_)


def test_minibatch_init_size_below_k_warns(blobs):
    with pytest.warns(RuntimeWarning, match=r"init_size=2 should be larger than n_clusters=4"):
        mb = MiniBatchKMeans(4, init_size=2, random_state=0).fit(blobs[0])
    assert mb._init_size == 12
