"""Rewriting count matrices gene-major, so that Dask gene blocks read only their own columns.

:func:`stglm.fit_genes` and :func:`stglm.test_genes` on a dask array run one task per block
of genes, and each task needs its genes' columns. A cell-major (CSR) matrix — the h5ad
default — stores rows: every block then reads every row chunk of the file and keeps a few
columns, so the file is read once per block. :func:`write_gene_major` rewrites an AnnData
(in memory, or read lazily by :func:`stglm.read_dask` or anndata) as a .zarr store whose
matrices are CSC (sparse) or chunked by blocks of genes (dense): :func:`stglm.read_dask`
then chunks them by blocks, and each block reads exactly its own columns.

A lazy cell-major matrix is converted without ever holding it whole: one pass counts the
stored values of each column, then each group of consecutive columns that fits in
``max_memory`` bytes (values and row indices) is read from the row chunks, turned into CSC
and appended to the store (anndata's ``sparse_dataset(...).append``) — one more pass over
the input per group.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._anndata import check_adata, is_lazy
from ._errors import InputError, InputTypeError

__all__ = ["DEFAULT_MAX_MEMORY", "write_gene_major"]

#: Bytes of stored values and row indices held per group of columns while converting a lazy
#: cell-major matrix (a few passes over a 10⁶-cell file, a fraction of a 2-core/8 GiB worker).
DEFAULT_MAX_MEMORY = 1 * 2**30
#: Bytes per stored value: a float32 or float64 count and its row index (int32 or int64).
_STORED_BYTES = 16


def _positive_int(value: Any, name: str, allow_none: bool = True) -> None:
    """Refuse ``value`` unless it is a positive integer (or None where allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        hint = " or None" if allow_none else ""
        raise InputError(f"{name} must be a positive integer{hint}; got {value!r}.")


def write_gene_major(
    adata: Any,
    path: str | os.PathLike,
    *,
    chunk_size: int | None = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
    overwrite: bool = False,
) -> Path:
    """Write an AnnData as a .zarr store whose count matrices are gene-major.

    ``X`` and every layer are written as CSC (sparse input) or as dense arrays chunked by
    ``chunk_size`` genes (dense input); ``obs``, ``var``, ``obsm``, ``varm``, ``obsp``,
    ``varp`` and ``uns`` are written as they are (``raw`` is not written).
    :func:`stglm.read_dask` then chunks each matrix by blocks of genes, so that each Dask
    task of :func:`stglm.fit_genes` or :func:`stglm.test_genes` reads only its own columns
    (a cell-major, CSR, matrix makes every task read the whole file: ``docs/dask.md``).
    ``adata`` itself is not changed.

    A matrix held in a dask array (from :func:`stglm.read_dask` or anndata's lazy readers)
    is converted block by block and never held whole: one pass counts each column's stored
    values, then each group of consecutive columns with at most ``max_memory`` bytes of
    values and row indices (16 bytes per stored value, which covers float32 counts read and
    converted as one copy beside the other) is read, converted and appended to the store.

    Parameters
    ----------
    adata : AnnData
        The data: matrices in memory (dense or scipy-sparse) or dask arrays. Annotations
        are read into memory (those of ``anndata.experimental.read_lazy`` included).
    path : str or path-like
        The .zarr directory to write.
    chunk_size : int, optional
        Genes per chunk of a dense matrix; give the ``chunk_size`` of the fits that will
        read it (default: the block size :func:`stglm.fit_genes` chooses for all genes).
        CSC matrices need none: :func:`stglm.read_dask` chunks them when it reads them.
    max_memory : int, default=1 GiB
        Bytes of one group of columns while converting a lazy sparse matrix (each group
        is one more pass over the input).
    overwrite : bool, default=False
        Replace ``path`` if it exists (otherwise an existing path is refused).

    Returns
    -------
    pathlib.Path
        ``path``, ready for ``stglm.read_dask(path, chunk_size=...)``.

    Raises
    ------
    ValueError
        If ``path`` exists (without ``overwrite``), or ``chunk_size`` or ``max_memory`` is
        not a positive integer.
    TypeError
        If ``adata`` is not an AnnData.
    """
    check_adata(adata)
    _positive_int(chunk_size, "chunk_size")
    _positive_int(max_memory, "max_memory", allow_none=False)
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"path {str(path)!r} exists; pass overwrite=True to replace it.")
    if path.exists() and not path.is_dir():
        raise InputTypeError(f"path {str(path)!r} is a file, not a .zarr directory.")
    import zarr

    matrices = {"X": adata.X, **{f"layers/{k}": v for k, v in adata.layers.items()}}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Writing zarr v2", UserWarning)  # anndata's note
        _annotations_only(adata).write_zarr(path)
    try:  # zarr 3: past anndata's consolidated metadata, which is rebuilt below
        group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    except TypeError:  # zarr 2 reads no consolidated metadata unless asked
        group = zarr.open_group(str(path), mode="r+")
    if adata.layers and "layers" not in group:
        group.create_group("layers")
    for key, matrix in matrices.items():
        if matrix is not None:
            parent, name = (group["layers"], key[len("layers/") :]) if "/" in key else (group, key)
            _write_matrix(parent, name, matrix, chunk_size, max_memory)
    zarr.consolidate_metadata(str(path))
    return path


def _annotations_only(adata: Any) -> Any:
    """A new AnnData with ``adata``'s annotations in memory and no matrices."""
    import anndata as ad

    def in_memory(frame: Any) -> Any:
        return frame.to_memory() if hasattr(frame, "to_memory") else frame.copy()

    return ad.AnnData(
        obs=in_memory(adata.obs),
        var=in_memory(adata.var),
        obsm={k: np.asarray(v) if is_lazy(v) else v for k, v in adata.obsm.items()},
        varm={k: np.asarray(v) if is_lazy(v) else v for k, v in adata.varm.items()},
        obsp=dict(adata.obsp),
        varp=dict(adata.varp),
        uns=dict(adata.uns),
    )


def _write_matrix(parent: Any, name: str, matrix: Any, chunk_size: int | None, budget: int):
    """One matrix, gene-major, as ``parent[name]``."""
    import anndata as ad

    n_obs, n_vars = matrix.shape
    lazy = is_lazy(matrix)
    sparse = sp.issparse(matrix._meta if lazy else matrix)
    if not sparse:
        from ._transcriptome import default_chunk_size

        genes = chunk_size or default_chunk_size(n_obs, n_obs * n_vars * matrix.dtype.itemsize)
        chunks = (n_obs, min(int(genes), n_vars))
        # a dask array is stored chunk by chunk, never held whole
        values = matrix.rechunk(chunks) if lazy else np.asarray(matrix)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # anndata's notes on zarr formats
            ad.io.write_elem(parent, name, values, dataset_kwargs={"chunks": chunks})
        return
    groups = _column_groups(matrix, budget) if lazy else [(0, n_vars)]
    for k, (start, stop) in enumerate(groups):
        # shares an in-memory CSC matrix's arrays; the indptr below is a new array
        block = sp.csc_matrix(matrix[:, start:stop].compute() if lazy else matrix)
        if k == 0:  # 64-bit offsets, so that later groups can be appended past 2³¹ values
            block.indptr = block.indptr.astype(np.int64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ad.io.write_elem(parent, name, block)
            stored = ad.io.sparse_dataset(parent[name])
        else:
            stored.append(block)


def _column_groups(matrix: Any, budget: int) -> list[tuple[int, int]]:
    """Consecutive column ranges, each with at most ``budget`` bytes of stored values.

    One pass over the matrix counts each column's stored values (a column above the budget
    is a group of its own).
    """
    import dask

    rows = (1,) * len(matrix.chunks[0])
    counts = matrix.map_blocks(_stored_per_column, dtype=np.int64, chunks=(rows, matrix.chunks[1]))
    (per_column,) = dask.compute(counts.sum(axis=0))
    per_column = np.asarray(per_column).ravel() * _STORED_BYTES
    groups, start, held = [], 0, 0
    for j, size in enumerate(per_column):
        if j > start and held + size > budget:
            groups.append((start, j))
            start, held = j, 0
        held += int(size)
    groups.append((start, len(per_column)))
    return groups


def _stored_per_column(chunk: Any) -> np.ndarray:
    """Stored (nonzero) values of each column of one chunk, as a (1, columns) row."""
    if sp.issparse(chunk):
        return np.asarray((chunk != 0).sum(axis=0), dtype=np.int64).reshape(1, -1)
    dense = chunk.todense() if hasattr(chunk, "todense") else np.asarray(chunk)
    return np.count_nonzero(np.asarray(dense), axis=0).astype(np.int64).reshape(1, -1)
