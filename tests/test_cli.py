"""The `kmdist` command."""

from __future__ import annotations

import subprocess
import sys

import imageio.v3 as iio

from kmdist.cli import main


def test_demo_writes_the_seed_pictures(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "blobs:  inertia 212.01" in out  # the four blobs, fitted with the default seed
    for name in ("blobs.png", "digits-centres.png"):
        img = iio.imread(tmp_path / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert img.std() > 10  # a picture, not a blank canvas


def test_unknown_command_exits_non_zero():
    proc = subprocess.run(
        [sys.executable, "-m", "kmdist.cli", "bogus"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "invalid choice: 'bogus'" in proc.stderr
