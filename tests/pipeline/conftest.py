"""Fixtures of the pipeline's tests."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
from sklearn.datasets import load_sample_image


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder with two small photos (PNG, JPEG) and one corrupt JPEG."""
    root = tmp_path_factory.mktemp("photos")
    china = np.ascontiguousarray(load_sample_image("china.jpg")[::4, ::4])
    flower = np.ascontiguousarray(load_sample_image("flower.jpg")[::4, ::4])
    iio.imwrite(root / "china.png", china)
    (root / "sub").mkdir()
    iio.imwrite(root / "sub" / "flower.jpg", flower, quality=95)
    good = (root / "sub" / "flower.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(good[: len(good) // 3])
    return root
