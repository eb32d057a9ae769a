"""A run's summary: exact totals, every failure, the slowest images, a bounded size."""

from __future__ import annotations

import json

import numpy as np

from kmdist import Palette
from kmdist.pipeline import ImageResult, RunSummary


def result(i: int, status: str = "done", seconds: float = 0.01) -> ImageResult:
    palette = Palette(np.array([[0, 0, 0]]), np.array([1]), 0.0)
    return ImageResult(
        f"im{i}",
        f"in/im{i}.png",
        status,  # type: ignore[arg-type]
        shape=(64, 32, 3),
        palette=palette,
        seconds=seconds,
        error=f"in/im{i}.png: cannot decode the image" if status == "failed" else None,
    )


def summary_of(n: int) -> RunSummary:
    s = RunSummary()
    for i in range(n):
        s.add(result(i, seconds=i / 1000))
    s.add(result(n, "failed"))
    s.add(result(n + 1, "skipped"))
    return s


def test_totals_failures_and_slowest():
    s = summary_of(100)
    assert (s.done, s.failed, s.skipped, s.total) == (100, 1, 1, 102)
    assert s.pixels == 100 * 64 * 32
    assert s.failures == [("im100", "in/im100.png", "in/im100.png: cannot decode the image")]
    assert [name for _, name in s.slowest] == [f"im{i}" for i in range(99, 89, -1)]
    assert abs(s.image_seconds - sum(i / 1000 for i in range(100))) < 1e-9


def test_merged_batches_equal_one_summary():
    whole = summary_of(50)
    parts = RunSummary()
    for start in range(0, 50, 7):
        part = RunSummary()
        for i in range(start, min(50, start + 7)):
            part.add(result(i, seconds=i / 1000))
        parts.merge(part)
    tail = RunSummary()
    tail.add(result(50, "failed"))
    tail.add(result(51, "skipped"))
    parts.merge(tail)
    for field in ("done", "failed", "skipped", "pixels", "failures", "slowest"):
        assert getattr(parts, field) == getattr(whole, field), field


def test_size_does_not_grow_with_the_archive():
    small, large = summary_of(10), summary_of(100_000)
    small_json = json.dumps({**small.as_dict(), "wall_seconds": 0, "images_per_second": 0})
    large_json = json.dumps({**large.as_dict(), "wall_seconds": 0, "images_per_second": 0})
    # Only digits differ (counts, names and times of the ten slowest): the same failure
    # and ten slowest images either way, never a row per image.
    assert len(large_json) - len(small_json) < 150 and len(large_json) < 1_000
    assert len(large.markdown("run")) - len(small.markdown("run")) < 150
    assert "| im100000 | in/im100000.png |" in large.markdown("run")


def test_run_error_is_reported_apart_and_counts_no_image():
    s = summary_of(3)
    s.run_error = "photos/: file not found"
    d = s.as_dict()
    assert (d["images"], d["failed"], d["run_error"]) == (5, 1, "photos/: file not found")
    assert [f["image"] for f in d["failures"]] == ["im3"]
    md = s.markdown("run")
    assert "## Run failed\n\nphotos/: file not found" in md
    assert RunSummary().as_dict()["run_error"] is None


def test_failure_table_cells_survive_pipes_and_line_breaks():
    s = RunSummary()
    bad = ImageResult("a|b", "in/a|b.png", "failed", error="line one\nline | two")
    s.add(bad)
    rows = [line for line in s.markdown("run").splitlines() if line.startswith("| a")]
    assert rows == ["| a\\|b | in/a\\|b.png | line one line \\| two |"]


def test_notes_of_fewer_colours_are_counted_and_the_first_kept():
    # One colour asked twice for: the palette says so, and the summary keeps the note
    # (the flows log it) in a size that does not grow with the archive.
    def short(i):
        palette = Palette(np.array([[0, 0, 0]]), np.array([1]), 0.0, n_clusters=2)
        return ImageResult(f"im{i}", f"in/im{i}.png", "done", shape=(4, 4, 3), palette=palette)

    a, b = RunSummary(), RunSummary()
    for i in range(8):
        a.add(short(i))
    for i in range(8, 20):
        b.add(short(i))
    a.merge(b)
    assert a.warnings == 20 and len(a.warned) == 10
    assert a.warned[0] == (
        "im0",
        "only 1 distinct colour(s) in the image: 1 colour(s) instead of 2",
    )
    report = a.markdown("t")
    assert "## Warnings" in report and "- and 10 more" in report
    assert json.loads(json.dumps(a.as_dict()))["warnings"] == 20
    assert summary_of(3).warnings == 0
