"""Inputs: list images (files, folders, globs, archives, storage URLs) and open them.

- `_listing`: inputs to a stream of `ImageRef` values, each with a unique group name;
- `_open`: `open_image`, `iter_images` and `open_images`;
- `_formats`: picks the reader for one source (lazy TIFF/Zarr, or a whole decode);
- `_tiled`: TIFF and Zarr read lazily, chunks aligned with the source's tiles;
- `_decoded`: PNG, JPEG, BMP, GIF, WebP, ... decoded whole (`_png16` for 16-bit PNG);
- `_archive`: zip and tar members read in place, never extracted;
- `_header`: an image's size from its header alone, before anything heavy is imported;
- `_chunks`: chunk sizes; `_errors`: `ImageReadError`, naming the file and the problem.
"""

from typing import TYPE_CHECKING

import lazy_loader

# Names resolve on first use: a front end reads its options, and a worker its
# task, without importing the whole package.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_errors": ["ImageReadError", "describe"],
        "_header": ["decoded_samples"],
        "_listing": ["IMAGE_SUFFIXES", "ImageRef"],
        "_open": ["DEFAULT_MAX_PIXELS", "iter_images", "open_image", "open_images"],
    },
)

if TYPE_CHECKING:
    from kmdist.io._errors import (
        ImageReadError as ImageReadError,
        describe as describe,
    )
    from kmdist.io._header import (
        decoded_samples as decoded_samples,
    )
    from kmdist.io._listing import (
        IMAGE_SUFFIXES as IMAGE_SUFFIXES,
        ImageRef as ImageRef,
    )
    from kmdist.io._open import (
        DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS,
        iter_images as iter_images,
        open_image as open_image,
        open_images as open_images,
    )
