"""Where an image lives in the store and the OME-NGFF 0.5 metadata that describes it.

For an image NAME, a store S (a local directory, or a storage URL such as
``s3://bucket/out.zarr``) holds::

    S/NAME/0, 1, ...                     recoloured image pyramid, axes (c, y, x)
    S/NAME/labels                        {"ome": {"labels": ["segmentation"]}}
    S/NAME/labels/segmentation/0, 1, ... label pyramid, axes (y, x), unsigned integers

The segmentation group carries ``ome.image-label`` (each label's display colour) and a
``kmdist`` block with the palette and provenance whose ``complete`` flag turns true only
after every array is fully written.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from kmdist.store._errors import OutputError

__all__ = [
    "OME_VERSION",
    "SEGMENTATION",
    "SEG_PATH",
    "Colours",
    "check_name",
    "multiscales",
    "omero",
]


class Colours(Protocol):
    """What the store needs to know of an image's colours (a `kmdist.Palette` is one).

    The store writes labels, the image recoloured by `planes`, the display
    colours of `display_rgba` and the items of `to_dict`; it knows no more of palettes,
    which the engine learns and hands down.
    """

    @property
    def k(self) -> int:
        """Number of labels."""

    @property
    def channels(self) -> int:
        """Channels of the recoloured image."""

    def colors_as(self, dtype: npt.DTypeLike | None = None) -> npt.NDArray[Any]:
        """One value per label and channel, in the image's dtype: shape (k, channels)."""

    def display_rgba(self) -> npt.NDArray[np.uint8]:
        """One opaque 8-bit RGBA colour per label, for viewers: shape (k, 4)."""

    def planes(self, labels: Any) -> Any:
        """Return the recoloured image of (y, x) `labels`, channel first (NumPy or Dask)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description (colors, counts, inertia, ...), stored with the image."""


OME_VERSION = "0.5"


SEGMENTATION = "segmentation"


SEG_PATH = f"labels/{SEGMENTATION}"


def check_name(name: str) -> None:
    bad = (
        not isinstance(name, str)
        or not name
        or name.startswith((".", "__"))
        or name.lower() == "zarr.json"  # would clash with the root's own metadata file
        or any(c in name for c in "/\\")
        or any(ord(c) < 32 for c in name)
        or len(name.encode("utf-8", "surrogateescape")) > 255
    )
    if bad:
        raise OutputError(
            f"{name!r} is not a valid image name: use a non-empty name without '/' or '\\' "
            "that does not start with '.' or '__' and is not 'zarr.json'"
        )


def multiscales(name: str, n_levels: int, channel_axis: bool) -> list[dict[str, Any]]:
    axes: list[dict[str, str]] = [
        {"name": "y", "type": "space"},
        {"name": "x", "type": "space"},
    ]
    lead: list[float] = []
    if channel_axis:
        axes.insert(0, {"name": "c", "type": "channel"})
        lead = [1.0]
    datasets = [
        {
            "path": str(i),
            "coordinateTransformations": [
                {"type": "scale", "scale": [*lead, float(2**i), float(2**i)]}
            ],
        }
        for i in range(n_levels)
    ]
    return [{"name": name, "axes": axes, "datasets": datasets}]


def omero(palette: Colours) -> dict[str, Any] | None:
    """Channel display hints so viewers compose RGB (or grey) images as such."""
    if palette.channels == 3:
        colors = ["FF0000", "00FF00", "0000FF"]
        labels = ["red", "green", "blue"]
    elif palette.channels == 1:
        colors, labels = ["FFFFFF"], ["grey"]
    else:
        return None
    values = palette.colors_as()
    dtype = values.dtype
    if dtype.kind in "iu":
        lo, hi = float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
    else:
        lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 1.0)
    window = {"min": lo, "max": hi, "start": lo, "end": hi}
    channels = [
        {"label": label, "color": color, "active": True, "window": window}
        for label, color in zip(labels, colors, strict=True)
    ]
    return {"channels": channels, "rdefs": {"model": "color"}}
