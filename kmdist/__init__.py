"""kmdist: colour segmentation of images at any scale with distributed k-means.

The public API; everything else lives in private modules.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

# Names resolve on first use (PEP 562), so that `kmdist.cli` starts a LocalCluster's
# workers before the heavy imports (Dask arrays, Zarr, numba): they then overlap.
_EXPORTS = {
    "recolor": "._assign",
    "segment": "._assign",
    "dashboard_link": "._cluster",
    "dask_client": "._cluster",
    "ConvergenceWarning": "._estimator",
    "NotFittedError": "._estimator",
    "ColorHistogram": "._histogram",
    "image_histogram": "._histogram",
    "merge_histograms": "._histogram",
    "DEFAULT_MAX_PIXELS": "._io",
    "ImageReadError": "._io",
    "ImageRef": "._io",
    "open_image": "._io",
    "open_images": "._io",
    "KMeans": "._kmeans",
    "MiniBatchKMeans": "._kmeans",
    "FewerColorsWarning": "._learn",
    "check_n_colors": "._limits",
    "learn_palette": "._learn",
    "palette_from_histogram": "._learn",
    "kmeans_plusplus": "._lloyd",
    "Palette": "._palette",
    "PaletteError": "._palette",
    "ImageResult": "._pipeline",
    "OnExists": "._pipeline",
    "SegmentOptions": "._pipeline",
    "label_and_write": "._pipeline",
    "segment_batch": "._pipeline",
    "write_preview": "._preview",
    "SMALL_PIXELS": "._small",
    "small_batches_on_cluster": "._small",
    "OutputError": "._store",
    "OutputExistsError": "._store",
    "Segmentation": "._store",
    "is_complete": "._store",
    "list_segmentations": "._store",
    "open_segmentation": "._store",
    "write_segmentation": "._store",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kmdist' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from ._assign import recolor, segment
    from ._cluster import dashboard_link, dask_client
    from ._estimator import ConvergenceWarning, NotFittedError
    from ._histogram import ColorHistogram, image_histogram, merge_histograms
    from ._io import DEFAULT_MAX_PIXELS, ImageReadError, ImageRef, open_image, open_images
    from ._kmeans import KMeans, MiniBatchKMeans
    from ._learn import FewerColorsWarning, learn_palette, palette_from_histogram
    from ._limits import check_n_colors
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
