"""Chunk sizes (kmdist.io._chunks): the `chunks` argument, default chunks that follow the source."""

from __future__ import annotations

import re

import numpy as np
import pytest

from kmdist.io._chunks import aligned_chunks, check_chunks
from kmdist.io._open import open_image

from ._helpers import rgb, save


def test_chunks_override_whole_image(tmp_path, rng):
    a = rgb(rng, 250, 130)
    path = save(tmp_path / "a.png", a)
    img = open_image(path, chunks=100)
    assert img.chunks == ((100, 100, 50), (100, 30), (3,))
    np.testing.assert_array_equal(img.compute(), a)
    assert open_image(path, chunks=(64, 128)).chunks[:2] == ((64, 64, 64, 58), (128, 2))
    with pytest.raises(ValueError, match="chunks"):
        open_image(path, chunks=0)
    with pytest.raises(ValueError, match="max_pixels"):
        open_image(path, max_pixels=0)


def test_chunk_cap_about_64mb():
    # Full-width strips of 16 rows, 40000 px wide: 1024 rows would be 123 MB.
    cy, cx = aligned_chunks((16, 40000), (5000, 40000), 3)
    assert cx == 40000 and cy % 16 == 0 and cy * cx * 3 <= 64 << 20 and cy > 500
    # Small tiles, heavy pixels: whole tiles, capped.
    cy, cx = aligned_chunks((256, 256), (10000, 10000), 80)
    assert cy % 256 == 0 and cx % 256 == 0 and cy * cx * 80 <= 64 << 20
    assert aligned_chunks((256, 256), (300, 100), 3) == (300, 100)


@pytest.mark.parametrize(
    ("chunks", "pair"),
    [(None, None), (7, (7, 7)), ((3, 5), (3, 5)), ([4, 9], (4, 9)), ((np.int64(6), 2), (6, 2))],
)
def test_check_chunks_accepts_one_or_two_positive_ints(chunks, pair):
    got = check_chunks(chunks)
    assert got == pair
    assert got is None or all(type(c) is int for c in got)


@pytest.mark.parametrize("chunks", [0, -4, (3, 0), (3,), (1, 2, 3), (2.5, 4), (True, 4), ("8", 8)])
def test_check_chunks_refuses_the_rest(chunks):
    message = f"chunks must be a positive int or a pair of them, got {chunks!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        check_chunks(chunks)


@pytest.mark.parametrize(
    ("units", "size", "pixel_bytes", "want"),
    [
        # 300-px tiles grouped four at a time (1200 >= 1024), capped by the image.
        ((300, 300), (5000, 900), 3, (1200, 900)),
        # Tiles already over 1024 a side are kept; tiles larger than the image shrink.
        ((2000, 1500), (1800, 4000), 3, (1800, 1500)),
        # 1024 x 1024 of 80-byte pixels is 80 MiB: rows shrink to 819 (64 MiB), then to
        # whole 100-row units, 800.
        ((100, 1024), (4000, 4000), 80, (800, 1024)),
        # One-row strips 100,000 px wide: 1024 rows would be 293 MiB; 223 fit in 64 MiB.
        ((1, 100_000), (3000, 100_000), 3, (223, 100_000)),
        # 2048 x 1024 of 80-byte pixels is 160 MiB and the rows are one unit already:
        # columns shrink by whole 256-px units to 256 (409 would fit).
        ((2048, 256), (4096, 4096), 80, (2048, 256)),
        # Never less than one source unit, even over the cap.
        ((16, 2_000_000), (64, 2_000_000), 3, (16, 2_000_000)),
    ],
)
def test_aligned_chunks_by_hand(units, size, pixel_bytes, want):
    cy, cx = aligned_chunks(units, size, pixel_bytes)
    assert (cy, cx) == want
    assert cy % min(units[0], size[0]) == 0 or cy == size[0]
    assert cx % min(units[1], size[1]) == 0 or cx == size[1]


def test_check_chunks_scalars_that_are_not_python_ints():
    # A NumPy integer is an integer, alone as in a pair; a float is refused, as a pair is.
    assert check_chunks(np.int64(6)) == (6, 6)
    for bad in (2.5, np.float64(6.0), object()):
        with pytest.raises(ValueError, match="chunks must be a positive int or a pair of them"):
            check_chunks(bad)
