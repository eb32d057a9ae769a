"""The Palette value (kmdist.palette._palette): validation and JSON."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from kmdist.palette._palette import Palette, PaletteError


def test_palette_json_round_trip(tmp_path):
    p = Palette(np.array([[1.5, 2, 3], [4, 5, 6]]), np.array([5, 2]), 12.0, seed=3, method="exact")
    p.save(tmp_path / "p.json")
    q = Palette.load(tmp_path / "p.json")
    assert q == p and q.seed == 3 and q.k == 2 and q.n_clusters == 2
    assert_array_equal(q.colors_as(), [[2, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match="read-only"):
        q.colors[0, 0] = 9


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("[1, 2]", "must be a JSON object"),
        ('{"colors": [[1, 2, 3]]}', r"missing \['counts', 'inertia'\]"),
        ('{"colors": [[1, 2, 3]], "counts": [1], "inertia": 0, "evil": 1}', "unknown fields"),
        ('{"colors": [[1, 2, 3]], "counts": [1, 2], "inertia": 0}', "counts must have shape"),
        ('{"colors": [[1, 2, 300]], "counts": [1], "inertia": 0}', "outside the uint8 range"),
        ('{"colors": [[1, 2, 3]], "counts": [-1], "inertia": 0}', "non-negative"),
        ('{"colors": [[1, 2, 3], [1, 1, 1]], "counts": [1, 5], "inertia": 0}', "sorted by count"),
        ('{"colors": [["a", 2, 3]], "counts": [1], "inertia": 0}', "not numeric"),
        ('{"colors": [[1, 2, 3]], "counts": [1], "inertia": NaN}', "finite"),
        (
            '{"colors": [[1, 2, 3]], "counts": [1], "inertia": 0, "color_space": "hsv"}',
            "color_space",
        ),
        ('{"colors": [[1, 2, 3]], "counts": [1.5], "inertia": 0}', "whole numbers"),
        ("{not json", "not valid JSON"),
    ],
)
def test_palette_json_validated(data, message):
    with pytest.raises(PaletteError, match=message):
        Palette.from_json(data)


def test_colours_rounded_and_clipped_to_a_dtype():
    p = Palette(np.array([[0.4, 127.5, 255.0], [254.6, 1.5, 2.5]]), np.array([3, 3]), 0.0)
    assert_array_equal(p.colors_as(), [[0, 128, 255], [255, 2, 2]])  # half to even
    assert p.colors_as().dtype == np.uint8
    assert_array_equal(p.colors_as(np.int8), [[0, 127, 127], [127, 2, 2]])  # clipped
    assert_array_equal(p.colors_as("float32"), p.colors.astype(np.float32))


def test_display_colours_scale_by_the_source_range():
    p16 = Palette(
        np.array([[65535, 0, 32768], [257, 514, 771]]), np.array([2, 1]), 0.0, dtype="uint16"
    )
    # 32768 / 65535 * 255 = 127.50..., 257 / 65535 * 255 = 1.
    assert_array_equal(p16.display_rgba(), [[255, 0, 128, 255], [1, 2, 3, 255]])
    assert p16.hex_colors() == ["#ff0080", "#010203"]
    grey = Palette(np.array([[200.0], [10.0]]), np.array([4, 4]), 0.0)
    assert_array_equal(grey.display_rgba(), [[200, 200, 200, 255], [10, 10, 10, 255]])
    # Floats: from min(0, lowest) to the highest colour; extra channels are not shown.
    pf = Palette(
        np.array([[2.0, 1.0, 0.0, 9.0], [-2.0, 0.5, 1.0, 9.0]]),
        np.array([1, 1]),
        0.0,
        dtype="float32",
    )
    scaled = np.rint((np.array([[2.0, 1.0, 0.0], [-2.0, 0.5, 1.0]]) + 2) / 11 * 255)
    assert_array_equal(pf.display_rgba()[:, :3], scaled)


def test_fewer_colours_than_asked_and_equality():
    p = Palette(np.array([[1, 2, 3]]), np.array([9]), 0.5, n_clusters=4, seed=1)
    assert p.shortfall == "only 1 distinct colour(s) in the image: 1 colour(s) instead of 4"
    assert Palette(np.array([[1, 2, 3]]), np.array([9]), 0.5).shortfall is None
    assert p == Palette(np.array([[1.0, 2.0, 3.0]]), [9], 0.5, n_clusters=4, seed=1)
    assert p != Palette(np.array([[1, 2, 3]]), np.array([9]), 0.5, n_clusters=4, seed=2)
    assert hash(p) == hash(Palette.from_json(p.to_json()))
    assert p != "a palette"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"colors": np.zeros((0, 3))}, r"colors must have shape \(k, channels\), got \(0, 3\)"),
        ({"colors": np.array([[np.nan, 0, 0]])}, "colors contain NaN or infinity"),
        ({"inertia": -1.0}, "inertia must be non-negative, got -1.0"),
        ({"method": "kmeans++"}, "method must be one of"),
        ({"dtype": "bogus"}, "dtype 'bogus' is not a NumPy dtype"),
        ({"dtype": "bool"}, "dtype must be numeric, got 'bool'"),
        ({"color_space": "lab", "colors": np.zeros((1, 4))}, "a CIELAB palette needs 3 channels"),
        ({"seed": 1.5}, "seed must be an integer or None, got 1.5"),
        ({"n_clusters": -1}, "n_clusters must be a non-negative integer, got -1"),
    ],
)
def test_palette_validated_when_made(kwargs, message):
    args = {"colors": np.array([[1, 2, 3]]), "counts": np.array([1]), "inertia": 0.0, **kwargs}
    with pytest.raises(PaletteError, match=message):
        Palette(**args)


def test_load_names_the_file(tmp_path):
    (tmp_path / "bad.json").write_text('{"colors": [[1, 2, 3]]}')
    with pytest.raises(PaletteError, match=r"bad\.json: palette is missing"):
        Palette.load(tmp_path / "bad.json")
