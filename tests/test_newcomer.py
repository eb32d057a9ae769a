"""A newcomer's first hour (issue 15): flows from a plain script, quiet Dask logs.

The embedded cluster's worker processes are started as ``python -m dask spec`` (as
distributed's SubprocessCluster starts them), which never runs the caller's script: a
script without an ``if __name__ == "__main__":`` guard gets worker processes too.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from kmdist import iter_segmentations
from kmdist._dask import quiet_dask_logs

REPO = Path(__file__).resolve().parents[1]

# Every run of a script's top level leaves its pid: in this process or in a worker.
MARKER = "import os\nopen(f'ran-{os.getpid()}', 'w').close()\n"
CLUSTER = """\
with dask_client(n_workers=1) as client:
    [pid] = client.run(os.getpid).values()
    print("processes", pid != os.getpid(), client.submit(sum, [1, 2]).result())
    print("dashboard on", client.cluster.scheduler.http_server.address)
"""


def _python(tmp_path: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_unguarded_and_guarded_scripts_get_worker_processes(tmp_path):
    (tmp_path / "plain.py").write_text(MARKER + "from kmdist._dask import dask_client\n" + CLUSTER)
    (tmp_path / "guarded.py").write_text(
        MARKER
        + "from kmdist._dask import dask_client\n"
        + 'if __name__ == "__main__":\n'
        + textwrap.indent(CLUSTER, "    ")
    )
    # The dashboard, like the scheduler and workers, on the loopback interface only.
    for script in ("plain.py", "guarded.py"):
        assert _python(tmp_path, script) == "processes True 3\ndashboard on 127.0.0.1\n"
        ran = list(tmp_path.glob("ran-*"))
        assert len(ran) == 1, (script, ran)  # the script itself, in no worker
        ran[0].unlink()


@pytest.mark.slow
def test_unguarded_script_runs_once_with_worker_processes(tmp_path):
    # No `if __name__ == "__main__":` guard: the script's top level is what a worker
    # would run again if it ran the script, and start another cluster from there.
    (tmp_path / "script.py").write_text(
        MARKER
        + "import kmdist\n"
        + "with kmdist.dask_client(n_workers=2, processes=True) as client:\n"
        + "    before = set(client.run(os.getpid).values())\n"
        + "    client.restart()  # new worker processes, started by the Nannies\n"
        + "    client.wait_for_workers(2)\n"
        + "    after = set(client.run(os.getpid).values())\n"
        + "    assert not before & after and os.getpid() not in before, (before, after)\n"
        + "    print(len(before | after), client.submit(sum, [1, 2]).result())\n"
    )
    assert _python(tmp_path, "script.py") == "4 3\n"
    ran = list(tmp_path.glob("ran-*"))
    assert len(ran) == 1, ran  # none of the 4 worker processes imported the script


@pytest.mark.slow
def test_other_spawned_processes_keep_spawns_behaviour(tmp_path):
    # kmdist changes nothing in multiprocessing: a spawned child still runs the script.
    (tmp_path / "script.py").write_text(
        MARKER
        + "import multiprocessing\n"
        + "def child():\n"
        + "    pass\n"
        + 'if __name__ == "__main__":\n'
        + "    import dask\n"
        + "    from kmdist._dask import dask_client\n"
        + "    def plugin(x):\n"
        + "        return x\n"
        + "    # A function of the script's in Dask's configuration: workers never see it.\n"
        + "    with dask.config.set({'kmdist-test.hook': plugin}):\n"
        + "        with dask_client(n_workers=1, processes=True) as client:\n"
        + "            print(client.submit(sum, [1, 2]).result())\n"
        + "    p = multiprocessing.get_context('spawn').Process(target=child)\n"
        + "    p.start()\n"
        + "    p.join()\n"
        + "    print(p.exitcode)\n"
    )
    assert _python(tmp_path, "script.py") == "3\n0\n"
    ran = list(tmp_path.glob("ran-*"))
    assert len(ran) == 2, ran  # the parent and its plain spawned child, no worker


@pytest.mark.slow
def test_flow_called_from_a_plain_script(tmp_path, rng, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        iio.imwrite(photos / f"p{i}.png", rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    # README's snippet as a newcomer saves it: no `if __name__ == "__main__":` guard.
    (tmp_path / "script.py").write_text(
        'from flows.segment import segment_archive\nsegment_archive("photos", "out.zarr", k=8)\n'
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        # The session's Prefect server: a fresh ephemeral one can take longer to start
        # than Prefect waits for on a busy machine. A worker running the script again
        # would start flow runs of its own there, and fail to spawn its own workers.
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "script.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    assert output.count("Beginning flow run") == 1, output  # no worker ran it again
    infos = list(iter_segmentations(tmp_path / "out.zarr"))
    assert sorted(i.name for i in infos) == ["p0", "p1"]
    assert all(i.complete and i.k == 8 for i in infos)
    # Dask's start-up and shutdown lines stay out of the run's log.
    dask_lines = [line for line in output.splitlines() if "distributed." in line]
    assert len(dask_lines) <= 5, dask_lines


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.name, record.levelno, record.getMessage()))


def test_quiet_dask_logs_keeps_warnings_and_demotes_routine_records():
    dist, worker = logging.getLogger("distributed"), logging.getLogger("distributed.worker")
    ours = logging.getLogger("kmdist._dask")
    records = _Records()
    dist.addHandler(records)
    ours.addHandler(records)
    level, ours_level = dist.level, ours.level
    ours.setLevel(logging.DEBUG)
    dist.setLevel(logging.INFO)  # Dask's default
    try:
        restore = quiet_dask_logs()
        worker.info("Start worker at: tcp://127.0.0.1:1")
        worker.warning("Worker is at 85% memory usage.")
        worker.error("Compute Failed\nKey: x\nTraceback: '  File ...'")
        restore()
        assert records.seen == [
            ("distributed.worker", logging.WARNING, "Worker is at 85% memory usage."),
            (
                "kmdist._dask",
                logging.DEBUG,
                "distributed.worker: Compute Failed\nKey: x\nTraceback: '  File ...'",
            ),
        ]
        assert dist.level == logging.INFO and not worker.filters  # put back
        # Verbose leaves Dask's logging as it is.
        records.seen.clear()
        restore = quiet_dask_logs(verbose=True)
        worker.info("Start worker at: tcp://127.0.0.1:1")
        worker.error("Compute Failed\nKey: x")
        restore()
        assert [m for _, _, m in records.seen] == [
            "Start worker at: tcp://127.0.0.1:1",
            "Compute Failed\nKey: x",
        ]
    finally:
        dist.removeHandler(records)
        ours.removeHandler(records)
        dist.setLevel(level)
        ours.setLevel(ours_level)
