"""Streaming discovery (kmdist.io._listing, `iter_images`): the refs a whole sort gives,
one folder listed at a time, in memory that does not grow with the refs."""

from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePath, PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import kmdist
from kmdist.io._errors import ImageReadError, describe
from kmdist.io._listing import IMAGE_SUFFIXES, ImageRef, _hidden, _name, _sanitise
from kmdist.io._open import iter_images

# --- The reference: listing as it was before streaming (os.walk, one global sort) ------


def _reference_name(rel: str) -> str:
    path = PurePosixPath(rel.replace("\\", "/"))
    if path.suffix:
        path = path.with_suffix("")
    return _sanitise(str(path))


def _reference_ref(full: str, root: str, real_root: str, follow: bool) -> tuple[str, ImageRef]:
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
    return rel, ImageRef(_reference_name(rel), full, full, None, problem)


def _reference_walk(root: str, follow: bool) -> list[ImageRef]:
    """Every ref found by os.walk, then sorted by relative path: the order to keep."""
    real_root = os.path.realpath(root)
    found: list[tuple[str, ImageRef]] = []
    seen: set[str] = set()

    def unlisted(err: OSError) -> None:
        where = err.filename if isinstance(err.filename, str) else root
        rel = PurePath(os.path.relpath(where, root)).as_posix()
        problem = f"cannot list this folder ({describe(err)})"
        found.append((rel, ImageRef(_reference_name(rel), where, where, None, problem)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted, followlinks=follow):
        if follow:
            real = os.path.realpath(dirpath)
            if real in seen:
                dirnames.clear()
                continue
            seen.add(real)
        subdirs = []
        for d in dirnames:
            if _hidden(d):
                continue
            if d.lower().endswith(".zarr"):
                found.append(_reference_ref(os.path.join(dirpath, d), root, real_root, follow))
            else:
                subdirs.append(d)
        dirnames[:] = subdirs
        for f in filenames:
            if not _hidden(f) and PurePosixPath(f).suffix.lower() in IMAGE_SUFFIXES:
                found.append(_reference_ref(os.path.join(dirpath, f), root, real_root, follow))
    return [ref for _, ref in sorted(found, key=lambda item: item[0])]


def _reference_unique(refs: list[ImageRef]) -> list[ImageRef]:
    taken: set[str] = set()
    out = []
    for ref in refs:
        name, n = ref.name, 1
        while name.lower() in taken:
            n += 1
            name = f"{ref.name}-{n}"
        taken.add(name.lower())
        out.append(ref if name == ref.name else replace(ref, name=name))
    return out


@pytest.fixture
def locked(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Folders whose listing is refused (root may list any folder: fake the refusal).

    os.walk calls os.scandir too, so the reference sees the same refusals.
    """
    refused: set[str] = set()
    real_scandir = os.scandir

    def scandir(path: str) -> Iterator[os.DirEntry[str]]:
        if os.path.basename(os.path.normpath(path)) in refused:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return refused


def _touch(root: Path, rels: list[str]) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            (root / rel).mkdir(exist_ok=True)
        else:
            (root / rel).touch()


# --- Order and names ----------------------------------------------------------------


def test_tricky_tree_same_refs_order_and_names(tmp_path, locked):
    _touch(
        tmp_path,
        [
            "a.png", "a-b/x.png", "a/x.png", "a0.png", "A/x.png", "a_x.png",
            "img.png", "img.jpg", "sub.png", "sub/img.png", "notes.txt",
            ".hidden.png", ".hid/x.png", "__MACOSX/x.png",
            "deep/s.zarr/zarr.json", "deep/s.zarr/c/inner.png", "t.zarr/",
            "deep/locked2/x.png", "deep/locked2.png",
            "locked/x.png", "locked.png", "locked-2/x.png", "zlocked/x.png",
        ],
    )  # fmt: skip
    locked.update({"locked", "locked2", "zlocked"})
    refs = list(iter_images(tmp_path))
    assert refs == _reference_unique(_reference_walk(str(tmp_path), False))
    # By hand, as the sort by relative path gives them (A < _ < a; - < . < / < 0).
    assert [r.name for r in refs] == [
        "A_x", "a-b_x", "a", "a_x-2", "a0", "a_x-3",
        "deep_locked2", "deep_locked2-2", "deep_s",
        "img", "img-2",
        "locked", "locked-2_x", "locked-2",
        "sub", "sub_img", "t", "zlocked",
    ]  # fmt: skip
    failing = [r.source for r in refs if r._problem]
    assert failing == [str(tmp_path / p) for p in ("deep/locked2", "locked", "zlocked")]
    with pytest.raises(ImageReadError, match="cannot list this folder"):
        refs[-1].open()


def test_unlistable_root_is_one_failing_ref(tmp_path, locked):
    root = tmp_path / "root"
    _touch(root, ["a.png"])
    locked.add("root")
    assert list(iter_images(root)) == _reference_walk(str(root), False)
    [ref] = iter_images(root)
    assert ref.name == "image" and "cannot list this folder" in (ref._problem or "")


def test_links_same_refs_as_before(tmp_path):
    outside = tmp_path / "outside"
    _touch(outside, ["secret.png", "deeper/s.png"])
    root = tmp_path / "root"
    _touch(root, ["own.png", "d/x.png"])
    (root / "link.png").symlink_to(outside / "secret.png")
    (root / "inside.png").symlink_to(root / "own.png")
    (root / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "ext.zarr").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    for follow in (False, True):
        refs = list(iter_images(root, follow_symlinks=follow))
        assert refs == _reference_unique(_reference_walk(str(root), follow))
    assert "linkdir_deeper_s" in {r.name for r in refs}


_NAMES = ["a", "A", "a-b", "a.b", "a0", "a_x", "b", ".h", "__MACOSX", "s.zarr"]
_SUFFIXES = ["", ".png", ".jpg", ".PNG", ".txt", ".zarr"]
_entry = st.tuples(st.sampled_from(_NAMES), st.sampled_from(_SUFFIXES)).map("".join)
# A tree: None is a file, (locked, children) a folder.
_tree = st.recursive(
    st.none(),
    lambda kids: st.tuples(st.booleans(), st.dictionaries(_entry, kids, max_size=5)),
    max_leaves=25,
)


def _build(where: Path, node: object, refused: set[str]) -> None:
    if node is None:
        where.touch()
        return
    assert isinstance(node, tuple)
    shut, children = node
    where.mkdir()
    if shut:
        refused.add(str(where))
    for name, child in children.items():
        _build(where / name, child, refused)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_tree.filter(lambda t: isinstance(t, tuple)))
def test_random_trees_same_refs_as_one_global_sort(tree):
    base = Path(tempfile.mkdtemp())
    refused: set[str] = set()
    real_scandir = os.scandir

    def scandir(path: str) -> Iterator[os.DirEntry[str]]:
        if os.path.normpath(path) in refused and os.path.normpath(path) != str(base / "r"):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    try:
        _build(base / "r", tree, refused)
        os.scandir = scandir  # type: ignore[assignment]
        try:
            got = list(iter_images(base / "r"))
            want = _reference_unique(_reference_walk(str(base / "r"), False))
        finally:
            os.scandir = real_scandir
        assert got == want
    finally:
        shutil.rmtree(base)


@given(st.text(alphabet="ab./\\_-. é", max_size=12))
def test_names_as_pathlib_gave_them(rel):
    assert _name(rel) == _reference_name(rel)


def test_archives_and_patterns_as_before(tmp_path):
    import zipfile

    _touch(tmp_path, ["g/b.png", "g/a.png", "g/sub/c.png"])
    with zipfile.ZipFile(tmp_path / "g" / "set.zip", "w") as zf:
        for member in ["./z/b.png", "a.png", "A.png", ".h.png", "notes.txt"]:
            zf.writestr(member, b"")
    inputs = [str(tmp_path / "g" / "*"), tmp_path / "g" / "set.zip"]
    refs = list(iter_images(inputs))
    assert [r.name for r in refs] == [r.name for r in _reference_unique(refs)]
    assert [(r.name, r._member) for r in refs] == [
        ("a", None),
        ("b", None),
        ("z_b", "./z/b.png"),  # the archive's members, sorted, named unique across inputs
        ("A-2", "A.png"),
        ("a-3", "a.png"),
        ("z_b-2", "./z/b.png"),
        ("A-4", "A.png"),
        ("a-5", "a.png"),
    ]


# --- Errors up front, streaming, memory -----------------------------------------------


@pytest.fixture
def scandirs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The folders listed so far, in order."""
    calls: list[str] = []
    real_scandir = os.scandir

    def scandir(path: str) -> Iterator[os.DirEntry[str]]:
        calls.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return calls


def test_missing_input_raises_before_any_listing(tmp_path, scandirs):
    _touch(tmp_path, [f"d{i}/x.png" for i in range(5)])
    with pytest.raises(ImageReadError, match="file not found"):
        iter_images([tmp_path, tmp_path / "typo"])  # raised by the call, before any ref
    assert scandirs == []  # the folder before it not walked
    with pytest.raises(ImageReadError, match="no file matches this pattern"):
        iter_images([tmp_path, f"{tmp_path}/*.tif"])
    assert scandirs == [str(tmp_path)]  # the pattern's search for a first match, only


def test_first_ref_before_the_walk_ends(tmp_path, scandirs, monkeypatch):
    _touch(tmp_path, [f"d{i:02d}/{j}.png" for i in range(50) for j in range(2)])
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open
    monkeypatch.setattr(
        builtins, "open", lambda f, *a, **k: opened.append(f) or real_open(f, *a, **k)
    )
    monkeypatch.setattr(os, "open", lambda f, *a, **k: opened.append(f) or real_os_open(f, *a, **k))
    stream = kmdist.iter_images(tmp_path)
    assert scandirs == []  # nothing listed until asked
    first = next(stream)
    assert first.name == "d00_0"
    assert scandirs == [str(tmp_path), str(tmp_path / "d00")]
    assert sum(1 for _ in stream) == 99
    assert len(scandirs) == 51
    # Listing reads names only, never a file of the tree (other threads of the test
    # session, a cluster's system monitor reading /proc, may open files meanwhile).
    assert [f for f in opened if str(f).startswith(str(tmp_path))] == []


@pytest.mark.parametrize("layout", ["flat", "100 a folder"])
@pytest.mark.parametrize("n", [2_000, 20_000])
def test_memory_does_not_hold_the_refs(tmp_path, n, layout):
    for i in range(n):
        folder = tmp_path if layout == "flat" else tmp_path / f"d{i // 100:04d}"
        folder.mkdir(exist_ok=True)
        (folder / f"img_{i:06d}.png").touch()  # empty: listing never opens a file
    # Measured in a process of its own: in the test session other threads (clusters,
    # servers started by fixtures) allocate meanwhile, and tracemalloc would count them.
    script = textwrap.dedent(
        f"""
        import json, tracemalloc
        from kmdist import iter_images, open_images
        tracemalloc.start()
        count = sum(1 for _ in iter_images({str(tmp_path)!r}))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        held = open_images({str(tmp_path)!r})
        listed = tracemalloc.get_traced_memory()[0]
        print(json.dumps([count, len(held), peak, listed]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    count, n_held, peak, listed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert count == n_held == n
    # Measured: 40 to 72 bytes an image (the names taken; a flat folder's listing while
    # it is walked), where the list of refs holds 270 to 290.
    assert peak / n < 120, peak / n
    assert peak < n * 344 / 2
    assert listed / n > 2 * peak / n  # the bound tells streaming from holding the refs
