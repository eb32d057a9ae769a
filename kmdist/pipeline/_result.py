"""What happened to one image, and how one image's work becomes such a result."""

from __future__ import annotations

import errno as errnos
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kmdist.io import ImageReadError, ImageRef
from kmdist.palette import Palette
from kmdist.pipeline._options import OnExists
from kmdist.store import OutputError, is_complete

__all__ = ["PERMANENT_ERRNOS", "ImageResult", "attempt", "named", "storage_error"]

#: Storage errors that another attempt would meet again: a full disk or quota, a write
#: denied (permissions, an immutable folder), a read-only file system, or a path that
#: cannot be written as asked (a folder where a file goes, a file where a folder goes,
#: a name too long). Never retried.
PERMANENT_ERRNOS = frozenset(
    {
        errnos.ENOSPC,
        errnos.EDQUOT,
        errnos.EACCES,
        errnos.EPERM,
        errnos.EROFS,
        errnos.EISDIR,
        errnos.ENOTDIR,
        errnos.ENAMETOOLONG,
        errnos.EEXIST,
    }
)


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
    #: The errno of the output store's error that failed the image (``errno.ENOSPC``
    #: for a full disk), None when it failed for another reason or the store gave none.
    errno: int | None = None

    @property
    def permanent(self) -> bool:
        """Failed with a storage error that another attempt would meet again."""
        return self.errno in PERMANENT_ERRNOS

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
        stored = storage_error(exc, store)
        raw = isinstance(exc, OSError) and not isinstance(exc, ValueError)
        code = stored.errno if stored is not None else None
        if raw and stored is not None:
            # An error of zarr's own writes (the chunked path), said as the store's are.
            exc = OutputError(f"{store}/{ref.name}: cannot write: {stored.strerror or stored}")
        return ImageResult(
            ref.name,
            ref.source,
            "failed",
            seconds=time.perf_counter() - t0,
            error=named(ref, exc),
            # A store's I/O error may pass (a hiccup); a full or read-only disk will not.
            # Other ValueErrors (ImageReadError, OutputError alone) are the image's.
            retryable=(raw or stored is not None) and code not in PERMANENT_ERRNOS,
            errno=code,
        )
    if isinstance(result, ImageResult):
        result.seconds = time.perf_counter() - t0
    return result


def storage_error(exc: BaseException, store: str | os.PathLike[str]) -> OSError | None:
    """Return the output store's `OSError` behind `exc`, or None if it is not the store's.

    The store's refusals are `OutputError`s raised from the `OSError` the store met (their
    cause, or the error being handled then); an error of zarr's own writes (the chunked
    path) is that `OSError`, naming a file in `store` or, for a permanent error
    (`PERMANENT_ERRNOS`), no file. An input's errors (`ImageReadError`), an
    `OutputError` with no `OSError` behind it (an existing output, a bad name) and an
    `OSError` naming a file outside `store` are not the store's.
    """
    if isinstance(exc, ImageReadError):
        return None
    if isinstance(exc, OutputError):
        seen: set[int] = set()
        cause: BaseException | None = exc
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            if isinstance(cause, OSError) and not isinstance(cause, ValueError):
                return cause
            # As a traceback shows them: `raise ... from None` hides the context.
            hidden = cause.__suppress_context__
            cause = cause.__cause__ if cause.__cause__ is not None or hidden else cause.__context__
        return None
    if isinstance(exc, OSError):
        if exc.filename is None and exc.errno in PERMANENT_ERRNOS:
            # A write to a file already open (zarr's chunks) names none; an input's
            # reads fail neither for a full disk nor a read-only one, and a denied
            # read fails at opening, which names its file.
            return exc
        if _in_store(exc.filename, store):
            return exc
    return None


def _in_store(filename: object, store: str | os.PathLike[str]) -> bool:
    """Whether `filename` (an `OSError`'s) is a local path inside `store`."""
    if not isinstance(filename, str | os.PathLike):
        return False
    root = os.path.abspath(os.fspath(store))
    return os.path.commonpath([root, os.path.abspath(os.fspath(filename))]) == root
