"""kmdist: colour segmentation of images at any scale with distributed k-means.

The public API; everything else lives in private modules.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

# Names resolve on first use (PEP 562), so that `kmdist.cli` starts a LocalCluster's
# workers before the heavy imports (Dask arrays, Zarr, numba): they then overlap.
_EXPORTS = {
    "recolor": "kmdist.palette._assign",
    "segment": "kmdist.palette._assign",
    "dashboard_link": "kmdist._dask",
    "dask_client": "kmdist._dask",
    "dask_client_soon": "kmdist._dask",
    "ConvergenceWarning": "kmdist.kmeans._base",
    "NotFittedError": "kmdist.kmeans._base",
    "ColorHistogram": "kmdist.palette._histogram",
    "image_histogram": "kmdist.palette._histogram",
    "merge_histograms": "kmdist.palette._histogram",
    "DEFAULT_MAX_PIXELS": "kmdist.io._open",
    "ImageReadError": "kmdist.io._open",
    "ImageRef": "kmdist.io._open",
    "open_image": "kmdist.io._open",
    "open_images": "kmdist.io._open",
    "iter_images": "kmdist.io._open",
    "KMeans": "kmdist.kmeans._estimators",
    "MiniBatchKMeans": "kmdist.kmeans._estimators",
    "FewerColorsWarning": "kmdist.palette._learn",
    "check_n_colors": "kmdist.palette._limits",
    "learn_palette": "kmdist.palette._learn",
    "palette_from_histogram": "kmdist.palette._learn",
    "kmeans_plusplus": "kmdist.kmeans._lloyd",
    "Palette": "kmdist.palette._palette",
    "PaletteError": "kmdist.palette._palette",
    "ImageResult": "kmdist.pipeline._options",
    "OnExists": "kmdist.pipeline._options",
    "SegmentOptions": "kmdist.pipeline._options",
    "label_and_write": "kmdist.pipeline._image",
    "segment_batch": "kmdist.pipeline._batch",
    "CountedRefs": "kmdist.pipeline._batch",
    "iter_segment": "kmdist.pipeline._batch",
    "segment_stream": "kmdist.pipeline._batch",
    "load_palette": "kmdist.pipeline._palettes",
    "shared_palette": "kmdist.pipeline._palettes",
    "RunSummary": "kmdist.pipeline._summary",
    "write_preview": "kmdist.store._preview",
    "SMALL_PIXELS": "kmdist.pipeline._small",
    "small_batches_on_cluster": "kmdist.pipeline._small",
    "OutputError": "kmdist.store._errors",
    "OutputExistsError": "kmdist.store._errors",
    "Segmentation": "kmdist.store._read",
    "is_complete": "kmdist.store._read",
    "iter_segmentations": "kmdist.store._read",
    "list_segmentations": "kmdist.store._read",
    "open_segmentation": "kmdist.store._read",
    "write_segmentation": "kmdist.store._write",
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
    from kmdist._dask import dashboard_link, dask_client, dask_client_soon
    from kmdist.io._open import (
        DEFAULT_MAX_PIXELS,
        ImageReadError,
        ImageRef,
        iter_images,
        open_image,
        open_images,
    )
    from kmdist.kmeans._base import ConvergenceWarning, NotFittedError
    from kmdist.kmeans._estimators import KMeans, MiniBatchKMeans
    from kmdist.kmeans._lloyd import kmeans_plusplus
    from kmdist.palette._assign import recolor, segment
    from kmdist.palette._histogram import ColorHistogram, image_histogram, merge_histograms
    from kmdist.palette._learn import FewerColorsWarning, learn_palette, palette_from_histogram
    from kmdist.palette._limits import check_n_colors
    from kmdist.palette._palette import Palette, PaletteError
    from kmdist.pipeline._batch import CountedRefs, iter_segment, segment_batch, segment_stream
    from kmdist.pipeline._image import label_and_write
    from kmdist.pipeline._options import ImageResult, OnExists, SegmentOptions
    from kmdist.pipeline._palettes import load_palette, shared_palette
    from kmdist.pipeline._small import SMALL_PIXELS, small_batches_on_cluster
    from kmdist.pipeline._summary import RunSummary
    from kmdist.store._errors import OutputError, OutputExistsError
    from kmdist.store._preview import write_preview
    from kmdist.store._read import (
        Segmentation,
        is_complete,
        iter_segmentations,
        list_segmentations,
        open_segmentation,
    )
    from kmdist.store._write import write_segmentation

try:
    __version__ = version("kmdist")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SMALL_PIXELS",
    "ColorHistogram",
    "ConvergenceWarning",
    "CountedRefs",
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
    "RunSummary",
    "SegmentOptions",
    "Segmentation",
    "__version__",
    "check_n_colors",
    "dashboard_link",
    "dask_client",
    "dask_client_soon",
    "image_histogram",
    "is_complete",
    "iter_images",
    "iter_segment",
    "iter_segmentations",
    "kmeans_plusplus",
    "label_and_write",
    "learn_palette",
    "list_segmentations",
    "load_palette",
    "merge_histograms",
    "open_image",
    "open_images",
    "open_segmentation",
    "palette_from_histogram",
    "recolor",
    "segment",
    "segment_batch",
    "segment_stream",
    "shared_palette",
    "small_batches_on_cluster",
    "write_preview",
    "write_segmentation",
]
