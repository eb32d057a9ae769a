"""The batch pipeline: images in, complete OME-Zarr groups out, failures isolated."""

from __future__ import annotations

import os

import dask.array as da
import imageio.v3 as iio
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from sklearn.datasets import load_sample_image

from kmdist import (
    SegmentOptions,
    learn_palette,
    list_segmentations,
    open_images,
    open_segmentation,
    segment,
    segment_batch,
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder with two small photos (PNG, JPEG) and one corrupt JPEG."""
    root = tmp_path_factory.mktemp("photos")
    china = np.ascontiguousarray(load_sample_image("china.jpg")[::4, ::4])
    flower = np.ascontiguousarray(load_sample_image("flower.jpg")[::4, ::4])
    iio.imwrite(root / "china.png", china)
    (root / "sub").mkdir()
    iio.imwrite(root / "sub" / "flower.jpg", flower, quality=95)
    good = (root / "sub" / "flower.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(good[: len(good) // 3])
    return root


def test_batch_isolates_the_corrupt_image(photos, tmp_path):
    refs = open_images(photos)
    assert [r.name for r in refs] == ["broken", "china", "sub_flower"]
    results = segment_batch(refs, tmp_path / "out.zarr", SegmentOptions(n_colors=8))
    status = {r.name: r.status for r in results}
    assert status == {"broken": "failed", "china": "done", "sub_flower": "done"}
    broken = next(r for r in results if r.name == "broken")
    assert "broken.jpg" in broken.error
    infos = {i.name: i for i in list_segmentations(tmp_path / "out.zarr")}
    assert infos["china"].complete and infos["sub_flower"].complete
    assert "broken" not in infos or not infos["broken"].complete


def test_output_equals_in_memory_segmentation(photos, tmp_path):
    ref = next(r for r in open_images(photos) if r.name == "china")
    (res,) = segment_batch([ref], tmp_path / "o.zarr", SegmentOptions(n_colors=8))
    seg = open_segmentation(tmp_path / "o.zarr", "china")
    img = iio.imread(photos / "china.png")
    pal = learn_palette(img, 8)
    assert seg.palette == pal == res.palette
    assert_array_equal(seg.labels.compute(), segment(da.from_array(img), pal).compute())
    assert_array_equal(seg.image.compute(), pal.colors_as()[seg.labels.compute()])
    assert seg.attrs["complete"] is True and seg.attrs["source"].endswith("china.png")


def test_existing_output_refused_resumed_or_overwritten(photos, tmp_path):
    refs = [r for r in open_images(photos) if r.name == "china"]
    store = tmp_path / "o.zarr"
    opts = SegmentOptions(n_colors=4)
    assert segment_batch(refs, store, opts)[0].status == "done"
    again = segment_batch(refs, store, opts)[0]
    assert again.status == "failed" and "already complete" in again.error
    assert segment_batch(refs, store, opts, on_exists="skip")[0].status == "skipped"
    # An interrupted run leaves complete: false; resuming redoes exactly that image.
    group = zarr.open_group(str(store / "china" / "labels" / "segmentation"), mode="r+")
    group.attrs["kmdist"] = {**group.attrs["kmdist"], "complete": False}
    assert segment_batch(refs, store, opts, on_exists="skip")[0].status == "done"
    assert segment_batch(refs, store, opts, on_exists="overwrite")[0].status == "done"


def test_shared_palette_same_everywhere(photos, tmp_path):
    refs = open_images(photos)
    results = segment_batch(refs, tmp_path / "o.zarr", SegmentOptions(n_colors=6), shared=True)
    done = [r for r in results if r.status == "done"]
    assert len(done) == 2 and [r.status for r in results].count("failed") == 1
    palettes = [open_segmentation(tmp_path / "o.zarr", r.name).palette for r in done]
    assert palettes[0] == palettes[1]
    merged = learn_palette(
        [iio.imread(photos / "china.png"), iio.imread(photos / "sub" / "flower.jpg")], 6
    )
    assert palettes[0] == merged


def test_preview_written(photos, tmp_path):
    refs = [r for r in open_images(photos) if r.name == "china"]
    (res,) = segment_batch(
        refs, tmp_path / "o.zarr", SegmentOptions(n_colors=5), preview_dir=tmp_path / "pv"
    )
    pic = iio.imread(res.preview)
    assert pic.shape[1] >= 2 * 100 and pic.shape[0] > 100


def test_sixteen_bit_goes_minibatch(tmp_path, rng):
    img = (rng.integers(0, 4, size=(60, 70, 3)) * 20000).astype(np.uint16)
    iio.imwrite(tmp_path / "deep.tif", img)
    (res,) = segment_batch(
        open_images(tmp_path / "deep.tif"), tmp_path / "o.zarr", SegmentOptions(n_colors=4)
    )
    assert res.status == "done" and res.palette.method == "minibatch"
    seg = open_segmentation(tmp_path / "o.zarr", "deep")
    assert seg.image.dtype == np.uint16 and seg.palette.k == 4


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


def test_an_image_held_on_the_cluster_is_read_once_with_the_same_output(
    tmp_path, local_client, monkeypatch
):
    # A small image is persisted on the workers between the histogram and the labelling
    # passes; a large one (here: above a lowered limit) is read twice. Same output.
    from distributed import futures_of

    from kmdist.pipeline import _image

    src = tmp_path / "photo.zarr"
    z = zarr.create_array(src, shape=(200, 300, 3), chunks=(64, 64, 3), dtype="u1")
    z[...] = load_sample_image("china.jpg")[100:300, 200:500]
    (ref,) = open_images(src)
    image = ref.open()
    held = _image._held(image)
    assert held is not image and len(futures_of(held)) == image.npartitions
    assert_array_equal(held.compute(), image.compute())
    opts = SegmentOptions(n_colors=6)
    calls = []
    hold = _image._held
    monkeypatch.setattr(_image, "_held", lambda im: calls.append(im) or hold(im))
    once = _image.segment_one(ref, tmp_path / "once.zarr", opts)
    assert len(calls) == 1  # the histogram path holds the image
    monkeypatch.setattr(_image, "_HOLD_BYTES", image.nbytes - 1)
    assert _image._held(image) is image
    twice = _image.segment_one(ref, tmp_path / "twice.zarr", opts)
    assert once.status == twice.status == "done"
    a, b = (
        open_segmentation(tmp_path / "once.zarr", "photo"),
        open_segmentation(tmp_path / "twice.zarr", "photo"),
    )
    assert_array_equal(a.palette.colors, b.palette.colors)
    assert_array_equal(a.labels.compute(), b.labels.compute())


def test_a_stream_is_consumed_as_work_is_submitted(photos, tmp_path, local_client):
    # A stream of many images: at most a window of batches is read ahead of the first
    # result, and every image comes back.
    from kmdist import iter_segment
    from kmdist.pipeline import _small

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


def test_a_saved_palette_labels_every_image_with_its_colours(photos, tmp_path):
    from kmdist import load_palette

    refs = open_images(photos)
    first = tmp_path / "first.zarr"
    segment_batch(refs, first, SegmentOptions(n_colors=4))
    palette = load_palette(f"{first}:china")
    out = tmp_path / "applied.zarr"
    results = segment_batch(refs, out, SegmentOptions(n_colors=4), palette=palette)
    assert [r.status for r in results] == ["failed", "done", "done"]  # broken, china, flower
    for name in ("china", "sub_flower"):
        seg = open_segmentation(out, name)
        assert seg.palette == palette
        image = refs[[r.name for r in refs].index(name)].open()
        assert_array_equal(seg.labels.compute(), segment(image, palette).compute())
