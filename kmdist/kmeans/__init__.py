"""Image-free k-means, like ``sklearn.cluster``: estimators and the drivers behind them.

- `_estimators`: `KMeans` and `MiniBatchKMeans` (scikit-learn's parameters and semantics);
- `_base`: the estimator base class, `NotFittedError`, `ConvergenceWarning`;
- `_lloyd`: seeding (k-means++, random) and Lloyd iterations over the `Rows` interface;
- `_lloyd_kernels`: the compiled Lloyd step with Hamerly's bounds;
- `_minibatch`: mini-batch k-means drawn from blocks, seeded per block;
- `_rows`: `Rows` for NumPy arrays, Dask arrays and weighted histograms;
- `_validation`: input checks shared by the estimators and the palette learners.

Public names are re-exported lazily by `kmdist`; this package imports nothing itself.
"""
