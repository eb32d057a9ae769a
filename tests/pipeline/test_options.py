"""The options declared once, the Run value, and per-image results (`attempt`, `named`)."""

from __future__ import annotations

import re

import dask.array as da
import numpy as np
import pytest

from kmdist import Palette, write_segmentation
from kmdist.io import ImageRef
from kmdist.pipeline import ImageResult, SegmentOptions
from kmdist.pipeline._result import attempt, named

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


def _parser_dests(parser):
    return {a.dest: a.default for a in parser._actions if a.dest not in ("help", "inputs")}


def _slurm_module():
    import sys
    from importlib import import_module
    from pathlib import Path

    script = Path(__file__).parents[2] / "deploy" / "slurm" / "kmdist_slurm.py"
    sys.path.insert(0, str(script.parent))
    try:
        return import_module("kmdist_slurm")
    finally:
        sys.path.remove(str(script.parent))


def test_every_option_reaches_the_cli_the_flows_and_slurm():
    import inspect

    from flows.segment import build_parser, segment_archive, segment_image
    from kmdist.cli._main import _parser
    from kmdist.pipeline import CLUSTER_OPTIONS, OPTIONS, option_defaults

    names = {o.name for o in OPTIONS}
    cli_defaults, flow_defaults = option_defaults("cli"), option_defaults("flow")
    cli = _parser_dests(_parser()._subparsers._group_actions[0].choices["segment"])
    assert cli.keys() - {"output", "func"} == names
    assert {k: cli[k] for k in names} == cli_defaults
    flow_cli = _parser_dests(build_parser())
    assert flow_cli.keys() - {"output"} == names
    assert {k: flow_cli[k] for k in names} == flow_defaults
    slurm = _slurm_module().build_parser()._subparsers._group_actions[0].choices["run"]
    slurm_dests = _parser_dests(slurm)
    assert slurm_dests.keys() - {"output", "jobs", "adapt"} == names - CLUSTER_OPTIONS
    assert {k: slurm_dests[k] for k in names - CLUSTER_OPTIONS} == {
        k: v for k, v in flow_defaults.items() if k not in CLUSTER_OPTIONS
    }
    # The flows' parameters are the options, with the flows' defaults; one image has no
    # shared palette and no folders to walk.
    one_image = {"shared_palette", "follow_symlinks"}
    for flow_fn, leave_out in ((segment_archive, set()), (segment_image, one_image)):
        params = inspect.signature(flow_fn.fn).parameters
        assert set(params) - {"inputs", "source", "output"} == names - leave_out
        assert {k: params[k].default for k in names - leave_out} == {
            k: v for k, v in flow_defaults.items() if k not in leave_out
        }


def test_run_from_values_builds_each_layers_parameters_once():
    from kmdist.io import DEFAULT_MAX_PIXELS
    from kmdist.pipeline import Run

    run = Run.from_values(
        "in/",
        "out.zarr",
        {"k": 5, "attempts": 2, "seed": 7, "tol": 1e-3, "resume": True, "preview_dir": "pv"},
    )
    assert run.inputs == ("in/",) and run.output == "out.zarr" and run.preview_dir == "pv"
    o = run.options
    assert (o.n_colors, o.n_init, o.random_state, o.tol) == (5, 2, 7, 1e-3)
    assert o.max_pixels == DEFAULT_MAX_PIXELS  # the one default, without importing readers
    assert run.on_exists == "skip"
    both = {"overwrite": True, "resume": True}  # the flows' resume default: overwrite wins
    assert Run.from_values("a", "o", both).on_exists == "overwrite"
    assert Run.from_values("a", "o", {}).on_exists == "error"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"k": 0}, "k (the number of colours) must be in"),
        ({"k": 2.5}, "must be an integer"),
        ({"attempts": 0}, "attempts must be a positive integer, got 0"),
        ({"method": "fast"}, "method must be one of auto, exact, minibatch, got 'fast'"),
        ({"tol": -1.0}, "must not be negative"),
        ({"shared_palette": True, "palette": "p.json"}, "exclude each other"),
        ({"colour": "red"}, "unknown option(s): colour"),
    ],
)
def test_bad_option_values_are_refused_naming_them(values, message):
    from kmdist.pipeline import Run

    with pytest.raises(ValueError, match=re.escape(message)):
        Run.from_values("in/", "out.zarr", values)
