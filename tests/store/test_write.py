"""Writing an image's groups and arrays (kmdist.store._write)."""

from __future__ import annotations

import os
import re
import socket

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from kmdist.palette._palette import Palette
from kmdist.store import _blocks, _root
from kmdist.store._claims import process_start
from kmdist.store._errors import OutputError
from kmdist.store._read import is_complete, open_segmentation
from kmdist.store._write import level_arrays, write_segmentation
from tests._computes import recorded_computes
from tests.store._helpers import (
    attrs_of,
    complete_images_of,
    images_of,
    make_labels,
    make_palette,
    read_json,
    write,
)


def test_grey_uint16_palette_and_many_labels(tmp_path, rng):
    labels, counts = make_labels((40, 30), 300, rng)
    palette = make_palette(counts, rng, channels=1, dtype="uint16")
    write(tmp_path / "s.zarr", "grey", labels, palette, chunks=16)
    seg = open_segmentation(tmp_path / "s.zarr", "grey")
    assert seg.labels.dtype == np.uint16 and seg.image.dtype == np.uint16
    assert seg.image.shape == (40, 30, 1)
    assert_array_equal(seg.image.compute(), palette.colors_as()[labels])
    ome = attrs_of(tmp_path / "s.zarr/grey")["ome"]
    assert ome["omero"]["channels"][0]["window"]["max"] == 65535


def test_labels_of_other_integer_dtypes_are_stored_as_label_dtype(tmp_path, sample):
    labels, palette = sample
    write(tmp_path / "s.zarr", "a", labels.astype(np.int64), palette)
    seg = open_segmentation(tmp_path / "s.zarr", "a")
    assert seg.labels.dtype == np.uint8
    assert_array_equal(seg.labels.compute(), labels)


@pytest.mark.parametrize(
    ("shape", "n_levels", "expected"),
    [
        ((300, 500), None, [(300, 500), (150, 250)]),
        ((256, 256), None, [(256, 256)]),
        ((1025, 7), None, [(1025, 7), (513, 4), (257, 2), (129, 1)]),
        ((40, 70), 3, [(40, 70), (20, 35), (10, 18)]),
        ((3, 2), 3, [(3, 2), (2, 1), (1, 1)]),
    ],
)
def test_pyramid_levels(tmp_path, rng, shape, n_levels, expected):
    labels, counts = make_labels(shape, 3, rng)
    palette = make_palette(counts, rng)
    write(tmp_path / "s.zarr", "p", labels, palette, chunks=64, n_levels=n_levels)
    seg = open_segmentation(tmp_path / "s.zarr", "p")
    assert seg.n_levels == len(expected)
    level = labels
    for i, level_shape in enumerate(expected):
        assert seg.labels_level(i).shape == level_shape
        assert seg.image_level(i).shape == (*level_shape, 3)
        assert_array_equal(seg.labels_level(i).compute(), level)
        level = level[::2, ::2]


@pytest.mark.parametrize("n_levels", [0, -1, 2.0, True, 4])
def test_bad_n_levels(tmp_path, rng, n_levels):
    labels, counts = make_labels((3, 2), 3, rng)
    with pytest.raises(ValueError, match="n_levels"):
        write(tmp_path / "s.zarr", "p", labels, make_palette(counts, rng), n_levels=n_levels)
    assert not (tmp_path / "s.zarr").exists()  # checked before anything is created


def test_ome_metadata(tmp_path, sample):
    labels, palette = sample
    store = tmp_path / "out.zarr"
    write(store, "photo", labels, palette)

    def datasets(lead):
        return [
            {
                "path": str(i),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [*lead, float(2**i), float(2**i)]}
                ],
            }
            for i in range(2)
        ]

    space = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    image = attrs_of(store / "photo")["ome"]
    assert image["version"] == "0.5"
    assert image["multiscales"] == [
        {
            "name": "photo",
            "axes": [{"name": "c", "type": "channel"}, *space],
            "datasets": datasets([1.0]),
        }
    ]
    assert [c["color"] for c in image["omero"]["channels"]] == ["FF0000", "00FF00", "0000FF"]
    assert attrs_of(store / "photo/labels") == {
        "ome": {"version": "0.5", "labels": ["segmentation"]}
    }
    seg = attrs_of(store / "photo/labels/segmentation")
    assert seg["ome"]["version"] == "0.5"
    assert seg["ome"]["multiscales"] == [
        {"name": "segmentation", "axes": space, "datasets": datasets([])}
    ]
    assert seg["ome"]["image-label"] == {
        "version": "0.5",
        "colors": [
            {"label-value": i, "rgba": rgba.tolist()}
            for i, rgba in enumerate(palette.display_rgba())
        ],
        "source": {"image": "../../"},
    }
    block = seg["kmdist"]
    assert block["palette"] == palette.colors.tolist()
    assert block["counts"] == palette.counts.tolist()
    assert {k: block[k] for k in ("inertia", "k", "n_clusters", "color_space", "method")} == {
        "inertia": 123.25,
        "k": 5,
        "n_clusters": 5,
        "color_space": "rgb",
        "method": "exact",
    }
    assert block["dtype"] == "uint8" and block["source"] == "" and block["complete"] is True
    assert list(block)[-1] == "complete"
    assert complete_images_of(store) == ["photo"] == images_of(store)
    assert read_json(store / "photo/0/zarr.json")["dimension_names"] == ["c", "y", "x"]
    assert read_json(store / "photo/labels/segmentation/1/zarr.json")["dimension_names"] == [
        "y",
        "x",
    ]


def test_ome_zarr_py_reads_it(tmp_path, sample):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    labels, palette = sample
    store = tmp_path / "out.zarr"
    write(store, "photo", labels, palette)
    nodes = list(Reader(parse_url(str(store / "photo")))())
    image, label = nodes[0], nodes[-1]
    assert [d.shape for d in image.data] == [(3, 300, 500), (3, 150, 250)]
    assert [a["name"] for a in image.metadata["axes"]] == ["c", "y", "x"]
    assert_array_equal(np.asarray(image.data[0]), palette.colors_as()[labels].transpose(2, 0, 1))
    assert [d.shape for d in label.data] == [(300, 500), (150, 250)]
    assert_array_equal(np.asarray(label.data[1]), labels[::2, ::2])
    expected = {i: list(rgba / 255) for i, rgba in enumerate(palette.display_rgba())}
    assert label.metadata["color"] == expected


def test_chunks_and_codecs(tmp_path, sample):
    labels, palette = sample
    store = tmp_path / "out.zarr"
    write(store, "photo", labels, palette, chunks=(100, 128))
    lab = read_json(store / "photo/labels/segmentation/0/zarr.json")
    img = read_json(store / "photo/0/zarr.json")
    assert lab["chunk_grid"]["configuration"]["chunk_shape"] == [100, 128]
    assert img["chunk_grid"]["configuration"]["chunk_shape"] == [3, 100, 128]
    assert lab["data_type"] == "uint8" and img["data_type"] == "uint8"
    blosc = {"cname": "zstd", "clevel": 1}  # level 1: 6x faster than 5, files ~20% larger
    (lab_blosc,) = [c["configuration"] for c in lab["codecs"] if c["name"] == "blosc"]
    (img_blosc,) = [c["configuration"] for c in img["codecs"] if c["name"] == "blosc"]
    assert lab_blosc.items() >= {**blosc, "shuffle": "bitshuffle"}.items()
    assert img_blosc.items() >= {**blosc, "shuffle": "shuffle"}.items()
    assert all(c["name"] != "sharding_indexed" for c in lab["codecs"] + img["codecs"])


def test_irregular_chunks_are_written_as_regular_1024(tmp_path, rng):
    labels, counts = make_labels((1300, 1100), 4, rng, random=False)
    dlabels = da.from_array(labels, chunks=((100, 900, 300), (1100,)))
    write_segmentation(tmp_path / "s.zarr", "a", dlabels, make_palette(counts, rng), n_levels=1)
    meta = read_json(tmp_path / "s.zarr/a/labels/segmentation/0/zarr.json")
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1024, 1024]
    assert_array_equal(open_segmentation(tmp_path / "s.zarr", "a").labels.compute(), labels)


def test_sharding_for_large_arrays(tmp_path, rng, monkeypatch):
    # Shard above 1 MiB rather than 64 MiB, to keep the arrays small.
    monkeypatch.setattr(_blocks, "_SHARD_ABOVE", 2**20)
    labels, counts = make_labels((3000, 3000), 6, rng, random=False)
    palette = make_palette(counts, rng)
    store = tmp_path / "big.zarr"
    write(store, "big", labels, palette, chunks=500, n_levels=3)

    def layout(path):
        meta = read_json(store / path / "zarr.json")
        outer = meta["chunk_grid"]["configuration"]["chunk_shape"]
        codec = meta["codecs"][0]
        if codec["name"] != "sharding_indexed":
            return outer, None
        names = [c["name"] for c in codec["configuration"]["codecs"]]
        assert names == ["bytes", "blosc"]
        return codec["configuration"]["chunk_shape"], outer

    seg = "big/labels/segmentation"
    assert layout(f"{seg}/0") == ([500, 500], [2000, 2000])  # 9 MB: 4 x 4 chunks a shard
    assert layout("big/0") == ([3, 500, 500], [3, 2000, 2000])
    assert layout(f"{seg}/1") == ([500, 500], [1500, 1500])  # clipped to the array
    assert layout(f"{seg}/2") == ([500, 500], None)  # 0.56 MB: not sharded
    assert layout("big/2") == ([3, 500, 500], [3, 1000, 1000])  # 1.7 MB
    out = open_segmentation(store, "big")
    assert out.labels.chunksize == (2000, 2000)  # read by shard
    assert_array_equal(out.labels.compute(), labels)
    assert_array_equal(out.image_level(2).compute(), palette.colors_as()[labels[::4, ::4]])


def test_interrupted_write_leaves_incomplete_marker(tmp_path, sample):
    labels, palette = sample
    store = tmp_path / "out.zarr"
    bad = labels.copy()
    bad[-1, -1] = 9  # no such colour: recolouring the last block fails mid-write
    with pytest.raises(ValueError, match="label 9 has no colour: the palette has 5 colours"):
        write(store, "photo", bad, palette)
    block = attrs_of(store / "photo/labels/segmentation")["kmdist"]
    assert block["complete"] is False and block["k"] == 5
    assert not is_complete(store, "photo")
    assert complete_images_of(store) == [] and images_of(store) == ["photo"]
    write(store, "photo", labels, palette)
    assert is_complete(store, "photo")
    assert complete_images_of(store) == ["photo"] == images_of(store)


@pytest.mark.parametrize(
    ("extra", "match"), [({"k": 3}, "reserved keys"), ({"when": object()}, "JSON-serialisable")]
)
def test_bad_extra(tmp_path, sample, extra, match):
    with pytest.raises(ValueError, match=match):
        write(tmp_path / "s.zarr", "photo", *sample, extra=extra)


@pytest.mark.parametrize(
    "labels", [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32)], ids=["3d", "float"]
)
def test_bad_labels(tmp_path, sample, labels):
    with pytest.raises(ValueError, match="labels must"):
        write(tmp_path / "s.zarr", "photo", labels, sample[1])


def test_one_compute_and_nothing_large_returned(tmp_path, rng):
    labels, counts = make_labels((1200, 1000), 5, rng)
    palette = make_palette(counts, rng)
    with recorded_computes() as computes:
        write(tmp_path / "s.zarr", "photo", labels, palette, chunks=256)
    assert len(computes.returned) == 1  # every level of both pyramids in one graph
    assert computes.returned[0] < 1000  # the store tasks return nothing of size
    assert_array_equal(open_segmentation(tmp_path / "s.zarr", "photo").labels.compute(), labels)


def test_write_with_a_distributed_client_gives_the_same_levels(tmp_path, sample, local_client):
    """The stored levels are right when a distributed client is active (that the
    workers, not this process, write them: tests/store/test_worker_writes.py)."""
    labels, palette = sample
    store = tmp_path / "out.zarr"
    write(store, "photo", labels, palette)
    seg = open_segmentation(store, "photo")
    assert_array_equal(seg.image_level(1).compute(), palette.colors_as()[labels[::2, ::2]])


# --- The kmdist block ---------------------------------------------------------------

# Every key the block sets itself, by hand (the writer's record and its markers too).
BLOCK_KEYS = [
    "palette",
    "counts",
    "inertia",
    "k",
    "n_clusters",
    "color_space",
    "method",
    "seed",
    "dtype",
    "source",
    "version",
    "writer",
    "claimed",
    "complete",
]


@pytest.mark.parametrize("key", BLOCK_KEYS)
def test_extra_may_not_set_a_key_of_the_block(tmp_path, sample, key):
    with pytest.raises(ValueError) as info:
        write(tmp_path / "s.zarr", "photo", *sample, extra={key: 1, "fine": 2})
    assert str(info.value) == f"extra must not set the reserved keys ['{key}']"
    assert not (tmp_path / "s.zarr").exists()


def test_extra_lists_every_reserved_key_it_sets(tmp_path, sample):
    with pytest.raises(ValueError, match=r"reserved keys \['complete', 'k', 'seed'\]"):
        write(tmp_path / "s.zarr", "photo", *sample, extra={"seed": 1, "k": 1, "complete": 1})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1, 2}, b"bytes"])
def test_extra_must_be_strict_json(tmp_path, sample, value):
    with pytest.raises(ValueError, match="extra must be JSON-serialisable"):
        write(tmp_path / "s.zarr", "photo", *sample, extra={"x": value})


def test_extra_items_are_stored(tmp_path, sample):
    extra = {"run": "r1", "nested": {"a": [1, 2.5, None, True]}, "n": 3}
    write(tmp_path / "s.zarr", "photo", *sample, extra=extra)
    block = attrs_of(tmp_path / "s.zarr/photo/labels/segmentation")["kmdist"]
    assert {k: block[k] for k in extra} == extra


def test_the_writer_is_recorded_and_the_claim_released(tmp_path, sample):
    write(tmp_path / "s.zarr", "photo", *sample, run="batch-1")
    block = attrs_of(tmp_path / "s.zarr/photo/labels/segmentation")["kmdist"]
    token = block["writer"].pop("write")  # this write's own, unlike any other's
    assert re.fullmatch("[0-9a-f]{32}", token)
    assert block["writer"] == {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": process_start(os.getpid()),
        "run": "batch-1",
    }
    write(tmp_path / "s.zarr", "other", *sample, run="batch-1")
    other = attrs_of(tmp_path / "s.zarr/other/labels/segmentation")["kmdist"]
    assert other["writer"]["write"] != token
    assert "claimed" not in block and block["complete"] is True


def test_the_claim_is_released_when_the_write_fails(tmp_path, sample):
    labels, palette = sample
    bad = labels.copy()
    bad[0, 0] = 7  # no such colour
    with pytest.raises(ValueError, match="label 7 has no colour"):
        write(tmp_path / "s.zarr", "photo", bad, palette)
    block = attrs_of(tmp_path / "s.zarr/photo/labels/segmentation")["kmdist"]
    assert "claimed" not in block and block["complete"] is False
    assert block["writer"]["pid"] == os.getpid()


def test_the_claim_is_held_while_writing(tmp_path, sample):
    labels, palette = sample
    store = tmp_path / "s.zarr"
    seen = []

    def look(block):
        if not seen:
            seen.append(attrs_of(store / "photo/labels/segmentation")["kmdist"])
        return block

    dlabels = da.from_array(labels, chunks=128).map_blocks(look, dtype=labels.dtype)
    write_segmentation(store, "photo", dlabels, palette)
    assert seen[0]["claimed"] is True and seen[0]["complete"] is False
    assert seen[0]["writer"]["pid"] == os.getpid()


# --- Labels -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([[0, 1], [1, 0]], "labels must be a Dask or NumPy array, got list"),
        (np.zeros(4, np.uint8), r"labels must have shape \(y, x\), got \(4,\)"),
        (np.zeros((0, 5), np.uint8), r"labels must have a known, non-empty shape, got \(0, 5\)"),
        (np.zeros((4, 4), bool), "labels must be integers, got dtype bool"),
    ],
    ids=["list", "1d", "empty", "bool"],
)
def test_labels_refused_before_anything_is_created(tmp_path, sample, labels, message):
    with pytest.raises(ValueError, match=message):
        write_segmentation(tmp_path / "s.zarr", "photo", labels, sample[1])
    assert not (tmp_path / "s.zarr").exists()


def test_labels_of_unknown_shape_refused(tmp_path, sample):
    labels = da.from_array(np.zeros((8, 8), np.uint8), chunks=4)
    unknown = labels[labels[:, 0] == 0]  # rows not known until computed
    with pytest.raises(ValueError, match="labels must have a known, non-empty shape"):
        write_segmentation(tmp_path / "s.zarr", "photo", unknown, sample[1])


def test_invalid_name_refused_before_anything_is_created(tmp_path, sample):
    with pytest.raises(OutputError, match="not a valid image name"):
        write(tmp_path / "s.zarr", "a/b", *sample)
    assert not (tmp_path / "s.zarr").exists()


def test_numpy_labels_are_stored_as_dask_labels_are(tmp_path, sample):
    labels, palette = sample
    write_segmentation(tmp_path / "np.zarr", "p", labels, palette)
    write_segmentation(tmp_path / "da.zarr", "p", da.from_array(labels), palette)
    for path in ("p/0", "p/1", "p/labels/segmentation/0", "p/labels/segmentation/1"):
        a = zarr.open_array(str(tmp_path / "np.zarr" / path), mode="r")
        b = zarr.open_array(str(tmp_path / "da.zarr" / path), mode="r")
        assert a.metadata == b.metadata
        assert_array_equal(a[...], b[...])
    assert attrs_of(tmp_path / "np.zarr/p")["ome"] == attrs_of(tmp_path / "da.zarr/p")["ome"]
    assert is_complete(tmp_path / "np.zarr", "p")


def test_numpy_labels_are_written_without_dask(tmp_path, sample):
    def refuse(*args, **kwargs):
        raise AssertionError("no Dask computation for NumPy labels")

    with dask.config.set(scheduler=refuse):
        write_segmentation(tmp_path / "s.zarr", "p", *sample)
    assert_array_equal(open_segmentation(tmp_path / "s.zarr", "p").labels.compute(), sample[0])


def test_chunks_larger_than_the_image_are_clipped(tmp_path, sample):
    labels, palette = sample
    write_segmentation(tmp_path / "s.zarr", "p", da.from_array(labels), palette, chunks=(4096, 64))
    lab0 = read_json(tmp_path / "s.zarr/p/labels/segmentation/0/zarr.json")
    lab1 = read_json(tmp_path / "s.zarr/p/labels/segmentation/1/zarr.json")
    img1 = read_json(tmp_path / "s.zarr/p/1/zarr.json")
    assert lab0["chunk_grid"]["configuration"]["chunk_shape"] == [300, 64]
    assert lab1["chunk_grid"]["configuration"]["chunk_shape"] == [150, 64]
    assert img1["chunk_grid"]["configuration"]["chunk_shape"] == [3, 150, 64]


def test_float_and_two_channel_images(tmp_path, rng):
    labels, counts = make_labels((20, 30), 3, rng)
    palette = Palette(rng.random((3, 2)) * 4.0, counts, 0.0, dtype="float32")
    write(tmp_path / "s.zarr", "p", labels, palette, chunks=16)
    seg = open_segmentation(tmp_path / "s.zarr", "p")
    assert seg.image.dtype == np.float32 and seg.image.shape == (20, 30, 2)
    assert_array_equal(seg.image.compute(), palette.colors.astype(np.float32)[labels])
    assert "omero" not in attrs_of(tmp_path / "s.zarr/p")["ome"]  # no display for 2 channels


# --- Node creation ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_all_nodes_are_created_in_one_batch_before_any_pixel(tmp_path, sample, monkeypatch, kind):
    batches = []
    put = _root.LocalRoot.put

    def recording(self, items):
        batches.append(sorted(items))
        return put(self, items)

    monkeypatch.setattr(_root.LocalRoot, "put", recording)
    labels, palette = sample
    if kind == "dask":
        labels = da.from_array(labels, chunks=128)
    write_segmentation(tmp_path / "s.zarr", "photo", labels, palette, n_levels=3)
    nodes = [
        "photo",
        "photo/0",
        "photo/1",
        "photo/2",
        "photo/labels",
        "photo/labels/segmentation",
        "photo/labels/segmentation/0",
        "photo/labels/segmentation/1",
        "photo/labels/segmentation/2",
    ]
    # The documents first (the claim among them), the chunks (NumPy labels: one batch;
    # Dask labels: the workers, through zarr), the marker last.
    assert batches[0] == sorted(f"{n}/zarr.json" for n in nodes)
    assert batches[-1] == ["photo/labels/segmentation/zarr.json"]
    assert len(batches) == (3 if kind == "numpy" else 2)
    assert is_complete(tmp_path / "s.zarr", "photo")


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_a_node_creation_failure_names_the_image(tmp_path, sample, monkeypatch, kind):
    def failing(self, items):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_root.LocalRoot, "put", failing)
    labels, palette = sample
    if kind == "dask":
        labels = da.from_array(labels, chunks=128)
    with pytest.raises(OutputError, match=r"s\.zarr/photo: cannot write: Permission denied"):
        write_segmentation(tmp_path / "s.zarr", "photo", labels, palette)


# --- level_arrays -------------------------------------------------------------------


@pytest.mark.parametrize(("k", "dtype"), [(5, np.uint8), (256, np.uint8), (300, np.uint16)])
def test_level_arrays_label_dtype(rng, k, dtype):
    palette = make_palette(np.full(k, 2), rng)
    label, image = level_arrays(
        zarr.storage.MemoryStore(), "seg/0", "img/0", (40, 30), (16, 16), palette
    )
    assert label.dtype == dtype and label.shape == (40, 30) and label.chunks == (16, 16)
    assert image.dtype == np.uint8 and image.shape == (3, 40, 30) and image.chunks == (3, 16, 16)
    assert label.metadata.dimension_names == ("y", "x")
    assert image.metadata.dimension_names == ("c", "y", "x")


def test_level_arrays_are_those_write_segmentation_makes(tmp_path, sample):
    labels, palette = sample
    write(tmp_path / "s.zarr", "p", labels, palette, chunks=(100, 128), n_levels=1)
    store = zarr.storage.LocalStore(str(tmp_path / "other.zarr"))
    label, image = level_arrays(store, "l", "i", (300, 500), (100, 128), palette)
    written_label = zarr.open_array(str(tmp_path / "s.zarr/p/labels/segmentation/0"), mode="r")
    written_image = zarr.open_array(str(tmp_path / "s.zarr/p/0"), mode="r")
    assert label.metadata == written_label.metadata
    assert image.metadata == written_image.metadata
    label[...] = labels  # and they take what write_segmentation stores in them
    image[...] = written_image[...]
    assert_array_equal(zarr.open_array(store, path="l", mode="r")[...], labels)


def test_level_arrays_shard_large_levels(rng, monkeypatch):
    monkeypatch.setattr(_blocks, "_SHARD_ABOVE", 2**20)
    palette = make_palette(np.full(4, 2), rng)
    store = zarr.storage.MemoryStore()
    label, image = level_arrays(store, "l", "i", (3000, 3000), (500, 500), palette)
    assert label.chunks == (500, 500) and label.shards == (2000, 2000)
    assert image.chunks == (3, 500, 500) and image.shards == (3, 2000, 2000)
    small_label, small_image = level_arrays(store, "l2", "i2", (750, 750), (500, 500), palette)
    assert small_label.shards is None  # 0.56 MB of labels
    assert small_image.shards == (3, 1000, 1000)  # 1.7 MB of colours: 4 x 4 clipped to 2 x 2
