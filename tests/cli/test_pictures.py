"""The seed notebook's pictures drawn by `kmdist demo` (kmdist.cli._pictures)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import load_digits, make_blobs

from kmdist.cli._pictures import blobs_example, china_examples, digits_example

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_picture(path, size):
    """A real PNG of `size` (width, height) pixels with something drawn on it."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == size
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 10  # not a blank canvas
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 8


def test_blobs_picture_and_inertia(tmp_path):
    inertia = blobs_example(tmp_path / "blobs.png")
    check_picture(tmp_path / "blobs.png", (500, 400))  # 5 x 4 inches at 100 dpi
    # Four well-separated blobs: the optimum, which scikit-learn finds too.
    X, _ = make_blobs(n_samples=300, centers=4, cluster_std=0.60, random_state=0)
    best = SkKMeans(4, n_init=10, random_state=0).fit(X).inertia_
    assert math.isfinite(inertia) and inertia > 0
    assert inertia == pytest.approx(best, rel=1e-9)


def test_digits_picture_and_inertia(tmp_path):
    inertia = digits_example(tmp_path / "digits.png", random_state=3)
    check_picture(tmp_path / "digits.png", (800, 300))  # 8 x 3 inches at 100 dpi
    # A local optimum of the 64-dimensional digits: no better than scikit-learn's best
    # of 10 starts, and not far from it.
    best = SkKMeans(10, n_init=10, random_state=0).fit(load_digits().data).inertia_
    assert math.isfinite(inertia) and best * (1 - 1e-9) <= inertia <= 1.1 * best


@pytest.mark.slow
def test_china_pictures(tmp_path):
    paths = china_examples(tmp_path)
    assert paths == {
        "compressed": tmp_path / "china-16-colours.png",
        "pixels": tmp_path / "china-pixel-space.png",
        "k3": tmp_path / "china-k3.png",
        "k10": tmp_path / "china-k10.png",
    }
    # Figure sizes in inches at 80 dpi.
    sizes = {"compressed": (960, 360), "pixels": (960, 800), "k3": (480, 360), "k10": (480, 360)}
    for key, path in paths.items():
        check_picture(path, sizes[key])
