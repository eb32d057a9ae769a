"""deploy/: an end-to-end run through real servers, and static checks of the recipes.

The end-to-end tests start, on 127.0.0.1 only, `prefect server start` (SQLite), a
TLS-only `dask scheduler` (certificates from deploy/make-certs.sh) with two `dask worker`
processes, the work pools and a Prefect process worker, deploy `deploy/prefect.yaml`
with `prefect deploy`, and run the `on-demand` deployment twice on the same archive:
once undisturbed (compared with kmdist run in this process), once with a Dask worker
killed part-way (compared with the undisturbed run).
Every process they start is stopped by process id, whatever happens.

What cannot run here (a container engine, Kubernetes, SLURM) is checked statically: the
files parse, name the same image, commands, ports, pools and volumes, and point at
paths and entry points that exist.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import import_module, metadata
from pathlib import Path
from typing import IO, Any

import httpx
import imageio.v3 as iio
import numpy as np
import psutil
import pytest
import yaml
from numpy.testing import assert_array_equal
from sklearn.datasets import load_sample_image

import kmdist

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent  # the venv's `prefect` and `dask` commands
FLOW_NAME = "segment-archive"
K = 8
CHUNKS = 256  # small chunks: many tasks, so that a worker dies with work in flight
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def prefect_yaml() -> dict[str, Any]:
    return load_yaml(DEPLOY / "prefect.yaml")


def deployment(name: str) -> dict[str, Any]:
    (found,) = [d for d in prefect_yaml()["deployments"] if d["name"] == name]
    return found


# --------------------------------------------------------------------------------------
# Real processes
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Processes started for the tests, with logs; stopped by process id."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._files: list[IO[bytes]] = []

    def start(self, name: str, *cmd: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop_all
        self._files.append(log)
        # A session of its own: a Ctrl-C to pytest does not reach it half-way.
        proc = subprocess.Popen(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self, *names: str) -> None:
        for name in names or tuple(self.procs):
            rc = self.procs[name].poll()
            if rc is not None:
                raise RuntimeError(f"{name} exited with code {rc}:\n{self.tail(name)}")

    def wait_for(self, what: str, ready: Callable[[], bool], timeout: float, log: str) -> None:
        """Poll `ready` until true; fail with the tail of `log` on timeout or early exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if ready():
                    return
            except (httpx.HTTPError, OSError):
                pass  # not listening yet
            time.sleep(0.2)
        raise TimeoutError(f"{what} not ready after {timeout:.0f} s; {log} log:\n{self.tail(log)}")

    def kill(self, name: str) -> None:
        """SIGKILL one process and everything it started."""
        proc = self.procs[name]
        _signal_all([proc.pid, *_descendants(proc.pid)], signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        """SIGTERM every started process and its descendants, then SIGKILL survivors."""
        pids: list[int] = []
        for proc in self.procs.values():
            # Flow runs are children of the worker in sessions of their own: find them
            # by parentage now, before their parents exit.
            pids += [proc.pid, *_descendants(proc.pid)]
        _signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        _signal_all([p for p in pids if psutil.pid_exists(p)], signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for f in self._files:
            f.close()


def _descendants(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@dataclass
class Stack:
    """The running servers and how to reach them."""

    procs: Processes
    api: str  # http://127.0.0.1:PORT/api
    scheduler: str  # tls://127.0.0.1:PORT (TLS only)
    dashboard: str  # http://127.0.0.1:PORT
    http: httpx.Client

    def prefect(self, *args: str, timeout: float = 180) -> str:
        """Run the `prefect` command; raise with its output if it fails."""
        done = subprocess.run(
            [str(BIN / "prefect"), *args],
            cwd=ROOT,
            env=self.procs.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"prefect {shlex.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done.stdout

    def run_deployment(self, name: str, parameters: dict[str, Any], run_name: str) -> str:
        """Trigger a run with `prefect deployment run`; return the flow run id."""
        out = self.prefect(
            "deployment",
            "run",
            f"{FLOW_NAME}/{name}",
            "--params",
            json.dumps(parameters),
            "--flow-run-name",
            run_name,
        )
        match = re.search(r"UUID: ([0-9a-f-]{36})", out)
        assert match, out
        return match.group(1)

    def state(self, run_id: str) -> str:
        r = self.http.get(f"{self.api}/flow_runs/{run_id}")
        r.raise_for_status()
        return str(r.json()["state_type"])

    def wait_terminal(self, run_id: str, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.procs.check_alive("prefect-server", "prefect-worker", "dask-scheduler")
            if (state := self.state(run_id)) in TERMINAL:
                return state
            time.sleep(0.5)
        raise TimeoutError(f"flow run {run_id} unfinished:\n{self.procs.tail('prefect-worker')}")

    def counts(self) -> dict[str, int]:
        """The scheduler's task and worker counts (from its dashboard server)."""
        r = self.http.get(f"{self.dashboard}/json/counts.json")
        r.raise_for_status()
        return dict(r.json())

    def deployment(self, name: str) -> dict[str, Any]:
        r = self.http.get(f"{self.api}/deployments/name/{FLOW_NAME}/{name}")
        r.raise_for_status()
        return dict(r.json())


def read_env_file(path: Path) -> dict[str, str]:
    """The `export NAME='value'` lines of a shell file such as dask-tls.env."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"export ([A-Z0-9_]+)=(?:'([^']*)'|(\S*))", line.strip())
        if match:
            found[match.group(1)] = match.group(2) if match.group(2) is not None else match.group(3)
    return found


def dask_tls(folder: Path) -> dict[str, str]:
    """Certificates made as the README says (deploy/make-certs.sh); their Dask settings."""
    subprocess.run(
        ["sh", str(DEPLOY / "make-certs.sh"), str(folder)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return read_env_file(folder / "dask-tls.env")


def _clean_env(tmp: Path, api: str, scheduler: str) -> dict[str, str]:
    """The environment of every started process: ours, not the caller's Prefect/Dask."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DASK_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # flow runs use the venv's Python
        PREFECT_HOME=str(tmp / "prefect-home"),
        PREFECT_API_URL=api,
        PREFECT_SERVER_UI_ENABLED="false",  # no UI build: a faster start
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS="1",  # pick runs up within a second, not ten
        PREFECT_CLI_WRAP_LINES="false",
        # Configuration through settings: runs without `dask_address` use this.
        DASK_SCHEDULER_ADDRESS=scheduler,
        COLUMNS="200",
    )
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Prefect server, Dask scheduler + 2 workers, work pools, a worker, deployments.

    Dask as the README's section 1 starts it: TLS only, with deploy/make-certs.sh's
    certificates and its dask-tls.env settings in every process's environment.
    """
    tmp = tmp_path_factory.mktemp("deploy-e2e")
    api_port, sched_port, dash_port = free_port(), free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}/api"
    scheduler = f"tls://127.0.0.1:{sched_port}"
    env = {**_clean_env(tmp, api, scheduler), **dask_tls(tmp / "kmdist-tls")}
    procs = Processes(tmp, env)
    # The dashboard is HTTPS, its certificate signed by the cluster's authority.
    http = httpx.Client(
        timeout=10, verify=ssl.create_default_context(cafile=str(tmp / "kmdist-tls" / "ca.pem"))
    )
    stack = Stack(procs, api, scheduler, f"https://127.0.0.1:{dash_port}", http)
    prefect, dask = str(BIN / "prefect"), str(BIN / "dask")
    try:
        procs.start(
            "prefect-server", prefect, "server", "start", "--host", "127.0.0.1",
            "--port", str(api_port),
        )  # fmt: skip
        procs.start(
            "dask-scheduler", dask, "scheduler", "--protocol", "tls", "--host", "127.0.0.1",
            "--port", str(sched_port), "--dashboard-address", f"127.0.0.1:{dash_port}",
        )  # fmt: skip
        for i in range(2):
            # --no-nanny: the pid is the worker itself, so killing it kills the worker.
            procs.start(
                f"dask-worker-{i}", dask, "worker", scheduler, "--host", "127.0.0.1",
                "--no-nanny", "--nthreads", "1", "--memory-limit", "2GiB", "--name",
                f"w{i}", "--no-dashboard",
            )  # fmt: skip
        procs.wait_for("dask workers", lambda: stack.counts()["workers"] == 2, 90, "dask-scheduler")
        procs.wait_for(
            "prefect server",
            lambda: http.get(f"{api}/health").status_code == 200,
            180,
            "prefect-server",
        )
        process_pool = deployment("on-demand")["work_pool"]["name"]
        k8s_pool = deployment("nightly-archive-k8s")["work_pool"]["name"]
        stack.prefect("work-pool", "create", process_pool, "--type", "process")
        # The Kubernetes pool too, with kmdist's base job template (creating it needs no
        # cluster), so that `--all` deploys every deployment of prefect.yaml.
        stack.prefect(
            "work-pool", "create", k8s_pool, "--type", "kubernetes",
            "--base-job-template", str(DEPLOY / "k8s" / "base-job-template.json"),
        )  # fmt: skip
        procs.start(
            "prefect-worker", prefect, "worker", "start", "--pool", process_pool,
            "--name", "e2e-worker", "--install-policy", "never",
        )  # fmt: skip
        out = stack.prefect(
            "--no-prompt", "deploy", "--prefect-file", str(DEPLOY / "prefect.yaml"), "--all"
        )
        assert out.count("successfully created") == 3, out
        # Hermetic: no scheduled run may start while the tests run (02:00 UTC).
        for name in ("nightly-archive", "nightly-archive-k8s"):
            dep = stack.deployment(name)
            # The server may answer 503 while its SQLite database is busy (the worker
            # and `prefect deploy` write at once): ask again, a bounded number of times.
            for _ in range(20):
                r = http.patch(f"{api}/deployments/{dep['id']}", json={"paused": True})
                if r.status_code != 503:
                    break
                time.sleep(0.5)
            r.raise_for_status()

        def worker_online() -> bool:
            r = http.post(f"{api}/work_pools/{process_pool}/workers/filter", json={})
            return any(w["status"] == "ONLINE" for w in r.json())

        procs.wait_for("prefect worker", worker_online, 60, "prefect-worker")
        yield stack
    finally:
        procs.stop_all()
        http.close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight 1280x854 photos (two sample photos, shifted and flipped) as PNG files."""
    root = tmp_path_factory.mktemp("archive") / "photos"
    root.mkdir()
    photos = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    for i in range(8):
        img = np.roll(photos[i % 2], 53 * i, axis=1)
        img = img[:, ::-1] if i // 2 % 2 else img
        img = np.repeat(np.repeat(img, 2, axis=0), 2, axis=1)
        iio.imwrite(root / f"scan-{i:02d}.png", np.ascontiguousarray(img))
    return root


def assert_same_segmentations(store: Path, expected: Path, names: list[str]) -> None:
    """Complete groups, equal palettes and identical labels, image by image."""
    infos = {i.name: i for i in kmdist.list_segmentations(store)}
    assert sorted(infos) == names
    assert all(i.complete for i in infos.values()), infos
    for name in names:
        got = kmdist.open_segmentation(store, name)
        want = kmdist.open_segmentation(expected, name)
        assert got.palette == want.palette, name
        assert got.palette.k == K
        assert got.labels.shape == want.labels.shape, name
        assert_array_equal(got.labels.compute(), want.labels.compute(), err_msg=name)


@pytest.fixture(scope="module")
def names(archive: Path) -> list[str]:
    return sorted(p.stem for p in archive.glob("*.png"))


@dataclass
class Run:
    id: str
    output: Path


@pytest.fixture(scope="module")
def undisturbed(stack: Stack, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Run 1 of the on-demand deployment: parameters name the archive and the scheduler."""
    out = tmp_path_factory.mktemp("run1") / "segmented.zarr"
    params = {
        "inputs": str(archive),
        "output": str(out),
        "k": K,
        "chunks": CHUNKS,
        "dask_address": stack.scheduler,
    }
    run_id = stack.run_deployment("on-demand", params, "e2e-undisturbed")
    state = stack.wait_terminal(run_id)
    assert state == "COMPLETED", stack.procs.tail("prefect-worker", 80)
    return Run(run_id, out)


@pytest.mark.slow
def test_deploy_registers_schedules_pools_and_job_variables(stack: Stack) -> None:
    nightly = stack.deployment("nightly-archive")
    (schedule,) = nightly["schedules"]
    assert schedule["schedule"]["cron"] == "0 2 * * *"
    assert schedule["schedule"]["timezone"] == "UTC"
    assert nightly["work_pool_name"] == "kmdist-process"
    assert nightly["parameters"]["inputs"] == "/data/archive"
    assert nightly["global_concurrency_limit"]["limit"] == 1  # runs never overlap
    # The pull step starts flow runs in the folder `prefect deploy` ran in.
    assert nightly["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
    ]
    on_demand = stack.deployment("on-demand")
    assert on_demand["schedules"] == []
    assert "inputs" not in on_demand["parameters"]  # each run names its inputs
    k8s = stack.deployment("nightly-archive-k8s")
    assert k8s["work_pool_name"] == "kmdist-k8s"
    assert k8s["job_variables"]["image"] == image_ref()
    assert k8s["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/kmdist"}}
    ]


@pytest.mark.slow
def test_deployment_run_matches_in_process_result(
    stack: Stack, undisturbed: Run, archive: Path, names: list[str], tmp_path: Path
) -> None:
    # The same steps in this process, on threads: no Prefect, no cluster.
    reference = tmp_path / "reference.zarr"
    from kmdist.pipeline import SegmentOptions, segment_batch

    opts = SegmentOptions(n_colors=K, random_state=0, chunks=CHUNKS)
    results = segment_batch(kmdist.open_images(archive), reference, opts)
    assert all(r.status == "done" for r in results), results
    assert_same_segmentations(undisturbed.output, reference, names)
    # The run links the dashboard of the cluster it computed on.
    r = stack.http.post(
        f"{stack.api}/artifacts/filter",
        json={
            "artifacts": {
                "flow_run_id": {"any_": [undisturbed.id]},
                "key": {"any_": ["dask-dashboard"]},
            }
        },
    )
    r.raise_for_status()
    links = [a["data"] for a in r.json()]
    assert links and all(f"({stack.dashboard}/status)" in link for link in links), links


@pytest.mark.slow
def test_run_survives_a_killed_dask_worker(
    stack: Stack, archive: Path, names: list[str], undisturbed: Run, tmp_path: Path
) -> None:
    out = tmp_path / "disturbed.zarr"
    # No dask_address: the worker's DASK_SCHEDULER_ADDRESS setting picks the cluster.
    params = {"inputs": str(archive), "output": str(out), "k": K, "chunks": CHUNKS}
    run_id = stack.run_deployment("on-demand", params, "e2e-worker-killed")

    def in_flight() -> bool:
        """Running, tasks on the cluster, and some images already written."""
        return (
            stack.state(run_id) == "RUNNING"
            and stack.counts()["processing"] > 0
            and any(kmdist.is_complete(out, n) for n in names if out.exists())
        )

    deadline = time.monotonic() + 180
    while not in_flight():
        state = stack.state(run_id)
        assert state not in TERMINAL, f"run ended ({state}) before a worker could be killed"
        assert time.monotonic() < deadline, stack.procs.tail("prefect-worker")
        time.sleep(0.1)
    # The dashboard answers while the run is in flight.
    page = stack.http.get(f"{stack.dashboard}/status")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert stack.state(run_id) == "RUNNING"
    done_before = sum(kmdist.is_complete(out, n) for n in names)
    stack.procs.kill("dask-worker-1")
    assert stack.state(run_id) == "RUNNING"
    assert done_before < len(names), "every image was written before the kill"

    state = stack.wait_terminal(run_id)
    assert state == "COMPLETED", stack.procs.tail("prefect-worker", 80)
    assert stack.counts()["workers"] == 1  # the run finished on the survivor
    assert_same_segmentations(out, undisturbed.output, names)


# --------------------------------------------------------------------------------------
# Static checks
# --------------------------------------------------------------------------------------

# The ports every recipe uses: Dask scheduler, Dask dashboard, Prefect API/UI.
SCHEDULER_PORT, DASHBOARD_PORT, PREFECT_PORT = 8786, 8787, 4200
IMAGE_WORKDIR = "/opt/kmdist"


def image_ref() -> str:
    """`title:version` from the Dockerfile's labels: the tag every recipe must use."""
    text = (DEPLOY / "Dockerfile").read_text()
    title = re.search(r'org\.opencontainers\.image\.title="([^"]+)"', text)
    version = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', text)
    assert title and version
    return f"{title.group(1)}:{version.group(1)}"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    text = "\n".join(ln for ln in lines if not ln.lstrip().startswith("#"))
    joined = re.sub(r"\\\n\s*", " ", text)
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for ln in joined.splitlines()
        if (parts := ln.strip().split(None, 1))
    ]


def option_value(cmd: list[str], option: str) -> str:
    assert option in cmd, f"{option} missing from {cmd}"
    return cmd[cmd.index(option) + 1]


def pins() -> dict[str, str]:
    """name -> version of deploy/requirements.txt (names normalised as pip does)."""
    found = {}
    for line in (DEPLOY / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            found[normalise(name)] = version
    return found


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def compose() -> dict[str, Any]:
    return load_yaml(DEPLOY / "compose.yaml")


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with the defaults (what runs when nothing is set)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def k8s_resources() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> manifest, for every manifest the kustomization applies."""
    kustomization = load_yaml(DEPLOY / "k8s" / "kustomization.yaml")
    found = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / "k8s" / resource).read_text()):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def base_job_template() -> dict[str, Any]:
    return dict(json.loads((DEPLOY / "k8s" / "base-job-template.json").read_text()))


def test_prefect_yaml_entrypoints_are_real_flows_with_valid_parameters() -> None:
    from prefect import Flow
    from prefect.client.schemas.schedules import CronSchedule

    for dep in prefect_yaml()["deployments"]:
        path, func = dep["entrypoint"].split(":")
        assert (ROOT / path).is_file(), dep["entrypoint"]
        module = import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, func)
        assert isinstance(flow, Flow) and flow.name == FLOW_NAME, dep["name"]
        # Every default has the flow's type; `inputs` is given per run when absent.
        flow.validate_parameters({"inputs": "/data/x", **dep["parameters"]})
        for schedule in dep.get("schedules", []):
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    pools = {d["name"]: d["work_pool"]["name"] for d in prefect_yaml()["deployments"]}
    assert pools == {
        "nightly-archive": "kmdist-process",
        "on-demand": "kmdist-process",
        "nightly-archive-k8s": "kmdist-k8s",
    }
    # In the image the code is in the WORKDIR, where the Kubernetes deployment starts.
    (step,) = deployment("nightly-archive-k8s")["pull"]
    directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
    assert ("WORKDIR", directory) in dockerfile_instructions()
    assert directory == IMAGE_WORKDIR


def test_kubernetes_job_variables_fit_the_base_job_template() -> None:
    import jsonschema

    template = base_job_template()
    variables = template["variables"]
    job_variables = deployment("nightly-archive-k8s")["work_pool"]["job_variables"]
    # Unknown variables would be silently ignored by the worker: refuse them.
    jsonschema.Draft7Validator({**variables, "additionalProperties": False}).validate(job_variables)
    assert job_variables["image"] == variables["properties"]["image"]["default"] == image_ref()
    # Every placeholder of the job manifest is a declared variable.
    used = set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", json.dumps(template["job_configuration"])))
    assert used <= set(variables["properties"]), used - set(variables["properties"])
    resources = k8s_resources()
    assert ("ConfigMap", job_variables["settings_config_map"]) in resources
    assert ("PersistentVolumeClaim", job_variables["data_volume_claim"]) in resources
    assert ("ServiceAccount", job_variables["service_account_name"]) in resources
    namespace = job_variables["namespace"]
    assert all(r["metadata"].get("namespace", namespace) == namespace for r in resources.values())


def test_dockerfile_copies_what_exists_and_installs_the_pins() -> None:
    instructions = dockerfile_instructions()
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    sent = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    copied = set()
    for instruction, args in instructions:
        if instruction == "COPY":
            *sources, _dest = args.split()
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: no such path in the repository"
                assert src.rstrip("/").split("/")[0] in sent, f"{src} is not in the build context"
                copied.add(src.rstrip("/"))
    runs = " && ".join(args for instruction, args in instructions if instruction == "RUN")
    assert "pip install -r deploy/requirements.txt" in runs
    assert "pip install --no-deps ." in runs and "pip check" in runs
    assert {"deploy/requirements.txt", "kmdist", "flows", "pyproject.toml"} <= copied
    expose = " ".join(args for instruction, args in instructions if instruction == "EXPOSE")
    assert set(expose.split()) == {str(p) for p in (SCHEDULER_PORT, DASHBOARD_PORT, PREFECT_PORT)}
    # The tag is kmdist's version: bump both together (every recipe names the tag).
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert image_ref() == f"kmdist:{version}"


def test_requirements_pin_every_dependency_at_the_tested_version() -> None:
    from packaging.requirements import Requirement

    pinned = pins()
    for text in metadata.requires("kmdist") or []:
        req = Requirement(text)
        if req.marker is not None and "extra" in str(req.marker):
            continue  # dev/plot extras are not in the image
        name = normalise(req.name)
        assert name in pinned, f"{name} (a dependency of kmdist) is not pinned"
        assert req.specifier.contains(pinned[name]), (text, pinned[name])
    assert "prefect-kubernetes" in pinned  # the Kubernetes worker runs this image
    s3 = [Requirement(t) for t in metadata.requires("kmdist") or [] if 'extra == "s3"' in t]
    assert s3 and all(r.specifier.contains(pinned[normalise(r.name)]) for r in s3)  # s3:// URLs
    # A Dask client, its scheduler and its workers must agree, and the image must run
    # what the tests ran: regenerate deploy/requirements.txt (its header says how).
    tested = {n: metadata.version(n) for n in ("dask", "distributed", "numpy", "prefect", "zarr")}
    assert {n: pinned[n] for n in tested} == tested


def test_compose_services_agree_on_image_commands_ports_and_data() -> None:
    services = compose()["services"]
    assert set(services) == {
        "postgres",
        "prefect-server",
        "prefect-worker",
        "dask-scheduler",
        "dask-worker",
    }
    kmdist_services = [s for name, s in services.items() if name != "postgres"]
    for service in kmdist_services:
        assert service["image"] == image_ref()
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"

    scheduler = services["dask-scheduler"]["command"]
    assert scheduler[:2] == ["dask", "scheduler"]
    assert option_value(scheduler, "--port") == str(SCHEDULER_PORT)
    assert option_value(scheduler, "--dashboard-address") == f":{DASHBOARD_PORT}"
    # HOST:PUBLISHED:TARGET (the host address is test_security.py's concern).
    ports = [interpolate(p).split(":") for p in services["dask-scheduler"]["ports"]]
    published = {p[-2]: p[-1] for p in ports}
    assert published == {
        str(SCHEDULER_PORT): str(SCHEDULER_PORT),
        str(DASHBOARD_PORT): str(DASHBOARD_PORT),
    }

    address = f"tls://dask-scheduler:{SCHEDULER_PORT}"
    worker = [interpolate(a) for a in services["dask-worker"]["command"]]
    assert worker[:3] == ["dask", "worker", address]
    assert services["dask-worker"]["deploy"]["replicas"]  # scalable: --scale dask-worker=N

    server = services["prefect-server"]
    assert server["command"][:3] == ["prefect", "server", "start"]
    assert option_value(server["command"], "--port") == str(PREFECT_PORT)
    assert [interpolate(p).split(":", 1)[1] for p in server["ports"]] == [
        f"{PREFECT_PORT}:{PREFECT_PORT}"
    ]
    db_url = interpolate(server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert db_url.startswith("postgresql+asyncpg://") and "@postgres:5432/" in db_url

    pworker = services["prefect-worker"]
    pool = deployment("on-demand")["work_pool"]["name"]
    assert pworker["command"][:3] == ["prefect", "worker", "start"]
    assert option_value(pworker["command"], "--pool") == pool
    assert option_value(pworker["command"], "--type") == "process"
    env = pworker["environment"]
    assert env["PREFECT_API_URL"] == f"http://prefect-server:{PREFECT_PORT}/api"
    assert env["DASK_SCHEDULER_ADDRESS"] == address
    # The flow run (in the Prefect worker) and the Dask workers see the same /data.
    mounts = {
        s: [interpolate(v["source"]) for v in services[s]["volumes"] if v["target"] == "/data"]
        for s in ("prefect-worker", "dask-worker")
    }
    assert mounts["prefect-worker"] == mounts["dask-worker"] and len(mounts["dask-worker"]) == 1
    assert deployment("nightly-archive")["parameters"]["inputs"].startswith("/data/")


def test_kubernetes_manifests_agree_on_image_commands_ports_and_data() -> None:
    resources = k8s_resources()
    kinds = {kind for kind, _ in resources}
    assert {"Namespace", "ConfigMap", "PersistentVolumeClaim", "DaskCluster", "Deployment"} <= kinds
    (cluster,) = [r for (kind, _), r in resources.items() if kind == "DaskCluster"]
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    namespace = cluster["metadata"]["namespace"]
    (sched,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    (worker,) = cluster["spec"]["worker"]["spec"]["containers"]
    worker_pod = resources[("Deployment", "prefect-worker")]["spec"]["template"]["spec"]
    (pworker,) = worker_pod["containers"]
    images = {c["image"] for c in (sched, worker, pworker)}
    kustomized = load_yaml(DEPLOY / "k8s" / "kustomization.yaml")["images"]
    assert images == {image_ref()} == {f"{i['newName']}:{i['newTag']}" for i in kustomized}

    assert sched["args"][:2] == ["dask", "scheduler"]
    assert option_value(sched["args"], "--port") == str(SCHEDULER_PORT)
    assert option_value(sched["args"], "--dashboard-address") == f":{DASHBOARD_PORT}"
    ports = {p["name"]: p["containerPort"] for p in sched["ports"]}
    assert ports == {"tcp-comm": SCHEDULER_PORT, "http-dashboard": DASHBOARD_PORT}
    service = {
        p["name"]: (p["port"], p["targetPort"])
        for p in cluster["spec"]["scheduler"]["service"]["ports"]
    }
    assert service == {
        "tcp-comm": (SCHEDULER_PORT, "tcp-comm"),
        "http-dashboard": (DASHBOARD_PORT, "http-dashboard"),
    }
    assert worker["args"][:2] == ["dask", "worker"]  # the operator sets the scheduler address

    # Flow-run pods mount the same claim at the same path as the Dask workers.
    volumes = cluster["spec"]["worker"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if "persistentVolumeClaim" in v]
    (mount,) = [m for m in worker["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["name"] == volume["name"]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert resources[("PersistentVolumeClaim", claim)]["spec"]["accessModes"] == ["ReadWriteMany"]
    variables = base_job_template()["variables"]["properties"]
    assert variables["data_volume_claim"]["default"] == claim
    assert variables["data_mount_path"]["default"] == mount["mountPath"]

    # Settings: the scheduler service the operator names after the cluster, the server.
    settings = resources[("ConfigMap", "kmdist-settings")]["data"]
    name = cluster["metadata"]["name"]
    assert settings["DASK_SCHEDULER_ADDRESS"] == (
        f"tls://{name}-scheduler.{namespace}.svc.cluster.local:{SCHEDULER_PORT}"
    )
    assert re.fullmatch(rf"https?://[^/]+:{PREFECT_PORT}/api", settings["PREFECT_API_URL"])
    assert pworker["envFrom"] == [{"configMapRef": {"name": "kmdist-settings"}}]
    assert pworker["args"][:3] == ["prefect", "worker", "start"]
    pool = deployment("nightly-archive-k8s")["work_pool"]["name"]
    assert option_value(pworker["args"], "--pool") == pool
    assert option_value(pworker["args"], "--type") == "kubernetes"
    # The worker may create and watch the Jobs of flow runs.
    role = resources[("Role", "prefect-worker")]
    assert any("jobs" in r["resources"] and "create" in r["verbs"] for r in role["rules"])
    assert ("ServiceAccount", worker_pod["serviceAccountName"]) in resources


def _commands() -> dict[str, list[list[str]]]:
    """Every `dask ...`/`prefect ...` command line of the recipes, by subcommand."""
    services = compose()["services"].values()
    found = [s["command"] for s in services if s.get("command")]
    for doc in k8s_resources().values():
        for path in (
            ("spec", "scheduler", "spec"),
            ("spec", "worker", "spec"),
            ("spec", "template", "spec"),
        ):
            node: Any = doc
            for key in path:
                node = node.get(key, {}) if isinstance(node, dict) else {}
            found += [c["args"] for c in node.get("containers", []) if "args" in c]
    by_sub: dict[str, list[list[str]]] = {}
    for cmd in found:
        words = 3 if cmd[0] == "prefect" else 2
        by_sub.setdefault(" ".join(cmd[:words]), []).append(cmd)
    return by_sub


def test_recipe_commands_exist_and_accept_their_options() -> None:
    commands = _commands()
    assert set(commands) == {
        "dask scheduler",
        "dask worker",
        "prefect server start",
        "prefect worker start",
    }
    # Ask each command for its help, all at once (Prefect's start-up is slow).
    helps = {
        sub: subprocess.Popen(
            [str(BIN / sub.split()[0]), *sub.split()[1:], "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "300"},
        )
        for sub in commands
    }
    for sub, proc in helps.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{sub} --help:\n{out}"
        for cmd in commands[sub]:
            for word in cmd:
                if word.startswith("--"):
                    assert re.search(rf"{re.escape(word)}\b", out), f"{sub}: no option {word}"


def test_slurm_recipe_parses_its_command_line_config_and_batch_script() -> None:
    # What can be checked without SLURM; running it is the next test's, where SLURM is.
    script = DEPLOY / "slurm" / "kmdist_slurm.py"
    tree = ast.parse(script.read_text())
    imported = {
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert {"dask_jobqueue.SLURMCluster", "flows.segment.segment_archive"} <= imported
    sys.path.insert(0, str(script.parent))
    try:
        module = import_module("kmdist_slurm")  # dask-jobqueue is imported only to run
    finally:
        sys.path.remove(str(script.parent))
    args = module.build_parser().parse_args(["run", "in/", "-o", "out.zarr", "--jobs", "3"])
    assert (args.inputs, args.output, args.jobs) == (["in/"], "out.zarr", 3)
    config = load_yaml(DEPLOY / "slurm" / "jobqueue.yaml")["jobqueue"]["slurm"]
    # dask-jobqueue 0.9's keys for SLURM (its jobqueue.yaml): a typo would be ignored.
    known = {
        "name", "cores", "memory", "processes", "python", "interface", "death-timeout",
        "local-directory", "shared-temp-directory", "worker-command", "worker-extra-args",
        "shebang", "queue", "account", "walltime", "job-script-prologue", "job-cpu",
        "job-mem", "job-extra-directives", "job-directives-skip", "log-directory",
        "scheduler-options",
    }  # fmt: skip
    assert set(config) <= known, set(config) - known
    sbatch = DEPLOY / "slurm" / "segment.sbatch"
    subprocess.run(["bash", "-n", str(sbatch)], check=True)
    assert "deploy/slurm/kmdist_slurm.py run" in sbatch.read_text()


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("sbatch") is None or importlib.util.find_spec("dask_jobqueue") is None,
    reason="the SLURM recipe runs only where there is SLURM (sbatch) and dask-jobqueue; "
    "this machine has neither, so its run is not tested here",
)
def test_slurm_recipe_runs_the_flow_on_slurm_workers(tmp_path: Path, prefect_harness: None) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    china = load_sample_image("china.jpg")[::8, ::8]
    for i in range(2):
        iio.imwrite(photos / f"p{i}.png", np.ascontiguousarray(np.roll(china, 9 * i, axis=1)))
    out = tmp_path / "out.zarr"
    script = DEPLOY / "slurm" / "kmdist_slurm.py"
    sys.path.insert(0, str(script.parent))
    try:
        module = import_module("kmdist_slurm")
    finally:
        sys.path.remove(str(script.parent))
    assert module.main(["run", str(photos), "-o", str(out), "-k", "4", "--jobs", "1"]) == 0
    assert sorted(i.name for i in kmdist.list_segmentations(out) if i.complete) == ["p0", "p1"]


def test_readme_names_files_that_exist() -> None:
    text = (DEPLOY / "README.md").read_text()
    files = set(re.findall(r"\bdeploy/(?:[\w-]+/)*[\w-]+\.\w+", text))
    assert files, "the README names no file of deploy/"
    missing = [f for f in files if not (ROOT / f).is_file()]
    assert not missing, missing
    for dep in prefect_yaml()["deployments"]:
        assert dep["name"] in text
