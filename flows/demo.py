"""The demo: `segment_archive` on sample photos that ship with installed packages.

Runs with the embedded defaults, Prefect's ephemeral local API (or the server that
``PREFECT_API_URL`` names) and a LocalCluster, so it needs no server and no
configuration. The demo starts the LocalCluster itself and hands its address to the
flow, so that the dashboard link is printed before the run starts and answers while it
runs. Reports how much of the wall time was Prefect's start-up, measured by a no-op
flow run before the real one.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.settings import (
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    get_current_settings,
    temporary_settings,
)

import kmdist
from flows.segment import segment_archive

# Settings of Prefect's temporary server for the demo's runs, through Prefect's own
# settings context (read when the server starts; passed to its process):
# - it waits 20 s for the server by default, which a first run (it creates the
#   database) on a busy machine can exceed: `make demo` failed there (issue 15);
# - this machine may be offline: no telemetry (its failures are logged as errors, and it
#   also races for the SQLite database at start-up).
# A user's own values of these settings win; neither matters against a running server.
DEMO_SETTINGS: dict[Any, Any] = {
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120,
    PREFECT_SERVER_ANALYTICS_ENABLED: False,
}


@flow(name="kmdist-warm-up")
def warm_up() -> str:
    """Do nothing: the first flow run of a process pays Prefect's start-up."""
    return "ready"


def sample_images(folder: Path) -> list[Path]:
    """Copy the bundled sample photos into `folder` (scikit-learn's, scikit-image's)."""
    import imageio.v3 as iio
    from sklearn.datasets import load_sample_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("china.jpg", "flower.jpg"):
        path = folder / name.replace(".jpg", ".png")
        iio.imwrite(path, load_sample_image(name))
        paths.append(path)
    try:
        import skimage

        data = Path(skimage.__file__).parent / "data"
        for name in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"):
            if (data / name).exists():
                shutil.copy(data / name, folder / name)
                paths.append(folder / name)
    except ImportError:
        pass  # scikit-image is optional
    return paths


def _unset(settings: dict[Any, Any]) -> dict[Any, Any]:
    """Keep those of `settings` that the user has not set (environment, profile, files)."""
    chosen = get_current_settings().to_environment_variables(exclude_unset=True)
    return {setting: value for setting, value in settings.items() if setting.name not in chosen}


def _segment(output: Path, k: int, announce: Callable[[str], None]) -> tuple[Any, str]:
    """Run `segment_archive` on a LocalCluster started first; its summary and the link."""
    with kmdist.dask_client() as client:
        link = kmdist.dashboard_link(client)
        announce(f"Dask dashboard (live while the demo runs): {link}")
        summary = segment_archive(
            str(output / "inputs"),
            str(output / "segmented.zarr"),
            k=k,
            overwrite=True,
            preview_dir=str(output / "previews"),
            dask_address=client.scheduler_info()["address"],
        )
    return summary, link


def run_demo(
    output: Path, *, k: int = 16, announce: Callable[[str], None] = print
) -> dict[str, Any]:
    """Segment the sample photos into ``output/segmented.zarr`` with previews.

    `announce` receives the Dask dashboard link as soon as the cluster is up. Returns the
    timings, the dashboard link, the flow's summary and a row per image from the store.
    """
    t0 = time.perf_counter()
    inputs = sample_images(output / "inputs")
    t_inputs = time.perf_counter()
    with temporary_settings(updates=_unset(DEMO_SETTINGS)):
        warm_up()
        t_prefect = time.perf_counter()
        summary, link = _segment(output, k, announce)
    t_flow = time.perf_counter()
    # Per-image detail is in the store, not in the flow's (bounded) summary.
    rows = [
        {
            "image": info.name,
            # Height x width x channels, as every other surface prints sizes.
            "size": "x".join(map(str, (*info.shape, info.palette.channels)))
            if info.shape and info.palette
            else "?",
            "k": info.k,
            "inertia": info.inertia,
        }
        for info in kmdist.iter_segmentations(output / "segmented.zarr")
    ]
    return {
        "rows": rows,
        "images": len(inputs),
        "dashboard": link,
        "summary": summary,
        "prepare_seconds": t_inputs - t0,
        "prefect_startup_seconds": t_prefect - t_inputs,
        "flow_seconds": t_flow - t_prefect,
        "total_seconds": t_flow - t0,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the demo into ``demo-output`` (or the folder given)."""
    out = Path((argv or sys.argv[1:] or ["demo-output"])[0])
    result = run_demo(out)
    for row in result["rows"]:
        print(f"{row['image']}: {row['size']}, {row['k']} colours, inertia {row['inertia']:.6g}")
    print(f"Output: {out / 'segmented.zarr'}; previews in {out / 'previews'}")
    print(
        f"{result['images']} images in {result['total_seconds']:.1f} s: Prefect start-up "
        f"{result['prefect_startup_seconds']:.1f} s, flow {result['flow_seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
