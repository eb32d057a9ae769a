"""The batch engine behind the ``kmdist`` command and the Prefect flows.

- `_options`: `SegmentOptions` (the same for every image of a batch), `ImageResult`;
- `_batch`: one image on the chunked path and batches of images;
- `_small`: small images segmented whole in memory, a batch of them per task.

Public names are re-exported lazily by `kmdist`; this package imports nothing itself.
"""
