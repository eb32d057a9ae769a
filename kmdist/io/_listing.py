"""List the images in files, folders, glob patterns and archives as `ImageRef`.

Each ref gets a unique name fit for a Zarr group. Archive members are listed from the
archive, never extracted to disk. Problems found while listing become refs whose
`ImageRef.open` raises, so that a batch reports them as failed images and runs the others.
"""

from __future__ import annotations

import glob
import os
import re
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePath, PurePosixPath
from typing import Any

import dask.array as da
import numpy.typing as npt

from kmdist._fs import is_url, join, remote
from kmdist.io._archive import archive_kind, archive_members, strip_archive_suffix
from kmdist.io._chunks import Chunks
from kmdist.io._decoded import DEFAULT_MAX_PIXELS
from kmdist.io._errors import ImageReadError, describe
from kmdist.io._formats import open_or_read, open_source
from kmdist.io._tiled import is_zarr

__all__ = ["IMAGE_SUFFIXES", "ImageRef", "expand", "stream_input", "unique_names"]

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)
"""File name extensions picked up from folders, glob patterns and archives."""

_MAX_NAME = 200  # characters; leaves room in a 255-byte file name for suffixes


@dataclass(frozen=True)
class ImageRef:
    """An image found by `open_images`, opened on demand.

    Attributes
    ----------
    name : str
        Unique among the refs of one `open_images` call (ignoring case), made of
        ``[A-Za-z0-9._-]`` only and never starting with ``.`` or ``_``: usable as a Zarr
        group name, also on case-insensitive file systems.
    source : str
        Where the image comes from: its path, or ``ARCHIVE::MEMBER``.
    """

    name: str
    source: str
    _path: str = field(default="", repr=False)
    _member: str | None = field(default=None, repr=False)
    _problem: str | None = field(default=None, repr=False)

    def open(self, *, chunks: Chunks = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> da.Array:
        """Open the image as a lazy Dask array of shape (y, x, c); see `open_image`.

        Parameters
        ----------
        chunks : int or (int, int), optional
            Chunk size along y and x; by default the source's own.
        max_pixels : int, default=DEFAULT_MAX_PIXELS
            Most pixels (y * x) accepted in an image decoded whole.

        Returns
        -------
        dask.array.Array
            The image, shape (y, x, c).

        Raises
        ------
        ImageReadError
            If the image cannot be read, or a problem was found while listing it (an
            unsafe archive member, an unreadable archive, a link out of the folder).
        """
        if self._problem is not None:
            raise ImageReadError(self.source, self._problem)
        return open_source(self._path or self.source, self._member, self.source, chunks, max_pixels)

    def open_small(
        self, most: int, *, chunks: Chunks = None, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> da.Array | npt.NDArray[Any]:
        """`open` the image, or decode it into memory if small and decoded whole anyway.

        An image of at most `most` pixels that is not read lazily comes back as a NumPy
        array, with no Dask graph; TIFF files and Zarr stores (read lazily) and larger
        images come back as from `open`. Raises as `open` does.
        """
        if self._problem is not None:
            raise ImageReadError(self.source, self._problem)
        path = self._path or self.source
        return open_or_read(path, self._member, self.source, chunks, max_pixels, most)


# --- Listing files, folders, patterns and archives -----------------------------------


def _hidden(part: str) -> bool:
    return (part.startswith(".") and part not in (".", "..")) or part == "__MACOSX"


def _image_suffix(name: str) -> bool:
    """Tell whether a file name's suffix is an image's, as ``PurePosixPath(name).suffix``.

    Per-image paths are not parsed with pathlib: on Python 3.12 it interns every part it
    parses (`sys.intern`), which makes them immortal, about 100 bytes a name kept forever.
    """
    i = name.rfind(".")
    return 0 < i < len(name) - 1 and name[i:].lower() in IMAGE_SUFFIXES


def _is_image_name(path: str) -> bool:
    parts = path.replace("\\", "/").split("/")
    return _image_suffix(parts[-1]) and not any(_hidden(p) for p in parts)


def expand(path: str, follow_symlinks: bool) -> list[ImageRef]:
    """List the images in one file, folder, glob pattern or archive; see `open_images`."""
    return list(stream_input(path, follow_symlinks))


def stream_input(path: str, follow_symlinks: bool) -> Iterator[ImageRef]:
    """Check that `path` exists (or matches) now; return an iterator that lists it lazily.

    The checks are cheap (a ``stat``, the first match of a pattern, one ``info`` request
    for a URL), so that `iter_images` can check every input before yielding anything.
    Names are not yet unique (see `unique_names`).

    Raises
    ------
    ImageReadError
        If `path` does not exist, or is a glob pattern that matches nothing.
    """
    if is_url(path):
        return _expand_url(path)
    if os.path.lexists(path):
        if os.path.isdir(path):
            if is_zarr(path):
                return iter([_file_ref(os.path.basename(os.path.normpath(path)), path)])
            return _walk_folder(path, follow_symlinks)
        if archive_kind(path):
            return _list_archive(path)
        return iter([_file_ref(os.path.basename(path), path)])
    if _has_magic(path):
        if next(glob.iglob(path, recursive=True), None) is None:
            raise ImageReadError(path, "no file matches this pattern")
        return _expand_glob(path)
    raise ImageReadError(path, "file not found")


def _file_ref(rel: str, path: str, problem: str | None = None) -> ImageRef:
    return ImageRef(_name(rel), path, path, None, problem)


def _walk_folder(root: str, follow_symlinks: bool) -> Iterator[ImageRef]:
    """Yield the images below `root` sorted by relative path, one folder listed at a time.

    Depth first, each folder's entries sorted with a sub-folder keyed ``name/``: a folder's
    descendants are contiguous in the sort by relative path and sit where ``name/`` sorts
    among its siblings (no sibling starts with ``name/``), so the walk yields exactly that
    sort while holding only the listings of the folders on the current path. A folder that
    cannot be listed gives a failing ref keyed ``name``, as its path sorts: when a sibling
    sorts between ``name`` and ``name/`` (``name.png``, ``name-2``), the folder is listed
    before that sibling, its listing then held until its turn.
    """
    real_root = os.path.realpath(root)
    seen: set[str] = set()  # real folders listed, when links are followed

    def listing(path: str, rel: str) -> list[str] | ImageRef:
        # The folder's keys in reverse order, to be popped; a failing ref if unlistable.
        real = os.path.realpath(path) if follow_symlinks else ""
        if real in seen:  # a link cycle, or a second way into the same folder
            return []
        try:
            keys = _folder_keys(path, follow_symlinks)
        except OSError as err:
            # A folder that cannot be listed is reported as a failed image, not skipped.
            return _file_ref(rel or ".", path, f"cannot list this folder ({describe(err)})")
        if follow_symlinks:
            seen.add(real)
        return keys

    def walk(path: str, prefix: str, keys: list[str]) -> Iterator[ImageRef]:
        # Sub-folders to list before their turn: a sibling sorts between `d` and `d/`.
        early = [
            k[:-1]
            for i, k in enumerate(keys)
            if k[-1] == "/" and i + 1 < len(keys) and keys[i + 1] > k[:-1]
        ]
        listed: dict[str, list[str] | None] = {}  # listed early; None: failed, reported
        while keys:
            if early and early[-1] < keys[-1]:
                d = early.pop()
                got = listing(os.path.join(path, d), prefix + d)
                if isinstance(got, ImageRef):
                    yield got
                listed[d] = None if isinstance(got, ImageRef) else got
                continue
            key = keys.pop()
            full = os.path.join(path, key.rstrip("/"))
            if key[-1] != "/":
                yield _walk_ref(full, prefix + key, root, real_root, follow_symlinks)
                continue
            d = key[:-1]
            sub = listed.pop(d) if d in listed else listing(full, prefix + d)
            if isinstance(sub, ImageRef):
                yield sub
            elif sub is not None:
                yield from walk(full, prefix + key, sub)

    top = listing(root, "")
    if isinstance(top, ImageRef):
        yield top
    else:
        yield from walk(root, "", top)


def _folder_keys(path: str, follow_symlinks: bool) -> list[str]:
    """List a folder's refs (image files, ``*.zarr``) and sub-folders (``name/``), sorted.

    Returned in reverse order, for `_walk_folder` to pop. Nothing is opened: names and
    the directory entries' types only.
    """
    keys: list[str] = []
    with os.scandir(path) as entries:
        for entry in entries:
            name = entry.name
            if _hidden(name):
                continue
            try:
                is_dir = entry.is_dir()  # follows links, as os.walk does
            except OSError:
                is_dir = False
            if not is_dir:
                if _image_suffix(name):
                    keys.append(name)
            elif name.lower().endswith(".zarr"):
                keys.append(name)  # a store is one image, keyed as a file
            elif follow_symlinks or not _is_link(entry):
                keys.append(name + "/")
    keys.sort(reverse=True)
    return keys


def _is_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _walk_ref(full: str, rel: str, root: str, real_root: str, follow: bool) -> ImageRef:
    problem = None
    if os.path.islink(full):
        target = os.path.realpath(full)
        if not os.path.exists(target):
            problem = "a broken symbolic link"
        elif not follow and os.path.commonpath([target, real_root]) != real_root:
            problem = (
                f"a symbolic link to {target}, outside {root}; not followed "
                "(pass follow_symlinks=True to read it)"
            )
    return _file_ref(rel, full, problem)


def _expand_glob(pattern: str) -> Iterator[ImageRef]:
    # glob gives its matches in no order: sorting them needs the whole list of paths
    # (strings only; the refs are still made one at a time).
    matches = sorted(glob.glob(pattern, recursive=True))
    head = _fixed_head(PurePath(pattern).parts)
    root = os.path.join(*head) if head else os.curdir
    for match in matches:
        rel = os.path.relpath(match, root).replace(os.sep, "/")  # normalised already
        yield from _match_refs(rel, match, os.path.isdir(match))


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _fixed_head(parts: Sequence[str]) -> list[str]:
    """Return the leading parts of a glob pattern without a wildcard: its root folder."""
    head: list[str] = []
    for part in parts:
        if _has_magic(part):
            break
        head.append(part)
    return head


def _match_refs(rel: str, path: str, is_dir: bool) -> Iterator[ImageRef]:
    """List what one glob match gives: a Zarr store, an archive's images, an image file."""
    if is_dir:
        if is_zarr(path):
            yield _file_ref(rel, path)
    elif archive_kind(path):
        yield from _list_archive(path)
    elif _image_suffix(path.rsplit("/", 1)[-1]):
        yield _file_ref(rel, path)


def _expand_url(url: str) -> Iterator[ImageRef]:
    """Check a storage URL now, and return an iterator over its images.

    An object, a prefix ("folder") or a pattern. Prefixes are listed as folders are (image
    files and ``*.zarr`` stores, hidden names skipped), one prefix at a time; object
    stores have no symbolic links to guard against. A pattern is matched whole now
    (fsspec's ``glob`` returns a list), the matches' refs made as they are asked for.
    """
    try:
        fs, path = remote(url)
        if _has_magic(path):
            return _glob_url(fs, path, url)
        info = fs.info(path)
        name = PurePosixPath(path.rstrip("/")).name
        if info.get("type") == "directory":
            if is_zarr(url):
                return iter([_file_ref(name, url)])
            return _walk_url(fs, path, url)
    except FileNotFoundError:
        raise ImageReadError(url, "file not found") from None
    except (ImageReadError, MemoryError):
        raise
    except Exception as exc:  # no credentials, no such bucket, no package for the scheme
        raise ImageReadError(url, f"cannot list it ({describe(exc)})") from exc
    if archive_kind(path):
        return _list_archive(url)
    return iter([_file_ref(name, url)])


def _walk_url(fs: Any, root: str, url: str) -> Iterator[ImageRef]:
    # Depth first and sorted as `_walk_folder`, one prefix listed at a time (what
    # fsspec's walk does, with its errors omitted): hidden folders and the insides of
    # *.zarr stores (one image each, maybe millions of chunk objects) are never listed.
    def walk(path: str, prefix: str) -> Iterator[ImageRef]:
        try:
            listing = fs.ls(path, detail=True)
        except OSError:  # FileNotFoundError too: omitted, as fsspec's walk does
            return
        keys: set[str] = set()
        for info in listing:
            pathname = info["name"].rstrip("/")
            name = pathname.rsplit("/", 1)[-1]
            if pathname == path or _hidden(name):
                continue
            if info["type"] != "directory":
                if _image_suffix(name):
                    keys.add(name)
            elif name.lower().endswith(".zarr"):
                keys.add(name)
            else:
                keys.add(name + "/")
        del listing
        for key in sorted(keys):
            if key[-1] == "/":
                yield from walk(f"{path}/{key[:-1]}", prefix + key)
            else:
                yield _file_ref(prefix + key, join(url, prefix + key))

    try:
        yield from walk(root.rstrip("/"), "")
    except (ImageReadError, MemoryError):
        raise
    except Exception as exc:
        raise ImageReadError(url, f"cannot list it ({describe(exc)})") from exc


def _glob_url(fs: Any, pattern: str, url: str) -> Iterator[ImageRef]:
    matches = fs.glob(pattern, detail=True)
    if not matches:
        raise ImageReadError(url, "no file matches this pattern")
    found = sorted((path, info.get("type") == "directory") for path, info in matches.items())
    del matches
    root = "/".join(_fixed_head(pattern.split("/")))
    return _glob_url_refs(fs, root, found)


def _glob_url_refs(fs: Any, root: str, found: list[tuple[str, bool]]) -> Iterator[ImageRef]:
    for path, is_dir in found:
        rel = path[len(root) :].strip("/") if path.startswith(root) else path
        if any(_hidden(p) for p in rel.split("/")):
            continue  # as glob.glob skips them locally
        yield from _match_refs(rel, fs.unstrip_protocol(path), is_dir)


def _list_archive(archive: str) -> Iterator[ImageRef]:
    # A member list comes whole from the archive's index (zip central directory, tar
    # headers): listed when the archive's turn comes, then sorted.
    try:
        found = archive_members(archive)
    except MemoryError:
        raise
    except Exception as exc:
        # Reported as a failed image, not raised: the other inputs still run.
        name = _sanitise(strip_archive_suffix(PurePosixPath(archive.replace("\\", "/")).name))
        yield ImageRef(name, archive, archive, None, f"cannot read the archive ({describe(exc)})")
        return
    for member, problem in sorted(found.items()):
        if _is_image_name(member):
            yield ImageRef(_name(member), f"{archive}::{member}", archive, member, problem)


# --- Names ---------------------------------------------------------------------------


def _name(rel: str) -> str:
    """Make a group name from a relative path: ``sub/dir/img.png`` gives ``sub_dir_img``.

    As ``str(PurePosixPath(rel).with_suffix(""))`` would (empty and ``.`` parts dropped,
    the last part's suffix removed), without pathlib (see `_image_suffix`).
    """
    parts = [p for p in rel.replace("\\", "/").split("/") if p and p != "."]
    if parts:
        last = parts[-1]
        i = last.rfind(".")
        if 0 < i < len(last) - 1:
            parts[-1] = last[:i]
    return _sanitise("/".join(parts))


def _sanitise(name: str) -> str:
    # Zarr reserves names starting with "__"; names starting with "." are hidden.
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip("._")[:_MAX_NAME]
    return clean or "image"


def unique_names(refs: Iterable[ImageRef]) -> Iterator[ImageRef]:
    """Make the refs' names unique, ignoring case: ``-2``, ``-3``, ... in order of appearance.

    A stream: each ref is yielded as it comes. What it keeps is the names taken so far
    (`_NameSet`), the one part of listing that grows with the number of images.
    """
    taken = _NameSet()
    for ref in refs:
        name, n = ref.name, 1
        while not taken.add(name.lower()):  # case-insensitive file systems hold the groups
            n += 1
            name = f"{ref.name}-{n}"
        yield ref if name == ref.name else replace(ref, name=name)


class _NameSet:
    """A set of names kept compact: the names in one buffer, an open-addressing table.

    A Python set of str costs about 100 to 170 bytes a name (the string object, and
    table slots that grow fourfold); this one costs the name's length plus one, and 16
    to 32 bytes of table (8-byte offsets, at most half full), exactly as a set answers.
    Names are ASCII with no newline (see `ImageRef.name`), newline-terminated here.
    """

    def __init__(self) -> None:
        self._names = bytearray()
        self._slots = array("q", [0]) * 1024  # offset + 1 into _names; 0: empty
        self._count = 0

    def add(self, name: str) -> bool:
        """Add `name`; return False if it was there already."""
        key = name.encode() + b"\n"
        slot = self._find(key)
        if self._slots[slot]:
            return False
        self._slots[slot] = len(self._names) + 1
        self._names += key
        self._count += 1
        if 2 * self._count > len(self._slots):
            self._grow()
        return True

    def _find(self, key: bytes) -> int:
        """Return the slot holding `key`, or the empty slot where it belongs."""
        mask = len(self._slots) - 1
        slot = hash(key) & mask
        while True:
            at = self._slots[slot] - 1
            if at < 0 or self._names[at : at + len(key)] == key:
                return slot
            slot = (slot + 1) & mask

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("q", [0]) * (2 * len(old))
        for at in old:
            if at:
                end = self._names.index(b"\n", at - 1) + 1
                self._slots[self._find(bytes(self._names[at - 1 : end]))] = at
