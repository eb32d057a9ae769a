"""The ``kmdist`` command: ``segment``, ``info`` and ``demo``.

Exit codes: 0 when every image succeeded, 1 when any image failed (or the store cannot
be read), 2 for bad usage; `kmdist info` exits 3 when any image of the store is incomplete.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main", "run"]

# `kmdist info`'s exit code when any image of the store is incomplete.
_INCOMPLETE = 3
# Complete images named when a run is interrupted (then a count of the others).
_NAMED = 20


def _swatches(palette: Any, limit: int = 16) -> str:
    """Palette as hex codes, most common first."""
    text = " ".join(palette.hex_colors()[:limit])
    return text + (" ..." if palette.k > limit else "")


def _size(shape: Sequence[int]) -> str:
    """Format an image size as kmdist prints it everywhere: height x width x channels."""
    return "x".join(str(int(s)) for s in shape)


def _print_result(i: int, n: str, res: Any, applied: str | None = None) -> None:
    head = f"[{i}/{n}] {res.name} ({res.source})"
    if res.status == "failed":
        print(f"{head}: FAILED: {res.error}", flush=True)
    elif res.status == "skipped":
        print(f"{head}: already complete, skipped", flush=True)
    else:
        pal = res.palette
        # An applied palette's inertia is that of the image it was learned from.
        fit = f"palette {applied}" if applied else f"inertia {pal.inertia:.6g}"
        print(
            f"{head}: {_size(res.shape)}, {pal.k} colours, {fit}, "
            f"{res.seconds:.1f} s\n    palette: {_swatches(pal)}",
            flush=True,
        )
        if pal.shortfall:
            print(f"    warning: {pal.shortfall}", flush=True)


def _segment(args: argparse.Namespace) -> int:
    from kmdist.pipeline import OPTIONS, Plan, Run

    try:
        run = Run.from_values(
            args.inputs, args.output, {o.name: getattr(args, o.name) for o in OPTIONS}
        )
    except ValueError as exc:
        print(f"kmdist segment: error: {exc}", file=sys.stderr)
        return 2
    plan = Plan(run)
    # The cluster starts while kmdist's pipeline is imported and the inputs are listed.
    with plan.cluster() as get_client:
        return _segment_on(plan, get_client)


def _segment_on(plan: Any, get_client: Any) -> int:
    from kmdist._dask import dashboard_link
    from kmdist.cli._progress import cluster_progress
    from kmdist.io import ImageReadError
    from kmdist.pipeline import RunError

    run = plan.run
    # Listed as the images are segmented: a million refs are never held. Every input is
    # checked, and the first image found, before anything is written.
    try:
        found = plan.check()
    except RunError as exc:
        print(f"kmdist segment: error: {exc}", file=sys.stderr)
        return 1
    # Totals only: per-image detail is printed as it comes and kept in the store.
    summary = plan.summary
    shown_done: list[str] = []  # the first complete images, named if interrupted
    try:
        client = get_client()
        print(f"Dask dashboard: {dashboard_link(client)}", flush=True)
        print(f"images -> {run.output}, listed as they go ([i/N+]: N found so far)", flush=True)
        with cluster_progress(client, sys.stderr):
            for res in plan.results():
                if res.status == "done" and len(shown_done) < _NAMED:
                    shown_done.append(res.name)
                _print_result(summary.total, found.so_far(), res, run.palette)
    except ImageReadError as exc:  # a storage URL whose listing failed part way
        summary.run_error = str(exc)
    except KeyboardInterrupt:
        # Outputs already reported are complete; the one being written keeps no marker,
        # so `--resume` redoes exactly what is missing.
        more = summary.done - len(shown_done)
        names = ", ".join(shown_done) + (f" and {more} more" if more else "")
        print(
            f"\nkmdist segment: interrupted after {summary.total} of {found.count} image(s) "
            f"found{'' if found.done else ' so far'}; "
            f"complete: {names or 'none'}. Rerun with --resume to finish the rest "
            f"(`kmdist info --summary {run.output}` lists what is incomplete).",
            file=sys.stderr,
            flush=True,
        )
        return 130
    # Retries and images a stopped run did not reach, when there are any.
    extra = [f"{summary.retried} retried"] * bool(summary.retried) + [
        f"{summary.not_attempted} not attempted"
    ] * bool(summary.not_attempted)
    print(
        f"{summary.done} done, {summary.skipped} skipped, {summary.failed} failed "
        f"in {time.perf_counter() - summary.started:.1f} s" + "".join(f"; {e}" for e in extra),
        flush=True,
    )
    for _, _, error in summary.failures:
        print(f"kmdist segment: {error}", file=sys.stderr)
    if summary.run_error:  # the run stopped: its store, or a listing that failed part way
        print(f"kmdist segment: error: {summary.run_error}", file=sys.stderr)
    return 1 if summary.failed or summary.run_error else 0


def _info(args: argparse.Namespace) -> int:
    from kmdist.store import OutputError, iter_segmentations

    complete, incomplete, shown = 0, [], 0
    try:
        # Printed as the store is read: a store of 100,000 images answers at once.
        for info in iter_segmentations(args.store):
            if not info.complete:
                incomplete.append(info.name)
                if not args.summary:
                    print(
                        f"{info.name}: INCOMPLETE (no {info.missing}: an interrupted or "
                        "failed run; --resume finishes it)"
                    )
                continue
            complete += 1
            if args.summary:
                continue
            # The labels are (y, x); the palette's colours have the image's channels.
            channels = (info.palette.channels,) if info.palette is not None else ()
            shape = _size((*info.shape, *channels)) if info.shape else "?"
            print(
                f"{info.name}: {shape}, k={info.k}, inertia {info.inertia:.6g}, from {info.source}"
            )
            if info.palette is not None:
                print(f"    palette: {_swatches(info.palette)}")
            shown += 1
    except OutputError as exc:
        print(f"kmdist info: error: {exc}", file=sys.stderr)
        return 1
    if not complete and not incomplete:
        print(f"{args.store}: no images")
        return 0
    if args.summary or incomplete:
        print(f"{args.store}: {complete} complete, {len(incomplete)} incomplete")
    if args.summary and incomplete:
        print("incomplete: " + ", ".join(incomplete))
    if incomplete:
        print("rerun `kmdist segment` on the same inputs with --resume to finish them")
    return _INCOMPLETE if incomplete else 0


def _demo(args: argparse.Namespace) -> int:
    # The demo is the Prefect flow: the command line is the application's entry point,
    # the one place that reaches the flows package (the library itself never does).
    try:  # the sample photos come with scikit-learn
        import sklearn  # noqa: F401
    except ImportError:
        print(
            "kmdist demo: error: needs scikit-learn for its sample photos; "
            "install it with: pip install 'kmdist[demo]'",
            file=sys.stderr,
        )
        return 2
    # Prefect's settings for the demo (its temporary server's start-up timeout, issue
    # 15) are the flows' business: flows.demo sets them in Prefect's settings context.
    from flows.demo import run_demo
    from kmdist.cli._pictures import blobs_example, china_examples, digits_example

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    result = run_demo(out, k=args.k, announce=lambda line: print(line, flush=True))
    for row in result["rows"]:
        print(f"{row['image']}: {row['size']}, {row['k']} colours, inertia {row['inertia']:.6g}")
    print(f"Segmented: {out / 'segmented.zarr'} (kmdist info {out / 'segmented.zarr'})")
    print(f"Previews:  {out / 'previews'}")
    print(
        f"{result['images']} images in {result['total_seconds']:.1f} s: Prefect start-up "
        f"{result['prefect_startup_seconds']:.1f} s, flow {result['flow_seconds']:.1f} s"
    )
    if args.pictures:
        t0 = time.perf_counter()
        print(f"blobs:  inertia {blobs_example(out / 'blobs.png'):.2f} -> {out / 'blobs.png'}")
        digits = out / "digits-centres.png"
        print(f"digits: inertia {digits_example(digits):.0f} -> {digits}")
        for what, path in china_examples(out).items():
            print(f"china.jpg {what}: {path}")
        print(f"pictures in {time.perf_counter() - t0:.1f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    from kmdist import __version__
    from kmdist.pipeline import add_options

    parser = argparse.ArgumentParser(
        prog="kmdist", description="Colour segmentation of images at any scale."
    )
    parser.add_argument("--version", action="version", version=f"kmdist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser(
        "segment",
        help="learn a palette and label every pixel; write OME-Zarr",
        description=(
            "Segment images by colour. INPUT may be image files, folders (searched "
            "recursively), glob patterns, zip/tar archives, TIFF or Zarr. OpenCV's recipe "
            "cv2.kmeans(..., criteria=(EPS+MAX_ITER, 100, 0.85), attempts=10, "
            "KMEANS_RANDOM_CENTERS) is: --init random --attempts 10 --max-iter 100 --eps 0.85"
        ),
    )
    seg.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="images, folders, globs, archives or URLs"
    )
    seg.add_argument("-o", "--output", required=True, help="output Zarr store (OUT.zarr)")
    add_options(seg)
    seg.set_defaults(func=_segment)

    info = sub.add_parser("info", help="list the images of an output store")
    info.add_argument("store")
    info.add_argument(
        "--summary",
        action="store_true",
        help="counts and the names of incomplete images instead of a line per image",
    )
    info.set_defaults(func=_info)

    demo = sub.add_parser(
        "demo", help="run the segment-archive flow and the examples on bundled sample photos"
    )
    demo.add_argument("--output", default="demo-output", help="output folder")
    demo.add_argument("-k", type=int, default=16, help="colours per image (default 16)")
    demo.add_argument(
        "--no-pictures",
        dest="pictures",
        action="store_false",
        help="skip the seed notebook's matplotlib pictures",
    )
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    return int(args.func(args))


def run() -> NoReturn:
    """Run ``kmdist`` as a program: `main`, then a quick exit (`skip_final_collection`)."""
    code = main()
    from kmdist._exit import skip_final_collection

    skip_final_collection()
    sys.exit(code)
