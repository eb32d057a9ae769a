"""The number of colours a palette may have (kmdist.palette._limits)."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from kmdist.palette._limits import MAX_COLORS, check_n_colors


@pytest.mark.parametrize("k", [1, 2, 16, 256, 257, 65535, np.int64(7), np.uint16(65535)])
def test_integers_in_range_come_back_as_int(k):
    got = check_n_colors(k)
    assert got == int(k) and type(got) is int


def test_the_limit_is_what_uint16_labels_hold():
    assert MAX_COLORS == np.iinfo(np.uint16).max == 65535


@pytest.mark.parametrize(
    ("k", "message"),
    [
        (0, "k (the number of colours) must be in [1, 65535], got 0"),
        (-3, "k (the number of colours) must be in [1, 65535], got -3"),
        (65536, "k (the number of colours) must be in [1, 65535], got 65536"),
        (np.int64(70000), "k (the number of colours) must be in [1, 65535], got 70000"),
        (2.5, "k (the number of colours) must be an integer, got 2.5"),
        (16.0, "k (the number of colours) must be an integer, got 16.0"),
        ("16", "k (the number of colours) must be an integer, got '16'"),
        (None, "k (the number of colours) must be an integer, got None"),
        (True, "k (the number of colours) must be an integer, got True"),
    ],
)
def test_other_values_refused_with_the_exact_message(k, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_n_colors(k)


def test_imports_nothing_heavy():
    # The CLI checks -k before it imports NumPy, Dask or anything else.
    code = "import sys, kmdist.palette._limits; print(sorted({'numpy', 'dask'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stderr
