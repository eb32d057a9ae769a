"""What happened to one image, and how one image's work becomes such a result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kmdist.io import ImageRef
from kmdist.palette import Palette
from kmdist.pipeline._options import OnExists
from kmdist.store import is_complete

__all__ = ["ImageResult", "attempt", "named"]


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
