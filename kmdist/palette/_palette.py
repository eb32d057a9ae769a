"""The Palette: colours learned from images, with counts, inertia and provenance.

`learn_palette` lives in `kmdist.palette._learn`; this module only holds the value type and
its JSON form, so that readers of stored results need nothing else.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["ColorSpace", "Method", "Palette", "PaletteError"]

ColorSpace = Literal["rgb", "lab"]
Method = Literal["exact", "minibatch"]

_SPACES = ("rgb", "lab")
_METHODS = ("exact", "minibatch")
_INT_RANGES = {
    "uint8": (0, 255),
    "uint16": (0, 65535),
    "int8": (-128, 127),
    "int16": (-32768, 32767),
    "uint32": (0, 2**32 - 1),
    "int32": (-(2**31), 2**31 - 1),
}


class PaletteError(ValueError):
    """A palette, or its JSON form, is malformed."""


@dataclass(frozen=True, eq=False)
class Palette:
    """Colours learned by k-means, sorted by pixel count (label 0 the most common).

    Parameters
    ----------
    colors : ndarray of shape (k, channels)
        Colours in the image's own space and value range (0-255 for 8-bit RGB), even
        when clustering ran in CIELAB.
    counts : ndarray of shape (k,)
        Pixels nearest to each colour, non-increasing.
    inertia : float
        Sum over all pixels of the squared distance to the nearest colour, measured in
        the clustering space (`color_space`).
    color_space : {'rgb', 'lab'}
        Space the clustering and the nearest-colour assignment ran in.
    method : {'exact', 'minibatch'}
        How the palette was learned.
    dtype : str
        Sample dtype of the source images, e.g. ``'uint8'``.
    seed : int or None
        Random seed used.
    n_clusters : int
        Colours asked for; `k` is smaller when the images had fewer distinct colours.

    Examples
    --------
    >>> import numpy as np
    >>> p = Palette(np.array([[255, 0, 0], [0, 0, 255]]), np.array([30, 12]), 4.5)
    >>> p.k, p.colors.dtype
    (2, dtype('float64'))
    >>> Palette.from_json(p.to_json()) == p
    True
    """

    colors: npt.NDArray[np.float64]
    counts: npt.NDArray[Any]
    inertia: float
    color_space: ColorSpace = "rgb"
    method: Method = "exact"
    dtype: str = "uint8"
    seed: int | None = None
    n_clusters: int = field(default=0)

    def __post_init__(self) -> None:
        colors = np.array(self.colors, dtype=np.float64, copy=True)
        counts = np.array(self.counts, copy=True)
        if colors.ndim != 2 or colors.shape[0] < 1 or colors.shape[1] < 1:
            raise PaletteError(f"colors must have shape (k, channels), got {colors.shape}")
        if not np.isfinite(colors).all():
            raise PaletteError("colors contain NaN or infinity")
        if counts.shape != (colors.shape[0],):
            raise PaletteError(f"counts must have shape ({colors.shape[0]},), got {counts.shape}")
        if counts.dtype.kind not in "iu" and not np.all(np.equal(np.mod(counts, 1), 0)):
            raise PaletteError("counts must be whole numbers")
        counts = counts.astype(np.int64)
        if (counts < 0).any():
            raise PaletteError("counts must be non-negative")
        if (np.diff(counts) > 0).any():
            raise PaletteError("colours must be sorted by count, most common first")
        if not (isinstance(self.inertia, int | float) and math.isfinite(self.inertia)):
            raise PaletteError(f"inertia must be a finite number, got {self.inertia!r}")
        if self.inertia < 0:
            raise PaletteError(f"inertia must be non-negative, got {self.inertia!r}")
        if self.color_space not in _SPACES:
            raise PaletteError(f"color_space must be one of {_SPACES}, got {self.color_space!r}")
        if self.method not in _METHODS:
            raise PaletteError(f"method must be one of {_METHODS}, got {self.method!r}")
        try:
            dt = np.dtype(self.dtype)
        except TypeError as exc:
            raise PaletteError(f"dtype {self.dtype!r} is not a NumPy dtype") from exc
        if dt.kind not in "uif":
            raise PaletteError(f"dtype must be numeric, got {self.dtype!r}")
        if dt.name in _INT_RANGES:
            lo, hi = _INT_RANGES[dt.name]
            if colors.min() < lo - 0.5 or colors.max() > hi + 0.5:
                raise PaletteError(f"colors fall outside the {dt.name} range [{lo}, {hi}]")
        if self.color_space == "lab" and colors.shape[1] != 3:
            raise PaletteError("a CIELAB palette needs 3 channels")
        if self.seed is not None and not isinstance(self.seed, int):
            raise PaletteError(f"seed must be an integer or None, got {self.seed!r}")
        if not isinstance(self.n_clusters, int) or self.n_clusters < 0:
            raise PaletteError(
                f"n_clusters must be a non-negative integer, got {self.n_clusters!r}"
            )
        colors.flags.writeable = False
        counts.flags.writeable = False
        object.__setattr__(self, "colors", colors)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "inertia", float(self.inertia))
        object.__setattr__(self, "dtype", dt.name)
        object.__setattr__(self, "n_clusters", self.n_clusters or colors.shape[0])

    @property
    def k(self) -> int:
        """Number of colours."""
        return int(self.colors.shape[0])

    @property
    def shortfall(self) -> str | None:
        """Say why there are fewer colours than were asked for, or None if there are not.

        Examples
        --------
        >>> import numpy as np
        >>> Palette(np.array([[7, 7, 7]]), np.array([400]), 0.0, n_clusters=16).shortfall
        'only 1 distinct colour(s) in the image: 1 colour(s) instead of 16'
        """
        if self.k >= self.n_clusters:
            return None
        return (
            f"only {self.k} distinct colour(s) in the image: {self.k} colour(s) instead of "
            f"{self.n_clusters}"
        )

    @property
    def channels(self) -> int:
        """Channels per colour."""
        return int(self.colors.shape[1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Palette):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def colors_as(self, dtype: npt.DTypeLike | None = None) -> npt.NDArray[Any]:
        """Colours rounded and clipped to `dtype` (the source dtype by default)."""
        dt = np.dtype(dtype or self.dtype)
        if dt.kind in "iu":
            info = np.iinfo(dt)
            return np.clip(np.rint(self.colors), info.min, info.max).astype(dt)
        return self.colors.astype(dt)

    def planes(self, labels: Any) -> Any:
        """Return the image of (y, x) `labels` in these colours, channel first (c, y, x).

        NumPy or Dask, as `labels` is; in the source's dtype (`colors_as`). What the
        output store writes as the recoloured image.

        Raises
        ------
        ValueError
            A label with no colour (`k` or more).
        """
        from kmdist.palette._assign import recolor_planes
        from kmdist.palette._assign_kernels import color_planes

        if isinstance(labels, np.ndarray):
            return color_planes(labels, self.colors_as())
        return recolor_planes(labels, self)

    def display_rgba(self) -> npt.NDArray[np.uint8]:
        """One opaque 8-bit RGBA colour per label, for viewers and previews.

        Single-channel palettes become grey levels; colours beyond the 8-bit range are
        scaled by the source dtype's range (or by the palette's maximum for floats).
        """
        c = self.colors
        if self.dtype != "uint8":
            hi = _INT_RANGES.get(self.dtype, (0, max(float(c.max()), 1e-12)))[1]
            lo = _INT_RANGES.get(self.dtype, (min(float(c.min()), 0.0), 0))[0]
            c = (c - lo) / max(hi - lo, 1e-12) * 255.0
        rgb = np.repeat(c[:, :1], 3, axis=1) if c.shape[1] < 3 else c[:, :3]
        out = np.full((self.k, 4), 255, dtype=np.uint8)
        out[:, :3] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        return out

    def hex_colors(self) -> list[str]:
        """Display colours as ``#rrggbb`` strings, label 0 first.

        Examples
        --------
        >>> Palette(np.array([[255, 0, 0], [0, 0, 255]]), np.array([3, 1]), 0.0).hex_colors()
        ['#ff0000', '#0000ff']
        """
        return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b, _ in self.display_rgba().tolist()]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists and scalars)."""
        return {
            "colors": self.colors.tolist(),
            "counts": self.counts.tolist(),
            "inertia": self.inertia,
            "color_space": self.color_space,
            "method": self.method,
            "dtype": self.dtype,
            "seed": self.seed,
            "n_clusters": self.n_clusters,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Palette:
        """Build and validate a Palette from `to_dict`'s form."""
        if not isinstance(data, dict):
            raise PaletteError(f"a palette must be a JSON object, got {type(data).__name__}")
        required = {"colors", "counts", "inertia"}
        missing = required - data.keys()
        if missing:
            raise PaletteError(f"palette is missing {sorted(missing)}")
        unknown = data.keys() - set(cls.__dataclass_fields__)
        if unknown:
            raise PaletteError(f"palette has unknown fields {sorted(unknown)}")
        for key in ("colors", "counts"):
            if not isinstance(data[key], list):
                raise PaletteError(f"palette {key} must be a list")
        try:
            colors = np.array(data["colors"], dtype=np.float64)
            counts = np.array(data["counts"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise PaletteError(f"palette colors/counts are not numeric arrays: {exc}") from exc
        return cls(
            colors=colors,
            counts=counts,
            **{k: data[k] for k in data if k not in ("colors", "counts")},
        )

    def to_json(self) -> str:
        """JSON text of `to_dict`."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Palette:
        """Parse and validate JSON text (no pickle, nothing executed)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PaletteError(f"palette is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        """Write the palette as JSON to `path`."""
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Palette:
        """Read a palette written by `save`."""
        try:
            return cls.from_json(Path(path).read_text())
        except PaletteError as exc:
            raise PaletteError(f"{path}: {exc}") from exc
