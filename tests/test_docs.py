"""The docs against the code: generated results in place, and no path or name gone stale."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
START, END = "<!-- results:start -->", "<!-- results:end -->"

# `kmdist.` followed by a dotted name, not part of a longer path or word.
_DOTTED = re.compile(r"(?<![\w/.])kmdist(?:\.[A-Za-z_]\w*)+")
_PATH = re.compile(r"(?<![\w/.])kmdist/[\w/.*]*?\.py\b")
# Names in the docs that are not Python: the root's former image list (a Zarr
# attribute, in design.md's history) and the file names of results and stores.
_NOT_PYTHON = {"kmdist.images", "kmdist.zarr", "kmdist.lock"}


def test_benchmarks_page_holds_what_the_generator_prints() -> None:
    """docs/benchmarks.md's current results are what bench/report.py makes of the results."""
    out = subprocess.run(
        [sys.executable, "bench/report.py", "--markdown"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    assert page.count(START) == 1 and page.count(END) == 1
    block = page.split(START, 1)[1].split(END, 1)[0]
    assert block.strip() == out.strip(), (
        "docs/benchmarks.md is out of date: run python bench/run.py --report-only"
    )


def test_benchmarks_page_stays_short() -> None:
    assert len((ROOT / "docs" / "benchmarks.md").read_text().splitlines()) <= 320


def _mentions(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for match in pattern.finditer(doc.read_text()):
            found.append((doc.relative_to(ROOT).as_posix(), match.group(0)))
    return sorted(set(found))


@pytest.mark.parametrize(("doc", "path"), _mentions(_PATH))
def test_every_kmdist_path_in_the_docs_exists(doc: str, path: str) -> None:
    if "*" in path:  # a pattern, such as the former flat layout's kmdist/_*.py
        assert list(ROOT.glob(path)) or doc == "docs/design.md"
        return
    assert (ROOT / path).is_file(), f"{doc} names {path}, which does not exist"


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ImportError:
            continue
        for attr in parts[n:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize(("doc", "name"), _mentions(_DOTTED))
def test_every_kmdist_name_in_the_docs_resolves(doc: str, name: str) -> None:
    if name in _NOT_PYTHON:
        return
    assert _resolves(name), f"{doc} names {name}, which kmdist does not have"
