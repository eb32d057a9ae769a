"""Shared fixtures: seeds, Dask clusters (in-process and separately started processes)."""

from __future__ import annotations

import os

# scikit-learn's array-API estimator check needs this before SciPy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Prefect's console log handler keeps the stderr of the moment it is set up. Set it up
# now, on the session's stderr: set up first inside a test using `capsys`, it would keep
# that test's stream, closed by the next test that logs through Prefect.
import prefect.main  # noqa: F401
import pytest

SEED = 20261125


@pytest.fixture
def seed() -> int:
    """The one seed tests draw their randomness from."""
    return SEED


@pytest.fixture
def rng(seed: int):
    import numpy as np

    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[object]:
    """A real two-worker, one-thread-per-worker distributed.LocalCluster (processes)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster


@pytest.fixture
def local_client(local_cluster):
    from distributed import Client

    with Client(local_cluster) as client:
        yield client


@pytest.fixture
def worker_kinds(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The class names of each LocalCluster's workers that kmdist starts in the test.

    ``{"Worker"}`` for threads of this process, ``{"_NannyProcess"}`` for worker processes.
    """
    import kmdist._dask

    kinds: list[set[str]] = []
    start = kmdist._dask._local_cluster

    def recorded(*args: Any, **kwargs: Any) -> Any:
        cluster = start(*args, **kwargs)
        kinds.append({type(w).__name__ for w in cluster.workers.values()})
        return cluster

    monkeypatch.setattr(kmdist._dask, "_local_cluster", recorded)
    return kinds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def external_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `dask scheduler` and two `dask worker` processes started on 127.0.0.1.

    Yields the scheduler address; stops every process it started, by process id.
    """
    bindir = Path(sys.executable).parent
    dask_cli = shutil.which("dask", path=str(bindir)) or shutil.which("dask")
    assert dask_cli, "the `dask` command is missing: install distributed"
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask-logs")
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> None:
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen([dask_cli, *args], stdout=log, stderr=subprocess.STDOUT))

    try:
        start(
            "scheduler",
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            "127.0.0.1:0",
        )
        for i in range(2):
            start(
                f"worker{i}",
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--memory-limit",
                "2GiB",
                "--name",
                f"w{i}",
            )
        from distributed import Client

        deadline = time.monotonic() + 60
        with Client(address, timeout=60) as client:
            while len(client.scheduler_info()["workers"]) < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dask workers did not connect; logs in {logs}")
                for p in procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"a dask process exited early; logs in {logs}")
                time.sleep(0.2)
        yield address
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A real, temporary Prefect API (SQLite) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3 server (moto's, a separate process on 127.0.0.1) for storage URL tests.

    The standard ``AWS_*`` variables point boto, s3fs and every process started from
    here (Dask workers, the CLI) at it, as a user's settings would.
    """
    import urllib.request

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    _S3_LOG[:] = [log_path]
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    settings = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "kmdist-test",
        "AWS_SECRET_ACCESS_KEY": "kmdist-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    before = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the S3 server (moto) exited early; log in {log_path}")
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the S3 server did not start; log in {log_path}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# The S3 server's log: one line per request it answered (see `s3_log`).
_S3_LOG: list[Path] = []


@pytest.fixture
def s3_log(s3_endpoint: str) -> Path:
    """The test S3 server's log, a line per request it answered: counts requests."""
    return _S3_LOG[0]


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A new, empty bucket on the test S3 server; its name."""
    import uuid

    import fsspec

    name = f"kmdist-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3").mkdir(name)
    return name
