"""Colour histograms (kmdist.palette._histogram): exact, chunk-independent, mergeable."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numpy.testing import assert_array_equal

from kmdist.palette._histogram import chunk_histogram, image_histogram, merge_histograms


def reference_histogram(img):
    colors, counts = np.unique(img.reshape(-1, 3), axis=0, return_counts=True)
    return colors, counts


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
