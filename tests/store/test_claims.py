"""Two runs writing the same image at once: the second refuses, the first is intact."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import dask.array as da
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from kmdist import OutputError, Palette, is_complete, open_segmentation, write_segmentation
from kmdist.store import _claims

WRITER = textwrap.dedent(
    """
    import sys, time
    import dask, dask.array as da, numpy as np
    from kmdist import Palette, write_segmentation

    def slow(block):
        time.sleep(0.2)
        return block

    labels = da.from_array(np.arange(200 * 300).reshape(200, 300) % 3, chunks=50)
    labels = labels.astype(np.uint8).map_blocks(slow, dtype=np.uint8)
    palette = Palette(np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]]), np.array([3, 2, 1]), 1.0)
    with dask.config.set(scheduler="threads", num_workers=1):
        write_segmentation(sys.argv[1], "photo", labels, palette, source="slow")
    print("written", flush=True)
    """
)


def expected_labels():
    return (np.arange(200 * 300).reshape(200, 300) % 3).astype(np.uint8)


def test_second_writer_refused_while_first_writes(tmp_path):
    store = tmp_path / "out.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (store / "photo" / "labels" / "segmentation" / "zarr.json").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        palette = Palette(np.array([[9, 9, 9]]), np.array([1]), 0.0)
        other = da.zeros((10, 10), dtype=np.uint8)
        for overwrite in (False, True):
            with pytest.raises(
                OutputError, match=rf"photo: being written by another run \(process {proc.pid}\)"
            ):
                write_segmentation(store, "photo", other, palette, overwrite=overwrite)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert is_complete(store, "photo")
    seg = open_segmentation(store, "photo")
    assert_array_equal(seg.labels.compute(), expected_labels())
    assert seg.attrs["writer"]["pid"] == proc.pid


def test_claim_of_a_dead_writer_does_not_hold(tmp_path):
    store = tmp_path / "out.zarr"
    palette = Palette(np.array([[1, 2, 3], [4, 5, 6]]), np.array([2, 1]), 0.0)
    labels = da.from_array(np.array([[0, 1], [1, 0]], dtype=np.uint8))
    write_segmentation(store, "photo", labels, palette)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    group = zarr.open_group(str(store / "photo" / "labels" / "segmentation"), mode="r+")
    block = dict(group.attrs["kmdist"])
    block.update(complete=False, claimed=True, writer={**block["writer"], "pid": int(dead.stdout)})
    group.attrs["kmdist"] = block  # as a crashed run leaves it
    write_segmentation(store, "photo", labels, palette)  # no overwrite needed: incomplete
    assert is_complete(store, "photo")


@pytest.mark.parametrize("claimed", [True, False])
def test_only_a_live_claim_holds(tmp_path, claimed):
    # A Dask worker that wrote an image lives on after the write. Its claim ended when
    # the write completed (or failed), so a later run redoes the image if it is found
    # incomplete; a claim still held by a live process is refused.
    store = tmp_path / "out.zarr"
    palette = Palette(np.array([[1, 2, 3], [4, 5, 6]]), np.array([2, 1]), 0.0)
    labels = da.from_array(np.array([[0, 1], [1, 0]], dtype=np.uint8))
    write_segmentation(store, "photo", labels, palette)
    group = zarr.open_group(str(store / "photo" / "labels" / "segmentation"), mode="r+")
    assert "claimed" not in group.attrs["kmdist"]
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        block = dict(group.attrs["kmdist"])
        writer = {**block["writer"], "pid": live.pid, "started": _claims.process_start(live.pid)}
        block.update(complete=False, writer=writer)
        if claimed:
            block["claimed"] = True
        group.attrs["kmdist"] = block
        if claimed:
            with pytest.raises(OutputError, match=rf"process {live.pid}"):
                write_segmentation(store, "photo", labels, palette)
        else:
            write_segmentation(store, "photo", labels, palette)
            assert is_complete(store, "photo")
    finally:
        live.kill()
        live.wait()


def test_claim_from_another_host_holds_while_its_group_changes(tmp_path):
    # A pod or container on another host cannot be asked whether it lives: its claim
    # holds while it keeps writing, and lapses 15 minutes after its last write.
    store = tmp_path / "out.zarr"
    palette = Palette(np.array([[1, 2, 3], [4, 5, 6]]), np.array([2, 1]), 0.0)
    labels = da.from_array(np.array([[0, 1], [1, 0]], dtype=np.uint8))
    write_segmentation(store, "photo", labels, palette)
    group = zarr.open_group(str(store / "photo" / "labels" / "segmentation"), mode="r+")
    block = dict(group.attrs["kmdist"])
    writer = {"host": "other-node-7", "pid": os.getpid(), "started": None}
    block.update(complete=False, claimed=True, writer=writer)
    group.attrs["kmdist"] = block  # just written by a run on another host
    with pytest.raises(OutputError, match=r"host 'other-node-7', which wrote to it \d+ s ago"):
        write_segmentation(store, "photo", labels, palette)
    # The same claim, its group untouched for longer than the lease: the run is gone.
    idle = time.time() - _claims.FOREIGN_LEASE - 60
    for path in [store / "photo", *(store / "photo").rglob("*")]:
        os.utime(path, (idle, idle), follow_symlinks=False)
    write_segmentation(store, "photo", labels, palette)
    assert is_complete(store, "photo")
    assert (
        zarr.open_group(str(store / "photo" / "labels" / "segmentation")).attrs["kmdist"]["writer"][
            "host"
        ]
        == socket.gethostname()
    )


def test_claim_of_the_same_run_on_another_host_does_not_hold(tmp_path):
    # A batch retried by Dask on another host after its worker died takes its images over.
    store = tmp_path / "out.zarr"
    palette = Palette(np.array([[1, 2, 3], [4, 5, 6]]), np.array([2, 1]), 0.0)
    labels = da.from_array(np.array([[0, 1], [1, 0]], dtype=np.uint8))
    write_segmentation(store, "photo", labels, palette, run="run-a")
    group = zarr.open_group(str(store / "photo" / "labels" / "segmentation"), mode="r+")
    block = dict(group.attrs["kmdist"])
    assert block["writer"]["run"] == "run-a"
    writer = {"host": "other-node-7", "pid": os.getpid(), "started": None, "run": "run-a"}
    block.update(complete=False, claimed=True, writer=writer)
    group.attrs["kmdist"] = block  # the first attempt, just killed with its pod
    with pytest.raises(OutputError, match="other-node-7"):
        write_segmentation(store, "photo", labels, palette, run="run-b")
    write_segmentation(store, "photo", labels, palette, run="run-a")
    assert is_complete(store, "photo")
