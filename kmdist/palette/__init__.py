"""Palettes: colour histograms, learning a palette, labelling and recolouring pixels.

- `_palette`: the `Palette` value type (colours sorted by pixel count, label 0 the most
  common) and its JSON form;
- `_histogram` / `_counting`: per-chunk colour histograms of 8-bit RGB and their merges;
- `_learn`: exact k-means on a histogram, or mini-batch k-means on pixels;
- `_assign` / `_assign_kernels`: labels by lookup table or nearest colour, recolouring;
- `_color`: RGB and CIELAB; `_limits`: the number of colours a palette may have.
"""

from typing import TYPE_CHECKING

import lazy_loader

# Names resolve on first use: a front end reads its options, and a worker its
# task, without importing the whole package.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_assign": [
            "assign_pixels",
            "build_lut",
            "codes_labels",
            "is_rgb8",
            "label_dtype",
            "recolor",
            "recolor_planes",
            "scatter_everywhere",
            "segment",
        ],
        "_assign_kernels": ["color_planes"],
        "_histogram": [
            "ColorHistogram",
            "chunk_histogram",
            "histogram_graph",
            "image_histogram",
            "merge_histograms",
        ],
        "_learn": ["FewerColorsWarning", "learn_palette", "palette_from_histogram"],
        "_limits": ["MAX_COLORS", "check_n_colors"],
        "_palette": ["ColorSpace", "Palette", "PaletteError"],
    },
)

if TYPE_CHECKING:
    from kmdist.palette._assign import (
        assign_pixels as assign_pixels,
        build_lut as build_lut,
        codes_labels as codes_labels,
        is_rgb8 as is_rgb8,
        label_dtype as label_dtype,
        recolor as recolor,
        recolor_planes as recolor_planes,
        scatter_everywhere as scatter_everywhere,
        segment as segment,
    )
    from kmdist.palette._assign_kernels import (
        color_planes as color_planes,
    )
    from kmdist.palette._histogram import (
        ColorHistogram as ColorHistogram,
        chunk_histogram as chunk_histogram,
        histogram_graph as histogram_graph,
        image_histogram as image_histogram,
        merge_histograms as merge_histograms,
    )
    from kmdist.palette._learn import (
        FewerColorsWarning as FewerColorsWarning,
        learn_palette as learn_palette,
        palette_from_histogram as palette_from_histogram,
    )
    from kmdist.palette._limits import (
        MAX_COLORS as MAX_COLORS,
        check_n_colors as check_n_colors,
    )
    from kmdist.palette._palette import (
        ColorSpace as ColorSpace,
        Palette as Palette,
        PaletteError as PaletteError,
    )
