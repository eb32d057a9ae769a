"""16-bit colour PNG (kmdist.io._png16), written by hand: Pillow cannot write them."""

from __future__ import annotations

import numpy as np
import pytest

from kmdist.io._png16 import PngInfo, png16_decode, png_info

from ._helpers import png16, png_file, read


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


def test_png16_decode_refuses_bad_crc_bad_filter_and_short_data(rng):
    a = rng.integers(0, 65536, (8, 9, 3), dtype=np.uint16)
    data = bytearray(png16(a, 2))
    idat = data.index(b"IDAT")
    bad_crc = bytes(data)
    bad_crc = bad_crc[: idat + 4] + bytes([bad_crc[idat + 4] ^ 1]) + bad_crc[idat + 5 :]
    with pytest.raises(ValueError, match="bad CRC in PNG chunk 'IDAT'"):
        png16_decode(bad_crc, png_info(bad_crc))
    # Filter type 7 does not exist (0 to 4 do).
    raw = b"".join(bytes([7]) + bytes(9 * 6) for _ in range(8))
    bad_filter = png_file(9, 8, 16, 2, raw)
    with pytest.raises(ValueError, match="invalid PNG filter type 7"):
        png16_decode(bad_filter, png_info(bad_filter))
    # One row fewer than the header promises.
    short = png_file(9, 8, 16, 2, raw[: 7 * (1 + 9 * 6)])
    with pytest.raises(ValueError, match=r"truncated PNG data: 385 of 440 bytes"):
        png16_decode(short, png_info(short))
