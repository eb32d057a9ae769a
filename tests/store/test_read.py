"""Reading segmentations back (kmdist.store._read): lazily, and as summaries."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from kmdist.palette._palette import Palette
from kmdist.store._errors import OutputError
from kmdist.store._read import (
    is_complete,
    iter_segmentations,
    list_segmentations,
    open_segmentation,
    palette_from_block,
)
from tests.store._helpers import complete_images_of, make_labels, make_palette, write


def test_round_trip(tmp_path, sample):
    labels, palette = sample
    store = tmp_path / "out.zarr"
    write(store, "photo", labels, palette, source="in/photo.png", extra={"run": "r1"})

    seg = open_segmentation(store, "photo")
    assert seg.name == "photo" and seg.n_levels == 2
    assert seg.labels.dtype == np.uint8 and seg.image.dtype == np.uint8
    assert_array_equal(seg.labels.compute(), labels)
    colors = palette.colors_as()
    assert_array_equal(seg.image.compute(), colors[labels])
    assert seg.palette == palette
    assert seg.attrs["source"] == "in/photo.png" and seg.attrs["run"] == "r1"
    assert seg.attrs["complete"] is True and seg.attrs["k"] == 5
    assert seg.attrs["version"] and seg.attrs["seed"] == 7
    assert_array_equal(seg.labels_level(1).compute(), labels[::2, ::2])
    assert_array_equal(seg.image_level(1).compute(), colors[labels[::2, ::2]])
    assert seg.image_level(0).shape == (300, 500, 3)
    with pytest.raises(IndexError, match="2 levels"):
        seg.labels_level(2)
    assert is_complete(store, "photo") and not is_complete(store, "other")


def test_missing_image_and_store(tmp_path, sample):
    with pytest.raises(OutputError, match="no such segmentation"):
        open_segmentation(tmp_path / "none.zarr", "photo")
    with pytest.raises(OutputError, match=r"none\.zarr: not a Zarr store"):
        list_segmentations(tmp_path / "none.zarr")
    write(tmp_path / "s.zarr", "photo", *sample)
    with pytest.raises(OutputError, match=r"s\.zarr/other: no such segmentation"):
        open_segmentation(tmp_path / "s.zarr", "other")


def test_list_segmentations(tmp_path, sample, rng):
    labels, palette = sample
    store = tmp_path / "out.zarr"
    write(store, "b", labels, palette, source="b.png")
    write(store, "a", labels[:50, :60], palette)
    zarr.open_group(str(store), mode="r+").create_group("c")  # a run that stopped at once
    infos = list_segmentations(store)
    assert [(i.name, i.complete) for i in infos] == [("a", True), ("b", True), ("c", False)]
    a, b, c = infos
    assert a.shape == (50, 60) and b.shape == (300, 500)
    assert b.k == 5 and b.palette == palette and b.inertia == 123.25 and b.source == "b.png"
    assert (c.shape, c.k, c.palette, c.inertia, c.source) == (None,) * 5
    assert complete_images_of(store) == ["a", "b"]


# --- open_segmentation --------------------------------------------------------------


def edit_attrs(path, change):
    meta = json.loads((path / "zarr.json").read_text())
    change(meta["attributes"])
    (path / "zarr.json").write_text(json.dumps(meta))


def test_open_refuses_an_invalid_name(tmp_path, sample):
    write(tmp_path / "s.zarr", "photo", *sample)
    with pytest.raises(OutputError, match=r"'\.\./photo' is not a valid image name"):
        open_segmentation(tmp_path / "s.zarr", "../photo")


def test_open_reports_a_missing_level_array(tmp_path, sample):
    store = tmp_path / "s.zarr"
    write(store, "photo", *sample)
    shutil.rmtree(store / "photo/labels/segmentation/1")
    with pytest.raises(OutputError, match=r"s\.zarr/photo: damaged OME-Zarr metadata or arrays"):
        open_segmentation(store, "photo")


def test_open_reports_a_level_that_is_a_group(tmp_path, sample):
    store = tmp_path / "s.zarr"
    write(store, "photo", *sample)
    shutil.rmtree(store / "photo/1")
    zarr.open_group(str(store / "photo"), mode="r+").create_group("1")
    with pytest.raises(OutputError, match="photo/1 is a group, not an array"):
        open_segmentation(store, "photo")


def test_open_reports_pyramids_of_different_depths(tmp_path, sample):
    store = tmp_path / "s.zarr"
    write(store, "photo", *sample)  # 2 levels

    def one_level(attrs):
        del attrs["ome"]["multiscales"][0]["datasets"][1]

    edit_attrs(store / "photo", one_level)
    with pytest.raises(
        OutputError, match=r"s\.zarr/photo: image and label pyramids differ in their levels"
    ):
        open_segmentation(store, "photo")


def test_open_reports_an_unreadable_palette(tmp_path, sample):
    store = tmp_path / "s.zarr"
    write(store, "photo", *sample)

    def no_counts(attrs):
        del attrs["kmdist"]["counts"]

    edit_attrs(store / "photo/labels/segmentation", no_counts)
    with pytest.raises(
        OutputError, match=r"s\.zarr/photo: the stored palette is unreadable: 'counts'"
    ):
        open_segmentation(store, "photo")
    (info,) = list_segmentations(store)  # still listed: complete, without a palette
    assert info.complete and info.palette is None and info.k == 5 and info.shape == (300, 500)


def test_open_reads_unsharded_arrays_by_chunk(tmp_path, sample):
    labels, palette = sample
    write(tmp_path / "s.zarr", "photo", labels, palette, chunks=(100, 128))
    seg = open_segmentation(tmp_path / "s.zarr", "photo")
    assert seg.labels.chunksize == (100, 128)
    assert seg.image.chunksize == (100, 128, 3)


def test_segmentations_compare_by_identity(tmp_path, sample):
    write(tmp_path / "s.zarr", "photo", *sample)
    a = open_segmentation(tmp_path / "s.zarr", "photo")
    b = open_segmentation(tmp_path / "s.zarr", "photo")
    assert a == a and a != b and a.palette == b.palette


@pytest.mark.parametrize("level", [-1, 2, 10])
def test_levels_out_of_range(tmp_path, sample, level):
    write(tmp_path / "s.zarr", "photo", *sample)
    seg = open_segmentation(tmp_path / "s.zarr", "photo")
    with pytest.raises(IndexError) as info:
        seg.image_level(level)
    assert str(info.value) == f"level {level} out of range: photo has 2 levels"


# --- is_complete --------------------------------------------------------------------


def test_is_complete_answers_false_rather_than_raising(tmp_path, sample):
    store = tmp_path / "s.zarr"
    assert not is_complete(store, "photo")  # no store
    write(store, "photo", *sample)
    assert is_complete(store, "photo")
    assert not is_complete(store, "../s.zarr/photo")  # not a valid name
    assert not is_complete(store, "")
    assert not is_complete("", "photo")  # not a store path
    (tmp_path / "file").write_text("x")
    assert not is_complete(tmp_path / "file", "photo")


# --- iter_segmentations -------------------------------------------------------------


def test_listing_skips_what_is_not_kmdists(tmp_path, sample):
    store = tmp_path / "s.zarr"
    write(store, "photo", *sample)
    (store / ".hidden").mkdir()
    zarr.open_group(str(store / ".hidden"), mode="w")
    (store / "__pycache__").mkdir()  # no image can have this name
    (store / "notes.txt").write_text("x")  # a file, not a group
    (store / "photo.lnk").symlink_to(store / "photo")  # a link, not a folder
    assert [i.name for i in list_segmentations(store)] == ["photo"]


def test_every_group_a_failed_write_left_is_incomplete_and_says_what_it_lacks(tmp_path, sample):
    # What a write stopped at any step leaves (a full disk: the folder made, then
    # nothing), and a damaged group: each counted and named, whatever it lacks.
    store = tmp_path / "s.zarr"
    for name in ["done", "marker", "arrays", "seg", "group"]:
        write(store, name, *sample)
    (store / "empty").mkdir()
    (store / "damaged").mkdir()
    (store / "damaged" / "zarr.json").write_text("{not json")

    def unmark(attrs):
        attrs["kmdist"]["complete"] = False

    edit_attrs(store / "marker/labels/segmentation", unmark)
    edit_attrs(store / "arrays/labels/segmentation", unmark)
    shutil.rmtree(store / "arrays" / "0")
    shutil.rmtree(store / "arrays" / "labels" / "segmentation" / "0")
    (store / "seg" / "labels" / "segmentation" / "zarr.json").unlink()
    for node in (store / "group").rglob("zarr.json"):
        node.unlink()
    infos = {i.name: i for i in iter_segmentations(store)}
    assert {n: i.missing for n, i in infos.items() if not i.complete} == {
        "arrays": "completion marker",
        "damaged": "segmentation metadata",
        "empty": "group metadata",
        "group": "group metadata",
        "marker": "completion marker",
        "seg": "segmentation metadata",
    }
    assert infos["done"].complete and infos["done"].missing is None
    assert [n for n in infos if not is_complete(store, n)] == [n for n in infos if n != "done"]
    # What --resume does with each: the leftovers are cleared and written again.
    for name in infos.keys() - {"done"}:
        write(store, name, *sample)
    assert all(i.complete for i in iter_segmentations(store))


def test_listing_a_group_kmdist_did_not_write(tmp_path, sample):
    store = tmp_path / "s.zarr"
    write(store, "photo", *sample)
    zarr.open_group(str(store), mode="r+").create_group("foreign").create_array(
        "data", shape=(4,), dtype="u1"
    )
    infos = {i.name: i for i in iter_segmentations(store)}
    assert sorted(infos) == ["foreign", "photo"]
    foreign = infos["foreign"]
    assert not foreign.complete
    assert (foreign.shape, foreign.k, foreign.palette, foreign.inertia, foreign.source) == (
        None,
    ) * 5


def test_listing_ignores_ill_typed_fields(tmp_path, sample):
    store = tmp_path / "s.zarr"
    write(store, "photo", *sample)

    def retype(attrs):
        attrs["kmdist"].update(k="5", inertia="high", source=7)

    edit_attrs(store / "photo/labels/segmentation", retype)
    (info,) = list_segmentations(store)
    assert info.complete and info.shape == (300, 500)
    assert (info.k, info.inertia, info.source) == (None, None, None)


def test_listing_refuses_a_root_that_is_not_a_v3_group(tmp_path):
    store = tmp_path / "s.zarr"
    store.mkdir()
    (store / "zarr.json").write_text("{not json")
    with pytest.raises(OutputError, match=r"s\.zarr: not a Zarr v3 group"):
        list_segmentations(store)


def test_iter_segmentations_is_sorted_by_name(tmp_path, rng):
    store = tmp_path / "s.zarr"
    labels, counts = make_labels((8, 8), 2, rng)
    palette = make_palette(counts, rng)
    for name in ["b", "B", "a10", "a2", "_x"]:
        write(store, name, labels, palette)
    names = [i.name for i in iter_segmentations(store)]
    assert names == ["B", "_x", "a10", "a2", "b"]  # code-point order
    assert complete_images_of(store) == names


# --- palette_from_block -------------------------------------------------------------


def test_palette_from_a_minimal_block():
    palette = palette_from_block({"palette": [[1, 2, 3]], "counts": [4], "inertia": 0.5}, "w")
    assert palette == Palette(np.array([[1, 2, 3]]), np.array([4]), 0.5)
    assert (palette.color_space, palette.method, palette.dtype) == ("rgb", "exact", "uint8")
    assert palette.seed is None and palette.n_clusters == 1


def test_palette_from_a_full_block():
    block = {
        "palette": [[0.5], [0.25]],
        "counts": [3, 1],
        "inertia": 2,
        "color_space": "rgb",
        "method": "minibatch",
        "dtype": "float32",
        "seed": 11,
        "n_clusters": 4,
    }
    palette = palette_from_block(block, "w")
    assert_array_equal(palette.colors, [[0.5], [0.25]])
    assert (palette.method, palette.dtype, palette.seed, palette.n_clusters) == (
        "minibatch",
        "float32",
        11,
        4,
    )


@pytest.mark.parametrize(
    ("block", "match"),
    [
        ({"counts": [1], "inertia": 0}, "'palette'"),
        ({"palette": [[1, 2, 3]], "counts": [1, 2], "inertia": 0}, "counts must have shape"),
        ({"palette": [[1, 2, 300]], "counts": [1], "inertia": 0}, "outside the uint8 range"),
        ({"palette": "red", "counts": [1], "inertia": 0}, "could not convert"),
        ({"palette": [[1, 2, 3]], "counts": [1], "inertia": None}, "inertia must be"),
    ],
)
def test_palette_from_a_bad_block(block, match):
    with pytest.raises(
        OutputError, match=rf"^s/photo: the stored palette is unreadable: .*{match}"
    ):
        palette_from_block(block, "s/photo")
