"""Batches of images: the loop behind ``kmdist segment`` and the Prefect flows.

A failure in one image is recorded in its result and never stops the others. Small
images run whole in memory, a batch of them per task on the workers (`_small`); larger
ones take the chunked path one at a time (`_image`), each image's chunks spread over the
workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Future

from kmdist._dask import active_client
from kmdist.io._errors import ImageReadError
from kmdist.io._listing import ImageRef
from kmdist.io._open import iter_images
from kmdist.palette._assign import scatter_everywhere
from kmdist.palette._palette import Palette
from kmdist.pipeline._image import segment_one
from kmdist.pipeline._options import ImageResult, OnExists, SegmentOptions
from kmdist.pipeline._palettes import shared_palette
from kmdist.pipeline._small import small_batches_on_cluster

__all__ = ["CountedRefs", "iter_segment", "segment_batch", "segment_stream"]


class CountedRefs:
    """Refs from a stream (`kmdist.iter_images`), counted as they are listed.

    For progress that stays honest when the total is not known until the listing ends:
    the engine reads ahead of its work, so `count` is at least the images finished.
    """

    def __init__(self, refs: Iterable[ImageRef]) -> None:
        self._refs = iter(refs)
        self._first: ImageRef | None = None  # found by `listing`, not yet taken
        self.count = 0
        self.done = False  # the listing has ended: `count` is the total

    @classmethod
    def listing(
        cls,
        inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        follow_symlinks: bool = False,
    ) -> CountedRefs:
        """Start listing `inputs` with `kmdist.iter_images`, its first image found.

        What the CLI and the flows do before anything is written: every input checked,
        and a listing that finds no image refused, while the rest is listed as it is
        segmented.

        Raises
        ------
        ImageReadError
            An input does not exist, a pattern matches nothing, or no image was found.
        """
        found = cls(iter_images(inputs, follow_symlinks=follow_symlinks))
        first = next(found, None)
        if first is None:
            names = [inputs] if isinstance(inputs, str | os.PathLike) else inputs
            raise ImageReadError(" ".join(map(str, names)), "no images found")
        found._first = first
        return found

    def __iter__(self) -> CountedRefs:
        return self

    def __next__(self) -> ImageRef:
        if self._first is not None:  # counted when `listing` found it
            ref, self._first = self._first, None
            return ref
        try:
            ref = next(self._refs)
        except StopIteration:
            self.done = True
            raise
        self.count += 1
        return ref

    def so_far(self) -> str:
        """Give the count so far: ``N+`` while the listing goes on, ``N`` once it ended."""
        return str(self.count) if self.done else f"{self.count}+"


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

    for res in segment_stream(
        refs,
        store,
        opts,
        shared=shared,
        palette=palette,
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


def segment_stream(
    refs: Iterable[ImageRef],
    store: str | Path,
    opts: SegmentOptions,
    *,
    shared: bool = False,
    palette: Palette | None = None,
    on_exists: OnExists = "error",
    preview_dir: str | Path | None = None,
) -> Iterator[ImageResult]:
    """`iter_segment`, with a shared palette learned first when `shared` is asked for.

    A shared palette needs every image's histogram before the first image is labelled,
    so `refs` is then read twice, held as a list between the passes: the one case where
    the stream is materialised (acceptable: one palette is learned from all images).
    Otherwise `refs` is consumed as work is submitted (see `iter_segment`).
    """
    lut = None
    if shared and palette is None:
        todo = list(refs)
        try:
            palette, lut, todo, failed = shared_palette(todo, opts)
        except (ValueError, OSError) as exc:
            failed = [
                ImageResult(r.name, r.source, "failed", error=f"shared palette: {exc}")
                for r in todo
            ]
            todo = []
        yield from failed
        refs = todo
    yield from iter_segment(
        refs,
        store,
        opts,
        palette=palette,
        lut=lut,
        on_exists=on_exists,
        preview_dir=preview_dir,
    )
