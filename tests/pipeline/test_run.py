"""The run plan (kmdist.pipeline.Plan): checks, retries, units, bounded work in flight."""

from __future__ import annotations

import errno
import os

import imageio.v3 as iio
import numpy as np
import pytest

from kmdist import list_segmentations
from kmdist.pipeline import UNIT_MAX, Plan, Run, RunError, RunSummary


def plan_of(inputs, output, waits=None, **values):
    sleep = (waits.append if waits is not None else None) or (lambda s: None)
    return Plan(Run.from_values(inputs, output, {"k": 3, **values}), sleep=sleep)


def test_a_missing_input_refuses_the_run_naming_it(tmp_path):
    plan = plan_of(tmp_path / "nope", tmp_path / "o.zarr")
    with pytest.raises(RunError, match="nope") as err:
        plan.check()
    assert plan.summary.run_error == str(err.value)
    assert not (tmp_path / "o.zarr").exists()


def test_a_palette_that_cannot_be_read_refuses_the_run(photos, tmp_path):
    plan = plan_of(photos, tmp_path / "o.zarr", palette=str(tmp_path / "none.json"))
    with pytest.raises(RunError, match=r"palette .*none\.json"):
        plan.check()


def test_a_listing_hiccup_is_retried_after_a_wait(photos, tmp_path, monkeypatch):
    from kmdist.io import _open

    calls, real = [], _open.stream_input

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("Input/output error")
        return real(*args, **kwargs)

    monkeypatch.setattr(_open, "stream_input", flaky)
    waits: list[float] = []
    found = plan_of(photos, tmp_path / "o.zarr", waits).check()
    assert next(found).name and len(calls) == 2 and len(waits) == 1 and waits[0] >= 1.0


def test_an_io_error_is_retried_and_counted_a_bad_image_is_not(photos, tmp_path, monkeypatch):
    from kmdist.pipeline import _image

    calls, real = [], _image.label_and_write

    def flaky(ref, *args, **kwargs):
        calls.append(ref.name)
        if calls.count(ref.name) == 1 and ref.name == "china":
            raise OSError("Input/output error (a hiccup of the shared disk)")
        return real(ref, *args, **kwargs)

    monkeypatch.setattr(_image, "label_and_write", flaky)
    waits: list[float] = []
    plan = plan_of(photos, tmp_path / "o.zarr", waits)
    plan.check()
    results = {r.name: r for r in plan.results()}
    assert results["china"].status == "done" and results["china"].extra["attempts"] == 2
    assert results["broken"].status == "failed" and results["broken"].extra["attempts"] == 1
    s = plan.summary
    assert (s.done, s.failed, s.retried, len(waits)) == (2, 1, 1, 1)
    assert calls.count("china") == 2
    assert sorted(i.name for i in list_segmentations(tmp_path / "o.zarr") if i.complete) == [
        "china",
        "sub_flower",
    ]


def test_an_io_error_that_lasts_fails_the_image_after_the_retries(photos, tmp_path, monkeypatch):
    from kmdist.pipeline import _image

    def broken(ref, *args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(_image, "label_and_write", broken)
    waits: list[float] = []
    plan = plan_of(photos / "china.png", tmp_path / "o.zarr", waits)
    plan.check()
    (result,) = plan.results()
    assert result.status == "failed" and "No space left" in (result.error or "")
    assert plan.summary.retried == 2 and len(waits) == 2 and waits[1] > waits[0]


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """A folder of 700 tiny PNGs: more than a look-ahead of units."""
    root = tmp_path_factory.mktemp("many")
    pixels = np.zeros((2, 2, 3), np.uint8)
    for i in range(700):
        iio.imwrite(root / f"p{i:04d}.png", pixels)
    return root


class Finished:
    """A unit already run: what `Plan.drive` needs of a Prefect future."""

    def __init__(self, unit, fail=False):
        self.unit, self.fail = unit, fail

    def result(self):
        if self.fail:
            raise RuntimeError("the worker died twice")
        part = RunSummary()
        part.done = len(self.unit)
        return part


def test_units_are_cut_from_the_stream_and_a_bounded_number_is_in_flight(many, tmp_path):
    plan = plan_of(many, tmp_path / "o.zarr")
    found = plan.check()
    in_flight, listed = [], []

    def submit(unit):
        listed.append(found.count)
        return Finished(unit, fail=unit[0].name == "p0000")

    def first_done(running):
        in_flight.append(len(running))
        return running[0]

    sizes = [len(unit) for unit, _ in plan.drive(submit, first_done, concurrency=1)]
    # 700 images, two units a thread: a look-ahead of 2 * 256 read, then 256 at a time.
    assert sizes == [UNIT_MAX, UNIT_MAX, 700 - 2 * UNIT_MAX]
    assert max(in_flight) == 2 and listed[0] <= 2 * UNIT_MAX
    s = plan.summary
    # The unit that raised fails its images, naming the reason; the others count.
    assert (s.done, s.failed) == (700 - UNIT_MAX, UNIT_MAX)
    assert s.failures[0][2] == "the worker died twice"


def test_a_short_stream_is_split_two_units_a_thread(many, tmp_path):
    plan = plan_of(many, tmp_path / "o.zarr")
    plan.check()
    units = list(plan.units(concurrency=16))
    assert len(units) == 32 and sum(map(len, units)) == 700


# --- storage faults: permanent errors fail fast; an unusable store stops the run -----


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    """A folder of eight tiny PNGs."""
    root = tmp_path_factory.mktemp("eight")
    for i in range(8):
        iio.imwrite(root / f"p{i}.png", np.full((4, 4, 3), 30 * i, np.uint8))
    return root


def refusing(code, names=None):
    """A `label_and_write` whose store refuses images `names` (all by default) with
    `code`, as the store's writes say it: an OutputError raised from the OSError."""
    from kmdist.pipeline import _image
    from kmdist.store import OutputError

    real = _image.label_and_write

    def write(ref, *args, **kwargs):
        if names is None or ref.name in names:
            try:
                raise OSError(code, os.strerror(code))
            except OSError as exc:
                raise OutputError(f"out.zarr/{ref.name}: cannot write: {exc.strerror}") from exc
        return real(ref, *args, **kwargs)

    return write


@pytest.mark.parametrize(
    "code", [errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS]
)
def test_a_permanent_store_error_is_not_retried(photos, tmp_path, monkeypatch, code):
    from kmdist.pipeline import _image

    monkeypatch.setattr(_image, "label_and_write", refusing(code))
    waits: list[float] = []
    plan = plan_of(photos / "china.png", tmp_path / "o.zarr", waits)
    plan.check()
    (result,) = plan.results()
    assert result.status == "failed" and os.strerror(code) in (result.error or "")
    assert (result.errno, result.permanent, result.retryable) == (code, True, False)
    assert plan.summary.retried == 0 and waits == [] and plan.summary.run_error is None


def test_a_passing_store_error_is_retried_even_when_the_store_names_it(
    photos, tmp_path, monkeypatch
):
    from kmdist.pipeline import _image

    calls: list[str] = []
    once = refusing(errno.ECONNRESET)
    real = _image.label_and_write

    def flaky(ref, *args, **kwargs):
        calls.append(ref.name)
        return (once if len(calls) == 1 else real)(ref, *args, **kwargs)

    monkeypatch.setattr(_image, "label_and_write", flaky)
    waits: list[float] = []
    plan = plan_of(photos / "china.png", tmp_path / "o.zarr", waits)
    plan.check()
    (result,) = plan.results()
    assert result.status == "done" and result.extra["attempts"] == 2
    assert plan.summary.retried == 1 and len(waits) == 1


def test_an_unusable_store_stops_the_run_after_three_images_in_a_row(eight, tmp_path, monkeypatch):
    from kmdist.pipeline import _image
    from kmdist.pipeline._run import STOP_AFTER

    monkeypatch.setattr(_image, "label_and_write", refusing(errno.ENOSPC, {"p2", "p3", "p4"}))
    plan = plan_of(eight, tmp_path / "o.zarr")
    plan.check()
    results = list(plan.results())
    s = plan.summary
    assert STOP_AFTER == 3
    assert [(r.name, r.status) for r in results] == [
        ("p0", "done"),
        ("p1", "done"),
        ("p2", "failed"),
        ("p3", "failed"),
        ("p4", "failed"),
    ]
    # Listed one at a time here: the rest of the listing is not read to count it.
    assert (s.done, s.failed, s.not_attempted, s.retried) == (2, 3, 0, 0)
    assert s.run_error == (
        f"{tmp_path / 'o.zarr'}: No space left on device (3 images in a row): the output "
        "store cannot be written; stopped, the inputs not yet listed not attempted; free "
        "some space, then rerun with --resume"
    )
    assert s.as_dict()["not_attempted"] == 0


def test_a_stop_after_the_listing_counts_the_images_not_attempted(eight, tmp_path, monkeypatch):
    from kmdist.pipeline import _image

    monkeypatch.setattr(_image, "label_and_write", refusing(errno.ENOSPC))
    # A shared palette's step lists every image first.
    plan = plan_of(eight, tmp_path / "o.zarr", shared_palette=True)
    plan.check()
    results = list(plan.results())
    s = plan.summary
    assert len(results) == 3 and (s.failed, s.not_attempted) == (3, 5)
    assert "stopped, 5 image(s) not attempted; free some space" in (s.run_error or "")


def test_failures_broken_by_a_success_or_another_error_do_not_stop_the_run(
    eight, tmp_path, monkeypatch
):
    from kmdist.pipeline import _image

    full = refusing(errno.ENOSPC, {"p0", "p1", "p3", "p4"})
    denied = refusing(errno.EACCES, {"p5"})

    def write(ref, *args, **kwargs):
        return (denied if ref.name == "p5" else full)(ref, *args, **kwargs)

    monkeypatch.setattr(_image, "label_and_write", write)
    plan = plan_of(eight, tmp_path / "o.zarr")
    plan.check()
    results = list(plan.results())
    assert len(results) == 8 and plan.summary.run_error is None
    assert (plan.summary.done, plan.summary.failed) == (3, 5)


def test_a_driven_plan_stops_submitting_units_and_raises(many, tmp_path, monkeypatch):
    from kmdist.pipeline import _image

    monkeypatch.setattr(_image, "label_and_write", refusing(errno.EROFS))
    plan = plan_of(many, tmp_path / "o.zarr")
    plan.check()
    submitted: list[list] = []

    class Now:
        def __init__(self, unit):
            submitted.append(unit)
            self.part = plan.segment_unit(unit)

        def result(self):
            return self.part

    with pytest.raises(RunError, match=r"Read-only file system \(3 images in a row\)") as err:
        for _ in plan.drive(Now, lambda running: running[0], 1):
            pass
    s = plan.summary
    # Each unit submitted before the stop met it; none after.
    assert len(submitted) == 2 and s.failed == 3 and s.done == 0
    # The look-ahead of units was listed (2 x 256), the rest of the folder not.
    assert s.not_attempted == 512 - 3 and s.run_error == str(err.value)
    assert "not attempted: 509 image(s) listed so far and the inputs not yet" in s.run_error
    assert "make it writable, then rerun with --resume" in s.run_error
