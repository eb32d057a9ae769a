"""The Dask client kmdist computes on (kmdist._dask): a scheduler's, or a LocalCluster's."""

from __future__ import annotations

import fractions
import gc
import os
import sys

import dask
import dask.array as da
import pytest
from distributed import Client

from kmdist._dask import (
    ENV_ADDRESS,
    active_client,
    dashboard_link,
    dask_client,
    dask_client_soon,
    scheduler_address,
)

MALLOC = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def test_scheduler_address_from_the_caller_else_the_environment(monkeypatch):
    monkeypatch.delenv(ENV_ADDRESS, raising=False)
    assert ENV_ADDRESS == "DASK_SCHEDULER_ADDRESS"
    assert scheduler_address() is None
    assert scheduler_address("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    monkeypatch.setenv(ENV_ADDRESS, "tcp://env:8786")
    assert scheduler_address() == "tcp://env:8786"
    assert scheduler_address("") == "tcp://env:8786"
    assert scheduler_address("tcp://given:1") == "tcp://given:1"
    monkeypatch.setenv(ENV_ADDRESS, "")
    assert scheduler_address() is None


def test_active_client_is_the_default_one_or_none(local_cluster):
    assert active_client() is None
    with Client(local_cluster) as client:
        assert active_client() is client
    assert active_client() is None


def test_dask_client_connects_to_a_scheduler_for_a_block(local_cluster, monkeypatch):
    monkeypatch.delenv(ENV_ADDRESS, raising=False)
    address = local_cluster.scheduler_address
    with dask_client(address) as client:
        assert client.scheduler.address == address
        assert active_client() is client
        assert int(da.arange(100, chunks=10).sum().compute()) == 4950  # ran on the cluster
        assert dashboard_link(client) == client.dashboard_link
        assert dashboard_link(client).startswith("http")
    assert client.status == "closed" and active_client() is None
    assert local_cluster.status.name == "running"  # someone else's cluster stays up
    # The address may come from the environment.
    monkeypatch.setenv(ENV_ADDRESS, address)
    with dask_client() as client:
        assert client.scheduler.address == address


def test_dask_client_soon_connects_only_when_asked(local_cluster):
    # An unreachable address: never connected to, so the block runs and closes cleanly.
    with dask_client_soon("tcp://127.0.0.1:9") as get_client:
        pass
    with dask_client_soon(local_cluster.scheduler_address) as get_client:
        first = get_client()
        assert get_client() is first  # one client per block
        assert first.status == "running"
    assert first.status == "closed"


@pytest.mark.slow
def test_dask_client_starts_and_stops_a_local_cluster(monkeypatch):
    monkeypatch.delenv(ENV_ADDRESS, raising=False)
    # As in a fresh process (the CLI): distributed leaves these in os.environ once it has
    # started any cluster, and then they win over the config (see the test below).
    for name in MALLOC:
        monkeypatch.delenv(name, raising=False)
    with dask_client(n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 1
        assert [w["nthreads"] for w in workers.values()] == [2]
        [(env, preloaded)] = client.run(
            lambda: (
                [os.environ.get(name) for name in MALLOC],
                "kmdist.pipeline._batch" in sys.modules,
            )
        ).values()
        assert env == [str(16 << 20)] * 2
        assert preloaded  # workers import the pipeline as they start
        # ... and, as they close, exit without a last collection (`dask_teardown`).
        hooks = client.run(
            lambda dask_worker: [
                p.name for p in dask_worker.preloads if hasattr(p.module, "dask_teardown")
            ]
        )
        assert list(hooks.values()) == [["kmdist._dask"]]
        cluster = client.cluster
        assert int(da.ones((40, 40), chunks=10).sum().compute()) == 1600
    assert client.status == "closed"
    assert cluster.status.name == "closed"


@pytest.mark.slow
def test_local_cluster_malloc_settings_survive_an_earlier_cluster(local_cluster, monkeypatch):
    monkeypatch.delenv(ENV_ADDRESS, raising=False)
    # The session's cluster (Dask's defaults) was started in this process first, and
    # its Nanny left Dask's MALLOC_TRIM_THRESHOLD_ in os.environ.
    assert local_cluster.status.name == "running"
    with dask_client(n_workers=1, dashboard_address=":0") as client:
        [env] = client.run(lambda: [os.environ.get(name) for name in MALLOC]).values()
    assert env == [str(16 << 20)] * 2


@pytest.mark.slow
def test_worker_processes_get_their_settings_without_touching_this_process(monkeypatch):
    # The workers' environment and configuration are given to their processes: this
    # process's environment and multiprocessing are left as they were.
    import multiprocessing.spawn

    monkeypatch.delenv(ENV_ADDRESS, raising=False)
    environ = dict(os.environ)
    preparation = multiprocessing.spawn.get_preparation_data
    with dask_client(n_workers=1, processes=True, dashboard_address=":0") as client:
        assert dict(os.environ) == environ
        [(pid, level)] = client.run(
            lambda: (os.getpid(), os.environ.get("DASK_LOGGING__DISTRIBUTED"))
        ).values()
        assert pid != os.getpid() and level == "warning"
        assert client.submit(sum, [1, 2]).result() == 3
    assert dict(os.environ) == environ
    assert multiprocessing.spawn.get_preparation_data is preparation


def _live_fractions() -> int:
    gc.collect()
    return sum(isinstance(o, fractions.Fraction) for o in gc.get_objects())


def test_dask_debugging_logs_stop_growing_early_in_a_long_run(monkeypatch):
    # Dask's logs of recent messages keep each task's spec (a batch's image refs) and
    # its workers' profiles keep a tree a second: 1,000 entries each by default, which
    # grew a 100,000-image run's memory by a quarter as they filled.
    monkeypatch.delenv(ENV_ADDRESS, raising=False)
    with dask_client(n_workers=1, dashboard_address=":0") as client:

        def held_after(n: int, start: int) -> int:
            for i in range(start, start + n):
                # One task a message: each Fraction is an argument in the logs only.
                assert client.submit(abs, fractions.Fraction(-i, 7), pure=False).result() > 0
            return _live_fractions()

        before = _live_fractions()
        early = held_after(200, 1)
        late = held_after(600, 201)
        [(maxlen, cycle)] = client.run(
            lambda dask_worker: (
                dask_worker.profile_history.maxlen,
                dask.config.get("distributed.worker.profile.cycle"),
            )
        ).values()
    assert late - before <= 400  # about two logs of 100 (the client's, the scheduler's)
    assert late <= early + 20  # full after 200 tasks: no growth over the next 600
    assert (maxlen, cycle) == (100, "10s")
    # The user's configuration wins over kmdist's lengths.
    with (
        dask.config.set({"distributed.admin.low-level-log-length": 500}),
        dask_client(n_workers=1, processes=False, dashboard_address=":0") as client,
    ):
        [maxlen] = client.run(lambda dask_worker: dask_worker.profile_history.maxlen).values()
    assert maxlen == 500


def test_worker_processes_get_the_callers_configuration_and_import_path(tmp_path, monkeypatch):
    # As spawned LocalCluster workers did: a setting made at run time and a module beside
    # the caller's script reach the worker processes, which run no caller's code.
    import dask

    (tmp_path / "kmdist_test_helper.py").write_text("def answer():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import kmdist_test_helper

    with (
        dask.config.set({"kmdist-test.setting": 7}),
        dask_client(n_workers=1, processes=True) as client,
    ):
        assert client.submit(kmdist_test_helper.answer, pure=False).result() == 42
        seen = client.run(lambda: dask.config.get("kmdist-test.setting", None))
        assert list(seen.values()) == [7]
