"""16-bit colour PNG (kmdist.io._png16), written by hand: Pillow cannot write them."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from kmdist.io import ImageReadError
from kmdist.io._png16 import PngInfo, png16_decode, png_info

from ._helpers import png16, png_by_hand, png_file, read

# PNG colour type -> samples per pixel, and the channels kmdist keeps (alpha dropped).
SAMPLES = {0: 1, 4: 2, 2: 3, 6: 4}
KEPT = {0: 1, 4: 1, 2: 3, 6: 3}


def _encoded(arr: np.ndarray, colour: int, encoder: str, interlace: int) -> bytes:
    if encoder == "by hand":
        return png_by_hand(arr, colour, interlace=interlace)
    if encoder == "imagecodecs":  # libpng, its own filter choice
        return bytes(imagecodecs.png_encode(arr if SAMPLES[colour] > 1 else arr[..., 0]))
    mode = {(0, 1): "L", (4, 1): "LA", (2, 1): "RGB", (6, 1): "RGBA", (0, 2): "I;16"}
    image = Image.fromarray(arr[..., 0] if SAMPLES[colour] == 1 else arr)
    assert image.mode == mode[colour, arr.dtype.itemsize]
    from io import BytesIO

    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


CASES = [
    (colour, depth, encoder, interlace)
    for colour in (0, 4, 2, 6)
    for depth in (8, 16)
    for encoder, interlace in (("by hand", 0), ("by hand", 1), ("imagecodecs", 0), ("Pillow", 0))
    # Pillow writes 16 bits for grey only.
    if not (encoder == "Pillow" and depth == 16 and colour != 0)
]


@pytest.mark.parametrize(("colour", "depth", "encoder", "interlace"), CASES)
@pytest.mark.parametrize("shape", [(29, 19), (1, 1), (3, 10), (9, 2)])
def test_every_png_kind_decodes_to_the_samples_written(
    tmp_path, rng, colour, depth, encoder, interlace, shape
):
    # Grey, grey+alpha, RGB and RGBA; 8 and 16 bits; Adam7 or not; sizes whose Adam7
    # passes are empty or a pixel wide. 16-bit grey+alpha, RGB and RGBA take
    # `png16_decode`, the others Pillow.
    dtype = np.uint16 if depth == 16 else np.uint8
    a = rng.integers(0, 1 << depth, (*shape, SAMPLES[colour]), dtype=dtype)
    path = tmp_path / "a.png"
    path.write_bytes(_encoded(a, colour, encoder, interlace))
    info = png_info(path.read_bytes()[:64])
    assert info is not None and (info.depth, info.colour, info.interlaced) == (
        depth,
        colour,
        bool(interlace),
    )
    out = read(path)
    assert out.dtype == dtype and out.shape == (*shape, KEPT[colour])
    np.testing.assert_array_equal(out, a[..., : KEPT[colour]])


def test_interlaced_16_bit_png_decodes_without_a_word_on_stderr(rng, capfd):
    # libpng, given an interlaced PNG whole by imagecodecs, prints "Interlace handling
    # should be turned on when using png_read_image" to the process's stderr.
    a = rng.integers(0, 65536, (23, 17, 4), dtype=np.uint16)
    data = png_by_hand(a, 6, interlace=1)
    np.testing.assert_array_equal(png16_decode(data, png_info(data)), a[..., :3])
    assert capfd.readouterr().err == ""


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


def test_png_info_reads_the_header_and_says_who_decodes():
    # IHDR fields by hand: 19 x 29, depth 16, RGB (colour type 2), Adam7.
    head = png_file(19, 29, 16, 2, b"", interlace=1)
    info = png_info(head)
    assert info == PngInfo(width=19, height=29, depth=16, colour=2, interlaced=True)
    assert info.own_decoder and info.channels == 3
    # 16-bit LA and RGBA are ours too; 16-bit grey and every 8-bit PNG are Pillow's.
    assert png_info(png_file(3, 2, 16, 4, b"")).own_decoder
    assert png_info(png_file(3, 2, 16, 4, b"")).channels == 1
    assert png_info(png_file(3, 2, 16, 6, b"")).channels == 3
    assert not png_info(png_file(3, 2, 16, 0, b"")).own_decoder
    assert not png_info(png_file(3, 2, 8, 2, b"")).own_decoder
    assert png_info(b"\xff\xd8\xff\xe0" + bytes(40)) is None  # a JPEG
    assert png_info(head[:28]) is None  # too short to hold IHDR


@pytest.mark.parametrize("colour", [2, 4, 6])
def test_png16_decode_equals_the_samples_written(rng, colour):
    samples = {2: 3, 4: 2, 6: 4}[colour]
    a = rng.integers(0, 65536, (23, 17, samples), dtype=np.uint16)
    data = png16(a, colour, filters=(4, 3, 2, 1, 0))
    out = png16_decode(data, png_info(data))
    assert out.dtype == np.uint16 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, a[..., : 1 if colour == 4 else 3])


@pytest.mark.parametrize("interlace", [0, 1])
def test_png16_decode_refuses_bad_crc_bad_filter_and_short_data(rng, interlace):
    a = rng.integers(0, 65536, (8, 9, 3), dtype=np.uint16)
    data = bytearray(png16(a, 2, interlace=interlace))
    idat = data.index(b"IDAT")
    bad_crc = bytes(data)
    bad_crc = bad_crc[: idat + 4] + bytes([bad_crc[idat + 4] ^ 1]) + bad_crc[idat + 5 :]
    # Filter type 7 does not exist (0 to 4 do).
    raw = b"".join(bytes([7]) + bytes(9 * 6) for _ in range(8))
    bad_filter = png_file(9, 8, 16, 2, raw, interlace)
    # One row fewer than the header promises.
    good = b"".join(bytes([0]) + bytes(9 * 6) for _ in range(8))
    short = png_file(9, 8, 16, 2, good[: 7 * (1 + 9 * 6)], interlace)
    for broken in (bad_crc, bad_filter, short, bytes(data[: len(data) // 2])):
        # libpng's errors (imagecodecs.PngError, a RuntimeError), or this module's.
        with pytest.raises((ValueError, RuntimeError)):
            png16_decode(broken, png_info(broken))


def test_a_broken_16_bit_png_fails_as_the_image_cannot_be_decoded(tmp_path, rng):
    raw = b"".join(bytes([7]) + bytes(9 * 6) for _ in range(8))
    path = tmp_path / "bad.png"
    path.write_bytes(png_file(9, 8, 16, 2, raw))
    with pytest.raises(ImageReadError, match=r"bad\.png: cannot decode the image"):
        read(path)
