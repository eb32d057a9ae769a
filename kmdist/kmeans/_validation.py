"""Input validation shared by the estimators: arrays, weights, seeds.

Messages follow scikit-learn's wording so that code (and its estimator checks) that
expects scikit-learn's errors gets the same ones from kmdist.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt

from kmdist.kmeans._sparse import CSR, from_scipy, is_sparse

__all__ = [
    "Array",
    "check_array",
    "check_feature_names",
    "check_random_state",
    "check_sample_weight",
    "feature_names",
    "is_dask",
]

Array = np.ndarray[Any, Any] | da.Array | CSR
"""A NumPy or Dask array, or sparse rows."""


def is_dask(x: object) -> bool:
    """Tell whether `x` is a Dask array."""
    return isinstance(x, da.Array)


def check_random_state(seed: int | np.random.Generator | None) -> np.random.Generator:
    """Turn `seed` into a NumPy Generator.

    ``None`` gives fresh entropy, an integer a reproducible generator, and a Generator is
    returned as it is (so that successive calls draw different numbers).
    """
    if seed is None or isinstance(seed, numbers.Integral):
        return np.random.default_rng(None if seed is None else int(seed))
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.RandomState):
        # Legacy seeds: derive a Generator from the RandomState's stream.
        return np.random.default_rng(int(seed.randint(0, 2**31 - 1)))
    raise ValueError(f"random_state={seed!r} cannot be used to seed a numpy.random.Generator")


def _float_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    return np.dtype(dtype) if dtype in (np.float32, np.float64) else np.dtype(np.float64)


def check_array(X: Any, *, estimator: str, min_samples: int = 1, order_c: bool = False) -> Array:
    """Validate a 2-D sample matrix and convert it to float32 or float64.

    NumPy-like input is checked eagerly, including NaN and infinity. Dask input stays
    lazy: its shape and dtype are checked here and its values on the workers during the
    first pass over the data. SciPy sparse input (any format) becomes `CSR`.

    Parameters
    ----------
    X : array-like or dask.array.Array of shape (n_samples, n_features)
        The samples.
    estimator : str
        Name used in error messages.
    min_samples : int, default=1
        Fewest samples accepted.
    order_c : bool, default=False
        Copy dense NumPy input that is not C-contiguous into C order (the kernels read
        a sample's features together).

    Returns
    -------
    numpy.ndarray, dask.array.Array or CSR
        `X` as a float32 array if it was float32, float64 otherwise. Dask input is
        rechunked to a single chunk along the features.

    Raises
    ------
    ValueError
        If `X` is not 2-D, is empty, is complex, or holds NaN or infinity.
    TypeError
        If `X` is a Dask array of sparse blocks.
    """
    if is_dask(X):
        return _check_dask(X, estimator=estimator, min_samples=min_samples)
    if isinstance(X, CSR):
        return X
    if is_sparse(X):
        return _check_sparse(X, estimator=estimator, min_samples=min_samples)
    arr = np.asarray(X)
    if np.iscomplexobj(arr):
        raise ValueError("Complex data not supported")
    arr = arr.astype(_float_dtype(arr.dtype), copy=False)
    if order_c and not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    _check_shape(arr.shape, X=arr, estimator=estimator, min_samples=min_samples)
    check_finite(arr)
    return arr


def _check_sparse(X: Any, *, estimator: str, min_samples: int) -> CSR:
    if np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError("Complex data not supported")
    _check_shape(X.shape, X=None, estimator=estimator, min_samples=min_samples)
    csr = from_scipy(X, _float_dtype(X.dtype))
    check_finite(csr.data)
    return csr


def _check_dask(X: da.Array, *, estimator: str, min_samples: int) -> da.Array:
    if np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError("Complex data not supported")
    if is_sparse(getattr(X, "_meta", None)):
        raise TypeError(
            f"{estimator} does not accept Dask arrays of sparse blocks; pass the SciPy "
            "sparse matrix itself, or dense blocks (X.map_blocks(lambda b: b.toarray()))"
        )
    if X.ndim and any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError(
            f"X has unknown chunk sizes; call X.compute_chunk_sizes() before fitting {estimator}"
        )
    _check_shape(X.shape, X=None, estimator=estimator, min_samples=min_samples)
    X = X.astype(_float_dtype(X.dtype))
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    return X


def _check_shape(shape: tuple[int, ...], *, X: Any, estimator: str, min_samples: int) -> None:
    if len(shape) != 2:
        if len(shape) == 1:
            preview = f"\narray={X}." if X is not None else ""
            raise ValueError(
                f"Expected 2D array, got 1D array instead:{preview}\n"
                "Reshape your data either using array.reshape(-1, 1) if your data has a "
                "single feature or array.reshape(1, -1) if it contains a single sample."
            )
        raise ValueError(f"Expected 2D array, got {len(shape)}D array instead (shape={shape}).")
    if shape[0] < min_samples:
        raise ValueError(
            f"Found array with {shape[0]} sample(s) (shape={shape}) while a minimum of "
            f"{min_samples} is required by {estimator}."
        )
    if shape[1] < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={shape}) while a minimum of 1 is "
            f"required by {estimator}."
        )


def check_finite(X: npt.NDArray[np.floating[Any]], name: str = "X") -> None:
    """Raise ValueError if `X` holds NaN or infinity."""
    # A sum is much cheaper than np.isfinite(X).all() and is finite iff all values are
    # finite, barring overflow, which the slow path below then sorts out.
    if X.size and not np.isfinite(X.sum(dtype=np.float64)):
        if np.isnan(X).any():
            raise ValueError(f"Input {name} contains NaN.")
        if not np.isfinite(X).all():
            raise ValueError(
                f"Input {name} contains infinity or a value too large for {X.dtype!r}."
            )


def feature_names(X: Any) -> npt.NDArray[np.object_] | None:
    """Return the column names of a DataFrame-like `X` if all are strings, else None.

    As scikit-learn: names that mix strings with other types raise a TypeError.
    """
    columns = getattr(X, "columns", None)
    if columns is None or is_dask(X):
        return None
    names = np.asarray(columns, dtype=object)
    kinds = {type(name) for name in names}
    if len(kinds) > 1 and str in kinds:
        raise TypeError(
            "Feature names are only supported if all input features have string names, "
            f"but your input has {sorted(t.__name__ for t in kinds)} as feature name / "
            "column name types. If you want feature names to be stored and validated, "
            "you must convert them all to strings, by using X.columns = "
            "X.columns.astype(str) for example. Otherwise you can remove feature / "
            "column names from your input data, or convert them all to a non-string "
            "data type."
        )
    return names if kinds == {str} else None


def check_feature_names(fitted: npt.NDArray[np.object_] | None, X: Any, estimator: str) -> None:
    """Compare the feature names of `X` with those seen in fit, as scikit-learn does.

    Warns when only one of the two has names; raises ValueError when both have names
    and they differ.
    """
    names = feature_names(X)
    if fitted is None and names is None:
        return
    if names is None:
        warnings.warn(
            f"X does not have valid feature names, but {estimator} was fitted with feature names",
            UserWarning,
            stacklevel=4,
        )
        return
    if fitted is None:
        warnings.warn(
            f"X has feature names, but {estimator} was fitted without feature names",
            UserWarning,
            stacklevel=4,
        )
        return
    if len(fitted) != len(names) or (fitted != names).any():
        unseen = sorted(set(names) - set(fitted))
        missing = sorted(set(fitted) - set(names))
        message = "The feature names should match those that were passed during fit.\n"
        if unseen:
            message += f"Feature names unseen at fit time:\n- {unseen}\n"
        if missing:
            message += f"Feature names seen at fit time, yet now missing:\n- {missing}\n"
        if not unseen and not missing:
            message += "Feature names must be in the same order as they were in fit.\n"
        raise ValueError(message)


def check_sample_weight(sample_weight: Any, X: Array) -> np.ndarray[Any, Any] | da.Array:
    """Validate sample weights for `X`; ``None`` means a weight of one for every sample.

    Returns a float64 array of shape (n_samples,), chunked like `X`'s rows when `X` is a
    Dask array. Dask weights are checked for shape here; their values are not read.
    """
    n = X.shape[0]
    if isinstance(X, da.Array):
        if sample_weight is None or isinstance(sample_weight, numbers.Real):
            value = 1.0 if sample_weight is None else float(sample_weight)
            return da.full(n, value, dtype=np.float64, chunks=(X.chunks[0],))
        w = da.asarray(sample_weight).astype(np.float64)
        _check_weight_shape(w.shape, n)
        return w.rechunk((X.chunks[0],))
    if sample_weight is None or isinstance(sample_weight, numbers.Real):
        value = 1.0 if sample_weight is None else float(sample_weight)
        return np.full(n, value, dtype=np.float64)
    if isinstance(sample_weight, da.Array):
        sample_weight = sample_weight.compute()  # weights of in-memory samples fit too
    arr = np.asarray(sample_weight, dtype=np.float64)
    _check_weight_shape(arr.shape, n)
    check_finite(arr, "sample_weight")
    if (arr < 0).any():
        raise ValueError("Negative values in data passed to sample_weight")
    return arr


def _check_weight_shape(shape: tuple[int, ...], n: int) -> None:
    if len(shape) != 1:
        raise ValueError("Sample weights must be 1D array or scalar")
    if shape != (n,):
        raise ValueError(f"sample_weight.shape == {shape}, expected ({n},)!")
