"""The flow's command line on its own LocalCluster: Dask kept quiet unless --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("in")
    rng = np.random.default_rng(14)
    for i in range(2):
        iio.imwrite(root / f"im{i}.png", rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    return root


def _flow(folder: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    # Its own process and Prefect's ephemeral API, as a user runs it.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    argv = [str(folder), "-k", "4", "-o", str(out), "--workers", "1", *flags]
    return subprocess.run(
        [sys.executable, str(ROOT / "flows" / "segment.py"), *argv],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=ROOT,
    )


def _dask_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "distributed." in line]


@pytest.mark.parametrize("verbose", [False, True])
def test_flow_keeps_dask_quiet_unless_verbose(folder, tmp_path, verbose):
    proc = _flow(folder, tmp_path / "out.zarr", *(["--verbose"] if verbose else []))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "2 image(s): 2 done, 0 skipped, 0 failed" in output
    lines = _dask_lines(output)
    if verbose:
        assert len(lines) > 5, output  # the scheduler's, workers' and nanny's lines
    else:
        assert len(lines) <= 5, output
