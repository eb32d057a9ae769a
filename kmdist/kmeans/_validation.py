"""Input validation shared by the estimators: arrays, weights, seeds.

Messages follow scikit-learn's wording so that code (and its estimator checks) that
expects scikit-learn's errors gets the same ones from kmdist.
"""

from __future__ import annotations

import numbers
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt

__all__ = [
    "Array",
    "check_array",
    "check_random_state",
    "check_sample_weight",
    "is_dask",
]

Array = np.ndarray[Any, Any] | da.Array
"""A NumPy or Dask array."""


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


def check_array(X: Any, *, estimator: str, min_samples: int = 1) -> Array:
    """Validate a 2-D sample matrix and convert it to float32 or float64.

    NumPy-like input is checked eagerly, including NaN and infinity. Dask input stays
    lazy: its shape and dtype are checked here and its values on the workers during the
    first pass over the data.

    Parameters
    ----------
    X : array-like or dask.array.Array of shape (n_samples, n_features)
        The samples.
    estimator : str
        Name used in error messages.
    min_samples : int, default=1
        Fewest samples accepted.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        `X` as a float32 array if it was float32, float64 otherwise. Dask input is
        rechunked to a single chunk along the features.

    Raises
    ------
    ValueError
        If `X` is not 2-D, is empty, is complex, or holds NaN or infinity.
    """
    if is_dask(X):
        return _check_dask(X, estimator=estimator, min_samples=min_samples)
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise TypeError(f"{estimator} does not accept sparse input; convert it to a dense array")
    arr = np.asarray(X)
    if np.iscomplexobj(arr):
        raise ValueError("Complex data not supported")
    arr = arr.astype(_float_dtype(arr.dtype), copy=False)
    _check_shape(arr.shape, X=arr, estimator=estimator, min_samples=min_samples)
    check_finite(arr)
    return arr


def _check_dask(X: da.Array, *, estimator: str, min_samples: int) -> da.Array:
    if np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError("Complex data not supported")
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


def check_sample_weight(sample_weight: Any, X: Array) -> Array:
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
