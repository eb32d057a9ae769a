"""Pyramid levels, Zarr chunks, shards and write blocks (kmdist.store._blocks)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from kmdist.palette._palette import Palette
from kmdist.store import _blocks
from kmdist.store._blocks import blocks_for, chunk_shape, level_shapes, write_blocks
from kmdist.store._write import write_segmentation
from tests.store._helpers import write

MiB = 2**20


def test_shard_rule():
    assert _blocks.sharding((8000, 8000), (1024, 1024), 1) is None  # 61 MiB
    assert _blocks.sharding((9000, 9000), (1024, 1024), 1) == (4096, 4096)
    assert _blocks.sharding((9000, 9000), (1024, 1024), 3) == (4096, 4096)
    assert _blocks.sharding((20000, 20000), (4096, 4096), 3) == (8192, 8192)  # 2 x 2
    assert _blocks.sharding((40000, 40000), (8192, 8192), 3) is None  # chunks already large
    assert _blocks.sharding((100000, 700), (1024, 1024), 1) == (4096, 1024)


def test_labels_in_shard_blocks_store_the_same(tmp_path, sample, monkeypatch):
    # Large outputs are labelled in the output's shard-sized blocks (write_blocks) and
    # written with the chunk given: same chunks, shards and pixels as chunk-sized labels.
    labels, palette = sample
    monkeypatch.setattr(_blocks, "_SHARD_ABOVE", 10_000)  # shard this small sample
    image = da.zeros((*labels.shape, 3), dtype=np.uint8, chunks=(64, 64, 3))
    assert _blocks.write_blocks(image, palette) == ((64, 64), (64, 64))  # 2 x 2 shards: few
    image = da.zeros((*labels.shape, 3), dtype=np.uint8, chunks=(16, 16, 3))
    chunk, block = _blocks.write_blocks(image, palette)
    assert chunk == (16, 16) and block == (64, 64)  # 4 x 4 chunks a shard, 5 x 8 shards
    write(tmp_path / "a.zarr", "p", labels, palette, chunks=chunk)
    blocked = da.from_array(labels, chunks=block)
    write_segmentation(tmp_path / "b.zarr", "p", blocked, palette, chunks=chunk)
    for path in ("p/0", "p/1", "p/labels/segmentation/0", "p/labels/segmentation/1"):
        a = zarr.open_array(str(tmp_path / "a.zarr" / path), mode="r")
        b = zarr.open_array(str(tmp_path / "b.zarr" / path), mode="r")
        assert (a.chunks, a.shards) == (b.chunks, b.shards)
        assert_array_equal(a[...], b[...])
    level0 = zarr.open_array(str(tmp_path / "b.zarr/p/0"), mode="r")
    assert level0.chunks == (3, 16, 16) and level0.shards == (3, 64, 64)


# --- level_shapes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "n_levels", "expected"),
    [
        ((5, 3), 3, [(5, 3), (3, 2), (2, 1)]),  # odd sides halve up: ceil(5 / 2) = 3
        ((7, 7), 2, [(7, 7), (4, 4)]),
        ((1, 9), 3, [(1, 9), (1, 5), (1, 3)]),  # a side of 1 stays 1
        ((1, 1), 1, [(1, 1)]),
        ((10, 20, 3), 2, [(10, 20), (5, 10)]),  # trailing axes are not levels
        ((256, 256), None, [(256, 256)]),  # fits a 256-pixel tile already
        ((257, 10), None, [(257, 10), (129, 5)]),
        ((10, 1000), None, [(10, 1000), (5, 500), (3, 250)]),
        ((2048, 2048), None, [(2048, 2048), (1024, 1024), (512, 512), (256, 256)]),
    ],
)
def test_level_shapes(shape, n_levels, expected):
    shapes = level_shapes(shape, n_levels)
    assert shapes == expected
    assert all(type(v) is int for s in shapes for v in s)


def test_level_shapes_match_dask_subsampling():
    # Each level is the previous one taken [::2, ::2]: its shape is what that gives.
    for shape in [(1, 1), (2, 3), (1025, 7), (999, 1000), (4097, 3)]:
        expected, level = [], np.zeros(shape, dtype=bool)
        for _ in range(4):
            expected.append(level.shape)
            level = level[::2, ::2]
        if max(expected[-1]) > 1:
            assert level_shapes(shape, 4) == expected


@pytest.mark.parametrize("n_levels", [0, -1, 1.0, 2.5, True, False, "2"])
def test_level_shapes_refuses_bad_n_levels(n_levels):
    with pytest.raises(ValueError) as info:
        level_shapes((64, 64), n_levels)
    assert str(info.value) == f"n_levels must be a positive integer or None, got {n_levels!r}"


@pytest.mark.parametrize(
    ("shape", "n_levels", "one_pixel"), [((1, 1), 2, 0), ((2, 1), 3, 1), ((8, 5), 5, 3)]
)
def test_level_shapes_refuses_levels_below_one_pixel(shape, n_levels, one_pixel):
    with pytest.raises(ValueError) as info:
        level_shapes(shape, n_levels)
    assert str(info.value) == (
        f"n_levels={n_levels} is too many for shape {shape}: level {one_pixel} is already one pixel"
    )


def test_level_shapes_to_exactly_one_pixel():
    assert level_shapes((8, 5), 4) == [(8, 5), (4, 3), (2, 2), (1, 1)]


# --- chunk_shape --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        (((100, 100, 100), (128, 128)), (100, 128)),
        (((100, 100, 50), (128, 72)), (100, 128)),  # a smaller last chunk is regular
        (((300,), (200,)), (300, 200)),  # one chunk
        (((2000,), (50, 50)), (2000, 50)),  # the labels' own, even above 1024
    ],
)
def test_chunk_shape_keeps_regular_dask_chunks(chunks, expected):
    shape = (sum(chunks[0]), sum(chunks[1]))
    assert chunk_shape(da.zeros(shape, dtype=np.uint8, chunks=chunks)) == expected


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        (((100, 50, 100), (128,)), (250, 128)),  # uneven in the middle: 1024, clipped
        (((50, 50, 100), (128,)), (200, 128)),  # last chunk larger than the others
        (((1000, 1000), (700, 1100)), (1024, 1024)),  # x irregular, y regular
        (((100, 900, 300), (1100,)), (1024, 1024)),
    ],
)
def test_chunk_shape_irregular_dask_chunks_fall_back_to_1024(chunks, expected):
    shape = (sum(chunks[0]), sum(chunks[1]))
    assert chunk_shape(da.zeros(shape, dtype=np.uint8, chunks=chunks)) == expected


def test_chunk_shape_of_an_image_uses_its_first_two_axes():
    image = da.zeros((300, 400, 3), dtype=np.uint8, chunks=(100, 200, 3))
    assert chunk_shape(image) == (100, 200)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((50, 60), (50, 60)), ((3000, 20), (1024, 20)), ((2048, 4096), (1024, 1024))],
)
def test_chunk_shape_of_numpy_labels(shape, expected):
    assert chunk_shape(np.zeros(shape, dtype=np.uint8)) == expected


# --- blocks_for and write_blocks ----------------------------------------------------


def lazy_image(shape, chunk, channels=3):
    """A Dask image that is never computed: blocks_for looks at shapes only."""
    return da.zeros((*shape, channels), dtype=np.uint8, chunks=(chunk, chunk, channels))


def test_blocks_for_unsharded_output_labels_in_chunks():
    # 4000 x 4000 x 3 bytes = 46 MiB: not sharded.
    assert blocks_for(lazy_image((4000, 4000), 256), 3) == ((256, 256), (256, 256))


@pytest.mark.parametrize(
    ("shape", "expected_block"),
    [
        # 3 bytes a pixel, chunks of 1024: 3 MiB a chunk, shards of 4 x 4 chunks (4096).
        ((16384, 16384), (4096, 4096)),  # 4 x 4 = 16 shards: label by shard
        ((12289, 16384), (4096, 4096)),  # 4 x 4, the last row of shards one pixel high
        ((12288, 16384), (1024, 1024)),  # 3 x 4 = 12 shards: too few
        ((12288, 20480), (1024, 1024)),  # 3 x 5 = 15
        ((8192, 40960), (4096, 4096)),  # 2 x 10 = 20
        ((9000, 9000), (1024, 1024)),  # 3 x 3 = 9
    ],
)
def test_blocks_for_16_shard_rule(shape, expected_block):
    assert blocks_for(lazy_image(shape, 1024), 3) == ((1024, 1024), expected_block)


def test_blocks_for_block_is_a_multiple_of_the_chunk():
    chunk, block = blocks_for(lazy_image((20000, 20000), 1000), 3)
    assert chunk == (1000, 1000) and block == (4000, 4000)
    assert block[0] % chunk[0] == 0 and block[1] % chunk[1] == 0


def test_blocks_for_irregular_chunks_use_1024():
    image = da.zeros((17000, 17000, 3), dtype=np.uint8, chunks=((5000, 12000), 17000, 3))
    assert blocks_for(image, 3) == ((1024, 1024), (4096, 4096))


@pytest.mark.parametrize(
    ("dtype", "colors", "expected_block"),
    [
        # 4000 x 4000 pixels, chunks of 256: sharded above 64 MiB, i.e. 4.2 bytes a pixel
        ("uint8", [[0, 0, 0]], (256, 256)),  # 3 bytes: 46 MiB, not sharded
        ("uint16", [[0, 0, 0]], (1024, 1024)),  # 6 bytes: 92 MiB, 4 x 4 shards of 1024
        ("uint16", [[0]], (256, 256)),  # grey, 2 bytes: 31 MiB
        ("float32", [[0.0]], (256, 256)),  # grey, 4 bytes: 61 MiB
        ("float32", [[0.0, 0.0, 0.0]], (1024, 1024)),  # 12 bytes
    ],
)
def test_write_blocks_counts_the_recoloured_image_bytes(dtype, colors, expected_block):
    palette = Palette(np.array(colors), np.array([1]), 0.0, dtype=dtype)
    image = lazy_image((4000, 4000), 256, channels=1)  # the source's channels do not matter
    assert write_blocks(image, palette) == ((256, 256), expected_block)
