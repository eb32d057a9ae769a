"""Colour histograms of 8-bit RGB images: unique packed colours and their pixel counts.

A histogram does not depend on how an image is chunked, and merging histograms is exact,
so k-means on a merged histogram optimises the full-batch objective over every pixel of
every image it came from. Per-chunk histograms are computed on the workers and merged
there by a tree reduction; only the merged histogram reaches the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dask.array as da
import numpy as np
import numpy.typing as npt
from dask.base import compute
from dask.delayed import Delayed, delayed

from kmdist.kmeans import tree_reduce
from kmdist.palette._assign import is_rgb8, pack_rgb8, unpack_rgb8
from kmdist.palette._counting import count_colors, merge_sorted_counts

__all__ = [
    "ColorHistogram",
    "chunk_histogram",
    "histogram_graph",
    "image_histogram",
    "merge_histograms",
]


@dataclass(frozen=True)
class ColorHistogram:
    """Distinct 24-bit colours (sorted) and how many pixels have each.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.array([[[255, 0, 0], [255, 0, 0]], [[0, 0, 255], [255, 0, 0]]], np.uint8)
    >>> h = chunk_histogram(img)
    >>> h.colors().tolist(), h.counts.tolist()
    ([[0, 0, 255], [255, 0, 0]], [1, 3])
    """

    codes: npt.NDArray[np.uint32]
    counts: npt.NDArray[np.int64]

    @property
    def n_colors(self) -> int:
        """Number of distinct colours."""
        return int(self.codes.size)

    @property
    def n_pixels(self) -> int:
        """Number of pixels counted."""
        return int(self.counts.sum())

    def colors(self) -> npt.NDArray[np.uint8]:
        """Return the distinct colours as an (n_colors, 3) uint8 array."""
        return unpack_rgb8(self.codes)


def chunk_histogram(block: npt.NDArray[np.uint8]) -> ColorHistogram:
    """Histogram of one (..., 3) uint8 block."""
    counted = count_colors(block)
    if counted is not None:
        return ColorHistogram(*counted)
    # Another thread is using the process's table (or an unusual shape): sort instead.
    codes, counts = np.unique(pack_rgb8(block).ravel(), return_counts=True)
    return ColorHistogram(codes.astype(np.uint32), counts.astype(np.int64))


def merge_histograms(*parts: ColorHistogram) -> ColorHistogram:
    """Exact merge: counts of equal colours add up."""
    if len(parts) == 1:
        return parts[0]
    # Every part is sorted and unique: linear merges, no sort.
    codes, counts = merge_sorted_counts([(p.codes, p.counts) for p in parts])
    return ColorHistogram(codes, counts)


def histogram_graph(image: da.Array, split_every: int = 8) -> Delayed:
    """Build the delayed histogram of a Dask 8-bit RGB image: a task per chunk, tree merge.

    Compute several at once (``dask.compute(*graphs)``) to read images in parallel.
    """
    if not is_rgb8(image):
        raise ValueError(f"colour histograms need 8-bit RGB, got {image.dtype} {image.shape}")
    if image.numblocks[2] != 1:
        image = image.rechunk({2: -1})
    parts = [delayed(chunk_histogram, pure=True)(b) for b in image.to_delayed().ravel()]
    result: Delayed = tree_reduce(parts, merge_histograms, split_every)
    return result


def image_histogram(images: da.Array | Sequence[da.Array]) -> ColorHistogram:
    """Histogram of one image, or the merged histogram of several, computed on the cluster."""
    seq = [images] if isinstance(images, da.Array) else list(images)
    if not seq:
        raise ValueError("no images given")
    (merged,) = compute(tree_reduce([histogram_graph(im) for im in seq], merge_histograms))
    assert isinstance(merged, ColorHistogram)
    return merged
