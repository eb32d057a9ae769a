"""An image's decoded size from its header alone (kmdist.io._header)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import tifffile
import zarr
from PIL import Image

from kmdist.io._header import decoded_samples


def test_files_give_their_pixels_times_channels(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "rgb.png")
    Image.new("L", (40, 30)).save(tmp_path / "grey.jpg")
    Image.new("RGBA", (7, 5)).save(tmp_path / "rgba.webp", lossless=True)
    tifffile.imwrite(tmp_path / "tiled.tif", np.zeros((64, 48, 3), np.uint8), tile=(16, 16))
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((20, 10, 3), np.uint16), bigtiff=True)
    assert decoded_samples(str(tmp_path / "rgb.png")) == 40 * 30 * 3
    assert decoded_samples(str(tmp_path / "grey.jpg")) == 40 * 30
    assert decoded_samples(str(tmp_path / "rgba.webp")) == 7 * 5 * 4
    assert decoded_samples(str(tmp_path / "tiled.tif")) == 64 * 48 * 3
    assert decoded_samples(str(tmp_path / "big.tif")) == 20 * 10 * 3


def test_zarr_arrays_and_ome_zarr_images_give_their_first_level(tmp_path):
    zarr.create_array(tmp_path / "v3.zarr", shape=(50, 60, 3), dtype="u1")
    zarr.create_array(tmp_path / "v2.zarr", shape=(50, 60, 3), dtype="u1", zarr_format=2)
    assert decoded_samples(str(tmp_path / "v3.zarr")) == 50 * 60 * 3
    assert decoded_samples(str(tmp_path / "v2.zarr")) == 50 * 60 * 3
    # An OME-Zarr 0.5 image: level 0 is the first dataset, the smaller levels follow.
    image = zarr.open_group(tmp_path / "ome.zarr", mode="w")
    datasets = []
    for i, side in enumerate((64, 32)):
        image.create_array(str(i), shape=(3, side, side), dtype="u1")
        datasets.append({"path": str(i)})
    image.attrs["ome"] = {"version": "0.5", "multiscales": [{"datasets": datasets}]}
    assert decoded_samples(str(tmp_path / "ome.zarr")) == 3 * 64 * 64


def test_a_large_image_is_measured_without_pillows_warning(tmp_path, monkeypatch, recwarn):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,200 pixels: Pillow warns
    assert decoded_samples(str(tmp_path / "a.png")) == 40 * 30 * 3
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_what_the_header_cannot_tell_is_unknown_not_an_error(tmp_path):
    (tmp_path / "folder").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "folder" / "a.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "broken.tif").write_bytes(b"II*\0" + b"\xff" * 20)
    zarr.open_group(tmp_path / "group.zarr", mode="w")  # a group with no image
    for path in ("folder", "broken.png", "broken.tif", "group.zarr", "missing.png"):
        assert decoded_samples(str(tmp_path / path)) is None, path
    assert decoded_samples("s3://bucket/image.png") is None


def test_reading_a_header_imports_none_of_the_pipeline(tmp_path):
    # The CLI reads it before its cluster starts: Dask, Zarr and numba import later.
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    code = (
        "import sys; from kmdist.io._header import decoded_samples; "
        f"n = decoded_samples({str(tmp_path / 'a.png')!r}); "
        "print(n, [m for m in ('dask', 'zarr', 'numba') if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split(None, 1) == ["192", "[]\n"], proc.stderr
