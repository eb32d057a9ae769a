"""Batches of images: the loop behind ``kmdist segment`` and the Prefect flows.

A failure in one image is recorded in its result and never stops the others. Small
images run whole in memory, a batch of them per task on the workers (`_small`); larger
ones take the chunked path one at a time (`_image`), each image's chunks spread over the
workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from kmdist._dask import active_client
from kmdist.io._listing import ImageRef
from kmdist.palette._palette import Palette
from kmdist.pipeline._image import label_and_write, segment_one
from kmdist.pipeline._options import ImageResult, OnExists, SegmentOptions
from kmdist.pipeline._palettes import shared_palette
from kmdist.pipeline._small import small_batches_on_cluster

__all__ = [
    "ImageResult",
    "OnExists",
    "SegmentOptions",
    "label_and_write",
    "segment_batch",
    "segment_one",
    "shared_palette",
]


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
