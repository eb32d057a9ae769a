"""Sizes of the stored arrays: pyramid levels, Zarr chunks, shards and write blocks."""

from __future__ import annotations

import math
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt

from kmdist.store._layout import Colours

__all__ = ["Labels", "blocks_for", "chunk_shape", "level_shapes", "sharding", "write_blocks"]

# Pyramids stop once the largest side fits a viewer's overview tile.
_TOP_SIDE = 256


# Chunk side used when the labels' Dask chunks are irregular.
_DEFAULT_CHUNK = 1024


# Labels to write: a Dask array, or NumPy for a small image segmented in memory.
Labels = da.Array | npt.NDArray[Any]


# Arrays larger than this are sharded, so that small chunks do not become millions of files.
_SHARD_ABOVE = 64 * 2**20


# Largest shard, which is also the largest block one write task holds.
_MAX_SHARD = 256 * 2**20


def level_shapes(shape: tuple[int, ...], n_levels: int | None) -> list[tuple[int, int]]:
    """Shapes of the pyramid levels: each the previous one subsampled by 2."""
    shapes = [(int(shape[0]), int(shape[1]))]

    def halve(s: tuple[int, int]) -> tuple[int, int]:
        return (-(-s[0] // 2), -(-s[1] // 2))

    if n_levels is None:
        while max(shapes[-1]) > _TOP_SIDE:
            shapes.append(halve(shapes[-1]))
        return shapes
    if isinstance(n_levels, bool) or not isinstance(n_levels, int) or n_levels < 1:
        raise ValueError(f"n_levels must be a positive integer or None, got {n_levels!r}")
    while len(shapes) < n_levels:
        if shapes[-1] == (1, 1):
            raise ValueError(
                f"n_levels={n_levels} is too many for shape {shape}: "
                f"level {len(shapes) - 1} is already one pixel"
            )
        shapes.append(halve(shapes[-1]))
    return shapes


def chunk_shape(labels: Labels) -> tuple[int, int]:
    """Choose the Zarr chunk: the labels' own when regular, else 1024 x 1024 (clipped)."""
    default = (min(_DEFAULT_CHUNK, labels.shape[0]), min(_DEFAULT_CHUNK, labels.shape[1]))
    if isinstance(labels, np.ndarray):
        return default
    rows, cols = labels.chunks[:2]
    if all(len(set(c[:-1])) <= 1 and c[-1] <= c[0] for c in (rows, cols)):
        return (int(rows[0]), int(cols[0]))
    return default


def write_blocks(image: da.Array, palette: Colours) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return the output's Zarr chunk for `image` and the block to label it in.

    See `blocks_for`; the recoloured image has `palette`'s channels and dtype.
    """
    return blocks_for(image, palette.channels * palette.colors_as().dtype.itemsize)


def blocks_for(image: da.Array, bytes_per_pixel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return the output's Zarr chunk for `image` and the block to label it in.

    The block is the recoloured image's shard when the output has at least 16 shards (a
    multiple of the chunk), else the chunk. Labels computed in such blocks are written without
    gathering blocks from other workers, so a write task holds one shard however large
    the image (pass the chunk to `write_segmentation` as `chunks`).
    """
    shape = (int(image.shape[0]), int(image.shape[1]))
    chunk = chunk_shape(image)
    chunk = (min(chunk[0], shape[0]), min(chunk[1], shape[1]))
    shard = sharding(shape, chunk, bytes_per_pixel)
    if shard is None or math.ceil(shape[0] / shard[0]) * math.ceil(shape[1] / shard[1]) < 16:
        # Too few shards to spread over the workers (a 64 MP image has 4): label in
        # chunks. What a write task then gathers is bounded by the image's small size.
        return chunk, chunk
    return chunk, shard


def sharding(
    shape: tuple[int, int], chunk: tuple[int, int], bytes_per_pixel: int
) -> tuple[int, int] | None:
    """Shard shape (y, x) for an array, or None when it stays unsharded.

    Arrays above 64 MiB group up to 4 x 4 chunks per shard (2 x 2 when chunks are
    large), keeping a shard under 256 MiB since one write task holds a whole shard.
    """
    if shape[0] * shape[1] * bytes_per_pixel <= _SHARD_ABOVE:
        return None
    chunk_bytes = chunk[0] * chunk[1] * bytes_per_pixel
    factor = next((f for f in (4, 2) if f * f * chunk_bytes <= _MAX_SHARD), 1)
    shard = (
        min(factor * chunk[0], -(-shape[0] // chunk[0]) * chunk[0]),
        min(factor * chunk[1], -(-shape[1] // chunk[1]) * chunk[1]),
    )
    return None if shard == chunk else shard
