"""A PNG preview of a segmentation: original and recoloured side by side, palette below.

Both images are subsampled by an integer stride on the Dask side, so only an array of at
most `max_side` pixels a side reaches the calling process.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt
from dask.base import compute
from PIL import Image

from kmdist._fs import is_url, remote
from kmdist.palette import Palette

__all__ = ["swatch_side", "write_preview"]

_BACKGROUND = (255, 255, 255)
_SWATCH_MIN, _SWATCH_MAX = 8, 32


def write_preview(
    path: str | os.PathLike[str],
    original: da.Array,
    labels: da.Array,
    palette: Palette,
    *,
    max_side: int = 512,
) -> Path | str:
    """Write a PNG: original | recoloured on top, a strip of palette swatches below.

    Parameters
    ----------
    path : str or path-like
        The PNG to write, a local path or a storage URL; replaced atomically.
    original : dask.array.Array of shape (y, x, c) or (y, x)
        The source image. Grey, 16-bit and float images are scaled to 8 bits for
        display the way `Palette.display_rgba` scales the colours.
    labels : dask.array.Array of shape (y, x)
        Labels of `original`. Passing the stored labels (`open_segmentation`) avoids
        recomputing the segmentation for the preview.
    palette : Palette
        The colours; swatches and the recoloured half use `palette.display_rgba()`.
    max_side : int, default 512
        Largest side of each half after subsampling by an integer stride.

    Returns
    -------
    Path or str
        `path`: a Path, or the URL as given.

    Notes
    -----
    Each half is ``h x w`` with ``h = ceil(y / s)``, ``w = ceil(x / s)`` for the stride
    ``s = ceil(max(y, x) / max_side)``. Below them, the ``k`` swatches are squares of side
    `swatch_side` (k, 2 * w) in label order, left to right, wrapping onto further rows.
    """
    if original.ndim == 2:
        original = original[:, :, None]
    if original.ndim != 3 or labels.ndim != 2 or original.shape[:2] != labels.shape:
        raise ValueError(
            f"original (y, x, c) and labels (y, x) must match, got {original.shape} "
            f"and {labels.shape}"
        )
    if not isinstance(max_side, int) or max_side < 1:
        raise ValueError(f"max_side must be a positive integer, got {max_side!r}")
    stride = max(1, math.ceil(max(labels.shape) / max_side))
    small, small_labels = compute(original[::stride, ::stride], labels[::stride, ::stride])
    rgba = palette.display_rgba()
    left = _to_display(np.asarray(small))
    right = rgba[np.asarray(small_labels), :3]
    canvas = _compose(left, right, rgba)
    text = os.fspath(path)
    if is_url(text):
        buffer = io.BytesIO()
        Image.fromarray(canvas).save(buffer, format="PNG")
        fs, key = remote(text)
        fs.pipe_file(key, buffer.getvalue())  # an object appears whole, or not at all
        return text
    return _save_atomic(canvas, Path(text))


def swatch_side(k: int, width: int) -> int:
    """Side of one palette swatch: `width` shared by `k` squares, within 8 to 32 pixels."""
    return min(_SWATCH_MAX, max(_SWATCH_MIN, width // max(k, 1)))


def _to_display(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """8-bit RGB for display: the first channel as grey, or the first three channels.

    Integers are scaled by their dtype's range and floats by their own range (from 0
    when non-negative), as `Palette.display_rgba` scales colours.
    """
    rgb = np.repeat(image[..., :1], 3, axis=2) if image.shape[2] < 3 else image[..., :3]
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    values = rgb.astype(np.float64)
    if rgb.dtype.kind in "iu":
        info = np.iinfo(rgb.dtype)
        lo, hi = float(info.min), float(info.max)
    else:
        finite = values[np.isfinite(values)]
        lo = min(float(finite.min()), 0.0) if finite.size else 0.0
        hi = max(float(finite.max()), 1e-12) if finite.size else 1.0
    scaled = (np.nan_to_num(values, nan=lo) - lo) / max(hi - lo, 1e-12) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _compose(
    left: npt.NDArray[np.uint8], right: npt.NDArray[np.uint8], rgba: npt.NDArray[np.uint8]
) -> npt.NDArray[np.uint8]:
    h, w = left.shape[:2]
    width = 2 * w
    k = rgba.shape[0]
    side = swatch_side(k, width)
    per_row = max(1, width // side)
    rows = math.ceil(k / per_row)
    canvas = np.empty((h + rows * side, width, 3), dtype=np.uint8)
    canvas[...] = _BACKGROUND
    canvas[:h, :w] = left
    canvas[:h, w:] = right
    for i, color in enumerate(rgba[:, :3]):
        r, c = divmod(i, per_row)
        canvas[h + r * side : h + (r + 1) * side, c * side : (c + 1) * side] = color
    return canvas


def _save_atomic(canvas: npt.NDArray[np.uint8], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(canvas).save(f, format="PNG")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a preview is for sharing
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
