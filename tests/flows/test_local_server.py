"""A running local Prefect server is reused by flow runs in separate processes, and the
demo's server settings go through Prefect's settings context."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPORARY = "Starting temporary server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _user_env(**settings: str) -> dict[str, str]:
    """The environment of a user's shell: no API URL unless given, then `settings`."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **settings}


def _post(url: str, body: dict[str, object]) -> object:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _serve(prefect: str, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `prefect server start` on a free port of 127.0.0.1; return it once healthy.

    Another program may take the port between the choice and the server's bind: the
    server then exits saying so, and the next port is tried.
    """
    for _ in range(3):
        port = _free_port()
        api = f"http://127.0.0.1:{port}/api"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        _SERVERS.append(proc)
        deadline = time.monotonic() + 300
        while proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=5) as response:
                    if response.status == 200:
                        return proc, api
            except (OSError, http.client.HTTPException):
                pass  # not up yet, or another program on the port
            assert time.monotonic() < deadline, f"no server:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        assert "already in use" in log.read_text(), f"server exited:\n{log.read_text()[-3000:]}"
    raise AssertionError(f"no free port for the server:\n{log.read_text()[-3000:]}")


# The servers `_serve` started, stopped by `local_server`.
_SERVERS: list[subprocess.Popen[bytes]] = []


@pytest.fixture
def local_server(tmp_path: Path) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1 as a user starts it; yields its API URL.

    Stops the server and any process it started, by process id.
    """
    prefect = str(Path(sys.executable).with_name("prefect"))
    env = _user_env(PREFECT_HOME=str(tmp_path / "server-home"), PREFECT_SERVER_UI_ENABLED="false")
    try:
        yield _serve(prefect, env, tmp_path / "server.log")[1]
    finally:
        while _SERVERS:
            _stop(_SERVERS.pop())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop `proc` and every process it started."""
    # psutil's handles check each process's start time: a reused id is never killed.
    children: list[psutil.Process] = []
    with contextlib.suppress(psutil.NoSuchProcess):
        children = psutil.Process(proc.pid).children(recursive=True)
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


@pytest.mark.slow
def test_flow_runs_in_two_processes_reuse_one_running_server(local_server, tmp_path):
    image = tmp_path / "small.png"
    rng = np.random.default_rng(28)
    iio.imwrite(image, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    outputs = []
    for i in range(2):
        out = tmp_path / f"out{i}.zarr"
        script = (
            "from flows.segment import segment_image\n"
            f"print(segment_image({str(image)!r}, {str(out)!r}, k=4)['done'])\n"
        )
        # The user's setting, as a profile or the shell sets it; a new PREFECT_HOME each.
        env = _user_env(PREFECT_API_URL=local_server, PREFECT_HOME=str(tmp_path / f"home{i}"))
        proc = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=ROOT,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output
        assert proc.stdout.strip().splitlines()[-1] == "1", output
        assert TEMPORARY not in output, output  # no server of its own
        outputs.append(out)
    assert all((out / "small" / "labels").is_dir() for out in outputs)

    runs = _post(
        f"{local_server}/flow_runs/filter", {"flows": {"name": {"any_": ["segment-image"]}}}
    )
    assert isinstance(runs, list)
    assert len(runs) == 2 and len({run["id"] for run in runs}) == 2
    assert {run["state_type"] for run in runs} == {"COMPLETED"}
    tasks = _post(f"{local_server}/task_runs/filter", {})
    assert isinstance(tasks, list)
    assert {task["flow_run_id"] for task in tasks} == {run["id"] for run in runs}


def test_the_demo_sets_its_server_settings_in_prefects_context_unless_the_user_did():
    # A user who chose telemetry and left the start-up timeout alone, in a new process.
    env = _user_env(PREFECT_SERVER_ANALYTICS_ENABLED="true")
    env.pop("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", None)
    script = """
import os
from prefect.settings import (
    PREFECT_SERVER_ANALYTICS_ENABLED as ANALYTICS,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as TIMEOUT,
    get_current_settings,
    temporary_settings,
)
from flows.demo import DEMO_SETTINGS, _unset

before = dict(os.environ)
with temporary_settings(updates=_unset(DEMO_SETTINGS)):
    # What Prefect waits for its temporary server, and the settings it passes to it.
    passed = get_current_settings().to_environment_variables(exclude_unset=True)
    print(TIMEOUT.value(), ANALYTICS.value(), passed[TIMEOUT.name], passed[ANALYTICS.name])
print(TIMEOUT.value(), dict(os.environ) == before)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["120", "True", "120", "True", "20", "True"], proc.stdout
