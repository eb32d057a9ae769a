"""Writes from distributed workers: the chunks of a segmentation are stored by the workers'
own tasks, not gathered to the client (kmdist.store._write)."""

from __future__ import annotations

from distributed import get_task_stream
from numpy.testing import assert_array_equal

from kmdist import open_segmentation
from tests.store._helpers import write


def test_workers_store_every_chunk_of_both_pyramids(tmp_path, sample, local_client):
    labels, palette = sample
    store = tmp_path / "out.zarr"
    with get_task_stream(local_client) as stream:
        write(store, "photo", labels, palette)
    workers = set(local_client.scheduler_info()["workers"])
    stored = [t for t in stream.data if t["key"][0].startswith("store-map")]
    # 300 x 500 labels in 128-pixel chunks: 3 x 4 blocks at level 0 and 2 x 2 at level 1
    # (150 x 250), each written to the labels and to the recoloured image.
    assert len(stored) >= 2 * (3 * 4 + 2 * 2), sorted({t["key"][0] for t in stream.data})
    assert stored and {t["worker"] for t in stored} <= workers  # run by the workers
    seg = open_segmentation(store, "photo")
    assert_array_equal(seg.labels.compute(), labels)
    assert_array_equal(seg.image_level(1).compute(), palette.colors_as()[labels[::2, ::2]])
