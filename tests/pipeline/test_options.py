"""Options and per-image results (kmdist.pipeline._options): `attempt` and `named`."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from kmdist import ImageRef, ImageResult, Palette, SegmentOptions, write_segmentation
from kmdist.pipeline._options import attempt, named

REF = ImageRef("photo", "in/photo.png")


def test_histograms_for_8_bit_rgb_unless_minibatch_is_asked_for():
    rgb = np.zeros((4, 5, 3), np.uint8)
    assert SegmentOptions().uses_histogram(rgb)
    assert SegmentOptions().uses_histogram(da.from_array(rgb))
    assert not SegmentOptions(method="minibatch").uses_histogram(rgb)
    assert not SegmentOptions().uses_histogram(rgb.astype(np.uint16))
    assert not SegmentOptions().uses_histogram(rgb[..., :1])


def test_palette_kwargs_pass_max_iter_only_when_set_and_runs_differ():
    opts = SegmentOptions(n_colors=5, color_space="lab", tol=1e-3)
    kw = opts.palette_kwargs()
    assert "max_iter" not in kw and "n_colors" not in kw
    assert (kw["color_space"], kw["tol"], kw["n_init"]) == ("lab", 1e-3, opts.n_init)
    assert SegmentOptions(max_iter=7).palette_kwargs()["max_iter"] == 7
    assert SegmentOptions().run != SegmentOptions().run  # one id a run, for writer claims


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [(ValueError("cannot decode"), False), (OSError("connection reset"), True)],
)
def test_a_problem_becomes_a_failed_result_naming_the_file(tmp_path, exc, retryable):
    def step():
        raise exc

    res = attempt(REF, tmp_path / "o.zarr", "error", step)
    assert isinstance(res, ImageResult)
    assert (res.name, res.source, res.status, res.ok) == ("photo", REF.source, "failed", False)
    assert res.error == f"{REF.source}: {exc}" and res.retryable is retryable
    assert res.seconds >= 0


def test_other_exceptions_propagate_and_results_are_timed(tmp_path):
    def broken():
        raise TypeError("a bug, not a bad image")

    with pytest.raises(TypeError, match="a bug"):
        attempt(REF, tmp_path / "o.zarr", "error", broken)
    done = ImageResult("photo", REF.source, "done", seconds=-1.0)
    assert attempt(REF, tmp_path / "o.zarr", "error", lambda: done).seconds >= 0
    assert attempt(REF, tmp_path / "o.zarr", "error", lambda: None) is None


def test_a_complete_image_is_skipped_without_running_its_step(tmp_path):
    store = tmp_path / "o.zarr"
    palette = Palette(np.array([[0, 0, 0]]), np.array([1]), 0.0)
    write_segmentation(store, "photo", np.zeros((2, 2), np.uint8), palette)
    calls = []
    res = attempt(REF, store, "skip", lambda: calls.append(1))
    assert res.status == "skipped" and res.ok and calls == []
    assert attempt(REF, store, "overwrite", lambda: calls.append(1)) is None and calls == [1]


def test_named_prefixes_the_source_once():
    assert named(REF, ValueError("bad header")) == "in/photo.png: bad header"
    assert named(REF, ValueError("in/photo.png is truncated")) == "in/photo.png is truncated"
