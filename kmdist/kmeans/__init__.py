"""Image-free k-means, like ``sklearn.cluster``: estimators and the drivers behind them.

- `_estimators`: `KMeans` and `MiniBatchKMeans` (scikit-learn's parameters and semantics);
- `_base`: the estimator base class, `NotFittedError`, `ConvergenceWarning`;
- `_lloyd`: seeding (k-means++, random) and Lloyd iterations over the `Rows` interface;
- `_lloyd_kernels`: the compiled Lloyd step with Hamerly's bounds;
- `_minibatch`: mini-batch k-means drawn from blocks, seeded per block;
- `_rows`: `Rows` for NumPy arrays, Dask arrays and weighted histograms;
- `_validation`: input checks shared by the estimators and the palette learners.
"""

from typing import TYPE_CHECKING

import lazy_loader

# Names resolve on first use: a front end reads its options, and a worker its
# task, without importing the whole package.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_base": ["ConvergenceWarning", "NotFittedError"],
        "_estimators": ["KMeans", "MiniBatchKMeans"],
        "_lloyd": [
            "F64",
            "LloydResult",
            "kmeans_plusplus",
            "lloyd",
            "lloyd_dense",
            "nearest",
            "seed_centers",
        ],
        "_minibatch": ["MiniBatchState", "best_seeding", "run_minibatch"],
        "_rows": ["ConcatRows", "DaskRows", "NumpyRows", "tree_reduce"],
        "_validation": ["check_random_state"],
    },
)

if TYPE_CHECKING:
    from kmdist.kmeans._base import (
        ConvergenceWarning as ConvergenceWarning,
        NotFittedError as NotFittedError,
    )
    from kmdist.kmeans._estimators import (
        KMeans as KMeans,
        MiniBatchKMeans as MiniBatchKMeans,
    )
    from kmdist.kmeans._lloyd import (
        F64 as F64,
        LloydResult as LloydResult,
        kmeans_plusplus as kmeans_plusplus,
        lloyd as lloyd,
        lloyd_dense as lloyd_dense,
        nearest as nearest,
        seed_centers as seed_centers,
    )
    from kmdist.kmeans._minibatch import (
        MiniBatchState as MiniBatchState,
        best_seeding as best_seeding,
        run_minibatch as run_minibatch,
    )
    from kmdist.kmeans._rows import (
        ConcatRows as ConcatRows,
        DaskRows as DaskRows,
        NumpyRows as NumpyRows,
        tree_reduce as tree_reduce,
    )
    from kmdist.kmeans._validation import (
        check_random_state as check_random_state,
    )
