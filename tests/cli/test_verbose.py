"""`kmdist segment`'s output on its own LocalCluster: Dask kept quiet unless -v; sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("in")
    rng = np.random.default_rng(15)
    iio.imwrite(root / "good.png", rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    iio.imwrite(root / "cut.jpg", rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    data = (root / "cut.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(data[: len(data) // 2])  # truncated
    return root


def _segment(folder: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    # --chunks: the chunked path, where the decode is a Dask task that fails on a worker.
    argv = ["segment", str(folder), "-k", "4", "-o", str(out), "--chunks", "64", "--workers", "1"]
    return subprocess.run(
        [sys.executable, "-m", "kmdist.cli", *argv, *flags],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _dask_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "distributed" in line]


@pytest.mark.slow
def test_segment_keeps_dask_quiet_and_prints_height_width_channels(folder, tmp_path):
    proc = _segment(folder, tmp_path / "out.zarr")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output  # one image failed
    assert len(_dask_lines(output)) <= 5, output
    assert "Traceback" not in output and "Compute Failed" not in output, output
    assert f"kmdist segment: {folder / 'cut.jpg'}: cannot decode the image" in proc.stderr
    # 40 rows, 60 columns, 3 channels.
    assert f"good ({folder / 'good.png'}): 40x60x3, 4 colours, inertia" in proc.stdout


@pytest.mark.slow
def test_segment_verbose_shows_dask_and_the_worker_traceback(folder, tmp_path):
    proc = _segment(folder, tmp_path / "out.zarr", "-v")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Compute Failed" in proc.stderr and "Traceback" in proc.stderr, output
    assert len(_dask_lines(output)) > 5, output
    assert f"kmdist segment: {folder / 'cut.jpg'}: cannot decode the image" in proc.stderr


@pytest.mark.slow
def test_fewer_colours_said_once_as_kmdists_line(tmp_path):
    # A single-colour image among photos: kmdist's "warning:" line under its result,
    # not a second, raw Python warning from the worker that fitted the palette.
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(3)
    iio.imwrite(folder / "flat.png", np.full((30, 40, 3), (200, 30, 30), np.uint8))
    iio.imwrite(folder / "noise.png", rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    argv = ["segment", str(folder), "-k", "4", "-o", str(tmp_path / "o.zarr"), "--workers", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "kmdist.cli", *argv],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    said = [line for line in output.splitlines() if "distinct colour" in line]
    assert said == ["    warning: only 1 distinct colour(s) in the image: 1 colour(s) instead of 4"]
    assert "FewerColorsWarning" not in output, output


def test_info_prints_height_width_channels(tmp_path, capsys):
    from kmdist import Palette, write_segmentation
    from kmdist.cli import main

    store = tmp_path / "s.zarr"
    rgb = Palette(np.array([[0, 0, 0], [9, 9, 9]]), np.array([3, 3]), 0.0)
    grey = Palette(np.array([[0], [200]]), np.array([3, 3]), 0.0)
    labels = np.array([[0, 1, 0], [1, 0, 1]], np.uint8)  # 2 rows, 3 columns
    write_segmentation(store, "rgb", labels, rgb)
    write_segmentation(store, "grey", labels, grey)
    assert main(["info", str(store)]) == 0
    out = capsys.readouterr().out
    assert "rgb: 2x3x3, k=2" in out and "grey: 2x3x1, k=2" in out
