"""scikit-learn's estimator protocol without a dependency on scikit-learn.

`get_params`, `set_params` and `clone` work as for scikit-learn estimators; tags are
reported to scikit-learn only when scikit-learn itself asks for them.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Any, Self

__all__ = [
    "BaseEstimator",
    "ConvergenceWarning",
    "NotFittedError",
    "check_is_fitted",
    "convergence_warning",
]


class NotFittedError(ValueError, AttributeError):
    """Raised when an estimator is used before it was fitted.

    Subclasses ValueError and AttributeError, like scikit-learn's NotFittedError.
    """


class ConvergenceWarning(UserWarning):
    """Warned when k-means finds fewer distinct clusters than asked for.

    When scikit-learn's exceptions are already imported, the warning kmdist issues is
    also an instance of scikit-learn's ConvergenceWarning (see `convergence_warning`).
    """


@functools.cache
def _with_sklearn(sk_error: type[Exception]) -> type[NotFittedError]:
    return type("NotFittedError", (NotFittedError, sk_error), {"__module__": __name__})


@functools.cache
def _warning_with_sklearn(sk_warning: type[Warning]) -> type[ConvergenceWarning]:
    return type("ConvergenceWarning", (ConvergenceWarning, sk_warning), {"__module__": __name__})


def convergence_warning() -> type[ConvergenceWarning]:
    """Return the class to warn with: kmdist's, and scikit-learn's once that is imported.

    Code that filters or catches scikit-learn's ConvergenceWarning has imported it, so
    looking in ``sys.modules`` finds it whenever it matters, and kmdist never imports
    scikit-learn itself. Filters on kmdist's class match either way.
    """
    sk = sys.modules.get("sklearn.exceptions")
    if sk is None:
        return ConvergenceWarning
    return _warning_with_sklearn(sk.ConvergenceWarning)


def check_is_fitted(estimator: object, attribute: str = "cluster_centers_") -> None:
    """Raise NotFittedError unless `estimator` has `attribute`.

    When scikit-learn's exceptions are already imported, the error is also an instance
    of scikit-learn's NotFittedError, so code written against scikit-learn catches it;
    kmdist never imports scikit-learn itself.
    """
    if not hasattr(estimator, attribute):
        sk = sys.modules.get("sklearn.exceptions")
        error = _with_sklearn(sk.NotFittedError) if sk is not None else NotFittedError
        raise error(
            f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
            "appropriate arguments before using this estimator."
        )


class BaseEstimator:
    """Parameters introspected from ``__init__``, as scikit-learn does."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.name != "self")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Get the parameters of this estimator.

        Parameters
        ----------
        deep : bool, default=True
            Ignored: these estimators hold no sub-estimators. Kept for the protocol.

        Returns
        -------
        dict
            Parameter names mapped to their values.
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        """Set the parameters of this estimator.

        Returns
        -------
        self
            The estimator.
        """
        valid = self._param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(
                    f"Invalid parameter {key!r} for estimator {type(self).__name__}. "
                    f"Valid parameters are: {valid!r}."
                )
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        changed = []
        for name in self._param_names():
            default = sig.parameters[name].default
            value = getattr(self, name)
            if not (value is default or (isinstance(value, type(default)) and value == default)):
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self) -> Any:
        """Describe the estimator to scikit-learn (called by scikit-learn only)."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(
            estimator_type="clusterer",
            target_tags=TargetTags(required=False),
            transformer_tags=TransformerTags(preserves_dtype=["float64", "float32"]),
            input_tags=InputTags(sparse=True),
            regressor_tags=None,
            classifier_tags=None,
        )
