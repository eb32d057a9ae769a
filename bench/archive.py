"""Target 5: an archive of many small photos, three ways, each as its own process.

Builds N photo-like 256 x 256 PNGs (crops of scikit-learn's and scikit-image's sample
photos, flipped and with a little noise), then times:

- ``kmdist segment`` on the folder (a palette per image, OME-Zarr output);
- the seed's loop: per image, ``MiniBatchKMeans(16).fit`` on its pixels, ``predict``,
  and the recoloured image written as PNG (scikit-learn's colour-quantisation recipe);
- the Prefect flow ``segment_archive`` on the same folder (``python flows/segment.py``),
  Prefect's ephemeral API included.

Usage: ``python bench/archive.py [--images 1000] [--work DIR] [--quick]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, Row, check_ok, machine, python, run_measured, save

SIDE = 256
RECIPES = Path(__file__).with_name("recipes.py")
# Both kmdist runs: 16 colours, a 2-worker LocalCluster, replacing an earlier run's output.
ARGS = ["-k", "16", "--overwrite", "--workers", "2"]


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


def run(n: int, work: Path, cap: float) -> dict[str, Any]:
    """Measure the three ways on an archive of `n` images."""
    folder = work / f"archive-{n}"
    make_archive(folder, n)
    case = f"{n} images of {SIDE}x{SIDE}"
    rows = []
    ours = run_measured(
        [
            python(),
            "-m",
            "kmdist.cli",
            "segment",
            str(folder),
            "-k",
            "16",
            "-o",
            str(work / "archive-kmdist.zarr"),
            "--overwrite",
            "--workers",
            "2",
        ]
    )
    check_ok(ours, "kmdist segment")
    rows.append(Row(case, "kmdist segment", ours.seconds, peak_rss_gb=ours.peak_rss_gb))
    print(f"kmdist segment: {ours.seconds:.1f} s", flush=True)
    flow = run_measured(
        [
            python(),
            str(ROOT / "flows" / "segment.py"),
            str(folder),
            "-k",
            "16",
            "-o",
            str(work / "archive-flow.zarr"),
            "--overwrite",
            "--workers",
            "2",
        ]
    )
    check_ok(flow, "segment_archive flow")
    rows.append(
        Row(case, "Prefect flow segment_archive", flow.seconds, peak_rss_gb=flow.peak_rss_gb)
    )
    print(f"Prefect flow: {flow.seconds:.1f} s", flush=True)
    out = work / "archive-sklearn"
    shutil.rmtree(out, ignore_errors=True)
    seed = run_measured(
        [
            python(),
            str(Path(__file__).with_name("recipes.py")),
            "sklearn-loop",
            str(folder),
            str(out),
        ],
        timeout=cap,
    )
    check_ok(seed, "scikit-learn loop")
    done = len(list(out.glob("*.png"))) if out.is_dir() else 0
    note = f"capped at {cap:.0f} s after {done} of {n} images" if seed.capped else ""
    seconds = seed.seconds * n / max(done, 1) if seed.capped else seed.seconds
    if seed.capped:
        note += f"; time extrapolated to {n} images"
    rows.append(Row(case, "sklearn MiniBatchKMeans(16) loop", seconds, note=note))
    print(f"sklearn loop: {seconds:.1f} s {note}", flush=True)
    return {"machine": machine(), "images": n, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kmdist-bench"))
    parser.add_argument("--cap", type=float, default=1800.0, help="seconds for the seed loop")
    parser.add_argument("--quick", action="store_true", help="100 images")
    args = parser.parse_args()
    n = 100 if args.quick else args.images
    args.work.mkdir(parents=True, exist_ok=True)
    save("archive-quick" if args.quick else "archive", run(n, args.work, args.cap))


if __name__ == "__main__":
    sys.exit(main())
