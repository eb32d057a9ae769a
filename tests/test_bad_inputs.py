"""README's table "What kmdist does with each kind of input", row by row, end to end.

`ROWS` is that table: its two columns are README's, word for word
(`test_readme_input_table_is_this_modules_table` fails when they differ), and each row
lists the cases that show it. Every case that is an input (a file, a folder, an
archive member, a storage URL, an output group left by an earlier run) goes into ONE
mixed batch with good images, run once through `kmdist segment` and once through the
`segment_archive` flow, and each run is held to the documented outcome: for a failure,
the message naming the file; for a completion, the dtype stored, the channels used
(alpha dropped), the frame or page used, the method recorded in the store. Rows that
refuse a whole run before any work (k, the output, an unreachable URL) run alone.

The batch runs on a LocalCluster of its own, started after the test S3 server, so that
its workers read the server's address from the environment as a user's would.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image
from sklearn.datasets import load_sample_image

from kmdist import Palette, list_segmentations, open_segmentation, write_segmentation
from kmdist.cli import main
from kmdist.store._claims import FOREIGN_LEASE, process_start

ROOT = Path(__file__).resolve().parents[1]
K = 16
CHINA = np.ascontiguousarray(load_sample_image("china.jpg")[::8, ::8])  # 54 x 80
INVERSE = 255 - CHINA
RNG = np.random.default_rng(20261125)
ALPHA = RNG.integers(0, 256, CHINA.shape[:2], dtype=np.uint8)
ALPHA[::3] = 0  # fully transparent rows: clustered by their stored colour all the same
OTHER_HOST = "other-node-7"


# --- The table ----------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    """The image completes: what the store must then record and hold.

    `like` gives the (y, x, c) pixels the recoloured image must be close to (the frame,
    page, level or conversion used); `unlike` pixels it must be far from (another frame,
    the unconverted samples). `same_palette_as` names a case whose palette must be
    identical (the same pixels once alpha is dropped, or read from elsewhere).
    """

    name: str
    k: int = K
    dtype: str = "uint8"
    channels: int = 3
    method: str = "exact"
    like: Callable[[Path], np.ndarray] | None = None
    unlike: Callable[[Path], np.ndarray] | None = None
    same_palette_as: str | None = None
    value_range: tuple[float, float] | None = None  # the palette's values lie inside it
    writer_host: str | None = None  # the group now claimed by this host (taken over)


@dataclass(frozen=True)
class Failed:
    """The image fails: its error, after ``SOURCE: ``, matches `pattern`."""

    pattern: str


@dataclass(frozen=True)
class Kept:
    """The output of an earlier run is complete: the CLI's --resume and the flow skip it."""

    name: str


@dataclass(frozen=True)
class Unlisted:
    """Not an image of the batch: no output names this source."""


@dataclass(frozen=True)
class Case:
    """One input of the mixed batch: its source (``{root}``, ``{bucket}``, ... filled in)."""

    source: str
    expect: Done | Failed | Kept | Unlisted


@dataclass(frozen=True)
class Row:
    """A row of README's table: its two cells verbatim, and the cases that show it.

    `run_level` rows refuse a whole run before any work, so they cannot share a batch;
    `test_run_level_rows` runs each of them alone through the CLI and the flow.
    """

    input: str
    handling: str
    cases: tuple[Case, ...] = ()
    run_level: str | None = None


def _pixels(name: str) -> Callable[[Path], np.ndarray]:
    return lambda root: np.asarray(Image.open(root / name).convert("RGB"))


def _raw(name: str) -> Callable[[Path], np.ndarray]:
    return lambda root: tifffile.imread(root / name)


def _const(a: np.ndarray) -> Callable[[Path], np.ndarray]:
    return lambda root: a


GREY = np.asarray(Image.fromarray(CHINA).convert("L"))[..., None]

ROWS: tuple[Row, ...] = (
    Row(
        "PNG, JPEG, BMP, GIF, WebP",
        "decoded whole on a worker (up to `--max-pixels`); GIF and other animations: first frame",
        (
            Case("{root}/good-a.png", Done("good-a", like=_const(CHINA))),
            Case("{root}/good-b.jpg", Done("good-b", like=_const(CHINA[::-1]))),
            Case("{root}/image.bmp", Done("image", same_palette_as="good-a")),
            Case("{root}/lossless.webp", Done("lossless", same_palette_as="good-a")),
            Case(
                "{root}/animated.gif",
                Done("animated", like=_const(CHINA), unlike=_const(INVERSE)),
            ),
            Case(
                "{root}/animated-webp.webp",
                Done("animated-webp", same_palette_as="good-a", unlike=_const(INVERSE)),
            ),
            Case(
                "{root}/animated-png.png",
                Done("animated-png", same_palette_as="good-a", unlike=_const(INVERSE)),
            ),
        ),
    ),
    Row(
        "TIFF (tiled or striped, BigTIFF, 8/16-bit, float)",
        "read lazily tile by tile; multi-page: the first page",
        (
            Case("{root}/tiled.tif", Done("tiled", same_palette_as="good-a")),
            Case("{root}/striped.tif", Done("striped", same_palette_as="good-a")),
            Case("{root}/bigtiff.tif", Done("bigtiff", same_palette_as="good-a")),
            Case(
                "{root}/deep16.tif",
                Done(
                    "deep16",
                    dtype="uint16",
                    method="minibatch",
                    like=_const(CHINA.astype(np.uint16) * 257),
                    value_range=(0, 65535),
                ),
            ),
            Case(
                "{root}/float.tif",
                Done(
                    "float",
                    dtype="float32",
                    method="minibatch",
                    like=_const(CHINA / np.float32(255)),
                    value_range=(0.0, 1.0),
                ),
            ),
            Case(
                "{root}/multi-page.tif",
                Done("multi-page", same_palette_as="good-a", unlike=_const(INVERSE)),
            ),
        ),
    ),
    Row(
        "Zarr arrays, OME-Zarr groups",
        "read lazily, level 0",
        (
            Case("{root}/array.zarr", Done("array", same_palette_as="good-a")),
            Case(
                "{root}/ome.zarr",
                Done("ome", same_palette_as="good-a", unlike=_const(INVERSE)),
            ),
        ),
    ),
    Row(
        "grayscale",
        "one channel; palette by mini-batch k-means (the exact method needs 8-bit RGB)",
        (Case("{root}/grey.png", Done("grey", channels=1, method="minibatch", like=_const(GREY))),),
    ),
    Row(
        "RGBA, grey + alpha",
        "**alpha is dropped**: transparent pixels are clustered by their stored colour",
        (
            Case("{root}/rgba.png", Done("rgba", same_palette_as="good-a")),
            Case("{root}/rgba.tif", Done("rgba-2", same_palette_as="good-a")),
            Case(
                "{root}/grey-alpha.png",
                Done("grey-alpha", channels=1, method="minibatch", same_palette_as="grey"),
            ),
        ),
    ),
    Row(
        "palette (P) mode, CMYK (JPEG or TIFF), YCbCr",
        "converted to RGB (CMYK as Pillow does: R = (max - K)(1 - C / max))",
        (
            Case("{root}/palette-mode.png", Done("palette-mode", like=_pixels("palette-mode.png"))),
            Case("{root}/cmyk.jpg", Done("cmyk", like=_pixels("cmyk.jpg"))),
            Case("{root}/cmyk.tif", Done("cmyk-2", like=_pixels("cmyk.tif"))),
            Case(
                "{root}/ycbcr.tif",
                Done("ycbcr", like=_pixels("ycbcr.tif"), unlike=_raw("ycbcr.tif")),
            ),
        ),
    ),
    Row(
        "16-bit and float",
        "mini-batch palette in the image's own value range",
        (
            Case(
                "{root}/deep-16bit.png",
                Done(
                    "deep-16bit",
                    dtype="uint16",
                    channels=1,
                    method="minibatch",
                    like=_const(CHINA[..., :1].astype(np.uint16) * 257),
                    value_range=(0, 65535),
                ),
            ),
            Case(
                "{root}/rgb-16bit.png",
                Done(
                    "rgb-16bit",
                    dtype="uint16",
                    method="minibatch",
                    like=_const(CHINA.astype(np.uint16) * 257),
                    value_range=(0, 65535),
                ),
            ),
            Case(
                "{root}/signed-float.tif",
                Done(
                    "signed-float",
                    dtype="float64",
                    method="minibatch",
                    like=_const(CHINA / 51.0 - 2.0),
                    value_range=(-2.0, 3.0),
                ),
            ),
        ),
    ),
    Row(
        "float with NaN or infinity",
        "that image fails: `FILE: Input image contains NaN.` or `FILE: Input image "
        "contains infinity ...` (replace or mask them first)",
        (
            Case("{root}/nan-float.tif", Failed(r"Input image contains NaN\.$")),
            Case(
                "{root}/inf-float.tif",
                Failed(r"Input image contains infinity or a value too large for"),
            ),
        ),
    ),
    Row(
        "1x1 or single-colour images",
        "a palette of the colours there are, and a note saying so (the image's line, "
        "the flows' log)",
        (
            Case("{root}/one-pixel.png", Done("one-pixel", k=1)),
            Case("{root}/single-colour.png", Done("single-colour", k=1)),
        ),
    ),
    Row(
        "folders (and URL prefixes: `s3://bucket/dir/`)",
        "searched recursively, hidden files skipped, symlinks leaving the folder not "
        "followed (`--follow-symlinks`)",
        (
            Case("{root}/sub/dir/nested.png", Done("sub_dir_nested", same_palette_as="good-a")),
            Case("{root}/.hidden.png", Unlisted()),
            Case("{root}/.hidden-dir/inside.png", Unlisted()),
            Case("{root}/link-in.png", Done("link-in", same_palette_as="good-a")),
            Case(
                "{root}/link-out.png",
                Failed(r"a symbolic link to .*outside\.png, outside .*; not followed"),
            ),
            Case("s3://{bucket}/tree/sub/deep.png", Done("sub_deep", same_palette_as="good-a")),
            Case("s3://{bucket}/tree/.hidden.png", Unlisted()),
        ),
    ),
    Row(
        "zip / tar",
        "read member by member without extracting; absolute or `..` names, links, devices "
        "and decompression bombs (zip members, or tar members far larger than their "
        "compressed archive) refused",
        (
            Case("{zip}::ok.png", Done("ok", same_palette_as="good-a")),
            Case("{zip}::x y.png", Done("x_y", same_palette_as="good-a")),
            Case("{zip}::x_y.png", Done("x_y-2", same_palette_as="good-a")),
            Case("{tar}::ok.png", Done("ok-2", same_palette_as="good-a")),
            Case("{zip}::../evil.png", Failed("leaves the archive")),
            Case("{zip}::/abs.png", Failed("absolute path")),
            Case("{zip}::link.png", Failed("symbolic link")),
            Case("{tar}::sym.png", Failed("symbolic link")),
            Case("{tar}::dev.png", Failed("device file")),
            Case("{bomb}::bomb.png", Failed("decompression bomb")),
            Case("{tbomb}::bomb.png", Failed("decompression bomb")),
        ),
    ),
    Row(
        "storage URLs (`s3://bucket/key`, prefixes, patterns)",
        "read through fsspec as local paths are; no credentials, no such bucket or "
        "object: the run is refused before any work, naming the URL (as for a missing "
        "local path), or the store is refused",
        (
            Case("s3://{bucket}/one/url-image.png", Done("url-image", same_palette_as="good-a")),
            Case("s3://{bucket}/pattern/p1.png", Done("p1", same_palette_as="good-a")),
        ),
        run_level="url",
    ),
    Row(
        "not an image, empty, truncated, zero-sized",
        "that image fails with `FILE: problem`; the others finish",
        (
            Case("{root}/text.png", Failed(r"not an image \(unknown or unsupported format\)")),
            Case("{root}/empty.jpg", Failed("empty file$")),
            Case("{root}/truncated.jpg", Failed("cannot decode.*truncated")),
            Case("{root}/truncated.png", Failed("cannot decode.*truncated")),
            Case("{root}/zero-width.png", Failed(r"the image has a zero dimension \(10 x 0")),
        ),
    ),
    Row(
        "fewer distinct colours than k",
        "a warning, and a smaller palette",
        (Case("{root}/four-colours.png", Done("four-colours", k=4)),),
    ),
    Row(
        "k of 0, negative, not an integer, above 65,535",
        "refused before any work (exit code 2)",
        run_level="k",
    ),
    Row(
        "output path that is a file, a non-Zarr folder, or not writable",
        "refused with the path and the reason; nothing is written",
        run_level="output",
    ),
    Row(
        "an output that is complete",
        "refused unless `--overwrite`; skipped with `--resume`",
        (Case("{root}/kept.png", Kept("kept")),),
        run_level="complete",
    ),
    Row(
        "an output being written by another run",
        "refused with that run's process id; a run on another host (a pod, a container "
        "on a shared volume) holds it until 15 minutes after its last write, then a new "
        "run takes over",
        (
            Case("{root}/held-here.png", Failed(r"being written by another run \(process {pid}\)")),
            Case(
                "{root}/held-remote.png",
                Failed(rf"host '{OTHER_HOST}', which wrote to it \d+ s ago; a run that stopped"),
            ),
            Case(
                "{root}/lapsed-remote.png",
                Done("lapsed-remote", same_palette_as="good-a", writer_host=socket.gethostname()),
            ),
        ),
    ),
    Row(
        "a run killed mid-write",
        "nothing it left is marked complete; `--resume` redoes exactly those images",
        (Case("{root}/killed.png", Done("killed", same_palette_as="good-a")),),
    ),
    Row(
        "PNG/JPEG headers claiming more than `--max-pixels`",
        "refused before decoding, suggesting a tiled TIFF",
        (
            Case(
                "{root}/huge-header.png",
                Failed(r"100000 x 100000 pixels is more than max_pixels=.*a tiled TIFF"),
            ),
            Case(
                "{root}/huge-header.jpg",
                Failed(r"60000 x 60000 pixels is more than max_pixels=.*a tiled TIFF"),
            ),
        ),
    ),
)

CASES = [case for row in ROWS for case in row.cases]


# --- README -------------------------------------------------------------------------


def readme_rows() -> list[tuple[str, str]]:
    """The (input, handling) cells of README's input table, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### What kmdist does with each kind of input", 1)[1]
    section = section.split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.fullmatch(r"\| (.+?) \| (.+) \|", line.strip())
        if m and m.group(1) != "input" and not set(m.group(1)) <= set("-|"):
            rows.append((m.group(1), m.group(2)))
    return rows


def test_readme_input_table_is_this_modules_table():
    table = "\n".join(
        ["| input | handling |", "|---|---|", *(f"| {r.input} | {r.handling} |" for r in ROWS)]
    )
    assert readme_rows() == [(r.input, r.handling) for r in ROWS], (
        "README's input table and ROWS differ; the table ROWS gives:\n" + table
    )


def test_every_row_is_checked_end_to_end():
    # An input case goes through the batch; a run-level row through its own runs.
    unchecked = [r.input for r in ROWS if not r.cases and r.run_level is None]
    assert not unchecked, unchecked
    assert {r.run_level for r in ROWS} - {None} == set(RUN_LEVEL_CHECKS)


# --- Building the batch -------------------------------------------------------------


def _encoded(a: np.ndarray, ext: str, **kw: Any) -> bytes:
    return bytes(iio.imwrite("<bytes>", a, extension=ext, **kw))


def _pil(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _tiff(a: np.ndarray, **kw: Any) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, a, **kw)
    return buf.getvalue()


def _animation(fmt: str, **kw: Any) -> bytes:
    first, second = Image.fromarray(CHINA), Image.fromarray(INVERSE)
    return _pil(first, fmt, save_all=True, append_images=[second], **kw)


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


def _jpeg_header_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) claims `width` x `height` pixels."""
    data = bytearray(_encoded(CHINA, ".jpg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _png16_rgb(a: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (colour type 2), written by hand: Pillow cannot write one."""
    rows = np.concatenate(
        [
            np.zeros((a.shape[0], 1), np.uint8),
            a.astype(">u2").view(np.uint8).reshape(a.shape[0], -1),
        ],
        axis=1,
    )
    ihdr = struct.pack(">IIBBBBB", a.shape[1], a.shape[0], 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(rows.tobytes()))
        + _png_chunk(b"IEND", b"")
    )


def _float_with(value: float) -> bytes:
    f = (CHINA / np.float32(255)).astype(np.float32)
    f[3, 4, 1] = value
    return _tiff(f, photometric="rgb")


def _rgba() -> np.ndarray:
    return np.dstack([CHINA, ALPHA])


FILES: dict[str, Callable[[], bytes]] = {
    "good-a.png": lambda: _encoded(CHINA, ".png"),
    "good-b.jpg": lambda: _encoded(CHINA[::-1], ".jpg", quality=95),
    "image.bmp": lambda: _pil(Image.fromarray(CHINA), "BMP"),
    "lossless.webp": lambda: _pil(Image.fromarray(CHINA), "WEBP", lossless=True),
    "animated.gif": lambda: _animation("GIF"),
    "animated-webp.webp": lambda: _animation("WEBP", lossless=True),
    "animated-png.png": lambda: _animation("PNG"),
    "tiled.tif": lambda: _tiff(CHINA, tile=(16, 16)),
    "striped.tif": lambda: _tiff(CHINA, rowsperstrip=7),
    "bigtiff.tif": lambda: _tiff(CHINA, bigtiff=True),
    "deep16.tif": lambda: _tiff(CHINA.astype(np.uint16) * 257, tile=(16, 16)),
    "float.tif": lambda: _tiff((CHINA / np.float32(255)).astype(np.float32), photometric="rgb"),
    "multi-page.tif": lambda: _tiff(np.stack([CHINA, INVERSE])),
    "grey.png": lambda: _pil(Image.fromarray(CHINA).convert("L"), "PNG"),
    "rgba.png": lambda: _pil(Image.fromarray(_rgba(), "RGBA"), "PNG"),
    "rgba.tif": lambda: _tiff(_rgba(), photometric="rgb", extrasamples=["unassalpha"]),
    "grey-alpha.png": lambda: _pil(Image.fromarray(np.dstack([GREY[..., 0], ALPHA]), "LA"), "PNG"),
    "palette-mode.png": lambda: _pil(
        Image.fromarray(CHINA).convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG"
    ),
    "cmyk.jpg": lambda: _pil(Image.fromarray(CHINA).convert("CMYK"), "JPEG"),
    "cmyk.tif": lambda: _pil(Image.fromarray(CHINA).convert("CMYK"), "TIFF"),
    "ycbcr.tif": lambda: _pil(Image.fromarray(CHINA).convert("YCbCr"), "TIFF"),
    "deep-16bit.png": lambda: _encoded(CHINA[..., 0].astype(np.uint16) * 257, ".png"),
    "rgb-16bit.png": lambda: _png16_rgb(CHINA.astype(np.uint16) * 257),
    "signed-float.tif": lambda: _tiff(CHINA / 51.0 - 2.0, photometric="rgb"),
    "nan-float.tif": lambda: _float_with(np.nan),
    "inf-float.tif": lambda: _float_with(np.inf),
    "one-pixel.png": lambda: _encoded(CHINA[:1, :1], ".png"),
    "single-colour.png": lambda: _encoded(np.full((20, 20, 3), 7, np.uint8), ".png"),
    "four-colours.png": lambda: _encoded(
        np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)[
            np.arange(30 * 40).reshape(30, 40) % 4
        ],
        ".png",
    ),
    "sub/dir/nested.png": lambda: _encoded(CHINA, ".png"),
    ".hidden.png": lambda: _encoded(CHINA, ".png"),
    ".hidden-dir/inside.png": lambda: _encoded(CHINA, ".png"),
    "text.png": lambda: b"hello, not an image",
    "empty.jpg": lambda: b"",
    "truncated.jpg": lambda: _encoded(CHINA, ".jpg")[:1500],
    "truncated.png": lambda: _encoded(CHINA, ".png")[:2000],
    "zero-width.png": lambda: _png_header_only(0, 10),
    "huge-header.png": lambda: _png_header_only(100_000, 100_000),
    "huge-header.jpg": lambda: _jpeg_header_claiming(60_000, 60_000),
    "kept.png": lambda: _encoded(CHINA, ".png"),
    "held-here.png": lambda: _encoded(CHINA, ".png"),
    "held-remote.png": lambda: _encoded(CHINA, ".png"),
    "lapsed-remote.png": lambda: _encoded(CHINA, ".png"),
    "killed.png": lambda: _encoded(CHINA, ".png"),
}


def _zarr_inputs(root: Path) -> None:
    arr = zarr.create_array(
        str(root / "array.zarr"), shape=CHINA.shape, chunks=(16, 16, 3), dtype="u1"
    )
    arr[:] = CHINA
    # An OME-Zarr image, axes (c, y, x), whose level 1 is another picture: level 0 is read.
    group = zarr.open_group(str(root / "ome.zarr"), mode="w")
    levels = [CHINA.transpose(2, 0, 1), INVERSE[::2, ::2].transpose(2, 0, 1)]
    for i, level in enumerate(levels):
        group.create_array(str(i), data=np.ascontiguousarray(level), chunks=(3, 16, 16))
    axes = [{"name": "c", "type": "channel"}] + [{"name": n, "type": "space"} for n in ("y", "x")]
    datasets = [
        {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [1, 2**i, 2**i]}]}
        for i in range(2)
    ]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}


def _archives(where: Path) -> dict[str, Path]:
    png = _encoded(CHINA, ".png")
    paths = {k: where / n for k, n in [("zip", "a.zip"), ("tar", "b.tar"), ("bomb", "bomb.zip")]}
    with zipfile.ZipFile(paths["zip"], "w") as zf:
        for name in ("../evil.png", "/abs.png", "x y.png", "x_y.png", "ok.png"):
            zf.writestr(name, png)
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with tarfile.open(paths["tar"], "w") as tf:
        info = tarfile.TarInfo("ok.png")
        info.size = len(png)
        tf.addfile(info, io.BytesIO(png))
        for name, kind in [("sym.png", tarfile.SYMTYPE), ("dev.png", tarfile.CHRTYPE)]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "ok.png"
            tf.addfile(info)
    with (
        zipfile.ZipFile(paths["bomb"], "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("bomb.png", "w") as fp,
    ):
        for _ in range(100):
            fp.write(bytes(1 << 20))
    # A tar compresses as one stream: its member is set against the whole archive's size.
    paths["tbomb"] = where / "tbomb.tar.gz"
    with tarfile.open(paths["tbomb"], "w:gz") as tf:
        info = tarfile.TarInfo("bomb.png")
        info.size = 100 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    assert paths["tbomb"].stat().st_size < 1 << 20
    return paths


# A writer killed mid-write: a real process, SIGKILLed once chunks of its group are on disk.
KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import dask, dask.array as da, numpy as np
    from kmdist import Palette, write_segmentation

    def slow(block):
        time.sleep(0.2)
        return block

    labels = da.from_array(np.arange(200 * 300).reshape(200, 300) % 3, chunks=50)
    meta = np.empty((0, 0), np.uint8)  # given: dask need not call slow to learn it
    labels = labels.astype(np.uint8).map_blocks(slow, dtype=np.uint8, meta=meta)
    palette = Palette(np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]]), np.array([3, 2, 1]), 1.0)
    with dask.config.set(scheduler="threads", num_workers=1):
        write_segmentation(sys.argv[1], "killed", labels, palette, source="killed.png")
    """
)


def _killed_mid_write(store: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(store)])
    chunks = store / "killed" / "labels" / "segmentation" / "0" / "c"
    try:
        deadline = time.monotonic() + 120
        while not (chunks.exists() and any(chunks.rglob("*"))):
            assert proc.poll() is None, "the writer ended before it could be killed"
            assert time.monotonic() < deadline, "the writer wrote no chunk in 120 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _claim(store: Path, name: str, writer: dict[str, Any]) -> None:
    """Mark group `name` as being written by `writer`, as a write in progress leaves it."""
    group = zarr.open_group(str(store / name / "labels" / "segmentation"), mode="r+")
    group.attrs["kmdist"] = {
        **group.attrs["kmdist"],
        "complete": False,
        "claimed": True,
        "writer": writer,
    }


@dataclass
class Batch:
    """The mixed batch: where its inputs are, and an output store prepared as earlier runs
    left it (a complete image, a killed write, claims of live and lapsed writers)."""

    root: Path
    archives: dict[str, Path]
    bucket: str
    template: Path
    live_pid: int
    kept_palette: Palette
    inputs: list[str] = field(default_factory=list)

    def source(self, case: Case) -> str:
        return case.source.format(root=self.root, bucket=self.bucket, **self.archives)

    def output(self, where: Path) -> Path:
        out = where / "out.zarr"
        shutil.copytree(self.template, out)  # copy2: the lapsed claim stays old
        return out


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str) -> Iterator[Any]:
    """A two-worker LocalCluster whose workers see the test S3 server (started first)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as c:
        yield c


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Batch]:
    import fsspec

    root = tmp_path_factory.mktemp("inputs")
    for rel, make in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(make())
    _zarr_inputs(root)
    outside = tmp_path_factory.mktemp("outside")
    (outside / "outside.png").write_bytes(_encoded(CHINA, ".png"))
    (root / "link-out.png").symlink_to(outside / "outside.png")
    (root / "link-in.png").symlink_to(root / "good-a.png")
    archives = _archives(tmp_path_factory.mktemp("archives"))

    bucket = f"kmdist-inputs-{os.getpid()}"
    fs = fsspec.filesystem("s3")
    fs.mkdir(bucket)
    png = _encoded(CHINA, ".png")
    for key in ("one/url-image.png", "tree/sub/deep.png", "tree/.hidden.png", "pattern/p1.png"):
        fs.pipe(f"{bucket}/{key}", png)

    template = tmp_path_factory.mktemp("template") / "out.zarr"
    _killed_mid_write(template)
    labels = da.from_array(np.zeros(CHINA.shape[:2], np.uint8))
    kept = Palette(np.array([[1.0, 2.0, 3.0]]), np.array([CHINA.shape[0] * CHINA.shape[1]]), 0.0)
    for name in ("kept", "held-here", "held-remote", "lapsed-remote"):
        write_segmentation(template, name, labels, kept, source="an earlier run")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    here = {"host": socket.gethostname(), "pid": live.pid, "started": process_start(live.pid)}
    _claim(template, "held-here", {**here, "run": "another-run"})
    remote = {"host": OTHER_HOST, "pid": 4242, "started": "99", "run": "another-run"}
    _claim(template, "held-remote", remote)
    _claim(template, "lapsed-remote", remote)
    then = time.time() - FOREIGN_LEASE - 60  # untouched for longer than the lease
    for path in [template / "lapsed-remote", *(template / "lapsed-remote").rglob("*")]:
        os.utime(path, (then, then), follow_symlinks=False)

    b = Batch(root, archives, bucket, template, live.pid, kept)
    b.inputs = [
        str(root),
        *(str(p) for p in archives.values()),
        f"s3://{bucket}/one/url-image.png",
        f"s3://{bucket}/tree/",
        f"s3://{bucket}/pattern/*.png",
    ]
    try:
        yield b
    finally:
        live.kill()
        live.wait()


# --- Running it -----------------------------------------------------------------------


@dataclass
class Run:
    """One run of the batch: each source's error (None if not failed), the output, and
    the CLI's report of each image (empty for the flow)."""

    out: Path
    errors: dict[str, str]
    reports: dict[str, str]
    code: int | None = None
    summary: str = ""
    state: Any = None
    _groups: dict[str, Any] = field(default_factory=dict)

    def groups(self) -> dict[str, Any]:
        """The output's groups by name, listed once."""
        if not self._groups:
            self._groups.update((i.name, i) for i in list_segmentations(self.out))
        return self._groups


def _cli_reports(stdout: str, sources: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split the CLI's output into each source's report (the image line and its
    warning) and each failed source's error."""
    blocks = re.split(r"\n(?=\[\d+/\d+\] )", stdout)
    reports, errors = {}, {}
    for text in blocks:
        for s in sources:
            m = re.match(rf"\[\d+/\d+\] \S+ \({re.escape(s)}\): ", text)
            if m:
                reports[s] = text
                failed = re.match(r"FAILED: (.*)", text[m.end() :])
                if failed:
                    errors[s] = failed.group(1)
    return reports, errors


def _flow_errors(message: str, sources: list[str]) -> dict[str, str]:
    """Each failed source's error from the flow's final message: ``SOURCE (ERROR), ...``."""
    starts = sorted((i, s) for s in sources if (i := message.find(f"{s} (")) >= 0)
    errors = {}
    for (i, s), (j, _) in zip(starts, [*starts[1:], (len(message) + 2, "")], strict=True):
        errors[s] = message[i + len(s) + 2 : j - 2].removesuffix(")")
    return errors


@pytest.fixture(scope="module")
def cli_run(batch: Batch, cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = batch.output(tmp_path_factory.mktemp("cli"))
    stdout, stderr = io.StringIO(), io.StringIO()
    args = ["segment", *batch.inputs, "-k", str(K), "-o", str(out), "--resume"]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([*args, "--scheduler", cluster.scheduler_address])
    sources = [batch.source(c) for c in CASES]
    reports, errors = _cli_reports(stdout.getvalue(), sources)
    summary = stdout.getvalue().strip().splitlines()[-1]
    return Run(out, errors, reports, code=code, summary=summary)


@pytest.fixture(scope="module")
def flow_run(
    batch: Batch, cluster: Any, tmp_path_factory: pytest.TempPathFactory, prefect_harness: None
) -> Run:
    from flows.segment import segment_archive

    out = batch.output(tmp_path_factory.mktemp("flow"))
    state = segment_archive(
        batch.inputs, str(out), k=K, dask_address=cluster.scheduler_address, return_state=True
    )
    errors = _flow_errors(state.message or "", [batch.source(c) for c in CASES])
    return Run(out, errors, {}, summary=state.message or "", state=state)


# --- Checking each case -----------------------------------------------------------------


def _error_bound(expect: Done) -> float:
    """Mean error allowed between a recoloured image and its pixels: 5% of the range."""
    lo, hi = expect.value_range or (0, 255)
    return 0.05 * (hi - lo)


def check_case(run: Run, batch: Batch, case: Case, through: str) -> None:
    # Read back on this thread: a few tiny arrays, not worth the cluster's round trips.
    with dask.config.set(scheduler="sync"):
        _check_case(run, batch, case, through)


def _check_case(run: Run, batch: Batch, case: Case, through: str) -> None:
    source = batch.source(case)
    expect = case.expect
    groups = run.groups()
    by_source = {i.source: i for i in groups.values() if i.complete}
    if isinstance(expect, Failed):
        assert source in run.errors, f"{source}: not reported failed by the {through}"
        error = run.errors[source]
        problem = error.removeprefix(f"{source}: ")
        assert problem != error, f"the error does not start with the file: {error}"
        assert re.search(expect.pattern.format(pid=batch.live_pid), problem), error
        assert source not in by_source
        return
    assert source not in run.errors, run.errors.get(source)
    if isinstance(expect, Unlisted):
        assert not any(source in i.source for i in groups.values() if i.source)
        return
    if isinstance(expect, Kept):
        seg = open_segmentation(run.out, expect.name)
        assert seg.palette == batch.kept_palette and seg.attrs["source"] == "an earlier run"
        if run.reports:
            assert run.reports[source].endswith("already complete, skipped")
        return
    assert groups[expect.name].complete, f"{expect.name} is not complete"
    seg = open_segmentation(run.out, expect.name)
    a = seg.attrs
    assert a["source"] == source
    assert (a["k"], a["n_clusters"]) == (expect.k, K)
    assert a["method"] == expect.method and a["dtype"] == expect.dtype
    assert str(seg.image.dtype) == expect.dtype
    assert seg.palette.colors.shape == (expect.k, expect.channels)
    assert seg.image.shape[2] == expect.channels
    image = seg.image.compute().astype(np.float64)
    if expect.like is not None:
        like = expect.like(batch.root).reshape(image.shape)
        assert np.abs(image - like).mean() <= _error_bound(expect)
    if expect.unlike is not None:
        unlike = expect.unlike(batch.root).reshape(image.shape)
        assert np.abs(image - unlike).mean() > 4 * _error_bound(expect)
    if expect.same_palette_as is not None:
        other = open_segmentation(run.out, expect.same_palette_as)
        np.testing.assert_array_equal(seg.palette.colors, other.palette.colors)
        np.testing.assert_array_equal(seg.labels.compute(), other.labels.compute())
    if expect.value_range is not None:
        lo, hi = expect.value_range
        assert lo <= seg.palette.colors.min() and seg.palette.colors.max() <= hi
        assert seg.palette.colors.max() > 255 or hi <= 255  # not scaled down to 8 bits
    if expect.writer_host is not None:
        assert a["writer"]["host"] == expect.writer_host
    if expect.k < K and run.reports:
        assert f"warning: only {expect.k} distinct colour(s) in the image" in run.reports[source]


def _case_id(case: Case) -> str:
    return re.sub(r"[^\w.-]+", "-", re.sub(r"[{}]", "", case.source).replace("root/", ""))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_case_through_the_cli(cli_run: Run, batch: Batch, case: Case):
    check_case(cli_run, batch, case, "CLI")


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_case_through_the_flow(flow_run: Run, batch: Batch, case: Case):
    check_case(flow_run, batch, case, "flow")


def _counts() -> tuple[int, int, int]:
    done = sum(isinstance(c.expect, Done) for c in CASES)
    kept = sum(isinstance(c.expect, Kept) for c in CASES)
    failed = sum(isinstance(c.expect, Failed) for c in CASES)
    return done, kept, failed


@pytest.mark.slow
def test_cli_batch_exits_one_and_counts_every_image(cli_run: Run):
    done, kept, failed = _counts()
    assert cli_run.code == 1
    assert re.fullmatch(
        rf"{done} done, {kept} skipped, {failed} failed in [\d.]+ s", cli_run.summary
    )
    assert len(cli_run.errors) == failed  # no failure beyond those the table expects


@pytest.mark.slow
def test_killed_write_was_left_incomplete_and_resume_redid_exactly_it(batch: Batch, cli_run: Run):
    before = {i.name: i.complete for i in list_segmentations(batch.template)}
    # The killed run's group, and the claims of other runs, are not complete before.
    assert before == {
        "killed": False,
        "kept": True,
        "held-here": False,
        "held-remote": False,
        "lapsed-remote": False,
    }
    skipped = [s for s, r in cli_run.reports.items() if r.endswith("already complete, skipped")]
    assert skipped == [batch.source(Case("{root}/kept.png", Unlisted()))]


@pytest.mark.slow
def test_flow_ends_failed_listing_the_failures_and_retries_no_bad_image(
    flow_run: Run, batch: Batch
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    done, kept, failed = _counts()
    state = flow_run.state
    assert state.is_failed()
    assert flow_run.summary.startswith(f"{failed} of {done + kept + failed} images failed: ")
    assert len(flow_run.errors) == failed
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as api:
        runs = api.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    batches = [r for r in runs if r.name.startswith("segment-")]
    assert batches and sum(1 for r in batches if r.state and r.state.is_completed()) == len(batches)
    # A bad image is not an I/O error: no batch holding one was run a second time.
    assert [r.run_count for r in batches] == [1] * len(batches)


# --- Rows that refuse a whole run --------------------------------------------------------


def _cli(args: list[str], cluster: Any) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*args, "--scheduler", cluster.scheduler_address])
        except SystemExit as exc:  # argparse refuses what is not an integer
            code = int(exc.code or 0)
    return code, out.getvalue() + err.getvalue()


def _flow(inputs: list[str], output: str, cluster: Any, **kw: Any) -> Any:
    from flows.segment import segment_archive

    return segment_archive(
        inputs, output, dask_address=cluster.scheduler_address, return_state=True, **kw
    )


def check_k(batch: Batch, cluster: Any, tmp: Path) -> None:
    good = str(batch.root / "good-a.png")
    for k, message in [
        ("0", r"must be in \[1, 65535\], got 0"),
        ("-3", "got -3"),
        ("70000", "got 70000"),
        ("2.5", "invalid int value: '2.5'"),
    ]:
        out = tmp / f"k{k}.zarr"
        code, text = _cli(["segment", good, "-k", k, "-o", str(out)], cluster)
        assert code == 2 and re.search(message, text), (k, code, text)
        assert not out.exists()
    for k, message in [
        (0, r"must be in \[1, 65535\], got 0"),
        (-3, "got -3"),
        (70000, "got 70000"),
        (2.5, "k: Input should be a valid integer"),  # Prefect checks the parameter's type
    ]:
        out = tmp / f"flow-k{k}.zarr"
        state = _flow([good], str(out), cluster, k=k)
        assert state.is_failed()
        with pytest.raises(Exception, match=message):
            state.result()
        assert not out.exists()


def check_output(batch: Batch, cluster: Any, tmp: Path) -> None:
    good = str(batch.root / "good-a.png")
    folder = tmp / "folder.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    file = tmp / "file.zarr"
    file.write_text("mine")
    locked = tmp / "locked"
    locked.mkdir()
    cases = [
        (folder, "is a non-empty directory but not a Zarr store"),
        (file, "exists and is a file"),
        (locked / "out.zarr", "ermission denied|Read-only file system|Operation not permitted"),
    ]
    # Root ignores chmod; the immutable attribute stops even root (chattr, e2fsprogs).
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(locked)], check=True)
    else:
        locked.chmod(0o500)
    try:
        for path, reason in cases:
            code, text = _cli(["segment", good, "-o", str(path)], cluster)
            assert code == 1 and re.search(rf"{re.escape(str(path))}: .*({reason})", text), text
            state = _flow([good], str(path), cluster)
            assert state.is_failed()
            assert re.search(rf"{re.escape(str(path))}: .*({reason})", state.message), state.message
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
        else:
            locked.chmod(0o700)
    assert (folder / "notes.txt").read_text() == "mine" and sorted(os.listdir(folder)) == [
        "notes.txt"
    ]
    assert file.read_text() == "mine"
    assert not (locked / "out.zarr").exists()


def check_url(batch: Batch, cluster: Any, tmp: Path) -> None:
    good = str(batch.root / "good-a.png")
    for url, problem in [
        ("s3://kmdist-no-such-bucket-4b1d/x.png", "file not found"),
        (f"s3://{batch.bucket}/no/such/object.png", "file not found"),
    ]:
        out = tmp / "url.zarr"
        code, text = _cli(["segment", good, url, "-o", str(out)], cluster)
        assert code == 1 and f"{url}: {problem}" in text, text
        assert not out.exists()  # refused before any work, the good image included
        state = _flow([good, url], str(out), cluster)
        assert state.is_failed() and f"{url}: {problem}" in state.message, state.message
        assert not out.exists() or not any(i.complete for i in list_segmentations(out))


def check_complete(batch: Batch, cluster: Any, tmp: Path) -> None:
    # --resume is the batch's; here the same complete output without it, then --overwrite.
    out = batch.output(tmp)
    kept = str(batch.root / "kept.png")
    code, text = _cli(["segment", kept, "-o", str(out)], cluster)
    assert code == 1
    assert (
        f"{out}/kept: already complete; skip it with --resume or replace it with "
        "--overwrite (overwrite=True)" in text
    )
    assert open_segmentation(out, "kept").palette == batch.kept_palette
    code, text = _cli(["segment", kept, "-o", str(out), "--overwrite"], cluster)
    assert code == 0, text
    seg = open_segmentation(out, "kept")
    assert seg.attrs["source"] == kept and seg.palette.k == K


RUN_LEVEL_CHECKS: dict[str, Callable[[Batch, Any, Path], None]] = {
    "k": check_k,
    "output": check_output,
    "url": check_url,
    "complete": check_complete,
}


@pytest.mark.slow
@pytest.mark.parametrize("row", [r for r in ROWS if r.run_level], ids=lambda r: r.run_level)
def test_run_level_rows(
    row: Row, batch: Batch, cluster: Any, tmp_path: Path, prefect_harness: None
):
    assert row.run_level is not None
    RUN_LEVEL_CHECKS[row.run_level](batch, cluster, tmp_path)
