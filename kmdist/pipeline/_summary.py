"""What a run reports, in a size that does not grow with the archive.

Counts, pixels and seconds add up; every failure is kept (a run's failures are what its
user must act on); of the images that succeeded only the slowest few are kept. The detail
of every image is in the store (`kmdist info`), not here.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Any

from kmdist.pipeline._result import ImageResult

__all__ = ["RunSummary"]

# Slowest images kept by a summary.
_SLOWEST = 10


@dataclass
class RunSummary:
    """Running totals of a batch's results; `add` one result, `merge` another summary.

    Attributes
    ----------
    done, skipped, failed : int
        Images segmented, skipped (complete from an earlier run), failed.
    pixels : int
        Pixels (y * x) of the images segmented.
    image_seconds : float
        Sum of the images' own times (they overlap on a cluster).
    failures : list of (name, source, error)
        Every failed image, in the order seen.
    retryable : int
        Failures from I/O errors that another attempt may not meet.
    retried : int
        Images tried again after an I/O error (each retry counted).
    warnings : int
        Images segmented with a note for their user (fewer colours than asked for).
    warned : list of (name, note)
        The first of those notes (at most 10), in the order seen.
    slowest : list of (seconds, name)
        The slowest images segmented, slowest first (at most 10).
    run_error : str or None
        Why the run itself stopped (its inputs, palette or store), not any one image's
        failure: it is reported apart and counts no image.
    not_attempted : int
        Images listed but left unfinished when the run stopped (`run_error`): neither
        done nor failed, and not counted in `total`. A lower bound when the listing
        had not ended.
    """

    done: int = 0
    skipped: int = 0
    failed: int = 0
    pixels: int = 0
    image_seconds: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    retryable: int = 0
    retried: int = 0
    warnings: int = 0
    warned: list[tuple[str, str]] = field(default_factory=list)
    slowest: list[tuple[float, str]] = field(default_factory=list)
    run_error: str | None = None
    not_attempted: int = 0
    started: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def total(self) -> int:
        """Images accounted for so far."""
        return self.done + self.skipped + self.failed

    def add(self, result: ImageResult) -> None:
        """Count one image's result."""
        if result.status == "failed":
            self.failed += 1
            self.retryable += result.retryable
            self.failures.append((result.name, result.source, result.error or "failed"))
            return
        if result.status == "skipped":
            self.skipped += 1
            return
        self.done += 1
        note = result.palette.shortfall if result.palette is not None else None
        if note is not None:
            self._warn(1, [(result.name, note)])
        if result.shape:
            self.pixels += int(result.shape[0]) * int(result.shape[1])
        self.image_seconds += result.seconds
        self._keep_slow([(result.seconds, result.name)])

    def merge(self, other: RunSummary) -> None:
        """Add the counts of `other` (another batch of the same run)."""
        self.done += other.done
        self.skipped += other.skipped
        self.failed += other.failed
        self.retryable += other.retryable
        self.retried += other.retried
        self._warn(other.warnings, other.warned)
        self.pixels += other.pixels
        self.image_seconds += other.image_seconds
        self.failures.extend(other.failures)
        self._keep_slow(other.slowest)
        self.not_attempted += other.not_attempted
        self.run_error = self.run_error or other.run_error

    def _warn(self, count: int, notes: list[tuple[str, str]]) -> None:
        self.warnings += count
        self.warned.extend(notes[: _SLOWEST - len(self.warned)])

    def _keep_slow(self, items: list[tuple[float, str]]) -> None:
        self.slowest = heapq.nlargest(_SLOWEST, [*self.slowest, *items])

    def as_dict(self) -> dict[str, Any]:
        """Return the summary as JSON-serialisable values, with the wall time so far."""
        wall = time.perf_counter() - self.started
        return {
            "images": self.total,
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "retried": self.retried,
            "warnings": self.warnings,
            "megapixels": round(self.pixels / 1e6, 3),
            "wall_seconds": round(wall, 2),
            "images_per_second": round(self.done / wall, 2) if wall > 0 else None,
            "failures": [
                {"image": name, "source": source, "error": error}
                for name, source, error in self.failures
            ],
            "slowest": [{"image": name, "seconds": round(s, 3)} for s, name in self.slowest],
            "run_error": self.run_error,
            "not_attempted": self.not_attempted,
        }

    def markdown(self, title: str) -> str:
        """Return the summary as a Markdown report (a Prefect artifact)."""
        d = self.as_dict()
        lines = [
            f"# {title}",
            "",
            f"{d['images']} image(s): {d['done']} done, {d['skipped']} skipped, "
            f"{d['failed']} failed; {d['megapixels']} megapixels in {d['wall_seconds']} s"
            f" ({d['images_per_second']} images/s).",
        ]
        if self.run_error is not None:
            lines += ["", "## Run failed", "", self.run_error]
        if self.failures:
            lines += ["", "## Failed", "", "| image | source | error |", "|---|---|---|"]
            lines += [f"| {_cell(n)} | {_cell(s)} | {_cell(e)} |" for n, s, e in self.failures]
        if self.warned:
            more = self.warnings - len(self.warned)
            lines += ["", "## Warnings", ""]
            lines += [f"- {_cell(n)}: {_cell(w)}" for n, w in self.warned]
            lines += [f"- and {more} more"] if more else []
        if self.slowest:
            lines += ["", "## Slowest", "", "| image | seconds |", "|---|---|"]
            lines += [f"| {_cell(n)} | {s:.2f} |" for s, n in self.slowest]
        lines += ["", "Per-image detail: `kmdist info --summary STORE` or `kmdist info STORE`."]
        return "\n".join(lines)


def _cell(text: str) -> str:
    """`text` as one Markdown table cell: a ``|`` or a line break would end it early."""
    return " ".join(text.split()).replace("|", "\\|")
