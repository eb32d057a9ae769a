"""TIFF files and Zarr stores read lazily (kmdist.io._tiled)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from kmdist.io._errors import ImageReadError
from kmdist.io._open import open_image

from ._helpers import read, rgb


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


def test_ycbcr_tiff_gives_rgb_as_pillow_converts(tmp_path, rng):
    # Random samples: every Y, Cb and Cr, not only those an RGB image converts to.
    samples = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    path = tmp_path / "ycbcr.tif"
    Image.fromarray(samples, "YCbCr").save(path, format="TIFF")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.YCBCR
    expected = np.asarray(Image.open(path).convert("RGB"))
    out = read(path)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    # Tiled, read lazily tile by tile: each tile converted alike.
    tiled = tmp_path / "ycbcr-tiled.tif"
    tifffile.imwrite(tiled, samples, photometric="ycbcr", subsampling=(1, 1), tile=(16, 16))
    img = open_image(tiled, chunks=16)
    assert img.chunks[:2] == ((16, 14), (16, 16, 8)) and img.shape == (30, 40, 3)
    np.testing.assert_array_equal(img.compute(), expected)


def test_jpeg_compressed_ycbcr_tiff_is_decoded_by_tifffile_as_pillow_does(tmp_path, rng):
    path = tmp_path / "ycbcr-jpeg.tif"
    tifffile.imwrite(path, rgb(rng, 48, 64), photometric="ycbcr", compression="jpeg")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.YCBCR
    # tifffile's JPEG decoder already gives RGB: converting again would be wrong.
    np.testing.assert_array_equal(read(path), np.asarray(Image.open(path).convert("RGB")))


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
