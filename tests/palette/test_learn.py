"""learn_palette and palette_from_histogram (kmdist.palette._learn): exact and mini-batch."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import load_sample_image

from kmdist.kmeans import _lloyd_kernels
from kmdist.palette._assign import segment, unpack_rgb8
from kmdist.palette._histogram import chunk_histogram
from kmdist.palette._learn import FewerColorsWarning, learn_palette, palette_from_histogram


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


@pytest.mark.parametrize("name", ["china.jpg", "flower.jpg"])
@pytest.mark.parametrize("k", [3, 10, 16])
def test_exact_palette_beats_the_1_percent_recipe(name, k):
    """scikit-learn's colour-quantisation recipe: KMeans(k) on 1% of the pixels.

    With the restarts chosen on the coarsest histogram, china.jpg at k=10 ended 0.19%
    above the recipe: its best restart on 4 bits a channel was not the best on every colour.
    """
    img = load_sample_image(name)
    pixels = img.reshape(-1, 3).astype(np.float64)
    rng = np.random.default_rng(0)
    sample = pixels[rng.choice(len(pixels), len(pixels) // 100, replace=False)]
    recipe = SkKMeans(k, random_state=0).fit(sample).cluster_centers_
    recipe_inertia = ((pixels[:, None, :] - recipe[None]) ** 2).sum(-1).min(axis=1).sum()
    assert learn_palette(img, k).inertia < recipe_inertia


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
    pal = learn_palette(small_china, 6, init=init, tol=0)  # Lloyd to stable labels
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pal = learn_palette(img, 16)
    # Once, for this caller, pointing at this file (not at kmdist's own lines).
    (warning,) = caught
    assert warning.category is FewerColorsWarning and warning.filename == __file__
    message = "only 2 distinct colours found; the palette has 2 colours instead of 16"
    assert str(warning.message) == message
    assert pal.k == 2 and pal.n_clusters == 16


def test_palette_from_histogram_says_fewer_colours_in_the_palette_not_by_a_warning():
    # The pipeline's call: on a worker a warning would print a second, raw copy of what
    # `kmdist segment` reports from `Palette.shortfall` (issue 30).
    img = np.zeros((10, 10, 3), np.uint8)
    img[5:] = [255, 255, 255]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pal = palette_from_histogram(chunk_histogram(img), 16)
    assert pal.k == 2
    assert pal.shortfall == "only 2 distinct colour(s) in the image: 2 colour(s) instead of 16"


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


def test_threaded_lloyd_equals_single_thread(monkeypatch, rng):
    # Large histograms split each Lloyd step over threads, each slice with its own
    # moment changes; the palette must be the one a single thread finds.

    img = rng.integers(0, 256, size=(300, 300, 3), dtype=np.uint8)
    hist = chunk_histogram(img)
    monkeypatch.setattr(_lloyd_kernels, "_PARALLEL_ABOVE", 1 << 40)
    one = palette_from_histogram(hist, 8)
    monkeypatch.setattr(_lloyd_kernels, "_PARALLEL_ABOVE", 1 << 10)
    monkeypatch.setattr(_lloyd_kernels, "_threads", lambda: 3)
    many = palette_from_histogram(hist, 8)
    assert_array_equal(many.counts, one.counts)
    np.testing.assert_allclose(many.colors, one.colors, rtol=1e-9)
    np.testing.assert_allclose(many.inertia, one.inertia, rtol=1e-9)


@pytest.mark.parametrize(("n", "bits"), [(70_000, 4), (600_000, 7), (70_000, 7), (300, 6)])
def test_coarse_bins_by_counting_equal_bins_by_sorting(rng, n, bits):
    # Many colours are binned by counting into every bin, few by sorting their keys;
    # either way each bin is its colours' weighted mean, bins in key order.
    from kmdist.kmeans._rows import NumpyRows
    from kmdist.palette._learn import _coarse_rows

    codes = np.unique(rng.integers(0, 1 << 24, n).astype(np.uint32))
    shift = 8 - bits
    rgb = unpack_rgb8(codes).astype(np.int64) >> shift
    key = (rgb[:, 0] << (2 * bits)) | (rgb[:, 1] << bits) | rgb[:, 2]
    w = rng.integers(1, 50, codes.size).astype(np.float64)
    w[::7] = 0  # colours of weight 0
    w[key == key[0]] = 0  # and a bin of only such colours, which has no mean
    X = unpack_rgb8(codes).astype(np.float64)
    got = _coarse_rows(NumpyRows(X, w), codes, bits=bits)
    bins, inverse = np.unique(key, return_inverse=True)
    want_w = np.bincount(inverse, weights=w)
    want_X = np.stack([np.bincount(inverse, weights=w * X[:, j]) for j in range(3)], 1)
    keep = want_w > 0
    want_w, want_X = want_w[keep], want_X[keep]
    assert got.n_samples == keep.sum() < bins.size
    assert_array_equal(got.w, want_w)
    np.testing.assert_allclose(got.X, want_X / want_w[:, None], rtol=1e-12)


def test_palette_does_not_depend_on_the_number_of_cores(monkeypatch, rng):
    # Large histograms split each Lloyd step into slices whose moments are added up;
    # the slices depend on the data only, so any machine finds the same palette bits.

    hist = chunk_histogram(rng.integers(0, 256, size=(300, 300, 3), dtype=np.uint8))
    monkeypatch.setattr(_lloyd_kernels, "_PARALLEL_ABOVE", 1 << 12)
    palettes = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(_lloyd_kernels, "_threads", lambda n=threads: n)
        monkeypatch.setattr(_lloyd_kernels, "_pool", None)  # a pool of that many threads
        # In Lab the features are not integers, so the order of the sums shows.
        palettes.append(palette_from_histogram(hist, 8, color_space="lab"))
    for other in palettes[1:]:
        assert_array_equal(other.colors, palettes[0].colors)
        assert other.inertia == palettes[0].inertia


def _crops(n, side=256):
    """`n` random crops of the sample photos, as bench/palette.py --crops draws them."""
    from skimage import data

    photos = [
        load_sample_image("china.jpg"),
        load_sample_image("flower.jpg"),
        data.astronaut(),
        data.chelsea(),
        data.coffee(),
        data.rocket(),
    ]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        src = photos[i % len(photos)]
        y = rng.integers(0, src.shape[0] - side + 1)
        x = rng.integers(0, src.shape[1] - side + 1)
        out.append(np.ascontiguousarray(src[y : y + side, x : x + side, :3]))
    return out


def test_wu_first_cut_is_the_best_box_cut(rng):
    # With k=2 Wu's quantiser makes one cut: of every cut of the binned cube along an
    # axis, the one leaving the least summed squared error. Enumerated here by brute force.
    from kmdist.palette._assign import pack_rgb8
    from kmdist.palette._wu import wu_centers

    colors = np.unique(rng.integers(0, 256, size=(300, 3)), axis=0).astype(np.uint8)
    codes = pack_rgb8(colors).astype(np.uint32)
    X = colors.astype(np.float64)
    w = rng.integers(1, 20, len(X)).astype(np.float64)
    bins = colors >> 3
    best, want = np.inf, None
    for axis in range(3):
        for at in range(1, 32):
            low = bins[:, axis] < at
            if low.all() or not low.any():
                continue
            parts = [X[m] for m in (low, ~low)]
            weights = [w[m] for m in (low, ~low)]
            means = [p.T @ q / q.sum() for p, q in zip(parts, weights, strict=True)]
            sse = sum(
                (q * ((p - c) ** 2).sum(1)).sum()
                for p, q, c in zip(parts, weights, means, strict=True)
            )
            if sse < best:
                best, want = sse, np.stack(means)
    got, n = wu_centers(codes, X, w, 2)
    assert n == 2
    assert_allclose(got, want, rtol=1e-9)


def test_wu_fewer_bins_than_colours_wanted():
    # 40 colours in 2 bins of Wu's 5-bit grid: 2 boxes only; Lloyd's relocation fills
    # the other 14 clusters with distinct colours.
    colors = np.array([[8 * (i // 20), i % 4, (i // 4) % 5] for i in range(40)], np.uint8)
    img = colors[None]
    with np.errstate(all="raise"):
        pal = learn_palette(img, 16)
    assert pal.k == 16 and pal.counts.sum() == 40 and (pal.counts > 0).all()
    assert len(np.unique(pal.colors, axis=0)) == 16


def test_default_palette_is_deterministic(china):
    crop = np.ascontiguousarray(china[100:356, 100:356])
    hist = chunk_histogram(crop)
    a = palette_from_histogram(hist, 16)
    b = palette_from_histogram(hist, 16)
    assert a == b
    # Wu's seeding alone draws nothing: the seed does not matter.
    one = palette_from_histogram(hist, 16, init="wu", n_init=1, random_state=0)
    other = palette_from_histogram(hist, 16, init="wu", n_init=1, random_state=7)
    assert_array_equal(one.colors, other.colors)
    # However the image is chunked, the histogram and so the palette are the same.
    with dask.config.set(scheduler="sync"):
        chunked = learn_palette(da.from_array(crop, chunks=(37, 61, 3)), 16)
    assert_array_equal(chunked.colors, a.colors)


@pytest.mark.parametrize(
    ("case", "k", "space", "inertia", "counts", "color_sum"),
    [
        # Recorded with the defaults before Wu's seeding (commit eb82245).
        ("crop", 16, "rgb", 28841563.513499133, [8855, 7242, 6366, 6263], 5094.17685928107),
        ("flower", 8, "rgb", 27546593.29285848, [20157, 9682, 8795, 8636], 2248.0351985219622),
        ("small", 6, "lab", 585649.0094086798, [1855, 820, 603, 461], 2126.7477890893338),
        ("china", 10, "rgb", 141917887.84533915, [63175, 43761, 29683, 29432], 3886.6619837557787),
    ],
)
def test_old_default_reproduced(china, case, k, space, inertia, counts, color_sum):
    """`init='k-means++', n_init=3, tol=0` (the CLI's --tol 0 --attempts 3) is unchanged."""
    img = {
        "crop": china[100:356, 100:356],
        "flower": load_sample_image("flower.jpg")[50:306, 300:556],
        "small": china[::8, ::8],
        "china": china,
    }[case]
    hist = chunk_histogram(np.ascontiguousarray(img))
    pal = palette_from_histogram(hist, k, color_space=space, init="k-means++", n_init=3, tol=0.0)
    assert pal.inertia == pytest.approx(inertia, rel=1e-12)
    assert pal.counts[:4].tolist() == counts
    assert float(pal.colors.sum()) == pytest.approx(color_sum, rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("k", [16, 8])
def test_default_no_worse_than_old_default_on_crops(k):
    """Mean inertia over 50 random 256 x 256 crops no higher than the old default's.

    Per crop either may win (k-means' local optima: 0.95-1.05x at k=16), so the guard
    is on the mean, as the issue sets it (measured 0.9990x at k=16, 0.9960x at k=8).
    """
    hists = [chunk_histogram(c) for c in _crops(50)]
    old = np.array(
        [palette_from_histogram(h, k, init="k-means++", n_init=3, tol=0.0).inertia for h in hists]
    )
    new = np.array([palette_from_histogram(h, k).inertia for h in hists])
    assert (new / old).mean() <= 1.0


def test_bad_init_and_wu_needs_the_exact_path():
    img = np.zeros((4, 4, 3), np.uint8)
    img[2:] = 200
    with pytest.raises(ValueError, match="init must be one of"):
        learn_palette(img, 2, init="kmeans")
    with pytest.raises(ValueError, match="init='wu'"):
        learn_palette(img.astype(np.uint16), 2, init="wu")
    # 'auto' takes k-means++ on the mini-batch path.
    assert learn_palette(img.astype(np.uint16), 2).method == "minibatch"
