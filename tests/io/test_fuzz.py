"""Readers fed random bytes behind real magic numbers, and random small images of every
mode: only kmdist's documented error (ImageReadError) may escape, never a crash or hang."""

from __future__ import annotations

import io

import dask
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from kmdist import ImageReadError, open_image

MAGICS = {
    ".png": b"\x89PNG\r\n\x1a\n",
    ".jpg": b"\xff\xd8\xff\xe0",
    ".gif": b"GIF89a",
    ".bmp": b"BM",
    ".tif": b"II*\x00",
    ".webp": b"RIFF\x00\x00\x00\x00WEBP",
}

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def read_all(path):
    """Open and compute an image; return it, or the ImageReadError raised."""
    try:
        with dask.config.set(scheduler="sync"):
            return open_image(path).compute()
    except ImageReadError as exc:
        assert str(path) in str(exc)  # the error names the file
        return exc


@SETTINGS
@given(suffix=st.sampled_from(sorted(MAGICS)), tail=st.binary(max_size=400))
@pytest.mark.timeout(120)
def test_random_bytes_behind_magic_numbers(tmp_path, suffix, tail):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(MAGICS[suffix] + tail)
    out = read_all(path)
    assert isinstance(out, ImageReadError) or (out.ndim == 3 and out.size > 0)


MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I", "F", "I;16", "CMYK"]
FORMATS = ["PNG", "TIFF", "BMP", "GIF", "JPEG", "WEBP"]


def _unwritable(mode: str, fmt: str) -> str | None:
    """Why Pillow cannot write `mode` in `fmt` (whatever the size), or None if it can."""
    try:
        Image.new("RGB", (2, 2)).convert(mode).save(io.BytesIO(), format=fmt)
    except (OSError, ValueError, KeyError) as exc:
        return f"Pillow cannot write mode {mode} as {fmt} ({exc}): there is no such file to read"
    return None


PAIRS = [
    pytest.param(mode, fmt, id=f"{mode}-{fmt}", marks=[pytest.mark.skip(reason=why)] if why else [])
    for mode in MODES
    for fmt in FORMATS
    for why in [_unwritable(mode, fmt)]
]


# Every mode in every format, each with its own random sizes, pixels and truncations:
# left to chance, a pair can go untried (a CMYK TIFF once went through as 4 channels).
# The pairs Pillow cannot write are skipped, with the reason, not passed.
@pytest.mark.parametrize(("mode", "fmt"), PAIRS)
@settings(SETTINGS, max_examples=6)
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    seed=st.integers(0, 2**16),
    cut=st.one_of(st.none(), st.integers(0, 200)),
)
@pytest.mark.timeout(120)
def test_random_small_images_of_every_mode(tmp_path, mode, fmt, height, width, seed, cut):
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    img = base.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)  # writable at any size (see `_unwritable`)
    data = buf.getvalue() if cut is None else buf.getvalue()[:cut]
    path = tmp_path / f"img.{fmt.lower()}"
    path.write_bytes(data)
    out = read_all(path)
    if cut is None:
        assert not isinstance(out, ImageReadError), out
        assert out.shape[:2] == (height, width) and out.shape[2] in (1, 3)
    else:
        assert isinstance(out, ImageReadError) or out.shape[:2] == (height, width)
