"""The palette of an image or of a batch: exact for 8-bit RGB, mini-batch otherwise.

`palette_for` is the one place that makes the choice, for the chunked path (a Dask
array: the histogram and the fit run on the cluster), the in-memory path (a NumPy
array) and a shared palette (merged histograms, or pixels pooled from every image).
"""

from __future__ import annotations

import itertools
import operator
from collections import Counter
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt
from dask.delayed import delayed

from kmdist._dask import active_client
from kmdist.io import ImageRef
from kmdist.palette import (
    ColorHistogram,
    Palette,
    assign_pixels,
    build_lut,
    chunk_histogram,
    codes_labels,
    histogram_graph,
    learn_palette,
    merge_histograms,
    palette_from_histogram,
)
from kmdist.pipeline._options import SegmentOptions
from kmdist.pipeline._result import ImageResult, named
from kmdist.store import OutputError

__all__ = [
    "exact_palette_and_lut",
    "load_palette",
    "palette_and_labels",
    "palette_for",
    "shared_or_failed",
    "shared_palette",
]


def palette_for(image: da.Array | npt.NDArray[Any], opts: SegmentOptions) -> tuple[Palette, Any]:
    """Learn `image`'s palette as `opts` asks; return it with its lookup table or None.

    8-bit RGB (unless mini-batch is asked for) gets the exact palette of its colour
    histogram and a lookup table of the colours present: for a Dask array both are
    fitted on the cluster next to the merged histogram and the table stays there (a
    Future); for a NumPy array, in this process. Other images get a mini-batch palette
    and no table.
    """
    if not opts.uses_histogram(image):
        pal = learn_palette(image, opts.n_colors, method=opts.method, **opts.palette_kwargs())
        return pal, None
    if isinstance(image, np.ndarray):
        return exact_palette_and_lut(chunk_histogram(image), opts)
    return _exact_on_cluster(image, opts)


def palette_and_labels(
    pixels: npt.NDArray[Any], opts: SegmentOptions
) -> tuple[Palette, npt.NDArray[Any]]:
    """Learn an in-memory image's palette as `palette_for` does and label its pixels.

    8-bit RGB is labelled through its histogram's distinct colours (`codes_labels`): no
    lookup table is built for one small image.
    """
    if not opts.uses_histogram(pixels):
        palette, _ = palette_for(pixels, opts)
        return palette, assign_pixels(pixels, palette)
    hist = chunk_histogram(pixels)
    palette = _exact_palette(hist, opts)
    return palette, codes_labels(pixels, palette, hist.codes)


def exact_palette_and_lut(
    hist: ColorHistogram, opts: SegmentOptions
) -> tuple[Palette, npt.NDArray[Any]]:
    """Return the exact palette of histogram `hist` and the lookup table of its colours."""
    palette = _exact_palette(hist, opts)
    # Only the colours present need entries: the image's pixels are exactly those.
    return palette, build_lut(palette, hist.codes)


def _exact_palette(hist: ColorHistogram, opts: SegmentOptions) -> Palette:
    return palette_from_histogram(hist, opts.n_colors, **opts.palette_kwargs())


def _exact_on_cluster(image: da.Array, opts: SegmentOptions) -> tuple[Palette, Any]:
    """Return `image`'s exact palette and its lookup table, fitted next to the histogram.

    On a distributed cluster a worker merges the histogram, fits the palette and builds
    the table; only the palette comes back, and the table (a Future) stays on the
    cluster for the labelling tasks, so a large image's histogram and table never cross
    to this process and back (docs/benchmarks.md). A warning raised by the fit
    (`FewerColorsWarning`) stays in the worker's log; `Palette.shortfall` carries the
    same news back.
    """
    client = active_client()
    fit = delayed(exact_palette_and_lut, pure=True)(histogram_graph(image), opts)
    if client is None:
        (done,) = _compute(fit)
        return done[0], done[1]
    both = client.compute(fit)
    palette = client.submit(operator.getitem, both, 0)
    table = client.submit(operator.getitem, both, 1)
    result = palette.result()
    if not isinstance(result, Palette):
        raise TypeError(f"the palette task returned {type(result).__name__}, not a Palette")
    return result, table


def _compute(*graphs: Any) -> tuple[Any, ...]:
    from dask.base import compute

    return tuple(compute(*graphs))


def shared_palette(
    refs: Sequence[ImageRef], opts: SegmentOptions
) -> tuple[Palette | None, Any, list[ImageRef], list[ImageResult]]:
    """One palette for all `refs`: merged histograms (8-bit RGB) or pooled pixels.

    Images that cannot be read are left out and reported as failed, as are images of
    another kind than most (channels and dtype: a greyscale PNG among RGB photos), which
    one palette cannot label; the others share it.

    Returns
    -------
    palette : Palette or None
        None when no image could be read.
    lut : ndarray or None
        Lookup table for every image (8-bit RGB).
    good : list of ImageRef
        Images the palette was learned from.
    failed : list of ImageResult
        Images left out, with the reason.
    """
    good: list[ImageRef] = []
    failed: list[ImageResult] = []
    images: list[da.Array] = []
    hists: list[ColorHistogram] = []
    for ref in refs:
        try:
            image = ref.open(chunks=opts.chunks, max_pixels=opts.max_pixels)
            if opts.uses_histogram(image):
                # One image at a time, so that a corrupt file fails alone.
                hists.extend(_compute(histogram_graph(image)))
            images.append(image)
            good.append(ref)
        except (ValueError, OSError) as exc:
            failed.append(ImageResult(ref.name, ref.source, "failed", error=named(ref, exc)))
    if not good:
        return None, None, good, failed
    good, images, hists, odd = _one_kind(good, images, hists, opts)
    failed += odd
    if len(hists) == len(images):
        palette, lut = exact_palette_and_lut(merge_histograms(*hists), opts)
        return palette, lut, good, failed
    pal = learn_palette(images, opts.n_colors, method=opts.method, **opts.palette_kwargs())
    return pal, None, good, failed


def shared_or_failed(
    refs: Sequence[ImageRef], opts: SegmentOptions
) -> tuple[Palette | None, Any, list[ImageRef], list[ImageResult]]:
    """`shared_palette`, with a failure of the step itself failing every image, named."""
    try:
        return shared_palette(refs, opts)
    except (ValueError, OSError) as exc:
        failed = [
            ImageResult(r.name, r.source, "failed", error=f"shared palette: {exc}") for r in refs
        ]
        return None, None, [], failed


def _one_kind(
    refs: list[ImageRef],
    images: list[da.Array],
    hists: list[ColorHistogram],
    opts: SegmentOptions,
) -> tuple[list[ImageRef], list[da.Array], list[ColorHistogram], list[ImageResult]]:
    """Keep the images of the most common kind (channels, dtype); fail the others.

    Ties go to the kind seen first. `hists` holds the histograms of the 8-bit RGB images
    among `images`, in order.
    """
    kinds = [(int(im.shape[2]), str(im.dtype)) for im in images]
    counts = Counter(kinds)
    if len(counts) == 1:
        return refs, images, hists, []
    ((main, _),) = counts.most_common(1)  # equal counts: the kind seen first
    keep_refs, keep_images, keep_hists, odd = [], [], [], []
    hist_of = iter(hists)
    for ref, image, kind in zip(refs, images, kinds, strict=True):
        hist = next(hist_of) if opts.uses_histogram(image) else None
        if kind == main:
            keep_refs.append(ref)
            keep_images.append(image)
            if hist is not None:
                keep_hists.append(hist)
            continue
        error = (
            f"{ref.source}: shared palette: the image has {kind[0]} channel(s) of {kind[1]}, "
            f"the palette is learned from the {counts[main]} image(s) with {main[0]} of {main[1]}"
        )
        odd.append(ImageResult(ref.name, ref.source, "failed", error=error))
    return keep_refs, keep_images, keep_hists, odd


def load_palette(spec: str) -> Palette:
    """Read a saved palette: a JSON file (`Palette.save`) or ``STORE:NAME`` of a store.

    ``STORE`` alone is accepted when the store holds exactly one image. The palette
    keeps its colours and their order, so the same label means the same colour in
    every run that applies it.

    Raises
    ------
    ValueError
        (`PaletteError` or `OutputError`) naming `spec` when it cannot be read.
    """
    from kmdist.store import iter_segmentations, open_segmentation

    if spec.lower().endswith(".json"):
        return Palette.load(spec)
    store, _, name = spec.rpartition(":")
    if not store or "/" in name or not name:
        # No image named: the store's only image, if it has one.
        store, name = spec, ""
    if not name:
        names = [info.name for info in itertools.islice(iter_segmentations(store), 2)]
        if len(names) != 1:
            found = "no images" if not names else "more than one image"
            raise OutputError(f"{store}: holds {found}; name one as {store}:NAME")
        name = names[0]
    return open_segmentation(store, name).palette
