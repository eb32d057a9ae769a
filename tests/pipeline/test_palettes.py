"""One choice of palette for every path, and palettes applied from a file or a store."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.datasets import load_sample_image

from kmdist import (
    OutputError,
    Palette,
    PaletteError,
    SegmentOptions,
    learn_palette,
    load_palette,
    write_segmentation,
)
from kmdist.pipeline._palettes import palette_for


@pytest.fixture(scope="module")
def china():
    return np.ascontiguousarray(load_sample_image("china.jpg")[::6, ::6])


def test_numpy_and_dask_images_get_the_same_exact_palette(china):
    opts = SegmentOptions(n_colors=6)
    numpy_pal, numpy_lut = palette_for(china, opts)
    dask_pal, dask_lut = palette_for(da.from_array(china, chunks=(17, 23, 3)), opts)
    assert numpy_pal == dask_pal == learn_palette(china, 6)
    assert numpy_pal.method == "exact"
    assert_array_equal(np.asarray(numpy_lut), np.asarray(dask_lut))


def test_other_images_and_minibatch_get_no_table(china):
    grey = china[..., :1].astype(np.uint16) * 200
    pal, lut = palette_for(grey, SegmentOptions(n_colors=4))
    assert pal.method == "minibatch" and lut is None and pal.channels == 1
    pal, lut = palette_for(china, SegmentOptions(n_colors=4, method="minibatch"))
    assert pal.method == "minibatch" and lut is None


def test_load_palette_from_json_and_from_a_store(tmp_path, china):
    palette = learn_palette(china, 5)
    palette.save(tmp_path / "p.json")
    assert load_palette(str(tmp_path / "p.json")) == palette
    store = tmp_path / "s.zarr"
    labels = np.zeros((4, 4), np.uint8)
    write_segmentation(store, "china", labels, palette)
    assert load_palette(f"{store}:china") == palette
    assert load_palette(str(store)) == palette  # the store's only image
    write_segmentation(store, "other", labels, learn_palette(china[::2, ::2], 5))
    with pytest.raises(OutputError, match="more than one image; name one as"):
        load_palette(str(store))
    with pytest.raises(OutputError, match="missing: no such segmentation"):
        load_palette(f"{store}:missing")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PaletteError, match=r"bad\.json: palette is not valid JSON"):
        load_palette(str(tmp_path / "bad.json"))
    assert isinstance(load_palette(f"{store}:other"), Palette)
