"""Tests for kmdist.io._open: every file is written by the test itself, in tmp_path."""

from __future__ import annotations

import io
import os
import pickle
import re
import stat
import struct
import tarfile
import warnings
import zipfile
import zlib
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image, features
from sklearn.datasets import load_sample_image

from kmdist.io._open import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    ImageRef,
    _aligned_chunks,
    open_image,
    open_images,
)

NAME_RE = re.compile(r"^[A-Za-z0-9-][A-Za-z0-9._-]*$")


# --- helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def china() -> np.ndarray:
    return load_sample_image("china.jpg")


@pytest.fixture(scope="module")
def flower() -> np.ndarray:
    return load_sample_image("flower.jpg")


def rgb(rng: np.random.Generator, h: int = 37, w: int = 53) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path: Path, arr: np.ndarray, mode: str | None = None, **kw: object) -> Path:
    img = Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    img.save(path, **kw)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(width: int, height: int, depth: int, colour: int, raw: bytes, interlace: int = 0):
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def _filter_row(line: np.ndarray, prev: np.ndarray, kind: int, bpp: int) -> np.ndarray:
    x = line.astype(np.int16)
    up = prev.astype(np.int16)
    left = np.concatenate([np.zeros(bpp, np.int16), x[:-bpp]])
    upleft = np.concatenate([np.zeros(bpp, np.int16), up[:-bpp]])
    if kind == 1:
        pred = left
    elif kind == 2:
        pred = up
    elif kind == 3:
        pred = (left + up) >> 1
    elif kind == 4:
        pa, pb, pc = np.abs(up - upleft), np.abs(left - upleft), np.abs(left + up - 2 * upleft)
        pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    else:
        pred = np.zeros_like(x)
    return ((x - pred) & 0xFF).astype(np.uint8)


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
ADAM7 += ((0, 1, 1, 2),)


def png16(arr: np.ndarray, colour: int, filters=(0, 1, 2, 3, 4), interlace: int = 0) -> bytes:
    """A 16-bit PNG written by hand: Pillow cannot write 16-bit colour."""
    h, w, samples = arr.shape
    bpp = 2 * samples
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    raw, n = bytearray(), 0
    for x0, y0, dx, dy in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        lines = sub.astype(">u2").reshape(sub.shape[0], -1).view(np.uint8)
        prev = np.zeros(lines.shape[1], np.uint8)
        for line in lines:
            kind = filters[n % len(filters)]
            n += 1
            raw += bytes([kind]) + _filter_row(line, prev, kind, bpp).tobytes()
            prev = line
    return png_file(w, h, 16, colour, bytes(raw), interlace)


def read(path: Path | str, **kw: object) -> np.ndarray:
    return open_image(path, **kw).compute()


# --- Pillow formats --------------------------------------------------------------------


def test_png_round_trip_exact(tmp_path, rng):
    a = rgb(rng, 300, 500)
    img = open_image(save(tmp_path / "a.png", a))
    assert isinstance(img, da.Array)
    assert img.shape == (300, 500, 3) and img.dtype == np.uint8
    assert img.chunks == ((300,), (500,), (3,))
    np.testing.assert_array_equal(img.compute(), a)


def test_jpeg_matches_pillow_and_source(tmp_path, china):
    path = save(tmp_path / "china.jpg", china, quality=95)
    out = read(path)
    assert out.shape == china.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(Image.open(path)))
    assert np.abs(out.astype(int) - china).mean() < 3


def test_bmp_exact(tmp_path, rng):
    a = rgb(rng)
    np.testing.assert_array_equal(read(save(tmp_path / "a.bmp", a)), a)


def test_gif_first_frame(tmp_path, rng):
    palette = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    frames = []
    for _ in range(2):
        idx = rng.integers(0, 4, (20, 30), dtype=np.uint8)
        frame = Image.fromarray(idx, "P")
        frame.putpalette(palette.ravel().tolist() + [0] * (768 - 12))
        frames.append((frame, idx))
    path = tmp_path / "anim.gif"
    frames[0][0].save(path, save_all=True, append_images=[frames[1][0]], optimize=False)
    out = read(path)
    assert out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, palette[frames[0][1]])


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp_lossless_exact(tmp_path, rng):
    a = rgb(rng)
    np.testing.assert_array_equal(read(save(tmp_path / "a.webp", a, lossless=True)), a)


def test_grayscale_png(tmp_path, rng):
    g = rng.integers(0, 256, (25, 40), dtype=np.uint8)
    out = read(save(tmp_path / "g.png", g))
    assert out.shape == (25, 40, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], g)


def test_la_gives_l(tmp_path, rng):
    la = rng.integers(0, 256, (25, 40, 2), dtype=np.uint8)
    out = read(save(tmp_path / "la.png", la, "LA"))
    assert out.shape == (25, 40, 1)
    np.testing.assert_array_equal(out[..., 0], la[..., 0])


def test_rgba_drops_alpha_keeps_stored_colour(tmp_path, rng):
    a = rng.integers(0, 256, (25, 40, 4), dtype=np.uint8)
    a[:5, :, 3] = 0  # fully transparent pixels still have their colour
    out = read(save(tmp_path / "a.png", a))
    assert out.shape == (25, 40, 3)
    np.testing.assert_array_equal(out, a[..., :3])


@pytest.mark.parametrize("transparency", [False, True])
def test_palette_png_gives_rgb(tmp_path, rng, transparency):
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    idx = rng.integers(0, 16, (25, 40), dtype=np.uint8)
    img = Image.fromarray(idx, "P")
    img.putpalette(palette.ravel().tolist())
    kw = {"transparency": 3} if transparency else {}
    img.save(tmp_path / "p.png", **kw)
    assert ("transparency" in Image.open(tmp_path / "p.png").info) == transparency
    out = read(tmp_path / "p.png")
    assert out.shape == (25, 40, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, palette[idx])


def test_cmyk_jpeg_gives_rgb(tmp_path, flower):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(flower).convert("CMYK").save(path)
    assert Image.open(path).mode == "CMYK"
    out = read(path)
    assert out.shape == flower.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(Image.open(path).convert("RGB")))


def test_cmyk_tiff_gives_rgb_as_pillow_converts(tmp_path, rng):
    # Random inks, black (K) included: a conversion from an RGB image would have K = 0.
    inks = rng.integers(0, 256, (30, 40, 4), dtype=np.uint8)
    path = tmp_path / "cmyk.tif"
    Image.fromarray(inks, "CMYK").save(path, format="TIFF")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.SEPARATED
    out = read(path)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(Image.open(path).convert("RGB")))
    # 16-bit inks, tiled (read lazily, chunk by chunk): (max - K) * (1 - C / max), rounded.
    inks16 = rng.integers(0, 65536, (40, 48, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c16.tif", inks16, photometric="separated", tile=(16, 16))
    img = open_image(tmp_path / "c16.tif")
    assert img.shape == (40, 48, 3) and img.dtype == np.uint16
    c, k = inks16[..., :3].astype(float), inks16[..., 3:].astype(float)
    expected = np.rint((65535 - k) * (1 - c / 65535))
    np.testing.assert_allclose(img.compute(), expected, atol=1)


def test_bilevel_gives_0_255(tmp_path, rng):
    bits = rng.random((20, 30)) > 0.5
    out = read(save(tmp_path / "b.png", bits))
    assert out.dtype == np.uint8 and out.shape == (20, 30, 1)
    np.testing.assert_array_equal(out[..., 0], np.where(bits, 255, 0))


def test_grayscale_16bit_png(tmp_path, rng):
    g = rng.integers(0, 65536, (25, 40), dtype=np.uint16)
    out = read(save(tmp_path / "g16.png", g))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out[..., 0], g)


def test_float_image_through_pillow(tmp_path, rng):
    f = rng.random((20, 30), dtype=np.float32)
    out = read(save(tmp_path / "f.pfm", f, "F"))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 0], f)


@pytest.mark.parametrize("interlace", [0, 1])
@pytest.mark.parametrize("filters", [(0, 1, 2), (0, 1, 2, 3, 4), (4,), (3,)])
def test_rgb_16bit_png_exact(tmp_path, rng, filters, interlace):
    a = rng.integers(0, 65536, (29, 19, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(png16(a, 2, filters, interlace))
    out = read(path)
    assert out.dtype == np.uint16 and out.shape == a.shape
    np.testing.assert_array_equal(out, a)


def test_rgba_and_la_16bit_png_drop_alpha(tmp_path, rng):
    a = rng.integers(0, 65536, (11, 13, 4), dtype=np.uint16)
    (tmp_path / "rgba16.png").write_bytes(png16(a, 6))
    (tmp_path / "la16.png").write_bytes(png16(a[..., :2], 4))
    np.testing.assert_array_equal(read(tmp_path / "rgba16.png"), a[..., :3])
    np.testing.assert_array_equal(read(tmp_path / "la16.png"), a[..., :1])


def test_pillow_bomb_guard_lifted_to_max_pixels(tmp_path, rng, monkeypatch):
    # Pillow itself would refuse this image (over twice its limit); ours allows it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    a = rgb(rng, 40, 50)
    np.testing.assert_array_equal(read(save(tmp_path / "a.png", a)), a)


def test_chunks_override_whole_image(tmp_path, rng):
    a = rgb(rng, 250, 130)
    path = save(tmp_path / "a.png", a)
    img = open_image(path, chunks=100)
    assert img.chunks == ((100, 100, 50), (100, 30), (3,))
    np.testing.assert_array_equal(img.compute(), a)
    assert open_image(path, chunks=(64, 128)).chunks[:2] == ((64, 64, 64, 58), (128, 2))
    with pytest.raises(ValueError, match="chunks"):
        open_image(path, chunks=0)
    with pytest.raises(ValueError, match="max_pixels"):
        open_image(path, max_pixels=0)


# --- TIFF ------------------------------------------------------------------------------


def test_tiled_tiff_lazy_chunks_follow_tiles(tmp_path, rng):
    a = rgb(rng, 2500, 1300)
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, a, tile=(384, 384), compression="zlib")
    img = open_image(path)
    # Smallest multiple of 384 that is at least 1024: 1152.
    assert img.chunks == ((1152, 1152, 196), (1152, 148), (3,))
    assert img.numblocks == (3, 2, 1)
    np.testing.assert_array_equal(img[1000:1300, 1100:1200].compute(), a[1000:1300, 1100:1200])
    np.testing.assert_array_equal(img.compute(), a)


def test_tiff_graph_pickles(tmp_path, rng):
    # tifffile's Zarr store cannot be pickled; the graph must, to reach workers.
    a = rgb(rng, 300, 200)
    tifffile.imwrite(tmp_path / "t.tif", a, tile=(64, 64))
    img = pickle.loads(pickle.dumps(open_image(tmp_path / "t.tif")))
    np.testing.assert_array_equal(img.compute(), a)


def test_large_tiles_kept_as_they_are(tmp_path, rng):
    a = rng.integers(0, 256, (1300, 1500), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "t.tif", a, tile=(1280, 1280))
    img = open_image(tmp_path / "t.tif")
    assert img.chunks == ((1280, 20), (1280, 220), (1,))


def test_striped_tiff_chunks_whole_strips_full_width(tmp_path, rng):
    a = rgb(rng, 2100, 700)
    path = tmp_path / "striped.tif"
    tifffile.imwrite(path, a, rowsperstrip=100)
    img = open_image(path)
    assert img.chunks == ((1100, 1000), (700,), (3,))
    np.testing.assert_array_equal(img.compute(), a)


def test_single_strip_tiff(tmp_path, rng):
    a = rgb(rng, 300, 200)
    tifffile.imwrite(tmp_path / "s.tif", a)
    np.testing.assert_array_equal(read(tmp_path / "s.tif"), a)


def test_chunk_cap_about_64mb():
    # Full-width strips of 16 rows, 40000 px wide: 1024 rows would be 123 MB.
    cy, cx = _aligned_chunks((16, 40000), (5000, 40000), 3)
    assert cx == 40000 and cy % 16 == 0 and cy * cx * 3 <= 64 << 20 and cy > 500
    # Small tiles, heavy pixels: whole tiles, capped.
    cy, cx = _aligned_chunks((256, 256), (10000, 10000), 80)
    assert cy % 256 == 0 and cx % 256 == 0 and cy * cx * 80 <= 64 << 20
    assert _aligned_chunks((256, 256), (300, 100), 3) == (300, 100)


def test_bigtiff(tmp_path, rng):
    a = rng.integers(0, 65536, (700, 900, 3), dtype=np.uint16)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, a, bigtiff=True, tile=(256, 256))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
    out = read(path)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, a)


def test_float32_tiff(tmp_path, rng):
    f = rng.random((600, 500), dtype=np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f, tile=(128, 128))
    img = open_image(tmp_path / "f.tif")
    assert img.dtype == np.float32 and img.shape == (600, 500, 1)
    assert img.chunks == ((600,), (500,), (1,))
    np.testing.assert_array_equal(img.compute()[..., 0], f)


def test_multipage_tiff_first_page(tmp_path, rng):
    pages = rng.integers(0, 256, (5, 60, 70), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", pages)  # one series, axes QYX
    out = read(tmp_path / "stack.tif")
    assert out.shape == (60, 70, 1)
    np.testing.assert_array_equal(out[..., 0], pages[0])
    colour = rng.integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tw:
        for page in colour:
            tw.write(page)
    np.testing.assert_array_equal(read(tmp_path / "pages.tif"), colour[0])


def test_pyramid_tiff_level_0(tmp_path, rng):
    a = rgb(rng, 600, 500)
    with tifffile.TiffWriter(tmp_path / "pyr.tif") as tw:
        tw.write(a, subifds=1, tile=(128, 128))
        tw.write(a[::2, ::2], subfiletype=1, tile=(128, 128))
    with tifffile.TiffFile(tmp_path / "pyr.tif") as tif:
        assert len(tif.series[0].levels) == 2
    np.testing.assert_array_equal(read(tmp_path / "pyr.tif"), a)


def test_planar_rgb_tiff(tmp_path, rng):
    a = rgb(rng, 80, 90)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.moveaxis(a, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read(path), a)


def test_palette_tiff_gives_rgb(tmp_path, rng):
    cmap = rng.integers(0, 256, (3, 256), dtype=np.uint16) * 257
    idx = rng.integers(0, 256, (50, 60), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "pal.tif", idx, photometric="palette", colormap=cmap)
    out = read(tmp_path / "pal.tif")
    assert out.dtype == np.uint8 and out.shape == (50, 60, 3)
    np.testing.assert_array_equal(out, (cmap >> 8).T[idx])


def test_rgba_tiff_drops_alpha(tmp_path, rng):
    a = rng.integers(0, 256, (50, 60, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", a, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(read(tmp_path / "rgba.tif"), a[..., :3])


def test_tiff_chunks_override(tmp_path, rng):
    a = rgb(rng, 1000, 900)
    tifffile.imwrite(tmp_path / "t.tif", a, tile=(256, 256))
    unaligned = open_image(tmp_path / "t.tif", chunks=(300, 500))
    assert unaligned.chunks == ((300, 300, 300, 100), (500, 400), (3,))
    np.testing.assert_array_equal(unaligned.compute(), a)
    aligned = open_image(tmp_path / "t.tif", chunks=512)
    assert aligned.chunks == ((512, 488), (512, 388), (3,))
    np.testing.assert_array_equal(aligned.compute(), a)


# --- Zarr ------------------------------------------------------------------------------


def test_zarr_array_yxc(tmp_path, rng):
    a = rgb(rng, 1500, 700)
    z = zarr.create_array(tmp_path / "img.zarr", shape=a.shape, chunks=(256, 256, 3), dtype="u1")
    z[:] = a
    img = open_image(tmp_path / "img.zarr")
    assert img.chunks == ((1024, 476), (700,), (3,))
    np.testing.assert_array_equal(img.compute(), a)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(img)).compute(), a)


def test_zarr_2d_and_dimension_names(tmp_path, rng):
    g = rng.integers(0, 65536, (40, 50), dtype=np.uint16)
    zarr.create_array(tmp_path / "g.zarr", data=g, chunks=(16, 16))
    out = read(tmp_path / "g.zarr")
    assert out.shape == (40, 50, 1) and out.dtype == np.uint16
    np.testing.assert_array_equal(out[..., 0], g)
    # Five channels last: the shape rule would say (c, y, x); the names say otherwise.
    a = rng.integers(0, 256, (30, 20, 5), dtype=np.uint8)
    zarr.create_array(tmp_path / "n.zarr", data=a, dimension_names=("y", "x", "c"))
    np.testing.assert_array_equal(read(tmp_path / "n.zarr"), a)


def test_ome_zarr_group(tmp_path, rng):
    cyx = rng.integers(0, 65536, (3, 1200, 300), dtype=np.uint16)
    group = zarr.open_group(tmp_path / "ome.zarr", mode="w")
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space"},
        {"name": "x", "type": "space"},
    ]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{"axes": axes, "datasets": [{"path": "0"}, {"path": "1"}]}],
    }
    group.create_array("0", shape=cyx.shape, chunks=(1, 256, 256), dtype="u2")[:] = cyx
    group.create_array("1", shape=(3, 600, 150), chunks=(1, 256, 256), dtype="u2")
    img = open_image(tmp_path / "ome.zarr")
    assert img.shape == (1200, 300, 3) and img.dtype == np.uint16
    assert img.chunks == ((1024, 176), (300,), (3,))
    np.testing.assert_array_equal(img.compute(), np.moveaxis(cyx, 0, -1))


def test_zarr_group_without_metadata_channels_first(tmp_path, rng):
    cyx = rng.integers(0, 256, (5, 30, 40), dtype=np.uint8)
    group = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    group.create_array("0", data=cyx)
    np.testing.assert_array_equal(read(tmp_path / "plain.zarr"), np.moveaxis(cyx, 0, -1))


# --- open_images -----------------------------------------------------------------------


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

    def walk(top, onerror, followlinks):  # root may read any folder: fake the refusal
        onerror(PermissionError(13, "Permission denied", os.path.join(top, "locked")))
        yield str(top), [], ["a.png"]

    monkeypatch.setattr("kmdist.io._open.os.walk", walk)
    refs = open_images(tmp_path)
    assert [r.name for r in refs] == ["a", "locked"]
    with pytest.raises(ImageReadError, match="cannot list this folder"):
        refs[1].open()


def test_empty_folder_gives_no_refs(tmp_path):
    assert open_images(tmp_path) == []


# --- Errors ----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(ImageReadError, match="file not found") as err:
        open_image(path)
    assert str(err.value).startswith(f"{path}: ")
    assert err.value.source == str(path)
    with pytest.raises(ImageReadError, match="file not found"):
        open_images([path])


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png: empty file"):
        open_image(tmp_path / "empty.png")


def test_text_file_named_png(tmp_path):
    (tmp_path / "fake.png").write_text("I am text, not a PNG.\n" * 10)
    with pytest.raises(ImageReadError, match=r"fake\.png: not an image"):
        open_image(tmp_path / "fake.png")


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageReadError, match="open_images"):
        open_image(tmp_path)


@pytest.mark.parametrize("fmt", ["jpg", "png", "png16"])
def test_truncated_data_fails_on_compute(tmp_path, rng, china, fmt):
    path = tmp_path / f"cut.{fmt}"
    if fmt == "png16":
        data = png16(rng.integers(0, 65536, (60, 70, 3), dtype=np.uint16), 2)
    else:
        buf = io.BytesIO()
        Image.fromarray(china).save(buf, "JPEG" if fmt == "jpg" else "PNG")
        data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2])
    img = open_image(path)  # the header is intact
    with pytest.raises(ImageReadError, match=rf"cut\.{fmt}: cannot decode") as err:
        img.compute(scheduler="sync")
    assert err.value.source == str(path)
    with pytest.raises(ImageReadError):
        img.compute(scheduler="threads")


def test_corrupt_tiff(tmp_path, rng):
    (tmp_path / "junk.tif").write_bytes(b"II*\x00" + bytes(rng.integers(0, 256, 100, np.uint8)))
    with pytest.raises(ImageReadError, match=r"junk\.tif: "):
        open_image(tmp_path / "junk.tif")
    a = rgb(rng, 512, 512)
    tifffile.imwrite(tmp_path / "cut.tif", a, tile=(128, 128), compression="zlib")
    data = (tmp_path / "cut.tif").read_bytes()
    with tifffile.TiffFile(tmp_path / "cut.tif") as tif:
        first = tif.pages[0].dataoffsets[8]
    (tmp_path / "cut.tif").write_bytes(data[:first] + bytes(len(data) - first))
    img = open_image(tmp_path / "cut.tif")
    with pytest.raises(ImageReadError, match=r"cut\.tif: cannot decode"):
        img.compute()


def test_zero_size_images(tmp_path):
    (tmp_path / "w0.png").write_bytes(png_file(0, 10, 8, 2, b""))
    with pytest.raises(ImageReadError, match="zero dimension"):
        open_image(tmp_path / "w0.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile: "nonconformant TIFF"
        tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 10), np.uint8))
    with pytest.raises(ImageReadError, match="zero dimension"):
        open_image(tmp_path / "empty.tif")


def test_huge_png_header_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_file(100_000, 100_000, 8, 2, b""))  # no pixel data at all
    with pytest.raises(ImageReadError, match="tiled TIFF") as err:
        open_image(path)
    assert "100000 x 100000" in str(err.value)
    assert str(err.value).startswith(f"{path}: ")


def test_max_pixels(tmp_path, rng):
    path = save(tmp_path / "a.jpg", rgb(rng, 100, 100))
    assert open_image(path, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(ImageReadError, match="max_pixels=9,999"):
        open_image(path, max_pixels=9_999)
    ref = open_images(path)[0]
    with pytest.raises(ImageReadError, match="tiled TIFF"):
        ref.open(max_pixels=50)
    assert DEFAULT_MAX_PIXELS == 1 << 30
    # A lazily read TIFF is not limited.
    tifffile.imwrite(tmp_path / "t.tif", rgb(rng, 100, 100))
    assert open_image(tmp_path / "t.tif", max_pixels=10).shape == (100, 100, 3)


def test_image_read_error_pickles():
    err = ImageReadError("a.zip::x.png", "empty file")
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, ValueError)
    assert (again.source, again.problem, str(again)) == (
        "a.zip::x.png",
        "empty file",
        "a.zip::x.png: empty file",
    )


# --- On a real cluster -----------------------------------------------------------------


@pytest.mark.slow
def test_on_local_cluster(tmp_path, rng, local_client):
    a = rgb(rng, 1100, 300)
    tifffile.imwrite(tmp_path / "t.tif", a, tile=(256, 256))
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        zf.writestr("a.png", buf.getvalue())
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[:5000])
    for ref in open_images([tmp_path / "t.tif", tmp_path / "z.zip"]):
        np.testing.assert_array_equal(local_client.compute(ref.open()).result(), a)
    with pytest.raises(ImageReadError, match=r"cut\.png: cannot decode"):
        local_client.compute(open_image(tmp_path / "cut.png")).result()
