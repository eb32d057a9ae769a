"""A small image written directly (NumPy labels) is stored as zarr itself stores it.

Every file is compared, byte for byte, with a copy of the image made through zarr's
own API (`zarr.create_group`, `zarr.create_array`, then `array[...] = values`), and
the image is read back by zarr, by kmdist and by ome-zarr-py.
"""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from zarr.codecs import BloscCodec

from kmdist.palette._palette import Palette
from kmdist.store._read import is_complete, open_segmentation
from kmdist.store._write import write_segmentation
from tests.store._helpers import make_labels, make_palette


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by its path relative to it, with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def through_zarr(written: Path, copy: Path) -> None:
    """Copy the image group `written` to `copy` through zarr's API, node by node.

    Groups get the attributes `written` holds; arrays are created with the output
    contract's codecs (Blosc zstd level 1; bit shuffle for labels, byte shuffle for
    colours) and the values read back from `written`.
    """
    nodes = [
        (doc.parent.relative_to(written).as_posix(), json.loads(doc.read_bytes()))
        for doc in written.rglob("zarr.json")
    ]
    # Groups first, parents before children: an array or group made first would make
    # its parents as groups without attributes.
    nodes.sort(key=lambda n: (n[1]["node_type"] != "group", n[0] != ".", n[0].count("/")))
    for path, meta in nodes:
        path = "" if path == "." else path
        if meta["node_type"] == "group":
            zarr.create_group(str(copy), path=path, attributes=meta["attributes"])
            continue
        source = zarr.open_array(str(written), path=path, mode="r")
        labels = meta["dimension_names"] == ["y", "x"]
        target = zarr.create_array(
            str(copy),
            name=path,
            shape=source.shape,
            chunks=source.chunks,
            dtype=source.dtype,
            compressors=BloscCodec(
                cname="zstd", clevel=1, shuffle="bitshuffle" if labels else "shuffle"
            ),
            fill_value=0,
            dimension_names=meta["dimension_names"],
        )
        target[...] = source[...]


def cases(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, Palette]]:
    out = {}
    labels, counts = make_labels((256, 256), 16, rng)
    out["thumbnail"] = labels, make_palette(counts, rng)
    # Above 1024 pixels a side: two chunks a row, the last padded; two levels.
    labels, counts = make_labels((1500, 700), 5, rng, random=False)
    out["two-chunks"] = labels, make_palette(counts, rng)
    labels, counts = make_labels((300, 200), 300, rng)  # uint16 labels
    out["k300"] = labels, make_palette(counts, rng)
    labels, counts = make_labels((40, 50), 3, rng)
    out["float"] = labels, Palette(rng.random((3, 2)) * 4.0, counts, 0.0, dtype="float32")
    # One label, coloured black: chunks of zeros only are not written, as zarr does.
    labels = np.zeros((1300, 64), np.uint8)
    labels[-5:, :3] = 1
    black = Palette(np.array([[0, 0, 0], [9, 9, 9]]), np.array([1300 * 64 - 15, 15]), 0.0)
    out["mostly-empty"] = labels, black
    return out


def test_every_file_is_the_one_zarr_writes(tmp_path, rng):
    store = tmp_path / "direct.zarr"
    for name, (labels, palette) in cases(rng).items():
        write_segmentation(store, name, labels, palette, source=f"{name}.png")
        copy = tmp_path / f"{name}.copy.zarr"
        through_zarr(store / name, copy)
        direct, made_by_zarr = files_of(store / name), files_of(copy)
        assert sorted(direct) == sorted(made_by_zarr), name
        for path, data in direct.items():
            assert data == made_by_zarr[path], f"{name}/{path}"
    # Chunks of zeros only are left out (and read as the fill value).
    assert not (store / "mostly-empty/0/c/0/0/0").exists()
    assert (store / "mostly-empty/0/c/0/1/0").exists()
    assert_array_equal(
        open_segmentation(store, "mostly-empty").labels.compute(), cases(rng)["mostly-empty"][0]
    )


def test_numpy_and_dask_labels_give_the_same_files(tmp_path, rng):
    labels, counts = make_labels((1500, 700), 5, rng, random=False)
    palette = make_palette(counts, rng)
    write_segmentation(tmp_path / "np.zarr", "p", labels, palette)
    write_segmentation(tmp_path / "da.zarr", "p", da.from_array(labels, chunks=1024), palette)
    direct, by_workers = files_of(tmp_path / "np.zarr/p"), files_of(tmp_path / "da.zarr/p")
    assert sorted(direct) == sorted(by_workers)
    for path, data in direct.items():
        if path != "labels/segmentation/zarr.json":  # the writer's token differs
            assert data == by_workers[path], path


def test_zarr_kmdist_and_ome_zarr_py_read_it(tmp_path, rng):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    labels, counts = make_labels((1500, 700), 5, rng, random=False)
    palette = make_palette(counts, rng)
    store = tmp_path / "out.zarr"
    write_segmentation(store, "photo", labels, palette)
    assert is_complete(store, "photo")
    group = zarr.open_group(str(store), path="photo", mode="r")
    seg = group["labels/segmentation"]
    assert isinstance(seg, zarr.Group) and seg.attrs["kmdist"]["complete"] is True
    assert "claimed" not in seg.attrs["kmdist"]
    assert_array_equal(seg["1"][...], labels[::2, ::2])
    out = open_segmentation(store, "photo")
    assert_array_equal(out.labels.compute(), labels)
    assert_array_equal(out.image.compute(), palette.colors_as()[labels])
    nodes = list(Reader(parse_url(str(store / "photo")))())
    image, label = nodes[0], nodes[-1]
    assert [d.shape for d in image.data][:2] == [(3, 1500, 700), (3, 750, 350)]
    assert_array_equal(
        np.asarray(image.data[1]), palette.colors_as()[labels[::2, ::2]].transpose(2, 0, 1)
    )
    assert_array_equal(np.asarray(label.data[0]), labels)


@pytest.mark.slow
def test_on_s3_the_same_objects_in_three_batches(tmp_path, bucket, rng, monkeypatch):
    import fsspec

    from kmdist.store import _root

    batches = []
    put = _root.RemoteRoot.put

    def recording(self, items):
        batches.append(len(items))
        return put(self, items)

    monkeypatch.setattr(_root.RemoteRoot, "put", recording)
    labels, counts = make_labels((256, 256), 16, rng)
    palette = make_palette(counts, rng)
    write_segmentation(f"s3://{bucket}/out.zarr", "p", labels, palette)
    write_segmentation(tmp_path / "out.zarr", "p", labels, palette)
    assert batches == [5, 2, 1]  # documents, chunks, marker
    fs = fsspec.filesystem("s3")
    prefix = f"{bucket}/out.zarr/p/"
    remote = {key[len(prefix) :]: fs.cat_file(key) for key in fs.find(prefix)}
    local = files_of(tmp_path / "out.zarr/p")
    assert sorted(remote) == sorted(local)
    for path, data in local.items():
        if path != "labels/segmentation/zarr.json":  # the writer's token differs
            assert remote[path] == data, path
    assert is_complete(f"s3://{bucket}/out.zarr", "p")
