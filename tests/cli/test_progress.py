"""The terminal progress line."""

from __future__ import annotations

import io
import time

import dask.array as da

from kmdist.cli._progress import cluster_progress, render_bar


def _slow(block):
    time.sleep(0.01)
    return block


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_render_bar_counts_finished_tasks():
    line = render_bar({"memory": 3, "processing": 2, "waiting": 5}, width=10)
    assert line == "[###-------] 3/10 tasks, 2 running"
    assert render_bar({}, width=4).startswith("[####] 0/0")


def test_progress_drawn_on_a_terminal_only(local_client):
    term, pipe = Terminal(), io.StringIO()
    x = da.ones((100, 100), chunks=10).map_blocks(_slow, dtype=float)  # 100 tasks, >= 0.5 s
    with cluster_progress(local_client, term, interval=0.05):
        x.sum().compute()
    with cluster_progress(local_client, pipe, interval=0.05):
        x.sum().compute()
    assert "tasks" in term.getvalue() and "\r" in term.getvalue()
    assert pipe.getvalue() == ""
