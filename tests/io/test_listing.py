"""Inputs listed as refs (kmdist.io._listing): folders, globs, names, links."""

from __future__ import annotations

import io
import os
import re

import dask.array as da
import numpy as np
import pytest
import zarr
from PIL import Image

from kmdist.io._errors import ImageReadError
from kmdist.io._open import open_images

from ._helpers import rgb, save

NAME_RE = re.compile(r"^[A-Za-z0-9-][A-Za-z0-9._-]*$")


def test_folder_recursion_names_and_values(tmp_path, rng):
    root = tmp_path / "root"
    (root / "sub" / "dir").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "__MACOSX").mkdir()
    arrays = {name: rgb(rng) for name in ["a", "sub_B", "sub_dir_img", "store"]}
    save(root / "a.png", arrays["a"])
    save(root / "sub" / "B.BMP", arrays["sub_B"])
    save(root / "sub" / "dir" / "img.png", arrays["sub_dir_img"])
    zarr.create_array(root / "store.zarr", data=arrays["store"])
    (root / "notes.txt").write_text("not an image")
    save(root / ".hidden.png", arrays["a"])
    save(root / ".git" / "x.png", arrays["a"])
    (root / "__MACOSX" / "._a.png").write_bytes(b"resource fork")
    refs = open_images(root)
    assert [r.name for r in refs] == ["a", "store", "sub_B", "sub_dir_img"]
    assert refs[2].source == str(root / "sub" / "B.BMP")
    for ref in refs:
        np.testing.assert_array_equal(ref.open().compute(), arrays[ref.name])


def test_names_unique_and_safe(tmp_path, rng):
    a = rgb(rng)
    files = ["a.png", "a.jpg", "A.bmp", "x y(1).png", "__init__.png", "-dash.png", "é.png"]
    for f in files:
        save(tmp_path / f, a)
    (tmp_path / "sub").mkdir()
    save(tmp_path / "sub" / "a.png", a)
    names = [r.name for r in open_images(tmp_path)]
    assert len(names) == len(files) + 1
    assert len({n.lower() for n in names}) == len(names)
    assert all(NAME_RE.match(n) for n in names), names
    assert {"A", "a-2", "a-3", "sub_a", "x_y_1_", "init__", "-dash", "image"} <= set(names)
    # Across inputs too, in order of appearance.
    twice = open_images([tmp_path / "a.png", tmp_path / "a.png"])
    assert [r.name for r in twice] == ["a", "a-2"]


def test_explicit_file_any_extension(tmp_path):
    (tmp_path / "data.xyz").write_text("hello")
    [ref] = open_images(tmp_path / "data.xyz")
    assert ref.name == "data"
    with pytest.raises(ImageReadError, match="not an image"):
        ref.open()


def test_glob(tmp_path, rng):
    for sub, name in [("x", "1.png"), ("y", "2.png"), ("y", "3.txt"), ("y/deep", "4.png")]:
        (tmp_path / "g" / sub).mkdir(parents=True, exist_ok=True)
        if name.endswith(".png"):
            save(tmp_path / "g" / sub / name, rgb(rng))
        else:
            (tmp_path / "g" / sub / name).write_text("x")
    refs = open_images(str(tmp_path / "g" / "*" / "*"))
    assert [r.name for r in refs] == ["x_1", "y_2"]
    refs = open_images(str(tmp_path / "g" / "**" / "*.png"))
    assert [r.name for r in refs] == ["x_1", "y_2", "y_deep_4"]
    with pytest.raises(ImageReadError, match="no file matches"):
        open_images(str(tmp_path / "g" / "*.nothing"))


def test_symlinks_out_of_the_folder(tmp_path, rng):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = rgb(rng)
    save(outside / "secret.png", secret)
    root = tmp_path / "root"
    root.mkdir()
    save(root / "own.png", rgb(rng))
    (root / "link.png").symlink_to(outside / "secret.png")
    (root / "inside.png").symlink_to(root / "own.png")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    refs = {r.name: r for r in open_images(root)}
    assert set(refs) == {"inside", "link", "own"}
    refs["inside"].open()
    with pytest.raises(ImageReadError, match="outside"):
        refs["link"].open()
    followed = {r.name: r for r in open_images(root, follow_symlinks=True)}
    assert set(followed) == {"inside", "link", "linkdir_secret", "own"}
    np.testing.assert_array_equal(followed["link"].open().compute(), secret)


def test_unlistable_folder_is_a_failed_ref(tmp_path, rng, monkeypatch):
    save(tmp_path / "a.png", rgb(rng))
    save(tmp_path / "locked.png", rgb(rng))
    (tmp_path / "locked").mkdir()
    save(tmp_path / "locked" / "x.png", rgb(rng))
    real_scandir = os.scandir

    def scandir(path):  # root may read any folder: fake the refusal
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr("kmdist.io._listing.os.scandir", scandir)
    refs = open_images(tmp_path)
    # Where the folder's path sorts, before locked.png; names unique as ever.
    assert [r.name for r in refs] == ["a", "locked", "locked-2"]
    with pytest.raises(ImageReadError, match="cannot list this folder"):
        refs[1].open()
    refs[2].open()


def test_empty_folder_gives_no_refs(tmp_path):
    assert open_images(tmp_path) == []


@pytest.fixture
def memory_folder(rng):
    """Images in fsspec's in-memory filesystem, under a prefix of its own."""
    import uuid

    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/kmdist-test-{uuid.uuid4().hex[:8]}"
    arrays = {}
    for rel in ["a.png", "sub/B.bmp", ".hidden/x.png", ".h.png", "notes.txt"]:
        arr = rgb(rng, 9, 13)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "BMP" if rel.endswith(".bmp") else "PNG")
        fs.pipe(f"{root}/{rel}", buf.getvalue())
        arrays[rel] = arr
    fs.pipe(f"{root}/store.zarr/zarr.json", b"{}")  # a Zarr store: one ref, not walked
    fs.pipe(f"{root}/store.zarr/c/0", b"chunk")
    yield f"memory://{root}", arrays
    fs.rm(root, recursive=True)


def test_storage_url_prefix_pattern_and_object(memory_folder):
    url, arrays = memory_folder
    refs = open_images(url)
    assert [(r.name, r.source) for r in refs] == [
        ("a", f"{url}/a.png"),
        ("store", f"{url}/store.zarr"),
        ("sub_B", f"{url}/sub/B.bmp"),
    ]
    np.testing.assert_array_equal(refs[0].open().compute(), arrays["a.png"])
    np.testing.assert_array_equal(refs[2].open().compute(), arrays["sub/B.bmp"])
    # A pattern: hidden names skipped, as glob.glob skips them locally.
    assert [r.name for r in open_images(f"{url}/*.png")] == ["a"]
    assert [r.name for r in open_images(f"{url}/**/*.bmp")] == ["sub_B"]
    # One object, whatever its extension.
    [ref] = open_images(f"{url}/notes.txt")
    assert (ref.name, ref.source) == ("notes", f"{url}/notes.txt")
    with pytest.raises(ImageReadError, match="file not found"):
        open_images(f"{url}/missing.png")
    with pytest.raises(ImageReadError, match="no file matches this pattern"):
        open_images(f"{url}/*.tif")


def test_open_small_decodes_small_images_now(tmp_path, rng):
    a = rgb(rng, 10, 12)
    save(tmp_path / "a.png", a)
    [ref] = open_images(tmp_path / "a.png")
    now = ref.open_small(120)
    assert isinstance(now, np.ndarray)
    np.testing.assert_array_equal(now, a)
    later = ref.open_small(119, chunks=5)
    assert isinstance(later, da.Array) and later.chunks[:2] == ((5, 5), (5, 5, 2))
    np.testing.assert_array_equal(later.compute(), a)
    # A ref that failed while listing fails here too.
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    [bad] = open_images(tmp_path / "bad.zip")
    with pytest.raises(ImageReadError, match="cannot read the archive"):
        bad.open_small(10**6)
