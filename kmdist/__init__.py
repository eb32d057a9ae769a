"""kmdist: colour segmentation of images at any scale with distributed k-means.

The public API; everything else lives in private modules.
"""

from importlib.metadata import PackageNotFoundError, version

from ._assign import recolor, segment
from ._cluster import dashboard_link, dask_client
from ._estimator import ConvergenceWarning, NotFittedError
from ._histogram import ColorHistogram, image_histogram, merge_histograms
from ._io import DEFAULT_MAX_PIXELS, ImageReadError, ImageRef, open_image, open_images
from ._kmeans import KMeans, MiniBatchKMeans
from ._learn import FewerColorsWarning, check_n_colors, learn_palette, palette_from_histogram
from ._lloyd import kmeans_plusplus
from ._palette import Palette, PaletteError
from ._pipeline import ImageResult, OnExists, SegmentOptions, label_and_write, segment_batch
from ._preview import write_preview
from ._small import SMALL_PIXELS, small_batches_on_cluster
from ._store import (
    OutputError,
    OutputExistsError,
    Segmentation,
    is_complete,
    list_segmentations,
    open_segmentation,
    write_segmentation,
)

try:
    __version__ = version("kmdist")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SMALL_PIXELS",
    "ColorHistogram",
    "ConvergenceWarning",
    "FewerColorsWarning",
    "ImageReadError",
    "ImageRef",
    "ImageResult",
    "KMeans",
    "MiniBatchKMeans",
    "NotFittedError",
    "OnExists",
    "OutputError",
    "OutputExistsError",
    "Palette",
    "PaletteError",
    "SegmentOptions",
    "Segmentation",
    "__version__",
    "check_n_colors",
    "dashboard_link",
    "dask_client",
    "image_histogram",
    "is_complete",
    "kmeans_plusplus",
    "label_and_write",
    "learn_palette",
    "list_segmentations",
    "merge_histograms",
    "open_image",
    "open_images",
    "open_segmentation",
    "palette_from_histogram",
    "recolor",
    "segment",
    "segment_batch",
    "small_batches_on_cluster",
    "write_preview",
    "write_segmentation",
]
