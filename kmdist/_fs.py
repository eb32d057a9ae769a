"""Local paths and storage URLs, for the inputs and the output store.

A path with a scheme (``s3://bucket/key``, ``gs://...``, ``memory://...``) goes through
fsspec; anything else is a local path handled by the standard library, so that local
reads pay no fsspec overhead and local-only checks (symbolic links, permissions) stay
exact. Credentials and endpoints are settings of the filesystem, not of kmdist: for S3,
the usual ``AWS_*`` variables (``AWS_ENDPOINT_URL`` for MinIO, Ceph or moto) or fsspec's
``FSSPEC_S3_*`` variables.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs

__all__ = ["Stamp", "Stat", "is_url", "join", "mtime", "open_input", "remote", "stat"]

# Changes when the object changes: (size, mtime) or (size, ETag).
Stamp = tuple[object, ...]

_BLOCK = 1 << 20

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str) -> bool:
    """Whether `path` names a location by URL (``scheme://...``) rather than a local path."""
    return _SCHEME.match(path) is not None


def remote(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the fsspec filesystem of `url` and the path within it (no scheme)."""
    fs, path = url_to_fs(url)
    return fs, path


def join(url: str, *parts: str) -> str:
    """Join a URL or path and relative parts with ``/``."""
    if not is_url(url):
        return os.path.join(url, *parts)
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


@dataclass(frozen=True)
class Stat:
    """What the readers need to know of an input before opening it.

    `stamp` changes when the object changes (size and modification time, or the ETag an
    object store gives): cached readers reopen then.
    """

    is_dir: bool
    size: int
    stamp: Stamp


def stat(path: str) -> Stat:
    """`Stat` of a local path or URL; raises FileNotFoundError when it is missing."""
    if not is_url(path):
        st = os.stat(path)
        return Stat(os.path.isdir(path), st.st_size, (st.st_size, st.st_mtime_ns))
    fs, p = remote(path)
    info = fs.info(p)
    is_dir = info.get("type") == "directory"
    size = int(info.get("size") or 0)
    return Stat(is_dir, size, (size, info.get("ETag") or mtime(info)))


def open_input(path: str) -> IO[bytes]:
    """Open a local path or URL for reading bytes, seekable."""
    if not is_url(path):
        return open(path, "rb")
    fs, p = remote(path)
    # Readers seek (TIFF tiles, a zip's directory): fetch 1 MiB around a read, not the
    # 50 MiB that s3fs reads ahead by default.
    handle: IO[bytes] = fs.open(p, "rb", block_size=_BLOCK)
    return handle


def mtime(info: dict[str, Any]) -> float | None:
    """Modification time (seconds since the epoch) in an fsspec ``info`` dict, if any.

    Filesystems name it differently: ``mtime`` (local), ``LastModified`` (S3),
    ``updated`` (GCS), ``last_modified`` (Azure), ``created`` (memory).
    """
    for key in ("mtime", "LastModified", "updated", "last_modified", "created"):
        value = info.get(key)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None
