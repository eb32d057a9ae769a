"""The batch pipeline: images in, complete OME-Zarr groups out, failures isolated."""

from __future__ import annotations

import dask.array as da
import imageio.v3 as iio
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from kmdist import (
    ImageReadError,
    learn_palette,
    list_segmentations,
    open_images,
    open_segmentation,
    segment,
)
from kmdist.pipeline import CountedRefs, SegmentOptions, segment_batch


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


def test_sixteen_bit_goes_minibatch(tmp_path, rng):
    img = (rng.integers(0, 4, size=(60, 70, 3)) * 20000).astype(np.uint16)
    iio.imwrite(tmp_path / "deep.tif", img)
    (res,) = segment_batch(
        open_images(tmp_path / "deep.tif"), tmp_path / "o.zarr", SegmentOptions(n_colors=4)
    )
    assert res.status == "done" and res.palette.method == "minibatch"
    seg = open_segmentation(tmp_path / "o.zarr", "deep")
    assert seg.image.dtype == np.uint16 and seg.palette.k == 4


def test_a_saved_palette_labels_every_image_with_its_colours(photos, tmp_path):
    from kmdist.pipeline import load_palette

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


def test_listing_checks_inputs_finds_the_first_image_and_counts_each_once(tmp_path):
    for i in range(3):
        iio.imwrite(tmp_path / f"im{i}.png", np.full((4, 4, 3), i, np.uint8))
    found = CountedRefs.listing(tmp_path)
    assert (found.count, found.so_far()) == (1, "1+")  # the first image, found up front
    names = [ref.name for ref in found]
    assert names == ["im0", "im1", "im2"]
    assert (found.count, found.so_far()) == (3, "3")


def test_listing_refuses_a_missing_input_and_an_input_without_images(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        CountedRefs.listing([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError) as err:
        CountedRefs.listing([str(tmp_path / "empty"), str(tmp_path / "empty")])
    assert str(err.value) == f"{tmp_path / 'empty'} {tmp_path / 'empty'}: no images found"


def test_a_shared_table_goes_to_the_workers_once_for_the_stream(
    photos, tmp_path, local_cluster, monkeypatch
):
    from distributed import Client

    broadcasts: list[object] = []
    scatter = Client.scatter

    def counted(self, data, *args, **kwargs):
        if kwargs.get("broadcast"):
            broadcasts.append(data)
        return scatter(self, data, *args, **kwargs)

    monkeypatch.setattr(Client, "scatter", counted)
    opts = SegmentOptions(n_colors=6, chunks=64)  # chunks asked for: the chunked path
    with Client(local_cluster):
        results = segment_batch(open_images(photos), tmp_path / "o.zarr", opts, shared=True)
    assert [r.status for r in results].count("done") == 2
    assert len(broadcasts) == 1  # not one per image


def test_a_lost_shared_table_is_sent_again(photos, tmp_path, local_cluster, monkeypatch):
    # Scattered data has no lineage: if the workers holding the table die, the next image
    # sends it again instead of failing for lost dependencies.
    from distributed import Client

    import kmdist.pipeline._batch as batch

    sent: list[object] = []
    scatter = batch.scatter_everywhere

    def lost_first(client, table):
        future = scatter(client, table)
        sent.append(future)
        if len(sent) == 1:
            client.cancel([future])  # as when every worker holding it died
        return future

    monkeypatch.setattr(batch, "scatter_everywhere", lost_first)
    opts = SegmentOptions(n_colors=6, chunks=64)  # chunks asked for: the chunked path
    with Client(local_cluster):
        results = segment_batch(open_images(photos), tmp_path / "o.zarr", opts, shared=True)
    assert [r.status for r in results].count("done") == 2, results
    assert len(sent) == 2  # once lost, sent again, then kept for the next image
