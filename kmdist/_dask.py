"""The Dask client kmdist computes on: an existing scheduler, or a local cluster.

The address comes from the caller, else from ``DASK_SCHEDULER_ADDRESS``; without either,
a local cluster sized to the machine is started and closed with the context: its
scheduler in this process, its workers in processes started as distributed's
`SubprocessCluster` starts them (``python -m dask spec``, which never runs the caller's
script), or threads of this process. Dask's own log lines are kept to warnings that
matter unless ``verbose`` (`quiet_dask_logs`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import dask
from distributed import Client, LocalCluster, Scheduler, SpecCluster, default_client
from distributed.deploy.subprocess import Subprocess
from distributed.security import Security

from kmdist._exit import skip_final_collection

__all__ = [
    "active_client",
    "dashboard_link",
    "dask_client",
    "dask_client_soon",
    "quiet_dask_logs",
    "scheduler_address",
]

ENV_ADDRESS = "DASK_SCHEDULER_ADDRESS"

# glibc settings for worker processes, in the environment they start with (glibc reads
# them as a process starts, before any Python runs). Dask's default, MALLOC_TRIM_THRESHOLD_=65536,
# returns freed memory to the OS at once but also fixes glibc's mmap threshold at 128 KiB,
# so every chunk-sized array is a fresh mmap whose pages fault in again: a 1024 x 1024
# RGB chunk read in 6.9 ms instead of 3.4 ms, its histogram in 14 ms instead of 9 ms.
# At 16 MiB, chunk-sized arrays reuse heap memory while shard-sized blocks are still
# mapped and returned: 1 GP ran in 35-40 s instead of 66 s, peak memory 1.6 GB instead of
# 1.28 GB (bench/gigapixel.py; unset, glibc kept 2.04 GB).
_WORKER_MALLOC = {
    "MALLOC_TRIM_THRESHOLD_": str(16 << 20),
    "MALLOC_MMAP_THRESHOLD_": str(16 << 20),
}


# Dask's debugging logs each keep their last 1,000 entries: every message between the
# scheduler, the client and each worker (a batch's task with its image refs, its results),
# and on each worker a profile tree a second. Filling up over a run's first 1,000 s, they
# grew a 100,000-thumbnail run's memory by a quarter (0.76 to 0.97 GB; bench/archive_scale.py).
# A tenth as many entries, and profiles merged over 10 s, keep the dashboard's profile
# covering the same 1,000 s. Applied only where the user's configuration keeps Dask's default.
_SHORT_LOGS: dict[str, Any] = {
    "distributed.admin.low-level-log-length": 100,
    "distributed.worker.profile.cycle": "10s",
}


def _short_logs() -> dict[str, Any]:
    """`_SHORT_LOGS`, less the settings the user's Dask configuration sets otherwise."""
    defaults = dask.config.merge(*dask.config.defaults)
    return {
        key: value
        for key, value in _SHORT_LOGS.items()
        if dask.config.get(key, None) == dask.config.get(key, None, config=defaults)
    }


# Workers import kmdist's pipeline as they start, and worker processes this module, whose
# `dask_setup` quiets their logs as the client's are (threads share the client's).
_PRELOAD = ("kmdist.pipeline._batch", "kmdist._dask")

# Dask's records that kmdist's own output says better (a task's error is the image's
# result line) or that are routine on a busy machine: without `verbose` they go to the
# `kmdist._dask` logger at DEBUG instead, where a debug log still finds them.
_ROUTINE = {
    # A heartbeat in flight as the cluster shuts down finds the scheduler gone; a run
    # that really loses its scheduler fails on the client side with its own error.
    "distributed.worker": (
        "Compute Failed",
        "Failed to communicate with scheduler during heartbeat",
    ),
    "distributed.core": ("Event loop was unresponsive",),
    "distributed.gc": ("full garbage collections took",),
}
# Passed to worker processes in the configuration their Nanny gives them.
_VERBOSE_KEY = "kmdist.dask-verbose"
# A worker process's `distributed` log level, from its environment as it starts: Dask
# sets its loggers up as it is imported, before any preload runs.
_LOG_ENV = "DASK_LOGGING__DISTRIBUTED"

_log = logging.getLogger(__name__)

# Where a local cluster's dashboard listens unless the caller says otherwise.
DEFAULT_DASHBOARD = "127.0.0.1:8787"


def active_client() -> Client | None:
    """Return the distributed Client computations go to now, or None (local schedulers)."""
    try:
        return default_client()
    except ValueError:
        return None


def scheduler_address(address: str | None = None) -> str | None:
    """Return the scheduler to use: `address`, else ``$DASK_SCHEDULER_ADDRESS``, else None."""
    return address or os.environ.get(ENV_ADDRESS) or None


class _Demote(logging.Filter):
    """Re-log records that start with one of `prefixes` at DEBUG on kmdist's logger."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.prefixes):
            return True
        _log.debug("%s: %s", record.name, message)
        return False


def quiet_dask_logs(verbose: bool = False) -> Callable[[], None]:
    """Keep Dask's log lines in this process to warnings that matter, unless `verbose`.

    Without `verbose`, the ``distributed`` loggers pass warnings and errors only (not
    the start-up, connection and shutdown lines), and `_ROUTINE` records (a worker's
    "Compute Failed" block with its traceback, a heartbeat lost as the cluster shuts
    down, unresponsive event loops, slow garbage collections) are re-logged at DEBUG on
    ``kmdist._dask``. With `verbose`, Dask's logging is left as it is. Returns a function
    that puts the previous state back.

    Parameters
    ----------
    verbose : bool, default=False
        Show Dask's own log lines as Dask configures them.

    Returns
    -------
    callable
        Restores the levels and filters changed here.
    """
    if verbose:
        return lambda: None
    root = logging.getLogger("distributed")
    level = root.level
    if root.getEffectiveLevel() < logging.WARNING:
        root.setLevel(logging.WARNING)
    demoted = [(logging.getLogger(name), _Demote(p)) for name, p in _ROUTINE.items()]
    for logger, demote in demoted:
        logger.addFilter(demote)

    def restore() -> None:
        root.setLevel(level)
        for logger, demote in demoted:
            logger.removeFilter(demote)

    return restore


def dask_setup(worker: object) -> None:
    """Worker preload hook: quiet a local worker process's logs as its client's are."""
    quiet_dask_logs(bool(dask.config.get(_VERBOSE_KEY, False)))


def dask_teardown(worker: object) -> None:
    """Worker preload hook, as the worker closes: its process exits without a last GC.

    A Nanny that closes or restarts its worker waits for the worker process to exit;
    each spent 0.7 s of it in the interpreter's last collections (`skip_final_collection`).
    Only in a process a Nanny started for this one worker, which ends with it: a worker
    in a longer-lived process (threads, ``--no-nanny``) leaves its process's collector
    alone.
    """
    if getattr(worker, "nanny", None) is not None and multiprocessing.parent_process():
        skip_final_collection()


@contextmanager
def dask_client(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    dashboard_address: str = DEFAULT_DASHBOARD,
    processes: bool | None = None,
    verbose: bool = False,
) -> Iterator[Client]:
    """Connect to a Dask scheduler, or run a local cluster, for the duration of a block.

    Parameters
    ----------
    address : str, optional
        Scheduler address such as ``tcp://10.0.0.5:8786``; defaults to
        ``$DASK_SCHEDULER_ADDRESS``. When neither is set a local cluster starts.
    n_workers : int, optional
        Local workers; one per core by default.
    threads_per_worker : int, default=1
        Threads per local worker; NumPy kernels release the GIL, but one thread
        per process keeps memory per worker predictable.
    memory_limit : str, float or None, default='auto'
        Per-worker memory limit of the local cluster.
    dashboard_address : str, default='127.0.0.1:8787'
        Where the local cluster's dashboard listens (a free port is used if taken): the
        loopback interface, as its scheduler and workers do, by default.
    processes : bool, optional
        Local workers as processes (True) or as threads of this process (False); by
        default processes (threads on Windows, where distributed cannot start them as
        below). Worker processes are started as distributed's `SubprocessCluster` starts
        its workers (``python -m dask spec``, a Nanny and its worker process): they never
        run the caller's script, so a script may call this at its top level, without an
        ``if __name__ == "__main__":`` guard.
    verbose : bool, default=False
        Show Dask's own log lines (start-up, connections, a failed task's traceback);
        by default only warnings that matter (`quiet_dask_logs`).

    Yields
    ------
    distributed.Client
        The client, set as the default for Dask computations inside the block.

    Notes
    -----
    For the block, Dask's debugging logs keep 100 entries and worker profiles are merged
    over 10 s (``distributed.admin.low-level-log-length``,
    ``distributed.worker.profile.cycle``), so memory does not grow over a long run; a
    value the user's Dask configuration sets for either key is kept.
    """
    with dask_client_soon(
        address,
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit,
        dashboard_address=dashboard_address,
        processes=processes,
        verbose=verbose,
    ) as client:
        yield client()


class _NannyProcess(Subprocess):
    """A worker process: a Nanny run by ``python -m dask spec``, with its own environment.

    What distributed's `SubprocessCluster` starts for each worker (`SubprocessWorker`),
    given an environment: `env` is added to this process's for the child only, where
    glibc and Dask read it as they start. The Nanny spawns its worker process from
    ``dask spec``, whose main module is Dask's, so neither runs the caller's script.
    Closing kills both, as `SubprocessWorker`'s close does (after the scheduler has
    retired the worker).
    """

    def __init__(
        self, scheduler: str, name: int, nanny: dict[str, Any], env: dict[str, str]
    ) -> None:
        self.scheduler = scheduler
        self.name = name
        self.nanny = nanny
        self.env = env
        super().__init__()  # type: ignore[no-untyped-call]

    async def _start(self) -> None:
        spec = {"cls": "distributed.Nanny", "opts": {**self.nanny, "name": self.name}}
        cmd = [sys.executable, "-m", "dask", "spec", self.scheduler, "--spec", json.dumps(spec)]
        self.process = await asyncio.create_subprocess_exec(*cmd, env={**os.environ, **self.env})


# How long the worker processes may take to join their scheduler; on a busy machine
# starting two took up to 10 s.
_JOIN_TIMEOUT = 120.0


def _await_workers(cluster: SpecCluster, n_workers: int) -> None:
    """Wait until `n_workers` have joined; fail at once when a worker process has exited."""
    deadline = time.monotonic() + _JOIN_TIMEOUT
    while len(cluster.scheduler_info.get("workers", ())) < n_workers:
        for name, worker in cluster.workers.items():
            process = getattr(worker, "process", None)
            if process is not None and process.returncode is not None:
                raise RuntimeError(
                    f"worker process {name} of the local cluster exited with code "
                    f"{process.returncode} as it started (its error is above)"
                )
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{n_workers} worker processes did not join the local cluster within "
                f"{_JOIN_TIMEOUT:.0f} s"
            )
        time.sleep(0.02)


def _changed_config() -> dict[str, Any]:
    """Dask's settings in this process that differ from Dask's defaults, as dotted keys.

    What a LocalCluster's workers received from their Nanny: settings made in the
    caller's files, environment or ``dask.config.set`` reach the worker processes too.
    Dotted keys, because the Nanny merges them into the worker's configuration one
    top-level key at a time. Values that JSON cannot carry (a function, say) stay here.
    """
    defaults = dask.config.merge(*dask.config.defaults)
    changed: dict[str, Any] = {}

    def walk(now: Any, default: Any, key: str) -> None:
        if isinstance(now, dict) and isinstance(default, dict):
            for k, v in now.items():
                walk(v, default.get(k), f"{key}.{k}" if key else str(k))
            return
        if now == default:
            return
        try:
            json.dumps(now)
        except (TypeError, ValueError):
            return
        changed[key] = now

    walk(dask.config.config, defaults, "")
    return changed


def _caller_path() -> str:
    """Return the caller's import path beyond the interpreter's own, for worker processes.

    Spawned workers used to copy ``sys.path``; a ``dask spec`` process builds its own, so
    the caller's entries (its script's folder, a path added at run time) are given to it
    in ``PYTHONPATH``: a task may refer to a module beside the caller's script.
    """
    own = (sys.prefix, sys.base_prefix)
    return os.pathsep.join(p for p in sys.path if p and not p.startswith(own))


def _security() -> Security:
    """Return the security Dask's configuration asks for (certificates, encryption)."""
    return Security()


def _process_cluster(
    n_workers: int,
    threads_per_worker: int,
    memory_limit: str | float | None,
    dashboard_address: str,
    verbose: bool,
) -> SpecCluster:
    """Start a scheduler in this process (as a LocalCluster's) and `_NannyProcess` workers."""
    security = _security()
    # With `distributed.comm.require-encryption`, TLS between every part of the cluster:
    # the worker processes read the same configuration (files, environment) as they start.
    protocol = "tls" if security.require_encryption else "tcp"
    nanny: dict[str, Any] = {
        "host": "127.0.0.1",
        "protocol": protocol,
        "nthreads": threads_per_worker,
        "memory_limit": memory_limit,
        # Workers import kmdist's pipeline (Dask arrays, Zarr, numba kernels) as they
        # start, not in their first task: with `dask_client_soon` this overlaps the
        # caller's own imports.
        "preload": [*dask.config.get("distributed.worker.preload", []), *_PRELOAD],
        # The configuration of this process that the workers need, explicitly: they
        # read Dask's from their own files and environment, as a remote cluster's do.
        "config": {
            **_changed_config(),
            _VERBOSE_KEY: verbose,
            **{key: dask.config.get(key) for key in _SHORT_LOGS},
        },
    }
    env = {**_WORKER_MALLOC, _LOG_ENV: "info" if verbose else "warning"}
    if path := _caller_path():
        env["PYTHONPATH"] = path
    scheduler = {
        "cls": Scheduler,
        "options": {
            "host": "127.0.0.1",
            "protocol": protocol,
            "security": security,
            "dashboard": True,
            "dashboard_address": dashboard_address,
        },
    }
    workers = {
        i: {"cls": _NannyProcess, "options": {"nanny": nanny, "env": env}} for i in range(n_workers)
    }
    # The levels are `quiet_dask_logs`'s: the cluster's own silencing would hide the
    # warnings that matter too.
    cluster = SpecCluster(workers, scheduler, silence_logs=False, name="kmdist", security=security)
    try:
        _await_workers(cluster, n_workers)
    except BaseException:
        cluster.close()
        raise
    return cluster


def _dashboard_address(address: str, verbose: bool) -> str:
    """`address`, or the same host on any free port when it is the default and taken.

    Dask would take another port too, with a four-line warning beside kmdist's own line
    that names the dashboard's real address (`dashboard_link`). An address the caller
    chose, and any with `verbose`, is left to Dask and its warning.
    """
    if verbose or address != DEFAULT_DASHBOARD:
        return address
    host, _, port = address.rpartition(":")
    with socket.socket() as probe:
        # As Tornado binds its listening socket: a port held only by a closed
        # connection's TIME_WAIT is free to it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError:
            return f"{host}:0"
    return address


def _local_cluster(
    n_workers: int | None,
    threads_per_worker: int,
    memory_limit: str | float | None,
    dashboard_address: str,
    processes: bool,
    verbose: bool,
) -> SpecCluster:
    workers = n_workers or max(1, os.cpu_count() or 1)
    dashboard_address = _dashboard_address(dashboard_address, verbose)
    if processes:
        return _process_cluster(
            workers, threads_per_worker, memory_limit, dashboard_address, verbose
        )
    # One worker whose threads share its memory: no transfers between workers. TCP (or
    # TLS where Dask's configuration requires encryption) on the loopback, not inproc://,
    # whose dashboard link names another interface than the dashboard listens on.
    security = _security()
    return LocalCluster(
        n_workers=1,
        threads_per_worker=workers * threads_per_worker,
        processes=False,
        host=f"{'tls' if security.require_encryption else 'tcp'}://127.0.0.1",
        security=security,
        memory_limit=memory_limit,
        dashboard_address=dashboard_address,
        silence_logs=False,
        preload=[*dask.config.get("distributed.worker.preload", []), _PRELOAD[0]],
    )


@contextmanager
def dask_client_soon(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    dashboard_address: str = DEFAULT_DASHBOARD,
    processes: bool | None = None,
    verbose: bool = False,
) -> Iterator[Callable[[], Client]]:
    """`dask_client`, with a local cluster started in a background thread meanwhile.

    Takes `dask_client`'s parameters. Yields a function that waits for the cluster (its
    workers joined) and returns the client (made in the calling thread: a Client belongs
    to the thread that enters it). Starting a local cluster (worker processes that
    import kmdist) takes one to two seconds; the caller's own imports and input listing
    run meanwhile. Closed with the block.
    """
    target = scheduler_address(address)
    restore = quiet_dask_logs(verbose)
    # Set for the whole block: the scheduler's message logs start as workers join, also
    # when one is restarted; the Nanny copies the configuration into its worker.
    short_logs = dask.config.set(_short_logs())
    starting: Future[SpecCluster] | None = None
    clients: list[Client] = []
    try:
        if target is None:
            spawn = sys.platform != "win32" if processes is None else processes
            pool = ThreadPoolExecutor(1, thread_name_prefix="kmdist-cluster-start")
            starting = pool.submit(
                _local_cluster,
                n_workers,
                threads_per_worker,
                memory_limit,
                dashboard_address,
                spawn,
                verbose,
            )
            pool.shutdown(wait=False)
        with ExitStack() as stack:

            def client() -> Client:
                # An existing scheduler is connected to only when asked: a block that
                # fails first (bad inputs) does not wait for it.
                if not clients:
                    where = target if starting is None else starting.result()
                    clients.append(stack.enter_context(Client(where, timeout="30s")))
                return clients[0]

            yield client
    finally:
        try:
            # After the client, as `dask_client` closes them. A cluster that failed to
            # start has nothing to close; its error reached the block from `client()`.
            if starting is not None and starting.exception() is None:
                cluster = starting.result()
                try:
                    _close_dashboard(cluster)
                finally:
                    cluster.close()
        finally:
            short_logs.__exit__(None, None, None)
            restore()


async def _stop_dashboard(server: Any) -> None:
    server.stop()  # accept no new requests
    await server.close_all_connections()


def _close_dashboard(cluster: SpecCluster) -> None:
    """Stop a local cluster's dashboard server before the cluster closes.

    Dask stops the dashboard's Bokeh application first and its HTTP server after: a
    browser tab open on the dashboard meanwhile makes requests that the stopping
    application answers with a 14-line "Bokeh Tornado application is stopping"
    traceback. Closed here first (Tornado's `HTTPServer.stop` and
    `close_all_connections`), the server takes no request while Bokeh stops.
    """
    server = getattr(cluster.scheduler, "services", {}).get("dashboard")
    if server is not None:
        cluster.sync(_stop_dashboard, server)


def dashboard_link(client: Client) -> str:
    """Return the dashboard URL of the scheduler `client` is connected to."""
    link: str = client.dashboard_link
    return link
