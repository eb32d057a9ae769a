"""Storage URLs: images read from, and stores written to, S3 (a moto server on 127.0.0.1)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import threading
import zipfile

import dask.array as da
import fsspec
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from numpy.testing import assert_array_equal
from sklearn.datasets import load_sample_image

from kmdist import (
    ImageReadError,
    OutputError,
    Palette,
    is_complete,
    list_segmentations,
    open_image,
    open_images,
    open_segmentation,
    write_segmentation,
)
from kmdist.store import OutputExistsError, _root


def s3() -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("s3")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmdist.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder with a PNG, a JPEG in a subfolder, a tiled TIFF and a Zarr image; archives."""
    root = tmp_path_factory.mktemp("photos")
    folder = root / "photos"
    (folder / "sub").mkdir(parents=True)
    china = load_sample_image("china.jpg")
    flower = load_sample_image("flower.jpg")
    iio.imwrite(folder / "china.png", np.ascontiguousarray(china[::5, ::5]))
    iio.imwrite(folder / "sub" / "flower.jpg", np.ascontiguousarray(flower[::5, ::5]))
    tifffile.imwrite(folder / "tiled.tif", np.ascontiguousarray(china[:256, :320]), tile=(64, 64))
    z = zarr.create_array(folder / "crop.zarr", shape=(96, 128, 3), chunks=(32, 64, 3), dtype="u1")
    z[...] = flower[100:196, 200:328]
    (folder / ".hidden.png").write_bytes((folder / "china.png").read_bytes())
    with zipfile.ZipFile(root / "set.zip", "w") as zf:
        zf.write(folder / "china.png", "a/china.png")
    with tarfile.open(root / "set.tar.gz", "w:gz") as tf:
        tf.add(folder / "sub" / "flower.jpg", "b/flower.jpg")
    return root


def upload(photos, bucket: str) -> None:
    fs = s3()
    fs.put(str(photos / "photos"), f"{bucket}/photos", recursive=True)
    fs.put(str(photos / "set.zip"), f"{bucket}/set.zip")
    fs.put(str(photos / "set.tar.gz"), f"{bucket}/set.tar.gz")


def tiny_palette() -> Palette:
    return Palette(np.array([[255, 0, 0], [0, 0, 255]]), np.array([3, 3]), 0.0)


def test_listing_and_reading_s3_objects_as_local_files(photos, bucket):
    upload(photos, bucket)
    url = f"s3://{bucket}"
    remote = open_images([f"{url}/photos", f"{url}/set.zip", f"{url}/set.tar.gz"])
    local = open_images([str(photos / p) for p in ("photos", "set.zip", "set.tar.gz")])
    assert [r.name for r in remote] == [r.name for r in local]
    assert [r.name for r in remote] == [
        "china",
        "crop",
        "sub_flower",
        "tiled",
        "a_china",
        "b_flower",
    ]
    assert remote[-1].source == f"{url}/set.tar.gz::b/flower.jpg"
    for r, ref in zip(remote, local, strict=True):
        assert_array_equal(r.open().compute(), ref.open().compute())
    tiled = open_image(f"{url}/photos/tiled.tif", chunks=64)  # read tile by tile
    expect = iio.imread(photos / "photos" / "tiled.tif")
    assert_array_equal(tiled[64:130, 70:200].compute(), expect[64:130, 70:200])
    assert_array_equal(
        open_image(f"{url}/set.zip::a/china.png").compute(),
        iio.imread(photos / "photos" / "china.png"),
    )
    assert [r.name for r in open_images(f"{url}/photos/*.png")] == ["china"]
    with pytest.raises(ImageReadError, match=f"{url}/photos/missing.png: file not found"):
        open_images(f"{url}/photos/missing.png")
    with pytest.raises(ImageReadError, match="no file matches"):
        open_images(f"{url}/photos/*.webp")


def test_store_contract_holds_on_s3(bucket, rng):
    url = f"s3://{bucket}/out.zarr"
    labels = da.from_array(rng.integers(0, 2, (40, 50), dtype=np.uint8), chunks=16)
    write_segmentation(url, "one", labels, tiny_palette(), source="x.png")
    assert is_complete(url, "one")
    seg = open_segmentation(url, "one")
    assert_array_equal(seg.labels.compute(), labels.compute())
    assert_array_equal(seg.image[..., 2].compute(), labels.compute() * 255)
    with pytest.raises(OutputExistsError, match=f"{url}/one: already complete"):
        write_segmentation(url, "one", labels, tiny_palette())
    write_segmentation(url, "one", 1 - labels, tiny_palette(), overwrite=True)
    assert_array_equal(open_segmentation(url, "one").labels.compute(), 1 - labels.compute())

    # An interrupted write reads incomplete, and the next run redoes it.
    def fail(block):
        raise RuntimeError("worker lost")

    broken = labels.map_blocks(fail, dtype=np.uint8)
    with pytest.raises(RuntimeError, match="worker lost"):
        write_segmentation(url, "two", broken, tiny_palette())
    assert not is_complete(url, "two")
    with pytest.raises(OutputError, match=f"{url}/two: is incomplete"):
        open_segmentation(url, "two")
    infos = {i.name: i.complete for i in list_segmentations(url)}
    assert infos == {"one": True, "two": False}

    # A claim from another host holds while the group is recent (the cross-host lease).
    group = zarr.open_group(zarr.storage.FsspecStore.from_url(url), path="two/labels/segmentation")
    block = dict(group.attrs["kmdist"])
    group.update_attributes(
        {"kmdist": {**block, "claimed": True, "writer": {**block["writer"], "host": "elsewhere"}}}
    )
    with pytest.raises(OutputError, match=r"being written by another run .*'elsewhere'"):
        write_segmentation(url, "two", labels, tiny_palette())
    write_segmentation(url, "three", labels, tiny_palette())
    root = zarr.open_group(zarr.storage.FsspecStore.from_url(url), mode="r")
    assert "images" not in root.attrs["kmdist"]  # found by listing, never rewritten
    infos = {info.name: info.complete for info in list_segmentations(url)}
    assert infos == {"one": True, "two": False, "three": True}


def test_s3_locations_that_are_not_stores_are_refused(bucket, rng):
    fs = s3()
    labels = rng.integers(0, 2, (4, 5), dtype=np.uint8)
    fs.pipe(f"{bucket}/a-file", b"x")
    with pytest.raises(OutputError, match=f"s3://{bucket}/a-file: exists and is a file"):
        write_segmentation(f"s3://{bucket}/a-file", "x", labels, tiny_palette())
    fs.pipe(f"{bucket}/notes/readme.txt", b"mine")
    with pytest.raises(OutputError, match=f"s3://{bucket}/notes: .*not a Zarr store"):
        write_segmentation(f"s3://{bucket}/notes", "x", labels, tiny_palette())
    assert fs.find(f"{bucket}/notes") == [f"{bucket}/notes/readme.txt"]
    with pytest.raises(OutputError, match=r"out\.zarr: no such bucket .*'kmdist-no-such-bucket'"):
        write_segmentation("s3://kmdist-no-such-bucket/out.zarr", "x", labels, tiny_palette())


def test_s3_lock_excludes_other_runs_and_outlives_no_dead_holder(bucket, monkeypatch):
    fs = s3()
    url = f"s3://{bucket}/locked.zarr"
    first, second = _root.open_root(url), _root.open_root(url)
    acquired = threading.Event()

    def take() -> None:
        with second.lock():
            acquired.set()

    with first.lock():
        thread = threading.Thread(target=take)
        thread.start()
        assert not acquired.wait(1.0), "a second holder got the lock"
    assert acquired.wait(30)
    thread.join(30)
    assert not fs.exists(f"{bucket}/locked.zarr/{_root.LOCK_NAME}")
    # A run that died holding the lock left it behind: a waiter takes it over once the
    # same holder has been seen for the stale period (shortened here).
    fs.pipe(f"{bucket}/locked.zarr/{_root.LOCK_NAME}", b"dead-run")
    monkeypatch.setattr(_root, "_STALE_LOCK", 0.5)
    with first.lock():
        assert fs.cat(f"{bucket}/locked.zarr/{_root.LOCK_NAME}") != b"dead-run"
        # Taken over meanwhile (this holder looked dead): its release leaves the new
        # holder's lock alone.
        fs.pipe(f"{bucket}/locked.zarr/{_root.LOCK_NAME}", b"another-run 0")
    assert fs.cat(f"{bucket}/locked.zarr/{_root.LOCK_NAME}") == b"another-run 0"


@pytest.mark.slow
def test_cli_reads_and_writes_s3_as_it_does_local_paths(photos, bucket, tmp_path):
    upload(photos, bucket)
    url = f"s3://{bucket}"
    sources = ["photos", "set.zip", "set.tar.gz"]
    out = f"{url}/out.zarr"
    args = ["-k", "6", "--workers", "2"]
    proc = run(
        "segment",
        *(f"{url}/{s}" for s in sources),
        "-o",
        out,
        *args,
        "--preview",
        f"{url}/previews",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 done, 0 skipped, 0 failed" in proc.stdout
    local = tmp_path / "local.zarr"
    proc = run("segment", *(str(photos / s) for s in sources), "-o", str(local), *args)
    assert proc.returncode == 0, proc.stderr
    infos = list_segmentations(out)
    assert [i.name for i in infos] == [i.name for i in list_segmentations(local)]
    assert all(i.complete and i.source.startswith(url) for i in infos)
    for info in infos:
        seg, ref = open_segmentation(out, info.name), open_segmentation(local, info.name)
        assert_array_equal(seg.palette.colors, ref.palette.colors)
        assert_array_equal(seg.labels.compute(), ref.labels.compute())
    previews = sorted(s3().ls(f"{bucket}/previews"))
    assert [p.rsplit("/", 1)[1] for p in previews] == [f"{i.name}.png" for i in infos]
    png = iio.imread(io.BytesIO(s3().cat(previews[0])))
    assert png.ndim == 3 and png.shape[0] > 10
    info = run("info", out)
    assert info.returncode == 0 and "\nchina: 86x128x3, k=6" in info.stdout
    again = run("segment", f"{url}/photos", "-o", out, *args, "--resume")
    assert again.returncode == 0 and "0 done, 4 skipped, 0 failed" in again.stdout
    missing = run("segment", f"{url}/nothing-here.png", "-o", out, *args)
    assert missing.returncode == 1
    assert f"{url}/nothing-here.png: file not found" in missing.stdout + missing.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_flow_segments_s3_images_into_an_s3_store(photos, bucket, tmp_path):
    from flows.segment import segment_archive

    upload(photos, bucket)
    url = f"s3://{bucket}"
    state = segment_archive(
        f"{url}/photos", f"{url}/flow.zarr", k=5, n_workers=2, return_state=True
    )
    assert state.is_completed(), state.message
    local = segment_archive(str(photos / "photos"), str(tmp_path / "flow.zarr"), k=5, n_workers=2)
    assert local["done"] == state.result()["done"] > 0
    names = [i.name for i in list_segmentations(tmp_path / "flow.zarr")]
    assert [i.name for i in list_segmentations(f"{url}/flow.zarr")] == names
    for name in names:
        assert_array_equal(
            open_segmentation(f"{url}/flow.zarr", name).labels.compute(),
            open_segmentation(tmp_path / "flow.zarr", name).labels.compute(),
        )


def test_missing_credentials_name_the_url_and_exit_one(photos, bucket, tmp_path):
    upload(photos, bucket)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    env["HOME"] = str(tmp_path)  # no ~/.aws either
    url = f"s3://{bucket}/photos/china.png"
    proc = run("segment", url, "-o", str(tmp_path / "o.zarr"), "--workers", "1", env=env)
    assert proc.returncode == 1
    assert f"{url}: cannot list it (Unable to locate credentials)" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    store = f"s3://{bucket}/o.zarr"
    proc = run("segment", str(photos / "photos"), "-o", store, "--workers", "1", env=env)
    assert proc.returncode == 1
    assert f"{store}: cannot use the store: Unable to locate credentials" in proc.stdout
    assert "Traceback" not in proc.stderr
    # The same with --resume (the completeness check comes first) and for `kmdist info`.
    with_creds = run("segment", str(photos / "photos" / "china.png"), "-o", store, "-k", "4")
    assert with_creds.returncode == 0, with_creds.stderr
    proc = run("segment", str(photos / "photos"), "-o", store, "--resume", env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{store}: cannot use the store: Unable to locate credentials" in proc.stdout
    proc = run("info", store, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{store}: cannot use the store: Unable to locate credentials" in proc.stderr
