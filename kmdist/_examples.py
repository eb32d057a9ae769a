"""The seed notebook's estimator pictures: four blobs and the ten digit centres.

Used by ``kmdist demo`` until the segmentation flows take over the demo. Needs
matplotlib (the ``plot`` extra) and scikit-learn's bundled data sets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._kmeans import KMeans

__all__ = ["blobs_example", "digits_example"]


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
