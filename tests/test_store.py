"""The OME-Zarr output contract (kmdist.store) and the PNG preview (kmdist.store._preview)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from PIL import Image

from kmdist.palette._palette import Palette
from kmdist.store import _blocks, _root
from kmdist.store._errors import OutputError, OutputExistsError
from kmdist.store._preview import swatch_side, write_preview
from kmdist.store._read import is_complete, list_segmentations, open_segmentation
from kmdist.store._write import write_segmentation

# --- Helpers ------------------------------------------------------------------------


def make_labels(shape, k, rng, *, random=True):
    """Labels 0..k-1 renumbered so that label 0 is the most common, and their counts."""
    if random:
        raw = rng.integers(0, k, shape)
    else:  # a stripy pattern: compresses well, so large arrays stay quick to write
        y, x = np.indices(shape)
        raw = (y // 37 + x // 53) % k
    counts = np.bincount(raw.ravel(), minlength=k)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    dtype = np.uint8 if k <= 256 else np.uint16
    return rank[raw].astype(dtype), counts[order]


def make_palette(counts, rng, *, channels=3, dtype="uint8", seed=7):
    hi = np.iinfo(dtype).max
    colors = rng.integers(0, hi + 1, (len(counts), channels)).astype(np.float64)
    return Palette(colors, counts, 123.25, dtype=dtype, seed=seed, n_clusters=len(counts))


@pytest.fixture
def sample(rng):
    """A 300 x 500 label image with k=5 and a matching random 8-bit RGB palette."""
    labels, counts = make_labels((300, 500), 5, rng)
    return labels, make_palette(counts, rng)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def attrs_of(path: Path) -> dict:
    return read_json(path / "zarr.json")["attributes"]


def images_of(store: Path) -> list[str]:
    """The store's images, found by listing it; the root itself keeps no list."""
    assert "images" not in attrs_of(store).get("kmdist", {})
    return [info.name for info in list_segmentations(store)]


def complete_images_of(store: Path) -> list[str]:
    return [info.name for info in list_segmentations(store) if info.complete]


def write(store, name, labels, palette, chunks=128, **kwargs):
    write_segmentation(store, name, da.from_array(labels, chunks=chunks), palette, **kwargs)


# --- Round trip and levels ----------------------------------------------------------


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


# --- Metadata -----------------------------------------------------------------------


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


def test_shard_rule():
    assert _blocks.sharding((8000, 8000), (1024, 1024), 1) is None  # 61 MiB
    assert _blocks.sharding((9000, 9000), (1024, 1024), 1) == (4096, 4096)
    assert _blocks.sharding((9000, 9000), (1024, 1024), 3) == (4096, 4096)
    assert _blocks.sharding((20000, 20000), (4096, 4096), 3) == (8192, 8192)  # 2 x 2
    assert _blocks.sharding((40000, 40000), (8192, 8192), 3) is None  # chunks already large
    assert _blocks.sharding((100000, 700), (1024, 1024), 1) == (4096, 1024)


# --- Existing outputs ---------------------------------------------------------------


def test_complete_output_is_kept_unless_overwrite(tmp_path, sample, rng):
    labels, palette = sample
    store = tmp_path / "out.zarr"
    write(store, "photo", labels, palette)
    with pytest.raises(
        OutputExistsError, match=r"out\.zarr/photo: already complete; pass overwrite"
    ):
        write(store, "photo", labels, palette)
    other, counts = make_labels((60, 80), 3, rng)
    write(store, "photo", other, make_palette(counts, rng), overwrite=True)
    seg = open_segmentation(store, "photo")
    assert seg.palette.k == 3 and seg.n_levels == 1
    assert_array_equal(seg.labels.compute(), other)


@pytest.mark.parametrize("damage", ["complete-false", "no-block"])
def test_incomplete_output_is_rewritten(tmp_path, sample, damage):
    labels, palette = sample
    store = tmp_path / "out.zarr"
    write(store, "photo", labels, palette)
    group = zarr.open_group(str(store / "photo/labels/segmentation"), mode="r+")
    attrs = group.attrs.asdict()
    if damage == "complete-false":
        attrs["kmdist"]["complete"] = False
    else:
        del attrs["kmdist"]
    group.attrs.put(attrs)

    assert not is_complete(store, "photo")
    with pytest.raises(OutputError, match=r"photo: is incomplete \(an interrupted run\); rerun"):
        open_segmentation(store, "photo")
    (info,) = list_segmentations(store)
    assert info.name == "photo" and not info.complete
    write(store, "photo", labels[:100], palette)  # no overwrite needed
    assert open_segmentation(store, "photo").labels.shape == (100, 500)


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


# --- Bad stores and names -----------------------------------------------------------


def test_store_that_is_a_file(tmp_path, sample):
    path = tmp_path / "out.zarr"
    path.write_text("not a store")
    with pytest.raises(OutputError, match=r"out\.zarr: exists and is a file, not a Zarr store"):
        write(path, "photo", *sample)


def test_store_that_is_a_foreign_directory(tmp_path, sample):
    path = tmp_path / "photos"
    path.mkdir()
    (path / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputError, match=r"photos: .*not a Zarr store; refusing to write into it"):
        write(path, "photo", *sample)
    assert sorted(p.name for p in path.iterdir()) == ["holiday.jpg"]


def test_store_being_created_by_another_writer_is_not_foreign(tmp_path, sample):
    # What a concurrent writer sees while zarr writes the root's zarr.json: zarr's temp
    # file, not yet renamed. Seen in CI as a spurious "not a Zarr store" in a batch.
    path = tmp_path / "out.zarr"
    path.mkdir()
    (path / f"zarr.{'ab12' * 8}.partial").write_bytes(b"{")
    write(path, "photo", *sample)
    assert is_complete(path, "photo")


def test_directory_with_other_partial_files_is_foreign(tmp_path, sample):
    path = tmp_path / "downloads"
    path.mkdir()
    (path / "movie.mkv.partial").write_bytes(b"x")
    with pytest.raises(OutputError, match="not a Zarr store"):
        write(path, "photo", *sample)


def test_empty_directory_becomes_a_store(tmp_path, sample):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty", "photo", *sample)
    assert is_complete(tmp_path / "empty", "photo")


def test_store_under_a_file_is_not_writable(tmp_path, sample):
    (tmp_path / "file.txt").write_text("x")
    path = tmp_path / "file.txt" / "out.zarr"
    with pytest.raises(OutputError, match=r"file\.txt/out\.zarr: cannot create the store"):
        write(path, "photo", *sample)


def test_store_without_write_access_reported(tmp_path, sample, monkeypatch):
    # What a user without permission sees (root passes os.access, hence the stand-in).
    monkeypatch.setattr(_root.os, "access", lambda path, mode: False)
    with pytest.raises(OutputError, match=r"out\.zarr: not writable \(permission denied\)"):
        write(tmp_path / "out.zarr", "photo", *sample)


@contextlib.contextmanager
def read_only_dir(path):
    """Make `path` unwritable for real: chmod for users; for root, which chmod does not
    stop, the immutable attribute (chattr +i, from e2fsprogs)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o500)
        try:
            yield
        finally:
            path.chmod(0o700)


def test_store_without_write_permission(tmp_path, sample):
    parent = tmp_path / "locked"
    parent.mkdir()
    with read_only_dir(parent), pytest.raises(OutputError, match=r"locked/out\.zarr"):
        write(parent / "out.zarr", "photo", *sample)
    assert not (parent / "out.zarr").exists()


def test_existing_store_without_write_permission(tmp_path, sample):
    store = tmp_path / "out.zarr"
    write(store, "a", *sample)
    with read_only_dir(store), pytest.raises(OutputError, match=r"out\.zarr"):
        write(store, "b", *sample)
    assert [i.name for i in list_segmentations(store)] == ["a"]


@pytest.mark.parametrize(
    "name", ["", "a/b", "a\\b", ".hidden", "..", "__zarr", "tab\there", "zarr.json"]
)
def test_invalid_names(tmp_path, sample, name):
    with pytest.raises(OutputError, match="not a valid image name"):
        write(tmp_path / "s.zarr", name, *sample)


def test_missing_image_and_store(tmp_path, sample):
    with pytest.raises(OutputError, match="no such segmentation"):
        open_segmentation(tmp_path / "none.zarr", "photo")
    with pytest.raises(OutputError, match=r"none\.zarr: not a Zarr store"):
        list_segmentations(tmp_path / "none.zarr")
    write(tmp_path / "s.zarr", "photo", *sample)
    with pytest.raises(OutputError, match=r"s\.zarr/other: no such segmentation"):
        open_segmentation(tmp_path / "s.zarr", "other")


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


# --- Listing and concurrent writers -------------------------------------------------


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


def test_no_lock_file_left_behind(tmp_path, sample):
    store = tmp_path / "out.zarr"
    write(store, "photo", *sample)
    assert sorted(p.name for p in store.iterdir()) == ["photo", "zarr.json"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [name for name, _ in zarr.open_group(str(store), mode="r").members()] == ["photo"]


WRITER = textwrap.dedent(
    """
    import sys
    import dask.array as da
    import numpy as np
    from kmdist.palette._palette import Palette
    from kmdist.store._write import write_segmentation

    store, prefix = sys.argv[1], sys.argv[2]
    labels = np.zeros((16, 16), dtype=np.uint8)
    labels[8:] = 1
    palette = Palette(np.array([[0, 0, 0], [255, 255, 255]]), np.array([128, 128]), 0.0)
    for i in range(6):
        write_segmentation(store, f"{prefix}{i}", da.from_array(labels, chunks=8), palette)
    """
)


def test_concurrent_writers_of_different_images(tmp_path):
    store = tmp_path / "shared.zarr"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(store), prefix], stderr=subprocess.PIPE)
        for prefix in ("p", "q", "r")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    names = sorted(f"{prefix}{i}" for prefix in "pqr" for i in range(6))
    assert complete_images_of(store) == names == images_of(store)
    assert [i.name for i in list_segmentations(store) if i.complete] == names
    assert not (store / ".kmdist.lock").exists()


# --- Where the work happens ---------------------------------------------------------


def test_one_compute_and_nothing_large_returned(tmp_path, rng):
    labels, counts = make_labels((1200, 1000), 5, rng)
    palette = make_palette(counts, rng)
    calls: list[int] = []

    def recording_get(dsk, keys, **kwargs):
        out = dask.threaded.get(dsk, keys, **kwargs)
        calls.append(sum(np.asarray(o).nbytes for o in dask.core.flatten(out) if o is not None))
        return out

    with dask.config.set(scheduler=recording_get):
        write(tmp_path / "s.zarr", "photo", labels, palette, chunks=256)
    assert len(calls) == 1  # every level of both pyramids in one graph
    assert calls[0] < 1000  # the store tasks return nothing of size
    assert_array_equal(open_segmentation(tmp_path / "s.zarr", "photo").labels.compute(), labels)


def test_write_from_distributed_workers(tmp_path, sample, local_client):
    labels, palette = sample
    store = tmp_path / "out.zarr"
    write(store, "photo", labels, palette)
    seg = open_segmentation(store, "photo")
    assert_array_equal(seg.image_level(1).compute(), palette.colors_as()[labels[::2, ::2]])


# --- Preview ------------------------------------------------------------------------


def test_preview_rgb(tmp_path, sample, rng):
    labels, palette = sample
    original = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    path = write_preview(
        tmp_path / "prev" / "photo.png",
        da.from_array(original, chunks=100),
        da.from_array(labels, chunks=100),
        palette,
        max_side=128,
    )
    assert path == tmp_path / "prev" / "photo.png"
    png = np.asarray(Image.open(path))
    # stride ceil(500 / 128) = 4: halves of 75 x 125, then one row of 5 swatches of 32 px
    side = swatch_side(5, 250)
    assert side == 32 and png.shape == (75 + 32, 250, 3)
    assert_array_equal(png[:75, :125], original[::4, ::4])
    rgba = palette.display_rgba()
    assert_array_equal(png[:75, 125:], rgba[labels[::4, ::4], :3])
    for i in range(5):
        assert_array_equal(
            png[75:, i * side : (i + 1) * side], np.broadcast_to(rgba[i, :3], (32, 32, 3))
        )
    assert (png[75:, 5 * side :] == 255).all()
    assert sorted(p.name for p in path.parent.iterdir()) == ["photo.png"]  # no temp files


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_preview_grey_scaled_to_8_bit(tmp_path, rng, dtype):
    labels, counts = make_labels((64, 40), 3, rng)
    grey = np.linspace(0, 1, 64 * 40).reshape(64, 40, 1)
    original = (grey * 65535).astype(dtype) if dtype == "uint16" else grey.astype(dtype) * 7.5
    palette = make_palette(counts, rng, channels=1, dtype="uint16")
    path = write_preview(
        tmp_path / "g.png", da.from_array(original, chunks=32), da.from_array(labels), palette
    )
    png = np.asarray(Image.open(path))
    side = swatch_side(3, 80)
    assert png.shape == (64 + side, 80, 3)
    left = png[:64, :40]
    assert (left[..., 0] == left[..., 2]).all()  # grey
    assert left[0, 0, 0] == 0 and left[-1, -1, 0] == 255
    assert_array_equal(png[:64, 40:], palette.display_rgba()[labels, :3])


def test_preview_wraps_many_swatches(tmp_path, rng):
    labels, counts = make_labels((20, 30), 40, rng)
    palette = make_palette(counts, rng)
    original = da.zeros((20, 30, 3), dtype=np.uint8, chunks=10)
    png = np.asarray(
        Image.open(write_preview(tmp_path / "m.png", original, da.from_array(labels), palette))
    )
    # 60 px wide: 8 px swatches, 7 a row, 6 rows for 40 colours
    assert png.shape == (20 + 6 * 8, 60, 3)
    assert_array_equal(png[20 + 5 * 8, 4 * 8], palette.display_rgba()[39, :3])


def test_preview_computes_only_the_small_arrays(tmp_path, sample, rng):
    labels, palette = sample
    original = da.from_array(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8), chunks=100)
    returned: list[int] = []

    def recording_get(dsk, keys, **kwargs):
        out = dask.threaded.get(dsk, keys, **kwargs)
        returned.append(sum(np.asarray(o).nbytes for o in dask.core.flatten(out)))
        return out

    with dask.config.set(scheduler=recording_get):
        write_preview(
            tmp_path / "p.png", original, da.from_array(labels, chunks=100), palette, max_side=100
        )
    assert len(returned) == 1 and returned[0] == 60 * 100 * 4  # 3 channels + labels


def test_labels_in_shard_blocks_store_the_same(tmp_path, sample, monkeypatch):
    # Large outputs are labelled in the output's shard-sized blocks (write_blocks) and
    # written with the chunk given: same chunks, shards and pixels as chunk-sized labels.
    labels, palette = sample
    monkeypatch.setattr(_blocks, "_SHARD_ABOVE", 10_000)  # shard this small sample
    image = da.zeros((*labels.shape, 3), dtype=np.uint8, chunks=(64, 64, 3))
    assert _blocks.write_blocks(image, palette) == ((64, 64), (64, 64))  # 2 x 2 shards: few
    image = da.zeros((*labels.shape, 3), dtype=np.uint8, chunks=(16, 16, 3))
    chunk, block = _blocks.write_blocks(image, palette)
    assert chunk == (16, 16) and block == (64, 64)  # 4 x 4 chunks a shard, 5 x 8 shards
    write(tmp_path / "a.zarr", "p", labels, palette, chunks=chunk)
    blocked = da.from_array(labels, chunks=block)
    write_segmentation(tmp_path / "b.zarr", "p", blocked, palette, chunks=chunk)
    for path in ("p/0", "p/1", "p/labels/segmentation/0", "p/labels/segmentation/1"):
        a = zarr.open_array(str(tmp_path / "a.zarr" / path), mode="r")
        b = zarr.open_array(str(tmp_path / "b.zarr" / path), mode="r")
        assert (a.chunks, a.shards) == (b.chunks, b.shards)
        assert_array_equal(a[...], b[...])
    level0 = zarr.open_array(str(tmp_path / "b.zarr/p/0"), mode="r")
    assert level0.chunks == (3, 16, 16) and level0.shards == (3, 64, 64)
