"""Storage faults on a real local file system, through the ``kmdist`` command.

A size-limited tmpfs fills up mid-run, is remounted read-only mid-run, and the store
folder is removed mid-run. In each case what completed is readable and identical to a
clean run's, what did not is named and counted by ``kmdist info``, the terminal gets
one line per failed image and no traceback, and ``--resume`` finishes exactly the rest.
Mounting needs root: the tests are skipped, with the reason, where it is refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import pytest
from numpy.testing import assert_array_equal
from sklearn.datasets import load_sample_image

from kmdist import list_segmentations, open_segmentation

pytestmark = pytest.mark.slow
N_IMAGES = 30
# The chunked path's writes go through zarr on the workers; the small path's are direct.
PATHS = {"small": [], "chunked": ["--chunks", "64"]}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Thirty 256 x 320 crops of two photos: about 5 MB of output in all."""
    root = tmp_path_factory.mktemp("photos")
    china, flower = load_sample_image("china.jpg"), load_sample_image("flower.jpg")
    for i in range(N_IMAGES):
        src = china if i % 2 else flower
        y, x = (i * 7) % 150, (i * 13) % 200
        iio.imwrite(root / f"photo{i:02d}.png", src[y : y + 256, x : x + 320])
    return root


def segment(photos: Path, out: Path, *extra: str, when: str | None = None, then=None):
    """Run ``kmdist segment``; call `then()` once stdout shows `when`. Returns
    (exit code, stdout, stderr)."""
    cmd = [sys.executable, "-m", "kmdist.cli", "segment", str(photos), "-k", "8"]
    cmd += ["-o", str(out), "--workers", "2", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        if when is not None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if line.startswith(when):
                    then()
                    break
        rest, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines) + rest, err


def info_summary(out: Path) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "kmdist.cli", "info", "--summary", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout


@pytest.fixture(scope="module", params=list(PATHS))
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def clean(photos: Path, path: str, tmp_path_factory: pytest.TempPathFactory):
    """The labels of a clean run, by image."""
    out = tmp_path_factory.mktemp("clean") / "clean.zarr"
    code, _, err = segment(photos, out, *PATHS[path])
    assert code == 0, err
    return {
        i.name: open_segmentation(out, i.name).labels.compute() for i in list_segmentations(out)
    }


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted for the test, unmounted after it whatever happens."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or 'not root'}")
    try:
        yield where
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["mount", "-o", "remount,rw", str(where)], capture_output=True)
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def check_outcome(out: Path, clean: dict, stdout: str, stderr: str, reason: str) -> list[str]:
    """The checks every fault shares; returns the names of the incomplete images."""
    assert "Traceback" not in stderr and "Task exception" not in stderr, stderr
    failed = re.findall(r"^\[\d+/\d+\+?\] (\S+) .*: FAILED: .*$", stdout, re.M)
    lines = re.findall(r"^.*FAILED.*$", stdout, re.M)
    assert all(line.endswith(f": {reason}") for line in lines), lines
    summary = re.search(r"^(\d+) done, 0 skipped, (\d+) failed in [\d.]+ s", stdout, re.M)
    assert summary is not None, stdout
    assert int(summary.group(2)) == len(failed) >= 3
    # One line per failed image, then the run's one line.
    err_lines = stderr.strip().splitlines()
    assert len(err_lines) == len(failed) + 1, stderr
    # Each names its image and the store's reason (writing its group, or its lock).
    for name, line in zip(failed, err_lines, strict=False):
        # (the store itself, when a worker first meets it read-only, or the image's group)
        assert re.search(rf"{name}\.png: {re.escape(str(out))}[/:]", line), line
        assert line.endswith(f": {reason}"), line
    assert re.fullmatch(
        rf"kmdist segment: error: {re.escape(str(out))}: {re.escape(reason)} \(3 images in a "
        r"row\): the output store cannot be written; stopped, .*then rerun with --resume",
        err_lines[-1],
    ), err_lines[-1]
    infos = list_segmentations(out)
    complete = [i.name for i in infos if i.complete]
    incomplete = sorted(i.name for i in infos if not i.complete)
    # A failed image is incomplete, or absent when the store refused even its folder.
    assert not set(failed) & set(complete)
    for name in complete:  # what completed is what a clean run writes
        assert_array_equal(open_segmentation(out, name).labels.compute(), clean[name])
    code, text = info_summary(out)
    assert code == (3 if incomplete else 0)
    assert text.splitlines()[0] == f"{out}: {len(complete)} complete, {len(incomplete)} incomplete"
    if incomplete:
        assert text.splitlines()[1] == "incomplete: " + ", ".join(incomplete)
    return incomplete


def check_resumed(photos: Path, out: Path, clean: dict, path: str) -> None:
    """--resume writes exactly what is not complete; then the store is the clean run's."""
    complete = {i.name for i in list_segmentations(out) if i.complete}
    code, stdout, stderr = segment(photos, out, "--resume", *PATHS[path])
    assert code == 0, stderr
    done = set(re.findall(r"^\[\d+/\d+\+?\] (\S+) .*: 256x320x3", stdout, re.M))
    assert done == set(clean) - complete
    assert f"{len(done)} done, {len(complete)} skipped, 0 failed" in stdout
    infos = list_segmentations(out)
    assert len(infos) == N_IMAGES and all(i.complete for i in infos)
    for name, labels in clean.items():
        assert_array_equal(open_segmentation(out, name).labels.compute(), labels)


def test_a_full_disk(photos: Path, small_disk: Path, clean: dict, path: str):
    # Leave room for about half of the images' output (tmpfs counts whole pages).
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 5_800_000)
    out = small_disk / "out.zarr"
    code, stdout, stderr = segment(photos, out, *PATHS[path])
    assert code == 1, stderr
    incomplete = check_outcome(out, clean, stdout, stderr, "No space left on device")
    # Stopped early: the images after the third failure in a row were not attempted.
    stopped = re.search(r"; (\d+) not attempted$", stdout.splitlines()[-1])
    assert stopped is None or int(stopped.group(1)) <= len(incomplete)
    filler.unlink()
    check_resumed(photos, out, clean, path)


def test_a_store_remounted_read_only_mid_run(
    photos: Path, small_disk: Path, clean: dict, path: str
):
    out = small_disk / "out.zarr"

    def read_only() -> None:
        # Refused while a file is open for writing: tried again until it takes.
        deadline = time.monotonic() + 30
        while subprocess.run(
            ["mount", "-o", "remount,ro", str(small_disk)], capture_output=True
        ).returncode:
            assert time.monotonic() < deadline, "could not remount read-only"
            time.sleep(0.01)

    code, stdout, stderr = segment(photos, out, *PATHS[path], when="[3/", then=read_only)
    assert code == 1, stderr
    check_outcome(out, clean, stdout, stderr, "Read-only file system")
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    check_resumed(photos, out, clean, path)


def test_a_store_removed_mid_run(photos: Path, tmp_path: Path, clean: dict, path: str) -> None:
    # The store is made again at the next image (its root group first): what was
    # removed is simply absent, and --resume writes it again.
    import shutil

    out = tmp_path / "out.zarr"

    def remove() -> None:
        # Moved away first: the run's writes go on meanwhile, and would refill a folder
        # being removed file by file.
        out.rename(tmp_path / "gone")
        shutil.rmtree(tmp_path / "gone")

    code, _, stderr = segment(photos, out, *PATHS[path], when="[3/", then=remove)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    infos = list_segmentations(out)
    assert 0 < len(infos) < N_IMAGES and all(i.complete for i in infos)
    for info in infos:
        assert_array_equal(open_segmentation(out, info.name).labels.compute(), clean[info.name])
    assert os.path.isfile(out / "zarr.json")
    check_resumed(photos, out, clean, path)
