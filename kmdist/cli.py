"""The ``kmdist`` command."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from ._examples import blobs_example, digits_example

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    blobs = out / "blobs.png"
    digits = out / "digits-centres.png"
    print(f"blobs:  inertia {blobs_example(blobs):.2f} -> {blobs}")
    print(f"digits: inertia {digits_example(digits):.0f} -> {digits}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="kmdist", description="Colour segmentation of images at any scale."
    )
    parser.add_argument("--version", action="version", version=f"kmdist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the examples on bundled sample data")
    demo.add_argument("--output", default="demo-output", help="folder for the pictures")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
