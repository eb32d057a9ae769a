"""Local paths and storage URLs (kmdist._fs), on disk and on fsspec's memory filesystem."""

from __future__ import annotations

import datetime
import os
import uuid

import fsspec
import pytest

from kmdist._fs import is_url, join, mtime, open_input, remote, stat


@pytest.fixture
def memory_root():
    fs = fsspec.filesystem("memory")
    root = f"/kmdist-fs-{uuid.uuid4().hex[:8]}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.mark.parametrize(
    ("path", "url"),
    [
        ("s3://bucket/key.png", True),
        ("gs://b/k", True),
        ("memory://x", True),
        ("git+ssh://host/repo", True),
        ("file:///tmp/a.png", True),
        ("/tmp/a.png", False),
        ("relative/a.png", False),
        ("C:\\images\\a.png", False),
        ("a.zip::s3://not/at/the/start", False),
        ("3d://starts-with-a-digit", False),
        ("s3:/one-slash", False),
    ],
)
def test_is_url_needs_a_scheme_at_the_start(path, url):
    assert is_url(path) is url


def test_join_urls_with_slashes_and_paths_as_the_os_does():
    assert join("s3://bucket/out/", "/a/", "b.zarr") == "s3://bucket/out/a/b.zarr"
    assert join("memory://root", "x") == "memory://root/x"
    assert join("/tmp/out", "a", "b.zarr") == os.path.join("/tmp/out", "a", "b.zarr")


def test_remote_gives_the_filesystem_and_the_path_without_scheme():
    fs, path = remote("memory://some/where/a.png")
    assert "memory" in fs.protocol and path == "/some/where/a.png"


def test_stat_and_open_of_a_local_file(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"0123456789")
    st = stat(str(path))
    assert (st.is_dir, st.size) == (False, 10)
    assert st.stamp == (10, os.stat(path).st_mtime_ns)
    with open_input(str(path)) as fp:
        fp.seek(4)
        assert fp.read(3) == b"456"
    assert stat(str(tmp_path)).is_dir
    # The stamp changes with the file.
    path.write_bytes(b"0123456789abc")
    assert stat(str(path)).stamp[0] == 13 and stat(str(path)).stamp != st.stamp
    with pytest.raises(FileNotFoundError):
        stat(str(tmp_path / "missing"))


def test_stat_and_open_of_a_url(memory_root):
    fs, root = memory_root
    fs.pipe(f"{root}/d/a.bin", b"0123456789")
    url = f"memory://{root}/d/a.bin"
    st = stat(url)
    assert (st.is_dir, st.size) == (False, 10)
    created = fs.info(f"{root}/d/a.bin")["created"]
    assert st.stamp == (10, mtime({"created": created}))
    with open_input(url) as fp:
        fp.seek(7)
        assert fp.read() == b"789"
        fp.seek(0)
        assert fp.read(2) == b"01"
    folder = stat(f"memory://{root}/d")
    assert folder.is_dir and folder.size == 0
    with pytest.raises(FileNotFoundError):
        stat(f"memory://{root}/missing")


def test_mtime_in_each_filesystem_s_own_key():
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    seconds = when.timestamp()
    assert seconds == 1714979289.0  # by hand: 2024-05-06T07:08:09Z
    assert mtime({"mtime": 1714979289}) == seconds  # local: a number
    assert mtime({"LastModified": when}) == seconds  # S3: a datetime
    assert mtime({"updated": "2024-05-06T07:08:09Z"}) == seconds  # GCS: ISO text
    assert mtime({"last_modified": "2024-05-06T07:08:09+00:00"}) == seconds  # Azure
    assert mtime({"created": 1714979289.5}) == seconds + 0.5  # memory
    # The first key that parses wins; text that is no date is passed over.
    assert mtime({"mtime": "yesterday", "updated": "2024-05-06T07:08:09Z"}) == seconds
    assert mtime({"size": 3}) is None
    assert mtime({"mtime": None, "created": "soon"}) is None
