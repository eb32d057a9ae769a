"""Prefect flows: segment one image or a whole archive by colour on a Dask cluster.

The flows drive kmdist's engine (`kmdist.pipeline.Plan`), as ``kmdist segment`` does:
one Prefect task checks the inputs, one learns a shared palette when asked, and each
unit of the plan (a batch of images) is a task, a bounded number in flight. Tasks run
on threads of the flow's process and send their array work to the run's Dask cluster.
Options, defaults and help come from `kmdist.pipeline.OPTIONS`.

Run from the command line::

    python flows/segment.py INPUT... -o OUT.zarr -k 16 [--shared-palette]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any, cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.futures import as_completed
from prefect.states import Completed, Failed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from kmdist import dashboard_link
from kmdist.pipeline import ColorSpace, Init, Method, Plan, Run, RunSummary, add_options

# Units of the plan in flight per flow, each a task on a thread of the flow process.
IMAGE_CONCURRENCY = 4
# Least seconds between two progress lines in the flow's log.
PROGRESS_SECONDS = 10.0


@task(name="check-inputs", cache_policy=NO_CACHE)
def check_inputs(plan: Plan) -> None:
    """Check every input and find the first image, before any image is written."""
    plan.check()


@task(name="shared-palette", cache_policy=NO_CACHE)
def learn_shared(plan: Plan) -> None:
    """One palette for all images (merged histograms); the images left out fail."""
    plan.learn_shared()


@task(name="segment-images", task_run_name="segment-{refs[0].name}", cache_policy=NO_CACHE)
def segment_images(plan: Plan, refs: list[Any]) -> RunSummary:
    """Segment one unit of the plan (a batch of images); return its totals."""
    return plan.segment_unit(refs)


def _run(run: Run, concurrency: int) -> State:
    """Drive `run`'s plan with Prefect tasks; publish the summary; return the final state."""
    log = get_run_logger()
    plan = Plan(run)
    summary = plan.summary
    try:
        with plan.cluster() as client_soon:
            check_inputs(plan)
            link = dashboard_link(client_soon())
            log.info("Dask dashboard: %s", link)
            create_link_artifact(link, link_text="Dask dashboard", key="dask-dashboard")
            log.info("images -> %s, listed as they are segmented", run.output)
            learn_shared(plan)
            progress = cast(
                Any,
                create_progress_artifact(0.0, key="segmentation-progress"),
            )
            next_line = time.monotonic() + PROGRESS_SECONDS
            found = plan.found
            assert found is not None  # check_inputs started the listing
            for _, part in plan.drive(
                lambda unit: segment_images.submit(plan, unit),
                lambda running: next(as_completed(running)),
                concurrency,
            ):
                for name, source, error in part.failures:
                    log.error("%s (%s) failed: %s", name, source, error)
                for name, note in part.warned:
                    log.warning("%s: %s", name, note)
                if time.monotonic() >= next_line:
                    next_line = time.monotonic() + PROGRESS_SECONDS
                    log.info("%s; %s found", _line(summary), found.so_far())
                update_progress_artifact(progress, 100.0 * summary.total / max(1, found.count))
    except (ValueError, OSError) as exc:  # the inputs, the palette or the store (RunError)
        summary.run_error = summary.run_error or str(exc)
        _publish(summary, run.output)
        log.error("%s", summary.run_error)
        return Failed(message=summary.run_error)
    _publish(summary, run.output)
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
    return cast("TaskRunner[Any]", ThreadPoolTaskRunner(max_workers=threads))


@flow(name="segment-archive", task_runner=_runner(IMAGE_CONCURRENCY), log_prints=True)
def segment_archive(
    inputs: str | list[str],
    output: str,
    k: int = 16,
    method: Method = "auto",
    color_space: ColorSpace = "rgb",
    shared_palette: bool = False,
    palette: str | None = None,
    seed: int | None = 0,
    init: Init = "auto",
    attempts: int = 3,
    max_iter: int | None = None,
    tol: float | None = None,
    eps: float | None = None,
    chunks: int | None = None,
    max_pixels: int | None = None,
    dask_address: str | None = None,
    n_workers: int | None = None,
    processes: bool | None = None,
    overwrite: bool = False,
    resume: bool = True,
    preview_dir: str | None = None,
    follow_symlinks: bool = False,
    verbose: bool = False,
) -> Any:
    """Segment every image of `inputs` (paths, folders, globs, archives) into `output`.

    The parameters are kmdist's options (``kmdist segment --help`` describes each).
    By default a rerun on the same output skips the images already complete and does
    the rest (`resume`). The run ends Failed, naming the images that failed, if any did;
    the others are complete.
    """
    options = dict(locals())
    del options["inputs"], options["output"]
    return _run(Run.from_values(inputs, output, options), IMAGE_CONCURRENCY)


@flow(name="segment-image", task_runner=_runner(2), log_prints=True)
def segment_image(
    source: str,
    output: str,
    k: int = 16,
    method: Method = "auto",
    color_space: ColorSpace = "rgb",
    palette: str | None = None,
    seed: int | None = 0,
    init: Init = "auto",
    attempts: int = 3,
    max_iter: int | None = None,
    tol: float | None = None,
    eps: float | None = None,
    chunks: int | None = None,
    max_pixels: int | None = None,
    dask_address: str | None = None,
    n_workers: int | None = None,
    processes: bool | None = None,
    overwrite: bool = False,
    resume: bool = True,
    preview_dir: str | None = None,
    verbose: bool = False,
) -> Any:
    """Segment one image (PNG, JPEG, TIFF, Zarr, ...) into `output`, as the CLI does.

    The parameters are those of `segment_archive` that apply to one image.
    """
    options = dict(locals())
    del options["source"], options["output"]
    return _run(Run.from_values([source], output, options), 1)


def build_parser() -> argparse.ArgumentParser:
    """Build the flow's command line: kmdist's options, with the flows' defaults."""
    parser = argparse.ArgumentParser(description="Run the segment-archive flow.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT")
    parser.add_argument("-o", "--output", required=True, help="output Zarr store")
    add_options(parser, front="flow")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run `segment_archive`; exit 1 if any image failed."""
    args = vars(build_parser().parse_args(argv))
    state = cast(
        State,
        segment_archive(args.pop("inputs"), args.pop("output"), **args, return_state=True),
    )
    print(state.message or state.name)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    code = main()
    from kmdist._exit import skip_final_collection

    skip_final_collection()  # after the flow run has ended; Prefect's exit hooks still run
    sys.exit(code)
