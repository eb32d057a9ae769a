"""A newcomer's first hour (issue 15): flows from a plain script, quiet Dask logs.

The embedded LocalCluster's worker processes are spawned, and spawning runs the main
script again: `kmdist._dask.spawn_safe` tells when that would repeat the caller's work,
and the cluster then runs on threads.
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
from kmdist._dask import quiet_dask_logs, spawn_safe

REPO = Path(__file__).resolve().parents[1]

# What each way of running Python answers, and the LocalCluster it gets.
PROBE = """\
from kmdist._dask import dask_client, spawn_safe
print("safe", spawn_safe())
"""
CLUSTER = """\
with dask_client(n_workers=1) as client:
    print("processes", client.cluster.processes, client.submit(sum, [1, 2]).result())
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
def test_spawn_safe_knows_which_main_modules_run_again(tmp_path):
    assert spawn_safe()  # pytest's entry point calls it under its `__main__` guard
    unguarded = tmp_path / "unguarded.py"
    unguarded.write_text(PROBE)
    guarded = tmp_path / "guarded.py"
    guarded.write_text(
        "from kmdist._dask import spawn_safe\n\n"
        "def main():\n    print('safe', spawn_safe())\n\n"
        'if "__main__" == __name__:\n    main()\n'
    )
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "__main__.py").write_text(PROBE)
    assert _python(tmp_path, "unguarded.py") == "safe False\n"
    assert _python(tmp_path, "-m", "unguarded") == "safe False\n"
    assert _python(tmp_path, "guarded.py") == "safe True\n"
    assert _python(tmp_path, "-m", "pkg") == "safe True\n"  # a package's __main__
    assert _python(tmp_path, "-c", PROBE) == "safe True\n"  # no file to run again
    # The REPL and notebooks: no __file__. Piped into python, the main file is <stdin>.
    assert _python(tmp_path, "-i", "-c", "pass", stdin=PROBE).startswith("safe True")
    assert _python(tmp_path, "-", stdin=PROBE) == "safe False\n"


@pytest.mark.slow
def test_unguarded_script_gets_threads_guarded_one_processes(tmp_path):
    (tmp_path / "plain.py").write_text(PROBE + CLUSTER)
    (tmp_path / "guarded.py").write_text(
        "from kmdist._dask import dask_client, spawn_safe\n"
        'if __name__ == "__main__":\n' + textwrap.indent(PROBE + CLUSTER, "    ")
    )
    # The dashboard, like the scheduler and workers, on the loopback interface only.
    assert _python(tmp_path, "plain.py") == (
        "safe False\nprocesses False 3\ndashboard on 127.0.0.1\n"
    )
    assert _python(tmp_path, "guarded.py") == (
        "safe True\nprocesses True 3\ndashboard on 127.0.0.1\n"
    )


@pytest.mark.slow
def test_spawned_workers_do_not_run_the_main_script_again(tmp_path):
    # Every run of the script's top level (as __main__ or as a child's __mp_main__)
    # leaves its pid; a flow script's would import Prefect again in every worker.
    (tmp_path / "script.py").write_text(
        "import multiprocessing, os\n"
        "open(f'ran-{os.getpid()}', 'w').close()\n"
        "def child():\n"
        "    pass\n"
        'if __name__ == "__main__":\n'
        "    from kmdist._dask import dask_client\n"
        "    import dask\n"
        "    print(dask.config.get('distributed.worker.multiprocessing-method'))\n"
        "    with dask_client(n_workers=2, processes=True) as client:\n"
        "        before = set(client.run(os.getpid).values())\n"
        "        client.restart()  # new worker processes, spawned by the Nannies\n"
        "        client.wait_for_workers(2)\n"
        "        after = set(client.run(os.getpid).values())\n"
        "        assert not before & after, (before, after)\n"
        "        print(len(before | after), client.submit(sum, [1, 2]).result())\n"
        "    # Other spawned processes still run it, as spawn does.\n"
        "    p = multiprocessing.get_context('spawn').Process(target=child)\n"
        "    p.start()\n"
        "    p.join()\n"
        "    print(p.exitcode)\n"
    )
    assert _python(tmp_path, "script.py") == "spawn\n4 3\n0\n"
    ran = sorted(p.name for p in tmp_path.glob("ran-*"))
    # The parent and its plain child: none of the 4 worker processes ran the script.
    assert len(ran) == 2, ran


@pytest.mark.slow
def test_workers_run_the_script_while_dask_config_refers_to_it(tmp_path):
    # The workers unpickle Dask's configuration, so a function of the script's in it
    # needs the script: then they run it, as spawn does.
    (tmp_path / "script.py").write_text(
        "import os\n"
        "open(f'ran-{os.getpid()}', 'w').close()\n"
        "def plugin(x):\n"
        "    return x\n"
        'if __name__ == "__main__":\n'
        "    import dask\n"
        "    from kmdist._dask import dask_client\n"
        "    with dask.config.set({'kmdist-test.hook': plugin}):\n"
        "        with dask_client(n_workers=1, processes=True) as client:\n"
        "            print(client.submit(sum, [1, 2]).result())\n"
    )
    assert _python(tmp_path, "script.py") == "3\n"
    assert len(list(tmp_path.glob("ran-*"))) == 2  # the parent and its worker


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
