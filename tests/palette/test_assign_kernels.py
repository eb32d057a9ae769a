"""The compiled labelling kernels (kmdist.palette._assign_kernels) against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from kmdist.palette._assign import pack_rgb8


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_fused_lookup_equals_pack_and_take(rng, dtype):
    # The compiled lookup (no packed-code intermediates) against NumPy, on a strided
    # (non-contiguous) block as Dask may pass one.
    from kmdist.palette._assign_kernels import lut_labels

    lut = rng.integers(0, 300 if dtype == np.uint16 else 16, 1 << 24).astype(dtype)
    block = rng.integers(0, 256, size=(70, 90, 3), dtype=np.uint8)[::2, 1::3]
    labels = lut_labels(block, lut)
    assert labels.dtype == dtype and labels.shape == block.shape[:2]
    assert_array_equal(labels, lut[pack_rgb8(block)])


@pytest.mark.parametrize(("ldtype", "cdtype"), [(np.uint8, np.uint8), (np.uint16, np.float64)])
def test_color_planes_equal_numpy_take(rng, ldtype, cdtype):
    from kmdist.palette._assign_kernels import color_planes

    colors = rng.integers(0, 256, (300, 3)).astype(cdtype)
    labels = rng.integers(0, 256 if ldtype == np.uint8 else 300, (60, 80)).astype(ldtype)
    strided = labels[::2, 1::3]  # a Dask block may be a view
    planes = color_planes(strided, colors)
    assert planes.dtype == cdtype and planes.flags.c_contiguous
    assert_array_equal(planes, np.moveaxis(colors[strided], 2, 0))
    with pytest.raises(ValueError, match="label 7 has no colour: the palette has 5 colours"):
        color_planes(np.array([[0, 7]], dtype=ldtype), colors[:5])
    with pytest.raises(ValueError, match="labels must be unsigned integers, got dtype int16"):
        color_planes(np.array([[0, -1]], dtype=np.int16), colors)
