"""The LocalCluster kind a run gets by default (kmdist.pipeline._kind)."""

from __future__ import annotations

import numpy as np
import zarr
from PIL import Image

import kmdist.pipeline._kind
from kmdist.pipeline._kind import workers_kind


def test_one_image_up_to_the_limit_gets_threads(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    zarr.create_array(tmp_path / "big.zarr", shape=(30, 41, 3), dtype=np.uint8)
    monkeypatch.setattr(kmdist.pipeline._kind, "THREADS_UP_TO", 40 * 30 * 3)
    one = str(tmp_path / "a.png")
    assert workers_kind([one], None) is False
    assert workers_kind([str(tmp_path / "big.zarr")], None) is None  # one sample too many
    # Several inputs, a folder (any number of images), an unknown: kmdist's default.
    assert workers_kind([one, one], None) is None
    assert workers_kind([str(tmp_path)], None) is None
    assert workers_kind([str(tmp_path / "missing.png")], None) is None
    # What the caller asks for stands.
    assert workers_kind([one], True) is True
    assert workers_kind([str(tmp_path)], False) is False
