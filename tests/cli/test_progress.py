"""The terminal progress line."""

from __future__ import annotations

import io
import os
import re
import time

import dask.array as da
import numpy as np

from kmdist.cli._progress import cluster_progress, render_bar


def _held(block, go):
    """Finish only once the file `go` exists: the compute lasts until the test has seen
    what it waits for, however slow the machine (the workers share this file system)."""
    deadline = time.monotonic() + 120
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)
    return block


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_render_bar_counts_finished_tasks():
    line = render_bar({"memory": 3, "processing": 2, "waiting": 5}, width=10)
    assert line == "[###-------] 3/10 tasks, 2 running"
    assert render_bar({}, width=4).startswith("[####] 0/0")


def test_progress_drawn_on_a_terminal_only(local_client, tmp_path):
    term, pipe = Terminal(), io.StringIO()
    go = tmp_path / "go"
    meta = np.empty((0, 0))  # given, so that dask need not call _held to learn it
    x = da.ones((100, 100), chunks=10).map_blocks(_held, str(go), dtype=float, meta=meta)
    with cluster_progress(local_client, term, interval=0.05):
        future = local_client.compute(x.sum())
        deadline = time.monotonic() + 60
        while "tasks" not in term.getvalue():  # drawn while the tasks wait
            assert time.monotonic() < deadline, "no progress line in 60 s"
            time.sleep(0.01)
        go.touch()
        assert future.result() == 100 * 100
    assert re.search(r"\r\[[#-]{30}\] \d+/\d+ tasks, \d+ running", term.getvalue())
    assert term.getvalue().endswith("\r\033[K")  # the line is cleared at the end
    with cluster_progress(local_client, pipe, interval=0.05):
        x.sum().compute()
    assert pipe.getvalue() == ""
