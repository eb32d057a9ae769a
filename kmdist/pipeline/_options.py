"""What every path of the batch engine shares: per-batch options and per-image results."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy.typing as npt

from kmdist.io._listing import ImageRef
from kmdist.io._open import DEFAULT_MAX_PIXELS
from kmdist.palette._assign import is_rgb8
from kmdist.palette._palette import ColorSpace, Palette
from kmdist.store._read import is_complete

__all__ = [
    "ImageResult",
    "OnExists",
    "SegmentOptions",
    "attempt",
    "named",
]

OnExists = Literal["error", "skip", "overwrite"]


@dataclass(frozen=True)
class SegmentOptions:
    """How to learn and assign colours; the same for every image of a batch."""

    n_colors: int = 16
    method: Literal["auto", "exact", "minibatch"] = "auto"
    color_space: ColorSpace = "rgb"
    random_state: int | None = 0
    init: Literal["k-means++", "random"] = "k-means++"
    n_init: int = 3
    max_iter: int | None = None
    tol: float = 0.0
    eps: float | None = None
    chunks: int | tuple[int, int] | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    # Identifies this run in writer claims: a retried task of the same run (possibly on
    # another host) takes its images over instead of waiting for its own claim to lapse.
    run: str = field(default_factory=lambda: uuid.uuid4().hex)

    def uses_histogram(self, image: da.Array | npt.NDArray[Any]) -> bool:
        """Whether `image` (Dask or NumPy) is 8-bit RGB and mini-batch is not asked for."""
        return is_rgb8(image) and self.method != "minibatch"

    def palette_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `learn_palette` / `palette_from_histogram`."""
        kw: dict[str, Any] = {
            "color_space": self.color_space,
            "random_state": self.random_state,
            "init": self.init,
            "n_init": self.n_init,
            "tol": self.tol,
            "eps": self.eps,
        }
        if self.max_iter is not None:
            kw["max_iter"] = self.max_iter
        return kw


@dataclass
class ImageResult:
    """What happened to one image."""

    name: str
    source: str
    status: Literal["done", "skipped", "failed"]
    shape: tuple[int, ...] | None = None
    palette: Palette | None = None
    seconds: float = 0.0
    error: str | None = None
    preview: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Failed with an I/O error that another attempt may not meet (a network or disk
    #: hiccup), not a problem with the image or the parameters.
    retryable: bool = False

    @property
    def ok(self) -> bool:
        """Done or skipped (complete from an earlier run)."""
        return self.status != "failed"


def named(ref: ImageRef, exc: BaseException) -> str:
    """Return the error message, naming the image's source unless it already does."""
    message = str(exc)
    return message if ref.source in message else f"{ref.source}: {message}"


def attempt[R: ImageResult | None](
    ref: ImageRef, store: str | Path, on_exists: OnExists, step: Callable[[], R]
) -> R | ImageResult:
    """Run one image's `step` as a batch does, and time it.

    An image complete in `store` is skipped when `on_exists` is "skip"; a problem with
    this image (unreadable input, existing output, bad parameters) becomes a failed
    result naming it instead of an exception, so that the batch carries on.
    """
    t0 = time.perf_counter()
    try:
        if on_exists == "skip" and is_complete(store, ref.name):
            return ImageResult(ref.name, ref.source, "skipped", seconds=time.perf_counter() - t0)
        result = step()
    except (ValueError, OSError) as exc:  # ImageReadError, OutputError, bad parameters
        return ImageResult(
            ref.name,
            ref.source,
            "failed",
            seconds=time.perf_counter() - t0,
            error=named(ref, exc),
            # ImageReadError and OutputError are ValueErrors: the image, not the disk.
            retryable=isinstance(exc, OSError) and not isinstance(exc, ValueError),
        )
    if isinstance(result, ImageResult):
        result.seconds = time.perf_counter() - t0
    return result
