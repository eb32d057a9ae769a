"""Images decoded whole (kmdist.io._decoded): Pillow's formats and modes, the pixel limit.

Every file is written by the test itself, in tmp_path."""

from __future__ import annotations

import io
import warnings

import dask.array as da
import numpy as np
import pytest
import tifffile
from PIL import Image, features
from sklearn.datasets import load_sample_image

from kmdist.io._decoded import DEFAULT_MAX_PIXELS
from kmdist.io._errors import ImageReadError
from kmdist.io._open import open_image, open_images

from ._helpers import png16, png_file, read, rgb, save


@pytest.fixture(scope="module")
def china() -> np.ndarray:
    return load_sample_image("china.jpg")


@pytest.fixture(scope="module")
def flower() -> np.ndarray:
    return load_sample_image("flower.jpg")


def _jpeg(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG")
    return buf.getvalue()


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


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_other_animations_give_their_first_frame(tmp_path, rng, fmt):
    # Animated WebP and APNG (lossless), as README says of "GIF and other animations".
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP: no animated WebP to read")
    first, second = rgb(rng, 20, 30), rgb(rng, 20, 30)
    path = tmp_path / f"anim.{fmt.lower()}"
    kw = {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(first).save(
        path, format=fmt, save_all=True, append_images=[Image.fromarray(second)], **kw
    )
    with Image.open(path) as img:
        assert img.n_frames == 2  # really an animation
    np.testing.assert_array_equal(read(path), first)


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


def _png_palette(rng, path, **kw):
    idx = rng.integers(0, 16, (40, 50), dtype=np.uint8)
    img = Image.fromarray(idx, "P")
    img.putpalette(rng.integers(0, 256, 48, dtype=np.uint8).tolist())
    img.save(path, **kw)
    return path


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, p: save(p / "a.png", rgb(rng, 40, 50)),
        lambda rng, p: save(p / "a.png", rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)),
        lambda rng, p: save(p / "a.png", rng.integers(0, 256, (40, 50, 2), np.uint8), "LA"),
        lambda rng, p: save(p / "a.png", rng.integers(0, 65536, (40, 50), dtype=np.uint16)),
        lambda rng, p: save(p / "a.png", rng.random((40, 50)) > 0.5),
        lambda rng, p: _png_palette(rng, p / "a.png"),
        lambda rng, p: _png_palette(rng, p / "a.png", transparency=3),
        lambda rng, p: _png_palette(rng, p / "a.png", bits=4),
        lambda rng, p: save(p / "a.jpg", rgb(rng, 40, 50), quality=90),
        lambda rng, p: save(p / "a.jpg", rgb(rng, 40, 50), progressive=True),
        lambda rng, p: save(p / "a.jpg", rng.integers(0, 256, (40, 50), dtype=np.uint8)),
    ],
    ids=[
        *("rgb", "rgba", "la", "grey16", "bilevel", "palette", "palette-trns", "palette4"),
        *("jpeg", "jpeg-progressive", "jpeg-grey"),
    ],
)
def test_beyond_pillows_limit_decoded_alike_and_limit_kept(tmp_path, rng, monkeypatch, make):
    # Pillow would warn about (or refuse) these images, over its limit; kmdist decodes
    # PNG and JPEG beyond it with imagecodecs, to what Pillow gives, and leaves it as is.
    path = make(rng, tmp_path)
    expected = read(path)  # through Pillow
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = open_image(path)
        np.testing.assert_array_equal(img.compute(scheduler="sync"), expected)
    assert img.dtype == expected.dtype
    assert Image.MAX_IMAGE_PIXELS == 100


def test_a_100_megapixel_png_decodes_and_pillows_limit_is_unchanged(tmp_path):
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None and limit < 100_000_000  # Pillow's default: 89,478,485
    height, width = 10_000, 10_000
    row = b"\x00" + b"\x07" * width  # filter byte, then one grey level
    path = tmp_path / "big.png"
    path.write_bytes(png_file(width, height, 8, 0, row * height))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = open_image(path, chunks=(5_000, 5_000))
        assert img.shape == (height, width, 1)
        out = img[::2_500, ::2_500].compute(scheduler="sync")
    assert out.shape == (4, 4, 1) and np.all(out == 7)
    assert Image.MAX_IMAGE_PIXELS == limit  # noqa: SIM300 - the setting under test


def test_pillow_formats_beyond_twice_its_limit_refused_with_a_clear_error(tmp_path, rng):
    # A GIF, whose size kmdist does not read itself: Pillow refuses it from its header.
    path = tmp_path / "big.gif"
    Image.fromarray(rgb(rng, 10, 10)).save(path)
    data = bytearray(path.read_bytes())
    data[6:10] = (20_000).to_bytes(2, "little") * 2  # logical screen: 20,000 x 20,000
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="more than Pillow decodes") as err:
        open_image(path)
    assert str(err.value).startswith(f"{path}: 400,000,000 pixels is more than Pillow")


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


def test_huge_jpeg_header_refused_naming_its_size(tmp_path, rng):
    # Refused from its frame header, before Pillow opens it.
    data = bytearray(_jpeg(rgb(rng, 8, 8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60_000).to_bytes(2, "big") * 2  # height, width
    path = tmp_path / "huge.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="tiled TIFF") as err:
        open_image(path)
    assert str(err.value).startswith(f"{path}: 60000 x 60000 pixels is more than max_pixels=")


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
