"""Palette values, JSON, and learn_palette (exact and mini-batch)."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import load_sample_image

from kmdist.palette._assign import segment
from kmdist.palette._learn import FewerColorsWarning, learn_palette
from kmdist.palette._palette import Palette, PaletteError


@pytest.fixture(scope="module")
def china():
    return load_sample_image("china.jpg")


@pytest.fixture(scope="module")
def small_china(china):
    return np.ascontiguousarray(china[::8, ::8])  # 54 x 80


def test_palette_json_round_trip(tmp_path):
    p = Palette(np.array([[1.5, 2, 3], [4, 5, 6]]), np.array([5, 2]), 12.0, seed=3, method="exact")
    p.save(tmp_path / "p.json")
    q = Palette.load(tmp_path / "p.json")
    assert q == p and q.seed == 3 and q.k == 2 and q.n_clusters == 2
    assert_array_equal(q.colors_as(), [[2, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match="read-only"):
        q.colors[0, 0] = 9


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("[1, 2]", "must be a JSON object"),
        ('{"colors": [[1, 2, 3]]}', r"missing \['counts', 'inertia'\]"),
        ('{"colors": [[1, 2, 3]], "counts": [1], "inertia": 0, "evil": 1}', "unknown fields"),
        ('{"colors": [[1, 2, 3]], "counts": [1, 2], "inertia": 0}', "counts must have shape"),
        ('{"colors": [[1, 2, 300]], "counts": [1], "inertia": 0}', "outside the uint8 range"),
        ('{"colors": [[1, 2, 3]], "counts": [-1], "inertia": 0}', "non-negative"),
        ('{"colors": [[1, 2, 3], [1, 1, 1]], "counts": [1, 5], "inertia": 0}', "sorted by count"),
        ('{"colors": [["a", 2, 3]], "counts": [1], "inertia": 0}', "not numeric"),
        ('{"colors": [[1, 2, 3]], "counts": [1], "inertia": NaN}', "finite"),
        (
            '{"colors": [[1, 2, 3]], "counts": [1], "inertia": 0, "color_space": "hsv"}',
            "color_space",
        ),
        ('{"colors": [[1, 2, 3]], "counts": [1.5], "inertia": 0}', "whole numbers"),
        ("{not json", "not valid JSON"),
    ],
)
def test_palette_json_validated(data, message):
    with pytest.raises(PaletteError, match=message):
        Palette.from_json(data)


def test_exact_palette_beats_sklearn_n_init_10_on_china(china):
    """The seed's colour compression: k=16 on china.jpg, inertia over every pixel."""
    pal = learn_palette(china, 16, random_state=0)
    pixels = china.reshape(-1, 3).astype(np.float64)
    sk = SkKMeans(16, n_init=10, random_state=0).fit(pixels)
    assert pal.k == 16 and pal.method == "exact"
    assert pal.counts.sum() == pixels.shape[0]
    assert pal.inertia <= sk.inertia_
    # The reported inertia is the true one over every pixel.
    d = ((pixels[:, None, :] - pal.colors[None]) ** 2).sum(-1).min(axis=1).sum()
    assert pal.inertia == pytest.approx(d, rel=1e-9)


def plain_lloyd(pixels, centers, max_iter=300):
    """Textbook Lloyd over every pixel, no kmdist code involved."""
    for _ in range(max_iter):
        labels = ((pixels[:, None, :] - centers[None]) ** 2).sum(-1).argmin(axis=1)
        new = np.array(
            [
                pixels[labels == j].mean(axis=0) if (labels == j).any() else centers[j]
                for j in range(len(centers))
            ]
        )
        if np.array_equal(new, centers):
            break
        centers = new
    return centers, labels


def test_exact_method_is_lloyd_over_every_pixel(small_china):
    pixels = small_china.reshape(-1, 3).astype(np.float64)
    init = pixels[[0, 500, 1000, 2000, 3000, 4000]]
    centers, labels = plain_lloyd(pixels, init)
    pal = learn_palette(small_china, 6, init=init)
    # The palette is sorted by count; match its colours to the reference centres.
    order = [int(np.argmin(((centers - c) ** 2).sum(1))) for c in pal.colors]
    assert sorted(order) == list(range(6))
    assert_allclose(pal.colors, centers[order], rtol=1e-10, atol=1e-9)
    got = segment(da.from_array(small_china, chunks=(20, 30, 3)), pal).compute()
    assert_array_equal(np.asarray(order)[got.ravel()], labels)


@pytest.mark.parametrize("k", [3, 10])
def test_seed_segmentations(small_china, k):
    """The seed's cv2.kmeans segmentations with k=3 and k=10, OpenCV's criteria."""
    pal = learn_palette(small_china, k, init="random", n_init=10, max_iter=100, eps=0.85)
    labels = segment(da.from_array(small_china), pal).compute()
    assert pal.k == k and labels.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(k))
    assert_array_equal(np.bincount(labels.ravel(), minlength=k), pal.counts)


@pytest.mark.parametrize("color_space", ["rgb", "lab"])
def test_labels_do_not_depend_on_chunking(small_china, color_space):
    ref_pal = learn_palette(small_china, 8, color_space=color_space)
    ref = segment(da.from_array(small_china), ref_pal).compute()
    for chunks in [(7, 11, 3), (54, 1, 3), (13, 80, 3)]:
        pal = learn_palette(da.from_array(small_china, chunks=chunks), 8, color_space=color_space)
        assert pal == ref_pal
        assert_array_equal(segment(da.from_array(small_china, chunks=chunks), pal).compute(), ref)


@pytest.mark.slow
def test_labels_same_on_one_and_two_workers(small_china):
    from distributed import Client, LocalCluster

    results = []
    for workers in (1, 2):
        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as c,
            Client(c),
        ):
            img = da.from_array(small_china, chunks=(10, 17, 3))
            pal = learn_palette(img, 8)
            results.append((pal, segment(img, pal).compute()))
    assert results[0][0] == results[1][0]
    assert_array_equal(results[0][1], results[1][1])


def test_lab_palette_reported_in_rgb(small_china):
    pal = learn_palette(small_china, 5, color_space="lab")
    assert pal.color_space == "lab" and pal.dtype == "uint8"
    assert pal.colors.min() >= 0 and pal.colors.max() <= 255
    assert pal.counts.sum() == small_china.shape[0] * small_china.shape[1]


def test_minibatch_for_16_bit_and_chunk_independent(small_china):
    img16 = small_china.astype(np.uint16) * 257
    with dask.config.set(scheduler="sync"):
        a = learn_palette(da.from_array(img16, chunks=(10, 10, 3)), 6, random_state=1)
        b = learn_palette(da.from_array(img16, chunks=(54, 80, 3)), 6, random_state=1)
    assert a.method == "minibatch" and a.dtype == "uint16"
    assert_allclose(a.colors, b.colors, rtol=1e-9)
    assert a.counts.sum() == img16.shape[0] * img16.shape[1]
    exact = learn_palette(small_china, 6, random_state=1)
    assert a.inertia / 257**2 <= 1.15 * exact.inertia  # close to the exact optimum


def test_minibatch_grey_and_multispectral(rng):
    grey = rng.normal(size=(40, 30, 1)).astype(np.float32)
    pal = learn_palette(da.from_array(grey, chunks=(9, 9, 1)), 4)
    assert pal.channels == 1 and pal.dtype == "float32"
    ms = rng.integers(0, 1000, size=(30, 30, 6)).astype(np.uint16)
    pal6 = learn_palette(ms, 5)
    assert pal6.colors.shape == (5, 6)
    labels = segment(da.from_array(ms, chunks=10), pal6).compute()
    assert_array_equal(np.bincount(labels.ravel(), minlength=5), pal6.counts)


def test_shared_palette_over_images(small_china):
    flower = np.ascontiguousarray(load_sample_image("flower.jpg")[::8, ::8])
    pal = learn_palette([small_china, flower], 8)
    assert pal.counts.sum() == small_china.size // 3 + flower.size // 3
    both = np.concatenate([small_china.reshape(-1, 3), flower.reshape(-1, 3)])[None]
    assert pal == learn_palette(both, 8)


def test_fewer_colours_warns_and_shrinks():
    img = np.zeros((10, 10, 3), np.uint8)
    img[5:] = [255, 255, 255]
    with pytest.warns(FewerColorsWarning, match="only 2 distinct colours"):
        pal = learn_palette(img, 16)
    assert pal.k == 2 and pal.n_clusters == 16


@pytest.mark.parametrize(
    ("k", "message"),
    [(0, "in \\[1, 65535\\]"), (-3, "in \\[1"), (2.5, "integer"), (70000, "65535")],
)
def test_bad_k(k, message):
    with pytest.raises(ValueError, match=message):
        learn_palette(np.zeros((4, 4, 3), np.uint8), k)


def test_exact_needs_rgb8_and_lab_needs_3_channels():
    with pytest.raises(ValueError, match="method='exact' needs 8-bit RGB"):
        learn_palette(np.zeros((4, 4, 3), np.uint16), 2, method="exact")
    with pytest.raises(ValueError, match="needs 3-channel"):
        learn_palette(np.zeros((4, 4, 1), np.uint8), 2, color_space="lab")


def test_more_than_256_colours_gives_uint16_labels(rng):
    img = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pal = learn_palette(img, 300, n_init=1, max_iter=5)
    assert segment(da.from_array(img), pal).dtype == np.uint16
