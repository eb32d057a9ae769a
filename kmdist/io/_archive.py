"""Read zip and tar archive members safely, in memory, never extracting them to disk.

Members with an absolute path or a ``..`` component, links, device files, encrypted
members, members too large to hold in memory and likely decompression bombs are refused, both
when an archive is listed and again when a member is opened: archives change.

A zip member is compared with its own compressed size. A tar archive compresses as one
stream (``.tar.gz``, ``.tar.xz``, ...), so a member is compared with the size of the
whole archive file: a 4 MB ``.tar.gz`` cannot honestly hold a 1 GB image.
"""

from __future__ import annotations

import contextlib
import re
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from typing import IO, Literal

from kmdist._fs import open_input, stat as input_stat
from kmdist.io._errors import ImageReadError

__all__ = [
    "archive_kind",
    "archive_members",
    "member_file",
    "read_member",
    "strip_archive_suffix",
]

_MAX_MEMBER_BYTES = 4 << 30  # largest archive member read into memory
_BOMB_RATIO = 100  # a member expanding more than this ...
_BOMB_BYTES = 64 << 20  # ... to more than this is taken for a decompression bomb

_ARCHIVES: tuple[tuple[str, Literal["zip", "tar"]], ...] = (
    (".zip", "zip"),
    (".tar", "tar"),
    (".tar.gz", "tar"),
    (".tgz", "tar"),
    (".tar.bz2", "tar"),
    (".tbz2", "tar"),
    (".tar.xz", "tar"),
    (".txz", "tar"),
)


def archive_kind(path: str) -> Literal["zip", "tar"] | None:
    """Say from its name whether `path` is a zip or a tar archive; None if neither."""
    lower = path.lower()
    for suffix, kind in _ARCHIVES:
        if lower.endswith(suffix):
            return kind
    return None


def strip_archive_suffix(name: str) -> str:
    """Drop the archive extension (``.zip``, ``.tar.gz``, ...) from `name`, if any."""
    for suffix, _ in _ARCHIVES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def archive_members(archive: str) -> dict[str, str | None]:
    """Map every file member of `archive` to why it is refused, or None if it is not.

    Raises whatever the zip or tar module raises when the archive cannot be read.
    """
    if archive_kind(archive) == "zip":
        with open_input(archive) as fh, zipfile.ZipFile(fh) as zf:
            # Later duplicates win, as in ZipFile.getinfo.
            zinfos = {i.filename: i for i in zf.infolist() if not i.is_dir()}
        return {n: _path_problem(n) or _zip_problem(i) for n, i in zinfos.items()}
    packed = input_stat(archive).size
    with open_input(archive) as fh, tarfile.open(fileobj=fh, mode="r:*") as tf:
        tinfos = {i.name: i for i in tf.getmembers() if not i.isdir()}
    return {n: _path_problem(n) or _tar_problem(i, packed) for n, i in tinfos.items()}


@contextlib.contextmanager
def member_file(archive: str, member: str, source: str) -> Iterator[IO[bytes]]:
    """Open one archive member as a seekable stream, checked again: archives change."""
    problem = _path_problem(member)
    if problem:
        raise ImageReadError(source, problem)
    if archive_kind(archive) == "zip":
        with open_input(archive) as fh, zipfile.ZipFile(fh) as zf:
            zinfo = _archive_member(zf.getinfo, member, source)
            _refuse(_zip_problem(zinfo), source)
            with zf.open(zinfo) as fp:
                yield fp
    else:
        packed = input_stat(archive).size
        with open_input(archive) as fh, tarfile.open(fileobj=fh, mode="r:*") as tf:
            tinfo = _archive_member(tf.getmember, member, source)
            _refuse(_tar_problem(tinfo, packed), source)
            tfp = tf.extractfile(tinfo)
            if tfp is None:
                raise ImageReadError(source, "not a regular file; refused")
            with tfp:
                yield tfp


def read_member(archive: str, member: str, source: str) -> bytes:
    """Read one archive member into memory, refusing one larger than it may be."""
    with member_file(archive, member, source) as fp:
        data = fp.read(_MAX_MEMBER_BYTES + 1)
    if len(data) > _MAX_MEMBER_BYTES:
        raise ImageReadError(source, f"more than {_MAX_MEMBER_BYTES:,} bytes; refused")
    return data


def _path_problem(member: str) -> str | None:
    parts = member.replace("\\", "/").split("/")
    if member.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", member):
        return "an absolute path in the archive; refused"
    if ".." in parts:
        return "a path that leaves the archive ('..'); refused"
    return None


def _size_problem(size: int, packed: int, packed_what: str) -> str | None:
    """Why a member of `size` bytes is refused, given the `packed` bytes it comes from."""
    if size > _MAX_MEMBER_BYTES:
        return f"{size:,} bytes uncompressed, more than the {_MAX_MEMBER_BYTES:,} accepted; refused"
    if size > _BOMB_BYTES and size > _BOMB_RATIO * max(packed, 1):
        return (
            f"{size:,} bytes uncompressed from {packed_what} of {packed:,} bytes (more than "
            f"{_BOMB_RATIO}:1), a likely decompression bomb; refused"
        )
    return None


def _zip_problem(info: zipfile.ZipInfo) -> str | None:
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link; refused"
    if info.flag_bits & 0x1:
        return "encrypted; cannot be read"
    return _size_problem(info.file_size, info.compress_size, "a compressed member")


def _tar_problem(info: tarfile.TarInfo, packed: int) -> str | None:
    if info.issym():
        return f"a symbolic link (to {info.linkname!r}); refused"
    if info.islnk():
        return f"a hard link (to {info.linkname!r}); refused"
    if info.isdev():
        return "a device file; refused"
    if not info.isfile():
        return "not a regular file; refused"
    return _size_problem(info.size, packed, "an archive")


def _archive_member[T](get: Callable[[str], T], member: str, source: str) -> T:
    try:
        return get(member)
    except KeyError:
        raise ImageReadError(source, "no such member in the archive") from None


def _refuse(problem: str | None, source: str) -> None:
    if problem is not None:
        raise ImageReadError(source, problem)
