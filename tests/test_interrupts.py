"""Interrupted runs: SIGKILL leaves nothing marked complete that is not; SIGINT stops
cleanly saying what finished; --resume then completes exactly the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.datasets import load_sample_image

from kmdist import list_segmentations, open_segmentation

pytestmark = pytest.mark.slow
N_IMAGES = 6


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six 2-megapixel photos, so that a run takes several seconds."""
    root = tmp_path_factory.mktemp("photos")
    china, flower = load_sample_image("china.jpg"), load_sample_image("flower.jpg")
    for i in range(N_IMAGES):
        src = china if i % 2 else flower
        big = np.kron(src, np.ones((3, 3, 1), dtype=np.uint8))[: 1200 + 40 * i, :1700]
        iio.imwrite(root / f"photo{i}.png", np.roll(big, 37 * i, axis=1))
    return root


def segment(photos, out, *extra, wait_for=None, send=None, until=None):
    """Run `kmdist segment` in its own process group; optionally signal the group once
    the output shows `wait_for` and then `until()` holds. Returns (exit code, stdout,
    stderr)."""
    cmd = [
        sys.executable,
        "-m",
        "kmdist.cli",
        "segment",
        str(photos),
        "-k",
        "8",
        "-o",
        str(out),
        "--workers",
        "2",
        "--chunks",
        "512",
        *extra,
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # As from a terminal: a shell runs background jobs (CI's) with SIGINT ignored, and
        # a child inherits that, so Python would never raise KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines = []
    if wait_for is not None:
        for line in proc.stdout:
            lines.append(line)
            if wait_for in line:
                # Signal once `until()` holds (an image half written), polled with a
                # bound: a fixed pause could land after the run has finished.
                deadline = time.monotonic() + 120
                while until is not None and not until():
                    assert proc.poll() is None, "the run ended before it could be signalled"
                    assert time.monotonic() < deadline, "no image was half written in 120 s"
                    time.sleep(0.005)
                os.killpg(proc.pid, send)
                break
    try:
        out_rest, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, "".join(lines) + out_rest, err


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    code, _, err = segment(photos, out)
    assert code == 0, err
    return {
        f"photo{i}": open_segmentation(out, f"photo{i}").labels.compute() for i in range(N_IMAGES)
    }


def check_complete_ones_are_right(out, reference):
    complete = [i.name for i in list_segmentations(out) if i.complete]
    for name in complete:
        assert_array_equal(open_segmentation(out, name).labels.compute(), reference[name])
    return complete


def writing(out):
    """Names of images whose group is claimed but not complete, and has chunks on disk."""
    return [
        i.name
        for i in list_segmentations(out)
        if not i.complete and any((out / i.name / "0" / "c").glob("*"))
    ]


def mid_run(out):
    """An image is half written and another is not yet begun: a signal sent now lands
    while the run still has seconds of work (the image half written could be the last,
    and on a loaded machine the run could end before the signal arrives)."""
    infos = list_segmentations(out)
    return bool(writing(out)) and len(infos) < N_IMAGES


def test_sigkill_mid_run_then_resume(photos, tmp_path, reference):
    out = tmp_path / "o.zarr"
    code, _, _ = segment(
        photos, out, wait_for="[2/", send=signal.SIGKILL, until=lambda: mid_run(out)
    )
    assert code == -signal.SIGKILL
    # Killed while writing an image: its group is there, with chunks, and not complete.
    assert writing(out)
    complete = check_complete_ones_are_right(out, reference)
    assert 2 <= len(complete) < N_IMAGES
    code, stdout, err = segment(photos, out, "--resume")
    assert code == 0, err
    assert f"{len(complete)} skipped" in stdout and f"{N_IMAGES - len(complete)} done" in stdout
    assert len(check_complete_ones_are_right(out, reference)) == N_IMAGES


def test_sigint_stops_cleanly_and_says_what_finished(photos, tmp_path, reference):
    out = tmp_path / "o.zarr"
    code, _, err = segment(
        photos, out, wait_for="[1/", send=signal.SIGINT, until=lambda: mid_run(out)
    )
    assert code == 130, err
    assert "interrupted after" in err and "photo0" in err and "--resume" in err
    complete = check_complete_ones_are_right(out, reference)
    assert "photo0" in complete and len(complete) < N_IMAGES
    code, stdout, err = segment(photos, out, "--resume")
    assert code == 0, err
    # Exactly the rest is redone: each complete image skipped, each other one done.
    for name in complete:
        assert f"] {name} (" in stdout and f"{name}.png): already complete, skipped" in stdout
    assert f"{N_IMAGES - len(complete)} done, {len(complete)} skipped, 0 failed" in stdout
    assert len(check_complete_ones_are_right(out, reference)) == N_IMAGES


def test_shared_palette_resumed_after_sigkill_is_learned_from_every_image(photos, tmp_path):
    # The resumed run labels only the images not yet complete, but learns its palette
    # from all of them, as the uninterrupted run did: every image ends with one palette.
    ref = tmp_path / "ref.zarr"
    code, _, err = segment(photos, ref, "--shared-palette")
    assert code == 0, err
    shared = open_segmentation(ref, "photo0").palette
    out = tmp_path / "o.zarr"
    code, _, _ = segment(
        photos,
        out,
        "--shared-palette",
        wait_for="[2/6]",
        send=signal.SIGKILL,
        until=lambda: mid_run(out),
    )
    assert code == -signal.SIGKILL
    complete = [i.name for i in list_segmentations(out) if i.complete]
    assert 2 <= len(complete) < N_IMAGES
    code, stdout, err = segment(photos, out, "--shared-palette", "--resume")
    assert code == 0, err
    assert f"{N_IMAGES - len(complete)} done, {len(complete)} skipped, 0 failed" in stdout
    for i in range(N_IMAGES):
        seg = open_segmentation(out, f"photo{i}")
        assert seg.palette == shared, f"photo{i}"
        assert_array_equal(seg.labels.compute(), open_segmentation(ref, f"photo{i}").labels)
