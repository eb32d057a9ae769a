"""A process's quick exit (kmdist._exit): pending garbage is collected, the rest frozen."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """\
import gc

before = gc.get_freeze_count()  # (a site hook may have frozen some already)

class Cycle:
    def __del__(self):
        print("finalized", flush=True)

c = Cycle()
c.me = c
del c  # garbage only a collection finds
{call}
print("frozen", gc.get_freeze_count() > before, flush=True)
"""


def _run(call: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(call=call)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_skip_final_collection_runs_pending_finalizers_then_freezes():
    out = _run("from kmdist._exit import skip_final_collection\nskip_final_collection()")
    assert out == "finalized\nfrozen True\n"


def test_worker_teardown_hook_freezes_the_worker_process():
    # The hook a LocalCluster's worker processes run as they close (their preload).
    assert _run("from kmdist._dask import dask_teardown\ndask_teardown(None)") == (
        "finalized\nfrozen True\n"
    )
    # Without it, the cycle is still garbage at the end, and nothing is frozen.
    assert _run("pass") == "frozen False\nfinalized\n"
