"""The one batch engine behind the ``kmdist`` command, the Prefect flows and SLURM.

- `_options`: the options, declared once (`OPTIONS`, `add_options`), and the `Run` value;
- `_run`: `Plan`, which executes a run: listing, shared palette, units, retries, summary;
- `_batch`: a stream of images segmented on the cluster (`iter_segment`);
- `_image` / `_small`: one image on the chunked path, or small images whole in memory;
- `_palettes`: the palette of an image or of a batch; saved palettes;
- `_result` / `_summary`: what happened to one image, and a run's totals;
- `_kind`: the kind of LocalCluster a run gets by default.
"""

from typing import TYPE_CHECKING

import lazy_loader

# Names resolve on first use: a front end reads its options, and a worker its
# task, without importing the whole package.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_batch": ["iter_segment", "segment_batch"],
        "_image": ["hold_if_small", "label_and_write", "segment_one"],
        "_kind": ["workers_kind"],
        "_options": [
            "CLUSTER_OPTIONS",
            "OPTIONS",
            "ColorSpace",
            "Init",
            "Method",
            "OnExists",
            "Option",
            "Run",
            "SegmentOptions",
            "add_options",
            "option_defaults",
        ],
        "_palettes": ["load_palette", "palette_for", "shared_palette"],
        "_result": ["ImageResult"],
        "_run": ["RETRIES", "UNIT_MAX", "UNIT_MIN", "CountedRefs", "Plan", "RunError"],
        "_small": ["SMALL_PIXELS", "small_batches_on_cluster"],
        "_summary": ["RunSummary"],
    },
)

if TYPE_CHECKING:
    from kmdist.pipeline._batch import (
        iter_segment as iter_segment,
        segment_batch as segment_batch,
    )
    from kmdist.pipeline._image import (
        hold_if_small as hold_if_small,
        label_and_write as label_and_write,
        segment_one as segment_one,
    )
    from kmdist.pipeline._kind import (
        workers_kind as workers_kind,
    )
    from kmdist.pipeline._options import (
        CLUSTER_OPTIONS as CLUSTER_OPTIONS,
        OPTIONS as OPTIONS,
        ColorSpace as ColorSpace,
        Init as Init,
        Method as Method,
        OnExists as OnExists,
        Option as Option,
        Run as Run,
        SegmentOptions as SegmentOptions,
        add_options as add_options,
        option_defaults as option_defaults,
    )
    from kmdist.pipeline._palettes import (
        load_palette as load_palette,
        palette_for as palette_for,
        shared_palette as shared_palette,
    )
    from kmdist.pipeline._result import (
        ImageResult as ImageResult,
    )
    from kmdist.pipeline._run import (
        RETRIES as RETRIES,
        UNIT_MAX as UNIT_MAX,
        UNIT_MIN as UNIT_MIN,
        CountedRefs as CountedRefs,
        Plan as Plan,
        RunError as RunError,
    )
    from kmdist.pipeline._small import (
        SMALL_PIXELS as SMALL_PIXELS,
        small_batches_on_cluster as small_batches_on_cluster,
    )
    from kmdist.pipeline._summary import (
        RunSummary as RunSummary,
    )
