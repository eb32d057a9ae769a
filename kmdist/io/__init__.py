"""Inputs: list images (files, folders, globs, archives, storage URLs) and open them.

- `_listing`: inputs to a stream of `ImageRef` values, each with a unique group name;
- `_open`: `open_image`, `iter_images` and `open_images`, the public entry points;
- `_formats`: picks the reader for one source (lazy TIFF/Zarr, or a whole decode);
- `_tiled`: TIFF and Zarr read lazily, chunks aligned with the source's tiles;
- `_decoded`: PNG, JPEG, BMP, GIF, WebP, ... decoded whole (`_png16` for 16-bit PNG);
- `_archive`: zip and tar members read in place, never extracted;
- `_chunks`: chunk sizes; `_errors`: `ImageReadError`, naming the file and the problem.

Public names are re-exported lazily by `kmdist`; this package imports nothing itself.
"""
