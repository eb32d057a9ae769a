"""One image on the chunked path: palette, labels written block by block, preview."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask.array as da

from kmdist._dask import active_client
from kmdist._fs import join
from kmdist.io import ImageRef
from kmdist.palette import Palette, segment
from kmdist.pipeline._options import OnExists, SegmentOptions
from kmdist.pipeline._palettes import palette_for
from kmdist.pipeline._result import ImageResult, attempt
from kmdist.store import (
    OutputError,
    blocks_for,
    open_segmentation,
    write_blocks,
    write_preview,
    write_segmentation,
)

__all__ = ["hold_if_small", "label_and_write", "segment_one"]

# Largest image (decoded bytes) held in the workers' memory between the two passes.
_HOLD_BYTES = 512 << 20


def segment_one(
    ref: ImageRef,
    store: str | Path,
    opts: SegmentOptions,
    *,
    palette: Palette | None = None,
    lut: Any = None,
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
                image = hold_if_small(image)
            pal, table = palette_for(image, opts)
        label_and_write(ref, image, store, pal, opts, lut=table, overwrite=on_exists == "overwrite")
        preview = None
        if preview_dir is not None:
            # The stored labels, not `labels`: that would label the image a second time.
            stored = open_segmentation(store, ref.name).labels
            path = join(os.fspath(preview_dir), f"{ref.name}.png")
            try:
                preview = str(write_preview(path, image, stored, pal))
            except OSError as exc:
                # The segmentation is complete; the image fails for its preview alone.
                raise OutputError(f"{path}: cannot write the preview: {exc}") from exc
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
    lut: Any = None,
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


def hold_if_small(image: da.Array) -> da.Array:
    """Return `image` held in the cluster's memory when small, so it is read once, not twice.

    The histogram pass and the labelling pass then share the decoded chunks. Images
    above `_HOLD_BYTES`, or a quarter of the workers' memory, and images labelled from
    shard-sized blocks (which are read again in those blocks) are read twice instead,
    in bounded memory.
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
