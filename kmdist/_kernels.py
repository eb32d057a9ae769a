"""Compiled inner loops (numba) where NumPy would need several passes per step.

Each kernel fuses what would be a chain of whole-array NumPy operations into one pass
over the samples. They are compiled on first use and cached on disk (``cache=True``), so
a process pays the compilation once per installation, not per call.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

__all__ = [
    "color_planes",
    "count_colors",
    "hamerly_step",
    "lut_labels",
    "merge_sorted_counts",
]

# Below this many samples a Lloyd step runs in one thread: a thread hand-off costs more.
# (342,000 colours, 103 steps: 0.10 s in one thread, 0.067 s in two.)
_PARALLEL_ABOVE = 1 << 17
# Most slices a Lloyd step is split into (2**17 samples or more each, a power of two).
_MAX_PARTS = 8
_pool: ThreadPoolExecutor | None = None
# Histogram merges of at least this many codes in all use a dense table.
_DENSE_ABOVE = 1 << 18
_table: npt.NDArray[np.uint32] | None = None
# Colours seen by `count_colors`, in the order seen; used under `_table_lock`.
_touched = np.empty(0, dtype=np.uint32)
_table_lock = threading.Lock()


def _threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


@numba.njit(cache=True, nogil=True)
def _hamerly_step(
    X: npt.NDArray[np.floating[Any]],
    w: npt.NDArray[np.float64],
    centers: npt.NDArray[np.float64],
    drift: npt.NDArray[np.float64],
    max_drift: float,
    labels: npt.NDArray[np.int32],
    upper: npt.NDArray[np.float64],
    lower: npt.NDArray[np.float64],
    sums: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    sq: npt.NDArray[np.float64],
    scale: float,
) -> int:
    n, d = X.shape
    k = centers.shape[0]
    searched = 0
    for i in range(n):
        old = labels[i]
        # Bounds are stored net of the drifts (see `hamerly_step`): a sample whose
        # bounds hold is only read, never written.
        u = upper[i] + drift[old]
        lo = lower[i] - max_drift
        # Same margin as the NumPy path: covers the distances' round-off.
        if u < lo - (1e-7 * (u + lo + scale) + 1e-12):
            continue
        searched += 1
        best = np.inf
        second = np.inf
        new = 0
        for j in range(k):
            dist = 0.0
            for f in range(d):
                t = X[i, f] - centers[j, f]
                dist += t * t
            if dist < best:
                second = best
                best = dist
                new = j
            elif dist < second:
                second = dist
        upper[i] = math.sqrt(best) - drift[new]
        lower[i] = math.sqrt(second) + max_drift
        if new != old:
            labels[i] = new
            # The sample's moments, computed where needed rather than stored (40 bytes
            # a sample that would be written once and read rarely).
            wi = w[i]
            xx = 0.0
            for f in range(d):
                wx = np.float64(X[i, f]) * wi
                xx += wx * X[i, f]
                sums[new, f] += wx
                if old >= 0:
                    sums[old, f] -= wx
            weights[new] += wi
            sq[new] += xx
            if old >= 0:
                weights[old] -= wi
                sq[old] -= xx
    return searched


def hamerly_step(
    bounds: Any, X: npt.NDArray[np.floating[Any]], centers: npt.NDArray[np.float64]
) -> int:
    """Move Hamerly bounds to new centres in compiled passes; return samples searched.

    Updates `bounds` (a ``kmdist._rows._Bounds``) in place: each sample's bounds grow by
    the centre shifts; a sample whose bounds overlap is searched against every centre,
    and the cluster moments follow samples that change cluster. Samples labelled -1,
    with infinite upper bounds, are searched and added to the moments: the first step.
    Large inputs are split over the cores' threads (the kernel releases the GIL), each
    slice with its own moment changes, added up afterwards.
    """
    global _pool
    shift = np.sqrt(((centers - bounds.centers) ** 2).sum(axis=1))
    # Hamerly adds each centre's shift to the upper bounds of its samples and the largest
    # shift to every lower bound, a write of every sample each step. Bounds are stored
    # instead net of the shifts summed since the run began (`drift` a centre, and the
    # largest shifts' sum): a step reads 20 bytes a sample and writes only the samples
    # it searches (2.06 million colours: 3.7 to 2.6 ms a step, with the moments below).
    bounds.drift += shift
    bounds.max_drift += float(shift.max())
    scale = float(np.sqrt((centers**2).sum(axis=1)).max())
    n = X.shape[0]
    # The split depends on n only, not on the cores, so that the moments are summed in
    # the same order, and the palette comes out the same to the last bit, on every
    # machine; the pool's threads (one a core) take the parts in turn. A power of two
    # parts divides evenly among 2, 4 or 8 threads.
    parts = 1 << (min(_MAX_PARTS, max(1, n // _PARALLEL_ABOVE)).bit_length() - 1)

    def run(a: int, b: int, sums: Any, weights: Any, sq: Any) -> int:
        """One pass over samples [a, b), moment changes added to `sums`, `weights`, `sq`."""
        return int(
            _hamerly_step(
                X[a:b],
                bounds.w[a:b],
                centers,
                bounds.drift,
                bounds.max_drift,
                bounds.labels[a:b],
                bounds.upper[a:b],
                bounds.lower[a:b],
                sums,
                weights,
                sq,
                scale,
            )
        )

    if parts == 1:
        return run(0, n, bounds.sums, bounds.weights, bounds.sq)
    edges: list[int] = np.linspace(0, n, parts + 1).astype(int).tolist()
    deltas = [
        (np.zeros_like(bounds.sums), np.zeros_like(bounds.weights), np.zeros_like(bounds.sq))
        for _ in range(parts)
    ]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="kmdist-lloyd")

    def part(i: int) -> int:
        return run(edges[i], edges[i + 1], *deltas[i])

    searched = sum(_pool.map(part, range(parts)))
    for sums, weights, sq in deltas:
        bounds.sums += sums
        bounds.weights += weights
        bounds.sq += sq
    return searched


@numba.njit(cache=True, nogil=True)
def _merge_two(
    a: npt.NDArray[np.uint32],
    ca: npt.NDArray[np.int64],
    b: npt.NDArray[np.uint32],
    cb: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
    out = np.empty(a.size + b.size, dtype=np.uint32)
    counts = np.empty(a.size + b.size, dtype=np.int64)
    i = j = n = 0
    while i < a.size and j < b.size:
        if a[i] < b[j]:
            out[n] = a[i]
            counts[n] = ca[i]
            i += 1
        elif b[j] < a[i]:
            out[n] = b[j]
            counts[n] = cb[j]
            j += 1
        else:
            out[n] = a[i]
            counts[n] = ca[i] + cb[j]
            i += 1
            j += 1
        n += 1
    while i < a.size:
        out[n] = a[i]
        counts[n] = ca[i]
        i += 1
        n += 1
    while j < b.size:
        out[n] = b[j]
        counts[n] = cb[j]
        j += 1
        n += 1
    return out[:n], counts[:n]


@numba.njit(cache=True, nogil=True)
def _merge_dense(
    codes: npt.NDArray[np.uint32], counts: npt.NDArray[np.int64], table: npt.NDArray[np.uint32]
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
    for i in range(codes.size):
        table[codes[i]] += counts[i]
    out = np.empty(codes.size, dtype=np.uint32)
    out_counts = np.empty(codes.size, dtype=np.int64)
    n = 0
    # Reading the table in code order gives the codes sorted; read entries are zeroed,
    # so the table is clean for the next call. With millions of codes in a merge this
    # scan costs less than sorting the codes seen (as `count_colors` does).
    for c in range(codes.min(), codes.max() + 1):
        v = table[c]
        if v:
            out[n] = c
            out_counts[n] = v
            table[c] = 0
            n += 1
    return out[:n], out_counts[:n]


@numba.njit(cache=True, nogil=True)
def _add_pixels(
    block: npt.NDArray[np.uint8], table: npt.NDArray[np.uint32], touched: npt.NDArray[np.uint32]
) -> int:
    """Count an (h, w, 3) block's packed colours into `table`; return the distinct count.

    Each colour is listed in `touched` when first seen.
    """
    h, w, _ = block.shape
    n = 0
    for y in range(h):
        for x in range(w):
            c = (np.uint32(block[y, x, 0]) << 16) | (np.uint32(block[y, x, 1]) << 8)
            c |= np.uint32(block[y, x, 2])
            if table[c] == 0:
                touched[n] = c
                n += 1
            table[c] += 1
    return n


@numba.njit(cache=True, nogil=True)
def _take_counts(
    codes: npt.NDArray[np.uint32], table: npt.NDArray[np.uint32], out: npt.NDArray[np.int64]
) -> None:
    """Read the counts of `codes` into `out` and zero them, leaving the table clean."""
    for i in range(codes.size):
        out[i] = table[codes[i]]
        table[codes[i]] = 0


def _dense_table() -> npt.NDArray[np.uint32]:
    """Return the process's 2**24 counters (64 MiB), all zero between calls.

    Hold `_table_lock` while using it.
    """
    global _table
    if _table is None:
        _table = np.zeros(1 << 24, dtype=np.uint32)
    return _table


@contextmanager
def _borrowed_table() -> Iterator[npt.NDArray[np.uint32] | None]:
    """Lend the process's dense table, or None when another thread is using it.

    One table a process, not a thread (a worker may run many): a caller given None sorts
    or merges pairwise instead. A table an exception left mid-use may hold counts, so it
    is dropped.
    """
    global _table
    if not _table_lock.acquire(blocking=False):
        yield None
        return
    try:
        yield _dense_table()
    except BaseException:
        _table = None
        raise
    finally:
        _table_lock.release()


def count_colors(
    block: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]] | None:
    """Sorted distinct packed colours of an (h, w, 3) uint8 block and their counts.

    Counts into the process's dense table in one pass and sorts only the distinct
    colours: a 1024 x 1024 photo chunk (217,000 colours) in 4 ms, against 9-14 ms for
    ``np.unique`` of its packed codes. Returns None when another thread holds the table
    (or `block` is not 8-bit RGB), for the caller to sort instead.
    """
    if (
        block.ndim != 3
        or block.shape[2] != 3
        or block.dtype != np.uint8
        or block.shape[0] * block.shape[1] >= 2**32
    ):
        return None
    global _touched
    with _borrowed_table() as table:
        if table is None:
            return None
        size = min(block.shape[0] * block.shape[1], 1 << 24)
        if _touched.size < size:
            # Kept between calls, like the table: fresh memory is slow to fault in.
            _touched = np.empty(size, dtype=np.uint32)
        n = _add_pixels(block, table, _touched)
        # Sorting the colours seen costs less than scanning the table for them.
        codes = np.sort(_touched[:n])
        counts = np.empty(n, dtype=np.int64)
        _take_counts(codes, table, counts)
        return codes, counts


def merge_sorted_counts(
    parts: list[tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]],
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
    """Merge sorted unique (codes, counts) runs of 24-bit codes, adding equal codes' counts.

    Large merges add into a dense table of counters and read it back in code order
    (8 runs of 250,000 codes: 20 to 50 ms, against 125 ms for pairwise merges, whose
    branches the processor cannot predict). Small ones, or counts that could overflow
    the table's 32 bits, use pairwise linear merges in a balanced tree.
    """
    level = [
        (np.ascontiguousarray(c, np.uint32), np.ascontiguousarray(n, np.int64)) for c, n in parts
    ]
    total = sum(c.size for c, _ in level)
    if (
        len(level) > 1
        and total >= _DENSE_ABOVE
        and sum(int(n.sum()) for _, n in level) < 2**32
        and max(int(c[-1]) for c, _ in level if c.size) < 1 << 24
    ):
        with _borrowed_table() as table:
            if table is not None:  # else another thread has it: merge pairwise
                codes = np.concatenate([c for c, _ in level])
                counts = np.concatenate([n for _, n in level])
                return _merge_dense(codes, counts, table)
    while len(level) > 1:
        merged = [_merge_two(*level[i], *level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            merged.append(level[-1])
        level = merged
    return level[0]


@numba.njit(cache=True, nogil=True)
def _lut_labels(block: npt.NDArray[np.uint8], lut: npt.NDArray[Any], out: npt.NDArray[Any]) -> None:
    h, w, _ = block.shape
    for y in range(h):
        for x in range(w):
            code = (np.uint32(block[y, x, 0]) << 16) | (np.uint32(block[y, x, 1]) << 8)
            out[y, x] = lut[code | np.uint32(block[y, x, 2])]


def lut_labels(block: npt.NDArray[np.uint8], lut: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Labels of an (h, w, 3) uint8 block by table lookup of each packed colour.

    One pass with no intermediate arrays: packing with NumPy would first build a
    4-byte code per pixel (a 4096 x 4096 block: 64 MB, and as much again per shift).
    """
    out = np.empty(block.shape[:2], dtype=lut.dtype)
    _lut_labels(block, lut, out)
    return out


@numba.njit(cache=True, nogil=True)
def _color_planes(
    labels: npt.NDArray[np.integer[Any]], colors: npt.NDArray[Any], out: npt.NDArray[Any]
) -> int:
    h, w = labels.shape
    k, c = colors.shape
    for y in range(h):
        for x in range(w):
            if labels[y, x] >= k:
                return int(labels[y, x])
    # A plane at a time: each pass writes one sequential stream.
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                out[ch, y, x] = colors[labels[y, x], ch]
    return -1


def color_planes(
    labels: npt.NDArray[np.integer[Any]], colors: npt.NDArray[Any]
) -> npt.NDArray[Any]:
    """Return the (c, y, x) image of (y, x) unsigned `labels` coloured by `colors` (k, c).

    One pass straight into channel-first planes, as OME-Zarr stores them: NumPy's
    ``colors[labels]`` then a transposed copy took 119 + 15 ms for 4096 x 4096 labels.

    Raises
    ------
    ValueError
        Labels that are not unsigned integers, or a label with no colour (`k` or more).
    """
    if labels.dtype.kind != "u":
        raise ValueError(f"labels must be unsigned integers, got dtype {labels.dtype}")
    out = np.empty((colors.shape[1], *labels.shape), dtype=colors.dtype)
    bad = _color_planes(labels, colors, out)
    if bad >= 0:
        raise ValueError(f"label {bad} has no colour: the palette has {colors.shape[0]} colours")
    return out
