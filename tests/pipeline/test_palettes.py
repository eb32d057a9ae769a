"""One choice of palette for every path, and palettes applied from a file or a store."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.datasets import load_sample_image

from kmdist import OutputError, Palette, PaletteError, learn_palette, write_segmentation
from kmdist.pipeline import SegmentOptions, load_palette
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


def test_shared_palette_over_mixed_inputs_fails_the_odd_image_alone(tmp_path, china):
    """RGB photos, an RGBA one (its alpha dropped: RGB) and a greyscale one: the grey
    image alone fails, named, and the others share one palette."""
    import imageio.v3 as iio

    from kmdist import list_segmentations, open_images
    from kmdist.pipeline import SegmentOptions, segment_batch

    folder = tmp_path / "in"
    folder.mkdir()
    crops = [china[:30, :40], china[30:60, 40:80], china[40:70, 60:100]]
    for i, crop in enumerate(crops):
        iio.imwrite(folder / f"rgb{i}.png", crop)
    alpha = np.full((*crops[0].shape[:2], 1), 200, dtype=np.uint8)
    iio.imwrite(folder / "rgba.png", np.concatenate([crops[1], alpha], axis=2))
    iio.imwrite(folder / "grey.png", crops[2].mean(axis=2).astype(np.uint8))
    out = tmp_path / "o.zarr"
    results = segment_batch(open_images(folder), out, SegmentOptions(n_colors=4), shared=True)
    by_name = {r.name: r for r in results}
    assert by_name["grey"].status == "failed"
    assert str(folder / "grey.png") in by_name["grey"].error
    assert "1 channel(s) of uint8" in by_name["grey"].error
    assert "4 image(s) with 3 of uint8" in by_name["grey"].error
    done = [r for r in results if r.status == "done"]
    assert sorted(r.name for r in done) == ["rgb0", "rgb1", "rgb2", "rgba"]
    colors = {tuple(map(tuple, r.palette.colors)) for r in done}
    assert len(colors) == 1  # one palette for all four
    assert {i.name for i in list_segmentations(out) if i.complete} == {
        "rgb0",
        "rgb1",
        "rgb2",
        "rgba",
    }
