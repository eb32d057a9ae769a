"""Compressed sparse rows (CSR) for the estimators: SciPy's layout without SciPy.

`CSR` holds the three arrays of a CSR matrix (``data``, ``indices``, ``indptr``) and does
what the k-means steps need from samples: row slices and gathers, ``X @ C.T`` against
dense centres, row norms, per-cluster sums and densified rows. The loops are compiled
(numba) and read only the stored values, so a pass costs O(nnz k), not O(n d k).
SciPy sparse input (``csr_matrix``, ``csr_array``, CSC, COO, ...) is converted once by
`from_scipy`; kmdist never imports SciPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["CSR", "from_scipy", "is_sparse"]

F64 = npt.NDArray[np.float64]


def is_sparse(X: object) -> bool:
    """Tell whether `X` is a SciPy sparse matrix or array (duck-typed: ``tocsr``)."""
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


@dataclass(frozen=True, eq=False)
class CSR:
    """Samples in compressed sparse row form, shape (n_samples, n_features).

    ``data`` is float32 or float64; ``indices`` and ``indptr`` are int64. Duplicate
    entries of a row are already summed (`from_scipy` makes sure).
    """

    data: npt.NDArray[np.floating[Any]]
    indices: npt.NDArray[np.int64]
    indptr: npt.NDArray[np.int64]
    shape: tuple[int, int]

    ndim = 2

    @property
    def dtype(self) -> np.dtype[Any]:
        """The values' dtype."""
        return self.data.dtype

    @property
    def size(self) -> int:
        """Stored values."""
        return int(self.data.size)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice | npt.NDArray[np.integer[Any]]) -> CSR:
        """Rows of a slice (no copy of the values) or of an index array (gathered)."""
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.shape[0])
            if step != 1:
                return self[np.arange(start, stop, step)]
            a, b = self.indptr[start], self.indptr[max(start, stop)]
            indptr = self.indptr[start : max(start, stop) + 1] - a
            return CSR(self.data[a:b], self.indices[a:b], indptr, (len(indptr) - 1, self.shape[1]))
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        data, indices, indptr = _take(self.data, self.indices, self.indptr, idx)
        return CSR(data, indices, indptr, (idx.size, self.shape[1]))

    def toarray(self) -> npt.NDArray[np.floating[Any]]:
        """Return the rows as a dense C-ordered array of the same dtype."""
        out = np.zeros(self.shape, dtype=self.dtype)
        _scatter(self.data, self.indices, self.indptr, out)
        return out

    def row_norms_sq(self) -> F64:
        """Squared Euclidean norm of each row, float64."""
        return _row_sq(self.data, self.indptr)

    def dot_t(self, centers: F64) -> F64:
        """``X @ centers.T`` as a dense float64 array of shape (n_samples, k)."""
        return _dot_t(self.data, self.indices, self.indptr, np.ascontiguousarray(centers))

    def label_sums(self, w: F64, labels: npt.NDArray[np.integer[Any]], k: int) -> F64:
        """Weighted sum of the rows of each label, shape (k, n_features)."""
        return _label_sums(
            self.data, self.indices, self.indptr, w, labels.astype(np.int64), k, self.shape[1]
        )

    def to_scipy(self) -> Any:
        """Return the rows as a ``scipy.sparse.csr_matrix`` (for callables of SciPy users)."""
        import importlib

        sparse = importlib.import_module("scipy.sparse")
        return sparse.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)

    def weighted_moments(self, w: F64) -> tuple[F64, F64]:
        """Column sums of ``w x`` and ``w x**2``, each of shape (n_features,)."""
        return _moments(self.data, self.indices, self.indptr, w, self.shape[1])


def from_scipy(X: Any, dtype: np.dtype[Any]) -> CSR:
    """Convert a SciPy sparse matrix or array to `CSR` with values of `dtype`.

    Entries stored twice for the same position are summed, as SciPy's ``toarray`` does.
    """
    csr = X.tocsr()
    if not getattr(csr, "has_canonical_format", True):
        csr = csr.copy()
        csr.sum_duplicates()
    return CSR(
        np.ascontiguousarray(csr.data, dtype=dtype),
        np.ascontiguousarray(csr.indices, dtype=np.int64),
        np.ascontiguousarray(csr.indptr, dtype=np.int64),
        (int(csr.shape[0]), int(csr.shape[1])),
    )


@numba.njit(cache=True, nogil=True)
def _take(data, indices, indptr, idx):  # type: ignore[no-untyped-def]
    n = idx.size
    out_ptr = np.zeros(n + 1, dtype=np.int64)
    for r in range(n):
        i = idx[r]
        out_ptr[r + 1] = out_ptr[r] + indptr[i + 1] - indptr[i]
    out_data = np.empty(out_ptr[n], dtype=data.dtype)
    out_idx = np.empty(out_ptr[n], dtype=np.int64)
    for r in range(n):
        i = idx[r]
        a = indptr[i]
        o = out_ptr[r]
        for e in range(indptr[i + 1] - a):
            out_data[o + e] = data[a + e]
            out_idx[o + e] = indices[a + e]
    return out_data, out_idx, out_ptr


@numba.njit(cache=True, nogil=True)
def _scatter(data, indices, indptr, out):  # type: ignore[no-untyped-def]
    for i in range(out.shape[0]):
        for e in range(indptr[i], indptr[i + 1]):
            out[i, indices[e]] += data[e]


@numba.njit(cache=True, nogil=True)
def _row_sq(data, indptr):  # type: ignore[no-untyped-def]
    n = indptr.size - 1
    out = np.zeros(n)
    for i in range(n):
        s = 0.0
        for e in range(indptr[i], indptr[i + 1]):
            v = np.float64(data[e])
            s += v * v
        out[i] = s
    return out


@numba.njit(cache=True, nogil=True)
def _dot_t(data, indices, indptr, centers):  # type: ignore[no-untyped-def]
    n = indptr.size - 1
    k = centers.shape[0]
    out = np.zeros((n, k))
    for i in range(n):
        for j in range(k):
            s = 0.0
            for e in range(indptr[i], indptr[i + 1]):
                s += np.float64(data[e]) * centers[j, indices[e]]
            out[i, j] = s
    return out


@numba.njit(cache=True, nogil=True)
def _label_sums(data, indices, indptr, w, labels, k, d):  # type: ignore[no-untyped-def]
    out = np.zeros((k, d))
    for i in range(indptr.size - 1):
        j = labels[i]
        wi = w[i]
        for e in range(indptr[i], indptr[i + 1]):
            out[j, indices[e]] += wi * np.float64(data[e])
    return out


@numba.njit(cache=True, nogil=True)
def _moments(data, indices, indptr, w, d):  # type: ignore[no-untyped-def]
    s1 = np.zeros(d)
    s2 = np.zeros(d)
    for i in range(indptr.size - 1):
        wi = w[i]
        for e in range(indptr[i], indptr[i + 1]):
            v = np.float64(data[e])
            s1[indices[e]] += wi * v
            s2[indices[e]] += wi * v * v
    return s1, s2
