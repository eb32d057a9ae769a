"""Where an output store lives: a local directory or a storage URL (``s3://...``).

Zarr reads and writes the arrays and metadata either way. What the store needs beyond
Zarr is here: creating the root group safely, locks between runs, clearing an image's
previous output, the time of a group's last write, and listing the groups.

Nothing on the path of one image's write depends on how many images the store holds:
the root group is created and checked once per process and store, and each image has a
lock of its own (`image_lock`), held only while its group is cleared and created.

A local root locks with ``flock``. A storage URL locks by creating an object only if it
does not exist (S3's ``If-None-Match``), which object stores offer in place of locks.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import zarr
from zarr.abc.store import Store
from zarr.buffer.cpu import Buffer

from kmdist._fs import is_url, mtime, remote
from kmdist.io import describe
from kmdist.store._errors import OutputError

__all__ = ["LOCK_NAME", "OutputError", "StoreRoot", "image_lock", "open_root"]

LOCK_NAME = ".kmdist.lock"
# Roots whose root group this process has created or checked (see `StoreRoot.prepare`).
_READY: set[str] = set()
# The root group's attributes. Images are found by listing the root: no list of them
# is kept, so that writing an image never rewrites anything shared by all images.
_ROOT_ATTRS = {"kmdist": {"layout": "one group per image; list the root to find them"}}
# A zarr LocalStore write in flight: `<stem>.<uuid4 hex>.partial`, renamed when complete.
_PARTIAL = re.compile(r"[^/]+\.[0-9a-f]{32}\.partial")
_NOT_A_STORE = "{root}: is a non-empty directory but not a Zarr store; refusing to write into it"
# A remote lock object unchanged for this long (its holder rewrites it every
# `_HEARTBEAT` seconds) was left by a run that died holding it.
_STALE_LOCK = 120.0
_LOCK_POLL = 0.1
# How often a holder rewrites the remote lock object, to show it is alive.
_HEARTBEAT = 20.0


def open_root(store: str | os.PathLike[str]) -> StoreRoot:
    """Return the root of output store `store`: a local directory path or a storage URL."""
    text = os.fspath(store)
    if not isinstance(text, str) or not text:
        raise OutputError(f"{store!r}: the store must be a directory path or a storage URL")
    if is_url(text):
        try:
            return RemoteRoot(text)
        except Exception as exc:  # no package for the scheme (s3fs), a malformed URL
            raise OutputError(f"{text}: cannot use the store: {describe(exc)}") from exc
    return LocalRoot(Path(text).expanduser())


def image_lock(name: str) -> str:
    """Name of image `name`'s lock at the root: a hash, so any image name fits."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=10)
    return f"{LOCK_NAME}.{digest.hexdigest()}"


class StoreRoot(ABC):
    """The root of an output store and the file operations the store needs."""

    #: What `zarr.open_group` takes to open the root.
    store: Any

    def zarr_store(self) -> Store:
        """Return the root as a zarr `Store` (what zarr's arrays write through)."""
        if isinstance(self.store, Store):
            return self.store
        return zarr.storage.LocalStore(self.store)

    @abstractmethod
    def put(self, items: Mapping[str, bytes]) -> None:
        """Write `items` (bytes by key under the root) as one batch, in no given order.

        One request per item and no reads: the caller knows what it replaces. A failure
        raises the store's `OSError`; items written before it stay.
        """

    def prepare(self) -> None:
        """Create the root group if needed, refusing locations that are not stores.

        The full check (and the root's lock) runs once per process and root; after
        that, one look at the root's ``zarr.json`` per call.
        """
        ours = str(self) in _READY
        if ours and self.has_root_group():
            return
        self._check_target(ours)
        with self.lock():
            if not self.has_root_group():
                # Checked again under the lock: another writer may have created it meanwhile.
                # A root this process made before and that has gone (removed mid-run) holds
                # at most this run's own writes in flight: made again, not refused.
                if not ours and self._is_foreign():
                    raise OutputError(_NOT_A_STORE.format(root=self))
                try:
                    zarr.open_group(
                        self.store,
                        mode="a",
                        zarr_format=3,
                        attributes={"kmdist": {"layout": "one group per image"}},
                    )
                except OSError as exc:
                    raise OutputError(f"{self}: cannot write: {exc.strerror or exc}") from exc
            else:
                try:
                    zarr.open_group(self.store, mode="r+", zarr_format=3)
                except (ValueError, TypeError, FileNotFoundError) as exc:
                    raise OutputError(f"{self}: not a Zarr v3 group: {exc}") from exc
        _READY.add(str(self))

    @abstractmethod
    def lock(self, key: str = LOCK_NAME) -> contextlib.AbstractContextManager[None]:
        """Hold the lock named `key` at the root, between processes and hosts.

        The default is the store's own lock (creating the root group); `image_lock`
        names one image's.
        """

    @abstractmethod
    def has_root_group(self) -> bool:
        """Whether the root's ``zarr.json`` exists."""

    @abstractmethod
    def has(self, name: str) -> bool:
        """Whether anything named `name` exists in the root (a group, a file, a link)."""

    @abstractmethod
    def names(self) -> Iterator[str]:
        """Names of the folders (prefixes) at the root, in no order: the images' groups."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Remove `name` and everything under it."""

    @abstractmethod
    def last_write(self, name: str) -> float:
        """Newest modification time (seconds since the epoch) of anything under `name`."""

    @abstractmethod
    def _check_target(self, ours: bool = False) -> None:
        """Refuse a location that cannot be a store; `ours`: one this process made."""

    @abstractmethod
    def _is_foreign(self) -> bool: ...


class LocalRoot(StoreRoot):
    """A store in a local directory (or one mounted from a file server)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = str(path)
        self._zarr: zarr.storage.LocalStore | None = None

    def __str__(self) -> str:
        return str(self.path)

    def zarr_store(self) -> Store:
        if self._zarr is None:
            self._zarr = zarr.storage.LocalStore(self.store)
        return self._zarr

    def put(self, items: Mapping[str, bytes]) -> None:
        # zarr's own synchronous write (`SupportsSetSync`): the parent folders made, each
        # file written beside its name and renamed over it, as zarr writes every key, so
        # a reader never sees half a document; and no event loop to go through.
        store = self.zarr_store()
        assert isinstance(store, zarr.storage.LocalStore)
        for key, value in items.items():
            store.set_sync(key, Buffer.from_bytes(value))

    def _check_target(self, ours: bool = False) -> None:
        root = self.path
        if root.exists() and not root.is_dir():
            raise OutputError(f"{root}: exists and is a file, not a Zarr store")
        if root.is_dir() and not ours and self._is_foreign():
            raise OutputError(_NOT_A_STORE.format(root=root))
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{root}: cannot create the store: {exc.strerror or exc}") from exc
        if not os.access(root, os.W_OK | os.X_OK):
            # A read-only file system, or permissions: said as the OSError a write would
            # raise, and carrying it, so that a run sees the store's permanent error.
            code = errno.EROFS if os.statvfs(root).f_flag & os.ST_RDONLY else errno.EACCES
            denied = OSError(code, os.strerror(code), str(root))
            raise OutputError(f"{root}: not writable: {denied.strerror}") from denied

    def _is_foreign(self) -> bool:
        """Whether the root holds entries but is not a Zarr store.

        zarr.json is looked for again after listing: a concurrent writer creates it
        before anything else, so entries seen without it afterwards were there before.
        Zarr's LocalStore writes ``zarr.json`` as ``zarr.<uuid>.partial`` and renames
        it, so such a file (and our lock) does not count.
        """
        if self.has_root_group():
            return False
        with os.scandir(self.path) as entries:
            foreign = any(
                not e.name.startswith(LOCK_NAME) and _PARTIAL.fullmatch(e.name) is None
                for e in entries
            )
        return foreign and not self.has_root_group()

    def has_root_group(self) -> bool:
        return (self.path / "zarr.json").exists()

    def has(self, name: str) -> bool:
        return os.path.lexists(self.path / name)

    def names(self) -> Iterator[str]:
        with os.scandir(self.path) as entries:
            for e in entries:
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False):
                    yield e.name

    def remove(self, name: str) -> None:
        target = self.path / name
        try:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        except OSError as exc:
            raise OutputError(
                f"{target}: cannot remove the previous output: {exc.strerror or exc}"
            ) from exc

    def last_write(self, name: str) -> float:
        group = self.path / name
        newest = group.lstat().st_mtime
        for folder, dirs, files in os.walk(group):
            for entry in (*dirs, *files):
                with contextlib.suppress(FileNotFoundError):  # a write in flight renamed it
                    newest = max(newest, os.lstat(os.path.join(folder, entry)).st_mtime)
        return newest

    @contextlib.contextmanager
    def lock(self, key: str = LOCK_NAME) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``root/KEY`` (``.kmdist.lock`` by default).

        The file is removed before the lock is released, so it never lingers as a stray
        object in the store. A waiter that then obtains the lock on the removed file
        sees that the path no longer names its file, and tries again.
        """
        path = self.path / key
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"{path}: cannot create the lock file: {exc.strerror}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass  # removed by the previous holder: try again with a fresh file
            except OSError as exc:
                os.close(fd)
                raise OutputError(f"{path}: cannot lock: {exc.strerror}") from exc
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)


class RemoteRoot(StoreRoot):
    """A store at a storage URL, written through fsspec (S3 and compatible servers).

    Object stores cache nothing here that another run could change: listings are
    invalidated before every check.
    """

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, path = remote(self.url)
        self.path = path.rstrip("/")
        self.store = zarr.storage.FsspecStore.from_url(self.url)

    def __str__(self) -> str:
        return self.url

    def _key(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    def put(self, items: Mapping[str, bytes]) -> None:
        # One `pipe` of the whole batch: fsspec sends its requests concurrently.
        self.fs.pipe({self._key(key): value for key, value in items.items()})

    def _fresh(self) -> None:
        self.fs.invalidate_cache(self.path)

    def _check_target(self, ours: bool = False) -> None:
        self._fresh()
        bucket = self.path.split("/", 1)[0]
        try:
            if bucket:
                # `info`, not `exists`: that answers False for a credentials error too.
                try:
                    self.fs.info(bucket)
                except FileNotFoundError:
                    raise OutputError(f"{self}: no such bucket (or container) {bucket!r}") from None
            if self.fs.isfile(self.path):
                raise OutputError(f"{self}: exists and is a file, not a Zarr store")
            if self.fs.isdir(self.path) and not ours and self._is_foreign():
                raise OutputError(_NOT_A_STORE.format(root=self))
        except OutputError:
            raise
        except Exception as exc:  # no credentials, no permission, no network
            raise OutputError(f"{self}: cannot use the store: {describe(exc)}") from exc

    def _is_foreign(self) -> bool:
        if self.has_root_group():
            return False
        try:
            entries = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            return False
        foreign = any(not e.rstrip("/").rsplit("/", 1)[-1].startswith(LOCK_NAME) for e in entries)
        return foreign and not self.has_root_group()

    def has_root_group(self) -> bool:
        info = self._info(self._key("zarr.json"))
        return info is not None and info.get("type") == "file"

    def has(self, name: str) -> bool:
        return self._info(self._key(name)) is not None

    def _info(self, key: str) -> dict[str, Any] | None:
        """`info` of `key`, None if absent; any other failure names the store.

        Not fsspec's `exists` / `isfile`: they answer False for a credentials error too.
        """
        self._fresh()
        try:
            info: dict[str, Any] = self.fs.info(key)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise OutputError(f"{self}: cannot use the store: {describe(exc)}") from exc
        return info

    def names(self) -> Iterator[str]:
        # One listing of the root, in pages of 1,000 names.
        self._fresh()
        for entry in self.fs.ls(self.path, detail=True):
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") == "directory" and not name.startswith("."):
                yield name

    def remove(self, name: str) -> None:
        try:
            self.fs.rm(self._key(name), recursive=True)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise OutputError(
                f"{self}/{name}: cannot remove the previous output: {exc.strerror or exc}"
            ) from exc
        self._fresh()

    def last_write(self, name: str) -> float:
        self._fresh()
        infos = self.fs.find(self._key(name), detail=True).values()
        times = [t for t in (mtime(i) for i in infos) if t is not None]
        return max(times, default=0.0)

    @contextlib.contextmanager
    def lock(self, key: str = LOCK_NAME) -> Iterator[None]:
        """Hold the lock object ``KEY`` (``.kmdist.lock`` by default), created only if absent.

        The holder rewrites the object every `_HEARTBEAT` seconds, so a waiter that sees
        it unchanged for `_STALE_LOCK` seconds of its own clock (no clock is compared
        across hosts) takes it to be left by a run that died, and removes it. The holder
        removes the object at the end only if it is still its own.
        """
        name, key = key, self._key(key)
        mine = uuid.uuid4().hex
        seen: tuple[bytes, float] | None = None
        while True:
            try:
                with self.fs.open(key, "xb") as f:
                    f.write(f"{mine} 0".encode())
                break
            except FileExistsError:
                pass
            except (ValueError, NotImplementedError) as exc:  # no exclusive-create mode
                raise OutputError(
                    f"{self}/{name}: cannot create the lock: this storage cannot create "
                    f"an object only if it is absent, which the store needs ({exc})"
                ) from exc
            except Exception as exc:
                raise OutputError(
                    f"{self}/{name}: cannot create the lock: {describe(exc)}"
                ) from exc
            holder, now = self._read(key), time.monotonic()
            if holder is not None:
                if seen is None or seen[0] != holder:
                    seen = (holder, now)
                elif now - seen[1] > _STALE_LOCK:
                    if self._read(key) == holder:  # not taken over meanwhile
                        with contextlib.suppress(FileNotFoundError):
                            self.fs.rm_file(key)
                    seen = None
                    continue
            time.sleep(_LOCK_POLL)
        beats = [0]
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(_HEARTBEAT):
                beats[0] += 1
                with contextlib.suppress(Exception):  # a missed beat is not an error
                    self.fs.pipe_file(key, f"{mine} {beats[0]}".encode())

        beating = threading.Thread(target=heartbeat, name="kmdist-lock-heartbeat", daemon=True)
        beating.start()
        try:
            yield
        finally:
            done.set()
            beating.join()
            held = self._read(key)
            if held is not None and held.split()[0] == mine.encode():
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(key)

    def _read(self, key: str) -> bytes | None:
        try:
            data: bytes = self.fs.cat_file(key)
        except FileNotFoundError:
            return None
        return data
