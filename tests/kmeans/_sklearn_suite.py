"""A pytest plugin that runs scikit-learn's own k-means tests against kmdist's estimators.

Loaded with ``-p tests.kmeans._sklearn_suite`` by `test_sklearn_suite.py`, in a pytest
process of its own whose only test module is the installed
``sklearn.cluster.tests.test_k_means`` (never copied into this repository). While pytest
imports that module, ``sklearn.cluster.KMeans`` and ``sklearn.cluster.MiniBatchKMeans``
are kmdist's, so its ``from sklearn.cluster import KMeans, MiniBatchKMeans`` and every
``parametrize`` list built from them at import time get kmdist's classes; the names are
put back as soon as the module is imported. Tests of scikit-learn's private functions,
and of scikit-learn functions the swap leaves in place, are deselected, each for the
reason in `DESELECTED`. Each test's outcome is written as JSON to the path in
``$KMDIST_SKLEARN_REPORT``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

MODULE = "sklearn.cluster.tests.test_k_means"

_PRIVATE = "calls scikit-learn's private {}"
_UNSWAPPED = (
    "tests scikit-learn's own {} (only KMeans and MiniBatchKMeans are swapped; "
    "kmdist.kmeans_plusplus takes a Generator and keyword sample_weight)"
)
DESELECTED: dict[str, str] = {
    "test_relocate_empty_clusters": _PRIVATE.format("_relocate_empty_clusters_dense/_sparse"),
    "test_minibatch_update_consistency": _PRIVATE.format("_mini_batch_step and _labels_inertia"),
    "test_minibatch_reassign": _PRIVATE.format("_mini_batch_step and _labels_inertia"),
    "test_euclidean_distance": _PRIVATE.format("_euclidean_dense/sparse_dense_wrapper"),
    "test_inertia": _PRIVATE.format("_inertia_dense/_sparse"),
    "test_is_same_clustering": _PRIVATE.format("_is_same_clustering"),
    "test_sample_weight_init": _PRIVATE.format("method KMeans._init_centroids"),
    "test_sample_weight_zero": _PRIVATE.format("method KMeans._init_centroids"),
    "test_result_equal_in_diff_n_threads": _PRIVATE.format(
        "utils.parallel._get_threadpool_controller (to limit OpenMP threads)"
    ),
    "test_k_means_function": _UNSWAPPED.format("k_means function"),
    "test_kmeans_plusplus_wrong_params": _UNSWAPPED.format("kmeans_plusplus"),
    "test_kmeans_plusplus_output": _UNSWAPPED.format("kmeans_plusplus"),
    "test_kmeans_plusplus_norms": _UNSWAPPED.format("kmeans_plusplus"),
    "test_kmeans_plusplus_dataorder": _UNSWAPPED.format("kmeans_plusplus"),
}


def _is_target(collector: pytest.Collector) -> bool:
    return isinstance(collector, pytest.Module) and collector.path.name == "test_k_means.py"


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """Import scikit-learn's test module with kmdist's estimators in sklearn.cluster."""
    if not _is_target(collector):
        return (yield)
    import sklearn.cluster

    import kmdist

    saved = {name: getattr(sklearn.cluster, name) for name in ("KMeans", "MiniBatchKMeans")}
    for name in saved:
        setattr(sklearn.cluster, name, getattr(kmdist, name))
    try:
        return (yield)
    finally:
        for name, value in saved.items():
            setattr(sklearn.cluster, name, value)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests listed in `DESELECTED`."""
    keep, drop = [], []
    for item in items:
        (drop if item.originalname in DESELECTED else keep).append(item)  # type: ignore[attr-defined]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    _RESULTS["deselected"] = sorted(item.nodeid.split("::", 1)[1] for item in drop)


_RESULTS: dict[str, Any] = {"outcomes": {}, "errors": {}, "deselected": []}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record one outcome per test: passed, failed, skipped, xfailed or error."""
    name = report.nodeid.split("::", 1)[1]
    outcomes = _RESULTS["outcomes"]
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        elif report.failed:
            outcome = "failed" if report.when == "call" else "error"
        else:
            outcome = report.outcome
        outcomes[name] = outcome
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            _RESULTS["errors"][name] = crash.message if crash else str(report.longrepr)[-2000:]
    elif report.when == "teardown" and report.failed:
        outcomes[name] = "error"
        _RESULTS["errors"][name] = str(report.longrepr)[-2000:]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the outcomes to ``$KMDIST_SKLEARN_REPORT``."""
    path = os.environ.get("KMDIST_SKLEARN_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_RESULTS, f, indent=1, sort_keys=True)
