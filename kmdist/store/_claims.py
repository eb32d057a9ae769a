"""Writer claims: which run may write an image's group, and when a claim lapses.

A group being written carries its writer (host, pid, process start, run, write token) and
``claimed: true`` in its ``kmdist`` block until the write completes or fails.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from kmdist.store._errors import OutputError, OutputExistsError
from kmdist.store._read import read_block
from kmdist.store._root import StoreRoot

__all__ = ["FOREIGN_LEASE", "clear_previous", "live_writer", "process_start", "writing"]

# The writes going on in this process, by their token (the writer's ``write``): a claim
# whose pid is this process holds only while its write goes on here (two runs' tasks on
# one long-lived worker, or two flows on a threaded cluster), not once it ended without
# releasing it. A token, not the store's path: one store may be spelt several ways.
_writing: set[str] = set()
_writing_lock = threading.Lock()


@contextmanager
def writing(token: str) -> Iterator[None]:
    """Mark the write of `token` as going on in this process for a block.

    Entered once the group is claimed (after `clear_previous`), left when the write has
    completed or failed.
    """
    with _writing_lock:
        _writing.add(token)
    try:
        yield
    finally:
        with _writing_lock:
            _writing.discard(token)


# A claim from another host holds until this long after the group's last write.
FOREIGN_LEASE = 15 * 60


def clear_previous(root: StoreRoot, name: str, overwrite: bool, run: str | None) -> None:
    if not root.has(name):
        return
    block = read_block(root, name)
    if block is not None and block.get("complete") is True and not overwrite:
        raise OutputExistsError(
            f"{root}/{name}: already complete; skip it with --resume or replace it with "
            "--overwrite (overwrite=True)"
        )
    writer = live_writer(root, name, block, run)
    if writer is not None:
        raise OutputError(
            f"{root}/{name}: being written by another run ({writer}); wait for it to finish"
        )
    root.remove(name)


def live_writer(
    root: StoreRoot, name: str, block: Mapping[str, Any] | None, run: str | None
) -> str | None:
    """Describe another run still writing image `name` of `root`, or return None.

    A claim of this same `run` never holds: it is a retried task of the run.

    A claim by a process on this machine holds while that process lives (a reused pid is
    told apart by its start time); one by this process, while it writes the image
    (`writing`). A process on another host (a Kubernetes pod, a
    container sharing the volume) cannot be checked from here, so its claim holds while
    the group keeps changing: until `FOREIGN_LEASE` seconds after its last write.
    """
    if block is None or block.get("complete") is True or block.get("claimed") is not True:
        return None
    writer = block.get("writer")
    if not isinstance(writer, dict) or (run is not None and writer.get("run") == run):
        return None
    pid = writer.get("pid")
    if writer.get("host") != socket.gethostname():
        idle = time.time() - root.last_write(name)
        if idle >= FOREIGN_LEASE:
            return None
        return (
            f"process {pid} on host {writer.get('host')!r}, which wrote to it {idle:.0f} s "
            f"ago; a run that stopped is taken over {FOREIGN_LEASE // 60} min after its "
            "last write"
        )
    if not isinstance(pid, int):
        return None
    if pid == os.getpid():
        with _writing_lock:
            here = writer.get("write") in _writing
        return f"process {pid}" if here else None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    started = writer.get("started")
    if started is not None and started != process_start(pid):
        return None  # the pid now belongs to another process
    return f"process {pid}"


def process_start(pid: int) -> str | None:
    """Start time of process `pid` in clock ticks since boot (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # Field 22; the command name (field 2) may hold spaces, so split after it.
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
