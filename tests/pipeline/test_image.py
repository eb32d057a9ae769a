"""One image on the chunked path (kmdist.pipeline._image): held once, labelled, previewed."""

from __future__ import annotations

import imageio.v3 as iio
import zarr
from numpy.testing import assert_array_equal
from sklearn.datasets import load_sample_image

from kmdist import open_images, open_segmentation
from kmdist.pipeline import SegmentOptions, segment_batch
from kmdist.pipeline._image import segment_one
from kmdist.store._read import is_complete


def test_preview_written(photos, tmp_path):
    refs = [r for r in open_images(photos) if r.name == "china"]
    (res,) = segment_batch(
        refs, tmp_path / "o.zarr", SegmentOptions(n_colors=5), preview_dir=tmp_path / "pv"
    )
    pic = iio.imread(res.preview)
    assert pic.shape[1] >= 2 * 100 and pic.shape[0] > 100


def test_an_image_held_on_the_cluster_is_read_once_with_the_same_output(
    tmp_path, local_client, monkeypatch
):
    # A small image is persisted on the workers between the histogram and the labelling
    # passes; a large one (here: above a lowered limit) is read twice. Same output.
    from distributed import futures_of

    from kmdist.pipeline import _image

    src = tmp_path / "photo.zarr"
    z = zarr.create_array(src, shape=(200, 300, 3), chunks=(64, 64, 3), dtype="u1")
    z[...] = load_sample_image("china.jpg")[100:300, 200:500]
    (ref,) = open_images(src)
    image = ref.open()
    held = _image.hold_if_small(image)
    assert held is not image and len(futures_of(held)) == image.npartitions
    assert_array_equal(held.compute(), image.compute())
    opts = SegmentOptions(n_colors=6)
    calls = []
    hold = _image.hold_if_small
    monkeypatch.setattr(_image, "hold_if_small", lambda im: calls.append(im) or hold(im))
    once = _image.segment_one(ref, tmp_path / "once.zarr", opts)
    assert len(calls) == 1  # the histogram path holds the image
    monkeypatch.setattr(_image, "_HOLD_BYTES", image.nbytes - 1)
    assert _image.hold_if_small(image) is image
    twice = _image.segment_one(ref, tmp_path / "twice.zarr", opts)
    assert once.status == twice.status == "done"
    a, b = (
        open_segmentation(tmp_path / "once.zarr", "photo"),
        open_segmentation(tmp_path / "twice.zarr", "photo"),
    )
    assert_array_equal(a.palette.colors, b.palette.colors)
    assert_array_equal(a.labels.compute(), b.labels.compute())


def test_a_preview_that_cannot_be_written_fails_the_image_after_its_segmentation(photos, tmp_path):
    (ref,) = [r for r in open_images(photos) if r.name == "china"]
    not_a_folder = tmp_path / "previews"
    not_a_folder.write_text("a file where the preview folder should be")
    store = tmp_path / "o.zarr"
    res = segment_one(ref, store, SegmentOptions(n_colors=4), preview_dir=not_a_folder)
    assert res.status == "failed" and not res.retryable
    assert "cannot write the preview" in res.error and str(not_a_folder) in res.error
    assert is_complete(store, "china")  # the labels were written before the preview
