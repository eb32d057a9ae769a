"""Fixtures of the store's tests."""

from __future__ import annotations

import pytest

from tests.store._helpers import make_labels, make_palette


@pytest.fixture
def sample(rng):
    """A 300 x 500 label image with k=5 and a matching random 8-bit RGB palette."""
    labels, counts = make_labels((300, 500), 5, rng)
    return labels, make_palette(counts, rng)
