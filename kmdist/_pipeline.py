"""Whole-image steps and the batch loop behind ``kmdist segment``.

Each step is a function of paths and small values, so that the Prefect flows can run the
same steps as tasks. A failure in one image is recorded in its result and never stops
the others.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy.typing as npt
from dask.delayed import delayed

from ._assign import segment
from ._cluster import active_client
from ._fs import join
from ._histogram import ColorHistogram, histogram_graph, merge_histograms
from ._inputs import ImageRef
from ._learn import learn_palette
from ._palette import Palette
from ._preview import write_preview
from ._small import small_batches_on_cluster
from ._steps import (
    ImageResult,
    OnExists,
    SegmentOptions,
    attempt,
    exact_palette_and_lut,
    named,
)
from ._store import blocks_for, open_segmentation, write_blocks, write_segmentation

# Largest image (decoded bytes) held in the workers' memory between the two passes.
_HOLD_BYTES = 512 << 20

__all__ = [
    "ImageResult",
    "OnExists",
    "SegmentOptions",
    "label_and_write",
    "segment_batch",
    "segment_one",
    "shared_palette",
]


def segment_one(
    ref: ImageRef,
    store: str | Path,
    opts: SegmentOptions,
    *,
    palette: Palette | None = None,
    lut: npt.NDArray[Any] | None = None,
    on_exists: OnExists = "error",
    preview_dir: str | Path | None = None,
) -> ImageResult:
    """Learn a palette for one image (unless given), label it and write it to `store`.

    Returns a result instead of raising for problems with this image (unreadable input,
    existing output, ...), so that a batch carries on.
    """

    def step() -> ImageResult:
        pal, table = palette, lut
        image = ref.open(chunks=opts.chunks, max_pixels=opts.max_pixels)
        if pal is None:
            if opts.uses_histogram(image):
                image = _held(image)
                pal, table = _exact_on_cluster(image, opts)
            else:
                pal = learn_palette(
                    image, opts.n_colors, method=opts.method, **opts.palette_kwargs()
                )
        label_and_write(ref, image, store, pal, opts, lut=table, overwrite=on_exists == "overwrite")
        preview = None
        if preview_dir is not None:
            # The stored labels, not `labels`: that would label the image a second time.
            stored = open_segmentation(store, ref.name).labels
            path = join(os.fspath(preview_dir), f"{ref.name}.png")
            preview = str(write_preview(path, image, stored, pal))
        shape = tuple(int(s) for s in image.shape)
        return ImageResult(ref.name, ref.source, "done", shape, pal, preview=preview)

    return attempt(ref, store, on_exists, step)


def label_and_write(
    ref: ImageRef,
    image: da.Array,
    store: str | Path,
    palette: Palette,
    opts: SegmentOptions,
    *,
    lut: npt.NDArray[Any] | None = None,
    overwrite: bool = False,
) -> None:
    """Label `image` (opened from `ref`) with `palette` and write it to `store`.

    Labels are computed in the output's blocks (`write_blocks`): a large output's source
    is opened again in shard-sized blocks, read straight from it with no gathering
    between workers and a fixed amount of memory per write task.
    """
    chunk, block = write_blocks(image, palette)
    source = image if block == chunk else ref.open(chunks=block, max_pixels=opts.max_pixels)
    labels = segment(source, palette, lut=lut)
    write_segmentation(
        store,
        ref.name,
        labels,
        palette,
        source=ref.source,
        overwrite=overwrite,
        chunks=chunk,
        run=opts.run,
    )


def _held(image: da.Array) -> da.Array:
    """Return `image` held in the cluster's memory when small, so it is read once, not twice.

    The histogram pass and the labelling pass then share the decoded chunks (a 64 MP
    image: 0.3 s to read it once; bench/end_to_end.py). Images above `_HOLD_BYTES`, or a
    quarter of the workers' memory, and images labelled from shard-sized blocks (which
    are read again in those blocks) are read twice instead, in bounded memory.
    """
    client = active_client()
    if client is None or image.nbytes > _HOLD_BYTES:
        return image
    chunk, block = blocks_for(image, image.dtype.itemsize * int(image.shape[2]))
    if block != chunk:
        return image
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info()["workers"].values()]
    if sum(limits) and 4 * image.nbytes > sum(limits):
        return image
    return client.persist(image)


def _exact_on_cluster(image: da.Array, opts: SegmentOptions) -> tuple[Palette, Any]:
    """Return `image`'s exact palette and its lookup table, fitted next to the histogram.

    On a distributed cluster a worker merges the histogram, fits the palette and builds
    the table; only the palette comes back, and the table (a Future) stays on the
    cluster for the labelling tasks. A 64 MP image's histogram (2 million colours,
    24 MB) and table (16 MB) then never cross to this process and back: 1.55 s instead
    of 1.75 s for histogram and palette (bench/end_to_end.py's image). A warning raised
    by the fit (`FewerColorsWarning`) stays in the worker's log; `Palette.shortfall`
    carries the same news back.
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

    Images that cannot be read are left out and reported as failed.

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
    if len(hists) == len(images):
        palette, lut = exact_palette_and_lut(merge_histograms(*hists), opts)
        return palette, lut, good, failed
    pal = learn_palette(images, opts.n_colors, method=opts.method, **opts.palette_kwargs())
    return pal, None, good, failed


def segment_batch(
    refs: Sequence[ImageRef],
    store: str | Path,
    opts: SegmentOptions,
    *,
    shared: bool = False,
    on_exists: OnExists = "error",
    preview_dir: str | Path | None = None,
    report: Callable[[int, int, ImageResult], None] | None = None,
) -> list[ImageResult]:
    """Segment every image of `refs` into `store`; failures are recorded, not raised.

    With `shared`, one palette is learned from all images (those that can be opened)
    and every image is labelled with it, so a colour has the same label everywhere.
    `report(i, n, result)` is called after each image.
    """
    results: list[ImageResult] = []
    palette: Palette | None = None
    lut = None
    todo = list(refs)
    if shared:
        try:
            palette, lut, todo, failed = shared_palette(todo, opts)
        except (ValueError, OSError) as exc:
            failed = [
                ImageResult(r.name, r.source, "failed", error=f"shared palette: {exc}")
                for r in todo
            ]
            todo = []
        for res in failed:
            results.append(res)
            if report is not None:
                report(len(results), len(refs), res)
    client = active_client()
    if client is not None and preview_dir is None and len(todo) > 1:
        # Many images on a cluster: small ones whole in memory, a batch per task, in
        # parallel on the workers; larger ones (None) stay on the chunked path below.
        large: list[ImageRef] = []
        for ref, small in small_batches_on_cluster(
            client, todo, store, opts, palette=palette, lut=lut, on_exists=on_exists
        ):
            if small is None:
                large.append(ref)
                continue
            results.append(small)
            if report is not None:
                report(len(results), len(refs), small)
        todo = large
    for ref in todo:
        res = segment_one(
            ref,
            store,
            opts,
            palette=palette,
            lut=lut,
            on_exists=on_exists,
            preview_dir=preview_dir,
        )
        results.append(res)
        if report is not None:
            report(len(results), len(refs), res)
    # Batches finish out of order; results follow the input order.
    position = {r.name: i for i, r in enumerate(refs)}
    results.sort(key=lambda r: position[r.name])
    return results
