"""The local cluster's dashboard (kmdist._dask): its port, and a quiet shutdown."""

from __future__ import annotations

import logging
import socket
import threading
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

from kmdist._dask import dashboard_link, dask_client

DEFAULT = "127.0.0.1:8787"  # where kmdist's local cluster puts its dashboard


@contextmanager
def _default_port_taken() -> Iterator[None]:
    """Hold 127.0.0.1:8787, unless something else on this machine holds it already."""
    host, _, port = DEFAULT.rpartition(":")
    holder: socket.socket | None = socket.socket()
    # As Tornado binds: a port left in TIME_WAIT by an earlier cluster is not taken.
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind((host, int(port)))
        holder.listen()
    except OSError:
        holder.close()  # taken already: as good for these tests
        holder = None
    try:
        yield
    finally:
        if holder is not None:
            holder.close()


def test_a_taken_default_dashboard_port_becomes_any_free_port():
    from kmdist._dask import DEFAULT_DASHBOARD, _dashboard_address

    assert DEFAULT_DASHBOARD == DEFAULT
    with _default_port_taken():
        assert _dashboard_address(DEFAULT_DASHBOARD, verbose=False) == "127.0.0.1:0"
        # Verbose, or an address the caller chose: Dask's choice and Dask's warning.
        assert _dashboard_address(DEFAULT_DASHBOARD, verbose=True) == DEFAULT_DASHBOARD
        assert _dashboard_address("127.0.0.1:8787 ", verbose=False) == "127.0.0.1:8787 "
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = f"127.0.0.1:{probe.getsockname()[1]}"
    assert _dashboard_address(free, verbose=False) == free


@pytest.mark.slow
def test_local_cluster_says_nothing_of_a_taken_dashboard_port_and_links_the_real_one():
    with _default_port_taken(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with dask_client(processes=False, n_workers=1) as client:
            link = dashboard_link(client)
    assert not [w for w in caught if "already in use" in str(w.message)]
    port = urlsplit(link).port
    assert port is not None and port != 8787
    assert link == f"http://127.0.0.1:{port}/status"


@pytest.mark.slow
def test_verbose_local_cluster_keeps_dasks_warning_of_a_taken_port():
    with _default_port_taken(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with dask_client(processes=False, n_workers=1, verbose=True):
            pass
    assert [w for w in caught if "Port 8787 is already in use" in str(w.message)]


@pytest.mark.slow
def test_dashboard_requests_as_the_cluster_closes_meet_no_stopping_application(caplog):
    # A browser tab open on the dashboard keeps requesting pages; while Dask stopped
    # the Bokeh application before the HTTP server, each request meanwhile logged
    # "Bokeh Tornado application is stopping" with its traceback.
    stop = threading.Event()
    answered: list[int] = []

    def browse(url: str) -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(url, timeout=5) as page:
                    answered.append(page.status)
            except (urllib.error.URLError, OSError):
                pass  # the server has gone: as a browser sees it

    caplog.set_level(logging.ERROR, logger="tornado")
    with dask_client(processes=False, n_workers=1) as client:
        link = dashboard_link(client)
        browsers = [threading.Thread(target=browse, args=(link,)) for _ in range(3)]
        for browser in browsers:
            browser.start()
        while not answered:
            threading.Event().wait(0.05)
    stop.set()
    for browser in browsers:
        browser.join()
    stopping = [r for r in caplog.records if "application is stopping" in str(r.exc_info)]
    assert not stopping, [r.getMessage() for r in stopping]
