"""Batches of images: the loop behind ``kmdist segment`` and the Prefect flows.

A failure in one image is recorded in its result and never stops the others. Small
images run whole in memory, a batch of them per task on the workers (`_small`); larger
ones take the chunked path one at a time (`_image`), each image's chunks spread over the
workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Future

from kmdist._dask import active_client
from kmdist.io import ImageRef
from kmdist.palette import Palette, scatter_everywhere
from kmdist.pipeline._image import segment_one
from kmdist.pipeline._options import OnExists, SegmentOptions
from kmdist.pipeline._palettes import shared_or_failed
from kmdist.pipeline._result import ImageResult
from kmdist.pipeline._small import small_batches_on_cluster

__all__ = ["iter_segment", "segment_batch"]


def iter_segment(
    refs: Iterable[ImageRef],
    store: str | Path,
    opts: SegmentOptions,
    *,
    palette: Palette | None = None,
    lut: Any = None,
    on_exists: OnExists = "error",
    preview_dir: str | Path | None = None,
) -> Iterator[ImageResult]:
    """Segment the images of `refs` into `store`, yielding each result as it finishes.

    The engine of ``kmdist segment`` and of the flows. `refs` is consumed as work is
    submitted, with a bounded amount in flight, and every image is written as soon as
    its palette is ready, so neither memory nor the time to the first complete image
    grows with the number of images. On a cluster, small images run a batch per task
    on the workers; larger ones take the chunked path, one at a time, each one's chunks
    spread over the workers, while the small batches go on. With `palette` (and its
    lookup table `lut`), every image is labelled with it instead of its own. Failures
    are results, never exceptions: one bad image never stops the others.
    """
    client = active_client()
    table = lut
    if client is not None and isinstance(lut, np.ndarray):
        # A shared palette's table goes to every worker once for the stream (in the
        # flows, once a batch task), not once per image: 16 MiB for 8-bit RGB.
        table = scatter_everywhere(client, lut)

    def chunked(ref: ImageRef) -> ImageResult:
        nonlocal table
        if isinstance(table, Future) and table.status != "finished":
            # Scattered data has no lineage: if every worker holding it died, send it
            # again rather than fail every image that follows.
            table = scatter_everywhere(client, lut)
        return segment_one(
            ref,
            store,
            opts,
            palette=palette,
            lut=table,
            on_exists=on_exists,
            preview_dir=preview_dir,
        )

    if client is None or preview_dir is not None:
        yield from map(chunked, refs)
        return
    for ref, small in small_batches_on_cluster(
        client, refs, store, opts, palette=palette, lut=table, on_exists=on_exists
    ):
        # None: larger than SMALL_PIXELS, the chunked path while the batches run on.
        yield small if small is not None else chunked(ref)


def segment_batch(
    refs: Sequence[ImageRef],
    store: str | Path,
    opts: SegmentOptions,
    *,
    shared: bool = False,
    palette: Palette | None = None,
    on_exists: OnExists = "error",
    preview_dir: str | Path | None = None,
    report: Callable[[int, int, ImageResult], None] | None = None,
) -> list[ImageResult]:
    """Segment every image of `refs` into `store`; failures are recorded, not raised.

    With `shared`, one palette is learned from all images (those that can be opened)
    and every image is labelled with it, so a colour has the same label everywhere;
    with `palette`, that palette is used for every image. `report(i, n, result)` is
    called after each image. Results come back in the order of `refs`; see
    `iter_segment` for a stream that keeps none of them.
    """
    results: list[ImageResult] = []
    lut = None
    todo: Iterable[ImageRef] = refs
    if shared and palette is None:
        palette, lut, todo, failed = shared_or_failed(refs, opts)
        results += failed
    for res in iter_segment(
        todo,
        store,
        opts,
        palette=palette,
        lut=lut,
        on_exists=on_exists,
        preview_dir=preview_dir,
    ):
        results.append(res)
        if report is not None:
            report(len(results), len(refs), res)
    # Batches finish out of order; results follow the input order.
    position = {r.name: i for i, r in enumerate(refs)}
    results.sort(key=lambda r: position[r.name])
    return results
