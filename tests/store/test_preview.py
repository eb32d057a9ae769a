"""The PNG preview (kmdist.store._preview)."""

from __future__ import annotations

import os
import stat

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from PIL import Image, ImageDraw

from kmdist.store._preview import swatch_side, write_preview
from tests._computes import recorded_computes
from tests.store._helpers import make_labels, make_palette


def _swatches(png, h):
    """The swatch area below the halves of height `h`."""
    area = png[h:]
    assert area.shape[0] > 0
    return area


def _has(area, color, least=20):
    return int(np.all(area == color, axis=-1).sum()) >= least


def test_preview_rgb(tmp_path, sample, rng):
    labels, palette = sample
    original = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    path = write_preview(
        tmp_path / "prev" / "photo.png",
        da.from_array(original, chunks=100),
        da.from_array(labels, chunks=100),
        palette,
        max_side=128,
    )
    assert path == tmp_path / "prev" / "photo.png"
    png = np.asarray(Image.open(path))
    # stride ceil(500 / 128) = 4: halves of 75 x 125, the palette below them
    assert png.shape[1:] == (250, 3) and png.shape[0] > 75
    assert_array_equal(png[:75, :125], original[::4, ::4])
    rgba = palette.display_rgba()
    assert_array_equal(png[:75, 125:], rgba[labels[::4, ::4], :3])
    area = _swatches(png, 75)
    for color in rgba[:, :3]:
        assert _has(area, color)
    assert sorted(p.name for p in path.parent.iterdir()) == ["photo.png"]  # no temp files


def test_preview_swatches_span_the_width_with_hex_and_share(tmp_path, rng, monkeypatch):
    labels, counts = make_labels((120, 200), 6, rng)
    palette = make_palette(counts, rng)
    drawn: list[str] = []
    text = ImageDraw.ImageDraw.text

    def recording(self, xy, words, *args, **kwargs):
        drawn.append(words)
        return text(self, xy, words, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", recording)
    png = preview(
        tmp_path / "p.png", rng.integers(0, 256, (120, 200, 3), np.uint8), labels, palette
    )
    rgba = palette.display_rgba()[:, :3]
    area = _swatches(png, 120)
    # Six colours on a 400-pixel preview: one row, from the left edge to the right one.
    assert_array_equal(area[0, 0], rgba[0])
    assert_array_equal(area[0, -1], rgba[-1])
    assert all(_has(area, color) for color in rgba)
    # Each swatch says its colour and its share of the pixels, in label order.
    shares = [f"{100 * c / counts.sum():.1f}%" for c in counts]
    assert drawn == [w for pair in zip(palette.hex_colors(), shares, strict=True) for w in pair]
    # ... in ink that stands out: every swatch holds pixels of another shade (its text).
    for color in rgba:
        ys, xs = np.nonzero(np.all(area == color, axis=-1))
        box = area[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        assert np.any(box != color, axis=-1).sum() > 50


def test_preview_sixteen_colours_fill_two_even_rows(tmp_path, rng):
    labels, counts = make_labels((300, 400), 16, rng)
    palette = make_palette(counts, rng)
    png = preview(
        tmp_path / "p.png", rng.integers(0, 256, (300, 400, 3), np.uint8), labels, palette
    )
    rgba = palette.display_rgba()[:, :3]
    area = _swatches(png, 300)
    top, bottom = area[0], area[-1]
    assert_array_equal(top[0], rgba[0])
    assert_array_equal(top[-1], rgba[7])
    assert_array_equal(bottom[0], rgba[8])
    assert_array_equal(bottom[-1], rgba[15])


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_preview_grey_scaled_to_8_bit(tmp_path, rng, dtype):
    labels, counts = make_labels((64, 40), 3, rng)
    grey = np.linspace(0, 1, 64 * 40).reshape(64, 40, 1)
    original = (grey * 65535).astype(dtype) if dtype == "uint16" else grey.astype(dtype) * 7.5
    palette = make_palette(counts, rng, channels=1, dtype="uint16")
    path = write_preview(
        tmp_path / "g.png", da.from_array(original, chunks=32), da.from_array(labels), palette
    )
    png = np.asarray(Image.open(path))
    assert png.shape[1:] == (80, 3) and png.shape[0] > 64
    assert all(_has(png[64:], c) for c in palette.display_rgba()[:, :3])
    left = png[:64, :40]
    assert (left[..., 0] == left[..., 2]).all()  # grey
    assert left[0, 0, 0] == 0 and left[-1, -1, 0] == 255
    assert_array_equal(png[:64, 40:], palette.display_rgba()[labels, :3])


def test_preview_wraps_many_swatches(tmp_path, rng):
    labels, counts = make_labels((20, 30), 40, rng)
    palette = make_palette(counts, rng)
    original = da.zeros((20, 30, 3), dtype=np.uint8, chunks=10)
    png = np.asarray(
        Image.open(write_preview(tmp_path / "m.png", original, da.from_array(labels), palette))
    )
    # 60 px wide, too narrow for 40 labels: plain 8 px swatches, 7 a row in columns
    # sharing the width (edges at round(c * 60 / 7)), 6 rows for 40 colours
    assert png.shape == (20 + 6 * 8, 60, 3)
    rgba = palette.display_rgba()[:, :3]
    assert_array_equal(png[20 + 5 * 8, 34], rgba[39])  # row 5, column 4
    assert_array_equal(png[20, 59], rgba[6])  # the first row ends at the right edge
    assert all(_has(png[20:], c, least=8) for c in rgba)


def test_preview_computes_only_the_small_arrays(tmp_path, sample, rng):
    labels, palette = sample
    original = da.from_array(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8), chunks=100)
    with recorded_computes() as computes:
        write_preview(
            tmp_path / "p.png", original, da.from_array(labels, chunks=100), palette, max_side=100
        )
    assert computes.returned == [60 * 100 * 4]  # one compute: 3 channels + labels


# --- swatch_side --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "width", "expected"),
    [
        (10, 200, 20),  # the width shared by the swatches
        (3, 80, 26),  # rounded down: 3 x 26 = 78 fits in 80
        (5, 250, 32),  # at most 32
        (1, 1000, 32),
        (40, 60, 8),  # at least 8 (and wrapped onto more rows)
        (256, 100, 8),
        (4, 32, 8),
        (4, 36, 9),
        (0, 100, 32),  # no colours: not a division by zero
    ],
)
def test_swatch_side(k, width, expected):
    assert swatch_side(k, width) == expected


# --- write_preview ------------------------------------------------------------------


def preview(path, original, labels, palette, **kwargs):
    out = write_preview(path, da.from_array(original), da.from_array(labels), palette, **kwargs)
    return np.asarray(Image.open(out))


@pytest.mark.parametrize(
    ("original", "labels"),
    [((10, 12, 3), (10, 11)), ((10, 12, 3), (10, 12, 1)), ((10, 12, 3, 1), (10, 12))],
)
def test_preview_refuses_shapes_that_do_not_match(tmp_path, rng, original, labels):
    palette = make_palette(np.array([2, 1]), rng)
    with pytest.raises(ValueError) as info:
        preview(
            tmp_path / "p.png", np.zeros(original, np.uint8), np.zeros(labels, np.uint8), palette
        )
    shape = original if len(original) != 2 else (*original, 1)
    assert str(info.value) == (
        f"original (y, x, c) and labels (y, x) must match, got {shape} and {labels}"
    )
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("max_side", [0, -1, 2.5, "512", None])
def test_preview_refuses_a_bad_max_side(tmp_path, rng, max_side):
    palette = make_palette(np.array([2, 1]), rng)
    with pytest.raises(ValueError) as info:
        preview(
            tmp_path / "p.png",
            np.zeros((4, 4, 3), np.uint8),
            np.zeros((4, 4), np.uint8),
            palette,
            max_side=max_side,
        )
    assert str(info.value) == f"max_side must be a positive integer, got {max_side!r}"


@pytest.mark.parametrize(
    ("max_side", "half", "width"),
    [
        (500, (300, 500), 1000),  # fits: stride 1
        (1000, (300, 500), 1000),
        (499, (150, 250), 500),  # stride 2
        (250, (150, 250), 500),
        (249, (100, 167), 334),  # stride 3: ceil(500 / 3) = 167
        (1, (1, 1), 2),  # stride 500
    ],
)
def test_preview_stride(tmp_path, sample, rng, max_side, half, width):
    labels, palette = sample
    original = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    png = preview(tmp_path / "p.png", original, labels, palette, max_side=max_side)
    stride = -(-500 // max_side)
    assert png.shape[1:] == (width, 3) and png.shape[0] > half[0]
    assert_array_equal(png[: half[0], : half[1]], original[::stride, ::stride])
    assert_array_equal(png[half[0], 0], palette.display_rgba()[0, :3])


def test_preview_of_one_pixel_has_plain_swatches_cropped_to_its_width(tmp_path, sample, rng):
    labels, palette = sample
    original = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    png = preview(tmp_path / "p.png", original, labels, palette, max_side=1)
    # 2 px wide: no room for a label; 8 px swatches, one a row, cropped
    assert png.shape == (1 + 5 * 8, 2, 3)
    for i, color in enumerate(palette.display_rgba()[:, :3]):
        assert_array_equal(png[1 + i * 8, 0], color)


def test_preview_of_a_two_dimensional_original_is_grey(tmp_path, rng):
    labels, counts = make_labels((16, 16), 2, rng)
    palette = make_palette(counts, rng, channels=1)
    grey = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    flat = preview(tmp_path / "a.png", grey, labels, palette)
    with_axis = preview(tmp_path / "b.png", grey[:, :, None], labels, palette)
    assert_array_equal(flat, with_axis)
    assert_array_equal(flat[:16, :16], np.repeat(grey[:, :, None], 3, axis=2))


def test_preview_shows_the_first_three_channels(tmp_path, rng):
    labels, counts = make_labels((16, 16), 2, rng)
    rgba = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    png = preview(tmp_path / "p.png", rgba, labels, make_palette(counts, rng))
    assert png.shape[2] == 3
    assert_array_equal(png[:16, :16], rgba[..., :3])


def test_preview_scales_signed_integers_by_their_range(tmp_path, rng):
    labels, counts = make_labels((2, 3), 2, rng)
    grey = np.array([[-32768, 0, 32767], [-32768, -32768, 32767]], dtype=np.int16)[..., None]
    png = preview(tmp_path / "p.png", grey, labels, make_palette(counts, rng, channels=1))
    # (v + 32768) / 65535 * 255, rounded: 0, 128 (127.5 + 0.0039), 255
    assert_array_equal(png[:2, :3, 0], [[0, 128, 255], [0, 0, 255]])


def test_preview_scales_floats_from_zero_to_their_maximum(tmp_path, rng):
    labels, counts = make_labels((1, 4), 2, rng)
    values = np.array([[[0.0], [1.0], [2.0], [4.0]]], dtype=np.float32)
    png = preview(tmp_path / "p.png", values, labels, make_palette(counts, rng, channels=1))
    assert_array_equal(png[0, :4, 0], [0, 64, 128, 255])  # 0, 63.75, 127.5, 255 rounded


def test_preview_replaces_a_previous_one_and_is_readable_by_all(tmp_path, sample, rng):
    labels, palette = sample
    path = tmp_path / "p.png"
    path.write_bytes(b"an older preview")
    out = write_preview(
        str(path),
        da.from_array(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)),
        da.from_array(labels),
        palette,
    )
    assert out == path  # a Path, for a local path given as text
    assert Image.open(path).format == "PNG"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]


def test_preview_failure_leaves_no_partial_file(tmp_path, sample, monkeypatch):
    labels, palette = sample

    def failing_save(self, fp, *args, **kwargs):
        fp.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_preview(
            tmp_path / "p.png",
            da.zeros((300, 500, 3), dtype=np.uint8),
            da.from_array(labels),
            palette,
        )
    assert list(tmp_path.iterdir()) == []


def test_preview_is_one_computation(tmp_path, sample):
    labels, palette = sample
    with recorded_computes() as computes:
        write_preview(
            tmp_path / "p.png",
            da.zeros((300, 500, 3), dtype=np.uint8, chunks=100),
            da.from_array(labels, chunks=100),
            palette,
        )
    assert len(computes.keys) == 1
