"""A terminal progress bar for whatever the Dask cluster is computing.

kmdist's computations are single `dask.compute` calls deep inside library functions, so
instead of wrapping futures the bar polls the scheduler for the states of its tasks.
It draws only on a terminal; logs and pipes stay clean.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["cluster_progress", "render_bar"]


def _task_states(dask_scheduler: Any) -> dict[str, int]:
    return dict(Counter(ts.state for ts in dask_scheduler.tasks.values()))


def render_bar(states: dict[str, int], width: int = 30) -> str:
    """One line: a bar of finished tasks over all tasks the scheduler holds."""
    total = sum(states.values())
    done = states.get("memory", 0) + states.get("erred", 0) + states.get("forgotten", 0)
    frac = done / total if total else 1.0
    filled = round(frac * width)
    running = states.get("processing", 0)
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} tasks, {running} running"


@contextmanager
def cluster_progress(client: Any, stream: TextIO, interval: float = 0.5) -> Iterator[None]:
    """Redraw a progress line on `stream` every `interval` seconds while the block runs.

    Does nothing unless `stream` is a terminal.
    """
    if not stream.isatty():
        yield
        return
    stop = threading.Event()

    def draw() -> None:
        while not stop.wait(interval):
            try:
                states = client.run_on_scheduler(_task_states)
            except Exception:  # the cluster is going away: stop drawing, never fail
                return
            if states:
                stream.write("\r" + render_bar(states) + "\033[K")
                stream.flush()

    thread = threading.Thread(target=draw, name="kmdist-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        stream.write("\r\033[K")
        stream.flush()
