"""List the images in files, folders, glob patterns and archives as `ImageRef`.

Each ref gets a unique name fit for a Zarr group. Archive members are listed from the
archive, never extracted to disk. Problems found while listing become refs whose
`ImageRef.open` raises, so that a batch reports them as failed images and runs the others.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
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

__all__ = ["IMAGE_SUFFIXES", "ImageRef", "expand", "unique_names"]

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


def _is_image_name(path: str) -> bool:
    parts = path.replace("\\", "/").split("/")
    return PurePosixPath(parts[-1]).suffix.lower() in IMAGE_SUFFIXES and not any(
        _hidden(p) for p in parts
    )


def expand(path: str, follow_symlinks: bool) -> list[ImageRef]:
    """List the images in one file, folder, glob pattern or archive; see `open_images`."""
    if is_url(path):
        return _expand_url(path)
    if os.path.lexists(path):
        if os.path.isdir(path):
            if is_zarr(path):
                return [_file_ref(os.path.basename(os.path.normpath(path)), path)]
            return _walk_folder(path, follow_symlinks)
        if archive_kind(path):
            return _list_archive(path)
        return [_file_ref(os.path.basename(path), path)]
    if _has_magic(path):
        return _expand_glob(path)
    raise ImageReadError(path, "file not found")


def _file_ref(rel: str, path: str, problem: str | None = None) -> ImageRef:
    return ImageRef(_name(rel), path, path, None, problem)


def _walk_folder(root: str, follow_symlinks: bool) -> list[ImageRef]:
    real_root = os.path.realpath(root)
    found: list[tuple[str, ImageRef]] = []
    seen: set[str] = set()

    def unlisted(err: OSError) -> None:
        # A folder that cannot be listed is reported as a failed image, not skipped.
        where = err.filename if isinstance(err.filename, str) else root
        rel = PurePath(os.path.relpath(where, root)).as_posix()
        found.append((rel, _file_ref(rel, where, f"cannot list this folder ({describe(err)})")))

    walk = os.walk(root, onerror=unlisted, followlinks=follow_symlinks)
    for dirpath, dirnames, filenames in walk:
        if follow_symlinks:
            real = os.path.realpath(dirpath)
            if real in seen:  # a link cycle, or a second way into the same folder
                dirnames.clear()
                continue
            seen.add(real)
        subdirs = []
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if _hidden(d):
                continue
            if d.lower().endswith(".zarr"):
                found.append(_walk_ref(full, root, real_root, follow_symlinks))
            else:
                subdirs.append(d)
        dirnames[:] = subdirs
        for f in filenames:
            if not _hidden(f) and PurePosixPath(f).suffix.lower() in IMAGE_SUFFIXES:
                found.append(_walk_ref(os.path.join(dirpath, f), root, real_root, follow_symlinks))
    return [ref for _, ref in sorted(found, key=lambda item: item[0])]


def _walk_ref(full: str, root: str, real_root: str, follow: bool) -> tuple[str, ImageRef]:
    rel = PurePath(os.path.relpath(full, root)).as_posix()
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
    return rel, _file_ref(rel, full, problem)


def _expand_glob(pattern: str) -> list[ImageRef]:
    matches = sorted(glob.glob(pattern, recursive=True))
    if not matches:
        raise ImageReadError(pattern, "no file matches this pattern")
    head = _fixed_head(PurePath(pattern).parts)
    root = os.path.join(*head) if head else os.curdir
    refs: list[ImageRef] = []
    for match in matches:
        rel = PurePath(os.path.relpath(match, root)).as_posix()
        refs.extend(_match_refs(rel, match, os.path.isdir(match)))
    return refs


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


def _match_refs(rel: str, path: str, is_dir: bool) -> list[ImageRef]:
    """List what one glob match gives: a Zarr store, an archive's images, an image file."""
    if is_dir:
        return [_file_ref(rel, path)] if is_zarr(path) else []
    if archive_kind(path):
        return _list_archive(path)
    if PurePosixPath(path).suffix.lower() in IMAGE_SUFFIXES:
        return [_file_ref(rel, path)]
    return []


def _expand_url(url: str) -> list[ImageRef]:
    """List the images at a storage URL: an object, a prefix ("folder") or a pattern.

    Prefixes are listed as folders are (image files and ``*.zarr`` stores, hidden names
    skipped); object stores have no symbolic links to guard against.
    """
    try:
        fs, path = remote(url)
        if _has_magic(path):
            return _glob_url(fs, path, url)
        info = fs.info(path)
        name = PurePosixPath(path.rstrip("/")).name
        if info.get("type") == "directory":
            if is_zarr(url):
                return [_file_ref(name, url)]
            return _walk_url(fs, path, url)
    except FileNotFoundError:
        raise ImageReadError(url, "file not found") from None
    except (ImageReadError, MemoryError):
        raise
    except Exception as exc:  # no credentials, no such bucket, no package for the scheme
        raise ImageReadError(url, f"cannot list it ({describe(exc)})") from exc
    if archive_kind(path):
        return _list_archive(url)
    return [_file_ref(name, url)]


def _walk_url(fs: Any, root: str, url: str) -> list[ImageRef]:
    # Top down, as `_walk_folder`: hidden folders and the insides of *.zarr stores (one
    # image each, maybe millions of chunk objects) are never listed.
    base = root.rstrip("/")
    found: dict[str, ImageRef] = {}
    for folder, dirs, files in fs.walk(base, detail=False):
        where = folder.rstrip("/")[len(base) :].strip("/")
        subdirs = []
        for d in dirs:
            rel = f"{where}/{d}".strip("/")
            if _hidden(d):
                continue
            if d.lower().endswith(".zarr"):
                found[rel] = _file_ref(rel, join(url, rel))
            else:
                subdirs.append(d)
        dirs[:] = subdirs
        for f in files:
            rel = f"{where}/{f}".strip("/")
            if not _hidden(f) and PurePosixPath(f).suffix.lower() in IMAGE_SUFFIXES:
                found[rel] = _file_ref(rel, join(url, rel))
    return [found[rel] for rel in sorted(found)]


def _glob_url(fs: Any, pattern: str, url: str) -> list[ImageRef]:
    matches = fs.glob(pattern, detail=True)
    if not matches:
        raise ImageReadError(url, "no file matches this pattern")
    root = "/".join(_fixed_head(pattern.split("/")))
    refs: list[ImageRef] = []
    for path in sorted(matches):
        rel = path[len(root) :].strip("/") if path.startswith(root) else path
        if any(_hidden(p) for p in rel.split("/")):
            continue  # as glob.glob skips them locally
        is_dir = matches[path].get("type") == "directory"
        refs.extend(_match_refs(rel, fs.unstrip_protocol(path), is_dir))
    return refs


def _list_archive(archive: str) -> list[ImageRef]:
    try:
        found = archive_members(archive)
    except MemoryError:
        raise
    except Exception as exc:
        # Reported as a failed image, not raised: the other inputs still run.
        name = _sanitise(strip_archive_suffix(PurePosixPath(archive.replace("\\", "/")).name))
        problem = f"cannot read the archive ({describe(exc)})"
        return [ImageRef(name, archive, archive, None, problem)]
    return [
        ImageRef(_name(member), f"{archive}::{member}", archive, member, problem)
        for member, problem in sorted(found.items())
        if _is_image_name(member)
    ]


# --- Names ---------------------------------------------------------------------------


def _name(rel: str) -> str:
    """Make a group name from a relative path: ``sub/dir/img.png`` gives ``sub_dir_img``."""
    path = PurePosixPath(rel.replace("\\", "/"))
    if path.suffix:
        path = path.with_suffix("")
    return _sanitise(str(path))


def _sanitise(name: str) -> str:
    # Zarr reserves names starting with "__"; names starting with "." are hidden.
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip("._")[:_MAX_NAME]
    return clean or "image"


def unique_names(refs: list[ImageRef]) -> list[ImageRef]:
    """Make the refs' names unique, ignoring case: ``-2``, ``-3``, ... in order of appearance."""
    taken: set[str] = set()
    out = []
    for ref in refs:
        name, n = ref.name, 1
        while name.lower() in taken:  # case-insensitive file systems hold the groups
            n += 1
            name = f"{ref.name}-{n}"
        taken.add(name.lower())
        out.append(ref if name == ref.name else replace(ref, name=name))
    return out
