"""The kind of LocalCluster a run gets by default: threads for one small image.

Decided from the inputs' headers before the cluster starts, so it imports no more than
`kmdist.io._header` does (Pillow or tifffile): the CLI and the flows start their cluster
before the pipeline's heavy imports, which then overlap with it.
"""

from __future__ import annotations

from collections.abc import Sequence

from kmdist.io import decoded_samples

__all__ = ["THREADS_UP_TO", "workers_kind"]

THREADS_UP_TO = 1 << 30
"""Most samples (pixels times channels) of one image that runs on threads by default.

On threads the cluster's start imports kmdist's pipeline in one process, not again in
each worker process, which a short run feels most (2 workers, 2 cores: china.jpg 0.60x
the time on processes, a 64 MP RGB image 0.78x, 268 MP 0.85x). Larger images and
archives keep processes, whose workers do not share one GIL (a gigapixel image: threads
1.03-1.32x; 1,000 thumbnails: 1.64x). docs/benchmarks.md, issue 17's fourth round.
"""


def workers_kind(inputs: Sequence[str], processes: bool | None) -> bool | None:
    """Return the `processes` to start a LocalCluster for `inputs` with.

    `processes` when given; else False (threads) for a single input that is one image
    of at most `THREADS_UP_TO` samples by its header, and None otherwise, which leaves
    the choice to `kmdist.dask_client` (worker processes).
    """
    if processes is not None or len(inputs) != 1:
        return processes
    samples = decoded_samples(inputs[0])
    return False if samples is not None and samples <= THREADS_UP_TO else None
