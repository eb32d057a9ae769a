"""The huge-archives issue, item 5: an image's cost and the memory against the archive's size.

Builds archives of N 64 x 64 photo-like PNG thumbnails (``bench/store_growth.py``'s)
for each size asked, then runs, each as its own process into an empty output:

- ``kmdist segment`` into a local store;
- the Prefect flow ``segment_archive`` (``python flows/segment.py``) against a
  ``prefect server`` started before (its start-up is reported apart, as in
  ``bench/archive.py``);
- with ``--s3``, ``kmdist segment`` into a store on an S3 server (moto's, started on
  127.0.0.1 by this script).

For each way it reports wall time, milliseconds an image, peak memory (the sum over the
process tree), and the ratios of the largest archive's per-image cost and peak memory to
the smallest's. Per-image cost is also given net of start-up: the wall time of the same
way on a 10-image archive is subtracted first, so a larger archive is not flattered by
spreading the start-up over more images.

Usage: ``python bench/archive_scale.py [--sizes 1000 10000 100000] [--s3] [--quick]``
(with ``--s3`` the results go to ``results/archive-scale-s3.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    Measured,
    Row,
    check_ok,
    machine,
    prefect_server,
    python,
    run_measured,
    save,
)
from store_growth import SIDE, make_thumbnails

_BASE = 10  # images in the archive whose run stands for start-up and shutdown


@contextlib.contextmanager
def moto_server(work: Path) -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1 and point this process's children at it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    settings = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "kmdist-bench",
        "AWS_SECRET_ACCESS_KEY": "kmdist-bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in settings}
    with open(work / "moto.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(endpoint, timeout=2).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"moto did not start; see {work / 'moto.log'}") from None
                    time.sleep(0.2)
            os.environ.update(settings)
            yield endpoint
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _empty_bucket(name: str) -> str:
    """A new bucket on the S3 server named in the environment; its output URL."""
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    if fs.exists(name):
        fs.rm(name, recursive=True)
    fs.mkdir(name)
    return f"s3://{name}/out.zarr"


def _commands(folder: Path, out: str) -> dict[str, list[str]]:
    args = [str(folder), "-k", "8", "-o", out, "--workers", "2"]
    return {
        "kmdist segment": [python(), "-m", "kmdist.cli", "segment", *args],
        "Prefect flow segment_archive (server started before)": [
            python(),
            str(ROOT / "flows/segment.py"),
            *args,
        ],
    }


def _measure(cmd: list[str], out: str, what: str) -> Measured:
    if not out.startswith("s3://"):
        shutil.rmtree(out, ignore_errors=True)
    m = run_measured(cmd)
    check_ok(m, what)
    return m


def run(sizes: list[int], work: Path, s3: bool, s3_max: int) -> dict[str, Any]:
    """Measure each way on archives of `sizes` thumbnails (and of `_BASE`, for start-up).

    The S3 way runs on archives of at most `s3_max` images (moto answers slowly).
    """
    folders = {n: work / f"thumbs-{n}" for n in [_BASE, *sizes]}
    for n, folder in folders.items():
        make_thumbnails(folder, n)
    results: dict[str, dict[int, Measured]] = {}
    with contextlib.ExitStack() as stack:
        startup = stack.enter_context(prefect_server(work))
        print(f"prefect server start-up: {startup:.1f} s", flush=True)
        endpoint = stack.enter_context(moto_server(work)) if s3 else None
        # A first run of each way, not counted: caches (compiled kernels, files) warm up.
        order = [(_BASE, "warm-up"), *((n, "") for n in folders)]
        for n, warmup in order:
            folder = folders[n]
            local = str(work / "scale-out.zarr")
            ways = _commands(folder, local)
            if endpoint is not None and n <= s3_max:
                url = _empty_bucket(f"kmdist-scale-{n}")
                ways["kmdist segment, store on S3 (moto)"] = _commands(folder, url)[
                    "kmdist segment"
                ]
            for way, cmd in ways.items():
                out = cmd[cmd.index("-o") + 1]
                m = _measure(cmd, out, f"{way} on {n} images")
                print(
                    f"{way}, {n} images {warmup}: {m.seconds:.1f} s, {m.peak_rss_gb:.2f} GB",
                    flush=True,
                )
                if not warmup:
                    results.setdefault(way, {})[n] = m
    rows = []
    for way, by_size in results.items():
        base = by_size[_BASE]
        first = None
        for n in sizes:
            if n not in by_size:
                continue
            m = by_size[n]
            per_image = 1000 * m.seconds / n
            net = 1000 * (m.seconds - base.seconds) / (n - _BASE)
            first = first or (per_image, net, m.peak_rss_gb)
            note = (
                f"{per_image:.1f} ms an image ({per_image / first[0]:.2f}x the smallest), "
                f"{net:.1f} ms net of a {_BASE}-image run ({net / first[1]:.2f}x); "
                f"peak memory {m.peak_rss_gb / first[2]:.2f}x"
            )
            case = f"archive of {n:,} {SIDE}x{SIDE} images"
            rows.append(Row(case, way, m.seconds, None, m.peak_rss_gb, note, [m.seconds]))
    rows.append(Row("all", "Prefect server start-up (excluded above)", startup, runs=[startup]))
    return {"machine": machine(), "sizes": sizes, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/kmdist-bench"))
    parser.add_argument("--s3", action="store_true", help="also a store on moto's S3")
    parser.add_argument("--s3-max", type=int, default=10_000, help="largest archive written to S3")
    parser.add_argument("--quick", action="store_true", help="archives of 50 and 200")
    args = parser.parse_args()
    if args.quick:
        args.sizes = [50, 200]
    result = run(args.sizes, args.work, args.s3, args.s3_max)
    for row in result["rows"]:
        print(f"{row.case:<32} {row.method:<52} {row.seconds:8.1f} s  {row.note}")
    # The S3 rounds run on smaller archives: their own file keeps the largest local round's.
    name = "archive-scale-s3" if args.s3 else "archive-scale"
    save(f"{name}-quick" if args.quick else name, result)


if __name__ == "__main__":
    main()
