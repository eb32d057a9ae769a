"""Compiled inner loops (numba) where NumPy would need several passes per step.

Each kernel fuses what would be a chain of whole-array NumPy operations into one pass
over the samples. They are compiled on first use and cached on disk (``cache=True``), so
a process pays the compilation once per installation, not per call.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["hamerly_step"]


@numba.njit(cache=True, nogil=True)
def _hamerly_step(
    X: npt.NDArray[np.floating[Any]],
    wx: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    wxx: npt.NDArray[np.float64],
    centers: npt.NDArray[np.float64],
    shift: npt.NDArray[np.float64],
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
    max_shift = shift.max()
    searched = 0
    for i in range(n):
        old = labels[i]
        u = upper[i] + shift[old]
        lo = lower[i] - max_shift
        # Same margin as the NumPy path: covers the distances' round-off.
        if u < lo - (1e-7 * (u + lo + scale) + 1e-12):
            upper[i] = u
            lower[i] = lo
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
        upper[i] = math.sqrt(best)
        lower[i] = math.sqrt(second)
        if new != old:
            labels[i] = new
            for f in range(d):
                sums[old, f] -= wx[i, f]
                sums[new, f] += wx[i, f]
            weights[old] -= w[i]
            weights[new] += w[i]
            sq[old] -= wxx[i]
            sq[new] += wxx[i]
    return searched


def hamerly_step(
    bounds: Any, X: npt.NDArray[np.floating[Any]], centers: npt.NDArray[np.float64]
) -> int:
    """Move Hamerly bounds to new centres in one compiled pass; return samples searched.

    Updates `bounds` (a ``kmdist._rows._Bounds``) in place: each sample's bounds grow by
    the centre shifts; a sample whose bounds overlap is searched against every centre,
    and the cluster moments follow samples that change cluster.
    """
    shift = np.sqrt(((centers - bounds.centers) ** 2).sum(axis=1))
    scale = float(np.sqrt((centers**2).sum(axis=1)).max())
    return int(
        _hamerly_step(
            X,
            bounds.wx,
            bounds.w,
            bounds.wxx,
            centers,
            shift,
            bounds.labels,
            bounds.upper,
            bounds.lower,
            bounds.sums,
            bounds.weights,
            bounds.sq,
            scale,
        )
    )
