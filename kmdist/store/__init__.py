"""The output store: segmentations as OME-Zarr 0.5 images on Zarr v3.

- `_write` / `_read`: write an image's groups and arrays, read them back lazily;
- `_layout`: where an image lives in the store and its OME-NGFF metadata;
- `_blocks`: pyramid levels, chunks, shards and write blocks;
- `_claims`: writer claims, so two runs never write one image at once;
- `_root`: the store root, a local directory or a storage URL, and its lock;
- `_preview`: a PNG per image (original, recoloured, palette swatches);
- `_errors`: `OutputError` and `OutputExistsError`.

Public names are re-exported lazily by `kmdist`; this package imports nothing itself.
"""
