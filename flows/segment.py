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
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.schemas.objects import State
from prefect.futures import PrefectFuture, as_completed
from prefect.states import Completed, Failed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

import kmdist
from kmdist import ImageRef, Palette, SegmentOptions

Method = Literal["auto", "exact", "minibatch"]
ColorSpace = Literal["rgb", "lab"]

# Concurrent image tasks in the flow process; each one's array work runs on the cluster.
IMAGE_CONCURRENCY = 4
# Small images per Prefect task (see `_small_images`).
SMALL_BATCH = 64


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


@task(name="discover", **IO_RETRIES)
def discover(inputs: Sequence[str], follow_symlinks: bool = False) -> list[ImageRef]:
    """List the images of the inputs (files, folders, globs, archives)."""
    return kmdist.open_images(list(inputs), follow_symlinks=follow_symlinks)


@task(name="palette", task_run_name="palette-{ref.name}", **IO_RETRIES)
def learn_image_palette(ref: ImageRef, opts: SegmentOptions) -> Palette:
    """Learn one image's palette (histogram and k-means on the cluster)."""
    image = ref.open(chunks=opts.chunks, max_pixels=opts.max_pixels)
    return kmdist.learn_palette(image, opts.n_colors, method=opts.method, **opts.palette_kwargs())


@task(name="histogram", task_run_name="histogram-{ref.name}", **IO_RETRIES)
def histogram(ref: ImageRef, opts: SegmentOptions) -> kmdist.ColorHistogram:
    """Colour histogram of one 8-bit RGB image, for a shared palette."""
    image = ref.open(chunks=opts.chunks, max_pixels=opts.max_pixels)
    return kmdist.image_histogram(image)


@task(name="shared-palette", persist_result=False)
def shared_palette(histograms: Sequence[kmdist.ColorHistogram], opts: SegmentOptions) -> Palette:
    """One exact palette for the merged histograms of all images."""
    merged = kmdist.merge_histograms(*histograms)
    return kmdist.palette_from_histogram(merged, opts.n_colors, **opts.palette_kwargs())


@task(name="shared-palette-minibatch", **IO_RETRIES)
def shared_palette_minibatch(refs: Sequence[ImageRef], opts: SegmentOptions) -> Palette:
    """One mini-batch palette over the pixels of all images (not 8-bit RGB)."""
    images = [r.open(chunks=opts.chunks, max_pixels=opts.max_pixels) for r in refs]
    return kmdist.learn_palette(images, opts.n_colors, method=opts.method, **opts.palette_kwargs())


@task(name="assign-and-write", task_run_name="write-{ref.name}", **IO_RETRIES)
def assign_and_write(
    ref: ImageRef, output: str, palette: Palette, opts: SegmentOptions, overwrite: bool
) -> dict[str, Any]:
    """Label every pixel with `palette` and write the OME-Zarr group, complete last."""
    t0 = time.perf_counter()
    image = ref.open(chunks=opts.chunks, max_pixels=opts.max_pixels)
    kmdist.label_and_write(ref, image, output, palette, opts, overwrite=overwrite)
    return {"shape": list(image.shape), "write_seconds": round(time.perf_counter() - t0, 2)}


@task(name="small-images", task_run_name="small-images-{refs[0].name}", **IO_RETRIES)
def small_images(
    refs: Sequence[ImageRef], output: str, opts: SegmentOptions, overwrite: bool
) -> list[tuple[ImageRef, kmdist.ImageResult | None]]:
    """Segment a batch of images whole in memory on the workers; None: too large for it."""
    from distributed import default_client

    # After a retry, images a failed attempt already completed are skipped, not redone.
    on_exists: kmdist.OnExists = "overwrite" if overwrite else "skip"
    return list(
        kmdist.small_batches_on_cluster(default_client(), refs, output, opts, on_exists=on_exists)
    )


@task(name="preview", task_run_name="preview-{ref.name}", **IO_RETRIES)
def preview(ref: ImageRef, output: str, preview_dir: str, opts: SegmentOptions) -> str:
    """PNG preview from the stored labels (no second labelling)."""
    seg = kmdist.open_segmentation(output, ref.name)
    image = ref.open(chunks=opts.chunks, max_pixels=opts.max_pixels)
    return str(
        kmdist.write_preview(
            f"{preview_dir.rstrip('/')}/{ref.name}.png", image, seg.labels, seg.palette
        )
    )


def _run(
    inputs: Sequence[str],
    output: str,
    opts: SegmentOptions,
    *,
    shared: bool,
    dask_address: str | None,
    overwrite: bool,
    preview_dir: str | None,
    follow_symlinks: bool,
    n_workers: int | None,
) -> State | list[dict[str, Any]]:
    """Run the steps shared by both flows; return the summary or a Failed state."""
    log = get_run_logger()
    t_start = time.perf_counter()
    with kmdist.dask_client(dask_address, n_workers=n_workers) as client:
        link = kmdist.dashboard_link(client)
        log.info("Dask dashboard: %s", link)
        create_link_artifact(
            link,
            link_text="Dask dashboard",
            key="dask-dashboard",
            description="Live view of this run's Dask cluster",
        )
        refs = discover(inputs, follow_symlinks)
        log.info("%d image(s) -> %s", len(refs), output)
        rows: dict[str, dict[str, Any]] = {
            r.name: {"image": r.name, "source": r.source, "status": "pending"} for r in refs
        }
        todo: list[ImageRef] = []
        for ref in refs:
            if not overwrite and kmdist.is_complete(output, ref.name):
                rows[ref.name]["status"] = "skipped (complete)"
            else:
                todo.append(ref)
        progress: UUID = create_progress_artifact(  # type: ignore[assignment]
            0.0, key="segmentation-progress", description=f"images finished of {len(refs)}"
        )
        finished = len(refs) - len(todo)

        def advance() -> None:
            nonlocal finished
            finished += 1
            update_progress_artifact(progress, 100.0 * finished / max(1, len(refs)))

        if not shared and not preview_dir and len(todo) > 1:
            todo = _small_images(todo, output, opts, overwrite, rows, log, advance)

        palettes: dict[str, Palette] = {}
        t_pal = time.perf_counter()
        if shared and todo:
            palettes = _shared_palettes(todo, opts, rows, log)
        else:
            pal_futures = {learn_image_palette.submit(r, opts): r for r in todo}
            for ref, palette, error in _outcomes(pal_futures):
                if error is None:
                    palettes[ref.name] = palette
                else:
                    rows[ref.name].update(status="failed", error=error)
        log.info("palettes: %d in %.1f s", len(palettes), time.perf_counter() - t_pal)

        writes = {
            assign_and_write.submit(r, output, palettes[r.name], opts, overwrite): r
            for r in todo
            if r.name in palettes
        }
        for ref, info, error in _outcomes(writes):
            row = rows[ref.name]
            if error is None:
                _record_done(
                    row, ref, palettes[ref.name], info["shape"], info["write_seconds"], log
                )
                if preview_dir:
                    try:
                        row["preview"] = preview(ref, output, preview_dir, opts)
                    except Exception as exc:  # after its retries: this image's preview only
                        _record_failed(row, ref, f"preview: {exc}", log)
            else:
                _record_failed(row, ref, error, log)
            advance()
        update_progress_artifact(progress, 100.0)
    summary = list(rows.values())
    create_table_artifact(
        summary, key="segmentation-summary", description=f"kmdist segmentation into {output}"
    )
    failed = [r for r in summary if r["status"] == "failed"]
    log.info(
        "%d image(s), %d failed, in %.1f s",
        len(summary),
        len(failed),
        time.perf_counter() - t_start,
    )
    if failed:
        names = ", ".join(f"{r['source']} ({r['error']})" for r in failed)
        # The per-image summary stays in the table artifact.
        return Failed(message=f"{len(failed)} of {len(summary)} images failed: {names}")
    return Completed(message=f"{len(summary)} image(s) segmented", data=summary)


def _small_images(
    todo: list[ImageRef],
    output: str,
    opts: SegmentOptions,
    overwrite: bool,
    rows: dict[str, dict[str, Any]],
    log: Any,
    advance: Callable[[], None],
) -> list[ImageRef]:
    """Run the small images in batched tasks; return the images left to the chunked path.

    Prefect's cost per task run (state changes through its API) outweighs the work of
    segmenting a thumbnail, so an archive of small images runs SMALL_BATCH images per
    task instead of two tasks per image.
    """
    batches = [todo[i : i + SMALL_BATCH] for i in range(0, len(todo), SMALL_BATCH)]
    futures = {small_images.submit(b, output, opts, overwrite): b for b in batches}
    large: list[ImageRef] = []
    for future in as_completed(list(futures)):
        try:
            outcomes = future.result()
        except Exception as exc:  # the batch task failed after its retries
            outcomes = [
                (r, kmdist.ImageResult(r.name, r.source, "failed", error=str(exc)))
                for r in futures[future]
            ]
        for ref, res in outcomes:
            if res is None:
                large.append(ref)
                continue
            row = rows[ref.name]
            if res.status == "done" and res.palette is not None:
                _record_done(row, ref, res.palette, res.shape or (), res.seconds, log)
            elif res.ok:  # completed by an earlier attempt of this batch task
                row.update(status="skipped (complete)")
            else:
                _record_failed(row, ref, res.error, log)
            advance()
    return large


def _record_done(
    row: dict[str, Any],
    ref: ImageRef,
    palette: Palette,
    shape: Sequence[int],
    seconds: float,
    log: Any,
) -> None:
    """Fill a finished image's summary row and log it."""
    row.update(
        status="done",
        k=palette.k,
        inertia=round(palette.inertia, 6),
        palette=" ".join(palette.hex_colors()),
        size="x".join(map(str, shape)),
        seconds=round(seconds, 2),
    )
    log.info(
        "%s: %s, %d colours, inertia %.6g, in %.2f s",
        ref.name,
        row["size"],
        palette.k,
        palette.inertia,
        seconds,
    )
    if palette.shortfall:
        row["warning"] = palette.shortfall
        log.warning("%s: %s", ref.name, palette.shortfall)


def _record_failed(row: dict[str, Any], ref: ImageRef, error: str | None, log: Any) -> None:
    """Mark an image failed in its summary row and log why."""
    row.update(status="failed", error=error)
    log.error("%s (%s) failed: %s", ref.name, ref.source, error)


def _shared_palettes(
    todo: list[ImageRef], opts: SegmentOptions, rows: dict[str, dict[str, Any]], log: Any
) -> dict[str, Palette]:
    """Histogram every image, merge, fit one palette; failed images are left out."""
    rgb8: list[ImageRef] = []
    others: list[ImageRef] = []
    for ref in todo:
        try:
            image = ref.open(chunks=opts.chunks, max_pixels=opts.max_pixels)
        except (ValueError, OSError) as exc:
            rows[ref.name].update(status="failed", error=str(exc))
            continue
        (rgb8 if opts.uses_histogram(image) else others).append(ref)
    good: list[ImageRef] = []
    if rgb8 and not others:
        hist_futures = {histogram.submit(r, opts): r for r in rgb8}
        hists = []
        for ref, hist, error in _outcomes(hist_futures):
            if error is None:
                hists.append((ref.name, hist))
                good.append(ref)
            else:
                rows[ref.name].update(status="failed", error=error)
        if not hists:
            return {}
        hists.sort(key=lambda item: item[0])  # merge order does not matter; keep it fixed
        palette = shared_palette([h for _, h in hists], opts)
    else:
        good = rgb8 + others
        palette = shared_palette_minibatch(good, opts)
    log.info("shared palette of %d colours from %d image(s)", palette.k, len(good))
    return {r.name: palette for r in good}


def _outcomes(
    futures: dict[PrefectFuture[Any], ImageRef],
) -> Iterator[tuple[ImageRef, Any, str | None]]:
    """Yield (image, result, None) or (image, None, error) as the task runs finish."""
    for future in as_completed(list(futures)):
        try:
            yield futures[future], future.result(), None
        except Exception as exc:  # the task failed after its retries: that image fails
            yield futures[future], None, str(exc)


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
    method: Method = "auto",
    color_space: ColorSpace = "rgb",
    seed: int | None = 0,
    dask_address: str | None = None,
    overwrite: bool = False,
    preview_dir: str | None = None,
    chunks: int | None = None,
    n_workers: int | None = None,
    follow_symlinks: bool = False,
) -> Any:
    """Segment every image of `inputs` (paths, folders, globs, archives) into `output`.

    Rerunning on the same output skips images whose output is complete and redoes the
    rest (unless `overwrite`). The run ends Failed, listing the images that failed, if
    any did; the others are complete. See the module docstring for the cluster.
    """
    inputs_list = [inputs] if isinstance(inputs, str) else list(inputs)
    opts = _options(kmdist.check_n_colors(k), method, color_space, seed, chunks)
    return _run(
        inputs_list,
        output,
        opts,
        shared=shared_palette,
        dask_address=dask_address,
        overwrite=overwrite,
        preview_dir=preview_dir,
        follow_symlinks=follow_symlinks,
        n_workers=n_workers,
    )


@flow(name="segment-image", task_runner=_runner(2), log_prints=True)
def segment_image(
    source: str,
    output: str,
    k: int = 16,
    method: Method = "auto",
    color_space: ColorSpace = "rgb",
    seed: int | None = 0,
    dask_address: str | None = None,
    overwrite: bool = False,
    preview_dir: str | None = None,
    chunks: int | None = None,
    n_workers: int | None = None,
) -> Any:
    """Segment one image (PNG, JPEG, TIFF, Zarr, ...) into `output`."""
    opts = _options(kmdist.check_n_colors(k), method, color_space, seed, chunks)
    return _run(
        [source],
        output,
        opts,
        shared=False,
        dask_address=dask_address,
        overwrite=overwrite,
        preview_dir=preview_dir,
        follow_symlinks=False,
        n_workers=n_workers,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run `segment_archive` with parameters; exit 1 if any image failed."""
    parser = argparse.ArgumentParser(description="Run the segment-archive flow.")
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("-k", type=int, default=16)
    parser.add_argument("--shared-palette", action="store_true")
    parser.add_argument("--method", choices=["auto", "exact", "minibatch"], default="auto")
    parser.add_argument("--color-space", choices=["rgb", "lab"], default="rgb")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dask-address", default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--preview", default=None)
    args = parser.parse_args(argv)
    state: State = segment_archive(  # type: ignore[assignment]
        args.inputs,
        args.output,
        k=args.k,
        shared_palette=args.shared_palette,
        method=args.method,
        color_space=args.color_space,
        seed=args.seed,
        dask_address=args.dask_address,
        overwrite=args.overwrite,
        preview_dir=args.preview,
        n_workers=args.workers,
        return_state=True,
    )
    print(state.message or state.name)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
