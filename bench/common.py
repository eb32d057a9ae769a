"""Shared pieces of the benchmarks: timing, process measurement, inertia, machine facts."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PACKAGES = (
    "numpy",
    "numba",
    "dask",
    "distributed",
    "zarr",
    "scikit-learn",
    "dask-ml",
    "opencv-python-headless",
    "pillow",
    "prefect",
)


@dataclass
class Row:
    """One measured method in one benchmark case."""

    case: str
    method: str
    seconds: float | None
    inertia: float | None = None
    peak_rss_gb: float | None = None
    note: str = ""
    runs: list[float] = field(default_factory=list)
    # CPU seconds of the whole process tree over wall seconds: cores kept busy.
    cores: float | None = None


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Median wall time of `repeats` calls of `fn`, every time, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def inertia(X: np.ndarray, centers: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Sum of squared distances of every row of `X` to its centre, in float64.

    With `labels` the given assignment is scored; otherwise each row's nearest centre.
    Every method of every benchmark is scored by this one function.
    """
    X = np.asarray(X, dtype=np.float64).reshape(-1, centers.shape[1])
    centers = np.asarray(centers, dtype=np.float64)
    total = 0.0
    step = 1 << 16
    for start in range(0, len(X), step):
        x = X[start : start + step]
        if labels is None:
            d = ((x[:, None, :] - centers[None]) ** 2).sum(axis=2).min(axis=1)
        else:
            lab = np.asarray(labels).reshape(-1)[start : start + step]
            d = ((x - centers[lab]) ** 2).sum(axis=1)
        total += float(d.sum())
    return total


@dataclass
class Measured:
    """A finished process: wall time, exit code, peak memory and CPU of its process tree."""

    seconds: float
    returncode: int | None
    peak_rss_gb: float
    peak_client_gb: float
    output: str
    capped: bool = False
    cpu_seconds: float = 0.0

    @property
    def cores(self) -> float:
        """Cores kept busy on average: CPU seconds of the tree over wall seconds."""
        return self.cpu_seconds / self.seconds if self.seconds else 0.0


def run_measured(cmd: Sequence[str], *, timeout: float | None = None) -> Measured:
    """Run `cmd` as its own process; sample the RSS of it and its children every 0.2 s.

    After `timeout` seconds the whole process tree is killed and the run is marked
    capped (its time is then a lower bound). CPU time is that of every process of the
    tree (each is waited for by its parent, so it counts in this process's children).
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Prefect's ephemeral API must start within 20 s by default, which a loaded 2-core
    # machine can miss ("Timed out while attempting to connect to ephemeral Prefect API
    # server"): a benchmark that fails on that measures nothing.
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Output goes to a file, not a pipe: nothing reads a pipe until the end, and a full
    # one (64 KiB: a thousand images' report lines) would block the process for good.
    with tempfile.TemporaryFile(mode="w+") as log:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env)
        peak_total, peak_client, capped = _watch(proc, t0, timeout)
        seconds = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        log.seek(0)
        out = log.read()
    return Measured(
        seconds=seconds,
        returncode=proc.returncode,
        peak_rss_gb=peak_total / 2**30,
        peak_client_gb=peak_client / 2**30,
        output=out,
        capped=capped,
        cpu_seconds=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    )


def _watch(proc: subprocess.Popen[Any], t0: float, timeout: float | None) -> tuple[int, int, bool]:
    """Sample the process tree's RSS until it exits or is killed at `timeout`."""
    root = psutil.Process(proc.pid)
    peak_total = peak_client = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        rss = []
        for p in procs:
            try:
                rss.append(p.memory_info().rss)
            except psutil.NoSuchProcess:
                rss.append(0)
        if rss:
            peak_total, peak_client = max(peak_total, sum(rss)), max(peak_client, rss[0])
        if timeout is not None and time.perf_counter() - t0 > timeout:
            for p in reversed(procs):
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            proc.wait()
            return peak_total, peak_client, True
        time.sleep(0.2)
    return peak_total, peak_client, False


def check_ok(m: Measured, what: str) -> None:
    """Fail loudly when a measured process failed (a capped run is not a failure)."""
    if not m.capped and m.returncode != 0:
        raise SystemExit(f"{what} failed (exit {m.returncode}):\n{m.output[-3000:]}")


def machine() -> dict[str, Any]:
    """The facts a reader needs to weigh absolute times: CPU, memory, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "versions": versions,
        "date": time.strftime("%Y-%m-%d"),
    }


def save(name: str, payload: dict[str, Any], out_dir: Path = RESULTS) -> Path:
    """Write one benchmark's results as JSON (the report is rendered from these)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    rows = payload.get("rows", [])
    payload = {**payload, "rows": [asdict(r) if isinstance(r, Row) else r for r in rows]}
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def python() -> str:
    """The interpreter running the benchmarks (the project's .venv under `make bench`)."""
    return sys.executable


@contextlib.contextmanager
def prefect_server(work: Path) -> Any:
    """Start `prefect server start` on 127.0.0.1 and point this process's children at it.

    Yields the seconds the server took to answer its health check: the start-up a flow
    run on Prefect's ephemeral API pays inside its own time, measured apart so that the
    flow can be compared with the CLI on the work alone. Stops the server on exit.
    """
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = work / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    api = f"http://127.0.0.1:{port}/api"
    saved = os.environ.get("PREFECT_API_URL")
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    prefect = str(Path(sys.executable).with_name("prefect"))
    cmd = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile(mode="w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"prefect server exited: {log.read()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{api}/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.perf_counter() - t0 > 300:
                    raise RuntimeError("prefect server did not answer within 300 s")
                time.sleep(0.2)
            startup = time.perf_counter() - t0
            os.environ["PREFECT_API_URL"] = api
            yield startup
        finally:
            if saved is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = saved
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
