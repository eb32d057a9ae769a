"""A flow run killed halfway through an archive of large images: the images it wrote are
complete, and ``--resume`` redoes exactly the others."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import zarr
from sklearn.datasets import load_sample_image

from kmdist import list_segmentations, open_segmentation
from kmdist.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
N_IMAGES = 8
SIDE = 2100  # 4.4 megapixels: above SMALL_PIXELS, so each takes the chunked path


def writer_run(store: Path, name: str) -> str:
    group = zarr.open_group(str(store / name / "labels" / "segmentation"), mode="r")
    return str(group.attrs["kmdist"]["writer"]["run"])


@pytest.fixture(scope="module")
def large_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("large")
    rng = np.random.default_rng(7)
    base = np.kron(load_sample_image("china.jpg")[:350, :350], np.ones((6, 6, 1), np.uint8))
    for i in range(N_IMAGES):
        noisy = np.clip(np.roll(base, 37 * i, axis=1) + rng.integers(-3, 4, base.shape), 0, 255)
        iio.imwrite(folder / f"scan{i}.png", noisy.astype(np.uint8), compression=1)
    return folder


@pytest.mark.slow
def test_killed_flow_leaves_complete_images_and_resume_redoes_the_rest(large_images, tmp_path):
    out = tmp_path / "out.zarr"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    cmd = [sys.executable, str(ROOT / "flows/segment.py"), str(large_images), "-o", str(out)]
    proc = subprocess.Popen(
        [*cmd, "-k", "4", "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its LocalCluster's processes die with it
    )
    complete: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while len(complete) < 2:
            assert proc.poll() is None, "the flow ended before it could be killed"
            assert time.monotonic() < deadline, "no image completed in time"
            time.sleep(0.2)
            if (out / "zarr.json").exists():  # the folder comes a moment before its root
                complete = [i.name for i in list_segmentations(out) if i.complete]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    done = [i.name for i in list_segmentations(out) if i.complete]
    assert 2 <= len(done) < N_IMAGES, done
    for name in done:  # complete means complete: every array readable, every pixel set
        seg = open_segmentation(out, name)
        assert seg.labels.shape == (SIDE, SIDE)
        assert int(seg.labels.max().compute()) == seg.palette.k - 1
    runs = {name: writer_run(out, name) for name in done}

    assert cli_main(["segment", str(large_images), "-k", "4", "-o", str(out), "--resume"]) == 0
    infos = list_segmentations(out)
    assert [i.name for i in infos] == [f"scan{i}" for i in range(N_IMAGES)]
    assert all(i.complete for i in infos)
    redone = {i.name for i in infos if runs.get(i.name) != writer_run(out, i.name)}
    assert redone == {f"scan{i}" for i in range(N_IMAGES)} - set(done)
