"""kmdist: colour segmentation of images at any scale with distributed k-means.

The public API; everything else lives in private modules.
"""

from importlib.metadata import PackageNotFoundError, version

from ._estimator import ConvergenceWarning, NotFittedError
from ._kmeans import KMeans, MiniBatchKMeans
from ._lloyd import kmeans_plusplus

try:
    __version__ = version("kmdist")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "ConvergenceWarning",
    "KMeans",
    "MiniBatchKMeans",
    "NotFittedError",
    "__version__",
    "kmeans_plusplus",
]
