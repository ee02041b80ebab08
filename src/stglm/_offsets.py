"""Offsets, size factors and sample weights of a whole-transcriptome fit, from an AnnData.

A count GLM with a log link models sequencing depth by an offset: log μ_gi = log s_i + x_iβ_g
with s_i the size factor of cell or spot i, so that β_g are log fold changes of expression
rather than of depth. :func:`size_factors` computes s the ways single-cell and spatial
tools do; :func:`resolve_offset` turns ``fit_genes``' arguments into the offset the solver
adds to every linear predictor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ._anndata import is_lazy, obs_column, row_sums
from ._errors import InputError, InputTypeError
from ._validation import check_vector

__all__ = ["SIZE_FACTOR_METHODS", "resolve_offset", "resolve_weights", "size_factors"]

#: The estimators :func:`size_factors` knows.
SIZE_FACTOR_METHODS = ("total", "poscounts")


def _log_totals(matrix) -> np.ndarray:
    totals = row_sums(matrix)
    if np.any(totals <= 0):
        raise InputError(
            f"size_factors='total' needs every observation to have counts; "
            f"{int(np.sum(totals <= 0))} have a total of 0 (filter them, or use 'poscounts')."
        )
    return np.log(totals)


def _poscounts(matrix) -> np.ndarray:
    """DESeq2's ``type="poscounts"`` log size factors (zero-heavy data), from cells × genes.

    Per gene the log geometric mean of its positive counts over all n cells,
    lgm_g = Σ_{y>0} log y / n; per cell the median over its positive genes of
    log y_gi − lgm_g; then centred so that the size factors' geometric mean is 1.
    """
    if is_lazy(matrix):
        # Each cell's median runs over all its genes: the whole matrix, row by row.
        raise InputError(
            "size_factors='poscounts' needs the count matrix in memory; with counts in a "
            "dask array use 'total', or compute the size factors once and pass them as an "
            "array or obs column."
        )
    X = sp.csr_matrix(matrix, dtype=float)
    X.eliminate_zeros()
    if np.any(X.data < 0):
        raise InputError("size_factors='poscounts' needs non-negative counts.")
    n = X.shape[0]
    log_data = np.log(X.data)
    lgm = np.bincount(X.indices, weights=log_data, minlength=X.shape[1]) / n
    values = log_data - lgm[X.indices]
    rows = np.repeat(np.arange(n), np.diff(X.indptr))
    order = np.lexsort((values, rows))  # row by row, each row's values sorted
    values = values[order]
    counts = np.diff(X.indptr)
    if np.any(counts == 0):
        raise InputError(
            f"size_factors='poscounts' needs every observation to have counts; "
            f"{int(np.sum(counts == 0))} have none."
        )
    starts = X.indptr[:-1]
    lo = starts + (counts - 1) // 2
    hi = starts + counts // 2
    log_sf = 0.5 * (values[lo] + values[hi])  # the median of each row
    return log_sf - log_sf.mean()


def size_factors(matrix, method: str = "total") -> np.ndarray:
    """Size factors s_i of the observations (rows) of a count matrix, geometric mean 1.

    Parameters
    ----------
    matrix : array or sparse matrix of shape (n_obs, n_vars)
        Raw counts, all genes (library size is a property of the observation).
    method : {"total", "poscounts"}
        "total": s_i = total_i / geometric mean of the totals (edgeR's and scanpy's
        library size); "poscounts": DESeq2's estimator for data with many zeros (the
        median ratio of each cell's positive counts to the genes' geometric means).

    Returns
    -------
    ndarray of shape (n_obs,)
    """
    if method not in SIZE_FACTOR_METHODS:
        valid = ", ".join(map(repr, SIZE_FACTOR_METHODS))
        raise InputError(
            f"size_factors must be one of {valid}, an array or an obs column; got {method!r}."
        )
    if method == "total":
        log_sf = _log_totals(matrix)
        return np.exp(log_sf - log_sf.mean())
    return np.exp(_poscounts(matrix))


def _obs_or_array(adata, value: Any, name: str) -> np.ndarray:
    """An obs column's values (by name) or an array, as float (n_obs,) or (n_obs, k)."""
    if isinstance(value, str):
        if value not in adata.obs.columns:
            raise InputError(f"{name}={value!r} is not a column of adata.obs.")
        column = obs_column(adata, value)
        if not np.issubdtype(column.dtype, np.number):
            raise InputTypeError(
                f"{name}: adata.obs[{value!r}] must be numeric; it is {column.dtype}."
            )
        return column.to_numpy(dtype=float)
    return value


def resolve_offset(
    adata, matrix, names, offset: Any = None, size_factors_: Any = None
) -> tuple[np.ndarray | None, str]:
    """The offset of ``fit_genes`` as (n,) or (n, G) — and what it is, for ``uns``.

    ``offset``: None, an (n,) or (n, G) array (G = the requested genes, in their order) or
    an obs column; ``size_factors_``: None, "total", "poscounts", an (n,) array or an obs
    column, giving the offset log s. Both together add up.
    """
    n = adata.n_obs
    parts, kinds = [], []
    if size_factors_ is not None:
        if isinstance(size_factors_, str) and size_factors_ in SIZE_FACTOR_METHODS:
            sf = size_factors(matrix, size_factors_)
            kinds.append(f"log size factors ({size_factors_})")
        else:
            kinds.append(
                f"log size factors (obs[{size_factors_!r}])"
                if isinstance(size_factors_, str)
                else "log size factors (array)"
            )
            sf = check_vector(
                _obs_or_array(adata, size_factors_, "size_factors"), n, "size_factors", what="n_obs"
            )
            if np.any(sf <= 0):
                raise InputError("size_factors must be positive.")
        parts.append(np.log(sf))
    if offset is not None:
        kinds.append(f"obs[{offset!r}]" if isinstance(offset, str) else "array")
        values = _obs_or_array(adata, offset, "offset")
        arr = np.asarray(values, dtype=float) if not sp.issparse(values) else values.toarray()
        if arr.ndim == 2 and arr.shape[1] != 1:
            if arr.shape != (n, len(names)):
                raise InputError(
                    f"offset must have shape (n_obs,) or (n_obs, n_genes) = ({n}, {len(names)}); "
                    f"got {arr.shape}."
                )
            if not np.all(np.isfinite(arr)):
                raise InputError("offset contains NaN or infinite values.")
        else:
            arr = check_vector(arr, n, "offset", what="n_obs")
        parts.append(arr)
    if not parts:
        return None, "none"
    if len(parts) == 1:
        return parts[0], kinds[0]
    log_sf, given = parts  # (n,) and (n,) or (n, G)
    return given + (log_sf[:, None] if given.ndim == 2 else log_sf), " + ".join(kinds)


def resolve_weights(adata, sample_weight: Any) -> tuple[np.ndarray | None, str]:
    """``fit_genes``' sample weights as (n,) — and what they are, for ``uns``."""
    if sample_weight is None:
        return None, "none"
    kind = f"obs[{sample_weight!r}]" if isinstance(sample_weight, str) else "array"
    values = _obs_or_array(adata, sample_weight, "sample_weight")
    weights = check_vector(
        values, adata.n_obs, "sample_weight", nonnegative=True, positive_sum=True, what="n_obs"
    )
    return weights, kind
