"""scikit-learn's own estimator checks, on NumPy input."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from kmdist import KMeans, MiniBatchKMeans

# Each check that cannot apply, with the reason. scikit-learn lists the same two for
# its own KMeans and MiniBatchKMeans.
REPETITION = (
    "checks weights against repeated rows in shuffled order; k-means++ draws by row "
    "order, so only same-order repetition is equivalent (tested in "
    "test_kmeans_properties.py)"
)
EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": REPETITION,
}


@parametrize_with_checks(
    [
        KMeans(n_clusters=2, n_init=2, max_iter=5),
        MiniBatchKMeans(n_clusters=2, n_init=2, max_iter=5, batch_size=10),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILURES,
    xfail_strict=True,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
