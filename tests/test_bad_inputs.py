"""Every kind of bad input, table-driven, through the CLI and the flow in one batch each.

For each case: the error names the file and the problem; the command exits non-zero;
the flow marks the image failed; the good images of the batch complete; no output group
of a bad image claims to be complete. Handled-but-odd inputs complete as documented.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import subprocess
import zlib

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from PIL import Image
from sklearn.datasets import load_sample_image

from kmdist import list_segmentations, open_segmentation
from kmdist.cli import main

CHINA = np.ascontiguousarray(load_sample_image("china.jpg")[::8, ::8])


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 10))
        + _png_chunk(b"IEND", b"")
    )


def _encoded(ext: str, **kw) -> bytes:
    return iio.imwrite("<bytes>", CHINA, extension=ext, **kw)


def _pil(mode: str, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(CHINA).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def _tiff(data, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, data, **kw)
    return buf.getvalue()


def _nan_float() -> bytes:
    f = np.random.default_rng(0).random((30, 30, 3)).astype(np.float32)
    f[3, 4, 1] = np.nan
    return _tiff(f)


def _gif() -> bytes:
    buf = io.BytesIO()
    frames = [Image.fromarray(CHINA), Image.fromarray(255 - CHINA)]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


# file name -> (bytes, expected outcome: "failed" with a message pattern, or "done")
CASES = {
    "text.png": (lambda: b"hello, not an image", ("failed", "not an image")),
    "truncated.jpg": (lambda: _encoded(".jpg")[:1500], ("failed", "cannot decode.*truncated")),
    "truncated.png": (lambda: _encoded(".png")[:2000], ("failed", "cannot decode.*truncated")),
    "empty.jpg": (lambda: b"", ("failed", "empty file")),
    "zero-width.png": (lambda: _png_header_only(0, 10), ("failed", "zero dimension")),
    "huge-header.png": (
        lambda: _png_header_only(100_000, 100_000),
        ("failed", "max_pixels.*tiled TIFF"),
    ),
    "nan-float.tif": (_nan_float, ("failed", "contains NaN")),
    "one-pixel.png": (lambda: iio.imwrite("<bytes>", CHINA[:1, :1], extension=".png"), ("done", 1)),
    "single-colour.png": (
        lambda: iio.imwrite("<bytes>", np.full((20, 20, 3), 7, np.uint8), extension=".png"),
        ("done", 1),
    ),
    "grey.png": (lambda: _pil("L", "PNG"), ("done", 16)),
    "grey-alpha.png": (lambda: _pil("LA", "PNG"), ("done", 16)),
    "rgba.png": (lambda: _pil("RGBA", "PNG"), ("done", 16)),
    "palette-mode.png": (lambda: _pil("P", "PNG"), ("done", 16)),
    "cmyk.jpg": (lambda: _pil("CMYK", "JPEG"), ("done", 16)),
    "deep-16bit.png": (
        lambda: iio.imwrite("<bytes>", (CHINA[..., 0].astype(np.uint16) * 257), extension=".png"),
        ("done", 16),
    ),
    "multi-page.tif": (lambda: _tiff(np.stack([CHINA, 255 - CHINA])), ("done", 16)),
    "animated.gif": (_gif, ("done", 16)),
}
GOOD = ("good-a.png", "good-b.jpg")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-batch")
    for name, (make, _) in CASES.items():
        (root / name).write_bytes(make())
    iio.imwrite(root / GOOD[0], CHINA)
    iio.imwrite(root / GOOD[1], CHINA[::-1], quality=95)
    return root


@pytest.fixture(scope="module")
def cli_run(batch, tmp_path_factory, local_cluster):
    out = tmp_path_factory.mktemp("cli") / "out.zarr"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(
            [
                "segment",
                str(batch),
                "-k",
                "16",
                "-o",
                str(out),
                "--scheduler",
                local_cluster.scheduler_address,
            ]
        )
    return code, stdout.getvalue(), stderr.getvalue(), out


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def test_cli_exits_one_and_good_images_complete(cli_run):
    code, stdout, _, out = cli_run
    assert code == 1
    complete = {i.name for i in list_segmentations(out) if i.complete}
    assert {_stem(g) for g in GOOD} <= complete
    n_failed = sum(1 for _, (kind, _) in CASES.values() if kind == "failed")
    n_done = len(CASES) - n_failed + len(GOOD)
    assert f"{n_done} done, 0 skipped, {n_failed} failed" in stdout


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_case_through_the_cli(cli_run, batch, name):
    _, stdout, stderr, out = cli_run
    kind, detail = CASES[name][1]
    infos = {i.name: i for i in list_segmentations(out)}
    stem = _stem(name)
    if kind == "failed":
        line = next(x for x in stderr.splitlines() if str(batch / name) in x)
        assert re.search(detail, line), line  # names the file and says what is wrong
        assert stem not in infos or not infos[stem].complete
    else:
        assert infos[stem].complete
        seg = open_segmentation(out, stem)
        assert seg.palette.k == detail
        assert seg.labels.shape == seg.image.shape[:2]
        if detail < 16:  # fewer colours than asked: a warning on the image's report
            report = stdout[stdout.index(f"] {stem} (") :].split("\n[", 1)[0]
            assert f"warning: only {detail} distinct colour(s) in the image" in report


@pytest.mark.slow
def test_each_case_through_the_flow(batch, tmp_path, local_cluster, prefect_harness):
    from flows.segment import segment_archive

    out = tmp_path / "flow.zarr"
    state = segment_archive(
        str(batch), str(out), k=16, dask_address=local_cluster.scheduler_address, return_state=True
    )
    assert state.is_failed()
    complete = {i.name for i in list_segmentations(out) if i.complete}
    for name, (_, (kind, detail)) in CASES.items():
        if kind == "failed":
            assert re.search(re.escape(str(batch / name)) + r" \([^)]*" + detail, state.message), (
                name
            )
            assert _stem(name) not in complete
        else:
            assert _stem(name) in complete
    assert {_stem(g) for g in GOOD} <= complete


@pytest.mark.parametrize(
    ("k", "message"), [("0", r"\[1, 65535\], got 0"), ("-3", "got -3"), ("70000", "got 70000")]
)
def test_bad_k(batch, tmp_path, k, message, capsys):
    assert main(["segment", str(batch / GOOD[0]), "-k", k, "-o", str(tmp_path / "o.zarr")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "o.zarr").exists()


def test_non_integer_k(batch, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(batch / GOOD[0]), "-k", "2.5", "-o", str(tmp_path / "o.zarr")])
    assert exit_info.value.code == 2 and "invalid int value: '2.5'" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["folder", "file"])
def test_output_that_is_not_a_store(batch, tmp_path, local_cluster, target, capsys):
    path = tmp_path / "out.zarr"
    if target == "folder":
        path.mkdir()
        (path / "notes.txt").write_text("mine")
    else:
        path.write_text("mine")
    code = main(
        [
            "segment",
            str(batch / GOOD[0]),
            "-o",
            str(path),
            "--scheduler",
            local_cluster.scheduler_address,
        ]
    )
    assert code == 1
    assert re.search(
        r"out\.zarr: (is a non-empty directory but not a Zarr store|exists and is a file)",
        capsys.readouterr().err,
    )
    assert (
        (path / "notes.txt").read_text() == "mine"
        if target == "folder"
        else path.read_text() == "mine"
    )


def test_output_without_write_permission(batch, tmp_path, local_cluster, capsys):
    parent = tmp_path / "locked"
    parent.mkdir()
    # Root ignores chmod; the immutable attribute stops even root (chattr, e2fsprogs).
    lock, unlock = (["chattr", "+i"], ["chattr", "-i"]) if os.geteuid() == 0 else (None, None)
    if lock:
        subprocess.run([*lock, str(parent)], check=True)
    else:
        parent.chmod(0o500)
    try:
        code = main(
            [
                "segment",
                str(batch / GOOD[0]),
                "-o",
                str(parent / "out.zarr"),
                "--scheduler",
                local_cluster.scheduler_address,
            ]
        )
    finally:
        if unlock:
            subprocess.run([*unlock, str(parent)], check=True)
        else:
            parent.chmod(0o700)
    assert code == 1
    assert "locked/out.zarr" in capsys.readouterr().err
    assert not (parent / "out.zarr").exists()


def test_hostile_archives_in_a_batch(tmp_path, local_cluster, capsys):
    import stat
    import tarfile
    import zipfile

    png = iio.imwrite("<bytes>", CHINA, extension=".png")
    zip_path, tar_path, bomb_path = tmp_path / "a.zip", tmp_path / "b.tar", tmp_path / "bomb.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for name in ("../evil.png", "/abs.png", "x y.png", "x_y.png", "ok.png"):
            zf.writestr(name, png)
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with tarfile.open(tar_path, "w") as tf:
        info = tarfile.TarInfo("ok.png")
        info.size = len(png)
        tf.addfile(info, io.BytesIO(png))
        for name, kind in [("sym.png", tarfile.SYMTYPE), ("dev.png", tarfile.CHRTYPE)]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "ok.png"
            tf.addfile(info)
    with (
        zipfile.ZipFile(bomb_path, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("bomb.png", "w") as fp,
    ):
        for _ in range(100):
            fp.write(bytes(1 << 20))
    # A tar compresses as one stream: its member is set against the whole archive's size.
    tgz_bomb = tmp_path / "tbomb.tar.gz"
    with tarfile.open(tgz_bomb, "w:gz") as tf:
        info = tarfile.TarInfo("bomb.png")
        info.size = 100 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    assert tgz_bomb.stat().st_size < 1 << 20
    out = tmp_path / "out" / "out.zarr"
    code = main(
        [
            "segment",
            str(zip_path),
            str(tar_path),
            str(bomb_path),
            str(tgz_bomb),
            "-k",
            "4",
            "-o",
            str(out),
            "--scheduler",
            local_cluster.scheduler_address,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    refused = {
        f"{zip_path}::../evil.png": "leaves the archive",
        f"{zip_path}::/abs.png": "absolute path",
        f"{zip_path}::link.png": "symbolic link",
        f"{tar_path}::sym.png": "symbolic link",
        f"{tar_path}::dev.png": "device file",
        f"{bomb_path}::bomb.png": "decompression bomb",
        f"{tgz_bomb}::bomb.png": "decompression bomb",
    }
    for source, problem in refused.items():
        line = next(x for x in err.splitlines() if source in x)
        assert problem in line, line
    complete = {i.name for i in list_segmentations(out) if i.complete}
    # Names that collide after sanitising ("x y" and "x_y") both get a group.
    assert {"ok", "x_y", "x_y-2", "ok-2"} <= complete
    assert not any(p.name == "evil.png" for p in tmp_path.rglob("*"))  # nothing escaped
