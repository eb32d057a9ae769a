"""Chunk sizes: the `chunks` argument checked, and default chunks that follow the source.

Small source tiles are grouped into chunks of at least 1024 px a side, so that there are
fewer, larger tasks, but never into chunks of more than about 64 MB.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_CHUNK_BYTES", "WHOLE_CHUNK", "Chunks", "aligned_chunks", "check_chunks"]

Chunks = int | tuple[int, int] | None
"""Chunk size along y and x: one int for both, a (y, x) pair, or None for the default."""

WHOLE_CHUNK = 2048  # chunk side for images decoded whole
_MIN_CHUNK = 1024  # smaller source tiles are grouped: fewer, larger tasks
MAX_CHUNK_BYTES = 64 << 20  # ... but not into chunks larger than this


def check_chunks(chunks: Chunks) -> tuple[int, int] | None:
    """Check the `chunks` argument; return it as a (y, x) pair, or None for the default."""
    if chunks is None:
        return None
    message = f"chunks must be a positive int or a pair of them, got {chunks!r}"
    if isinstance(chunks, int | np.integer):
        pair: tuple[object, ...] = (chunks, chunks)
    else:
        try:
            pair = tuple(chunks)
        except TypeError:  # a float, or another scalar that is not an integer
            raise ValueError(message) from None
    if len(pair) != 2 or not all(
        isinstance(c, int | np.integer) and not isinstance(c, bool) and c > 0 for c in pair
    ):
        raise ValueError(message)
    return int(pair[0]), int(pair[1])  # type: ignore[call-overload]


def aligned_chunks(
    units: tuple[int, int], size: tuple[int, int], pixel_bytes: int
) -> tuple[int, int]:
    """Chunk (y, x) made of whole source chunks: at least 1024 a side, at most ~64 MB."""
    uy, ux = max(1, min(units[0], size[0])), max(1, min(units[1], size[1]))
    cy, cx = _grouped(uy, size[0]), _grouped(ux, size[1])
    # Too large: shrink by whole source chunks, rows first (full-width strips), then columns.
    if cy * cx * pixel_bytes > MAX_CHUNK_BYTES:
        cy = max(uy, MAX_CHUNK_BYTES // (cx * pixel_bytes) // uy * uy)
    if cy * cx * pixel_bytes > MAX_CHUNK_BYTES:
        cx = max(ux, MAX_CHUNK_BYTES // (cy * pixel_bytes) // ux * ux)
    return cy, cx


def _grouped(unit: int, size: int) -> int:
    """Smallest multiple of `unit` that is at least _MIN_CHUNK, but no more than `size`."""
    unit = max(1, min(unit, size))
    return min(size, -(-_MIN_CHUNK // unit) * unit)
