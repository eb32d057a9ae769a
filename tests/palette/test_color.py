"""CIELAB conversion against scikit-image's."""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_allclose
from skimage.color import lab2rgb, rgb2lab

from kmdist.palette._color import (
    from_clustering_space,
    lab_to_srgb,
    srgb_to_lab,
    to_clustering_space,
)


def test_lab_matches_scikit_image(rng):
    rgb = rng.random((500, 3))
    # The two differ only in the rounding of the D65 constants: far below one
    # just-noticeable difference (delta E of about 2).
    assert_allclose(srgb_to_lab(rgb), rgb2lab(rgb[None])[0], atol=5e-3)
    lab = rgb2lab(rgb[None])[0]
    assert_allclose(lab_to_srgb(lab), lab2rgb(lab[None])[0], atol=1e-4)
    assert_allclose(lab_to_srgb(srgb_to_lab(rgb)), rgb, atol=1e-9)


def test_clustering_space_scales_by_dtype():
    white8 = to_clustering_space(np.array([[255, 255, 255]]), "lab", "uint8")
    white16 = to_clustering_space(np.array([[65535, 65535, 65535]]), "lab", "uint16")
    assert_allclose(white8, [[100, 0, 0]], atol=1e-3)
    assert_allclose(white16, white8, atol=1e-9)
    back = from_clustering_space(white16, "lab", "uint16")
    assert_allclose(back, [[65535, 65535, 65535]], rtol=1e-6)
    raw = np.array([[1.0, 2.0]])
    assert_allclose(to_clustering_space(raw, "rgb", "float32"), raw)
