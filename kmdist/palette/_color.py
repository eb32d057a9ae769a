"""Colour spaces: sRGB (as stored) and CIELAB (D65) for perceptual clustering.

Clustering runs on float64 features: the raw channel values for ``"rgb"``, or CIELAB
coordinates for ``"lab"`` (3-channel images only, values scaled by their dtype's range).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "from_clustering_space",
    "lab_to_srgb",
    "srgb_to_lab",
    "to_clustering_space",
]

F64 = npt.NDArray[np.float64]

# sRGB (D65) to CIE XYZ, and the D65 white point.
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = _RGB_TO_XYZ.sum(axis=1)
_EPS = 216 / 24389
_KAPPA = 24389 / 27


def _value_range(dtype: str) -> tuple[float, float]:
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return float(info.min), float(info.max)
    return 0.0, 1.0  # float images are taken to be in [0, 1]


def srgb_to_lab(rgb: npt.ArrayLike) -> F64:
    """CIELAB coordinates of sRGB values in [0, 1], shape (..., 3)."""
    c = np.asarray(rgb, dtype=np.float64)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


def lab_to_srgb(lab: npt.ArrayLike) -> F64:
    """SRGB values in [0, 1] (clipped to the gamut) of CIELAB coordinates, shape (..., 3)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f**3 > _EPS, f**3, (116 * f - 16) / _KAPPA) * _WHITE
    lin = np.clip(xyz @ _XYZ_TO_RGB.T, 0, 1)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


def to_clustering_space(values: npt.NDArray[Any], space: str, dtype: str) -> F64:
    """Features k-means runs on, from pixel values of the source `dtype`."""
    v = np.asarray(values, dtype=np.float64)
    if space == "rgb":
        return v
    if space != "lab":
        raise ValueError(f"color_space must be 'rgb' or 'lab', got {space!r}")
    if v.shape[-1] != 3:
        raise ValueError(f"color_space='lab' needs 3 channels, got {v.shape[-1]}")
    lo, hi = _value_range(dtype)
    return srgb_to_lab((v - lo) / (hi - lo))


def from_clustering_space(features: npt.NDArray[np.float64], space: str, dtype: str) -> F64:
    """Pixel values of the source `dtype`'s range from clustering features."""
    if space == "rgb":
        return np.asarray(features, dtype=np.float64)
    lo, hi = _value_range(dtype)
    return lab_to_srgb(features) * (hi - lo) + lo
