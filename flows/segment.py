"""Prefect flows: segment one image or a whole archive by colour on a Dask cluster.

Each flow run uses one Dask cluster: the scheduler at ``dask_address`` (or
``$DASK_SCHEDULER_ADDRESS``), otherwise a LocalCluster sized to the machine. Prefect tasks
run in the flow's process on a thread pool and submit all their array work to that
cluster through the process-wide Dask client, so images progress concurrently while
their chunks spread over the workers. Every computation is a `kmdist` function; the
flows only order the steps, retry I/O, resume, and report.

Run from the command line::

    python flows/segment.py INPUT... -o OUT.zarr -k 16 [--shared-palette]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal, cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.futures import PrefectFuture, as_completed
from prefect.states import Completed, Failed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

import kmdist
from kmdist import ImageRef, Palette, RunSummary, SegmentOptions
from kmdist.pipeline._kind import workers_kind

Method = Literal["auto", "exact", "minibatch"]
ColorSpace = Literal["rgb", "lab"]

# Concurrent batch tasks in the flow process; each one's array work runs on the cluster.
IMAGE_CONCURRENCY = 4
# Most and least images per Prefect task (see `_batches`).
BATCH = 256
MIN_BATCH = 16
# Least seconds between two progress lines in the flow's log.
PROGRESS_SECONDS = 10.0


def _retry_io_only(task: Any, task_run: Any, state: State) -> bool:
    """Retry what another attempt may fix (I/O errors), not bad images or parameters."""
    try:
        state.result()
    except (ValueError, TypeError):
        return False  # ImageReadError, OutputError, PaletteError and bad parameters
    except OSError:
        return True
    except BaseException:
        return True
    return False


IO_RETRIES: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _retry_io_only,
    "persist_result": False,
}


@task(name="check-inputs", cache_policy=NO_CACHE, **IO_RETRIES)
def check_inputs(inputs: Sequence[str], follow_symlinks: bool = False) -> kmdist.CountedRefs:
    """Check every input and find the first image, before any image is written.

    Cheap (a stat, a pattern's first match, one request a URL, then the walk to the
    first image) and retried on I/O errors. Returns the listing, which goes on as the
    images are segmented (`_run`); never cached or persisted, as it is a live
    iterator.
    """
    return kmdist.CountedRefs.listing(list(inputs), follow_symlinks=follow_symlinks)


@task(name="shared-palette", **IO_RETRIES)
def learn_shared(refs: Sequence[ImageRef], opts: SegmentOptions) -> tuple[Any, Any, Any]:
    """One palette for all images (merged histograms); the images it was learned from."""
    palette, lut, good, failed = kmdist.shared_palette(list(refs), opts)
    return palette, lut, (good, failed)


@task(name="segment-images", task_run_name="segment-{refs[0].name}", **IO_RETRIES)
def segment_images(
    refs: Sequence[ImageRef],
    output: str,
    opts: SegmentOptions,
    palette: Palette | None,
    lut: Any,
    overwrite: bool,
    preview_dir: str | None,
) -> RunSummary:
    """Segment a batch of images with kmdist's engine; return the batch's totals.

    Small images run a batch per task on the Dask workers, large ones chunk by chunk
    over all of them, each image written as soon as its palette is ready. After a retry,
    images that the failed attempt completed are skipped, not redone.
    """
    from prefect.runtime import task_run

    on_exists: kmdist.OnExists = "overwrite" if overwrite else "skip"
    summary = RunSummary()
    for result in kmdist.iter_segment(
        refs, output, opts, palette=palette, lut=lut, on_exists=on_exists, preview_dir=preview_dir
    ):
        summary.add(result)
    if summary.retryable and task_run.run_count <= IO_RETRIES["retries"]:
        # An I/O error (not a bad image): Prefect retries the batch, whose complete
        # images the next attempt skips. After the last retry they stay failed.
        raise OSError(f"{summary.retryable} image(s) met an I/O error: {summary.failures[-1][2]}")
    return summary


def _batches(refs: Iterator[ImageRef], concurrency: int) -> Iterator[list[ImageRef]]:
    """Cut `refs` into batches of `MIN_BATCH` to `BATCH` images, two per thread.

    Prefect's cost per task run (state changes through its API, a second or more on a
    loaded machine) outweighs a thumbnail's work, so many images share a task: 200
    thumbnails in 8 tasks of 25 took 0.4-0.7x the time of 16 tasks of 13 (see
    docs/benchmarks.md). Within a task the engine spreads the images over every worker and
    writes each as soon as it is done, so a batch's size changes neither parallelism nor
    what a crash leaves complete. The stream is read a batch at a time, after a look
    ahead of at most ``2 * concurrency * BATCH`` refs: a stream that ends within it is
    split as evenly as a list of its length would be, a longer one in batches of `BATCH`.
    """
    head = list(itertools.islice(refs, 2 * concurrency * BATCH))
    n = len(head)
    size = max(min(MIN_BATCH, n), min(BATCH, -(-n // (2 * concurrency))))
    stream = itertools.chain(head, refs)
    del head
    while batch := list(itertools.islice(stream, size)):
        yield batch


def _run(
    inputs: Sequence[str],
    output: str,
    opts: SegmentOptions,
    *,
    shared: bool,
    palette_spec: str | None,
    dask_address: str | None,
    overwrite: bool,
    preview_dir: str | None,
    follow_symlinks: bool,
    n_workers: int | None,
    processes: bool | None,
    concurrency: int,
    verbose: bool,
) -> State:
    """Run a segmentation on kmdist's engine; return the run's final state.

    Published whatever happens: the summary artifact (counts, throughput, every failed
    image, the slowest images; its size does not grow with the archive) and a progress
    artifact. Per-image detail stays in the store (`kmdist info`).
    """
    log = get_run_logger()
    summary = RunSummary()
    where = " ".join(inputs)
    try:
        # A LocalCluster starts in the background while the inputs are checked.
        with kmdist.dask_client_soon(
            dask_address,
            n_workers=n_workers,
            processes=workers_kind(inputs, processes),
            verbose=verbose,
        ) as client_soon:
            # Listed as batches are cut: the flow holds the batches in flight, not the
            # list of every image. `found` counts the images listed so far.
            found = check_inputs(inputs, follow_symlinks)
            palette, lut = None, None
            if palette_spec is not None:
                palette = kmdist.load_palette(palette_spec)
            link = kmdist.dashboard_link(client_soon())
            log.info("Dask dashboard: %s", link)
            create_link_artifact(
                link,
                link_text="Dask dashboard",
                key="dask-dashboard",
                description="Live view of this run's Dask cluster",
            )
            log.info("images -> %s, listed as they are segmented", output)
            refs: Iterator[ImageRef] = found
            if shared and palette is None:
                # One palette from every image: the one place the list is held.
                palette, lut, (good, failed) = learn_shared(list(refs), opts)
                for result in failed:
                    summary.add(result)
                refs = iter(good)
            progress: UUID = create_progress_artifact(  # type: ignore[assignment]
                0.0, key="segmentation-progress", description="images finished of those found"
            )
            running: dict[PrefectFuture[Any], list[ImageRef]] = {}
            batches = _batches(refs, concurrency)
            next_line = time.monotonic() + PROGRESS_SECONDS

            def submit(batch: list[ImageRef]) -> None:
                future = segment_images.submit(
                    batch, output, opts, palette, lut, overwrite, preview_dir
                )
                running[future] = batch

            for batch in itertools.islice(batches, 2 * concurrency):
                submit(batch)
            # A bounded number of batches in flight: the next is submitted as one ends.
            while running:
                future = next(as_completed(list(running)))
                batch = running.pop(future)
                try:
                    part: RunSummary = future.result()
                except Exception as exc:  # the batch failed after its retries
                    part = RunSummary()
                    for ref in batch:
                        part.add(kmdist.ImageResult(ref.name, ref.source, "failed", error=str(exc)))
                summary.merge(part)
                for name, source, error in part.failures:
                    log.error("%s (%s) failed: %s", name, source, error)
                # A line every `PROGRESS_SECONDS` at most, whatever the archive's size;
                # the progress artifact follows every batch.
                nxt = next(batches, None)
                if nxt is not None:
                    submit(nxt)
                finished = not running
                if time.monotonic() >= next_line or finished:
                    next_line = time.monotonic() + PROGRESS_SECONDS
                    log.info(
                        "%d of %s image(s): %d done, %d skipped, %d failed",
                        summary.total,
                        found.so_far(),
                        summary.done,
                        summary.skipped,
                        summary.failed,
                    )
                update_progress_artifact(progress, 100.0 * summary.total / max(1, found.count))
    except (ValueError, OSError) as exc:  # the inputs, the palette or the store
        message = f"{where}: {exc}" if where not in str(exc) else str(exc)
        summary.run_error = message
        _publish(summary, output)
        log.error("%s", message)
        return Failed(message=message)
    _publish(summary, output)
    log.info("%s", _line(summary))
    if summary.failed:
        names = ", ".join(f"{source} ({error})" for _, source, error in summary.failures)
        return Failed(message=f"{summary.failed} of {summary.total} images failed: {names}")
    return Completed(message=_line(summary), data=summary.as_dict())


def _line(summary: RunSummary) -> str:
    d = summary.as_dict()
    return (
        f"{d['images']} image(s): {d['done']} done, {d['skipped']} skipped, "
        f"{d['failed']} failed in {d['wall_seconds']} s"
    )


def _publish(summary: RunSummary, output: str) -> None:
    create_markdown_artifact(
        summary.markdown(f"kmdist segmentation into {output}"),
        key="segmentation-summary",
        description=_line(summary),
    )


def _runner(threads: int) -> TaskRunner[Any]:
    """Prefect tasks on threads of the flow process; their array work goes to Dask."""
    return cast("TaskRunner[Any]", ThreadPoolTaskRunner(max_workers=threads))


def _options(
    k: int,
    method: Method,
    color_space: ColorSpace,
    seed: int | None,
    chunks: int | None,
    **extra: Any,
) -> SegmentOptions:
    return SegmentOptions(
        n_colors=k,
        method=method,
        color_space=color_space,
        random_state=seed,
        chunks=chunks,
        **extra,
    )


@flow(
    name="segment-archive",
    task_runner=_runner(IMAGE_CONCURRENCY),
    log_prints=True,
)
def segment_archive(
    inputs: str | list[str],
    output: str,
    k: int = 16,
    shared_palette: bool = False,
    palette: str | None = None,
    method: Method = "auto",
    color_space: ColorSpace = "rgb",
    seed: int | None = 0,
    dask_address: str | None = None,
    overwrite: bool = False,
    preview_dir: str | None = None,
    chunks: int | None = None,
    n_workers: int | None = None,
    processes: bool | None = None,
    follow_symlinks: bool = False,
    verbose: bool = False,
) -> Any:
    """Segment every image of `inputs` (paths, folders, globs, archives) into `output`.

    Rerunning on the same output skips images whose output is complete and redoes the
    rest (unless `overwrite`). The run ends Failed, listing the images that failed, if
    any did; the others are complete. `palette` (a JSON file or ``STORE:NAME``) labels
    every image with a palette learned before, so labels mean the same colours across
    runs. `verbose` shows Dask's own log lines (by default warnings only). Without
    `dask_address`, a LocalCluster of `n_workers` runs them as processes or, with
    ``processes=False``, as threads of the flow's process (see `kmdist.dask_client`); by
    default threads for one image of at most 2**30 samples, processes otherwise.
    """
    inputs_list = [inputs] if isinstance(inputs, str) else list(inputs)
    opts = _options(kmdist.check_n_colors(k), method, color_space, seed, chunks)
    return _run(
        inputs_list,
        output,
        opts,
        shared=shared_palette,
        palette_spec=palette,
        dask_address=dask_address,
        overwrite=overwrite,
        preview_dir=preview_dir,
        follow_symlinks=follow_symlinks,
        n_workers=n_workers,
        processes=processes,
        concurrency=IMAGE_CONCURRENCY,
        verbose=verbose,
    )


@flow(name="segment-image", task_runner=_runner(2), log_prints=True)
def segment_image(
    source: str,
    output: str,
    k: int = 16,
    palette: str | None = None,
    method: Method = "auto",
    color_space: ColorSpace = "rgb",
    seed: int | None = 0,
    dask_address: str | None = None,
    overwrite: bool = False,
    preview_dir: str | None = None,
    chunks: int | None = None,
    n_workers: int | None = None,
    processes: bool | None = None,
    verbose: bool = False,
) -> Any:
    """Segment one image (PNG, JPEG, TIFF, Zarr, ...) into `output`, as the CLI does.

    `verbose`, `n_workers` and `processes` are as in `segment_archive`.
    """
    opts = _options(kmdist.check_n_colors(k), method, color_space, seed, chunks)
    return _run(
        [source],
        output,
        opts,
        shared=False,
        palette_spec=palette,
        dask_address=dask_address,
        overwrite=overwrite,
        preview_dir=preview_dir,
        follow_symlinks=False,
        n_workers=n_workers,
        processes=processes,
        concurrency=1,
        verbose=verbose,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run `segment_archive` with parameters; exit 1 if any image failed."""
    parser = argparse.ArgumentParser(description="Run the segment-archive flow.")
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("-k", type=int, default=16)
    parser.add_argument("--shared-palette", action="store_true")
    parser.add_argument("--palette", default=None, help="a saved palette: FILE.json or STORE:NAME")
    parser.add_argument("--method", choices=["auto", "exact", "minibatch"], default="auto")
    parser.add_argument("--color-space", choices=["rgb", "lab"], default="rgb")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dask-address", default=None)
    parser.add_argument("--workers", type=int, default=None)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--processes", dest="processes", action="store_true", default=None)
    kind.add_argument("--threads", dest="processes", action="store_false")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--preview", default=None)
    parser.add_argument("-v", "--verbose", action="store_true", help="show Dask's own log lines")
    args = parser.parse_args(argv)
    state: State = segment_archive(  # type: ignore[assignment]
        args.inputs,
        args.output,
        k=args.k,
        shared_palette=args.shared_palette,
        palette=args.palette,
        method=args.method,
        color_space=args.color_space,
        seed=args.seed,
        dask_address=args.dask_address,
        overwrite=args.overwrite,
        preview_dir=args.preview,
        n_workers=args.workers,
        processes=args.processes,
        verbose=args.verbose,
        return_state=True,
    )
    print(state.message or state.name)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    code = main()
    from kmdist._exit import skip_final_collection

    skip_final_collection()  # after the flow run has ended; Prefect's exit hooks still run
    sys.exit(code)
