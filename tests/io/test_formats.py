"""One source opened by the right reader (kmdist.io._formats), or refused by name."""

from __future__ import annotations

import re
import zipfile

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from kmdist.io import _formats
from kmdist.io._decoded import DEFAULT_MAX_PIXELS
from kmdist.io._errors import ImageReadError
from kmdist.io._formats import open_or_read, open_source
from kmdist.io._open import open_image, open_images

from ._helpers import rgb, save


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


@pytest.mark.parametrize("max_pixels", [0, -1, 2.5, True, "100", None])
def test_max_pixels_must_be_a_positive_integer(tmp_path, rng, max_pixels):
    path = save(tmp_path / "a.png", rgb(rng))
    message = f"max_pixels must be a positive integer, got {max_pixels!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        open_source(str(path), None, str(path), None, max_pixels)
    assert open_source(str(path), None, str(path), None, np.int64(37 * 53)).shape == (37, 53, 3)


def test_open_or_read_decodes_small_whole_images_into_memory(tmp_path, rng):
    a = rgb(rng, 20, 30)
    png = str(save(tmp_path / "a.png", a))
    small = open_or_read(png, None, png, None, DEFAULT_MAX_PIXELS, most=600)
    assert isinstance(small, np.ndarray)
    np.testing.assert_array_equal(small, a)
    large = open_or_read(png, None, png, None, DEFAULT_MAX_PIXELS, most=599)
    assert isinstance(large, da.Array)
    np.testing.assert_array_equal(large.compute(), a)
    # An archive member likewise.
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(png, "in/a.png")
    member = open_or_read(str(archive), "in/a.png", f"{archive}::in/a.png", None, 10**9, 600)
    assert isinstance(member, np.ndarray)
    np.testing.assert_array_equal(member, a)
    lazy = open_or_read(str(archive), "in/a.png", f"{archive}::in/a.png", 8, 10**9, 599)
    assert isinstance(lazy, da.Array) and lazy.chunks[:2] == ((8, 8, 4), (8, 8, 8, 6))
    np.testing.assert_array_equal(lazy.compute(), a)


def test_tiff_and_zarr_stay_lazy_however_small(tmp_path, rng):
    a = rgb(rng, 20, 30)
    tifffile.imwrite(tmp_path / "t.tif", a)
    zarr.create_array(tmp_path / "z.zarr", data=a)
    for path in (str(tmp_path / "t.tif"), str(tmp_path / "z.zarr")):
        img = open_or_read(path, None, path, None, DEFAULT_MAX_PIXELS, most=10**9)
        assert isinstance(img, da.Array)
        np.testing.assert_array_equal(img.compute(), a)


def test_other_errors_while_reading_name_the_source(tmp_path, rng, monkeypatch):
    path = str(save(tmp_path / "a.png", rgb(rng)))

    def broken(*args, **kwargs):
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(_formats, "whole_header", broken)
    with pytest.raises(ImageReadError) as err:
        open_source(path, None, "named.png", None, DEFAULT_MAX_PIXELS)
    assert str(err.value) == "named.png: cannot read it (the disk went away)"
    assert isinstance(err.value.__cause__, RuntimeError)


def test_member_of_a_missing_archive(tmp_path):
    source = f"{tmp_path / 'gone.zip'}::a.png"
    with pytest.raises(ImageReadError) as err:
        open_image(source)
    assert (err.value.source, err.value.problem) == (source, "archive not found")
