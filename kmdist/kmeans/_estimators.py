"""KMeans and MiniBatchKMeans: scikit-learn-compatible estimators for NumPy and Dask input.

Both take the same parameters as scikit-learn's and follow its semantics (greedy
k-means++, restarts, tolerance relative to the data's variance, relocation of empty
clusters, mini-batch early stopping and reassignment). With Dask input nothing but
statistics, seeding samples and mini-batches ever reaches the client.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt

from kmdist.kmeans._base import BaseEstimator, ConvergenceWarning, check_is_fitted
from kmdist.kmeans._lloyd import F64, lloyd, nearest, seed_centers, squared_distances
from kmdist.kmeans._minibatch import MiniBatchState, best_seeding, run_minibatch
from kmdist.kmeans._rows import DaskRows, NumpyRows, assign_blocks, make_rows
from kmdist.kmeans._validation import (
    Array,
    check_array,
    check_random_state,
    check_sample_weight,
    is_dask,
)

__all__ = ["KMeans", "MiniBatchKMeans"]

Init = Literal["k-means++", "random"] | npt.ArrayLike
Seed = None | int | np.random.Generator


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value!r}.")
    return value


class _BaseKMeans(BaseEstimator):
    """What KMeans and MiniBatchKMeans share: init, prediction, scoring."""

    n_clusters: int
    init: Init
    n_init: int | Literal["auto"]
    random_state: Seed
    tol: float
    max_iter: int
    init_size: int | None

    cluster_centers_: F64
    n_features_in_: int
    inertia_: float
    labels_: Array

    def _validate_params(self) -> None:
        _check_int("n_clusters", self.n_clusters, 1)
        _check_int("max_iter", self.max_iter, 1)
        if not isinstance(self.tol, numbers.Real) or self.tol < 0:
            raise ValueError(f"tol must be a non-negative number, got {self.tol!r}.")
        if self.n_init != "auto":
            _check_int("n_init", self.n_init, 1)
        if self.init_size is not None:
            _check_int("init_size", self.init_size, 1)
        if isinstance(self.init, str) and self.init not in ("k-means++", "random"):
            raise ValueError(
                f"init must be 'k-means++', 'random' or an array of shape (n_clusters, "
                f"n_features), got {self.init!r}."
            )

    def _check_init_array(self, n_features: int) -> F64 | None:
        if isinstance(self.init, str):
            return None
        centers = np.asarray(self.init, dtype=np.float64)
        if centers.shape != (self.n_clusters, n_features):
            raise ValueError(
                f"The shape of the initial centers {centers.shape} does not match "
                f"(n_clusters, n_features) = ({self.n_clusters}, {n_features})."
            )
        if not np.isfinite(centers).all():
            raise ValueError("The initial centers contain NaN or infinity.")
        return centers

    def _n_init(self, default_random: int) -> int:
        if not isinstance(self.init, str):
            if self.n_init not in ("auto", 1):
                warnings.warn(
                    f"Explicit initial center position passed: performing only one init in "
                    f"{type(self).__name__} instead of n_init={self.n_init}.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return 1
        if self.n_init == "auto":
            return 1 if self.init == "k-means++" else default_random
        return int(self.n_init)

    def _validate_fit_input(self, X: Any, sample_weight: Any) -> tuple[Array, Array]:
        self._validate_params()
        X = check_array(X, estimator=type(self).__name__)
        if X.shape[0] < self.n_clusters:
            raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={self.n_clusters}.")
        w = check_sample_weight(sample_weight, X)
        if not is_dask(w) and not w.any():
            raise ValueError("Sample weights must contain at least one non-zero number.")
        return X, w

    def _seed_centers(
        self, rows: NumpyRows | DaskRows, n_runs: int, rng: np.random.Generator, sample_size: int
    ) -> F64:
        given = self._check_init_array(rows.n_features)
        if given is not None:
            return given[None]
        init: Literal["k-means++", "random"] = "k-means++" if self.init == "k-means++" else "random"
        return seed_centers(rows, self.n_clusters, init, n_runs, rng, sample_size)

    def _check_test_data(self, X: Any) -> Array:
        check_is_fitted(self)
        X = check_array(X, estimator=type(self).__name__)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return X

    def _warn_distinct(self, weights: F64) -> None:
        distinct = int((weights > 0).sum())
        if distinct < self.n_clusters:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than "
                f"n_clusters ({self.n_clusters}). Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Self:
        """Fit the estimator (implemented by each estimator)."""
        raise NotImplementedError

    def predict(self, X: Any) -> Array:
        """Index of the nearest centre for each sample.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples,), int32
            Labels; lazy and chunked like `X`'s rows for Dask input.
        """
        X = self._check_test_data(X)
        if is_dask(X):
            return assign_blocks(X, self.cluster_centers_)
        return nearest(X, self.cluster_centers_)[0]

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Array:
        """Fit and return the labels of `X` (see `fit`)."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X: Any) -> Array:
        """Euclidean distance of each sample to each centre, shape (n_samples, n_clusters)."""
        X = self._check_test_data(X)
        centers = self.cluster_centers_
        if is_dask(X):
            k = centers.shape[0]
            return X.map_blocks(
                _distances_kernel,
                centers,
                chunks=(X.chunks[0], (k,)),
                dtype=X.dtype,
                meta=np.empty((0, 0), dtype=X.dtype),
            )
        return _distances_kernel(X, centers)

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> Array:
        """Fit and return the distances of `X` to the centres (see `transform`)."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Opposite of the weighted inertia of `X` against the fitted centres."""
        X = self._check_test_data(X)
        w = check_sample_weight(sample_weight, X)
        return -make_rows(X, w).labels_inertia(self.cluster_centers_)[1]

    def _finish(self, rows: NumpyRows | DaskRows, centers: F64) -> None:
        """Set final labels and inertia for `centers`, and check distinct clusters."""
        self.cluster_centers_ = centers
        stats = rows.stats(centers[None])[0]
        self.labels_ = _labels(rows, centers)
        self.inertia_ = float(stats[:, -1].sum())
        self._warn_distinct(stats[:, -2])


def _labels(rows: NumpyRows | DaskRows, centers: F64) -> Array:
    """Nearest-centre labels of the rows: eager for NumPy, lazy for Dask."""
    if isinstance(rows, DaskRows):
        return assign_blocks(rows.X, centers)
    return nearest(rows.X, centers)[0]


def _distances_kernel(x: F64, centers: F64) -> F64:
    return np.sqrt(squared_distances(x, centers))


class KMeans(_BaseKMeans):
    """K-means clustering (Lloyd's algorithm) on NumPy or Dask arrays.

    A drop-in for :class:`sklearn.cluster.KMeans` that also fits Dask arrays of any size
    and chunking: each Lloyd iteration is one pass over the blocks with one fused
    reduction, and only centres and per-cluster statistics travel. Restarts (`n_init`)
    run side by side in the same passes.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {'k-means++', 'random'} or array of shape (n_clusters, n_features)
        Seeding: greedy weighted k-means++, `n_clusters` distinct random samples, or
        given centres.
    n_init : 'auto' or int, default='auto'
        Restarts; the run with the lowest inertia is kept. 'auto' means 1 for
        k-means++ and given centres, 10 for 'random'.
    max_iter : int, default=300
        Most Lloyd iterations per run.
    tol : float, default=1e-4
        Convergence when the squared centre shift is at most ``tol`` times the mean
        (weighted) variance of the features.
    random_state : int, numpy.random.Generator or None, default=None
        Seed. The same seed gives the same centres for the same data, however chunked.
    init_size : int or None, default=None
        Seeding runs on a uniform sample of this many rows drawn from all blocks. None
        means every row for NumPy input and ``max(100 * n_clusters, 65536)`` rows for
        Dask input, which keeps seeding off the full data when it does not fit in memory
        (k-means++ on a sample is the scalable initialisation kmdist chose over
        k-means||: one gather instead of several passes, and the same quality for the
        colour data it is built for).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Centres, float64.
    labels_ : ndarray or dask.array.Array of shape (n_samples,)
        Label of each training sample (lazy for Dask input).
    inertia_ : float
        Weighted sum of squared distances of the samples to their nearest centre.
    n_iter_ : int
        Lloyd iterations of the kept run.
    n_features_in_ : int
        Number of features seen in `fit`.

    Examples
    --------
    >>> import numpy as np
    >>> from kmdist import KMeans
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
    >>> km = KMeans(n_clusters=2, random_state=0).fit(X)
    >>> sorted(km.cluster_centers_.tolist())
    [[1.0, 2.0], [10.0, 2.0]]
    >>> int(km.predict([[0, 0]])[0]) == int(km.labels_[0])
    True
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Init = "k-means++",
        n_init: int | Literal["auto"] = "auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: Seed = None,
        init_size: int | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.init_size = init_size

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Self:
        """Compute k-means clustering.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            Training samples. Dask arrays are never brought to the client.
        y : Ignored
            Not used, present for API consistency.
        sample_weight : array-like of shape (n_samples,), optional
            Weight of each sample; integer weights act like repeated rows.

        Returns
        -------
        self
            The fitted estimator.
        """
        X, w = self._validate_fit_input(X, sample_weight)
        rng = check_random_state(self.random_state)
        rows = make_rows(X, w)
        self.n_features_in_ = int(X.shape[1])
        n_runs = self._n_init(default_random=10)
        size = self.init_size
        if size is None:
            size = max(100 * self.n_clusters, 1 << 16) if is_dask(X) else X.shape[0]
        tol = self.tol * rows.weighted_variance() if self.tol > 0 else 0.0
        centers = self._seed_centers(rows, n_runs, rng, size)
        result = lloyd(rows, centers, max_iter=self.max_iter, tol=tol)
        best = int(np.argmin(result.inertia))
        self.n_iter_ = int(result.n_iter[best])
        self.cluster_centers_ = result.centers[best]
        self.inertia_ = float(result.inertia[best])
        self.labels_ = _labels(rows, self.cluster_centers_)
        self._warn_distinct(result.weights[best])
        return self


class MiniBatchKMeans(_BaseKMeans):
    """Mini-batch k-means on NumPy or Dask arrays, following scikit-learn's algorithm.

    Batches are drawn uniformly (with replacement) by row index from a seeded generator.
    For Dask input the rows of many batches are cut out of their blocks on the workers in
    one gather (a "pool"), so only mini-batches travel; the sequence of batches, and so
    the result, does not depend on the chunking.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {'k-means++', 'random'} or array of shape (n_clusters, n_features)
        Seeding, run on `init_size` random rows.
    max_iter : int, default=100
        Most passes (epochs) over the data's worth of samples.
    batch_size : int, default=1024
        Samples per mini-batch.
    tol : float, default=0.0
        Early stop when the squared centre shift of a step is at most ``tol`` times the
        mean feature variance; 0 disables this criterion.
    max_no_improvement : int or None, default=10
        Early stop after this many steps without improvement of the smoothed batch
        inertia; None disables it.
    init_size : int or None, default=None
        Rows used for seeding; ``3 * batch_size`` (at least ``3 * n_clusters``) by default.
    n_init : 'auto' or int, default='auto'
        Seedings tried, the best on a validation sample being kept. 'auto' means 1 for
        k-means++, 3 for 'random'.
    reassignment_ratio : float, default=0.01
        Centres whose accumulated weight falls below this fraction of the largest are
        moved onto random samples of the batch.
    compute_labels : bool, default=True
        Compute `labels_` and `inertia_` on all samples after fitting.
    random_state : int, numpy.random.Generator or None, default=None
        Seed.

    Attributes
    ----------
    cluster_centers_, labels_, inertia_, n_iter_, n_features_in_
        As for `KMeans`; without `compute_labels` `inertia_` is the smoothed batch
        inertia scaled to the number of samples, and `labels_` is not set.
    n_steps_ : int
        Mini-batches processed.

    Examples
    --------
    >>> import numpy as np
    >>> from kmdist import MiniBatchKMeans
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [4, 2], [4, 0], [4, 4],
    ...               [4, 5], [0, 1], [2, 2], [3, 2], [5, 5], [1, -1]])
    >>> km = MiniBatchKMeans(n_clusters=2, random_state=0, batch_size=6).fit(X)
    >>> km.cluster_centers_.shape
    (2, 2)
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Init = "k-means++",
        max_iter: int = 100,
        batch_size: int = 1024,
        tol: float = 0.0,
        max_no_improvement: int | None = 10,
        init_size: int | None = None,
        n_init: int | Literal["auto"] = "auto",
        reassignment_ratio: float = 0.01,
        compute_labels: bool = True,
        random_state: Seed = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.init_size = init_size
        self.n_init = n_init
        self.reassignment_ratio = reassignment_ratio
        self.compute_labels = compute_labels
        self.random_state = random_state

    # Values (rows x features) of the mini-batches gathered at once: 16 MiB of float64.
    _POOL_VALUES = 1 << 21

    def _validate_params(self) -> None:
        super()._validate_params()
        _check_int("batch_size", self.batch_size, 1)
        if self.max_no_improvement is not None:
            _check_int("max_no_improvement", self.max_no_improvement, 0)
        if not isinstance(self.reassignment_ratio, numbers.Real) or self.reassignment_ratio < 0:
            raise ValueError(
                "reassignment_ratio must be a non-negative number, got "
                f"{self.reassignment_ratio!r}."
            )

    def _init_size(self, n: int) -> int:
        size = self.init_size if self.init_size is not None else 3 * self.batch_size
        if size < self.n_clusters:
            size = 3 * self.n_clusters
        return min(size, n)

    def _initialise(self, rows: NumpyRows | DaskRows, rng: np.random.Generator) -> F64:
        """Best of the seedings, judged by inertia on a random validation sample."""
        given = self._check_init_array(rows.n_features)
        named: Literal["k-means++", "random"] = (
            "random" if isinstance(self.init, str) and self.init == "random" else "k-means++"
        )
        n_runs = self._n_init(default_random=3)
        return best_seeding(
            rows,
            self.n_clusters,
            named if given is None else given,
            n_runs,
            self._init_size(rows.n_samples),
            rng,
        )

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Self:
        """Compute the centres by mini-batch k-means.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            Training samples.
        y : Ignored
            Not used, present for API consistency.
        sample_weight : array-like of shape (n_samples,), optional
            Weight of each sample.

        Returns
        -------
        self
            The fitted estimator.
        """
        X, w = self._validate_fit_input(X, sample_weight)
        rng = check_random_state(self.random_state)
        rows = make_rows(X, w)
        n = rows.n_samples
        self.n_features_in_ = int(X.shape[1])
        batch = min(self.batch_size, n)
        tol = self.tol * rows.weighted_variance() if self.tol > 0 else 0.0
        centers = self._initialise(rows, rng)
        state = MiniBatchState(
            counts=np.zeros(self.n_clusters),
            batch_size=batch,
            n_samples=n,
            reassignment_ratio=float(self.reassignment_ratio),
        )
        batch_rng, reassign_rng = rng.spawn(2)
        centers, step = run_minibatch(
            rows,
            centers,
            state,
            max_steps=(self.max_iter * n) // batch,
            tol=tol,
            max_no_improvement=self.max_no_improvement,
            batch_rng=batch_rng,
            reassign_rng=reassign_rng,
            pool_values=self._POOL_VALUES,
        )
        self.n_steps_ = step
        self.n_iter_ = int(np.ceil(step * batch / n))
        self._counts = state.counts
        # partial_fit after fit carries on from here, as in scikit-learn.
        self._state, self._rng = state, reassign_rng
        if self.compute_labels:
            self._finish(rows, centers)
        else:
            self.cluster_centers_ = centers
            self.inertia_ = float(state.ewa_inertia or 0.0) * n
        return self

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Self:
        """Update the centres with one mini-batch: all of `X`.

        The first call seeds the centres from `X`. For Dask input the batch's statistics
        are computed on the workers; only candidate rows for reassignment travel.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The mini-batch.
        y : Ignored
            Not used, present for API consistency.
        sample_weight : array-like of shape (n_samples,), optional
            Weight of each sample.

        Returns
        -------
        self
            The updated estimator.
        """
        first = not hasattr(self, "cluster_centers_")
        if first:
            X, w = self._validate_fit_input(X, sample_weight)
            self._rng = check_random_state(self.random_state)
            self.n_features_in_ = int(X.shape[1])
        else:
            X = self._check_test_data(X)
            w = check_sample_weight(sample_weight, X)
        rows = make_rows(X, w)
        if first:
            self.cluster_centers_ = self._initialise(rows, self._rng)
            self._state = MiniBatchState(
                counts=np.zeros(self.n_clusters),
                batch_size=rows.n_samples,
                n_samples=rows.n_samples,
                reassignment_ratio=float(self.reassignment_ratio),
            )
            self.n_steps_ = 0
        centers, _ = self._state.step_rows(rows, self.cluster_centers_, self._rng)
        self.cluster_centers_ = centers
        self._counts = self._state.counts
        self.n_steps_ += 1
        if self.compute_labels:
            labels, inertia = rows.labels_inertia(centers)
            self.labels_, self.inertia_ = labels, inertia
        return self
