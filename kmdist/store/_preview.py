"""A PNG preview of a segmentation: original and recoloured side by side, palette below.

Both images are subsampled by an integer stride on the Dask side, so only an array of at
most `max_side` pixels a side reaches the calling process. Below them the palette spans
the preview's width, each colour labelled with its hex value and its share of the pixels.
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
from PIL import Image, ImageDraw, ImageFont

from kmdist._fs import is_url, remote
from kmdist.store._layout import Colours

__all__ = ["swatch_side", "write_preview"]

_BACKGROUND = (255, 255, 255)
_SWATCH_MIN, _SWATCH_MAX = 8, 32
# Labelled swatches: Pillow's own font at 11 to 16 pixels by the preview's width, and at
# most this many colours (a longer palette gets plain swatches: 256 labels would be
# taller than the images they explain).
_FONT_MIN, _FONT_MAX = 11, 16
_LABELLED_MAX = 64
_PAD = 4  # pixels around a label's text
_GAP = 1  # background between swatches, so that two close colours stay apart


def write_preview(
    path: str | os.PathLike[str],
    original: da.Array,
    labels: da.Array,
    palette: Colours,
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
    palette : Palette (or any `kmdist.store._layout.Colours`)
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
    ``s = ceil(max(y, x) / max_side)``. Below them, the ``k`` swatches fill rows of equal
    columns across the whole width ``2 * w``, in label order, left to right: each shows
    its colour's hex value and share of the pixels (``#a1b2c3`` over ``23.4%``) where
    the labels fit (at most 64 colours, a column at least as wide as a label, rows no
    taller than the images or four rows), else plain swatches of `swatch_side`
    (k, 2 * w) pixels.
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
    canvas = _compose(left, right, rgba, _shares(palette))
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


def _shares(palette: Colours) -> list[str]:
    """Each colour's share of the pixels, as ``23.4%``."""
    counts = np.asarray(palette.to_dict()["counts"], dtype=np.float64)
    total = max(float(counts.sum()), 1.0)
    return [f"{100.0 * c / total:.1f}%" for c in counts]


def _compose(
    left: npt.NDArray[np.uint8],
    right: npt.NDArray[np.uint8],
    rgba: npt.NDArray[np.uint8],
    shares: list[str],
) -> npt.NDArray[np.uint8]:
    h, w = left.shape[:2]
    width = 2 * w
    k = rgba.shape[0]
    colors = rgba[:, :3]
    hexes = [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in colors.tolist()]
    font = ImageFont.load_default(size=min(_FONT_MAX, max(_FONT_MIN, width // 48)))
    # A label is two lines, the hex value over the share: narrow enough for many columns.
    text_w = max((font.getlength(t) for t in [*hexes, *shares]), default=0.0)
    line = int(font.getbbox("#0%")[3]) + 2
    cell_w = math.ceil(text_w) + 2 * _PAD
    cell_h = 2 * line + 2 * _PAD
    rows = math.ceil(k / max(1, width // cell_w))
    # Labels where they fit without dwarfing the images: at most as tall as the images,
    # or four rows (a thumbnail's palette).
    labelled = 0 < k <= _LABELLED_MAX and width >= cell_w and rows * cell_h <= max(h, 4 * cell_h)
    if labelled:
        # As few rows as fit, filled evenly (16 colours: two rows of 8, not 10 and 6).
        per_row = math.ceil(k / rows)
    else:
        cell_h = swatch_side(k, width)
        per_row = max(1, min(k, width // cell_h))
    rows = math.ceil(k / per_row)
    canvas = np.empty((h + rows * cell_h, width, 3), dtype=np.uint8)
    canvas[...] = _BACKGROUND
    canvas[:h, :w] = left
    canvas[:h, w:] = right
    # Column edges share out the whole width: the last column ends at the right edge.
    edges = [round(c * width / per_row) for c in range(per_row + 1)]
    cells = []
    for i, color in enumerate(colors):
        r, c = divmod(i, per_row)
        x0, x1 = edges[c], edges[c + 1]
        y0 = h + r * cell_h
        # The gap goes between swatches, not at the preview's edges.
        gx = _GAP if c + 1 < per_row and x1 - x0 > 2 * _GAP else 0
        gy = _GAP if r + 1 < rows and cell_h > 2 * _GAP else 0
        canvas[y0 : y0 + cell_h - gy, x0 : x1 - gx] = color
        cells.append(((x0 + x1 - gx) / 2, y0 + _PAD))
    if labelled:
        picture = Image.fromarray(canvas)
        draw = ImageDraw.Draw(picture)
        for (x, y), color, hex_value, share in zip(cells, colors, hexes, shares, strict=True):
            ink = (0, 0, 0) if _luma(color) >= 128 else (255, 255, 255)
            draw.text((x, y), hex_value, fill=ink, font=font, anchor="mt")
            draw.text((x, y + line), share, fill=ink, font=font, anchor="mt")
        canvas = np.asarray(picture)
    return canvas


def _luma(color: npt.NDArray[np.uint8]) -> float:
    """Rec. 601 brightness of an RGB colour: dark text on light swatches, light on dark."""
    r, g, b = (float(v) for v in color)
    return 0.299 * r + 0.587 * g + 0.114 * b


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
