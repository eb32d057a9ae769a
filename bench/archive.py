"""Target 5: an archive of many small photos, three ways, each as its own process.

Builds N photo-like 256 x 256 PNGs (crops of scikit-learn's and scikit-image's sample
photos, flipped and with a little noise), then times:

- ``kmdist segment`` on the folder (a palette per image, OME-Zarr output);
- the seed's loop: per image, ``MiniBatchKMeans(16).fit`` on its pixels, ``predict``,
  and the recoloured image written as PNG (scikit-learn's colour-quantisation recipe);
- the Prefect flow ``segment_archive`` on the same folder (``python flows/segment.py``),
  twice: on Prefect's ephemeral API (its server started inside the run, as with no
  configuration), and against a ``prefect server`` started before the runs, whose
  start-up is reported on its own row: the flow's work, comparable with the CLI's.

Usage: ``python bench/archive.py [--images 1000] [--work DIR] [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
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

SIDE = 256
RECIPES = Path(__file__).with_name("recipes.py")


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_image

    photos = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    try:
        from skimage import data

        photos += [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    except ImportError:
        pass
    return photos


def make_archive(folder: Path, n: int) -> None:
    """Write `n` distinct 256 x 256 PNG crops to `folder` (kept when already complete)."""
    import imageio.v3 as iio

    if folder.is_dir() and len(list(folder.glob("*.png"))) == n:
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    photos = _photos()
    for i in range(n):
        src = photos[i % len(photos)]
        y = rng.integers(0, src.shape[0] - SIDE + 1)
        x = rng.integers(0, src.shape[1] - SIDE + 1)
        tile = src[y : y + SIDE, x : x + SIDE].astype(np.int16)
        if rng.random() < 0.5:
            tile = tile[:, ::-1]
        tile += rng.integers(-2, 3, size=tile.shape, dtype=np.int16)
        iio.imwrite(folder / f"img{i:05d}.png", np.clip(tile, 0, 255).astype(np.uint8))


def run(n: int, work: Path, cap: float, repeats: int) -> dict[str, Any]:
    """Measure the three ways on an archive of `n` images, each into an empty output.

    Each way runs `repeats` times, interleaved, and is reported by its median run.
    """
    folder = work / f"archive-{n}"
    make_archive(folder, n)
    case = f"{n} images of {SIDE}x{SIDE}"
    kmdist_out, flow_out, sk_out = (
        work / "archive-kmdist.zarr",
        work / "archive-flow.zarr",
        work / "archive-sklearn",
    )
    kmdist_cmd = ["-k", "16", "-o", str(kmdist_out), "--workers", "2"]
    flow_cmd = ["-k", "16", "-o", str(flow_out), "--workers", "2"]
    ways: dict[str, list[str]] = {
        "kmdist segment": [python(), "-m", "kmdist.cli", "segment", str(folder), *kmdist_cmd],
        "Prefect flow segment_archive": [
            python(),
            str(ROOT / "flows/segment.py"),
            str(folder),
            *flow_cmd,
        ],
        "sklearn MiniBatchKMeans(16) loop": [
            python(),
            str(RECIPES),
            "sklearn-loop",
            str(folder),
            str(sk_out),
        ],
    }
    server_way = "Prefect flow segment_archive, server started before"
    outputs = dict(zip(ways, (kmdist_out, flow_out, sk_out), strict=True))
    outputs[server_way] = flow_out
    runs: dict[str, list[Measured]] = {way: [] for way in [*ways, server_way]}
    notes: dict[str, str] = dict.fromkeys(runs, "")
    with prefect_server(work) as startup:
        print(f"prefect server start-up: {startup:.1f} s", flush=True)
        for _ in range(repeats):
            for way, cmd in [*ways.items(), (server_way, ways["Prefect flow segment_archive"])]:
                shutil.rmtree(outputs[way], ignore_errors=True)  # every way starts empty
                capped = way.startswith("sklearn")
                with _ephemeral(way != server_way and way.startswith("Prefect")):
                    m = run_measured(cmd, timeout=cap if capped else None)
                check_ok(m, way)
                if m.capped:  # the loop's time, extrapolated from the images it finished
                    done = len(list(sk_out.glob("*.png"))) if sk_out.is_dir() else 0
                    notes[way] = f"capped at {cap:.0f} s after {done} of {n} images; extrapolated"
                    m = replace(m, seconds=m.seconds * n / max(done, 1))
                runs[way].append(m)
                print(f"{way}: {m.seconds:.1f} s {notes[way]}", flush=True)
    rows = []
    for way, measured in runs.items():
        mid = sorted(measured, key=lambda m: m.seconds)[len(measured) // 2]
        times = [m.seconds for m in measured]
        rows.append(Row(case, way, mid.seconds, None, mid.peak_rss_gb, notes[way], times))
    rows.append(
        Row(case, "Prefect server start-up (excluded above)", startup, None, None, "", [startup])
    )
    return {"machine": machine(), "images": n, "rows": rows}


@contextlib.contextmanager
def _ephemeral(on: bool) -> Iterator[None]:
    """With `on`, hide the started server from the child: it starts Prefect's own."""
    saved = os.environ.pop("PREFECT_API_URL", None) if on else None
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PREFECT_API_URL"] = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kmdist-bench"))
    parser.add_argument("--cap", type=float, default=1800.0, help="seconds for the seed loop")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way")
    parser.add_argument("--quick", action="store_true", help="100 images, 1 run")
    args = parser.parse_args()
    n, repeats = (100, 1) if args.quick else (args.images, args.repeats)
    args.work.mkdir(parents=True, exist_ok=True)
    save("archive-quick" if args.quick else "archive", run(n, args.work, args.cap, repeats))


if __name__ == "__main__":
    sys.exit(main())
