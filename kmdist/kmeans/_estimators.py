"""KMeans and MiniBatchKMeans: scikit-learn-compatible estimators for NumPy and Dask input.

Both take the same parameters as scikit-learn's and follow its semantics (greedy
k-means++, restarts, tolerance relative to the data's variance, relocation of empty
clusters, mini-batch early stopping and reassignment). With Dask input nothing but
statistics, seeding samples and mini-batches ever reaches the client.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt

from kmdist.kmeans._base import BaseEstimator, check_is_fitted, convergence_warning
from kmdist.kmeans._lloyd import (
    F64,
    Samples,
    lloyd,
    nearest,
    seed_centers,
    squared_distances,
)
from kmdist.kmeans._lloyd_kernels import pairwise_distances
from kmdist.kmeans._minibatch import MiniBatchState, SeedFn, best_seeding, run_minibatch
from kmdist.kmeans._rows import DaskRows, InMemoryRows, assign_blocks, make_rows
from kmdist.kmeans._sparse import CSR
from kmdist.kmeans._validation import (
    Array,
    check_array,
    check_feature_names,
    check_random_state,
    check_sample_weight,
    feature_names,
    is_dask,
)

__all__ = ["KMeans", "MiniBatchKMeans"]

InitFn = Callable[..., npt.ArrayLike]
Init = Literal["k-means++", "random"] | npt.ArrayLike | InitFn
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
    verbose: int
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
                f"init must be 'k-means++', 'random', a callable or an array of shape "
                f"(n_clusters, n_features), got {self.init!r}."
            )
        if not isinstance(self.verbose, numbers.Integral):
            raise ValueError(f"verbose must be an integer or a bool, got {self.verbose!r}.")

    def _check_centers(self, centers: Any, n_features: int) -> F64:
        """Check initial centres (given or returned by a callable `init`); float64."""
        centers = np.array(centers, dtype=np.float64)  # a copy: never the user's array
        if centers.ndim != 2 or centers.shape[0] != self.n_clusters:
            raise ValueError(
                f"The shape of the initial centers {centers.shape} does not match "
                f"the number of clusters {self.n_clusters}."
            )
        if centers.shape[1] != n_features:
            raise ValueError(
                f"The shape of the initial centers {centers.shape} does not match "
                f"the number of features of the data {n_features}."
            )
        if not np.isfinite(centers).all():
            raise ValueError("The initial centers contain NaN or infinity.")
        return centers

    def _check_init_array(self, n_features: int) -> F64 | None:
        if isinstance(self.init, str) or callable(self.init):
            return None
        return self._check_centers(self.init, n_features)

    def _resolve_n_init(self, default: int) -> int:
        """Decide the runs to make as scikit-learn does; also stored as ``_n_init``."""
        given = not isinstance(self.init, str) and not callable(self.init)
        if self.n_init == "auto":
            n = 1 if given or self.init == "k-means++" else default
        else:
            n = int(self.n_init)
        if given and n != 1:
            warnings.warn(
                f"Explicit initial center position passed: performing only one init in "
                f"{type(self).__name__} instead of n_init={n}.",
                RuntimeWarning,
                stacklevel=4,
            )
            n = 1
        self._n_init = n
        return n

    def _validate_fit_input(self, X: Any, sample_weight: Any) -> tuple[Array, Array]:
        self._validate_params()
        names = feature_names(X)
        X = check_array(X, estimator=type(self).__name__, order_c=getattr(self, "copy_x", True))
        if X.shape[0] < self.n_clusters:
            raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={self.n_clusters}.")
        w = check_sample_weight(sample_weight, X)
        if not is_dask(w) and not np.any(w):
            raise ValueError("Sample weights must contain at least one non-zero number.")
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.n_features_in_ = int(X.shape[1])
        return X, w

    def _init_fn(self, rng: np.random.Generator) -> SeedFn | None:
        """Wrap a callable `init` to seed from (samples, weights); None for other inits.

        The callable is called as scikit-learn calls it, ``init(X, n_clusters,
        random_state=random_state)``, with the samples as the caller gave them (SciPy
        sparse for sparse input) and a ``numpy.random.RandomState`` drawn from the
        estimator's generator; what it returns is checked like an array `init`.
        """
        if isinstance(self.init, str) or not callable(self.init):
            return None
        fn = self.init
        state = np.random.RandomState(int(rng.integers(0, 2**32)))

        def seed(X: Samples, w: F64) -> F64:
            user = X.to_scipy() if isinstance(X, CSR) else X
            return self._check_centers(fn(user, self.n_clusters, random_state=state), X.shape[1])

        return seed

    def _seed_centers(
        self,
        rows: InMemoryRows | DaskRows,
        X: Array,
        n_runs: int,
        rng: np.random.Generator,
        sample_size: int,
    ) -> F64:
        given = self._check_init_array(rows.n_features)
        if given is not None:
            return given[None]
        fn = self._init_fn(rng)
        if fn is not None:
            w = np.ones(0)
            return np.stack([fn(X, w) for _ in range(n_runs)])  # type: ignore[arg-type]
        init: Literal["k-means++", "random"] = "k-means++" if self.init == "k-means++" else "random"
        return seed_centers(rows, self.n_clusters, init, n_runs, rng, sample_size, order_free=True)

    def _check_test_data(self, X: Any) -> Array:
        check_is_fitted(self)
        check_feature_names(getattr(self, "feature_names_in_", None), X, type(self).__name__)
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
                convergence_warning(),
                stacklevel=3,
            )

    def _log(self) -> Callable[[str], None] | None:
        return print if self.verbose else None

    @property
    def _n_features_out(self) -> int:
        return int(self.cluster_centers_.shape[0])

    def get_feature_names_out(self, input_features: Any = None) -> npt.NDArray[np.object_]:
        """Names of the features `transform` outputs: the class name and a cluster index.

        Parameters
        ----------
        input_features : array-like of str, optional
            Checked against `feature_names_in_` (or `n_features_in_`) if given; the
            output names do not depend on them.

        Returns
        -------
        ndarray of str objects, shape (n_clusters,)
            ``kmeans0``, ``kmeans1``, ... (``minibatchkmeans0``, ... for MiniBatchKMeans).
        """
        check_is_fitted(self)
        if input_features is not None:
            given = np.asarray(input_features, dtype=object)
            fitted = getattr(self, "feature_names_in_", None)
            if fitted is not None and (len(given) != len(fitted) or (given != fitted).any()):
                raise ValueError("input_features is not equal to feature_names_in_")
            if fitted is None and len(given) != self.n_features_in_:
                raise ValueError(
                    f"input_features should have length equal to number of features "
                    f"({self.n_features_in_}), got {len(given)}"
                )
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self._n_features_out)], dtype=object)

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
        centers = np.asarray(self.cluster_centers_)
        if is_dask(X):
            return assign_blocks(X, centers)
        return nearest(X, centers)[0]

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Array:
        """Fit and return the labels of `X` (see `fit`)."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X: Any) -> Array:
        """Euclidean distance of each sample to each centre, shape (n_samples, n_clusters)."""
        X = self._check_test_data(X)
        centers = np.asarray(self.cluster_centers_)
        if is_dask(X):
            k = centers.shape[0]
            return X.map_blocks(
                _distances_kernel,
                centers,
                chunks=(X.chunks[0], (k,)),
                dtype=X.dtype,
                meta=np.empty((0, 0), dtype=X.dtype),
            )
        return _distances_kernel(X, centers).astype(X.dtype, copy=False)

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> Array:
        """Fit and return the distances of `X` to the centres (see `transform`)."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Opposite of the weighted inertia of `X` against the fitted centres."""
        X = self._check_test_data(X)
        w = check_sample_weight(sample_weight, X)
        centers = np.asarray(self.cluster_centers_, dtype=np.float64)
        return -make_rows(X, w).labels_inertia(centers)[1]

    def _finish(self, rows: InMemoryRows | DaskRows, centers: F64, dtype: np.dtype[Any]) -> None:
        """Set final labels and inertia for `centers`, and check distinct clusters."""
        self.cluster_centers_ = centers.astype(dtype, copy=False)
        stats = rows.stats(centers[None])[0]
        self.labels_ = _labels(rows, self.cluster_centers_)
        self.inertia_ = float(stats[:, -1].sum())
        self._warn_distinct(stats[:, -2])


def _labels(rows: InMemoryRows | DaskRows, centers: npt.NDArray[np.floating[Any]]) -> Array:
    """Nearest-centre labels of the rows: eager for NumPy, lazy for Dask."""
    if isinstance(rows, DaskRows):
        return assign_blocks(rows.X, centers.astype(np.float64))
    return nearest(rows.X, centers)[0]


def _distances_kernel(x: Samples, centers: F64) -> F64:
    if isinstance(x, CSR):
        return np.sqrt(squared_distances(x, centers))
    return pairwise_distances(x, centers).astype(x.dtype, copy=False)


class KMeans(_BaseKMeans):
    """K-means clustering (Lloyd's algorithm) on NumPy, SciPy sparse or Dask arrays.

    A drop-in for :class:`sklearn.cluster.KMeans` that also fits Dask arrays of any size
    and chunking: each Lloyd iteration is one pass over the blocks with one fused
    reduction, and only centres and per-cluster statistics travel. Restarts (`n_init`)
    run side by side in the same passes.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {'k-means++', 'random'}, callable or array of shape (n_clusters, n_features)
        Seeding: greedy weighted k-means++, `n_clusters` distinct random samples, given
        centres, or a callable ``init(X, n_clusters, random_state=random_state)``
        returning them (`random_state` is a ``numpy.random.RandomState`` drawn from this
        estimator's seed).
    n_init : 'auto' or int, default='auto'
        Restarts; the run with the lowest inertia is kept. 'auto' means 1 for
        k-means++ and given centres, 10 for 'random' and a callable.
    max_iter : int, default=300
        Most Lloyd iterations per run.
    tol : float, default=1e-4
        Convergence when the squared centre shift is at most ``tol`` times the mean
        (weighted) variance of the features.
    verbose : int, default=0
        Print the progress of each iteration (scikit-learn's wording).
    random_state : int, numpy.random.Generator or None, default=None
        Seed. The same seed gives the same centres for the same data, however chunked
        and in whatever order its rows come: seeding on all the rows visits them in an
        order set by their values, so integer weights act exactly like repeated rows.
    copy_x : bool, default=True
        Copy dense NumPy input that is not C-contiguous (Fortran-ordered, strided) into
        C order first, which the kernels read fastest; False uses it as it is, with no
        extra memory. Either way the input is never modified (kmdist computes distances
        from differences, so it has no use for scikit-learn's centring of the data).
    algorithm : {'lloyd', 'elkan'}, default='lloyd'
        Both run Lloyd iterations with Hamerly's distance bounds (one lower bound a
        sample, in the family of Elkan's, which keeps k lower bounds a sample): the
        bounds skip distance computations without changing any result, so 'elkan' is
        accepted as an alias and gives the same labels, centres and iterations.
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
        Centres, float32 for float32 input and float64 otherwise.
    labels_ : ndarray or dask.array.Array of shape (n_samples,)
        Label of each training sample (lazy for Dask input).
    inertia_ : float
        Weighted sum of squared distances of the samples to their nearest centre.
    n_iter_ : int
        Lloyd iterations of the kept run.
    n_features_in_ : int
        Number of features seen in `fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen in `fit`, when `X` had string column names.

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
        verbose: int = 0,
        random_state: Seed = None,
        copy_x: bool = True,
        algorithm: Literal["lloyd", "elkan"] = "lloyd",
        init_size: int | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.init_size = init_size

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.algorithm not in ("lloyd", "elkan"):
            raise ValueError(f"algorithm must be 'lloyd' or 'elkan', got {self.algorithm!r}.")
        if not isinstance(self.copy_x, bool | np.bool_):
            raise ValueError(f"copy_x must be a bool, got {self.copy_x!r}.")

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Self:
        """Compute k-means clustering.

        Parameters
        ----------
        X : array-like, sparse matrix or dask.array.Array of shape (n_samples, n_features)
            Training samples. Dask arrays are never brought to the client; SciPy sparse
            input is read as compressed rows, with the results of the same dense input.
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
        self._algorithm = "lloyd"
        if self.algorithm == "elkan" and self.n_clusters == 1:
            warnings.warn(
                "algorithm='elkan' doesn't make sense for a single cluster. Using 'lloyd' instead.",
                RuntimeWarning,
                stacklevel=2,
            )
        rng = check_random_state(self.random_state)
        rows = make_rows(X, w)
        n_runs = self._resolve_n_init(default=10)
        size = self.init_size
        if size is None:
            size = max(100 * self.n_clusters, 1 << 16) if is_dask(X) else X.shape[0]
        tol = self.tol * rows.weighted_variance() if self.tol > 0 else 0.0
        centers = self._seed_centers(rows, X, n_runs, rng, size)
        log = self._log()
        if log is not None:
            log("Initialization complete")
        result = lloyd(rows, centers, max_iter=self.max_iter, tol=tol, log=log)
        best = int(np.argmin(result.inertia))
        self.n_iter_ = int(result.n_iter[best])
        self.cluster_centers_ = result.centers[best].astype(X.dtype, copy=False)
        self.inertia_ = float(result.inertia[best])
        self.labels_ = _labels(rows, self.cluster_centers_)
        self._warn_distinct(result.weights[best])
        return self


class MiniBatchKMeans(_BaseKMeans):
    """Mini-batch k-means on NumPy, SciPy sparse or Dask arrays, after scikit-learn.

    Batches are drawn uniformly (with replacement) by row index from a seeded generator.
    For Dask input the rows of many batches are cut out of their blocks on the workers in
    one gather (a "pool"), so only mini-batches travel; the sequence of batches, and so
    the result, does not depend on the chunking.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {'k-means++', 'random'}, callable or array of shape (n_clusters, n_features)
        Seeding, run on `init_size` random rows (a callable gets those rows, see
        `KMeans`).
    max_iter : int, default=100
        Most passes (epochs) over the data's worth of samples.
    batch_size : int, default=1024
        Samples per mini-batch.
    verbose : int, default=0
        Print each step's batch inertia and the reason for stopping.
    compute_labels : bool, default=True
        Compute `labels_` and `inertia_` on all samples after fitting.
    random_state : int, numpy.random.Generator or None, default=None
        Seed.
    tol : float, default=0.0
        Early stop when the squared centre shift of a step is at most ``tol`` times the
        mean feature variance; 0 disables this criterion.
    max_no_improvement : int or None, default=10
        Early stop after this many steps without improvement of the smoothed batch
        inertia; None disables it.
    init_size : int or None, default=None
        Rows used for seeding; ``3 * batch_size`` (at least ``3 * n_clusters``) by
        default. Below `n_clusters` it warns and uses ``3 * n_clusters``.
    n_init : 'auto' or int, default='auto'
        Seedings tried, the best on a validation sample being kept. 'auto' means 1 for
        k-means++ and given centres, 3 for 'random' and a callable.
    reassignment_ratio : float, default=0.01
        Centres whose accumulated weight falls below this fraction of the largest are
        moved onto random samples of the batch.

    Attributes
    ----------
    cluster_centers_, labels_, inertia_, n_iter_, n_features_in_, feature_names_in_
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
        verbose: int = 0,
        compute_labels: bool = True,
        random_state: Seed = None,
        tol: float = 0.0,
        max_no_improvement: int | None = 10,
        init_size: int | None = None,
        n_init: int | Literal["auto"] = "auto",
        reassignment_ratio: float = 0.01,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.verbose = verbose
        self.compute_labels = compute_labels
        self.random_state = random_state
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.init_size = init_size
        self.n_init = n_init
        self.reassignment_ratio = reassignment_ratio

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

    def _resolve_init_size(self, n: int) -> int:
        """Decide the rows to seed on as scikit-learn does; also stored as ``_init_size``."""
        size = self.init_size
        if size is None:
            size = 3 * min(self.batch_size, n)
            if size < self.n_clusters:
                size = 3 * self.n_clusters
        elif size < self.n_clusters:
            warnings.warn(
                f"init_size={size} should be larger than n_clusters={self.n_clusters}. "
                "Setting it to min(3*n_clusters, n_samples)",
                RuntimeWarning,
                stacklevel=4,
            )
            size = 3 * self.n_clusters
        self._init_size = min(size, n)
        return self._init_size

    def _initialise(self, rows: InMemoryRows | DaskRows, rng: np.random.Generator) -> F64:
        """Best of the seedings, judged by inertia on a random validation sample."""
        given = self._check_init_array(rows.n_features)
        n_runs = self._resolve_n_init(default=3)
        init_size = self._resolve_init_size(rows.n_samples)
        init: Literal["k-means++", "random"] | F64 | SeedFn
        if given is not None:
            init = given
        else:
            fn = self._init_fn(rng)
            named: Literal["k-means++", "random"] = (
                "random" if isinstance(self.init, str) and self.init == "random" else "k-means++"
            )
            init = named if fn is None else fn
        return best_seeding(rows, self.n_clusters, init, n_runs, init_size, rng, log=self._log())

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Self:
        """Compute the centres by mini-batch k-means.

        Parameters
        ----------
        X : array-like, sparse matrix or dask.array.Array of shape (n_samples, n_features)
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
        batch = min(self.batch_size, n)
        tol = self.tol * rows.weighted_variance() if self.tol > 0 else 0.0
        centers = self._initialise(rows, rng)
        log = self._log()
        state = MiniBatchState(
            counts=np.zeros(self.n_clusters),
            batch_size=batch,
            n_samples=n,
            reassignment_ratio=float(self.reassignment_ratio),
            log=log,
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
            log=log,
        )
        self.n_steps_ = step
        self.n_iter_ = int(np.ceil(step * batch / n))
        self._counts = state.counts
        # partial_fit after fit carries on from here, as in scikit-learn.
        self._state, self._rng = state, reassign_rng
        if self.compute_labels:
            self._finish(rows, centers, X.dtype)
        else:
            self.cluster_centers_ = centers.astype(X.dtype, copy=False)
            self.inertia_ = float(state.ewa_inertia or 0.0) * n
        return self

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Self:
        """Update the centres with one mini-batch: all of `X`.

        The first call seeds the centres from `X`. For Dask input the batch's statistics
        are computed on the workers; only candidate rows for reassignment travel.

        Parameters
        ----------
        X : array-like, sparse matrix or dask.array.Array of shape (n_samples, n_features)
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
        else:
            X = self._check_test_data(X)
            w = check_sample_weight(sample_weight, X)
        rows = make_rows(X, w)
        if first:
            centers = self._initialise(rows, self._rng)
            self._state = MiniBatchState(
                counts=np.zeros(self.n_clusters),
                batch_size=rows.n_samples,
                n_samples=rows.n_samples,
                reassignment_ratio=float(self.reassignment_ratio),
            )
            self.n_steps_ = 0
        else:
            centers = np.asarray(self.cluster_centers_, dtype=np.float64)
        self._state.log = self._log()
        centers, _ = self._state.step_rows(rows, centers, self._rng)
        self.cluster_centers_ = centers.astype(X.dtype, copy=False)
        self._counts = self._state.counts
        self.n_steps_ += 1
        if self.compute_labels:
            labels, inertia = rows.labels_inertia(centers)
            self.labels_, self.inertia_ = labels, inertia
        return self
