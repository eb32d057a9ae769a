"""Labelling pixels with a palette and recolouring (kmdist.palette._assign)."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from kmdist.palette._assign import (
    assign_pixels,
    build_lut,
    codes_labels,
    label_dtype,
    pack_rgb8,
    recolor,
    recolor_planes,
    scatter_everywhere,
    segment,
    unpack_rgb8,
)
from kmdist.palette._color import to_clustering_space
from kmdist.palette._learn import learn_palette
from kmdist.palette._palette import Palette


def test_pack_unpack_round_trip(rng):
    rgb = rng.integers(0, 256, size=(1000, 3), dtype=np.uint8)
    codes = pack_rgb8(rgb)
    assert codes.dtype == np.uint32 and codes.max() < 2**24
    assert_array_equal(unpack_rgb8(codes), rgb)
    assert pack_rgb8(np.array([1, 2, 3], np.uint8)) == (1 << 16) + (2 << 8) + 3


@pytest.mark.parametrize("color_space", ["rgb", "lab"])
def test_labels_do_not_depend_on_chunking(small_china, color_space):
    ref_pal = learn_palette(small_china, 8, color_space=color_space)
    ref = segment(da.from_array(small_china), ref_pal).compute()
    for chunks in [(7, 11, 3), (54, 1, 3), (13, 80, 3)]:
        pal = learn_palette(da.from_array(small_china, chunks=chunks), 8, color_space=color_space)
        assert pal == ref_pal
        assert_array_equal(segment(da.from_array(small_china, chunks=chunks), pal).compute(), ref)


@pytest.mark.slow
def test_labels_same_on_one_and_two_workers(small_china):
    from distributed import Client, LocalCluster

    results = []
    for workers in (1, 2):
        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as c,
            Client(c),
        ):
            img = da.from_array(small_china, chunks=(10, 17, 3))
            pal = learn_palette(img, 8)
            results.append((pal, segment(img, pal).compute()))
    assert results[0][0] == results[1][0]
    assert_array_equal(results[0][1], results[1][1])


def test_each_scatter_of_the_same_table_has_its_own_key(local_cluster):
    # Images labelled with one shared table scatter it one after another: under a key
    # hashed from its bytes, one image's release raced the next one's broadcast (CI:
    # "Key lost during replication", the write cancelled for lost dependencies).
    from distributed import Client

    table = np.arange(1 << 16, dtype=np.uint8)
    with Client(local_cluster) as client:
        futures = [scatter_everywhere(client, table) for _ in range(3)]
        assert len({f.key for f in futures}) == 3
        for f in futures:
            assert len(client.who_has([f])[f.key]) == 2  # on both workers
        first, *rest = futures
        first.release()
        for f in rest:  # the others stand
            assert_array_equal(client.submit(np.copy, f).result(), table)


def test_more_than_256_colours_gives_uint16_labels(rng):
    img = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pal = learn_palette(img, 300, n_init=1, max_iter=5)
    assert segment(da.from_array(img), pal).dtype == np.uint16


def brute_force_labels(pixels, colors):
    """Index of the nearest colour of every pixel (first on ties), no kmdist code."""
    d = ((pixels.reshape(-1, 1, pixels.shape[-1]) - colors[None]) ** 2).sum(-1)
    return d.argmin(axis=1).reshape(pixels.shape[:-1])


def a_palette(rng, k, channels=3, dtype="uint8", hi=255, color_space="rgb"):
    colors = np.unique(rng.integers(0, hi + 1, (k, channels)), axis=0).astype(np.float64)
    counts = np.arange(colors.shape[0], 0, -1)
    return Palette(colors, counts, 0.0, color_space=color_space, dtype=dtype)


@pytest.mark.parametrize(("k", "dtype"), [(1, np.uint8), (256, np.uint8), (257, np.uint16)])
def test_label_dtype_is_the_smallest_that_holds_k_labels(k, dtype):
    assert label_dtype(k) == dtype
    assert label_dtype(65536) == np.uint16
    with pytest.raises(ValueError, match="at most 65,536 colours are supported, got 65537"):
        label_dtype(65537)


def test_lookup_table_labels_are_the_nearest_colour(rng):
    pal = a_palette(rng, 12)
    codes = np.unique(rng.integers(0, 1 << 24, 5000).astype(np.uint32))
    lut = build_lut(pal, codes)
    assert lut.shape == (1 << 24,) and lut.dtype == np.uint8
    want = brute_force_labels(unpack_rgb8(codes).astype(np.float64), pal.colors)
    assert_array_equal(lut[codes], want)
    others = np.setdiff1d(np.arange(1 << 24, dtype=np.uint32)[::4099], codes)
    assert not lut[others].any()  # colours not asked for stay 0
    with pytest.raises(ValueError, match="a lookup table needs an 8-bit RGB palette"):
        build_lut(a_palette(rng, 3, dtype="uint16", hi=65535))
    with pytest.raises(ValueError, match="a lookup table needs an 8-bit RGB palette"):
        build_lut(a_palette(rng, 3, channels=1))


@pytest.mark.parametrize(("k", "color_space"), [(9, "rgb"), (9, "lab"), (300, "rgb")])
def test_labels_through_colour_codes_equal_the_lookup_table(rng, k, color_space):
    pal = a_palette(rng, k, color_space=color_space)
    img = rng.integers(0, 256, (61, 47, 3), dtype=np.uint8)
    img[:20] = img[20:40]  # repeated colours, as a photo has
    codes = np.unique(pack_rgb8(img))
    labels = codes_labels(img, pal, codes)
    assert labels.shape == img.shape[:2] and labels.dtype == label_dtype(pal.k)
    assert_array_equal(labels, assign_pixels(img, pal, build_lut(pal, codes)))
    with pytest.raises(ValueError, match="needs 8-bit RGB pixels and palette"):
        codes_labels(img[..., :1], pal, codes)


def test_full_lookup_table_in_lab_is_nearest_in_lab(rng):
    pal = a_palette(rng, 6, color_space="lab")
    lut = build_lut(pal)  # every one of the 2**24 colours
    codes = rng.integers(0, 1 << 24, 4000).astype(np.uint32)
    lab = to_clustering_space(unpack_rgb8(codes), "lab", "uint8")
    want = brute_force_labels(lab, to_clustering_space(pal.colors, "lab", "uint8"))
    assert_array_equal(lut[codes], want)


@pytest.mark.parametrize("color_space", ["rgb", "lab"])
def test_segment_by_table_or_by_search_labels_alike(rng, color_space):
    pal = a_palette(rng, 9, color_space=color_space)
    img = rng.integers(0, 256, (61, 47, 3), dtype=np.uint8)
    want = brute_force_labels(
        to_clustering_space(img, color_space, "uint8"),
        to_clustering_space(pal.colors, color_space, "uint8"),
    )
    image = da.from_array(img, chunks=(16, 20, 3))
    searched = segment(image, pal)  # a small image: a direct search
    tabled = segment(image, pal, lut=build_lut(pal, pack_rgb8(img).ravel()))
    for labels in (searched, tabled):
        assert labels.dtype == np.uint8 and labels.chunks == image.chunks[:2]
        assert_array_equal(labels.compute(), want)
    assert_array_equal(assign_pixels(img, pal), want)
    assert_array_equal(assign_pixels(img, pal, build_lut(pal)), want)
    with pytest.raises(
        ValueError, match=r"image of shape \(61, 47, 1\) does not match a 3-channel"
    ):
        segment(image[..., :1], pal)
    with pytest.raises(ValueError, match=r"image of shape \(61, 47\) does not match a 3-channel"):
        assign_pixels(img[..., 0], pal)


def test_segment_of_16_bit_and_multichannel_images(rng):
    pal = a_palette(rng, 300, channels=4, dtype="uint16", hi=65535)
    img = rng.integers(0, 65536, (30, 40, 4), dtype=np.uint16)
    image = da.from_array(img, chunks=(7, 40, 2))  # channels split: joined for the search
    labels = segment(image, pal)
    assert labels.dtype == np.uint16
    want = brute_force_labels(img.astype(np.float64), pal.colors)
    assert_array_equal(labels.compute(), want)
    assert_array_equal(assign_pixels(img, pal), want)


def test_recolor_and_recolor_planes_take_the_palette_colours(rng):
    pal = Palette(
        np.array([[10.4, 20.6, 300.0], [0.0, 65535.0, 7.5]]), np.array([5, 1]), 0.0, dtype="uint16"
    )
    labels = rng.integers(0, 2, (33, 21)).astype(np.uint8)
    lazy = da.from_array(labels, chunks=(10, 8))
    colors = np.array([[10, 21, 300], [0, 65535, 8]], np.uint16)  # rounded half to even
    rgb = recolor(lazy, pal)
    assert rgb.dtype == np.uint16 and rgb.chunks == (*lazy.chunks, (3,))
    assert_array_equal(rgb.compute(), colors[labels])
    planes = recolor_planes(lazy, pal)
    assert planes.dtype == np.uint16 and planes.chunks == ((3,), *lazy.chunks)
    assert_array_equal(planes.compute(), np.moveaxis(colors[labels], -1, 0))
