"""An image's decoded size from its header alone, before Dask, Zarr or numba are imported.

The CLI reads it to choose the kind of its LocalCluster before the cluster starts (see
`kmdist.cli`); anything it cannot tell quickly is unknown, never an error: the image is
opened, and its problems reported, by the pipeline.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

__all__ = ["TIFF_MAGIC", "decoded_samples"]

TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
"""The first four bytes of a classic or BigTIFF file, little- or big-endian."""


def decoded_samples(path: str) -> int | None:
    """Return the number of samples (pixels times channels) of the image at local `path`.

    Reads only the header of a file (Pillow's, or tifffile's for TIFF) or the metadata
    of a Zarr store (an array, or an OME-Zarr image's first level). Returns None when
    that does not tell: a storage URL, a folder of images, an archive, an unreadable or
    unknown file.
    """
    try:
        if os.path.isdir(path):
            return _zarr_samples(path)
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic in TIFF_MAGIC:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return math.prod(tif.series[0].shape)
        from PIL import Image

        # Not Pillow's warning about a large image here: the pipeline decides on the size.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.width * im.height * len(im.getbands())
    except Exception:  # any problem is the pipeline's to report, with the file's name
        return None


def _zarr_samples(path: str) -> int | None:
    meta = _metadata(path)
    if meta is None:
        return None
    if "shape" in meta:
        return math.prod(int(s) for s in meta["shape"])
    attrs = meta.get("attributes", meta)
    multiscales = attrs.get("ome", attrs).get("multiscales")
    if not multiscales:
        return None
    level = _metadata(os.path.join(path, multiscales[0]["datasets"][0]["path"]))
    return None if level is None or "shape" not in level else math.prod(level["shape"])


def _metadata(path: str) -> dict[str, Any] | None:
    """Return a Zarr node's metadata: v3's ``zarr.json``, else v2's ``.zarray`` or ``.zattrs``."""
    for name in ("zarr.json", ".zarray", ".zattrs"):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            with open(file, encoding="utf-8") as f:
                meta = json.load(f)
            return meta if isinstance(meta, dict) else None
    return None
