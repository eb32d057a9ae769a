"""The error for inputs that cannot be read as images, and other errors turned into it.

Pillow, tifffile, Zarr and OS errors are wrapped so that every failure names its input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["ImageReadError", "decode_errors", "describe"]


class ImageReadError(ValueError):
    """An input cannot be read as an image.

    ``str(err)`` is ``"SOURCE: problem"``, where SOURCE is the path, or
    ``ARCHIVE::MEMBER`` for a member of a zip or tar archive, and the problem is said in
    plain words.

    Parameters
    ----------
    source : str
        The path, or ``ARCHIVE::MEMBER``.
    problem : str
        What is wrong with it.
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem

    def __reduce__(self) -> tuple[type[ImageReadError], tuple[str, str]]:
        # Raised on workers and pickled back to the client: rebuild it from both parts.
        return (type(self), (self.source, self.problem))


def describe(exc: BaseException) -> str:
    """Say in a few words what went wrong in `exc`: its OS error text, or its message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def decode_errors(source: str) -> Iterator[None]:
    """Turn any error raised inside into an `ImageReadError` naming `source`."""
    try:
        yield
    except (ImageReadError, MemoryError):
        raise
    except Exception as exc:
        # Truncated or corrupt data surface here, on a worker, whatever the decoder.
        raise ImageReadError(source, f"cannot decode the image ({describe(exc)})") from exc
