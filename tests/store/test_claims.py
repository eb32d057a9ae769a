"""Writer claims (kmdist.store._claims): two runs writing the same image at once (the second
refuses, the first is intact), when a claim lapses, and what an existing output blocks."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time

import dask
import dask.array as da
import numpy as np
import psutil
import pytest
import zarr
from numpy.testing import assert_array_equal

from kmdist import OutputError, Palette, is_complete, open_segmentation, write_segmentation
from kmdist.store import _claims
from kmdist.store._claims import (
    FOREIGN_LEASE,
    clear_previous,
    live_writer,
    process_start,
    writing,
)
from kmdist.store._errors import OutputExistsError
from kmdist.store._read import list_segmentations
from kmdist.store._root import open_root
from tests.store._helpers import make_labels, make_palette, write

WRITER = textwrap.dedent(
    """
    import os, sys, time
    import dask, dask.array as da, numpy as np
    from kmdist import Palette, write_segmentation

    def slow(block):
        # Hold the write open until the test has tried its own (it creates argv[2]).
        deadline = time.monotonic() + 120
        while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
            time.sleep(0.01)
        return block

    labels = da.from_array(np.arange(200 * 300).reshape(200, 300) % 3, chunks=50)
    meta = np.empty((0, 0), np.uint8)  # not a call of slow to find it out
    labels = labels.astype(np.uint8).map_blocks(slow, dtype=np.uint8, meta=meta)
    palette = Palette(np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]]), np.array([3, 2, 1]), 1.0)
    with dask.config.set(scheduler="threads", num_workers=1):
        write_segmentation(sys.argv[1], "photo", labels, palette, source="slow")
    print("written", flush=True)
    """
)


def expected_labels():
    return (np.arange(200 * 300).reshape(200, 300) % 3).astype(np.uint8)


def test_second_writer_refused_while_first_writes(tmp_path):
    store, go = tmp_path / "out.zarr", tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store), str(go)],
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
        assert proc.poll() is None  # still writing: the refusals met a live claim
        go.touch()
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
    group.attrs["kmdist"] = block  # claimed by a run on another host
    files = [store / "photo", *(store / "photo").rglob("*")]

    def untouched_for(seconds):
        then = time.time() - seconds
        for path in files:
            os.utime(path, (then, then), follow_symlinks=False)

    untouched_for(FOREIGN_LEASE + 60)
    # The other host writes on: a chunk of its labels changes, and its claim holds again.
    chunk = next(
        p for p in (store / "photo" / "labels" / "segmentation" / "0").rglob("*") if p.is_file()
    )
    chunk.write_bytes(chunk.read_bytes())
    with pytest.raises(OutputError, match=r"host 'other-node-7', which wrote to it [01] s ago"):
        write_segmentation(store, "photo", labels, palette)
    # It keeps writing for 10 minutes, then stops: the claim still holds, counted from
    # that last write, until the lease has passed since it.
    untouched_for(600)
    with pytest.raises(OutputError, match=r"which wrote to it 60[01] s ago"):
        write_segmentation(store, "photo", labels, palette)
    untouched_for(FOREIGN_LEASE + 60)
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


# --- Existing outputs ---------------------------------------------------------------


def test_complete_output_is_kept_unless_overwrite(tmp_path, sample, rng):
    labels, palette = sample
    store = tmp_path / "out.zarr"
    write(store, "photo", labels, palette)
    with pytest.raises(
        OutputExistsError,
        match=r"out\.zarr/photo: already complete; skip it with --resume or replace it",
    ):
        write(store, "photo", labels, palette)
    other, counts = make_labels((60, 80), 3, rng)
    write(store, "photo", other, make_palette(counts, rng), overwrite=True)
    seg = open_segmentation(store, "photo")
    assert seg.palette.k == 3 and seg.n_levels == 1
    assert_array_equal(seg.labels.compute(), other)


@pytest.mark.parametrize("damage", ["complete-false", "no-block"])
def test_incomplete_output_is_rewritten(tmp_path, sample, damage):
    labels, palette = sample
    store = tmp_path / "out.zarr"
    write(store, "photo", labels, palette)
    group = zarr.open_group(str(store / "photo/labels/segmentation"), mode="r+")
    attrs = group.attrs.asdict()
    if damage == "complete-false":
        attrs["kmdist"]["complete"] = False
    else:
        del attrs["kmdist"]
    group.attrs.put(attrs)

    assert not is_complete(store, "photo")
    with pytest.raises(OutputError, match=r"photo: is incomplete \(an interrupted run\); rerun"):
        open_segmentation(store, "photo")
    (info,) = list_segmentations(store)
    assert info.name == "photo" and not info.complete
    write(store, "photo", labels[:100], palette)  # no overwrite needed
    assert open_segmentation(store, "photo").labels.shape == (100, 500)


# --- live_writer --------------------------------------------------------------------


@pytest.fixture
def live():
    """A process of this host that lives until the test ends."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def claim(pid, *, host=None, started="?", run=None, **block):
    """A ``kmdist`` block as a writer leaves it while it writes."""
    writer = {"host": host or socket.gethostname(), "pid": pid, "run": run}
    writer["started"] = process_start(pid) if started == "?" else started
    return {"k": 2, "writer": writer, "claimed": True, "complete": False, **block}


def test_live_process_holds_its_claim(tmp_path, live):
    assert live_writer(open_root(tmp_path), "photo", claim(live.pid), None) == f"process {live.pid}"


@pytest.mark.parametrize(
    "change",
    [
        {"complete": True},  # written: no claim holds on a complete image
        {"claimed": False},  # the claim was released (the write failed)
        {"claimed": None},
        {"claimed": "true"},  # only the JSON true claims
        {"writer": None},
        {"writer": f"{socket.gethostname()}:1"},  # not a writer record
    ],
)
def test_no_claim_without_a_claimed_incomplete_block(tmp_path, live, change):
    block = {**claim(live.pid), **change}
    assert live_writer(open_root(tmp_path), "photo", block, None) is None


def test_block_without_a_claim_does_not_hold(tmp_path, live):
    block = claim(live.pid)
    del block["claimed"]  # as a complete write leaves it, then marked incomplete
    assert live_writer(open_root(tmp_path), "photo", block, None) is None
    assert live_writer(open_root(tmp_path), "photo", None, None) is None  # unreadable block


def test_same_run_never_holds(tmp_path, live):
    root = open_root(tmp_path)
    block = claim(live.pid, run="run-a")
    assert live_writer(root, "photo", block, "run-a") is None  # a retried task of the run
    assert live_writer(root, "photo", block, "run-b") == f"process {live.pid}"
    assert live_writer(root, "photo", block, None) == f"process {live.pid}"  # a run-less write
    # A writer that named no run is not "the same run" as a caller naming none.
    assert live_writer(root, "photo", claim(live.pid), None) == f"process {live.pid}"


def test_dead_process_does_not_hold(tmp_path):
    pid = dead_pid()
    assert live_writer(open_root(tmp_path), "photo", claim(pid, started=None), None) is None


def test_reused_pid_is_told_apart_by_its_start_time(tmp_path, live):
    root = open_root(tmp_path)
    started = process_start(live.pid)
    assert started is not None
    other = str(int(started) - 1)  # the process that had this pid started earlier
    assert live_writer(root, "photo", claim(live.pid, started=other), None) is None
    assert live_writer(root, "photo", claim(live.pid, started=started), None) is not None
    # A writer that recorded no start time (not Linux) holds while its pid lives.
    assert live_writer(root, "photo", claim(live.pid, started=None), None) is not None


@pytest.mark.parametrize("pid", [None, "123", 1.5])
def test_claim_without_an_integer_pid_does_not_hold(tmp_path, pid):
    block = claim(os.getpid(), started=None)
    block["writer"]["pid"] = pid
    assert live_writer(open_root(tmp_path), "photo", block, None) is None


def written_group(tmp_path):
    store = tmp_path / "out.zarr"
    labels = da.from_array(np.array([[0, 1], [1, 0]], dtype=np.uint8))
    write_segmentation(store, "photo", labels, Palette(np.eye(2, 3) * 255, np.array([2, 1]), 0.0))
    return store


def age(paths, seconds):
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then), follow_symlinks=False)


def test_foreign_claim_holds_within_the_lease(tmp_path):
    store = written_group(tmp_path)
    group = store / "photo"
    age([group, *group.rglob("*")], 600)
    block = claim(4242, host="other-node-7", started="99")
    message = live_writer(open_root(store), "photo", block, None)
    assert message is not None
    assert re.fullmatch(
        r"process 4242 on host 'other-node-7', which wrote to it 60[01] s ago; a run that "
        r"stopped is taken over 15 min after its last write",
        message,
    )


def test_foreign_claim_lapses_after_the_lease(tmp_path):
    store = written_group(tmp_path)
    group = store / "photo"
    age([group, *group.rglob("*")], FOREIGN_LEASE + 5)
    block = claim(4242, host="other-node-7", started="99")
    assert live_writer(open_root(store), "photo", block, None) is None


def test_foreign_claim_counts_from_the_newest_write_in_the_group(tmp_path):
    store = written_group(tmp_path)
    group = store / "photo"
    age([group, *group.rglob("*")], FOREIGN_LEASE + 5)
    age([group / "labels" / "segmentation" / "0" / "zarr.json"], 30)  # one recent write
    block = claim(4242, host="other-node-7", started="99")
    assert "wrote to it 30 s ago" in live_writer(open_root(store), "photo", block, None)


def test_foreign_claim_is_not_checked_as_a_local_process(tmp_path):
    # Its pid names a process on its own host: a dead pid here says nothing of it.
    store = written_group(tmp_path)
    block = claim(dead_pid(), host="other-node-7", started=None)
    assert "host 'other-node-7'" in live_writer(open_root(store), "photo", block, None)
    assert live_writer(open_root(store), "photo", {**block, "complete": True}, None) is None


def test_foreign_claim_of_the_same_run_does_not_hold(tmp_path):
    store = written_group(tmp_path)
    block = claim(4242, host="other-node-7", started=None, run="run-a")
    assert live_writer(open_root(store), "photo", block, "run-a") is None


# --- process_start ------------------------------------------------------------------


def expected_start(pid: int) -> float:
    """Start time in seconds since the epoch, as psutil reads it."""
    return psutil.Process(pid).create_time()


def ticks_to_epoch(ticks: str) -> float:
    return psutil.boot_time() + int(ticks) / os.sysconf("SC_CLK_TCK")


def test_process_start_is_the_start_time_in_clock_ticks(live):
    for pid in (os.getpid(), live.pid):
        ticks = process_start(pid)
        assert ticks is not None and ticks.isdigit()
        assert ticks_to_epoch(ticks) == pytest.approx(expected_start(pid), abs=0.05)
        assert process_start(pid) == ticks  # stable
    assert int(process_start(live.pid)) >= int(process_start(os.getpid()))


def test_process_start_with_spaces_and_parentheses_in_the_command_name(tmp_path):
    # The command name (field 2 of /proc/PID/stat) is the executable's own name.
    odd = tmp_path / "a) b (c"
    odd.symlink_to(sys.executable)
    proc = subprocess.Popen([str(odd), "-c", "import time; time.sleep(300)"])
    try:
        deadline = time.monotonic() + 30
        while psutil.Process(proc.pid).name() != odd.name:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ticks = process_start(proc.pid)
        assert ticks is not None
        assert ticks_to_epoch(ticks) == pytest.approx(expected_start(proc.pid), abs=0.05)
    finally:
        proc.kill()
        proc.wait()


def test_process_start_of_no_process():
    assert process_start(dead_pid()) is None


# --- clear_previous -----------------------------------------------------------------


def test_clear_previous_without_an_output_changes_nothing(tmp_path):
    store = tmp_path / "out.zarr"
    clear_previous(open_root(store), "photo", overwrite=False, run=None)
    assert not store.exists()


def test_clear_previous_removes_what_is_not_an_image(tmp_path):
    store = tmp_path / "out.zarr"
    store.mkdir()
    (store / "photo").write_text("a file where the group goes")
    (store / "other").mkdir()
    clear_previous(open_root(store), "photo", overwrite=False, run=None)
    assert sorted(p.name for p in store.iterdir()) == ["other"]


def test_clear_previous_of_a_complete_image(tmp_path, sample):
    store = tmp_path / "out.zarr"
    write(store, "photo", *sample)
    root = open_root(store)
    with pytest.raises(OutputExistsError) as info:
        clear_previous(root, "photo", overwrite=False, run=None)
    assert str(info.value) == (
        f"{store}/photo: already complete; skip it with --resume or replace it with "
        "--overwrite (overwrite=True)"
    )
    assert is_complete(store, "photo")
    clear_previous(root, "photo", overwrite=True, run=None)
    assert not (store / "photo").exists()


def test_clear_previous_refuses_a_live_claim_even_with_overwrite(tmp_path, sample, live):
    store = tmp_path / "out.zarr"
    write(store, "photo", *sample)
    group = zarr.open_group(str(store / "photo" / "labels" / "segmentation"), mode="r+")
    group.attrs["kmdist"] = {**group.attrs["kmdist"], **claim(live.pid)}
    for overwrite in (False, True):
        with pytest.raises(OutputError) as info:
            clear_previous(open_root(store), "photo", overwrite=overwrite, run=None)
        assert str(info.value) == (
            f"{store}/photo: being written by another run (process {live.pid}); "
            "wait for it to finish"
        )
    assert (store / "photo" / "labels" / "segmentation" / "0").is_dir()


def test_claim_of_another_run_in_this_process_holds_while_it_writes(tmp_path):
    # Two runs' tasks on one long-lived worker (or two flows on a threaded cluster) write
    # from one process: the other run's claim holds while its write goes on here, and a
    # claim left by a write that ended without releasing it does not.
    root = open_root(tmp_path)
    block = claim(os.getpid(), run="run-a")
    block["writer"]["write"] = "token-a"
    ended = claim(os.getpid(), run="run-c")
    ended["writer"]["write"] = "token-c"  # a write of this process that is over
    with writing("token-a"):
        assert live_writer(root, "photo", block, "run-b") == f"process {os.getpid()}"
        assert live_writer(root, "photo", block, "run-a") is None  # its own retry
        assert live_writer(root, "photo", ended, "run-b") is None
    assert live_writer(root, "photo", block, "run-b") is None


def test_a_second_write_in_this_process_is_refused_while_the_first_writes(tmp_path, sample):
    store = tmp_path / "out.zarr"
    labels, palette = sample
    big = da.from_array(labels, chunks=100)
    started, release = threading.Event(), threading.Event()

    def slow(block):
        started.set()
        release.wait(60)
        return block

    errors: list[BaseException] = []

    def first():
        try:
            write_segmentation(
                store, "photo", big.map_blocks(slow, meta=big._meta), palette, run="run-a"
            )
        except BaseException as exc:
            errors.append(exc)

    with dask.config.set(scheduler="threads"):
        writer = threading.Thread(target=first)
        writer.start()
        assert started.wait(60)
        try:
            with pytest.raises(
                OutputError, match=f"being written by another run .process {os.getpid()}"
            ):
                write_segmentation(store, "photo", big, palette, run="run-b", overwrite=True)
        finally:  # a failure above must not leave the first write blocked
            release.set()
            writer.join(60)
    assert not errors
    assert is_complete(store, "photo")
