"""Run kmdist's segment-archive flow on Dask workers that are SLURM jobs (dask-jobqueue).

Two ways to use it, from the repository root, in the environment where kmdist and
dask-jobqueue are installed (worker jobs are sized by ~/.config/dask/jobqueue.yaml:
start from deploy/slurm/jobqueue.yaml)::

    # one archive: start worker jobs, run the flow on them, stop them
    python deploy/slurm/kmdist_slurm.py run /scratch/scans -o /scratch/out.zarr -k 16 --jobs 4

    # a cluster for a Prefect worker: keep the scheduler up, write its address
    python deploy/slurm/kmdist_slurm.py serve --jobs 4 --address-file ~/.kmdist-scheduler
    DASK_SCHEDULER_ADDRESS=$(cat ~/.kmdist-scheduler) prefect worker start --pool kmdist-process

The scheduler runs in this process: on a login node if your site allows long-running
processes there, otherwise inside a SLURM job (deploy/slurm/segment.sbatch).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kmdist.pipeline import CLUSTER_OPTIONS, OPTIONS, add_options


def build_parser() -> argparse.ArgumentParser:
    """Build the command line: `run` or `serve`, and how many SLURM worker jobs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def cluster_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--jobs", type=int, default=2, help="SLURM worker jobs (default 2)")
        p.add_argument(
            "--adapt",
            action="store_true",
            help="let Dask scale between 1 and --jobs jobs with the load",
        )

    run = sub.add_parser("run", help="segment INPUTS into OUTPUT on SLURM workers, then stop")
    run.add_argument("inputs", nargs="+", help="folders, files, globs or archives")
    run.add_argument("-o", "--output", required=True, help="the OME-Zarr output store")
    # kmdist's options, as the flows take them; the cluster is this script's own.
    add_options(run, front="flow", leave_out=CLUSTER_OPTIONS)
    cluster_options(run)

    serve = sub.add_parser("serve", help="keep a SLURM-backed Dask cluster up until Ctrl-C")
    serve.add_argument("--address-file", type=Path, default=None)
    cluster_options(serve)
    return parser


def start_cluster(jobs: int, adapt: bool) -> Any:
    """Start a SLURMCluster sized by Dask's jobqueue configuration, `jobs` jobs."""
    from dask_jobqueue import SLURMCluster  # only needed here, not to read --help

    cluster = SLURMCluster()
    if adapt:
        cluster.adapt(minimum_jobs=1, maximum_jobs=jobs)
    else:
        cluster.scale(jobs=jobs)
    print(f"Dask scheduler {cluster.scheduler_address}, dashboard {cluster.dashboard_link}")
    print(cluster.job_script(), flush=True)
    return cluster


def run_flow(args: argparse.Namespace, address: str) -> int:
    """Run the segment-archive flow with the parsed options on the scheduler at `address`."""
    from flows.segment import segment_archive

    options = {o.name: getattr(args, o.name) for o in OPTIONS if o.name not in CLUSTER_OPTIONS}
    state = segment_archive(
        args.inputs, args.output, **options, dask_address=address, return_state=True
    )
    print(state.message or state.name)
    return 0 if state.is_completed() else 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SLURM ends a job with SIGTERM: close the cluster cleanly


def main(argv: Sequence[str] | None = None) -> int:
    """Start the cluster, then run the flow once or serve until interrupted."""
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    cluster = start_cluster(args.jobs, args.adapt)
    try:
        if args.command == "serve":
            if args.address_file is not None:
                args.address_file.write_text(cluster.scheduler_address + "\n")
            print("Serving; Ctrl-C (or the end of the job) stops the workers.", flush=True)
            while True:
                time.sleep(60)
        return run_flow(args, cluster.scheduler_address)
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
