"""Small images, segmented whole in memory, batches of them per task on the workers.

An archive of thousands of thumbnails spends its time on per-image overhead, not on
pixels: a Dask graph per step costs more than the work it schedules. An image of at most
`SMALL_PIXELS` pixels is therefore read, clustered, labelled and written by one function
call with NumPy (the same steps and results as the chunked path), and a batch of such
images is one task on a worker, so that the workers run batches side by side.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt

from kmdist.io import ImageRef
from kmdist.palette import Palette, assign_pixels, scatter_everywhere
from kmdist.pipeline._options import OnExists, SegmentOptions
from kmdist.pipeline._palettes import palette_and_labels
from kmdist.pipeline._result import ImageResult, attempt, named
from kmdist.store import write_segmentation

__all__ = ["SMALL_PIXELS", "segment_small", "segment_small_batch", "small_batches_on_cluster"]

SMALL_PIXELS = 1 << 22
"""Largest image (y * x pixels) segmented whole in memory: 4 megapixels."""

# Most images per task: enough to amortise a task's scheduling, few enough to spread
# the work over the workers and to show progress.
_BATCH = 16


def segment_small(
    ref: ImageRef,
    store: str | Path,
    opts: SegmentOptions,
    *,
    palette: Palette | None = None,
    lut: npt.NDArray[Any] | None = None,
    on_exists: OnExists = "error",
) -> ImageResult | None:
    """Segment one image in memory, or return None for the chunked path.

    None when the image is larger than `SMALL_PIXELS`, or needs a mini-batch palette
    (not 8-bit RGB, or ``method="minibatch"``, with no palette given).

    Problems with the image become a failed result, as in `segment_one`.
    """

    def step() -> ImageResult | None:
        pal, table = palette, lut
        # Decoded straight into memory: a Dask graph costs more than a thumbnail's decoding.
        image = ref.open_small(SMALL_PIXELS, chunks=opts.chunks, max_pixels=opts.max_pixels)
        if image.shape[0] * image.shape[1] > SMALL_PIXELS:
            return None
        if pal is None and not opts.uses_histogram(image):
            # A mini-batch palette computes Dask graphs; a task must not submit its own to
            # the cluster, nor change the scheduler for the whole process (with threads,
            # the caller's computations share it): the chunked path learns it instead.
            return None
        # NumPy from here on; a lazily read source is read in this task, not on the cluster.
        pixels = np.asarray(
            image.compute(scheduler="sync") if isinstance(image, da.Array) else image
        )
        if pal is None:
            pal, labels = palette_and_labels(pixels, opts)
        else:
            labels = assign_pixels(pixels, pal, table)
        overwrite = on_exists == "overwrite"
        write_segmentation(
            store, ref.name, labels, pal, source=ref.source, overwrite=overwrite, run=opts.run
        )
        return ImageResult(ref.name, ref.source, "done", tuple(int(s) for s in pixels.shape), pal)

    return attempt(ref, store, on_exists, step)


def segment_small_batch(
    refs: Sequence[ImageRef],
    store: str | Path,
    opts: SegmentOptions,
    palette: Palette | None = None,
    lut: npt.NDArray[Any] | None = None,
    on_exists: OnExists = "error",
) -> list[ImageResult | None]:
    """`segment_small` for each image of `refs`, in order (one task's work)."""
    return [
        segment_small(r, store, opts, palette=palette, lut=lut, on_exists=on_exists) for r in refs
    ]


def small_batches_on_cluster(
    client: Any,
    refs: Iterable[ImageRef],
    store: str | Path,
    opts: SegmentOptions,
    *,
    palette: Palette | None = None,
    lut: Any = None,
    on_exists: OnExists = "error",
    batch: int | None = None,
    window: int | None = None,
) -> Iterator[tuple[ImageRef, ImageResult | None]]:
    """Run `segment_small_batch` over `refs` on the workers of `client`, batch by batch.

    `refs` is consumed as batches are submitted, with at most `window` batches in
    flight (by default four per worker), so a stream of a million images holds a few
    hundred at a time. Yields each image with its result as batches finish; None means
    the image is left to the caller's chunked path (larger than `SMALL_PIXELS`, or
    `opts.chunks` is set). `lut`, a shared palette's table, may be a Future of it
    already on every worker. `batch` images per task; by default up to 16, fewer for short
    streams, so that every worker gets work. A batch whose worker dies is retried by
    Dask; if it still fails, its images fail with the reason.
    """
    from distributed import Future, as_completed

    if opts.chunks is not None:
        # Chunks asked for explicitly: the chunked path honours them, in processing and
        # in the stored chunks.
        yield from ((r, None) for r in refs)
        return
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    window = window or 4 * workers
    stream = iter(refs)
    if batch is None:
        # A short stream is split so every worker gets batches: look ahead a window.
        head = list(itertools.islice(stream, window * _BATCH))
        full = len(head) == window * _BATCH
        batch = _BATCH if full else max(1, min(_BATCH, len(head) // (4 * workers)))
        stream = itertools.chain(head, stream)
    shared = lut if lut is None or isinstance(lut, Future) else scatter_everywhere(client, lut)
    running = as_completed()
    parts: dict[Any, list[ImageRef]] = {}

    def submit() -> bool:
        part = list(itertools.islice(stream, batch))
        if not part:
            return False
        future = client.submit(
            segment_small_batch,
            part,
            str(store),
            opts,
            palette,
            shared,
            on_exists,
            pure=False,
            retries=1,
        )
        parts[future] = part
        running.add(future)
        return True

    for _ in range(window):
        if not submit():
            break
    for future in running:
        part = parts.pop(future)
        try:
            results: list[ImageResult | None] = future.result()
        except Exception as exc:  # the task itself failed (a worker died twice)
            results = [ImageResult(r.name, r.source, "failed", error=named(r, exc)) for r in part]
        submit()
        yield from zip(part, results, strict=True)
