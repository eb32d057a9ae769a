"""kmdist: colour segmentation of images at any scale with distributed k-means.

The public API: estimators, palettes, reading images, the output store and the Dask
client. The batch engine behind ``kmdist segment`` and the flows is `kmdist.pipeline`;
each subpackage's ``__init__`` names its own API.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

import lazy_loader

# Names resolve on first use, so that `kmdist.cli` starts a LocalCluster's workers before
# the heavy imports (Dask arrays, Zarr, numba): they then overlap.
__getattr__, _, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_dask": ["dashboard_link", "dask_client", "dask_client_soon"],
        "io": ["ImageReadError", "iter_images", "open_image", "open_images"],
        "kmeans": ["ConvergenceWarning", "KMeans", "MiniBatchKMeans"],
        "palette": [
            "FewerColorsWarning",
            "Palette",
            "PaletteError",
            "learn_palette",
            "palette_from_histogram",
            "recolor",
            "segment",
        ],
        "store": [
            "OutputError",
            "Segmentation",
            "is_complete",
            "iter_segmentations",
            "list_segmentations",
            "open_segmentation",
            "write_segmentation",
        ],
    },
)
__all__ += ["__version__"]


def __dir__() -> list[str]:
    return list(__all__)


if TYPE_CHECKING:
    from kmdist._dask import (
        dashboard_link as dashboard_link,
        dask_client as dask_client,
        dask_client_soon as dask_client_soon,
    )
    from kmdist.io import (
        ImageReadError as ImageReadError,
        iter_images as iter_images,
        open_image as open_image,
        open_images as open_images,
    )
    from kmdist.kmeans import (
        ConvergenceWarning as ConvergenceWarning,
        KMeans as KMeans,
        MiniBatchKMeans as MiniBatchKMeans,
    )
    from kmdist.palette import (
        FewerColorsWarning as FewerColorsWarning,
        Palette as Palette,
        PaletteError as PaletteError,
        learn_palette as learn_palette,
        palette_from_histogram as palette_from_histogram,
        recolor as recolor,
        segment as segment,
    )
    from kmdist.store import (
        OutputError as OutputError,
        Segmentation as Segmentation,
        is_complete as is_complete,
        iter_segmentations as iter_segmentations,
        list_segmentations as list_segmentations,
        open_segmentation as open_segmentation,
        write_segmentation as write_segmentation,
    )

try:
    __version__ = version("kmdist")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
