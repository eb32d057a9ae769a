"""Images the palette tests share."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_sample_image


@pytest.fixture(scope="module")
def china():
    return load_sample_image("china.jpg")


@pytest.fixture(scope="module")
def small_china(china):
    return np.ascontiguousarray(china[::8, ::8])  # 54 x 80
