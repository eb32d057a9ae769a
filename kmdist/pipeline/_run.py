"""The run plan: one engine for the ``kmdist`` command, the Prefect flows and SLURM.

A front end builds a `Run` (`kmdist.pipeline.Run.from_values`) and drives a `Plan`:

1. `Plan.cluster`: the Dask cluster, started in the background meanwhile;
2. `Plan.check`: every input checked and the first image found, a saved palette read,
   before anything is written (a refusal of the whole run raises `RunError`);
3. `Plan.learn_shared`: with a shared palette, one palette from every image;
4. the images, segmented and written as their palettes are ready: `Plan.results` in
   one local loop (the CLI), or `Plan.drive` with units of the plan submitted elsewhere
   (a Prefect task each), a bounded number in flight; `Plan.segment` runs one unit,
   retries the images that met a passing I/O error, and stops the run when the output
   store itself refuses every write (`STOP_AFTER`);
5. `Plan.summary`: the totals, whose size does not grow with the archive.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from kmdist.io import ImageReadError, ImageRef
from kmdist.palette import Palette
from kmdist.pipeline._options import Run
from kmdist.pipeline._result import ImageResult
from kmdist.pipeline._summary import RunSummary

__all__ = ["RETRIES", "STOP_AFTER", "UNIT_MAX", "UNIT_MIN", "CountedRefs", "Plan", "RunError"]

# Most and least images in one unit of a plan driven elsewhere (`Plan.units`).
UNIT_MAX = 256
UNIT_MIN = 16
# Further attempts at an image, or at the listing, after an I/O error; the first waits
# `_BACKOFF` seconds, each next one twice as long (with jitter).
RETRIES = 2
_BACKOFF = 1.0
# Images in a row failed by the same permanent error of the output store (a full disk,
# a write denied, a read-only file system) that stop the run. One such failure can be
# the image's own (the largest image overflowing a disk that smaller ones still fit),
# two can be two large images; three different images in a row, none succeeding in
# between, are the store. Waiting longer costs more images written in vain (each runs
# to its write before failing); stopping on the first would stop for one image.
STOP_AFTER = 3
# What to do about a store that refuses writes, by errno.
_REMEDY = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (quota)"}


class RunError(ValueError):
    """The run as a whole is refused or stopped: its inputs, palette or store."""


class CountedRefs:
    """Refs from a stream (`kmdist.iter_images`), counted as they are listed.

    For progress that stays honest when the total is not known until the listing ends:
    the engine reads ahead of its work, so `count` is at least the images finished.
    """

    def __init__(self, refs: Iterable[ImageRef]) -> None:
        self._refs = iter(refs)
        self._first: ImageRef | None = None  # found by `listing`, not yet taken
        self.count = 0
        self.done = False  # the listing has ended: `count` is the total

    @classmethod
    def listing(
        cls,
        inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        follow_symlinks: bool = False,
    ) -> CountedRefs:
        """Start listing `inputs` with `kmdist.iter_images`, its first image found.

        Raises
        ------
        ImageReadError
            An input does not exist, a pattern matches nothing, or no image was found.
        """
        from kmdist.io import iter_images

        found = cls(iter_images(inputs, follow_symlinks=follow_symlinks))
        first = next(found, None)
        if first is None:
            names = [inputs] if isinstance(inputs, str | os.PathLike) else inputs
            raise ImageReadError(" ".join(map(str, names)), "no images found")
        found._first = first
        return found

    def __iter__(self) -> CountedRefs:
        return self

    def __next__(self) -> ImageRef:
        if self._first is not None:  # counted when `listing` found it
            ref, self._first = self._first, None
            return ref
        try:
            ref = next(self._refs)
        except StopIteration:
            self.done = True
            raise
        self.count += 1
        return ref

    def so_far(self) -> str:
        """Give the count so far: ``N+`` while the listing goes on, ``N`` once it ended."""
        return str(self.count) if self.done else f"{self.count}+"


class Done(Protocol):
    """What `Plan.drive` needs of a submitted unit: its summary, once finished."""

    def result(self) -> RunSummary: ...


F = TypeVar("F", bound=Done)


def _with_retries[T](step: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
    """Run `step`, again after an I/O error (not a bad input) up to `RETRIES` times."""
    for attempt in range(RETRIES + 1):
        try:
            return step()
        except OSError:
            if attempt == RETRIES:
                raise
        sleep(_backoff(attempt))
    raise AssertionError("unreachable")


def _backoff(attempt: int) -> float:
    """Seconds before retry `attempt` (0 first): doubling, with up to half of it as jitter."""
    wait = _BACKOFF * 2**attempt
    return wait + random.uniform(0, wait / 2)


class Plan:
    """A `Run` executed: the listing, the palette step, the units of work, the summary.

    Parameters
    ----------
    run : Run
        What to segment, where and how.
    sleep : callable, default time.sleep
        Waits between retries (tests pass a recorder).

    Attributes
    ----------
    summary : RunSummary
        The totals so far; `summary.run_error` says why a run stopped.
    found : CountedRefs or None
        The listing, once `check` has started it.
    palette : Palette or None
        The palette every image is labelled with (saved or shared), if any.
    """

    def __init__(self, run: Run, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.run = run
        self.summary = RunSummary()
        self.found: CountedRefs | None = None
        self.palette: Palette | None = None
        self._lut: Any = None
        self._refs: Iterator[ImageRef] = iter(())
        self._sleep = sleep
        # Why the store was found unusable (`STOP_AFTER`); shared by the units in flight.
        self._halted: str | None = None
        self._remedy = ""

    @contextmanager
    def cluster(self) -> Iterator[Callable[[], Any]]:
        """Start the run's Dask cluster in the background; yield a function to wait for it.

        A LocalCluster of the kind that suits the inputs (`workers_kind`) unless the run
        names a scheduler; it starts while the inputs are checked and is closed after.
        """
        from kmdist._dask import dask_client_soon
        from kmdist.pipeline._kind import workers_kind

        run = self.run
        with dask_client_soon(
            run.dask_address,
            n_workers=run.n_workers,
            processes=workers_kind(run.inputs, run.processes),
            verbose=run.verbose,
        ) as client:
            yield client

    def check(self) -> CountedRefs:
        """Check every input, find the first image, read a saved palette.

        Before anything is written; an I/O error is retried. The listing goes on as the
        images are segmented: never held whole.

        Raises
        ------
        RunError
            An input does not exist, no image was found, or the palette cannot be read.
        """
        from kmdist.pipeline._palettes import load_palette

        run = self.run
        try:
            self.found = _with_retries(
                lambda: CountedRefs.listing(run.inputs, follow_symlinks=run.follow_symlinks),
                self._sleep,
            )
        except (ValueError, OSError) as exc:
            raise self._stop(exc) from exc
        self._refs = self.found
        if run.palette is not None:
            try:
                self.palette = load_palette(run.palette)
            except (ValueError, OSError) as exc:
                raise self._stop(exc, f"palette {run.palette}: ") from exc
        return self.found

    def learn_shared(self) -> list[ImageResult]:
        """With a shared palette asked for, learn it from every image; return those left out.

        The one step that holds the list of images: every histogram is needed before the
        first image is labelled. Images that cannot be read, or of another kind than
        most, fail alone and are counted.
        """
        from kmdist.pipeline._palettes import shared_or_failed

        if not self.run.shared_palette or self.palette is not None:
            return []
        self.palette, self._lut, todo, failed = shared_or_failed(list(self._refs), self.run.options)
        self._refs = iter(todo)
        for result in failed:
            self.summary.add(result)
        return failed

    def units(self, concurrency: int) -> Iterator[list[ImageRef]]:
        """Cut the images into units of `UNIT_MIN` to `UNIT_MAX`, two per unit in flight.

        For a plan driven elsewhere (a Prefect task a unit), whose cost per unit
        outweighs a thumbnail's work: 200 thumbnails in 8 tasks of 25 took 0.4-0.7x the
        time of 16 tasks of 13 (docs/benchmarks.md). The stream is read a unit at a time
        after a look-ahead of ``2 * concurrency * UNIT_MAX`` images: a stream that ends
        within it is split evenly, a longer one in units of `UNIT_MAX`.
        """
        head = list(itertools.islice(self._refs, 2 * concurrency * UNIT_MAX))
        n = len(head)
        size = max(min(UNIT_MIN, n), min(UNIT_MAX, -(-n // (2 * concurrency))))
        stream = itertools.chain(head, self._refs)
        del head
        while unit := list(itertools.islice(stream, size)):
            yield unit

    def segment(self, refs: Iterable[ImageRef], counts: RunSummary) -> Iterator[ImageResult]:
        """Segment `refs` on the run's cluster, yielding each image's result as it ends.

        An image that met a passing I/O error (not a problem of the image, nor a full
        or read-only store) is tried again, up to `RETRIES` times with a growing wait,
        once the others are done; a complete output it left is then kept. The retries
        are counted in `counts`, the results are not (the caller adds them).

        When `STOP_AFTER` images in a row fail with the same permanent error of the
        output store, the store is unusable: no image is started after that (in any
        unit of the plan), those in flight end and are reported, and
        `counts.run_error` says why.
        """
        from kmdist.pipeline._batch import iter_segment

        run = self.run
        pending: dict[str, ImageRef] = {}
        streak: list[int] = []  # errnos of the store's latest permanent failures in a row

        def tracked(refs: Iterable[ImageRef]) -> Iterator[ImageRef]:
            stream = iter(refs)
            while self._halted is None:  # checked before an image is taken from the listing
                ref = next(stream, None)
                if ref is None:
                    return
                pending[ref.name] = ref
                yield ref

        on_exists = run.on_exists
        for attempt in range(RETRIES + 1):
            again: list[ImageRef] = []
            stream = iter_segment(
                tracked(refs),
                run.output,
                run.options,
                palette=self.palette,
                lut=self._lut,
                on_exists=on_exists,
                preview_dir=run.preview_dir,
            )
            for result in stream:
                ref = pending.pop(result.name, None)
                retry = attempt < RETRIES and self._halted is None
                if result.retryable and retry and ref is not None:
                    again.append(ref)
                    continue
                result.extra["attempts"] = attempt + 1
                yield result
                # Stopped: no image is started after this; those in flight end first, so
                # that no write is cut off by the cluster closing.
                self._watch(result, streak)
            if self._halted is not None:
                counts.run_error = f"{self._halted}; {self._remedy}"
                return
            if not again:
                return
            counts.retried += len(again)
            self._sleep(_backoff(attempt))
            refs = again
            # What the failed attempt completed is kept, never overwritten unasked.
            on_exists = "overwrite" if run.on_exists == "overwrite" else "skip"

    def _watch(self, result: ImageResult, streak: list[int]) -> bool:
        """Add `result` to the `streak` of permanent store failures; True if the run stops."""
        code = result.errno
        if result.status != "failed" or not result.permanent or code is None:
            streak.clear()
            return False
        if streak and streak[-1] != code:
            streak.clear()
        streak.append(code)
        if len(streak) < STOP_AFTER or self._halted is not None:
            return False
        self._halted = (
            f"{self.run.output}: {os.strerror(code)} ({STOP_AFTER} images in a row): the "
            "output store cannot be written"
        )
        self._remedy = f"{_REMEDY.get(code, 'make it writable')}, then rerun with --resume"
        return True

    def segment_unit(self, refs: Sequence[ImageRef]) -> RunSummary:
        """Segment one unit of the plan; return its totals (a Prefect task's work)."""
        part = RunSummary()
        for result in self.segment(refs, part):
            part.add(result)
        if part.run_error is not None:
            part.not_attempted = len(refs) - part.total
        return part

    def drive(
        self,
        submit: Callable[[list[ImageRef]], F],
        first_done: Callable[[list[F]], F],
        concurrency: int,
    ) -> Iterator[tuple[list[ImageRef], RunSummary]]:
        """Run the plan's units through `submit`, at most ``2 * concurrency`` in flight.

        `submit(unit)` starts a unit elsewhere (`segment_unit` as a Prefect task) and
        returns something with ``result()``; `first_done(running)` waits for one of
        them. Yields each unit with its totals, merged into `summary`, as it ends; a
        unit that raised counts its images as failed with the reason.

        Raises
        ------
        RunError
            The output store cannot be written (`segment`): no unit is submitted after
            that, and the error is raised once the units in flight have ended.
        """
        units = self.units(concurrency)
        running: dict[F, list[ImageRef]] = {}
        for unit in itertools.islice(units, 2 * concurrency):
            running[submit(unit)] = unit
        while running:
            future = first_done(list(running))
            unit = running.pop(future)
            try:
                part = future.result()
            except Exception as exc:  # the unit itself failed: its images, with the reason
                part = RunSummary()
                for ref in unit:
                    part.add(ImageResult(ref.name, ref.source, "failed", error=str(exc)))
            self.summary.merge(part)
            nxt = next(units, None) if self._halted is None else None
            if nxt is not None:
                running[submit(nxt)] = nxt
            yield unit, part
        if self._halted is not None:
            raise RunError(self._stopped())

    def results(self) -> Iterator[ImageResult]:
        """Every image's result, in one local loop: the shared palette step, then the rest.

        Counted in `summary` as they come. The CLI's way; every image streams through one
        `segment`, so the cluster is never idle between units.
        """
        yield from self.learn_shared()
        for result in self.segment(self._refs, self.summary):
            self.summary.add(result)
            yield result
        if self._halted is not None:
            self._stopped()

    def _stopped(self) -> str:
        """Record in `summary` that the store stopped the run, the images not attempted."""
        s, found = self.summary, self.found
        if found is not None:
            s.not_attempted = max(0, found.count - s.total)
        n = s.not_attempted
        # The rest of the listing is not read to count it: it may be a long archive.
        if found is None or found.done:
            rest = f"{n} image(s) not attempted"
        elif n:
            rest = f"not attempted: {n} image(s) listed so far and the inputs not yet listed"
        else:
            rest = "the inputs not yet listed not attempted"
        s.run_error = f"{self._halted}; stopped, {rest}; {self._remedy}"
        return s.run_error

    def _stop(self, exc: BaseException, what: str = "") -> RunError:
        """Record why the run stops, naming its inputs unless the message does."""
        where = " ".join(self.run.inputs)
        message = f"{what}{exc}"
        if not what and where not in message and not isinstance(exc, ImageReadError):
            message = f"{where}: {message}"
        self.summary.run_error = message
        return RunError(message)
