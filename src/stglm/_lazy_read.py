"""Reading an AnnData file lazily: annotations in memory, count matrices as dask arrays.

What :func:`stglm.fit_genes` and :func:`stglm.test_genes` need of a large file is its
annotations (small) and, block by block, some genes' columns of one matrix. :func:`read_dask`
reads the former and leaves the matrices on disk as dask arrays (anndata's
``read_elem_lazy``), chunked for gene blocks: a gene-major (CSC) matrix in chunks of one
block's genes, so that each block reads only its own columns; a cell-major (CSR) one — the
h5ad default — in row chunks, each of which every block must read (store the counts
gene-major when they are read many times); a dense one as chunked on disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ._distributed import require_dask
from ._errors import InputError, InputTypeError
from ._transcriptome import default_chunk_size

__all__ = ["CSR_CHUNK_BYTES", "read_dask"]

#: Bytes of stored data (values and indices) per row chunk of a cell-major (CSR) matrix:
#: few tasks per block, little memory per task.
CSR_CHUNK_BYTES = 64 * 2**20
#: Fewest rows in a CSR chunk.
CSR_CHUNK_MIN_ROWS = 1000
#: The annotations read into memory.
ANNOTATIONS = ("obs", "var", "obsm", "varm", "obsp", "uns")


def _chunks(elem: Any, n_obs: int, n_vars: int, block_genes: int | None) -> tuple | None:
    """Chunks of one stored matrix for ``read_elem_lazy`` (None: as chunked on disk)."""
    encoding = dict(elem.attrs).get("encoding-type", "")
    if encoding not in ("csc_matrix", "csr_matrix"):
        return None
    data = elem["data"]
    if encoding == "csc_matrix":
        if block_genes is None:  # the block size fit_genes chooses for this matrix
            block_genes = default_chunk_size(n_obs)
        return (n_obs, min(int(block_genes), n_vars))
    bytes_per_row = max(1, (data.dtype.itemsize + elem["indices"].dtype.itemsize) * data.shape[0])
    rows = CSR_CHUNK_BYTES * n_obs // bytes_per_row
    return (int(np.clip(rows, min(CSR_CHUNK_MIN_ROWS, n_obs), n_obs)), n_vars)


def _open(path: Path) -> Any:
    """The root group of an .h5ad file or a .zarr directory, opened read-only."""
    if not path.exists():
        raise InputError(f"{path} does not exist.")
    if path.is_dir():
        import zarr

        try:
            return zarr.open_group(str(path), mode="r")
        except Exception as err:  # noqa: BLE001 - any failure to open is a bad input
            raise InputTypeError(f"{path} is not a .zarr store: {err}") from None
    import h5py

    if not h5py.is_hdf5(path):
        raise InputTypeError(f"{path} is neither an .h5ad (HDF5) file nor a .zarr directory.")
    return h5py.File(path, "r")


def read_dask(path: str | os.PathLike, chunk_size: int | None = None) -> Any:
    """Read an AnnData (.h5ad or .zarr) with its matrices as dask arrays.

    ``obs``, ``var``, ``obsm``, ``varm``, ``obsp`` and ``uns`` are read into memory;
    ``X`` and every layer stay on disk as dask arrays (anndata's ``read_elem_lazy``), for
    :func:`stglm.fit_genes` and :func:`stglm.test_genes` to read block by block as Dask
    tasks (see ``docs/dask.md``). Gene-major (CSC) matrices are chunked by blocks of
    ``chunk_size`` genes, so that each block reads only its own columns; cell-major (CSR)
    ones by rows (about 64 MiB stored per chunk), which every block reads; dense ones as
    chunked on disk. The chunks of an .h5ad file reopen it, so that workers on other
    machines can read them where they see the same path.

    Parameters
    ----------
    path : str or path-like
        An .h5ad file or a .zarr directory written by anndata.
    chunk_size : int, optional
        Genes per chunk of a CSC matrix; give the ``chunk_size`` of the fits that will read
        it (default: the block size :func:`stglm.fit_genes` chooses for all of its genes).

    Returns
    -------
    AnnData
        With dask arrays in ``X`` and ``layers``.

    Raises
    ------
    stglm._errors.MissingDependencyError
        (an ``ImportError``) if Dask is not installed: ``pip install 'stglm[dask]'``.
    """
    require_dask("stglm.read_dask")
    import anndata as ad
    from anndata import experimental

    if chunk_size is not None and (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int | np.integer)
        or chunk_size < 1
    ):
        raise InputError(f"chunk_size must be a positive integer or None; got {chunk_size!r}.")
    read_lazily = getattr(experimental, "read_elem_lazy", None) or experimental.read_elem_as_dask
    group = _open(Path(path))
    parts = {key: ad.io.read_elem(group[key]) for key in ANNOTATIONS if key in group}
    n_obs, n_vars = len(parts["obs"]), len(parts["var"])

    def lazy(elem: Any) -> Any:
        return read_lazily(elem, chunks=_chunks(elem, n_obs, n_vars, chunk_size))

    X = lazy(group["X"]) if "X" in group else None
    layers = (
        {key: lazy(group["layers"][key]) for key in group["layers"]} if "layers" in group else {}
    )
    if hasattr(group, "close"):  # h5py: the chunks reopen the file by its path
        group.close()
    return ad.AnnData(X=X, layers=layers, **parts)
