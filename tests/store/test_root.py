"""The store root (kmdist.store._root): refusing what is not a store, permissions, the
root group's creation, locks and lock files, and the file operations of a local root."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest
import zarr

from kmdist.store import _root
from kmdist.store._errors import OutputError
from kmdist.store._read import is_complete, list_segmentations
from kmdist.store._root import LOCK_NAME, LocalRoot, image_lock, open_root
from tests.store._helpers import complete_images_of, images_of, write


def test_store_that_is_a_file(tmp_path, sample):
    path = tmp_path / "out.zarr"
    path.write_text("not a store")
    with pytest.raises(OutputError, match=r"out\.zarr: exists and is a file, not a Zarr store"):
        write(path, "photo", *sample)


def test_store_that_is_a_foreign_directory(tmp_path, sample):
    path = tmp_path / "photos"
    path.mkdir()
    (path / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputError, match=r"photos: .*not a Zarr store; refusing to write into it"):
        write(path, "photo", *sample)
    assert sorted(p.name for p in path.iterdir()) == ["holiday.jpg"]


def test_store_being_created_by_another_writer_is_not_foreign(tmp_path, sample):
    # What a concurrent writer sees while zarr writes the root's zarr.json: zarr's temp
    # file, not yet renamed. Seen in CI as a spurious "not a Zarr store" in a batch.
    path = tmp_path / "out.zarr"
    path.mkdir()
    (path / f"zarr.{'ab12' * 8}.partial").write_bytes(b"{")
    write(path, "photo", *sample)
    assert is_complete(path, "photo")


def test_directory_with_other_partial_files_is_foreign(tmp_path, sample):
    path = tmp_path / "downloads"
    path.mkdir()
    (path / "movie.mkv.partial").write_bytes(b"x")
    with pytest.raises(OutputError, match="not a Zarr store"):
        write(path, "photo", *sample)


def test_empty_directory_becomes_a_store(tmp_path, sample):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty", "photo", *sample)
    assert is_complete(tmp_path / "empty", "photo")


def test_store_under_a_file_is_not_writable(tmp_path, sample):
    (tmp_path / "file.txt").write_text("x")
    path = tmp_path / "file.txt" / "out.zarr"
    with pytest.raises(OutputError, match=r"file\.txt/out\.zarr: cannot create the store"):
        write(path, "photo", *sample)


def test_store_without_write_access_reported(tmp_path, sample, monkeypatch):
    # What a user without permission sees (root passes os.access, hence the stand-in).
    monkeypatch.setattr(_root.os, "access", lambda path, mode: False)
    with pytest.raises(OutputError, match=r"out\.zarr: not writable: Permission denied"):
        write(tmp_path / "out.zarr", "photo", *sample)


@contextlib.contextmanager
def read_only_dir(path):
    """Make `path` unwritable for real: chmod for users; for root, which chmod does not
    stop, the immutable attribute (chattr +i, from e2fsprogs)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o500)
        try:
            yield
        finally:
            path.chmod(0o700)


def test_store_without_write_permission(tmp_path, sample):
    parent = tmp_path / "locked"
    parent.mkdir()
    with read_only_dir(parent), pytest.raises(OutputError, match=r"locked/out\.zarr"):
        write(parent / "out.zarr", "photo", *sample)
    assert not (parent / "out.zarr").exists()


def test_existing_store_without_write_permission(tmp_path, sample):
    store = tmp_path / "out.zarr"
    write(store, "a", *sample)
    with read_only_dir(store), pytest.raises(OutputError, match=r"out\.zarr"):
        write(store, "b", *sample)
    assert [i.name for i in list_segmentations(store)] == ["a"]


def test_no_lock_file_left_behind(tmp_path, sample):
    store = tmp_path / "out.zarr"
    write(store, "photo", *sample)
    assert sorted(p.name for p in store.iterdir()) == ["photo", "zarr.json"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [name for name, _ in zarr.open_group(str(store), mode="r").members()] == ["photo"]


WRITER = textwrap.dedent(
    """
    import sys
    import dask.array as da
    import numpy as np
    from kmdist.palette._palette import Palette
    from kmdist.store._write import write_segmentation

    store, prefix = sys.argv[1], sys.argv[2]
    labels = np.zeros((16, 16), dtype=np.uint8)
    labels[8:] = 1
    palette = Palette(np.array([[0, 0, 0], [255, 255, 255]]), np.array([128, 128]), 0.0)
    for i in range(6):
        write_segmentation(store, f"{prefix}{i}", da.from_array(labels, chunks=8), palette)
    """
)


def test_concurrent_writers_of_different_images(tmp_path):
    store = tmp_path / "shared.zarr"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(store), prefix], stderr=subprocess.PIPE)
        for prefix in ("p", "q", "r")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    names = sorted(f"{prefix}{i}" for prefix in "pqr" for i in range(6))
    assert complete_images_of(store) == names == images_of(store)
    assert [i.name for i in list_segmentations(store) if i.complete] == names
    assert not (store / ".kmdist.lock").exists()


# --- open_root ----------------------------------------------------------------------


def test_open_root_of_a_local_path(tmp_path):
    root = open_root(tmp_path / "out.zarr")
    assert isinstance(root, LocalRoot)
    assert root.path == tmp_path / "out.zarr" and str(root) == str(tmp_path / "out.zarr")
    assert open_root(str(tmp_path / "out.zarr")).path == tmp_path / "out.zarr"


def test_open_root_expands_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert open_root("~/out.zarr").path == tmp_path / "out.zarr"


def test_open_root_refuses_an_empty_path():
    with pytest.raises(OutputError) as info:
        open_root("")
    assert str(info.value) == "'': the store must be a directory path or a storage URL"


# --- image_lock ---------------------------------------------------------------------


def test_image_lock_is_stable_and_hidden():
    assert image_lock("photo") == image_lock("photo")
    assert image_lock("photo").startswith(f"{LOCK_NAME}.")
    assert image_lock("photo") != LOCK_NAME  # not the store's own lock


def test_image_locks_of_distinct_names_are_distinct():
    names = [f"img{i}" for i in range(2000)]
    names += ["photo", "Photo", "photo ", "phot", "é", "e\u0301", "a" * 255, "a" * 254 + "b"]
    assert len({image_lock(n) for n in names}) == len(names)


@pytest.mark.parametrize("name", ["x" * 255, "é" * 127 + "x", "€" * 85, "bad\udcff"])
def test_image_lock_of_any_valid_name_is_a_file_name(tmp_path, name):
    lock = image_lock(name)
    assert len(lock.encode()) <= 255 and "/" not in lock and "\\" not in lock
    root = LocalRoot(tmp_path)
    with root.lock(lock):  # the file system takes it (a 255-byte name plus a prefix would not)
        assert (tmp_path / lock).exists()
    assert list(tmp_path.iterdir()) == []


def test_leftover_lock_files_do_not_make_a_directory_foreign(tmp_path, sample):
    # A run killed while holding a lock leaves its file behind; the store is still ours.
    store = tmp_path / "out.zarr"
    store.mkdir()
    (store / LOCK_NAME).touch()
    (store / image_lock("photo")).touch()
    write(store, "photo", *sample)
    assert is_complete(store, "photo") and images_of(store) == ["photo"]


# --- LocalRoot.lock -----------------------------------------------------------------


def test_lock_excludes_another_holder_until_released(tmp_path):
    root = LocalRoot(tmp_path)
    events: list[str] = []
    held, tried = threading.Event(), threading.Event()

    def first():
        with root.lock(image_lock("photo")):
            events.append("first in")
            held.set()
            assert tried.wait(10)
            time.sleep(0.3)  # the second waits all this time
            events.append("first out")

    def second():
        assert held.wait(10)
        tried.set()
        with root.lock(image_lock("photo")):
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert events == ["first in", "first out", "second in"]
    assert list(tmp_path.iterdir()) == []


def test_locks_of_different_images_do_not_wait_for_each_other(tmp_path):
    root = LocalRoot(tmp_path)
    got = threading.Event()

    def other():
        with root.lock(image_lock("b")), root.lock():
            got.set()

    with root.lock(image_lock("a")):
        thread = threading.Thread(target=other)
        thread.start()
        assert got.wait(10)  # while "a" is held
        thread.join(10)


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kmdist.store._root import LocalRoot

    with LocalRoot(Path(sys.argv[1])).lock(sys.argv[2]):
        print("held", flush=True)
        time.sleep(float(sys.argv[3]))
        Path(sys.argv[4]).touch()  # the last thing done while holding it
    """
)


def test_lock_excludes_another_process(tmp_path):
    key = image_lock("photo")
    (tmp_path / "s").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "s"), key, "1.0", str(tmp_path / "done")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "held\n"
        start = time.monotonic()
        with LocalRoot(tmp_path / "s").lock(key):
            waited = time.monotonic() - start
            assert (tmp_path / "done").exists()  # obtained only once the holder was done
        assert waited > 0.5
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list((tmp_path / "s").iterdir()) == []


def test_lock_in_a_missing_directory(tmp_path):
    lock = LocalRoot(tmp_path / "missing").lock()
    with pytest.raises(OutputError, match=r"missing/\.kmdist\.lock: cannot create the lock file"):
        lock.__enter__()


# --- prepare ------------------------------------------------------------------------


@pytest.fixture
def counted(monkeypatch):
    """Count the root's zarr.open_group calls and full checks."""
    calls = {"open_group": 0, "check": 0}
    open_group, check = zarr.open_group, LocalRoot._check_target

    def counting_open_group(*args, **kwargs):
        calls["open_group"] += 1
        return open_group(*args, **kwargs)

    def counting_check(self, ours=False):
        calls["check"] += 1
        return check(self, ours)

    monkeypatch.setattr(_root.zarr, "open_group", counting_open_group)
    monkeypatch.setattr(LocalRoot, "_check_target", counting_check)
    return calls


def test_prepare_is_cheap_after_the_first_call(tmp_path, counted):
    store = tmp_path / "out.zarr"
    open_root(store).prepare()
    assert counted == {"open_group": 1, "check": 1}  # created
    assert (store / "zarr.json").is_file()
    for _ in range(3):
        open_root(store).prepare()  # a new root object: the same store
    assert counted == {"open_group": 1, "check": 1}
    assert zarr.open_group(str(store), mode="r").attrs["kmdist"]["layout"]


def test_prepare_checks_again_once_the_store_is_gone(tmp_path, counted):
    store = tmp_path / "out.zarr"
    open_root(store).prepare()
    (store / "zarr.json").unlink()
    store.rmdir()
    open_root(store).prepare()
    assert counted == {"open_group": 2, "check": 2}
    assert (store / "zarr.json").is_file()


def test_prepare_checks_a_store_made_elsewhere_once(tmp_path, counted):
    store = tmp_path / "out.zarr"
    zarr.open_group(str(store), mode="w", zarr_format=3)  # another process made it
    counted["open_group"] = 0
    open_root(store).prepare()
    open_root(store).prepare()
    assert counted == {"open_group": 1, "check": 1}


@pytest.mark.parametrize(
    "make",
    [
        lambda path: zarr.create_array(str(path), shape=(2,), dtype="u1"),
        lambda path: (path / "zarr.json").write_text("{not json"),
    ],
    ids=["array", "bad-json"],
)
def test_prepare_refuses_a_root_that_is_not_a_v3_group(tmp_path, make):
    store = tmp_path / "out.zarr"
    store.mkdir()
    make(store)
    with pytest.raises(OutputError, match=r"out\.zarr: not a Zarr v3 group"):
        open_root(store).prepare()


# --- names, has, remove, last_write ------------------------------------------------


def test_names_lists_folders_only(tmp_path):
    for folder in ("b", "a", "no-zarr-json", ".hidden", ".kmdist.lock.d"):
        (tmp_path / folder).mkdir()
    (tmp_path / "zarr.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / LOCK_NAME).touch()
    assert sorted(LocalRoot(tmp_path).names()) == ["a", "b", "no-zarr-json"]


def test_has_sees_groups_files_and_links(tmp_path):
    (tmp_path / "group").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    root = LocalRoot(tmp_path)
    assert root.has("group") and root.has("file") and root.has("dangling")
    assert not root.has("missing")


def test_remove_a_group_a_file_and_a_link(tmp_path):
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    store = tmp_path / "s"
    (store / "group" / "labels").mkdir(parents=True)
    (store / "group" / "labels" / "zarr.json").write_text("{}")
    (store / "file").write_text("x")
    (store / "link").symlink_to(outside, target_is_directory=True)
    root = LocalRoot(store)
    for name in ("group", "file", "link"):
        root.remove(name)
        assert not root.has(name)
    assert (outside / "keep").is_dir()  # a link is removed, not what it points to
    assert list(store.iterdir()) == []


def test_remove_reports_what_it_cannot_remove(tmp_path):
    group = tmp_path / "s" / "photo"
    group.mkdir(parents=True)
    (group / "zarr.json").write_text("{}")
    with read_only_dir(group), pytest.raises(OutputError) as info:
        LocalRoot(tmp_path / "s").remove("photo")
    assert str(info.value).startswith(f"{group}: cannot remove the previous output: ")


def test_last_write_is_the_newest_entry_under_the_group(tmp_path):
    group = tmp_path / "photo"
    deep = group / "labels" / "segmentation" / "0"
    deep.mkdir(parents=True)
    (deep / "c").write_bytes(b"x")
    (group / "zarr.json").write_text("{}")
    entries = [group, *group.rglob("*")]
    for i, path in enumerate(entries):
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    root = LocalRoot(tmp_path)
    assert root.last_write("photo") == 1_000_000 + len(entries) - 1
    os.utime(deep / "c", (2_000_000, 2_000_000))  # deepest file written last
    assert root.last_write("photo") == 2_000_000
    os.utime(group, (3_000_000, 3_000_000))  # the group itself counts too
    assert root.last_write("photo") == 3_000_000
