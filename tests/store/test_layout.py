"""Image names and the OME-NGFF 0.5 metadata (kmdist.store._layout)."""

from __future__ import annotations

import numpy as np
import pytest

from kmdist.palette._palette import Palette
from kmdist.store._errors import OutputError
from kmdist.store._layout import check_name, multiscales, omero
from tests.store._helpers import write

RULE = (
    "is not a valid image name: use a non-empty name without '/' or '\\' "
    "that does not start with '.' or '__' and is not 'zarr.json'"
)


@pytest.mark.parametrize(
    "name", ["", "a/b", "a\\b", ".hidden", "..", "__zarr", "tab\there", "zarr.json"]
)
def test_invalid_names(tmp_path, sample, name):
    with pytest.raises(OutputError, match="not a valid image name"):
        write(tmp_path / "s.zarr", name, *sample)


# --- check_name ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a/b",
        "/abs",
        "a\\b",
        ".hidden",
        ".",
        "..",
        "__zarr",
        "__",
        "zarr.json",
        "ZARR.JSON",  # clashes with the root's metadata on case-insensitive file systems
        "tab\there",
        "new\nline",
        "nul\x00",
        "esc\x1b",
        "x" * 256,
        "é" * 128,  # 128 characters, 256 bytes in UTF-8
    ],
)
def test_check_name_refuses_with_the_rule(name):
    with pytest.raises(OutputError) as info:
        check_name(name)
    assert str(info.value) == f"{name!r} {RULE}"


@pytest.mark.parametrize("name", [None, 3, b"photo", ["photo"]])
def test_check_name_refuses_non_strings(name):
    with pytest.raises(OutputError, match="is not a valid image name"):
        check_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "photo",
        "a.b",
        "photo.png",
        "_single",
        "a__b",
        "a..b",
        "zarr.json.bak",
        "my zarr.json",
        "with space",
        "日本語",
        "del\x7f",  # DEL is not below 32
        "x" * 255,  # the longest a file system takes
        "é" * 127 + "x",  # 255 bytes
        "bad\udcff",  # an undecodable byte as os.fsdecode gives it: one byte
    ],
)
def test_check_name_accepts(name):
    check_name(name)


def test_name_length_counts_bytes_not_characters():
    check_name("€" * 85)  # 3 bytes each: 255
    with pytest.raises(OutputError, match="not a valid image name"):
        check_name("€" * 85 + "x")  # 256 bytes, 86 characters


# --- multiscales --------------------------------------------------------------------


def test_multiscales_of_a_recoloured_image():
    assert multiscales("photo", 3, channel_axis=True) == [
        {
            "name": "photo",
            "axes": [
                {"name": "c", "type": "channel"},
                {"name": "y", "type": "space"},
                {"name": "x", "type": "space"},
            ],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0]}],
                },
                {
                    "path": "1",
                    "coordinateTransformations": [{"type": "scale", "scale": [1.0, 2.0, 2.0]}],
                },
                {
                    "path": "2",
                    "coordinateTransformations": [{"type": "scale", "scale": [1.0, 4.0, 4.0]}],
                },
            ],
        }
    ]


def test_multiscales_of_labels():
    assert multiscales("segmentation", 2, channel_axis=False) == [
        {
            "name": "segmentation",
            "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}],
                },
                {
                    "path": "1",
                    "coordinateTransformations": [{"type": "scale", "scale": [2.0, 2.0]}],
                },
            ],
        }
    ]


def test_multiscales_scales_are_floats():
    # OME-NGFF scales are numbers; floats so that JSON readers see 2.0, not 2.
    (entry,) = multiscales("p", 1, channel_axis=True)
    (transform,) = entry["datasets"][0]["coordinateTransformations"]
    assert all(type(v) is float for v in transform["scale"])


# --- omero --------------------------------------------------------------------------


def _window(lo, hi):
    return {"min": lo, "max": hi, "start": lo, "end": hi}


def test_omero_rgb_uint8():
    palette = Palette(np.array([[10, 20, 30], [40, 50, 60]]), np.array([2, 1]), 0.0)
    window = _window(0.0, 255.0)
    assert omero(palette) == {
        "channels": [
            {"label": "red", "color": "FF0000", "active": True, "window": window},
            {"label": "green", "color": "00FF00", "active": True, "window": window},
            {"label": "blue", "color": "0000FF", "active": True, "window": window},
        ],
        "rdefs": {"model": "color"},
    }


def test_omero_grey_uint16():
    palette = Palette(np.array([[100], [60000]]), np.array([2, 1]), 0.0, dtype="uint16")
    assert omero(palette) == {
        "channels": [
            {"label": "grey", "color": "FFFFFF", "active": True, "window": _window(0.0, 65535.0)}
        ],
        "rdefs": {"model": "color"},
    }


def test_omero_signed_integers_use_the_dtype_range():
    palette = Palette(np.array([[-5], [7]]), np.array([2, 1]), 0.0, dtype="int16")
    assert omero(palette)["channels"][0]["window"] == _window(-32768.0, 32767.0)


@pytest.mark.parametrize(
    ("colors", "lo", "hi"),
    [
        ([[0.2], [0.7]], 0.0, 1.0),  # within [0, 1]: the unit range
        ([[0.5], [3.5]], 0.0, 3.5),  # brighter than 1: up to the brightest colour
        ([[-2.0], [0.5]], -2.0, 1.0),  # negative values: down to the darkest
    ],
)
def test_omero_float_window_covers_the_colours_and_the_unit_range(colors, lo, hi):
    palette = Palette(np.array(colors), np.array([2, 1]), 0.0, dtype="float32")
    assert omero(palette)["channels"][0]["window"] == _window(lo, hi)


@pytest.mark.parametrize("channels", [2, 4])
def test_omero_none_for_other_channel_counts(channels):
    palette = Palette(np.zeros((1, channels)), np.array([1]), 0.0)
    assert omero(palette) is None
