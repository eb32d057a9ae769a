"""The Dask client kmdist computes on: an existing scheduler, or a LocalCluster.

The address comes from the caller, else from ``DASK_SCHEDULER_ADDRESS``; without either,
a LocalCluster sized to the machine is started and closed with the context.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

import dask
from distributed import Client, LocalCluster, default_client

__all__ = [
    "active_client",
    "dashboard_link",
    "dask_client",
    "dask_client_soon",
    "scheduler_address",
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


_PRELOAD = "kmdist.pipeline._batch"


def active_client() -> Client | None:
    """Return the distributed Client computations go to now, or None (local schedulers)."""
    try:
        return default_client()
    except ValueError:
        return None


def scheduler_address(address: str | None = None) -> str | None:
    """Return the scheduler to use: `address`, else ``$DASK_SCHEDULER_ADDRESS``, else None."""
    return address or os.environ.get(ENV_ADDRESS) or None


@contextmanager
def dask_client(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    dashboard_address: str = ":8787",
) -> Iterator[Client]:
    """Connect to a Dask scheduler, or run a LocalCluster, for the duration of a block.

    Parameters
    ----------
    address : str, optional
        Scheduler address such as ``tcp://10.0.0.5:8786``; defaults to
        ``$DASK_SCHEDULER_ADDRESS``. When neither is set a LocalCluster starts.
    n_workers : int, optional
        LocalCluster worker processes; one per core by default.
    threads_per_worker : int, default=1
        Threads per LocalCluster worker; NumPy kernels release the GIL, but one thread
        per process keeps memory per worker predictable.
    memory_limit : str, float or None, default='auto'
        Per-worker memory limit of the LocalCluster.
    dashboard_address : str, default=':8787'
        Where the LocalCluster's dashboard listens (a free port is used if taken).

    Yields
    ------
    distributed.Client
        The client, set as the default for Dask computations inside the block.
    """
    with dask_client_soon(
        address,
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit,
        dashboard_address=dashboard_address,
    ) as client:
        yield client()


def _local_cluster(
    n_workers: int | None,
    threads_per_worker: int,
    memory_limit: str | float | None,
    dashboard_address: str,
) -> LocalCluster:
    # distributed's Nanny copies its pre-spawn environment into os.environ and lets
    # os.environ win over the config, so after an earlier LocalCluster in this process
    # Dask's own default would replace kmdist's: the variables are set while the
    # workers are spawned, then put back.
    names = {key.rsplit(".", 1)[1]: value for key, value in _WORKER_MALLOC.items()}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        return _start_local_cluster(n_workers, threads_per_worker, memory_limit, dashboard_address)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _start_local_cluster(
    n_workers: int | None,
    threads_per_worker: int,
    memory_limit: str | float | None,
    dashboard_address: str,
) -> LocalCluster:
    with dask.config.set(_WORKER_MALLOC):
        return LocalCluster(
            n_workers=n_workers or max(1, os.cpu_count() or 1),
            threads_per_worker=threads_per_worker,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=dashboard_address,
            # Warnings of routine events (large graphs, rebalancing) would drown kmdist's
            # per-image report; errors still show.
            silence_logs=logging.ERROR,
            # Workers import kmdist's pipeline (Dask arrays, Zarr, numba kernels) as they
            # start, not in their first task: with `dask_client_soon` this overlaps the
            # caller's own imports.
            preload=[*dask.config.get("distributed.worker.preload", []), _PRELOAD],
        )


@contextmanager
def dask_client_soon(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    dashboard_address: str = ":8787",
) -> Iterator[Callable[[], Client]]:
    """`dask_client`, with a LocalCluster started in a background thread meanwhile.

    Takes `dask_client`'s parameters. Yields a function that waits for the cluster and
    returns the client (made in the calling thread: a Client belongs to the thread that
    enters it). Starting a LocalCluster (spawning workers that import kmdist) takes one
    to two seconds; the caller's own imports and input listing run meanwhile. Closed
    with the block.
    """
    target = scheduler_address(address)
    starting: Future[LocalCluster] | None = None
    if target is None:
        pool = ThreadPoolExecutor(1, thread_name_prefix="kmdist-cluster-start")
        starting = pool.submit(
            _local_cluster, n_workers, threads_per_worker, memory_limit, dashboard_address
        )
        pool.shutdown(wait=False)
    clients: list[Client] = []
    try:
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
        # After the client, as `dask_client` closes them. A cluster that failed to start
        # has nothing to close; its error reached the block from `client()`.
        if starting is not None and starting.exception() is None:
            starting.result().close()


def dashboard_link(client: Client) -> str:
    """Return the dashboard URL of the scheduler `client` is connected to."""
    link: str = client.dashboard_link
    return link
