"""The seed notebook's pictures: four blobs, the ten digit centres, china.jpg's colours.

Also the seed's colour pictures of ``china.jpg``. Used by ``kmdist demo``. Needs
matplotlib (the ``plot`` extra) and scikit-learn's bundled data sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kmdist.kmeans import KMeans

__all__ = ["blobs_example", "china_examples", "digits_example"]


def blobs_example(path: Path, *, random_state: int = 0) -> float:
    """Cluster 300 points from 4 blobs, save a scatter plot coloured by label, return inertia.

    The data are scikit-learn's ``make_blobs(n_samples=300, centers=4, cluster_std=0.60,
    random_state=0)``, as in the seed notebook.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=300, centers=4, cluster_std=0.60, random_state=0)
    km = KMeans(4, random_state=random_state).fit(X)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(X[:, 0], X[:, 1], c=np.asarray(km.labels_), s=20, cmap="viridis")
    centers = km.cluster_centers_
    ax.scatter(centers[:, 0], centers[:, 1], c="black", s=200, alpha=0.5, marker="o")
    ax.set_title(f"kmdist.KMeans(4): inertia {km.inertia_:.1f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return km.inertia_


def digits_example(path: Path, *, random_state: int = 0) -> float:
    """Cluster the 8x8 digits into 10 groups, save the centres as images, return inertia."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_digits

    X = load_digits().data
    km = KMeans(10, random_state=random_state).fit(X)
    fig, axes = plt.subplots(2, 5, figsize=(8, 3))
    for ax, center in zip(axes.flat, km.cluster_centers_, strict=True):
        ax.set(xticks=[], yticks=[])
        ax.imshow(center.reshape(8, 8), interpolation="nearest", cmap=plt.cm.binary)
    fig.suptitle(f"kmdist.KMeans(10) centres of load_digits(): inertia {km.inertia_:.0f}")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return km.inertia_


def china_examples(out: Path, *, random_state: int = 0) -> dict[str, Path]:
    """Draw the seed's colour pictures of ``china.jpg`` with kmdist's palette and labels.

    Writes the 16-colour compression (original beside recoloured), the pixel-space view
    (10,000 random pixels in the red-green and red-blue planes, in their own colours and
    in their palette colours), and the k=3 and k=10 segmentations with OpenCV's recipe
    (random centres, 10 attempts, at most 100 iterations, eps 0.85).
    """
    import dask.array as da
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_sample_image

    from kmdist.palette import learn_palette, recolor, segment

    china = load_sample_image("china.jpg")
    image = da.from_array(china, chunks=(256, 256, 3))
    paths: dict[str, Path] = {}

    pal16 = learn_palette(image, 16, random_state=random_state)
    labels16 = segment(image, pal16)
    compressed = np.asarray(recolor(labels16, pal16).compute())
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5), subplot_kw={"xticks": [], "yticks": []})
    ax[0].imshow(china)
    ax[0].set_title("Original image", size=14)
    ax[1].imshow(compressed)
    ax[1].set_title(f"16-colour image (kmdist exact, inertia {pal16.inertia:.3g})", size=14)
    fig.tight_layout()
    paths["compressed"] = _save(fig, out / "china-16-colours.png")

    rng = np.random.default_rng(random_state)
    pick = rng.choice(china.shape[0] * china.shape[1], 10_000, replace=False)
    pixels = china.reshape(-1, 3)[pick] / 255.0
    reduced = compressed.reshape(-1, 3)[pick] / 255.0
    fig, ax = plt.subplots(2, 2, figsize=(12, 10))
    for row, (colors, title) in enumerate(
        [
            (pixels, "Input colour space: 16 million possible colours"),
            (reduced, "Reduced colour space: 16 colours"),
        ]
    ):
        ax[row, 0].scatter(pixels[:, 0], pixels[:, 1], color=colors, marker=".")
        ax[row, 0].set(xlabel="Red", ylabel="Green", xlim=(0, 1), ylim=(0, 1))
        ax[row, 1].scatter(pixels[:, 0], pixels[:, 2], color=colors, marker=".")
        ax[row, 1].set(xlabel="Red", ylabel="Blue", xlim=(0, 1), ylim=(0, 1))
        ax[row, 0].set_title(title, size=14, loc="left")
    fig.tight_layout()
    paths["pixels"] = _save(fig, out / "china-pixel-space.png")

    for k in (3, 10):
        pal = learn_palette(
            image, k, init="random", n_init=10, max_iter=100, eps=0.85, random_state=random_state
        )
        seg = np.asarray(recolor(segment(image, pal), pal).compute())
        fig, ax = plt.subplots(figsize=(6, 4.5), subplot_kw={"xticks": [], "yticks": []})
        ax.imshow(seg)
        ax.set_title(f"k = {k} (OpenCV's criteria), inertia {pal.inertia:.3g}", size=12)
        fig.tight_layout()
        paths[f"k{k}"] = _save(fig, out / f"china-k{k}.png")
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
