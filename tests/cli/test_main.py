"""The `kmdist` command."""

from __future__ import annotations

import re
import subprocess
import sys

import dask.array as da
import imageio.v3 as iio
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from sklearn.datasets import load_sample_image

from kmdist import learn_palette, list_segmentations, open_segmentation, segment
from kmdist.cli import main


@pytest.mark.slow
def test_demo_runs_the_flow_and_draws_the_seed_pictures(tmp_path, capsys, prefect_harness):
    assert main(["demo", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "blobs:  inertia 212.01" in out  # the four blobs, fitted with the default seed
    assert "Prefect start-up" in out
    assert re.search(r"Dask dashboard \(live while the demo runs\): http://\S+/status", out)
    infos = list_segmentations(tmp_path / "segmented.zarr")
    names = {i.name for i in infos}
    assert {"china", "flower"} <= names and all(i.complete and i.k == 16 for i in infos)
    assert len(list((tmp_path / "previews").glob("*.png"))) == len(infos)
    for name in ("blobs.png", "digits-centres.png", "china-16-colours.png", "china-k3.png"):
        img = iio.imread(tmp_path / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert img.std() > 10  # a picture, not a blank canvas


@pytest.mark.parametrize(
    "package",
    ["kmdist", "kmdist.io", "kmdist.kmeans", "kmdist.palette", "kmdist.pipeline", "kmdist.store"],
)
def test_public_names_resolve(package):
    import importlib

    module = importlib.import_module(package)
    assert module.__all__ and sorted(dir(module)) == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None
    with pytest.raises(AttributeError, match="nope"):
        _ = module.nope
    # The top level is the user's API (at most 25 names); the engine's plumbing is in
    # kmdist.pipeline.
    assert package != "kmdist" or len(module.__all__) <= 25


def test_the_command_starts_light():
    # `kmdist segment` starts its cluster before the heavy imports, so that they overlap.
    heavy = "('dask.array', 'zarr', 'numba')"
    code = f"import sys, kmdist.cli; print([m for m in {heavy} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_unknown_command_exits_non_zero():
    proc = subprocess.run(
        [sys.executable, "-m", "kmdist.cli", "bogus"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "invalid choice: 'bogus'" in proc.stderr


# --- kmdist segment / info ----------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("in")
    iio.imwrite(root / "china.png", np.ascontiguousarray(load_sample_image("china.jpg")[::6, ::6]))
    iio.imwrite(
        root / "flower.png", np.ascontiguousarray(load_sample_image("flower.jpg")[::6, ::6])
    )
    return root


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmdist.cli", *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_segment_on_its_own_local_cluster(folder, tmp_path):
    out = tmp_path / "out.zarr"
    proc = run("segment", str(folder), "-k", "5", "-o", str(out), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "Dask dashboard: http://" in proc.stdout
    # Progress lines follow completion: small images run in parallel on the workers.
    progress = sorted(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("["))
    assert progress == ["china", "flower"], proc.stdout
    assert "[1/2] " in proc.stdout and "[2/2] " in proc.stdout
    assert "2 done, 0 skipped, 0 failed" in proc.stdout
    info = run("info", str(out))
    assert info.returncode == 0
    assert "china: 72x107x3, k=5" in info.stdout
    again = run("segment", str(folder), "-k", "5", "-o", str(out), "--workers", "1")
    assert again.returncode == 1 and "already complete" in again.stderr


@pytest.mark.slow
def test_threads_and_processes_flags_choose_the_workers_and_agree(folder, tmp_path, worker_kinds):
    labels = {}
    for flag in ("--threads", "--processes"):
        out = tmp_path / f"{flag[2:]}.zarr"
        argv = ["segment", str(folder), "-k", "5", "-o", str(out), "--workers", "2", flag]
        assert main(argv) == 0
        labels[flag] = [np.asarray(open_segmentation(out, n).labels) for n in ("china", "flower")]
    # Threads: one Worker in this process (its threads share memory); processes: Nannies.
    assert worker_kinds == [{"Worker"}, {"_NannyProcess"}]
    for a, b in zip(labels["--threads"], labels["--processes"], strict=True):
        assert_array_equal(a, b)


@pytest.mark.slow
def test_one_small_image_runs_on_threads_unless_asked(folder, tmp_path, worker_kinds, monkeypatch):
    import kmdist.pipeline._kind

    one = str(folder / "china.png")

    def segment_to(name: str, *flags: str) -> None:
        out = str(tmp_path / f"{name}.zarr")
        assert main(["segment", one, "-k", "5", "-o", out, "--workers", "2", *flags]) == 0

    segment_to("a")
    segment_to("b", "--processes")
    # One image larger than the threads' limit: processes, as for a folder.
    monkeypatch.setattr(kmdist.pipeline._kind, "THREADS_UP_TO", 72 * 107 * 3 - 1)
    segment_to("c")
    assert worker_kinds == [{"Worker"}, {"_NannyProcess"}, {"_NannyProcess"}]
    a, b, c = (np.asarray(open_segmentation(tmp_path / f"{n}.zarr", "china").labels) for n in "abc")
    assert_array_equal(a, b)
    assert_array_equal(a, c)


def test_segment_matches_library_and_flags(folder, tmp_path, local_cluster, capsys):
    out = tmp_path / "out.zarr"
    address = local_cluster.scheduler_address
    code = main(
        [
            "segment",
            str(folder / "china.png"),
            "-k",
            "4",
            "-o",
            str(out),
            "--scheduler",
            address,
            "--preview",
            str(tmp_path / "pv"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "4 colours, inertia" in printed and "palette: #" in printed
    seg = open_segmentation(out, "china")
    img = iio.imread(folder / "china.png")

    from kmdist import learn_palette

    pal = learn_palette(img, 4)
    assert seg.palette == pal
    assert_array_equal(seg.labels.compute(), segment(da.from_array(img), pal).compute())
    assert (tmp_path / "pv" / "china.png").exists()
    # Resume skips, overwrite redoes; the OpenCV recipe runs too.
    assert (
        main(
            [
                "segment",
                str(folder / "china.png"),
                "-k",
                "4",
                "-o",
                str(out),
                "--scheduler",
                address,
                "--resume",
            ]
        )
        == 0
    )
    assert "already complete, skipped" in capsys.readouterr().out
    code = main(
        [
            "segment",
            str(folder / "china.png"),
            "-k",
            "3",
            "-o",
            str(out),
            "--scheduler",
            address,
            "--overwrite",
            "--init",
            "random",
            "--attempts",
            "10",
            "--max-iter",
            "100",
            "--eps",
            "0.85",
        ]
    )
    assert code == 0 and open_segmentation(out, "china").palette.k == 3


def test_segment_shared_palette(folder, tmp_path, local_cluster):
    out = tmp_path / "out.zarr"
    code = main(
        [
            "segment",
            str(folder),
            "-k",
            "6",
            "-o",
            str(out),
            "--shared-palette",
            "--scheduler",
            local_cluster.scheduler_address,
        ]
    )
    assert code == 0
    assert open_segmentation(out, "china").palette == open_segmentation(out, "flower").palette


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-k", "0"], 2, "must be in [1, 65535], got 0"),
        (["-k", "70000"], 2, "got 70000"),
        (["-k", "2.5"], 2, "invalid int value"),
    ],
)
def test_bad_k_exits_two(folder, tmp_path, args, code, message, capsys):
    # argparse refuses a non-integer itself, by SystemExit; kmdist returns the code.
    try:
        got = main(["segment", str(folder), "-o", str(tmp_path / "o.zarr"), *args])
    except SystemExit as exc:
        got = exc.code
    assert got == code
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()


def test_bad_inputs_exit_one_and_name_the_file(tmp_path, local_cluster, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    out = tmp_path / "o.zarr"
    code = main(
        [
            "segment",
            str(tmp_path / "notes.png"),
            str(tmp_path / "empty.jpg"),
            "-o",
            str(out),
            "--scheduler",
            local_cluster.scheduler_address,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "notes.png" in err and "empty.jpg" in err
    assert main(["segment", str(tmp_path / "missing.png"), "-o", str(out)]) == 1
    assert "missing.png" in capsys.readouterr().err


def test_discovery_errors_write_nothing(folder, tmp_path, local_cluster, capsys):
    out, address = tmp_path / "o.zarr", local_cluster.scheduler_address
    # A typo in the second input: checked before the first input's images are written.
    typo = tmp_path / "typo"
    assert main(["segment", str(folder), str(typo), "-o", str(out), "--scheduler", address]) == 1
    assert f"{typo}: file not found" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "empty").mkdir()
    code = main(["segment", str(tmp_path / "empty"), "-o", str(out), "--scheduler", address])
    assert code == 1
    assert f"{tmp_path / 'empty'}: no images found" in capsys.readouterr().err
    assert not out.exists()


def test_progress_counts_the_images_found_so_far(folder, tmp_path, local_cluster, capsys):
    # With previews, images go one at a time, each listed just before its turn: the
    # total is unknown until the listing ends, and the lines say so.
    out = tmp_path / "o.zarr"
    args = ["segment", str(folder), "-k", "3", "-o", str(out), "--preview", str(tmp_path / "pv")]
    assert main([*args, "--scheduler", local_cluster.scheduler_address]) == 0
    printed = capsys.readouterr().out
    heads = [line.split()[0] for line in printed.splitlines() if line.startswith("[")]
    assert heads == ["[1/1+]", "[2/2+]"], printed
    assert f"images -> {out}, listed as they go" in printed
    assert "2 done, 0 skipped, 0 failed" in printed


def test_unwritable_output_exits_one(folder, tmp_path, local_cluster, capsys):
    (tmp_path / "file.txt").write_text("x")
    code = main(
        [
            "segment",
            str(folder / "china.png"),
            "-o",
            str(tmp_path / "file.txt"),
            "--scheduler",
            local_cluster.scheduler_address,
        ]
    )
    assert code == 1
    assert "file.txt" in capsys.readouterr().err


@pytest.mark.slow
def test_segment_on_external_scheduler(folder, tmp_path, external_scheduler):
    out = tmp_path / "out.zarr"
    assert (
        main(["segment", str(folder), "-k", "5", "-o", str(out), "--scheduler", external_scheduler])
        == 0
    )
    img = iio.imread(folder / "flower.png")
    assert open_segmentation(out, "flower").palette == learn_palette(img, 5)


def test_info_reports_incomplete(tmp_path, capsys):
    store = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    store.create_group("half")
    assert main(["info", str(tmp_path / "s.zarr")]) == 3
    out = capsys.readouterr().out
    assert "half: INCOMPLETE" in out and "--resume" in out


def test_info_summary_counts_and_names_the_incomplete(tmp_path, capsys):
    import numpy as np

    from kmdist import Palette, write_segmentation

    store = tmp_path / "s.zarr"
    palette = Palette(np.array([[0, 0, 0], [9, 9, 9]]), np.array([2, 2]), 0.0)
    for name in ("a", "b", "c"):
        write_segmentation(store, name, np.array([[0, 1], [1, 0]], np.uint8), palette)
    zarr.open_group(str(store), mode="r+").create_group("half")
    assert main(["info", "--summary", str(store)]) == 3
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{store}: 3 complete, 1 incomplete"
    assert lines[1] == "incomplete: half"
    assert "--resume" in lines[2] and len(lines) == 3
    zarr.open_group(str(store), mode="r+").__delitem__("half")
    assert main(["info", "--summary", str(store)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{store}: 3 complete, 0 incomplete"]


@pytest.mark.parametrize(
    ("flags", "params"),
    [
        (["--method", "minibatch", "--seed", "3"], {"method": "minibatch", "random_state": 3}),
        (["--color-space", "lab", "--seed", "5"], {"color_space": "lab", "random_state": 5}),
    ],
)
def test_palette_flags_reach_the_palette(folder, tmp_path, local_cluster, flags, params):
    from kmdist import learn_palette

    out = tmp_path / "out.zarr"
    argv = ["segment", str(folder / "flower.png"), "-k", "5", "-o", str(out)]
    assert main([*argv, "--scheduler", local_cluster.scheduler_address, *flags]) == 0
    seg = open_segmentation(out, "flower")
    img = da.from_array(iio.imread(folder / "flower.png"), chunks=(64, 64, 3))
    ref = learn_palette(img, 5, **params)  # chunked differently: only the sums' order differs
    assert_array_equal(seg.palette.colors, ref.colors)
    assert_array_equal(seg.palette.counts, ref.counts)
    assert seg.palette.inertia == pytest.approx(ref.inertia, rel=1e-12)
    assert seg.palette.method == params.get("method", "exact")
    assert seg.palette.color_space == params.get("color_space", "rgb")
    assert seg.palette.seed == params["random_state"]


@pytest.mark.slow
def test_threads_shared_palette_over_small_and_large_images(tmp_path, capsys):
    # On threads the small images' batches run in this process beside the large images'
    # chunked path: neither may change how the other computes (a scheduler set for the
    # whole process made the large ones fail with "Missing dependency").
    china = load_sample_image("china.jpg")
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(3):
        iio.imwrite(folder / f"s{i}.png", np.ascontiguousarray(np.roll(china, 7 * i, 0)[::2, ::2]))
    big = np.ascontiguousarray(np.tile(china, (5, 4, 1))[:2100, :2100])  # above 4 MP
    iio.imwrite(folder / "large.png", big)
    out = tmp_path / "o.zarr"
    argv = ["segment", str(folder), "-k", "6", "-o", str(out), "--threads", "--shared-palette"]
    assert main(argv) == 0, capsys.readouterr()
    infos = list_segmentations(out)
    assert sorted(i.name for i in infos if i.complete) == ["large", "s0", "s1", "s2"]
    assert len({open_segmentation(out, i.name).palette for i in infos}) == 1
