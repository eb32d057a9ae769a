"""Small images in memory, batches of them per task (kmdist.pipeline._small)."""

from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from kmdist import list_segmentations, open_images, open_segmentation
from kmdist.pipeline import SegmentOptions, _small, segment_batch
from kmdist.pipeline._image import segment_one
from kmdist.pipeline._small import segment_small, small_batches_on_cluster


class Recording:
    """A client that passes everything on and records the images of each task."""

    def __init__(self, client):
        self.client = client
        self.parts = []

    def __getattr__(self, name):
        return getattr(self.client, name)

    def submit(self, fn, part, *args, **kwargs):
        self.parts.append(len(part))
        return self.client.submit(fn, part, *args, **kwargs)


class NoClient:
    """A client that must not be used."""

    def __getattr__(self, name):
        raise AssertionError(f"client.{name} used")


@pytest.fixture
def tiny(tmp_path, rng):
    """One small 8-bit RGB image's ref."""
    iio.imwrite(tmp_path / "tiny.png", rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    (ref,) = open_images(tmp_path / "tiny.png")
    return ref


def copies(ref, n, pulled=None):
    """`n` refs to the image of `ref`, named im0, im1...; `pulled` records each one read."""
    for i in range(n):
        if pulled is not None:
            pulled.append(i)
        yield type(ref)(f"im{i}", ref.source, ref._path)


@pytest.mark.parametrize("shared", [False, True])
def test_small_images_on_the_workers_match_the_chunked_path(photos, tmp_path, local_client, shared):
    # With a cluster, small images are segmented whole in memory on the workers, a batch
    # per task; with explicit chunks they take the chunked path. Same palettes, labels.
    refs = open_images(photos)
    fast = segment_batch(refs, tmp_path / "fast.zarr", SegmentOptions(n_colors=6), shared=shared)
    chunked_opts = SegmentOptions(n_colors=6, chunks=64)
    slow = segment_batch(refs, tmp_path / "slow.zarr", chunked_opts, shared=shared)
    assert [r.name for r in fast] == [r.name for r in refs]  # input order, not finish order
    assert [r.status for r in fast] == [r.status for r in slow] == ["failed", "done", "done"]
    assert "broken.jpg" in fast[0].error
    workers = set(local_client.run(os.getpid).values())
    for name in ("china", "sub_flower"):
        a = open_segmentation(tmp_path / "fast.zarr", name)
        b = open_segmentation(tmp_path / "slow.zarr", name)
        assert_array_equal(a.palette.colors, b.palette.colors)
        assert_array_equal(a.labels.compute(), b.labels.compute())
        assert_array_equal(a.image.compute(), b.image.compute())
        assert a.attrs["writer"]["pid"] in workers  # written by a worker
        assert b.attrs["writer"]["pid"] not in workers


def test_a_stream_is_consumed_as_work_is_submitted(photos, tmp_path, local_client):
    # A stream of many images: at most a window of batches is read ahead of the first
    # result, and every image comes back.
    from kmdist.pipeline import _small, iter_segment

    (ref,) = [r for r in open_images(photos) if r.name == "china"]
    pulled = []

    def many():
        for i in range(2_000):
            pulled.append(i)
            yield type(ref)(f"im{i}", ref.source, ref._path)

    stream = iter_segment(many(), tmp_path / "o.zarr", SegmentOptions(n_colors=3))
    first = next(stream)
    assert first.ok
    workers = len(local_client.scheduler_info()["workers"])
    # The look-ahead (a window of full batches) and one more batch submitted since.
    assert len(pulled) <= (4 * workers + 1) * _small._BATCH < 2_000
    rest = list(stream)
    assert len(rest) == 1_999 and all(r.status == "done" for r in rest)
    assert len(list_segmentations(tmp_path / "o.zarr")) == 2_000


def test_in_memory_results_equal_the_chunked_path_and_large_images_are_declined(
    photos, tmp_path, monkeypatch
):
    (ref,) = [r for r in open_images(photos) if r.name == "china"]
    opts = SegmentOptions(n_colors=5)
    small = segment_small(ref, tmp_path / "small.zarr", opts)
    chunked = segment_one(ref, tmp_path / "chunked.zarr", opts)
    assert small.status == chunked.status == "done" and small.shape == chunked.shape
    a = open_segmentation(tmp_path / "small.zarr", "china")
    b = open_segmentation(tmp_path / "chunked.zarr", "china")
    assert a.palette == b.palette
    assert_array_equal(a.labels.compute(), b.labels.compute())
    height, width = small.shape[:2]
    monkeypatch.setattr(_small, "SMALL_PIXELS", height * width - 1)
    assert segment_small(ref, tmp_path / "none.zarr", opts) is None
    assert not (tmp_path / "none.zarr").exists()  # nothing written


def test_a_short_stream_is_split_so_that_every_worker_gets_batches(tiny, tmp_path, local_client):
    client = Recording(local_client)
    results = list(
        small_batches_on_cluster(
            client, copies(tiny, 20), tmp_path / "o.zarr", SegmentOptions(n_colors=3)
        )
    )
    workers = len(local_client.scheduler_info()["workers"])
    assert sum(client.parts) == 20 and len(client.parts) >= 4 * workers
    assert sorted(ref.name for ref, _ in results) == sorted(f"im{i}" for i in range(20))
    assert all(res.status == "done" for _, res in results)


def test_at_most_a_window_of_batches_is_read_ahead(tiny, tmp_path, local_client):
    client, pulled = Recording(local_client), []
    stream = small_batches_on_cluster(
        client,
        copies(tiny, 40, pulled),
        tmp_path / "o.zarr",
        SegmentOptions(n_colors=3),
        batch=3,
        window=2,
    )
    next(stream)
    # Two batches submitted, then one more as the first finished.
    assert len(pulled) <= (2 + 1) * 3
    assert len(list(stream)) == 39 and set(client.parts) == {3, 1}  # 13 of 3, then 1


def test_explicit_chunks_leave_every_image_to_the_chunked_path(tiny, tmp_path):
    opts = SegmentOptions(n_colors=3, chunks=8)
    results = list(small_batches_on_cluster(NoClient(), copies(tiny, 5), tmp_path / "o", opts))
    assert [(ref.name, res) for ref, res in results] == [(f"im{i}", None) for i in range(5)]


def test_a_failing_task_fails_its_images_with_the_reason(tiny, tmp_path, local_client):
    # A task that raises (here a palette that is none, a bug rather than a bad image) is
    # retried once, then fails each of its images, named, instead of the stream.
    results = list(
        small_batches_on_cluster(
            local_client,
            copies(tiny, 4),
            tmp_path / "o.zarr",
            SegmentOptions(n_colors=3),
            palette="not a palette",
            batch=2,
        )
    )
    assert len(results) == 4
    for ref, res in results:
        assert res.name == ref.name and res.status == "failed"
        assert res.error.startswith(f"{tiny.source}: ") and "channels" in res.error


def test_an_image_that_needs_a_mini_batch_palette_takes_the_chunked_path(tmp_path, rng):
    # Mini-batch k-means computes Dask graphs: a task must neither send them to its own
    # cluster nor set the scheduler for the whole process (with threads, the caller's
    # own computations share it), so such images are declined, unread, and nothing is
    # written; with a palette given they are labelled here.
    grey = rng.integers(0, 2**16, (12, 16), dtype=np.uint16)
    iio.imwrite(tmp_path / "grey.png", grey)
    (ref,) = open_images(tmp_path / "grey.png")
    assert segment_small(ref, tmp_path / "o.zarr", SegmentOptions(n_colors=3)) is None
    assert not (tmp_path / "o.zarr").exists()
    palette = segment_one(ref, tmp_path / "chunked.zarr", SegmentOptions(n_colors=3)).palette
    given = segment_small(ref, tmp_path / "o.zarr", SegmentOptions(n_colors=3), palette=palette)
    assert given is not None and given.status == "done"
    assert_array_equal(
        open_segmentation(tmp_path / "o.zarr", "grey").labels.compute(),
        open_segmentation(tmp_path / "chunked.zarr", "grey").labels.compute(),
    )
    iio.imwrite(tmp_path / "rgb.png", rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    (rgb,) = open_images(tmp_path / "rgb.png")
    minibatch = SegmentOptions(n_colors=3, method="minibatch")
    assert segment_small(rgb, tmp_path / "m.zarr", minibatch) is None
    assert segment_small(rgb, tmp_path / "m.zarr", SegmentOptions(n_colors=3)).status == "done"
