"""The Prefect flows, under a real (temporary) Prefect API and real Dask clusters."""

from __future__ import annotations

import re
import urllib.request

import imageio.v3 as iio
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from sklearn.datasets import load_sample_image

from flows.segment import main as flow_main, segment_archive, segment_image
from kmdist import list_segmentations, open_segmentation
from kmdist.cli import main as cli_main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A folder of four small photos plus a corrupt JPEG, and a zip of the good ones."""
    import zipfile

    root = tmp_path_factory.mktemp("archive")
    photos = root / "photos"
    photos.mkdir()
    china = load_sample_image("china.jpg")
    flower = load_sample_image("flower.jpg")
    crops = {
        "china-a.png": china[::5, ::5],
        "china-b.png": china[100:300:3, 200:500:3],
        "flower-a.png": flower[::5, ::5],
        "flower-b.png": flower[50:350:3, 100:400:3],
    }
    for name, img in crops.items():
        iio.imwrite(photos / name, np.ascontiguousarray(img))
    with zipfile.ZipFile(root / "photos.zip", "w") as zf:
        for name in crops:
            zf.write(photos / name, f"set/{name}")
    bad = root / "with-bad"
    bad.mkdir()
    for name in ("china-a.png", "flower-a.png"):
        (bad / name).write_bytes((photos / name).read_bytes())
    good_jpeg = iio.imwrite("<bytes>", np.ascontiguousarray(flower[::4, ::4]), extension=".jpg")
    (bad / "truncated.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])
    return root


def labels_of(store, name):
    return open_segmentation(store, name).labels.compute()


def test_archive_flow_matches_cli(archive, tmp_path, local_cluster):
    address = local_cluster.scheduler_address
    out_flow = tmp_path / "flow.zarr"
    state = segment_archive(
        str(archive / "photos"),
        str(out_flow),
        k=6,
        dask_address=address,
        preview_dir=str(tmp_path / "pv"),
        return_state=True,
    )
    assert state.is_completed(), state.message
    summary = state.result()
    assert (summary["images"], summary["done"], summary["failed"]) == (4, 4, 0)
    names = [i.name for i in list_segmentations(out_flow) if i.complete]
    assert names == ["china-a", "china-b", "flower-a", "flower-b"]
    out_cli = tmp_path / "cli.zarr"
    assert (
        cli_main(
            [
                "segment",
                str(archive / "photos"),
                "-k",
                "6",
                "-o",
                str(out_cli),
                "--scheduler",
                address,
            ]
        )
        == 0
    )
    for name in names:
        a, b = open_segmentation(out_flow, name), open_segmentation(out_cli, name)
        assert a.palette == b.palette
        assert_array_equal(a.labels.compute(), b.labels.compute())
        assert (tmp_path / "pv" / f"{name}.png").exists()


def test_zip_archive_and_single_image(archive, tmp_path, local_cluster):
    address = local_cluster.scheduler_address
    state = segment_archive(
        str(archive / "photos.zip"),
        str(tmp_path / "z.zarr"),
        k=4,
        dask_address=address,
        return_state=True,
    )
    assert state.is_completed(), state.message
    names = [i.name for i in list_segmentations(tmp_path / "z.zarr")]
    assert names == ["set_china-a", "set_china-b", "set_flower-a", "set_flower-b"]
    one = segment_image(
        str(archive / "photos" / "china-b.png"),
        str(tmp_path / "one.zarr"),
        k=4,
        dask_address=address,
        return_state=True,
    )
    assert one.is_completed()
    assert_array_equal(
        labels_of(tmp_path / "one.zarr", "china-b"), labels_of(tmp_path / "z.zarr", "set_china-b")
    )


def test_corrupt_image_fails_alone(archive, tmp_path, local_cluster):
    out = tmp_path / "o.zarr"
    state = segment_archive(
        str(archive / "with-bad"),
        str(out),
        k=5,
        dask_address=local_cluster.scheduler_address,
        return_state=True,
    )
    assert state.is_failed()
    assert "1 of 3 images failed" in state.message and "truncated.jpg" in state.message
    infos = {i.name: i.complete for i in list_segmentations(out)}
    assert infos.get("china-a") and infos.get("flower-a")
    assert not infos.get("truncated", False)


def writer_run(store, name):
    group = zarr.open_group(str(store / name / "labels" / "segmentation"), mode="r")
    return group.attrs["kmdist"]["writer"]["run"]


def test_resume_redoes_only_the_incomplete(archive, tmp_path, local_cluster):
    address = local_cluster.scheduler_address
    out = tmp_path / "o.zarr"
    first = segment_archive(str(archive / "photos"), str(out), k=5, dask_address=address)
    assert first["done"] == 4
    before = {i.name: labels_of(out, i.name) for i in list_segmentations(out)}
    # Simulate a run interrupted while writing flower-b: its marker says incomplete.
    group = zarr.open_group(str(out / "flower-b" / "labels" / "segmentation"), mode="r+")
    group.attrs["kmdist"] = {**group.attrs["kmdist"], "complete": False}
    runs = {i.name: writer_run(out, i.name) for i in list_segmentations(out)}
    second = segment_archive(str(archive / "photos"), str(out), k=5, dask_address=address)
    assert (second["done"], second["skipped"], second["failed"]) == (1, 3, 0)
    # Each image's writer names the run that wrote it: only flower-b was written again.
    redone = {i.name for i in list_segmentations(out) if writer_run(out, i.name) != runs[i.name]}
    assert redone == {"flower-b"}
    for name, labels in before.items():
        assert_array_equal(labels_of(out, name), labels)


def test_shared_palette_in_every_image(archive, tmp_path, local_cluster):
    out = tmp_path / "o.zarr"
    summary = segment_archive(
        str(archive / "with-bad"),
        str(out),
        k=6,
        shared_palette=True,
        dask_address=local_cluster.scheduler_address,
        return_state=True,
    )
    assert summary.is_failed()  # the truncated JPEG, alone
    pals = [open_segmentation(out, n).palette for n in ("china-a", "flower-a")]
    assert pals[0] == pals[1] and pals[0].k == 6


def test_shared_palette_over_mixed_inputs_fails_the_grey_image_alone(
    archive, tmp_path, local_cluster
):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("china-a.png", "flower-a.png"):
        (folder / name).write_bytes((archive / "photos" / name).read_bytes())
    grey = iio.imread(archive / "photos" / "china-b.png").mean(axis=2).astype(np.uint8)
    iio.imwrite(folder / "grey.png", grey)
    out = tmp_path / "o.zarr"
    state = segment_archive(
        str(folder),
        str(out),
        k=6,
        shared_palette=True,
        dask_address=local_cluster.scheduler_address,
        return_state=True,
    )
    assert state.is_failed()
    assert "1 of 3 images failed" in state.message and str(folder / "grey.png") in state.message
    assert "1 channel(s) of uint8" in state.message
    pals = [open_segmentation(out, n).palette for n in ("china-a", "flower-a")]
    assert pals[0] == pals[1] and pals[0].k == 6
    assert not any(i.name == "grey" and i.complete for i in list_segmentations(out))


def test_flow_on_external_scheduler_and_dashboard_answers(archive, tmp_path, external_scheduler):
    """The flow on separately started `dask scheduler`/`dask worker` processes publishes
    its dashboard link before the run ends (so it can be watched while it runs), and the
    link answers.

    Ordered by the API's own timestamps, not by racing the run: a small archive can finish
    before a poll sees it in flight.
    """
    from distributed import Client
    from prefect.client.orchestration import get_client

    with Client(external_scheduler) as client:
        link = client.dashboard_link
    out = tmp_path / "ext.zarr"
    state = segment_archive(
        str(archive / "photos"), str(out), k=8, dask_address=external_scheduler, return_state=True
    )
    assert state.is_completed()
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as api:
        run = api.read_flow_run(run_id)
        arts = [
            a for a in api.read_artifacts() if a.key == "dask-dashboard" and a.flow_run_id == run_id
        ]
    assert len(arts) == 1
    # A link artifact's data is markdown: [text](url).
    assert re.findall(r"\((http[^)]+)\)", str(arts[0].data)) == [link]
    assert run.start_time is not None and run.end_time is not None
    assert run.start_time <= arts[0].created < run.end_time
    with urllib.request.urlopen(link, timeout=10) as resp:
        assert resp.status == 200
    segment_archive(str(archive / "photos"), str(tmp_path / "local.zarr"), k=8, n_workers=2)
    for info in list_segmentations(out):
        assert_array_equal(labels_of(out, info.name), labels_of(tmp_path / "local.zarr", info.name))


def test_flow_command_line(archive, tmp_path, local_cluster):
    code = flow_main(
        [
            str(archive / "with-bad"),
            "-o",
            str(tmp_path / "o.zarr"),
            "-k",
            "3",
            "--dask-address",
            local_cluster.scheduler_address,
        ]
    )
    assert code == 1  # the truncated image
    assert {i.name for i in list_segmentations(tmp_path / "o.zarr") if i.complete} == {
        "china-a",
        "flower-a",
    }


def test_flow_threads_flag_runs_the_workers_in_the_flow_process(archive, tmp_path, worker_kinds):
    out = tmp_path / "o.zarr"
    argv = [str(archive / "with-bad"), "-o", str(out), "-k", "3", "--workers", "2", "--threads"]
    assert flow_main(argv) == 1  # the truncated image
    assert worker_kinds == [{"Worker"}]  # one worker, threads of this process, not Nannies
    assert {i.name for i in list_segmentations(out) if i.complete} == {"china-a", "flower-a"}


def test_failed_preview_fails_its_image_only_and_artifacts_report(archive, tmp_path, local_cluster):
    from prefect.client.orchestration import get_client

    previews = tmp_path / "pv"
    (previews / "china-a.png").mkdir(parents=True)  # a folder where its preview goes
    out = tmp_path / "o.zarr"
    state = segment_archive(
        str(archive / "with-bad"),
        str(out),
        k=4,
        dask_address=local_cluster.scheduler_address,
        preview_dir=str(previews),
        return_state=True,
    )
    assert state.is_failed()
    assert "2 of 3 images failed" in state.message
    assert "truncated.jpg" in state.message and "preview" in state.message
    assert (previews / "flower-a.png").is_file()
    # The preview failed, not the segmentation: both good images are complete.
    assert {i.name for i in list_segmentations(out) if i.complete} == {"china-a", "flower-a"}

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as api:
        arts = {a.key: a for a in api.read_artifacts() if a.flow_run_id == run_id}
    assert arts["segmentation-progress"].data == 100.0
    report = arts["segmentation-summary"].data
    assert "3 image(s): 1 done, 0 skipped, 2 failed" in report
    failed_rows = [line for line in report.splitlines() if line.startswith("| china-a")]
    assert len(failed_rows) == 1 and "preview" in failed_rows[0]
    assert any(line.startswith("| truncated |") for line in report.splitlines())
    # The slowest images with their times; no other per-image rows.
    assert re.search(r"\| flower-a \| \d+\.\d\d \|", report)


def test_io_error_is_retried(archive, tmp_path, local_cluster, monkeypatch):
    from kmdist.pipeline import _image

    calls = []
    real = _image.label_and_write

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("Input/output error (a hiccup of the shared disk)")
        return real(*args, **kwargs)

    monkeypatch.setattr(_image, "label_and_write", flaky)
    state = segment_image(
        str(archive / "photos" / "china-b.png"),
        str(tmp_path / "o.zarr"),
        k=4,
        dask_address=local_cluster.scheduler_address,
        preview_dir=str(tmp_path / "pv"),  # the chunked path, in this process
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert len(calls) == 2
    assert list_segmentations(tmp_path / "o.zarr")[0].complete


@pytest.mark.parametrize("what", ["missing folder", "no images"])
def test_input_problem_fails_the_run_naming_it_and_publishes_the_summary(
    what, tmp_path, local_cluster
):
    from prefect.client.orchestration import get_client

    source = tmp_path / "data"
    if what == "no images":
        source.mkdir()
        (source / "notes.txt").write_text("not an image")
    state = segment_archive(
        str(source),
        str(tmp_path / "o.zarr"),
        k=4,
        dask_address=local_cluster.scheduler_address,
        return_state=True,
    )
    assert state.is_failed()
    expected = "file not found" if what == "missing folder" else "no images found"
    assert str(source) in state.message and expected in state.message
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as api:
        arts = {a.key: a for a in api.read_artifacts() if a.flow_run_id == run_id}
    report = arts["segmentation-summary"].data
    # The run's error is reported apart from the images' table, and counts no image.
    assert "0 image(s): 0 done, 0 skipped, 0 failed" in report
    assert f"## Run failed\n\n{state.message}" in report
    assert "## Failed" not in report
    assert not (tmp_path / "o.zarr").exists()


def test_listing_hiccup_is_retried(archive, tmp_path, local_cluster, monkeypatch):
    from kmdist.io import _open

    calls = []
    real = _open.stream_input

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("Input/output error (a hiccup of the shared disk)")
        return real(*args, **kwargs)

    monkeypatch.setattr(_open, "stream_input", flaky)
    state = segment_archive(
        str(archive / "photos"),
        str(tmp_path / "o.zarr"),
        k=4,
        dask_address=local_cluster.scheduler_address,
        return_state=True,
    )
    assert state.is_completed(), state.message
    # The check failed once and was retried; the listing it started is the stream, so
    # the folder is not checked a third time.
    assert len(calls) == 2
    assert all(i.complete for i in list_segmentations(tmp_path / "o.zarr"))


def test_cli_flows_and_slurm_front_end_give_the_same_stores(archive, tmp_path, local_cluster):
    """One run, three front ends: the same options give the same outputs."""
    import sys
    from importlib import import_module
    from pathlib import Path

    address, photos = local_cluster.scheduler_address, str(archive / "photos")
    options = ["-k", "5", "--seed", "3", "--attempts", "2", "--tol", "1e-4", "--method", "exact"]
    stores = {f: tmp_path / f"{f}.zarr" for f in ("cli", "flow", "slurm")}
    cli = ["segment", photos, "-o", str(stores["cli"]), "--scheduler", address, *options]
    assert cli_main(cli) == 0
    assert flow_main([photos, "-o", str(stores["flow"]), "--dask-address", address, *options]) == 0
    script = Path(__file__).parents[2] / "deploy" / "slurm" / "kmdist_slurm.py"
    sys.path.insert(0, str(script.parent))
    try:
        slurm = import_module("kmdist_slurm")
    finally:
        sys.path.remove(str(script.parent))
    args = slurm.build_parser().parse_args(["run", photos, "-o", str(stores["slurm"]), *options])
    assert slurm.run_flow(args, address) == 0  # what `run` does once its SLURM jobs are up
    names = [i.name for i in list_segmentations(stores["cli"]) if i.complete]
    assert names == ["china-a", "china-b", "flower-a", "flower-b"]
    for name in names:
        ref = open_segmentation(stores["cli"], name)
        assert ref.palette.k == 5
        for other in ("flow", "slurm"):
            seg = open_segmentation(stores[other], name)
            assert seg.palette == ref.palette, (other, name)
            assert_array_equal(seg.labels.compute(), ref.labels.compute())
            assert_array_equal(seg.image.compute(), ref.image.compute())
