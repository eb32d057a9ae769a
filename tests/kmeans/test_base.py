"""The estimator protocol without scikit-learn (kmdist.kmeans._base): parameters, errors."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import (
    ConvergenceWarning as SkConvergenceWarning,
    NotFittedError as SkNotFittedError,
)

import kmdist
from kmdist import KMeans, MiniBatchKMeans
from kmdist.kmeans._base import (
    BaseEstimator,
    ConvergenceWarning,
    NotFittedError,
    check_is_fitted,
    convergence_warning,
)

ESTIMATORS = [KMeans, MiniBatchKMeans]


class Toy(BaseEstimator):
    """The smallest estimator: two parameters with defaults, nothing fitted."""

    def __init__(self, zeta: float = 1.0, alpha: str = "a") -> None:
        self.zeta = zeta
        self.alpha = alpha


@pytest.mark.parametrize("Est", ESTIMATORS)
def test_params_protocol(Est):
    est = Est(3, random_state=1)
    assert est.get_params()["n_clusters"] == 3
    assert est.set_params(n_clusters=5) is est and est.n_clusters == 5
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    assert repr(est) == f"{Est.__name__}(n_clusters=5, random_state=1)"
    with pytest.raises(ValueError, match="Invalid parameter 'bogus'"):
        est.set_params(bogus=1)


def test_params_come_from_init_and_repr_shows_only_changes():
    toy = Toy()
    assert toy.get_params() == {"alpha": "a", "zeta": 1.0}
    assert repr(toy) == "Toy()"
    # An equal value of the default's type is no change; an int for a float default is.
    assert repr(toy.set_params(zeta=float("1"))) == "Toy()"
    assert repr(toy.set_params(zeta=1)) == "Toy(zeta=1)"
    toy.set_params(zeta=np.zeros(2), alpha="b")
    assert repr(toy) == "Toy(alpha='b', zeta=array([0., 0.]))"
    with pytest.raises(ValueError, match=r"Valid parameters are: \['alpha', 'zeta'\]\."):
        toy.set_params(beta=2)
    assert toy.alpha == "b" and not hasattr(toy, "beta")


def test_not_fitted_error_is_sklearns_only_once_imported(monkeypatch):
    toy = Toy()
    with pytest.raises(SkNotFittedError, match="This Toy instance is not fitted yet"):
        check_is_fitted(toy)
    check_is_fitted(toy, "zeta")  # any attribute counts as fitted
    monkeypatch.delitem(sys.modules, "sklearn.exceptions")
    with pytest.raises(NotFittedError) as caught:
        check_is_fitted(toy)
    assert not isinstance(caught.value, SkNotFittedError)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, AttributeError)


def test_convergence_warning_class_follows_sklearns_import(monkeypatch):
    assert issubclass(convergence_warning(), SkConvergenceWarning)
    assert convergence_warning() is convergence_warning()  # one class, so filters match
    monkeypatch.delitem(sys.modules, "sklearn.exceptions")
    assert convergence_warning() is ConvergenceWarning


def test_convergence_warning_is_sklearns_once_imported():
    X = np.repeat([[0.0, 0.0], [1.0, 1.0]], 5, axis=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        KMeans(3, random_state=0).fit(X)
    (w,) = [c for c in caught if issubclass(c.category, kmdist.ConvergenceWarning)]
    assert issubclass(w.category, SkConvergenceWarning)
