"""The Dask client kmdist computes on: an existing scheduler, or a LocalCluster.

The address comes from the caller, else from ``DASK_SCHEDULER_ADDRESS``; without either,
a LocalCluster sized to the machine is started and closed with the context: worker
processes, or threads of this process for a script whose call is not under its main
guard (`spawn_safe`). Dask's own log lines are kept to warnings that
matter unless ``verbose`` (`quiet_dask_logs`).
"""

from __future__ import annotations

import ast
import logging
import multiprocessing.spawn
import os
import pickle
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import dask
from distributed import Client, LocalCluster, default_client

from kmdist._exit import skip_final_collection

__all__ = [
    "active_client",
    "dashboard_link",
    "dask_client",
    "dask_client_soon",
    "quiet_dask_logs",
    "scheduler_address",
    "spawn_safe",
]

ENV_ADDRESS = "DASK_SCHEDULER_ADDRESS"

# glibc settings for LocalCluster workers. Dask's default, MALLOC_TRIM_THRESHOLD_=65536,
# returns freed memory to the OS at once but also fixes glibc's mmap threshold at 128 KiB,
# so every chunk-sized array is a fresh mmap whose pages fault in again: a 1024 x 1024
# RGB chunk read in 6.9 ms instead of 3.4 ms, its histogram in 14 ms instead of 9 ms.
# At 16 MiB, chunk-sized arrays reuse heap memory while shard-sized blocks are still
# mapped and returned: 1 GP ran in 35-40 s instead of 66 s, peak memory 1.6 GB instead of
# 1.28 GB (bench/gigapixel.py; unset, glibc kept 2.04 GB).
_WORKER_MALLOC = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": str(16 << 20),
    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": str(16 << 20),
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
# Passed to LocalCluster workers through Dask's configuration, which their Nanny copies.
_VERBOSE_KEY = "kmdist.dask-verbose"
# A worker process's `distributed` log level, from its environment as it starts.
_LOG_ENV = "distributed.nanny.pre-spawn-environ.DASK_LOGGING__DISTRIBUTED"

_log = logging.getLogger(__name__)


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
    """Worker preload hook: quiet a LocalCluster worker's logs as its client's are."""
    quiet_dask_logs(bool(dask.config.get(_VERBOSE_KEY, False)))


def dask_teardown(worker: object) -> None:
    """Worker preload hook, as the worker closes: its process exits without a last GC.

    A LocalCluster's close waits for every worker process to exit; each spent 0.7 s
    of it in the interpreter's last collections (`skip_final_collection`). Only in a
    process a Nanny started for this one worker, which ends with it: a worker in a
    longer-lived process (threads, ``--no-nanny``) leaves its process's collector alone.
    """
    if getattr(worker, "nanny", None) is not None and multiprocessing.parent_process():
        skip_final_collection()


def _is_main_guard(node: ast.AST) -> bool:
    """Whether `node` is ``if __name__ == "__main__":`` (either operand order)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    texts = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and texts == ["__main__"]


def _main_module_frame() -> FrameType | None:
    """Return the frame running the ``__main__`` module's top-level code, if any."""
    main = sys.modules.get("__main__")
    frames = sys._current_frames()
    # The main thread first: scripts run there, and the caller may be another thread.
    order = [threading.main_thread().ident, threading.get_ident(), *frames]
    for ident in order:
        frame = frames.get(ident) if ident is not None else None
        while frame is not None:
            if frame.f_code.co_name == "<module>" and frame.f_globals is vars(main):
                return frame
            frame = frame.f_back
    return None


def spawn_safe() -> bool:
    """Whether worker processes may be spawned without re-running the caller's code.

    Spawned processes (Dask's Nanny uses multiprocessing's spawn) run the main module
    again, under the name ``__mp_main__``, before they unpickle their work, unless
    `_workers_skip_main` spares them (it keeps spawn's behaviour when Dask's
    configuration refers to ``__main__``). That is harmless for a REPL, a notebook,
    ``python -c``, a package's ``__main__`` module, and a script whose call is under
    ``if __name__ == "__main__":``; a script that calls a flow or `dask_client` at its
    top level would start the same work again in every worker that does run it. False
    then, and when the main module's current line cannot be found: threads stay the
    conservative choice for such scripts.
    """
    main = sys.modules.get("__main__")
    if main is None:
        return True
    # What multiprocessing.spawn.get_preparation_data and prepare do with __main__.
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None and (name == "__main__" or name.endswith(".__main__")):
        return True
    path = getattr(main, "__file__", None)
    if path is None or (name is None and Path(path).stem == "ipython"):
        return True
    frame = _main_module_frame()
    if frame is None:  # its top-level code has run: all of it would run again
        return False
    try:
        tree = ast.parse(Path(frame.f_code.co_filename).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return False
    line = frame.f_lineno
    return any(
        isinstance(node, ast.If)
        and _is_main_guard(node)
        and node.body[0].lineno <= line <= (node.body[-1].end_lineno or 0)
        for node in ast.walk(tree)
    )


@contextmanager
def dask_client(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    dashboard_address: str = "127.0.0.1:8787",
    processes: bool | None = None,
    verbose: bool = False,
) -> Iterator[Client]:
    """Connect to a Dask scheduler, or run a LocalCluster, for the duration of a block.

    Parameters
    ----------
    address : str, optional
        Scheduler address such as ``tcp://10.0.0.5:8786``; defaults to
        ``$DASK_SCHEDULER_ADDRESS``. When neither is set a LocalCluster starts.
    n_workers : int, optional
        LocalCluster workers; one per core by default.
    threads_per_worker : int, default=1
        Threads per LocalCluster worker; NumPy kernels release the GIL, but one thread
        per process keeps memory per worker predictable.
    memory_limit : str, float or None, default='auto'
        Per-worker memory limit of the LocalCluster.
    dashboard_address : str, default='127.0.0.1:8787'
        Where the LocalCluster's dashboard listens (a free port is used if taken): the
        loopback interface, as the LocalCluster's scheduler and workers do, by default.
    processes : bool, optional
        LocalCluster workers as processes (True) or as threads of this process (False).
        By default processes where `spawn_safe`, else threads.
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


# The name distributed's Nanny gives the worker processes it spawns (`WorkerProcess`).
_WORKER_PROCESS = "Dask Worker process (from Nanny)"
_spawn_lock = threading.Lock()


def _config_uses_main() -> bool:
    """Whether Dask's configuration, which spawned workers receive, refers to ``__main__``."""
    try:
        return b"__main__" in pickle.dumps(dask.config.config)
    except Exception:  # spawn will meet the same error and report it
        return True


def _workers_skip_main() -> None:
    """Make spawned Dask worker processes skip running the main module again (once).

    multiprocessing's spawn runs the parent's main script or ``-m`` module again in each
    child, as ``__mp_main__``, so that the child can unpickle what it defines. Dask's
    workers need none of it (tasks that use ``__main__``'s functions and classes carry
    them, pickled by value), and a cluster elsewhere never sees the script either, so
    this makes a LocalCluster's workers behave as a remote cluster's do. Re-running it
    cost every worker the script's imports as it started: for ``flows/segment.py``
    (Prefect), two workers started in 3.6 s instead of 1.8. Only processes that
    distributed's Nanny names as its workers are affected, first start and restarts
    alike, in this process from then on; other process pools keep spawn's behaviour, and
    so do the workers while Dask's configuration refers to ``__main__`` (a function of
    the script's in ``dask.config``, which the worker unpickles by reference).
    Registrations a worker needs (image openers, codecs) belong in a worker preload
    (``distributed.worker.preload``) or plugin, as on any cluster.
    """
    with _spawn_lock:
        original = multiprocessing.spawn.get_preparation_data
        if getattr(original, "kmdist_skips_main", False):
            return

        def get_preparation_data(name: str) -> dict[str, Any]:
            data: dict[str, Any] = original(name)
            if name == _WORKER_PROCESS and not _config_uses_main():
                data.pop("init_main_from_path", None)
                data.pop("init_main_from_name", None)
            return data

        get_preparation_data.kmdist_skips_main = True  # type: ignore[attr-defined]
        multiprocessing.spawn.get_preparation_data = get_preparation_data


def _local_cluster(
    n_workers: int | None,
    threads_per_worker: int,
    memory_limit: str | float | None,
    dashboard_address: str,
    processes: bool,
    verbose: bool,
) -> LocalCluster:
    # Worker processes: distributed's Nanny copies its pre-spawn environment into
    # os.environ and lets os.environ win over the config, so after an earlier
    # LocalCluster in this process Dask's own default would replace kmdist's: the
    # variables are set while the workers are spawned, then put back. A worker's log
    # level is read as it imports distributed, before any preload runs.
    spawn_env = {**_WORKER_MALLOC, _LOG_ENV: "info" if verbose else "warning"}
    names = {key.rsplit(".", 1)[1]: value for key, value in spawn_env.items()}
    saved = {name: os.environ.get(name) for name in names}
    if processes:
        os.environ.update(names)
    try:
        workers = n_workers or max(1, os.cpu_count() or 1)
        if not processes:
            # One worker whose threads share its memory: no transfers between workers.
            # TCP on the loopback, not inproc://, whose dashboard link names another
            # interface than the dashboard listens on.
            workers, threads_per_worker = 1, workers * threads_per_worker
        if processes:
            _workers_skip_main()
        with dask.config.set({**spawn_env, _VERBOSE_KEY: verbose}):
            return LocalCluster(
                n_workers=workers,
                threads_per_worker=threads_per_worker,
                processes=processes,
                host=None if processes else "tcp://127.0.0.1",
                memory_limit=memory_limit,
                dashboard_address=dashboard_address,
                # The levels are `quiet_dask_logs`'s: LocalCluster's own silencing would
                # hide the warnings that matter too.
                silence_logs=False,
                # Workers import kmdist's pipeline (Dask arrays, Zarr, numba kernels) as
                # they start, not in their first task: with `dask_client_soon` this
                # overlaps the caller's own imports.
                preload=[
                    *dask.config.get("distributed.worker.preload", []),
                    *(_PRELOAD if processes else _PRELOAD[:1]),
                ],
            )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def dask_client_soon(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    dashboard_address: str = "127.0.0.1:8787",
    processes: bool | None = None,
    verbose: bool = False,
) -> Iterator[Callable[[], Client]]:
    """`dask_client`, with a LocalCluster started in a background thread meanwhile.

    Takes `dask_client`'s parameters. Yields a function that waits for the cluster and
    returns the client (made in the calling thread: a Client belongs to the thread that
    enters it). Starting a LocalCluster (spawning workers that import kmdist) takes one
    to two seconds; the caller's own imports and input listing run meanwhile. Closed
    with the block.
    """
    target = scheduler_address(address)
    restore = quiet_dask_logs(verbose)
    # Set for the whole block: the scheduler's message logs start as workers join, also
    # when one is restarted; the Nanny copies the configuration into its worker.
    short_logs = dask.config.set(_short_logs())
    starting: Future[LocalCluster] | None = None
    clients: list[Client] = []
    try:
        if target is None:
            # Decided here, in the caller's thread, where the main module's frame is.
            spawn = spawn_safe() if processes is None else processes
            if not spawn and processes is None:
                _log.info(
                    "LocalCluster on threads: %s calls it outside its main guard (calls "
                    'under `if __name__ == "__main__":` get processes)',
                    getattr(sys.modules["__main__"], "__file__", "the main module"),
                )
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
                starting.result().close()
        finally:
            short_logs.__exit__(None, None, None)
            restore()


def dashboard_link(client: Client) -> str:
    """Return the dashboard URL of the scheduler `client` is connected to."""
    link: str = client.dashboard_link
    return link
