"""A process's quick exit (kmdist._exit): pending garbage is collected, the rest frozen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """\
import gc
import multiprocessing
import types

before = gc.get_freeze_count()  # (a site hook may have frozen some already)


class Cycle:
    def __del__(self):
        print("finalized", flush=True)


def report():
    {imports}  # before the cycle: allocations after it could start a collection
    gc.disable()  # no automatic collection until the report is printed
    c = Cycle()
    c.me = c
    del c  # garbage only a collection finds
    {call}
    print("frozen", gc.get_freeze_count() > before, flush=True)
    gc.enable()


if __name__ == "__main__":
    if {in_child}:  # in a spawned child process, as a Nanny's worker runs
        p = multiprocessing.get_context("spawn").Process(target=report)
        p.start()
        p.join()
    else:
        report()
"""
NANNY = "types.SimpleNamespace(nanny='tcp://127.0.0.1:1')"


def _run(tmp_path: Path, call: str, in_child: bool = False) -> str:
    imports = (
        "from kmdist._dask import dask_teardown; from kmdist._exit import skip_final_collection"
    )
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(imports=imports, call=call, in_child=in_child))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_skip_final_collection_runs_pending_finalizers_then_freezes(tmp_path):
    call = "skip_final_collection()"
    assert _run(tmp_path, call) == "finalized\nfrozen True\n"
    # Without it the cycle is still garbage at the end, and nothing more is frozen.
    assert _run(tmp_path, "pass") == "frozen False\nfinalized\n"


def test_worker_teardown_hook_freezes_only_a_nanny_started_worker_process(tmp_path):
    call = f"dask_teardown({NANNY})"
    # A process spawned for one worker, which ends with it: frozen.
    assert _run(tmp_path, call, in_child=True) == "finalized\nfrozen True\n"
    # A worker in a long-lived process (a threads cluster, or no Nanny): left alone.
    assert _run(tmp_path, call) == "frozen False\nfinalized\n"
    no_nanny = "dask_teardown(None)"
    assert _run(tmp_path, no_nanny, in_child=True) == "frozen False\nfinalized\n"
