"""deploy/: the recipes start closed, and attacks on a closed cluster fail.

A Dask scheduler runs whatever pickled task a connected client sends, so whoever
reaches it runs code as the workers' user. The live tests start, on 127.0.0.1 only, a
`dask scheduler` and two `dask worker` processes with TLS required and certificates made
by the recipes' own deploy/make-certs.sh, then: the CLI (`kmdist segment --scheduler
tls://...`) and the flow (`segment_image(..., dask_address=...)`, in a process of its
own reporting to a Prefect server with basic authentication) compute on it, with the
TLS settings coming from Dask's configuration (the DASK_DISTRIBUTED__COMM__TLS__*
variables of dask-tls.env), and give the same labels as a plain local cluster; clients
without the certificates (plain TCP, TLS without a client certificate, another
cluster's certificates) and a worker with another cluster's certificates are refused.
A `prefect server start` with an auth string refuses requests and Prefect clients
without it. Every process they start is stopped by process id, whatever happens.

The compose file and the Kubernetes manifests are read (YAML), not run: the tests fail
on a port published beyond the loopback by default, a default or literal secret, a
Dask process without TLS, or a Dask cluster that pods other than kmdist's may reach.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import httpx
import imageio.v3 as iio
import numpy as np
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from distributed import Client, Security
from distributed.utils import format_dashboard_link
from numpy.testing import assert_array_equal
from sklearn.datasets import load_sample_image

import kmdist
from tests.deploy.test_deploy import Processes, free_port, read_env_file

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent  # the venv's `dask`, `prefect` and `kmdist` commands
MAKE_CERTS = DEPLOY / "make-certs.sh"
K = 4
AUTH = "kmdist-admin:correct-horse-battery-staple"
REFUSED_WITHIN = 20  # seconds an attacker may wait before the attempt must have failed
# Names whose values are credentials: they must come from a secret store, never a file.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH_STRING|API_KEY|PRIVATE_KEY")
ROLES = ("scheduler", "worker", "client")


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def make_certs(folder: Path, *names: str, force: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the recipes' deploy/make-certs.sh, as the README says."""
    return subprocess.run(
        ["sh", str(MAKE_CERTS), *(["--force"] if force else []), str(folder), *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dask_settings(env: dict[str, str]) -> dict[str, Any]:
    """The Dask configuration a process with environment `env` has (Dask's own parsing)."""
    dask_env = {k: str(v) for k, v in env.items() if k.startswith("DASK_DISTRIBUTED__")}
    return _flatten(dask.config.collect_env(dask_env))


def security_of(env: dict[str, str]) -> Security:
    """`Security()` as distributed builds it in a process with environment `env`."""
    with dask.config.set(dask_settings(env)):
        return Security()


def dashboard_scheme(env: dict[str, str]) -> str:
    """The scheme of the dashboard links a client with environment `env` prints."""
    with dask.config.set(dask_settings(env)):
        return format_dashboard_link("host", 1).split("://")[0]


def assert_tls_only(env: dict[str, str], certs_dir: str, where: str) -> None:
    """Dask in a process with `env` requires TLS, with certificates under `certs_dir`."""
    security = security_of(env)
    assert security.require_encryption is True, f"{where}: TLS is not required"
    for role in ROLES:
        tls = security.get_tls_config_for_role(role)
        for item in ("ca_file", "cert", "key"):
            path = tls[item]
            assert path, f"{where}: no TLS {item} for the {role} role"
            assert Path(path).parent == Path(certs_dir), f"{where}: {role} {item} {path}"
    assert dashboard_scheme(env) == "https", f"{where}: the dashboard is plain HTTP"


def clean_env(tmp: Path) -> dict[str, str]:
    """An environment without the caller's Prefect or Dask settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DASK_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PREFECT_HOME=str(tmp / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_CLI_WRAP_LINES="false",
        COLUMNS="200",
    )
    return env


def labels(store: Path, name: str) -> np.ndarray:
    return np.asarray(kmdist.open_segmentation(store, name).labels.compute())


# --------------------------------------------------------------------------------------
# Compose's variable interpolation (${VAR}, ${VAR:-default}, ${VAR:?message}, $$)
# --------------------------------------------------------------------------------------

_COMPOSE_VAR = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)


class Required(Exception):
    """A variable compose refuses to start without (``${VAR:?message}``)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def compose_value(text: str, env: dict[str, str]) -> str:
    """`text` as compose interpolates it with the variables `env` (deploy/.env, shell)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("dollar"):
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        value = env.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if missing else str(value)
        if op in (":?", "?"):
            if missing:
                raise Required(name, arg)
            return str(value)
        return value or ""

    return _COMPOSE_VAR.sub(substitute, text)


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def published_host(port: str | dict[str, Any], env: dict[str, str]) -> str | None:
    """The host address a compose `ports` entry publishes on (None: every interface)."""
    if isinstance(port, dict):
        host = port.get("host_ip")
        return compose_value(str(host), env) if host is not None else None
    spec = compose_value(str(port), env).split("/")[0]
    if spec.startswith("["):  # [::1]:8786:8786
        return spec[1 : spec.index("]")]
    parts = spec.split(":")
    return parts[0] if len(parts) == 3 else None


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def service_env(service: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """A compose service's environment, interpolated with `env`."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: compose_value(str(v), env) for k, v in raw.items()}


# --------------------------------------------------------------------------------------
# The certificates (deploy/make-certs.sh)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs") / "kmdist-tls"
    make_certs(folder)
    return folder


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Valid certificates of another cluster: its own authority, not ours."""
    folder = tmp_path_factory.mktemp("other-certs") / "kmdist-tls"
    make_certs(folder)
    return folder


def test_make_certs_makes_a_cluster_authority_and_one_certificate(
    certs: Path, tmp_path: Path
) -> None:
    assert sorted(p.name for p in certs.iterdir()) == [
        "ca.pem",
        "dask-tls.env",
        "tls.crt",
        "tls.key",
    ]
    # The key is readable by its owner only, and so is the folder; the authority's own
    # key is gone, so nobody can sign another certificate with it.
    assert stat.S_IMODE((certs / "tls.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((certs / "tls.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "dask-scheduler", "kmdist-scheduler.kmdist.svc.cluster.local"} <= set(
        names.get_values_for_type(x509.DNSName)
    )
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    # dask-tls.env, as Dask reads it: TLS required, every role with these files.
    env = read_env_file(certs / "dask-tls.env")
    assert_tls_only(env, str(certs), "dask-tls.env")
    # Extra names; a second run keeps what exists, --force makes new ones.
    extra = tmp_path / "extra"
    make_certs(extra, "10.0.0.5", "sched.example.org")
    cert = x509.load_pem_x509_certificate((extra / "tls.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "sched.example.org" in names.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("10.0.0.5") in names.get_values_for_type(x509.IPAddress)
    before = (extra / "tls.crt").read_bytes()
    assert "keeping it" in make_certs(extra).stderr
    assert (extra / "tls.crt").read_bytes() == before
    make_certs(extra, force=True)
    assert (extra / "tls.crt").read_bytes() != before


# --------------------------------------------------------------------------------------
# A live TLS cluster, and a Prefect server with basic authentication
# --------------------------------------------------------------------------------------


@dataclass
class TLSCluster:
    address: str  # tls://127.0.0.1:PORT
    dashboard: str  # https://127.0.0.1:PORT
    env: dict[str, str]  # a client's environment: clean, plus dask-tls.env
    certs: Path
    procs: Processes

    def security(self) -> Security:
        """The certificates as explicit arguments (not from Dask's configuration)."""
        return Security(
            tls_ca_file=str(self.certs / "ca.pem"),
            tls_client_cert=str(self.certs / "tls.crt"),
            tls_client_key=str(self.certs / "tls.key"),
            require_encryption=True,
        )

    def https(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certs / "ca.pem"))


@pytest.fixture(scope="module")
def tls_cluster(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSCluster]:
    """`dask scheduler` + two `dask worker`s on 127.0.0.1, TLS only, from dask-tls.env."""
    tmp = tmp_path_factory.mktemp("tls-cluster")
    env = {**clean_env(tmp), **read_env_file(certs / "dask-tls.env")}
    port, dash = free_port(), free_port()
    address = f"tls://127.0.0.1:{port}"
    procs = Processes(tmp, env)
    cluster = TLSCluster(address, f"https://127.0.0.1:{dash}", env, certs, procs)
    dask_cli = str(BIN / "dask")
    try:
        procs.start(
            "dask-scheduler", dask_cli, "scheduler", "--protocol", "tls", "--host", "127.0.0.1",
            "--port", str(port), "--dashboard-address", f"127.0.0.1:{dash}",
        )  # fmt: skip
        for i in range(2):
            procs.start(
                f"dask-worker-{i}", dask_cli, "worker", address, "--host", "127.0.0.1",
                "--nthreads", "1", "--memory-limit", "2GiB", "--name", f"w{i}",
                "--no-dashboard",
            )  # fmt: skip
        http = httpx.Client(timeout=5, verify=cluster.https())

        def two_workers() -> bool:
            r = http.get(f"{cluster.dashboard}/json/counts.json")
            return r.status_code == 200 and r.json()["workers"] == 2

        procs.wait_for("TLS dask workers", two_workers, 90, "dask-scheduler")
        http.close()
        yield cluster
    finally:
        procs.stop_all()


@dataclass
class PrefectServer:
    api: str  # http://127.0.0.1:PORT/api
    env: dict[str, str]  # a client's environment, with the auth string


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """`prefect server start` on 127.0.0.1 with PREFECT_SERVER_API_AUTH_STRING set."""
    tmp = tmp_path_factory.mktemp("prefect-auth")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = clean_env(tmp)
    server_env = {
        **env,
        "PREFECT_SERVER_API_AUTH_STRING": AUTH,
        "PREFECT_SERVER_UI_ENABLED": "false",  # no UI build: a faster start
    }
    procs = Processes(tmp, server_env)
    try:
        procs.start(
            "prefect-server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
            "--port", str(port),
        )  # fmt: skip
        # The health check answers without credentials (for probes), nothing else does.
        procs.wait_for(
            "prefect server",
            lambda: httpx.get(f"{api}/health", timeout=5).status_code == 200,
            180,
            "prefect-server",
        )
        yield PrefectServer(api, {**env, "PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": AUTH})
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "china.png"
    iio.imwrite(path, np.ascontiguousarray(load_sample_image("china.jpg")[::2, ::2]))
    return path


@pytest.fixture(scope="module")
def plain_reference(photo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The photo segmented by the CLI on a plain local cluster: no TLS, no scheduler."""
    tmp = tmp_path_factory.mktemp("plain")
    out = tmp / "plain.zarr"
    done = subprocess.run(
        [str(BIN / "kmdist"), "segment", str(photo), "-k", str(K), "-o", str(out)],
        env=clean_env(tmp),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


# --------------------------------------------------------------------------------------
# Attacks on the TLS cluster
# --------------------------------------------------------------------------------------


def _clients(client: Client) -> set[str]:
    return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.clients)))


async def _connect(address: str, security: Security | None = None) -> None:
    """Connect as a Dask client would (on this thread's event loop: no loop thread)."""
    client = Client(address, security=security, asynchronous=True, timeout="5s")
    try:
        await client
    finally:
        await client.close()  # also after a refusal: nothing left for the collector


async def _tls_without_client_certificate(address: str, ca_file: str) -> None:
    """Speak TLS to the scheduler, trusting its authority, but present no certificate."""
    from distributed.comm import connect

    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False
    comm = await connect(address, timeout=5, ssl_context=context)
    try:
        await comm.write({"op": "identity", "reply": True})
        await asyncio.wait_for(comm.read(), 10)
    finally:
        comm.abort()


@pytest.mark.slow
def test_clients_and_workers_without_the_certificates_are_refused(
    tls_cluster: TLSCluster, other_certs: Path
) -> None:
    port = tls_cluster.address.rsplit(":", 1)[1]
    # The certificates as explicit arguments work: the cluster computes.
    with Client(tls_cluster.address, security=tls_cluster.security(), timeout="30s") as client:
        assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
        before = _clients(client)

        def refused(what: str, attempt: Any, error: type[Exception] = OSError) -> None:
            # OSError: distributed's CommClosedError and TimeoutError are OSErrors.
            start = time.monotonic()
            with pytest.raises(error):
                attempt()
                pytest.fail(f"{what}: connected")
            assert time.monotonic() - start < REFUSED_WITHIN, f"{what}: refused too slowly"

        # Plain TCP, as an attacker on the network would try first.
        refused("plain TCP", lambda: asyncio.run(_connect(f"tcp://127.0.0.1:{port}")))
        # TLS with no certificate to present: Dask's client does not even try...
        refused(
            "TLS, no certificates", lambda: asyncio.run(_connect(tls_cluster.address)), TypeError
        )
        # ... and a TLS client that tries anyway is cut off by the scheduler.
        ca = str(tls_cluster.certs / "ca.pem")
        refused(
            "TLS without a client certificate",
            lambda: asyncio.run(_tls_without_client_certificate(tls_cluster.address, ca)),
        )
        # Valid certificates of another cluster (another authority).
        rogue = Security(
            tls_ca_file=str(other_certs / "ca.pem"),
            tls_client_cert=str(other_certs / "tls.crt"),
            tls_client_key=str(other_certs / "tls.key"),
            require_encryption=True,
        )
        refused(
            "another cluster's certificates",
            lambda: asyncio.run(_connect(tls_cluster.address, rogue)),
        )
        # A worker with another cluster's certificates cannot join to receive tasks.
        rogue_env = {**tls_cluster.env, **read_env_file(other_certs / "dask-tls.env")}
        worker = subprocess.run(
            [str(BIN / "dask"), "worker", tls_cluster.address, "--host", "127.0.0.1",
             "--nthreads", "1", "--no-dashboard", "--no-nanny", "--death-timeout", "8"],
            env=rogue_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert worker.returncode != 0, worker.stdout + worker.stderr
        assert len(client.scheduler_info()["workers"]) == 2
        # None of the attempts registered a client with the scheduler, which refused
        # them in the TLS handshake: no certificate, an unknown authority.
        assert _clients(client) == before
        log = tls_cluster.procs.tail("dask-scheduler", 1000)
        assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in log, log
        assert "UNKNOWN_CA" in log, log
        # The dashboard is HTTPS: a plain HTTP request gets nothing.
        with pytest.raises(httpx.HTTPError):
            httpx.get(tls_cluster.dashboard.replace("https://", "http://") + "/health", timeout=5)


@pytest.mark.slow
def test_cli_on_the_tls_scheduler_gives_the_plain_local_clusters_labels(
    tls_cluster: TLSCluster, photo: Path, plain_reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tls.zarr"
    cmd = [str(BIN / "kmdist"), "segment", str(photo), "-k", str(K), "-o", str(out)]
    done = subprocess.run(
        [*cmd, "--scheduler", tls_cluster.address],
        env=tls_cluster.env,  # the TLS settings from Dask's configuration (environment)
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert_array_equal(labels(out, photo.stem), labels(plain_reference, photo.stem))
    # The dashboard link it prints is the HTTPS one, and answers (with the cluster's CA).
    link = re.search(r"Dask dashboard: (\S+)", done.stdout)
    assert link, done.stdout
    assert link.group(1) == f"{tls_cluster.dashboard}/status"
    page = httpx.get(link.group(1), verify=tls_cluster.https(), timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    # Without the TLS settings the same command is refused, and writes nothing.
    refused = tmp_path / "refused.zarr"
    plain_env = {k: v for k, v in tls_cluster.env.items() if not k.startswith("DASK_")}
    start = time.monotonic()
    done = subprocess.run(
        [str(BIN / "kmdist"), "segment", str(photo), "-k", str(K), "-o", str(refused),
         "--scheduler", tls_cluster.address.replace("tls://", "tcp://")],
        env=plain_env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    assert time.monotonic() - start < 90
    assert not refused.exists() or not kmdist.is_complete(refused, photo.stem)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["--threads", "--processes"])
def test_cli_with_the_tls_settings_runs_its_own_cluster_on_tls(
    tls_cluster: TLSCluster, photo: Path, plain_reference: Path, tmp_path: Path, kind: str
) -> None:
    # Encryption required by Dask's configuration: kmdist's own local cluster (no
    # --scheduler) speaks TLS between its parts, and serves its dashboard over HTTPS.
    out = tmp_path / "local.zarr"
    done = subprocess.run(
        [str(BIN / "kmdist"), "segment", str(photo), "-k", str(K), "-o", str(out), kind],
        env=tls_cluster.env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert_array_equal(labels(out, photo.stem), labels(plain_reference, photo.stem))
    assert re.search(r"Dask dashboard: https://127\.0\.0\.1:\d+/status", done.stdout)


@pytest.mark.slow
def test_flow_on_the_tls_scheduler_reports_to_an_authenticated_prefect(
    tls_cluster: TLSCluster,
    prefect_server: PrefectServer,
    photo: Path,
    plain_reference: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "flow.zarr"
    script = (
        "import sys\n"
        "from flows.segment import segment_image\n"
        "state = segment_image(sys.argv[1], sys.argv[2], k=int(sys.argv[3]),\n"
        "                      dask_address=sys.argv[4], return_state=True)\n"
        "print('STATE', state.type.value)\n"
    )
    env = {**prefect_server.env, **{k: v for k, v in tls_cluster.env.items() if "DASK_" in k}}
    done = subprocess.run(
        [sys.executable, "-c", script, str(photo), str(out), str(K), tls_cluster.address],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "STATE COMPLETED" in done.stdout, output
    assert_array_equal(labels(out, photo.stem), labels(plain_reference, photo.stem))
    assert f"Dask dashboard: {tls_cluster.dashboard}/status" in output
    # The run is recorded by the authenticated server (asked with the auth string).
    r = httpx.post(
        f"{prefect_server.api}/flow_runs/filter",
        json={"flows": {"name": {"any_": ["segment-image"]}}},
        auth=tuple(AUTH.split(":", 1)),  # type: ignore[arg-type]
        timeout=10,
    )
    assert r.status_code == 200
    assert [run["state_type"] for run in r.json()] == ["COMPLETED"]


@pytest.mark.slow
def test_prefect_server_with_an_auth_string_refuses_clients_without_it(
    prefect_server: PrefectServer,
) -> None:
    from prefect.client.orchestration import PrefectClient
    from prefect.exceptions import PrefectHTTPStatusError

    api = prefect_server.api
    user, password = AUTH.split(":", 1)
    with httpx.Client(timeout=10) as http:
        for method, path, body in [
            ("POST", "/flows/filter", {}),
            ("POST", "/deployments/filter", {}),
            ("GET", "/admin/settings", None),
        ]:
            for auth in (None, (user, "wrong"), ("", ""), (password, user)):
                r = http.request(method, f"{api}{path}", json=body, auth=auth)
                assert r.status_code == 401, (path, auth, r.status_code)
            r = http.request(method, f"{api}{path}", json=body, auth=(user, password))
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
        # Only the health check (for probes) answers without credentials.
        assert http.get(f"{api}/health").status_code == 200

    async def read_flows(auth_string: str | None) -> Any:
        async with PrefectClient(api, auth_string=auth_string) as client:
            return await client.read_flows()

    with pytest.raises(PrefectHTTPStatusError, match="401"):
        asyncio.run(read_flows(None))
    assert isinstance(asyncio.run(read_flows(AUTH)), list)


# --------------------------------------------------------------------------------------
# Static checks: compose
# --------------------------------------------------------------------------------------


def test_compose_publishes_ports_on_the_loopback_unless_told_otherwise() -> None:
    services = compose()["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert published, "compose publishes nothing: the test would prove nothing"
    for name, ports in published.items():
        for port in ports:
            host = published_host(port, {})
            assert is_loopback(host), f"{name} publishes {port!r} on {host or 'every interface'}"
            # The user opens it on purpose, with one setting.
            opened = published_host(port, {"KMDIST_PUBLISH_ADDRESS": "10.0.0.5"})
            assert opened == "10.0.0.5", (name, port)
        assert "network_mode" not in services[name]  # host networking would bypass this


def test_compose_has_no_default_secret_and_says_which_to_set() -> None:
    services = compose()["services"]
    required: set[str] = set()
    for name, service in services.items():
        raw = service.get("environment") or {}
        for key, value in raw.items():
            text = str(value)
            try:
                interpolated = compose_value(text, {})
            except Required as missing:
                required.add(missing.name)
                assert missing.name in missing.message, (name, key, missing.message)
                continue
            assert not SECRET_NAME.search(key), f"{name}: {key} has a value without being set"
            # No credentials inside URLs either (postgresql://user:password@host).
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", interpolated), (name, key)
    assert {"POSTGRES_PASSWORD", "PREFECT_API_AUTH_STRING"} <= required
    # Set, the values reach their users.
    env = {"POSTGRES_PASSWORD": "pw-123", "PREFECT_API_AUTH_STRING": "admin:pw-456"}
    server = service_env(services["prefect-server"], env)
    assert ":pw-123@postgres:" in server["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert service_env(services["postgres"], env)["POSTGRES_PASSWORD"] == "pw-123"


def test_compose_prefect_api_needs_the_auth_string_beyond_the_loopback() -> None:
    services = compose()["services"]
    env = {"POSTGRES_PASSWORD": "x", "PREFECT_API_AUTH_STRING": "admin:secret"}
    server = services["prefect-server"]
    command = server["command"]
    host = command[command.index("--host") + 1] if "--host" in command else "127.0.0.1"
    if not is_loopback(host):
        auth = service_env(server, env).get("PREFECT_SERVER_API_AUTH_STRING")
        assert auth == "admin:secret", f"the Prefect API listens on {host} without auth"
    # Every Prefect client of the stack sends the same string.
    for name, service in services.items():
        senv = service_env(service, env)
        if "PREFECT_API_URL" in senv:
            assert senv.get("PREFECT_API_AUTH_STRING") == "admin:secret", name


def _certs_mount(service: dict[str, Any], env: dict[str, str]) -> str:
    """Where a service mounts the certificates: read-only, never created empty."""
    for volume in service.get("volumes", []):
        if isinstance(volume, dict) and volume.get("target") == "/certs":
            assert volume["type"] == "bind" and volume.get("read_only") is True
            assert volume.get("bind", {}).get("create_host_path") is False
            assert compose_value(volume["source"], env)
            return str(volume["target"])
    raise AssertionError(f"no certificates mounted: {service.get('command')}")


def test_compose_dask_processes_speak_tls_only() -> None:
    services = compose()["services"]
    env = {"POSTGRES_PASSWORD": "x", "PREFECT_API_AUTH_STRING": "a:b"}
    dask_users = {
        name
        for name, s in services.items()
        if (s.get("command") or [""])[0] == "dask"
        or "DASK_SCHEDULER_ADDRESS" in (s.get("environment") or {})
    }
    assert dask_users == {"dask-scheduler", "dask-worker", "prefect-worker"}
    for name in dask_users:
        service = services[name]
        assert_tls_only(service_env(service, env), _certs_mount(service, env), name)
    scheduler = services["dask-scheduler"]["command"]
    assert scheduler[scheduler.index("--protocol") + 1] == "tls"
    worker = [compose_value(w, {}) for w in services["dask-worker"]["command"]]
    assert worker[2].startswith("tls://dask-scheduler:")
    flow_env = service_env(services["prefect-worker"], env)
    assert flow_env["DASK_SCHEDULER_ADDRESS"].startswith("tls://")
    assert flow_env["DASK_DISTRIBUTED__DASHBOARD__LINK"].startswith("https://")
    # The certificates and compose's passwords stay out of the image and of git.
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert {"deploy/certs/", "deploy/.env"} <= set(ignored)
    assert {"certs/", ".env"} <= set((DEPLOY / ".gitignore").read_text().splitlines())


# --------------------------------------------------------------------------------------
# Static checks: Kubernetes
# --------------------------------------------------------------------------------------


def k8s_documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((DEPLOY / "k8s" / resource).read_text()) if d]
    return docs


def base_job_template() -> dict[str, Any]:
    return dict(json.loads((DEPLOY / "k8s" / "base-job-template.json").read_text()))


def pod_specs() -> dict[str, dict[str, Any]]:
    """Every pod spec of the manifests and of the work pool's job template, by name."""
    found = {}
    for doc in k8s_documents():
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "DaskCluster":
            found[f"{name}/scheduler"] = doc["spec"]["scheduler"]["spec"]
            found[f"{name}/worker"] = doc["spec"]["worker"]["spec"]
        elif doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            found[name] = doc["spec"]["template"]["spec"]
    job = base_job_template()["job_configuration"]["job_manifest"]
    found["flow-run"] = job["spec"]["template"]["spec"]
    return found


def _template_default(value: Any) -> Any:
    """A base-job-template placeholder replaced by its variable's default."""
    variables = base_job_template()["variables"]["properties"]
    match = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", str(value))
    return variables[match.group(1)]["default"] if match else value


def _tls_secret_mount(pod: dict[str, Any], container: dict[str, Any]) -> str:
    """The mount path of the pod's volume from the Secret kmdist-dask-tls."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret and _template_default(secret["secretName"]) == "kmdist-dask-tls":
            assert mount.get("readOnly") is True
            assert secret.get("defaultMode", 0o644) & 0o007 == 0  # not world-readable
            return str(mount["mountPath"])
    raise AssertionError(f"{container['name']}: the TLS Secret is not mounted")


def test_kubernetes_dask_speaks_tls_only() -> None:
    docs = k8s_documents()
    settings = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    address = settings["DASK_SCHEDULER_ADDRESS"]
    assert address.startswith("tls://"), f"flow runs connect to {address}"
    (cluster,) = [d for d in docs if d["kind"] == "DaskCluster"]
    pods = pod_specs()
    dask_pods = {n: p for n, p in pods.items() if n.startswith("DaskCluster/") or n == "flow-run"}
    assert len(dask_pods) == 3
    for name, pod in dask_pods.items():
        (container,) = pod["containers"]
        refs = [
            e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e
        ]
        assert [_template_default(r) for r in refs] == ["kmdist-settings"], name
        assert_tls_only(settings, _tls_secret_mount(pod, container), name)
    (scheduler,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    assert scheduler["args"][scheduler["args"].index("--protocol") + 1] == "tls"
    for probe in ("readinessProbe", "livenessProbe"):
        assert scheduler[probe]["httpGet"]["scheme"] == "HTTPS"
    # The operator hands workers a tcp:// address; they are given the TLS one.
    (worker,) = cluster["spec"]["worker"]["spec"]["containers"]
    assert worker["args"][2] == settings["DASK_SCHEDULER_ADDRESS"]
    assert cluster["spec"]["scheduler"]["service"]["type"] == "ClusterIP"


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # matchExpressions: not checked here
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_kubernetes_network_policy_admits_only_kmdists_pods_to_the_scheduler() -> None:
    docs = k8s_documents()
    (cluster,) = [d for d in docs if d["kind"] == "DaskCluster"]
    name = cluster["metadata"]["name"]
    # The labels the operator gives the cluster's pods, and the flow runs' pods.
    scheduler = {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    worker = {"dask.org/cluster-name": name, "dask.org/component": "worker"}
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    guarding = [p for p in policies if _matches(p["spec"]["podSelector"], scheduler)]
    assert guarding, "no NetworkPolicy selects the scheduler: any pod may connect"
    job = base_job_template()["job_configuration"]["job_manifest"]
    flow_run = job["spec"]["template"].get("metadata", {}).get("labels", {})
    assert flow_run, "flow-run pods carry no label a policy could admit"
    prefect_worker = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "prefect-worker"
    )["spec"]["template"]["metadata"]["labels"]
    for policy in guarding:
        spec = policy["spec"]
        assert "Ingress" in spec.get("policyTypes", ["Ingress"])
        assert _matches(spec["podSelector"], worker)  # workers run code too
        for rule in spec.get("ingress", []):
            sources = rule.get("from")
            assert sources, f"{policy['metadata']['name']}: a rule admits every source"
            for source in sources:
                # Pods of this namespace only: no other namespace, no address block.
                assert set(source) == {"podSelector"}, source
                assert source["podSelector"].get("matchLabels"), "an empty selector: every pod"

    def admitted(labels: dict[str, str]) -> bool:
        return any(
            _matches(source["podSelector"], labels)
            for policy in guarding
            for rule in policy["spec"].get("ingress", [])
            for source in rule["from"]
        )

    assert admitted(worker) and admitted(scheduler) and admitted(flow_run)
    assert not admitted(prefect_worker)  # it starts flow runs, it does not compute
    assert not admitted({"app": "anything-else"})


def _containers() -> dict[str, dict[str, Any]]:
    return {
        f"{pod_name}/{c['name']}": c
        for pod_name, pod in pod_specs().items()
        for c in pod.get("containers", [])
    }


def test_kubernetes_secrets_come_from_secrets_never_from_manifests() -> None:
    docs = k8s_documents()
    assert not [d for d in docs if d["kind"] == "Secret"], "a Secret with its value, in git"
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            for key, value in doc["data"].items():
                assert not SECRET_NAME.search(key), f"{key} in a ConfigMap"
                assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), key
    for name, container in _containers().items():
        for item in container.get("env", []) if isinstance(container.get("env"), list) else []:
            if SECRET_NAME.search(item["name"]):
                assert "value" not in item, f"{name}: {item['name']} is a literal"
                assert "secretKeyRef" in item["valueFrom"], f"{name}: {item['name']}"
    # The deployment's job variables add environment variables: no credentials there.
    deployments = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())["deployments"]
    for dep in deployments:
        env = dep.get("work_pool", {}).get("job_variables", {}).get("env", {})
        assert not [k for k in env if SECRET_NAME.search(k)], dep["name"]
    # The Prefect worker's credentials: from the Secrets the README creates.
    (worker,) = [c for n, c in _containers().items() if n.startswith("Deployment/prefect-worker")]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in worker["env"] if "valueFrom" in e}
    assert refs.get("PREFECT_API_AUTH_STRING") == {
        "name": "prefect-basic-auth",
        "key": "auth-string",  # the key the prefect-server chart's existingSecret uses
        "optional": True,
    }


# --------------------------------------------------------------------------------------
# Static checks: SLURM, README
# --------------------------------------------------------------------------------------


def test_slurm_recipe_speaks_tls_and_refuses_to_start_without_certificates(
    tmp_path: Path,
) -> None:
    config = yaml.safe_load((DEPLOY / "slurm" / "jobqueue.yaml").read_text())["jobqueue"]["slurm"]
    # The scheduler (in kmdist_slurm.py's process) listens on TLS only ...
    assert config["scheduler-options"].get("protocol") == "tls", "the scheduler may listen on TCP"
    # ... and every worker job reads the TLS settings before its worker starts.
    assert any("dask-tls.env" in line for line in config["job-script-prologue"])
    # The batch script reads them too, and stops with a message when they are missing.
    env = {
        **clean_env(tmp_path),
        "KMDIST_VENV": str(BIN.parent),
        "KMDIST_TLS": str(tmp_path / "no-certs"),
        "SLURM_SUBMIT_DIR": str(ROOT),
    }
    done = subprocess.run(
        ["bash", str(DEPLOY / "slurm" / "segment.sbatch"), "in/", "out.zarr"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "deploy/make-certs.sh" in done.stderr


def test_readme_says_what_is_closed_and_how_to_open_it() -> None:
    text = (DEPLOY / "README.md").read_text()
    match = re.search(r"^## Security\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "deploy/README.md has no Security section"
    section = match.group(1)
    for needed in (
        "deploy/make-certs.sh",
        "KMDIST_PUBLISH_ADDRESS",
        "POSTGRES_PASSWORD",
        "PREFECT_API_AUTH_STRING",
        "NetworkPolicy",
        "require-encryption",
    ):
        assert needed in section, f"the Security section does not mention {needed}"
