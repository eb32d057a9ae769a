"""Palettes: colour histograms, learning a palette, labelling and recolouring pixels.

- `_palette`: the `Palette` value type (colours sorted by pixel count, label 0 the most
  common) and its JSON form;
- `_histogram` / `_counting`: per-chunk colour histograms of 8-bit RGB and their merges;
- `_learn`: exact k-means on a histogram, or mini-batch k-means on pixels;
- `_assign` / `_assign_kernels`: labels by lookup table or nearest colour, recolouring;
- `_color`: RGB and CIELAB; `_limits`: the number of colours a palette may have.

Public names are re-exported lazily by `kmdist`; this package imports nothing itself.
"""
