"""Colour histograms: exact, chunk-independent, mergeable."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

from kmdist.kmeans import _lloyd_kernels
from kmdist.palette import _counting
from kmdist.palette._assign import pack_rgb8, unpack_rgb8
from kmdist.palette._histogram import chunk_histogram, image_histogram, merge_histograms


def reference_histogram(img):
    colors, counts = np.unique(img.reshape(-1, 3), axis=0, return_counts=True)
    return colors, counts


def test_pack_unpack_round_trip(rng):
    rgb = rng.integers(0, 256, size=(1000, 3), dtype=np.uint8)
    codes = pack_rgb8(rgb)
    assert codes.dtype == np.uint32 and codes.max() < 2**24
    assert_array_equal(unpack_rgb8(codes), rgb)
    assert pack_rgb8(np.array([1, 2, 3], np.uint8)) == (1 << 16) + (2 << 8) + 3


def test_histogram_matches_numpy_unique(rng):
    img = rng.integers(0, 4, size=(64, 50, 3), dtype=np.uint8) * 60
    colors, counts = reference_histogram(img)
    h = image_histogram(da.from_array(img, chunks=(17, 23, 3)))
    assert_array_equal(h.colors(), colors)  # sorted codes sort like lexicographic colours
    assert_array_equal(h.counts, counts)
    assert h.n_pixels == 64 * 50


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    cy=st.integers(1, 40),
    cx=st.integers(1, 40),
    levels=st.integers(1, 256),
)
def test_histogram_does_not_depend_on_chunking(seed, cy, cx, levels):
    img = (np.random.default_rng(seed).integers(0, levels, size=(37, 41, 3)) % 256).astype(np.uint8)
    whole = chunk_histogram(img)
    chunked = image_histogram(da.from_array(img, chunks=(cy, cx, 3)))
    assert_array_equal(chunked.codes, whole.codes)
    assert_array_equal(chunked.counts, whole.counts)


def test_merge_is_exact_and_shared_histograms_add(rng):
    a = rng.integers(0, 3, size=(20, 20, 3), dtype=np.uint8)
    b = rng.integers(1, 5, size=(10, 30, 3), dtype=np.uint8)
    merged = merge_histograms(chunk_histogram(a), chunk_histogram(b))
    both = chunk_histogram(np.concatenate([a.reshape(-1, 3), b.reshape(-1, 3)])[None])
    assert_array_equal(merged.codes, both.codes)
    assert_array_equal(merged.counts, both.counts)
    shared = image_histogram([da.from_array(a, chunks=7), da.from_array(b, chunks=9)])
    assert_array_equal(shared.counts, both.counts)


def test_non_rgb8_refused():
    with pytest.raises(ValueError, match="8-bit RGB"):
        image_histogram(da.zeros((4, 4, 3), dtype=np.uint16))


CODES = st.one_of(st.integers(0, 40), st.integers(2**24 - 3, 2**24 - 1))


@pytest.mark.parametrize("dense", [False, True])
@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(CODES, max_size=30), min_size=1, max_size=9))
def test_merge_of_any_parts_equals_unique_of_all(dense, parts):
    # The linear merge of sorted runs, and the dense table (forced here for small
    # merges), against NumPy on the concatenated pixels: odd and even numbers of parts,
    # empty parts, overlapping and disjoint colours, the highest codes.
    before = _counting._DENSE_ABOVE
    _counting._DENSE_ABOVE = 1 if dense else 1 << 40
    try:
        check_merge(parts)
    finally:
        _counting._DENSE_ABOVE = before
    with _counting._table_lock:
        assert not _counting._dense_table().any()  # left clean for the next merge


def test_merge_counts_beyond_32_bits():
    big = [(np.array([5, 9], np.uint32), np.array([2**31, 1], np.int64))] * 2
    codes, counts = _counting.merge_sorted_counts(
        [*big, (np.arange(10, 2**18 + 10, dtype=np.uint32), np.ones(2**18, np.int64))]
    )
    assert codes[:2].tolist() == [5, 9] and counts[:2].tolist() == [2**32, 2]
    assert counts[2:].sum() == 2**18


def check_merge(parts):
    hists = [
        chunk_histogram(unpack_rgb8(np.asarray(p, dtype=np.uint32))[None])
        if p
        else chunk_histogram(np.zeros((0, 0, 3), np.uint8))
        for p in parts
    ]
    merged = merge_histograms(*hists)
    codes, counts = np.unique(
        np.concatenate([np.asarray(p, np.uint32) for p in parts]), return_counts=True
    )
    assert_array_equal(merged.codes, codes)
    assert_array_equal(merged.counts, counts)
    assert merged.codes.dtype == np.uint32 and merged.counts.dtype == np.int64


def test_threaded_lloyd_equals_single_thread(monkeypatch, rng):
    # Large histograms split each Lloyd step over threads, each slice with its own
    # moment changes; the palette must be the one a single thread finds.
    from kmdist import palette_from_histogram

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


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_fused_lookup_equals_pack_and_take(rng, dtype):
    # The compiled lookup (no packed-code intermediates) against NumPy, on a strided
    # (non-contiguous) block as Dask may pass one.
    from kmdist.palette._assign_kernels import lut_labels

    lut = rng.integers(0, 300 if dtype == np.uint16 else 16, 1 << 24).astype(dtype)
    block = rng.integers(0, 256, size=(70, 90, 3), dtype=np.uint8)[::2, 1::3]
    labels = lut_labels(block, lut)
    assert labels.dtype == dtype and labels.shape == block.shape[:2]
    assert_array_equal(labels, lut[pack_rgb8(block)])


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


@pytest.mark.parametrize(
    ("dtype", "k", "threads"),
    [(np.float64, 7, 1), (np.float32, 7, 1), (np.float64, 7, 3), (np.float64, 1, 3)],
)
def test_hamerly_bounds_give_the_full_search_statistics(monkeypatch, rng, dtype, k, threads):
    # Bounds stored net of the summed centre shifts skip samples; the statistics of
    # every step must still be those of a search of every sample against every centre,
    # also when each step (and the first, unlabelled one) is split over threads.
    from kmdist.kmeans._lloyd import block_stats
    from kmdist.kmeans._rows import NumpyRows

    if threads > 1:
        monkeypatch.setattr(_lloyd_kernels, "_PARALLEL_ABOVE", 1 << 10)
        monkeypatch.setattr(_lloyd_kernels, "_threads", lambda: threads)
    X = rng.normal(size=(5000, 3)).astype(dtype) * 40 + 128
    w = rng.integers(1, 9, X.shape[0]).astype(np.float64)
    rows = NumpyRows(X, w)
    centers = X[rng.choice(X.shape[0], k, replace=False)].astype(np.float64)
    for step in range(25):
        got = rows.stats(centers[None])
        want = block_stats(X, w, centers[None])
        np.testing.assert_allclose(got[0, :, :4], want[0, :, :4], rtol=1e-9, atol=1e-6)
        # Inertia: the reference computes distances in X's precision.
        rtol = 1e-5 if dtype == np.float32 else 1e-9
        np.testing.assert_allclose(got[0, :, 4], want[0, :, 4], rtol=rtol)
        # Large moves early, small late: both bound outcomes are exercised.
        centers = centers + rng.normal(size=centers.shape) * (8.0 if step < 5 else 0.3)


@pytest.mark.parametrize(("ldtype", "cdtype"), [(np.uint8, np.uint8), (np.uint16, np.float64)])
def test_color_planes_equal_numpy_take(rng, ldtype, cdtype):
    from kmdist.palette._assign_kernels import color_planes

    colors = rng.integers(0, 256, (300, 3)).astype(cdtype)
    labels = rng.integers(0, 256 if ldtype == np.uint8 else 300, (60, 80)).astype(ldtype)
    strided = labels[::2, 1::3]  # a Dask block may be a view
    planes = color_planes(strided, colors)
    assert planes.dtype == cdtype and planes.flags.c_contiguous
    assert_array_equal(planes, np.moveaxis(colors[strided], 2, 0))
    with pytest.raises(ValueError, match="label 7 has no colour: the palette has 5 colours"):
        color_planes(np.array([[0, 7]], dtype=ldtype), colors[:5])
    with pytest.raises(ValueError, match="labels must be unsigned integers, got dtype int16"):
        color_planes(np.array([[0, -1]], dtype=np.int16), colors)


def test_colour_counts_with_the_table_busy_equal_unique(rng):
    # The dense table serves one thread at a time; a block counted while another thread
    # holds it is sorted instead, with the same result.
    from kmdist.palette._counting import _table_lock

    block = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)[:, ::2]
    codes, counts = np.unique(pack_rgb8(block).ravel(), return_counts=True)
    free = chunk_histogram(block)
    with _table_lock:
        busy = chunk_histogram(block)
    for got in (free, busy):
        assert_array_equal(got.codes, codes)
        assert_array_equal(got.counts, counts)
    # The table is left clean: a second count is not inflated by the first.
    assert_array_equal(chunk_histogram(block).counts, counts)


def test_palette_does_not_depend_on_the_number_of_cores(monkeypatch, rng):
    # Large histograms split each Lloyd step into slices whose moments are added up;
    # the slices depend on the data only, so any machine finds the same palette bits.
    from kmdist import palette_from_histogram

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


def test_colour_counting_refuses_what_is_not_8_bit_rgb():
    # The table has 2**24 entries: other blocks would index outside it.
    from kmdist.palette._counting import count_colors

    assert count_colors(np.zeros((4, 4, 2), np.uint8)) is None
    assert count_colors(np.zeros((4, 4, 3), np.uint16)) is None
    assert count_colors(np.zeros((4, 4, 3), np.uint8)) is not None
