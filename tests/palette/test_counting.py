"""Colour counting and merging (kmdist.palette._counting): the dense table and sorted runs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numpy.testing import assert_array_equal

from kmdist.palette import _counting
from kmdist.palette._assign import pack_rgb8, unpack_rgb8
from kmdist.palette._histogram import chunk_histogram, merge_histograms

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


def test_colour_counting_refuses_what_is_not_8_bit_rgb():
    # The table has 2**24 entries: other blocks would index outside it.
    from kmdist.palette._counting import count_colors

    assert count_colors(np.zeros((4, 4, 2), np.uint8)) is None
    assert count_colors(np.zeros((4, 4, 3), np.uint16)) is None
    assert count_colors(np.zeros((4, 4, 3), np.uint8)) is not None
