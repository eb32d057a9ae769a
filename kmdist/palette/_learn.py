"""learn_palette: k-means colours of one image or of many images together.

8-bit RGB images take the exact path: their colour histograms are merged and weighted
k-means runs on the distinct colours, which optimises the full-batch objective over every
pixel. Other images (16-bit, float, grey, multispectral) take distributed mini-batch
k-means with batches gathered from the blocks on the workers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import dask.array as da
import numpy as np
import numpy.typing as npt

from kmdist.kmeans import (
    F64,
    ConcatRows,
    DaskRows,
    LloydResult,
    MiniBatchState,
    NumpyRows,
    best_seeding,
    check_random_state,
    lloyd,
    lloyd_dense,
    run_minibatch,
    seed_centers,
)
from kmdist.palette._assign import is_rgb8
from kmdist.palette._color import from_clustering_space, to_clustering_space
from kmdist.palette._histogram import ColorHistogram, image_histogram
from kmdist.palette._limits import MAX_COLORS, check_n_colors
from kmdist.palette._palette import ColorSpace, Palette
from kmdist.palette._wu import wu_centers

__all__ = ["MAX_COLORS", "FewerColorsWarning", "learn_palette", "palette_from_histogram"]

MethodArg = Literal["auto", "exact", "minibatch"]
Init = Literal["auto", "wu", "k-means++", "random"] | npt.ArrayLike
_SEEDINGS = ("auto", "wu", "k-means++", "random")
# The exact palette's relative tolerance by default for histograms of at most
# `_WU_PIXELS` pixels: scikit-learn's KMeans default, the summed squared centre shift
# against the colours' mean variance (sklearn's `_tolerance`). Wu's seeding with two
# k-means++ restarts and this tolerance gave 256 x 256 crops a lower mean inertia than
# three k-means++ restarts run until no colour changes cluster (docs/benchmarks.md).
EXACT_TOL = 1e-4


class FewerColorsWarning(UserWarning):
    """The images have fewer distinct colours than asked for; the palette is smaller.

    Raised by `learn_palette`; `palette_from_histogram` and kmdist's pipeline leave the
    news to the result's `Palette.shortfall`.
    """


def _check_space(color_space: str, channels: int) -> ColorSpace:
    if color_space not in ("rgb", "lab"):
        raise ValueError(f"color_space must be 'rgb' or 'lab', got {color_space!r}")
    if color_space == "lab" and channels != 3:
        raise ValueError(f"color_space='lab' needs 3-channel images, got {channels} channels")
    return "lab" if color_space == "lab" else "rgb"


def _sorted_palette(
    centers: F64,
    counts: npt.NDArray[np.int64],
    inertia: float,
    *,
    space: ColorSpace,
    method: Literal["exact", "minibatch"],
    dtype: str,
    seed: int | None,
    n_clusters: int,
) -> Palette:
    # Label 0 is the most common colour; equal counts are ordered by colour, so the
    # order does not depend on how the clusters were seeded.
    colors = from_clustering_space(centers, space, dtype)
    order = np.lexsort((*colors.T[::-1], -counts))
    colors = colors[order]
    return Palette(
        colors=colors,
        counts=counts[order],
        inertia=inertia,
        color_space=space,
        method=method,
        dtype=dtype,
        seed=seed,
        n_clusters=n_clusters,
    )


def palette_from_histogram(
    hist: ColorHistogram,
    n_colors: int = 16,
    *,
    color_space: ColorSpace = "rgb",
    random_state: int | None = 0,
    init: Init = "auto",
    n_init: int = 3,
    max_iter: int = 300,
    tol: float | None = None,
    eps: float | None = None,
) -> Palette:
    """Exact palette of an 8-bit RGB colour histogram.

    Weighted k-means on the distinct colours, weighted by pixel count: `n_init`
    seedings (Wu's quantiser and k-means++ by default), then Lloyd until the `tol` /
    `eps` criteria, `max_iter`, or no colour changes cluster; the lowest inertia is kept.

    Parameters
    ----------
    hist : ColorHistogram
        Distinct colours and their counts (see `image_histogram`).
    n_colors : int, default=16
        Colours wanted; fewer if the histogram has fewer, which the palette's
        `Palette.shortfall` says (no warning: `learn_palette` warns).
    color_space : {'rgb', 'lab'}, default='rgb'
        Space to cluster in.
    random_state : int or None, default=0
        Seed.
    init : {'auto', 'wu', 'k-means++', 'random'} or array of shape (n_colors, 3), \
default='auto'
        Seeding, or initial colours (in the image's 0-255 RGB). 'wu': the first
        seeding is Wu's quantiser (deterministic), the other ``n_init - 1`` are
        k-means++; 'k-means++' and 'random': every seeding is. 'auto': 'wu' for
        histograms of at most 65,536 pixels (256 x 256), 'k-means++' above, where it
        found lower inertias (docs/benchmarks.md).
    n_init : int, default=3
        Seedings, the lowest inertia kept (one with given initial colours).
    max_iter : int, default=300
        Most Lloyd iterations.
    tol : float, optional
        Stop when the summed squared centre shift is at most `tol` times the colours'
        mean variance (scikit-learn's criterion); 0 runs until the labels are stable.
        By default scikit-learn's 1e-4 for histograms of at most 65,536 pixels, 0
        above (there the palette is a small part of an image's cost).
    eps : float, optional
        Stop when no centre moves by more than `eps` colour units (OpenCV's criterion).

    Returns
    -------
    Palette
    """
    k = check_n_colors(n_colors)
    space = _check_space(color_space, 3)
    if hist.n_colors == 0:
        raise ValueError("the histogram is empty: no pixels to learn colours from")
    if hist.n_colors < k:
        # No warning here: the palette says so itself (`Palette.shortfall`), which
        # `kmdist segment` and the flows report on the image's own line. A warning
        # raised on a worker would print a second, raw copy (issue 30).
        k = hist.n_colors
    rows = NumpyRows(
        to_clustering_space(hist.colors(), space, "uint8"), hist.counts.astype(np.float64)
    )
    rng = check_random_state(random_state)
    small = hist.n_pixels <= _WU_PIXELS
    if tol is None:
        tol = EXACT_TOL if small else 0.0
    # The variance is a pass over every colour: only worth it when a tolerance needs it.
    tol_abs = tol * rows.weighted_variance() if tol > 0 else 0.0
    if isinstance(init, str):
        if init not in _SEEDINGS:
            raise ValueError(f"init must be one of {_SEEDINGS} or an array, got {init!r}")
        wu = init == "wu" or (init == "auto" and small)
        # Seeding and restarts run on a coarse histogram (each bin at its pixels' mean
        # colour) where they are cheap: 4 bits a channel for k-means++ seedings, 5 (the
        # grid Wu's boxes are cut on) when Wu's seeding is among them, which made the
        # best restart's choice better for the same time (docs/benchmarks.md). The best
        # restart is refined on 6- and 7-bit histograms (when they are much smaller),
        # then on every distinct colour: each stage starts close to its optimum, so the
        # expensive stages need few iterations (china.jpg, k=16: 134 full-size
        # iterations straight from 4 bits, 86 via 6 bits; 2.06 million colours: 102 via
        # 6 bits, 36 via 7 bits). With many colours every restart goes on to 6 bits and
        # the best is chosen there: 4 bits blur the optimum the restarts compete for
        # (china.jpg, k=10: the restart best on 4 bits ends 1.1% above another on
        # every colour).
        carry = hist.n_colors > _CARRY_FROM
        coarse = _coarse_rows(rows, hist.codes, bits=5 if wu else 4)
        if coarse.n_samples >= k and coarse.n_samples < rows.n_samples:
            if wu:
                seeds = _wu_seeds(hist, rows, k, n_init, rng)
            else:
                seeding: Literal["k-means++", "random"] = (
                    "random" if init == "random" else "k-means++"
                )
                seeds = seed_centers(coarse, k, seeding, n_init, rng, coarse.n_samples)
            stage = _lloyd(coarse, seeds, max_iter=max_iter, tol=tol_abs, eps=eps)
            for bits in (6, 7):
                middle = _coarse_rows(rows, hist.codes, bits=bits)
                if middle.n_samples >= rows.n_samples // 2:
                    break  # a finer stage would be larger still
                starts = stage.centers if carry and bits == 6 else _best(stage)
                stage = _lloyd(middle, starts, max_iter=max_iter, tol=tol_abs, eps=eps)
                if 4 * middle.n_samples >= rows.n_samples:
                    # The next stage would hold most of the colours (a thumbnail's): go
                    # to every colour rather than count a stage to drop it.
                    break
            centers = _best(stage)
        elif wu:
            centers = _wu_seeds(hist, rows, k, n_init, rng, coarse=rows)
        else:
            seeding = "random" if init == "random" else "k-means++"
            centers = seed_centers(rows, k, seeding, n_init, rng, rows.n_samples)
    else:
        given = np.asarray(init, dtype=np.float64)
        if given.shape != (k, 3):
            raise ValueError(f"init has shape {given.shape}, expected ({k}, 3)")
        centers = to_clustering_space(given, space, "uint8")[None]
    result = _lloyd(rows, centers, max_iter=max_iter, tol=tol_abs, eps=eps)
    best = int(np.argmin(result.inertia))
    counts = np.rint(result.weights[best]).astype(np.int64)
    return _sorted_palette(
        result.centers[best],
        counts,
        float(result.inertia[best]),
        space=space,
        method="exact",
        dtype="uint8",
        seed=random_state,
        n_clusters=check_n_colors(n_colors),
    )


# Most pixels for which the default is Wu's seeding and tol 1e-4 (a 256 x 256 image):
# measured better on 256 x 256 crops; on the sample photos (flower.jpg: 273,280 pixels,
# 62,941 colours; china.jpg) it ended up to 2.8% above three k-means++ seedings at k=16.
_WU_PIXELS = 1 << 16
# Fewest distinct colours for which every restart is refined on 6 bits before the best
# is chosen. Below it (every image of at most 256 x 256 pixels) the choice is made on 4
# bits: on an archive of thumbnails the palette is a third of an image's cost, and
# carrying the restarts made a 256 x 256 photo's palette up to 2.5x slower
# (docs/benchmarks.md).
_CARRY_FROM = 1 << 16
# Most samples times clusters for which a Lloyd run is compiled whole without bounds
# (`lloyd_dense`): there every distance costs less than keeping bounds. Above it the
# bounds win even on a few thousand colours, as Lloyd needs tens of iterations there
# (a 256 x 256 crop's 7-bit stage, 12,088 colours x 8: 10.2 ms without, about 1 with).
_DENSE_WORK = 1 << 14
# Fewest samples for which `lloyd`'s threaded Hamerly steps beat one compiled run
# keeping the bounds in one thread (`lloyd_dense(bounds=True)`): where the step splits.
_THREADED_FROM = 1 << 18


def _lloyd(
    rows: NumpyRows, centers: F64, *, max_iter: int, tol: float, eps: float | None
) -> LloydResult:
    """`lloyd`, or a compiled `lloyd_dense` run (same steps and rules) where it is faster."""
    if rows.n_samples * centers.shape[1] <= _DENSE_WORK:
        return lloyd_dense(rows.X, rows.w, centers, max_iter=max_iter, tol=tol, eps=eps)
    if rows.n_samples < _THREADED_FROM:
        # Runs one after the other, each keeping its bounds between iterations.
        return lloyd_dense(
            rows.X, rows.w, centers, max_iter=max_iter, tol=tol, eps=eps, bounds=True
        )
    return lloyd(rows, centers, max_iter=max_iter, tol=tol, eps=eps)


def _wu_seeds(
    hist: ColorHistogram,
    rows: NumpyRows,
    k: int,
    n_init: int,
    rng: np.random.Generator,
    coarse: NumpyRows | None = None,
) -> F64:
    """Wu's centres, then ``n_init - 1`` k-means++ seedings; shape (n_init, k, 3).

    The k-means++ seedings are drawn on the 4-bit histogram (`coarse` if given), where
    they cost least; Wu's boxes are cut on 5 bits a channel, from every colour.
    """
    first = wu_centers(hist.codes, rows.X, rows.w, k)[0][None]
    if n_init <= 1:
        return first
    if coarse is None:
        coarse = _coarse_rows(rows, hist.codes, bits=4)
        if coarse.n_samples < k:
            coarse = rows
    more = seed_centers(coarse, k, "k-means++", n_init - 1, rng, coarse.n_samples)
    return np.concatenate([first, more])


def _best(stage: LloydResult) -> F64:
    """Return the lowest-inertia run's centres as one start, shape (1, k, n_features)."""
    return stage.centers[[int(np.argmin(stage.inertia))]]


def _coarse_rows(rows: NumpyRows, codes: npt.NDArray[np.uint32], bits: int) -> NumpyRows:
    """Merge distinct colours sharing their top `bits` bits a channel into weighted means."""
    shift = 8 - bits
    r, g, b = (codes >> 16) & 255, (codes >> 8) & 255, codes & 255
    key = ((r >> shift) << (2 * bits)) | ((g >> shift) << bits) | (b >> shift)
    if 4 * key.size >= 1 << (3 * bits):
        # Many colours: counting into every bin (2**21 at 7 bits) costs less than
        # sorting the keys (2.06 million colours: 30 against 65 ms).
        w = np.bincount(key, weights=rows.w, minlength=1 << (3 * bits))
        inverse = key
    else:
        _, inverse = np.unique(key, return_inverse=True)
        w = np.bincount(inverse, weights=rows.w)
    # Bins of weight 0 have no mean colour (and, counting, include empty bins).
    used = np.flatnonzero(w)
    X = np.stack(
        [np.bincount(inverse, weights=rows.w * rows.X[:, j])[used] for j in range(rows.n_features)],
        axis=1,
    )
    return NumpyRows(X / w[used, None], w[used])


def _minibatch_palette(
    images: Sequence[da.Array],
    k: int,
    *,
    space: ColorSpace,
    random_state: int | None,
    init: Init,
    n_init: int,
    batch_size: int,
    max_iter: int,
    tol: float,
) -> Palette:
    dtype = images[0].dtype.name
    feats = [
        da.map_blocks(
            to_clustering_space, im, space, dtype, dtype=np.float64, meta=np.empty((0, 0, 0))
        )
        for im in images
    ]
    parts = [DaskRows(f, name="image") for f in feats]
    rows = parts[0] if len(parts) == 1 else ConcatRows(parts)
    n = rows.n_samples
    if n < k:
        raise ValueError(f"{n} pixels cannot make {k} colours")
    rng = check_random_state(random_state)
    seeding: Literal["k-means++", "random"] | F64
    if isinstance(init, str):
        # Wu's boxes need the exact path's colour histogram; 'auto' is k-means++ here.
        seeding = "random" if init == "random" else "k-means++"
    else:
        seeding = to_clustering_space(np.asarray(init, dtype=np.float64), space, dtype)
    init_size = min(n, max(3 * batch_size, 3 * k))
    centers = best_seeding(rows, k, seeding, n_init, init_size, rng)
    batch = min(batch_size, n)
    state = MiniBatchState(
        counts=np.zeros(k), batch_size=batch, n_samples=n, reassignment_ratio=0.01
    )
    batch_rng, reassign_rng = rng.spawn(2)
    centers, _ = run_minibatch(
        rows,
        centers,
        state,
        max_steps=max(1, (max_iter * n) // batch),
        tol=tol * rows.weighted_variance() if tol > 0 else 0.0,
        max_no_improvement=10,
        batch_rng=batch_rng,
        reassign_rng=reassign_rng,
        pool_values=1 << 21,
    )
    stats = rows.stats(centers[None])[0]  # counts and inertia over every pixel
    counts = np.rint(stats[:, -2]).astype(np.int64)
    return _sorted_palette(
        centers,
        counts,
        float(stats[:, -1].sum()),
        space=space,
        method="minibatch",
        dtype=dtype,
        seed=random_state,
        n_clusters=k,
    )


def learn_palette(
    images: da.Array | npt.NDArray[Any] | Sequence[da.Array | npt.NDArray[Any]],
    n_colors: int = 16,
    *,
    method: MethodArg = "auto",
    color_space: ColorSpace = "rgb",
    random_state: int | None = 0,
    init: Init = "auto",
    n_init: int = 3,
    max_iter: int | None = None,
    tol: float | None = None,
    eps: float | None = None,
    batch_size: int = 4096,
) -> Palette:
    """Learn a palette of `n_colors` colours from one image or, shared, from several.

    Parameters
    ----------
    images : array of shape (y, x, c), or a sequence of them
        NumPy or Dask images (see `open_image`). Several images give one shared palette
        fitted to all their pixels together.
    n_colors : int, default=16
        Number of colours, 1 to 65,535.
    method : {'auto', 'exact', 'minibatch'}, default='auto'
        'exact': weighted k-means on the merged colour histogram (8-bit RGB only);
        'minibatch': distributed mini-batch k-means on pixels; 'auto': exact for 8-bit
        RGB, mini-batch otherwise.
    color_space : {'rgb', 'lab'}, default='rgb'
        Cluster in the image's own values or in CIELAB (3 channels only). The palette
        is reported in the image's space either way.
    random_state : int or None, default=0
        Seed; the same seed gives the same palette however the images are chunked.
    init : {'auto', 'wu', 'k-means++', 'random'} or array of shape (n_colors, c), \
default='auto'
        Seeding, or initial colours in the image's space. 'auto': Wu's quantiser and
        k-means++ for 'exact' (see `palette_from_histogram`), k-means++ for
        'minibatch'; 'wu' needs the exact path.
    n_init : int, default=3
        Seedings tried (restarts for 'exact', best on a validation sample for
        'minibatch').
    max_iter : int, optional
        Lloyd iterations ('exact', default 300) or epochs ('minibatch', default 100).
    tol : float, optional
        Relative centre-shift tolerance: for 'exact' scikit-learn's KMeans criterion
        (by default 1e-4 or 0 by the histogram's size, see `palette_from_histogram`),
        for 'minibatch' as in `MiniBatchKMeans` (default 0).
    eps : float, optional
        OpenCV's criterion: stop when no colour moves more ('exact' only).
    batch_size : int, default=4096
        Pixels per mini-batch.

    Returns
    -------
    Palette

    Warns
    -----
    FewerColorsWarning
        When the images have fewer distinct colours than `n_colors` (8-bit RGB): the
        palette has the colours there are, and `Palette.shortfall` says so too.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((4, 4, 3), np.uint8); img[:, 2:] = [200, 30, 30]
    >>> pal = learn_palette(img, 2)
    >>> pal.colors_as().tolist(), pal.counts.tolist()
    ([[0, 0, 0], [200, 30, 30]], [8, 8])
    """
    seq = [images] if hasattr(images, "ndim") else list(images)
    if not seq:
        raise ValueError("no images given")
    arrays = [im if isinstance(im, da.Array) else da.from_array(np.asarray(im)) for im in seq]
    for im in arrays:
        if im.ndim != 3:
            raise ValueError(f"images must have shape (y, x, channels), got {im.shape}")
        if im.shape[0] * im.shape[1] == 0:
            raise ValueError(f"an image of shape {im.shape} has no pixels")
    if len({(im.shape[2], im.dtype) for im in arrays}) > 1:
        raise ValueError("a shared palette needs images with the same channels and dtype")
    k = check_n_colors(n_colors)
    space = _check_space(color_space, arrays[0].shape[2])
    rgb8 = all(is_rgb8(im) for im in arrays)
    if method not in ("auto", "exact", "minibatch"):
        raise ValueError(f"method must be 'auto', 'exact' or 'minibatch', got {method!r}")
    if isinstance(init, str) and init not in _SEEDINGS:
        raise ValueError(f"init must be one of {_SEEDINGS} or an array, got {init!r}")
    if method == "exact" and not rgb8:
        raise ValueError(
            f"method='exact' needs 8-bit RGB images, got {arrays[0].dtype} with "
            f"{arrays[0].shape[2]} channels; use method='minibatch' or 'auto'"
        )
    if rgb8 and method != "minibatch":
        palette = palette_from_histogram(
            image_histogram(arrays),
            k,
            color_space=space,
            random_state=random_state,
            init=init,
            n_init=n_init,
            max_iter=max_iter or 300,
            tol=tol,
            eps=eps,
        )
        if palette.k < k:
            # For a caller of this function; kmdist's pipeline calls
            # `palette_from_histogram`, whose result carries the news alone.
            warnings.warn(
                f"only {palette.k} distinct colours found; the palette has {palette.k} "
                f"colours instead of {k}",
                FewerColorsWarning,
                stacklevel=2,
            )
        return palette
    if isinstance(init, str) and init == "wu":
        raise ValueError(
            "init='wu' cuts boxes of an 8-bit RGB colour histogram (method='exact'); "
            f"these images ({arrays[0].dtype}, {arrays[0].shape[2]} channels) take "
            "method='minibatch': use init='auto' or 'k-means++'"
        )
    if eps is not None:
        raise ValueError("eps (OpenCV's criterion) applies to method='exact' only; use tol")
    return _minibatch_palette(
        arrays,
        k,
        space=space,
        random_state=random_state,
        init=init,
        n_init=n_init,
        batch_size=batch_size,
        max_iter=max_iter or 100,
        tol=0.0 if tol is None else tol,
    )
