"""Limits on arguments, checked before any work starts (this module imports nothing heavy)."""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["MAX_COLORS", "check_n_colors"]

MAX_COLORS = 65535
"""Most colours a palette may have (labels are stored as uint16)."""


def check_n_colors(n_colors: Any) -> int:
    """Validate a number of colours: an integer in [1, MAX_COLORS]."""
    if isinstance(n_colors, bool) or not isinstance(n_colors, numbers.Integral):
        raise ValueError(f"k (the number of colours) must be an integer, got {n_colors!r}")
    n_colors = int(n_colors)
    if not 1 <= n_colors <= MAX_COLORS:
        raise ValueError(f"k (the number of colours) must be in [1, {MAX_COLORS}], got {n_colors}")
    return n_colors
