"""Zip and tar members read in place (kmdist.io._archive), unsafe members refused."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from kmdist.io import _archive
from kmdist.io._archive import archive_kind, archive_members, read_member, strip_archive_suffix
from kmdist.io._errors import ImageReadError
from kmdist.io._listing import ImageRef
from kmdist.io._open import open_image, open_images

from ._helpers import read, rgb, save


def _members(rng) -> dict[str, tuple[bytes, np.ndarray]]:
    out = {}
    for name, fmt in [("a.png", "PNG"), ("sub/b.bmp", "BMP")]:
        arr = rgb(rng)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, fmt)
        out[name] = (buf.getvalue(), arr)
    arr = rng.integers(0, 65536, (70, 80, 3), dtype=np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, tile=(32, 32))
    out["deep/c.tif"] = (buf.getvalue(), arr)
    out["readme.txt"] = (b"skip me", np.empty(0))
    out["__MACOSX/._a.png"] = (b"fork", np.empty(0))
    return out


def _check_archive_refs(refs: list[ImageRef], archive: Path, members) -> None:
    assert [r.name for r in refs] == ["a", "deep_c", "sub_b"]
    assert [r.source for r in refs] == [
        f"{archive}::{m}" for m in ["a.png", "deep/c.tif", "sub/b.bmp"]
    ]
    for ref, member in zip(refs, ["a.png", "deep/c.tif", "sub/b.bmp"], strict=True):
        img = ref.open(chunks=32)
        assert img.chunks[0][0] == 32
        np.testing.assert_array_equal(img.compute(), members[member][1])


def test_zip_members_read_in_place(tmp_path, rng):
    members = _members(rng)
    archive = tmp_path / "imgs.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, (data, _) in members.items():
            zf.writestr(name, data)
    before = set(os.listdir(tmp_path))
    _check_archive_refs(open_images(archive), archive, members)
    assert set(os.listdir(tmp_path)) == before  # nothing extracted
    np.testing.assert_array_equal(read(f"{archive}::a.png"), members["a.png"][1])


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.xz"])
def test_tar_members_read_in_place(tmp_path, rng, suffix):
    members = _members(rng)
    archive = tmp_path / f"imgs{suffix}"
    with tarfile.open(archive, "w:" + (suffix.split(".")[-1] if suffix != ".tar" else "")) as tf:
        for name, (data, _) in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    _check_archive_refs(open_images(archive), archive, members)


def test_unsafe_zip_members_refused(tmp_path, rng):
    a = rgb(rng)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.png", buf.getvalue())
        zf.writestr("/abs.png", buf.getvalue())
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("good.png", buf.getvalue())
    refs = {r.source.split("::")[1]: r for r in open_images(archive)}
    assert set(refs) == {"../evil.png", "/abs.png", "link.png", "good.png"}
    np.testing.assert_array_equal(refs["good.png"].open().compute(), a)
    with pytest.raises(ImageReadError, match=r"bad\.zip::\.\./evil\.png: .*leaves the archive"):
        refs["../evil.png"].open()
    with pytest.raises(ImageReadError, match="absolute path"):
        refs["/abs.png"].open()
    with pytest.raises(ImageReadError, match="symbolic link"):
        refs["link.png"].open()
    with pytest.raises(ImageReadError, match="leaves the archive"):
        open_image(f"{archive}::../evil.png")


def test_unsafe_tar_members_refused(tmp_path, rng):
    a = rgb(rng)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    data = buf.getvalue()
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name in ["../evil.png", "/abs.png", "good.png"]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, kind in [("link.png", tarfile.SYMTYPE), ("hard.png", tarfile.LNKTYPE)]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "good.png"
            tf.addfile(info)
        info = tarfile.TarInfo("dev.png")
        info.type = tarfile.CHRTYPE
        tf.addfile(info)
    refs = {r.source.split("::")[1]: r for r in open_images(archive)}
    assert len(refs) == 6
    np.testing.assert_array_equal(refs["good.png"].open().compute(), a)
    expected = {
        "../evil.png": "leaves the archive",
        "/abs.png": "absolute path",
        "link.png": "symbolic link",
        "hard.png": "hard link",
        "dev.png": "device file",
    }
    for member, message in expected.items():
        with pytest.raises(ImageReadError, match=message) as err:
            refs[member].open()
        assert err.value.source == f"{archive}::{member}"


def test_zip_bomb_refused_without_reading(tmp_path, monkeypatch):
    archive = tmp_path / "bomb.zip"
    zeros = bytes(1 << 20)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("bomb.png", "w") as fp:
        for _ in range(200):
            fp.write(zeros)
    assert archive.stat().st_size < 1 << 20

    def no_reading(*args, **kwargs):
        raise AssertionError("the bomb was read")

    monkeypatch.setattr(zipfile.ZipExtFile, "read", no_reading)
    [ref] = open_images(archive)
    with pytest.raises(ImageReadError, match="decompression bomb"):
        ref.open()


@pytest.mark.parametrize("mode", ["gz", "xz"])
def test_compressed_tar_bomb_refused_without_reading(tmp_path, rng, monkeypatch, mode):
    # 200 MiB of zeros packs into well under 1 MiB: far beyond 100:1 for the whole archive.
    archive = tmp_path / f"bomb.tar.{mode}"
    with tarfile.open(archive, f"w:{mode}") as tf:
        info = tarfile.TarInfo("bomb.png")
        info.size = 200 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
        png = io.BytesIO()
        Image.fromarray(rgb(rng)).save(png, format="PNG")
        info = tarfile.TarInfo("fine.png")
        info.size = png.tell()
        tf.addfile(info, io.BytesIO(png.getvalue()))
    assert archive.stat().st_size < 1 << 20

    def no_reading(*args, **kwargs):
        raise AssertionError("the bomb was read")

    bomb, fine = open_images(archive)
    assert fine.name == "fine"
    fine.open().compute()  # the archive's other member is read as usual
    monkeypatch.setattr(tarfile.ExFileObject, "read", no_reading)
    with pytest.raises(ImageReadError, match="decompression bomb") as err:
        bomb.open()
    assert err.value.source == f"{archive}::bomb.png"
    assert "from an archive of" in str(err.value)


def test_unreadable_archive_is_a_failed_ref(tmp_path, rng):
    (tmp_path / "broken.zip").write_bytes(b"this is no zip file at all")
    save(tmp_path / "ok.png", rgb(rng))
    refs = open_images([tmp_path / "broken.zip", tmp_path / "ok.png"])
    assert [r.name for r in refs] == ["broken", "ok"]
    with pytest.raises(ImageReadError, match="cannot read the archive"):
        refs[0].open()
    refs[1].open()


@pytest.mark.parametrize(
    ("path", "kind", "stem"),
    [
        ("a.zip", "zip", "a"),
        ("dir.v2/A.ZIP", "zip", "dir.v2/A"),
        ("x.tar", "tar", "x"),
        ("x.tar.gz", "tar", "x"),
        ("x.TGZ", "tar", "x"),
        ("x.tar.bz2", "tar", "x"),
        ("x.tbz2", "tar", "x"),
        ("x.tar.xz", "tar", "x"),
        ("x.txz", "tar", "x"),
        ("x.gz", None, "x.gz"),
        ("x.png", None, "x.png"),
        ("zip", None, "zip"),
    ],
)
def test_archive_kind_and_suffix_by_name(path, kind, stem):
    assert archive_kind(path) == kind
    assert strip_archive_suffix(path) == stem


def _central_entry(data: bytearray, name: bytes) -> int:
    """Offset of the central directory header of zip member `name`."""
    pos = data.index(b"PK\x01\x02")
    while data[pos + 46 : pos + 46 + len(name)] != name:
        pos = data.index(b"PK\x01\x02", pos + 4)
    return pos


def test_archive_members_say_why_each_is_refused(tmp_path):
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/a.png", b"png")
        zf.writestr("ok/", b"")  # a folder entry: not a member to read
        zf.writestr("C:/win.png", b"png")
        zf.writestr("a/../../up.png", b"png")
        zf.writestr("locked.png", b"scrambled")
    # zipfile writes no encrypted members: set the flag in the central directory by hand.
    data = bytearray(archive.read_bytes())
    entry = _central_entry(data, b"locked.png")
    data[entry + 8] |= 0x1
    archive.write_bytes(bytes(data))
    assert archive_members(str(archive)) == {
        "ok/a.png": None,
        "C:/win.png": "an absolute path in the archive; refused",
        "a/../../up.png": "a path that leaves the archive ('..'); refused",
        "locked.png": "encrypted; cannot be read",
    }
    (tmp_path / "no.zip").write_bytes(b"PK but not really")
    with pytest.raises(zipfile.BadZipFile):  # raised: listing turns it into a failed ref
        archive_members(str(tmp_path / "no.zip"))


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_read_member_reads_the_bytes_and_refuses_what_is_too_large(tmp_path, monkeypatch, kind):
    data = bytes(range(256)) * 40  # 10,240 bytes
    archive = tmp_path / f"m.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("d/x.bin", data)
    else:
        with tarfile.open(archive, "w") as tf:
            info = tarfile.TarInfo("d/x.bin")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    source = f"{archive}::d/x.bin"
    assert read_member(str(archive), "d/x.bin", source) == data
    with pytest.raises(ImageReadError, match="no such member in the archive") as err:
        read_member(str(archive), "d/y.bin", f"{archive}::d/y.bin")
    assert err.value.source == f"{archive}::d/y.bin"
    monkeypatch.setattr(_archive, "_MAX_MEMBER_BYTES", 10_000)
    with pytest.raises(ImageReadError) as err:
        read_member(str(archive), "d/x.bin", source)
    assert err.value.problem == "10,240 bytes uncompressed, more than the 10,000 accepted; refused"
