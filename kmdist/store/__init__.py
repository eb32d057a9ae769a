"""The output store: segmentations as OME-Zarr 0.5 images on Zarr v3.

- `_write` / `_read`: write an image's groups and arrays, read them back lazily;
- `_layout`: where an image lives in the store and its OME-NGFF metadata;
- `_blocks`: pyramid levels, chunks, shards and write blocks;
- `_claims`: writer claims, so two runs never write one image at once;
- `_root`: the store root, a local directory or a storage URL, and its lock;
- `_preview`: a PNG per image (original, recoloured, palette swatches);
- `_errors`: `OutputError` and `OutputExistsError`.
"""

from typing import TYPE_CHECKING

import lazy_loader

# Names resolve on first use: a front end reads its options, and a worker its
# task, without importing the whole package.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_blocks": ["blocks_for", "write_blocks"],
        "_errors": ["OutputError", "OutputExistsError"],
        "_preview": ["write_preview"],
        "_read": [
            "Segmentation",
            "SegmentationInfo",
            "is_complete",
            "iter_segmentations",
            "list_segmentations",
            "open_segmentation",
        ],
        "_write": ["level_arrays", "write_segmentation"],
    },
)

if TYPE_CHECKING:
    from kmdist.store._blocks import (
        blocks_for as blocks_for,
        write_blocks as write_blocks,
    )
    from kmdist.store._errors import (
        OutputError as OutputError,
        OutputExistsError as OutputExistsError,
    )
    from kmdist.store._preview import (
        write_preview as write_preview,
    )
    from kmdist.store._read import (
        Segmentation as Segmentation,
        SegmentationInfo as SegmentationInfo,
        is_complete as is_complete,
        iter_segmentations as iter_segmentations,
        list_segmentations as list_segmentations,
        open_segmentation as open_segmentation,
    )
    from kmdist.store._write import (
        level_arrays as level_arrays,
        write_segmentation as write_segmentation,
    )
