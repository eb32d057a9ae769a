"""Codecs at the floor: zarr-python's codec pipeline against ``zarrs``'s, and Blosc threads.

The one-large-image issue asks for the codec pipeline to be at the floor. In one
process, with no Dask, this reads the 64 MP benchmark image and writes level 0 as
kmdist does (`kmdist.store.level_arrays`: the same shards, chunks and Blosc
codecs): the labels of an earlier kmdist run on it, and the recoloured image. It does
so with each configuration, interleaved, and reports the median seconds of the read and
of the writes, and whether the bytes on disk are those of zarr-python's default.

Configurations: zarr-python's ``BatchedCodecPipeline`` (the default) with Blosc on one
thread (as in a Dask worker process: kmdist's default) and on every core, and the
``zarrs`` package's ``ZarrsCodecPipeline`` (Rust; ``pip install zarrs``), if installed.

Usage: ``python bench/codecs.py [--repeats 3]`` (after ``bench/end_to_end.py`` has made
``/tmp/kmdist-bench/e2e-kmdist.zarr``, whose labels it writes).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from common import Row, machine, save
from gigapixel import make_image

from kmdist import Palette
from kmdist.store import level_arrays


@contextmanager
def configured(name: str) -> Iterator[None]:
    """Set the codec pipeline and Blosc threads of configuration `name` for a block."""
    from numcodecs import blosc

    threads, used = blosc.get_nthreads(), blosc.use_threads
    settings: dict[str, Any] = {}
    if name == "zarrs":
        settings["codec_pipeline.path"] = "zarrs.ZarrsCodecPipeline"
    # zarr sets numcodecs' `use_threads` off when imported, and then Blosc compresses on
    # one thread whatever `set_nthreads` says: both are set here.
    every_core = name == "zarr, Blosc on every core"
    blosc.use_threads = every_core
    blosc.set_nthreads((os.cpu_count() or 1) if every_core else 1)
    try:
        with zarr.config.set(settings):
            yield
    finally:
        blosc.set_nthreads(threads)
        blosc.use_threads = used


def _digest(folder: Path) -> str:
    """One hash of every file under `folder` (names and bytes), but the metadata."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "zarr.json":
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def once(src: Path, labels: np.ndarray, colors: np.ndarray, out: Path) -> tuple[float, float]:
    """Read `src` whole, then write level 0's two arrays; return both durations.

    The recoloured image is made before the write's clock starts: only codecs and I/O
    are timed.
    """
    t0 = time.perf_counter()
    zarr.open_array(str(src), mode="r")[...]
    read = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    k = len(colors)
    palette = Palette(colors=colors.astype(np.float64), counts=np.ones(k, np.int64), inertia=0.0)
    recoloured = np.ascontiguousarray(np.moveaxis(colors[labels], 2, 0))
    t0 = time.perf_counter()
    label_target, image_target = level_arrays(
        zarr.storage.LocalStore(str(out)), "seg/0", "image/0", labels.shape, (1024, 1024), palette
    )
    label_target[...] = labels
    image_target[...] = recoloured
    return read, time.perf_counter() - t0


def run(work: Path, repeats: int) -> dict[str, Any]:
    src = work / "photo-8192.zarr"
    make_image(src, 8192)
    seg = zarr.open_group(str(work / "e2e-kmdist.zarr" / "photo-8192"), mode="r")
    labels = np.asarray(seg["labels/segmentation/0"][...])
    colors = _palette(seg, labels)
    names = ["zarr, Blosc on 1 thread", "zarr, Blosc on every core"]
    try:
        import zarrs  # noqa: F401

        names.append("zarrs")
    except ImportError:
        print("zarrs is not installed (pip install zarrs): its row is left out", flush=True)
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    digests: dict[str, str] = {}
    for i in range(repeats):
        # A different configuration first each round: no one gains from a warm cache.
        for name in names[i % len(names) :] + names[: i % len(names)]:
            out = work / "codecs-out.zarr"
            with configured(name):
                times[name].append(once(src, labels, colors, out))
            digests[name] = _digest(out)
            back = zarr.open_array(str(out / "seg/0"), mode="r")[...]
            assert np.array_equal(back, labels), f"{name}: the labels read back differ"
            print(f"{name}: read {times[name][-1][0]:.2f} s, write {times[name][-1][1]:.2f} s")
    shutil.rmtree(work / "codecs-out.zarr", ignore_errors=True)
    base = statistics.median(w for _, w in times[names[0]])
    rows = []
    for name in names:
        read = statistics.median(r for r, _ in times[name])
        write = statistics.median(w for _, w in times[name])
        same = "same bytes" if digests[name] == digests[names[0]] else "other bytes, same labels"
        note = f"read {read:.2f} s; write {write / base:.2f}x the default's; {same}"
        runs = [w for _, w in times[name]]
        rows.append(Row("64 MP level 0, one process", name, write, note=note, runs=runs))
    return {"machine": machine(), "repeats": repeats, "rows": rows}


def _first_of_each(labels: np.ndarray) -> list[tuple[int, int]]:
    flat = labels.reshape(-1)
    _, first = np.unique(flat, return_index=True)
    return [divmod(int(i), labels.shape[1]) for i in first]


def _palette(seg: Any, labels: np.ndarray) -> np.ndarray:
    """The run's palette, read back from its recoloured image at a pixel of each label."""
    points = _first_of_each(labels)
    image = seg["0"]
    return np.array([np.asarray(image[:, y, x]) for y, x in points], dtype=np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kmdist-bench"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = run(args.work, args.repeats)
    for row in result["rows"]:
        print(f"{row.method:<28} write {row.seconds:6.2f} s  {row.note}")
    save("codecs", result)


if __name__ == "__main__":
    main()
