"""Dense columns of a CSR matrix without a CSC copy: one compiled pass over the rows.

scipy's column selection of a CSR matrix (``matrix[:, cols]``) builds a new CSR matrix of
those columns (a pass over every stored value, twice), and a CSC conversion copies all
counts; a whole-transcriptome fit reads a block of genes at a time, so either would cost a
copy of the counts in memory or a full pass per block. Here each row's stored values are
searched for the block's column range (binary search where the indices are sorted) and
written straight into the dense block (matrices with unsorted or duplicate indices go
through scipy).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["csr_dense_columns", "is_canonical"]


@njit(cache=True, nogil=True)
def _fill(indptr, indices, data, lookup, lo, hi, out):
    """out[i, lookup[j − lo]] = value of each stored (i, j), lo ≤ j < hi, where lookup ≥ 0.

    Each row's indices are sorted: a binary search finds the first at or after ``lo``.
    """
    for i in range(out.shape[0]):
        a, b = indptr[i], indptr[i + 1]
        k = a + np.searchsorted(indices[a:b], lo)
        while k < b and indices[k] < hi:
            pos = lookup[indices[k] - lo]
            if pos >= 0:
                out[i, pos] = data[k]
            k += 1


@njit(cache=True, nogil=True)
def _rows_strictly_sorted(indptr, indices) -> bool:
    """Whether every row's column indices increase strictly (sorted, no duplicates)."""
    for i in range(indptr.size - 1):
        for k in range(indptr[i] + 1, indptr[i + 1]):
            if indices[k] <= indices[k - 1]:
                return False
    return True


def is_canonical(matrix) -> bool:
    """Whether a CSR matrix's rows hold sorted, distinct column indices.

    Checked here in one pass: scipy's ``has_canonical_format`` first copies the indices
    to the index pointers' type where the two differ (int32 indices, int64 pointers, as
    large h5ad files store them), a copy the size of the counts' indices.
    """
    return bool(_rows_strictly_sorted(matrix.indptr, matrix.indices))


def csr_dense_columns(
    matrix, columns: np.ndarray, canonical: bool | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """``matrix[:, columns]`` of a scipy CSR matrix as a dense column-major float64 array.

    Duplicate stored entries (a non-canonical CSR) are summed, as scipy's ``toarray`` does.
    ``canonical``: :func:`is_canonical` of the matrix when the caller knows it (None:
    checked here). ``out``: an (n, len(columns)) float64 column-major array to fill (a
    buffer reused from block to block: fresh memory is slow to touch the first time).
    """
    columns = np.asarray(columns, dtype=np.int64)
    n = matrix.shape[0]
    if out is None:
        out = np.zeros((n, columns.size), order="F")
    else:
        out[...] = 0.0
    if columns.size == 0 or matrix.nnz == 0:
        return out
    canonical = is_canonical(matrix) if canonical is None else canonical
    if not canonical:  # unsorted or duplicate indices: scipy's way (rare)
        out[...] = matrix[:, columns].toarray()
        return out
    lo, hi = int(columns.min()), int(columns.max()) + 1
    lookup = np.full(hi - lo, -1, dtype=np.int64)
    lookup[columns - lo] = np.arange(columns.size)
    _fill(matrix.indptr, matrix.indices, matrix.data, lookup, lo, hi, out)
    return out
