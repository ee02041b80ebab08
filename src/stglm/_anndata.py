"""Reading an AnnData: the matrix a ``layer`` names, obs columns, genes, coordinates, designs.

Every module that takes an AnnData reads it through these functions, so which matrix
``layer=None`` or ``layer="counts"`` means, how genes and obs columns are looked up and
what the messages say when something is missing are decided here, once. Nothing here
writes into ``adata``.

A matrix may be held lazily, as a dask array (:func:`is_lazy`; for example from
:func:`stglm.read_dask`): :func:`dense_columns` and :func:`row_sums` then compute only the
columns asked for, or the row totals chunk by chunk, never the whole matrix in memory.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._errors import InputError, InputTypeError
from ._validation import as_float_array, check_X

#: Fewest cells/spots a fit accepts.
MIN_OBS = 2
#: Values per block when dense responses are checked (64 MiB of float64).
CHECK_BLOCK_VALUES = 8 * 2**20

__all__ = [
    "X_LAYER",
    "check_adata",
    "dense_columns",
    "check_response_values",
    "design_frame",
    "dense_block",
    "gene_positions",
    "get_coords",
    "get_matrix",
    "get_obs_column",
    "obs_column",
    "get_section_labels",
    "group_indices",
    "is_lazy",
    "layer_label",
    "layer_matrix",
    "layer_of_record",
    "row_sums",
    "row_sums_and_minima",
]

#: A dense or scipy sparse matrix (or sparse array), as AnnData stores them.
Matrix = np.ndarray | sp.spmatrix | sp.sparray

#: How a fit records that it read ``adata.X`` (``uns[key]['params']['layer']``).
X_LAYER = "X"
#: Unknown genes named in an error message (the rest are counted).
MAX_NAMES_SHOWN = 10


def check_adata(adata: Any, name: str = "adata") -> AnnData:
    """Raise ``TypeError`` unless ``adata`` is an AnnData; return it."""
    if not isinstance(adata, AnnData):
        raise InputTypeError(f"{name} must be an AnnData; got {type(adata).__name__}.")
    return adata


# ---------------------------------------------------------------------------------------------
# the expression matrix
# ---------------------------------------------------------------------------------------------
def layer_label(layer: str | None) -> str:
    """How messages name the matrix of ``layer``: ``adata.X`` or ``adata.layers['name']``."""
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def layer_of_record(layer: str | None) -> str:
    """The value a fit stores for ``layer`` (``X_LAYER`` for ``adata.X``)."""
    return X_LAYER if layer is None else layer


def layer_matrix(adata: AnnData, layer: str | None) -> Any:
    """``adata.X`` (``layer=None``) or ``adata.layers[layer]``, as stored (not converted).

    Raises
    ------
    ValueError
        If ``layer`` is not a key of ``adata.layers``.
    """
    if layer is None:
        return adata.X
    if not isinstance(layer, str) or layer not in adata.layers:
        raise InputError(
            f"layer={layer!r} is not in adata.layers; layers are {list(adata.layers.keys())}."
        )
    return adata.layers[layer]


def is_lazy(matrix: Any) -> bool:
    """Whether ``matrix`` is a dask array (known without importing Dask)."""
    return hasattr(matrix, "__dask_graph__") and type(matrix).__module__.startswith("dask.")


def get_matrix(adata: AnnData, layer: str | None, lazy: bool = False) -> Any:
    """The matrix of ``layer`` (see :func:`layer_matrix`), checked to be present and numeric.

    Dense input becomes an ndarray; sparse input stays sparse, as CSR or CSC (other formats
    become CSR: they cannot be sliced by column). A dask array stays lazy with
    ``lazy=True`` (the caller reads it with :func:`dense_columns` and :func:`row_sums`);
    otherwise it is computed, for callers that need the whole matrix.
    """
    X, name = layer_matrix(adata, layer), layer_label(layer)
    if X is None:
        raise InputError(f"{name} is empty (None).")
    if is_lazy(X):
        if X.ndim != 2 or X.dtype.kind not in "biuf":
            raise InputTypeError(f"{name} must be a numeric 2-D dask array; got {X!r}.")
        if lazy:
            return X
        X = X.compute()
    if not sp.issparse(X):
        X = dense_block(X) if _is_pydata_sparse(X) else np.asarray(X)
    elif X.format not in ("csr", "csc"):
        X = X.tocsr()
    if X.dtype.kind not in "biuf":
        raise InputTypeError(f"{name} must be numeric; got dtype {X.dtype}.")
    return X


def _is_pydata_sparse(values: Any) -> bool:
    """A pydata ``sparse`` array (COO, GCXS), as Dask chunks may hold."""
    return type(values).__module__.startswith("sparse.")


def dense_block(values: Any) -> np.ndarray:
    """Dense float64 ndarray of a block held dense, scipy-sparse or as a pydata sparse array.

    Always column-major (one gene's values contiguous), whatever the block's source: the
    same numbers in the same layout give the same sums to the last bit, so a block read
    from a dask array is fitted exactly as the same block read from memory.
    """
    if sp.issparse(values):
        values = values.toarray()
    elif _is_pydata_sparse(values):
        values = values.todense()
    return np.asfortranarray(values, dtype=np.float64)


def dense_columns(
    matrix: Any, columns: Any, canonical: bool | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Dense float64 block ``matrix[:, columns]`` of a dense, sparse or dask matrix.

    Only the selected columns are densified (and, of a dask array, computed); of a CSR
    matrix they are read in place (:mod:`stglm._csr_columns`: no copy of the matrix;
    ``canonical`` is whether its indices are sorted and distinct, when the caller knows,
    and ``out`` a column-major float64 buffer of the block's shape to fill).
    """
    if sp.issparse(matrix) and matrix.format == "csr":
        from ._csr_columns import csr_dense_columns  # numba: imported when first needed

        return csr_dense_columns(matrix, columns, canonical, out)
    block = matrix[:, columns]
    if is_lazy(block):
        block = block.compute()
    return dense_block(block)


def _chunk_row_stats(chunk: Any) -> np.ndarray:
    """Each row's total and smallest value in one chunk (dense or sparse): (n_rows, 2)."""
    sums = dense_block(chunk.sum(axis=1)).reshape(-1)
    if chunk.shape[1] == 0:
        return np.column_stack([sums, np.full(sums.shape, np.inf)])
    return np.column_stack([sums, dense_block(chunk.min(axis=1)).reshape(-1)])


def row_sums_and_minima(matrix: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each row's total and smallest value, both (n_rows,) float64, in one pass.

    Of a dask array chunk by chunk (the chunks may be sparse, whose ``sum`` has no
    ``keepdims``: Dask's own reductions cannot run on them), then across each row's chunks;
    Dask is imported only then.
    """
    if not is_lazy(matrix):
        stats = _chunk_row_stats(matrix)
        return stats[:, 0], stats[:, 1]
    import dask

    n_col_chunks = len(matrix.chunks[1])
    stats = matrix.map_blocks(
        _chunk_row_stats,
        dtype=np.float64,
        chunks=(matrix.chunks[0], (2,) * n_col_chunks),
        meta=np.empty((0, 0)),
    )
    sums, mins = dask.compute(stats[:, 0::2].sum(axis=1), stats[:, 1::2].min(axis=1))
    return np.asarray(sums, dtype=np.float64), np.asarray(mins, dtype=np.float64)


def _chunk_row_sums(chunk: Any) -> np.ndarray:
    """Each row's total in one chunk (dense or sparse): (n_rows, 1)."""
    return dense_block(chunk.sum(axis=1)).reshape(-1, 1)


def row_sums(matrix: Any) -> np.ndarray:
    """Each row's total, (n_rows,) float64, of a dense, sparse or dask matrix.

    Of a dask array chunk by chunk, then across each row's chunks (see
    :func:`row_sums_and_minima`).
    """
    if is_lazy(matrix):
        sums = matrix.map_blocks(
            _chunk_row_sums,
            dtype=np.float64,
            chunks=(matrix.chunks[0], (1,) * len(matrix.chunks[1])),
            meta=np.empty((0, 0)),
        )
        return np.asarray(sums.sum(axis=1).compute(), dtype=np.float64).reshape(-1)
    return np.asarray(matrix.sum(axis=1), dtype=np.float64).reshape(-1)


# ---------------------------------------------------------------------------------------------
# obs and var lookups
# ---------------------------------------------------------------------------------------------
def obs_column(adata: AnnData, key: str) -> pd.Series:
    """``adata.obs[key]`` as a pandas Series, also where ``obs`` is read lazily.

    anndata's ``experimental.read_lazy`` holds ``obs`` as an xarray-backed frame; its
    column is read into memory (with its dtype, categories included).
    """
    obs = adata.obs
    return obs[key] if isinstance(obs, pd.DataFrame) else obs[[key]].to_memory()[key]


def get_obs_column(adata: AnnData, key: Any, name: str) -> pd.Series:
    """``adata.obs[key]``, rejecting unknown keys and missing values (``name`` is the option)."""
    if not isinstance(key, str):
        raise InputTypeError(f"{name} must be the name of an adata.obs column; got {key!r}.")
    if key not in adata.obs.columns:
        raise InputError(
            f"{name}={key!r} is not a column of adata.obs; columns are {list(adata.obs.columns)}."
        )
    col = obs_column(adata, key)
    n_missing = int(col.isna().sum())
    if n_missing:
        raise InputError(f"adata.obs[{key!r}] has {n_missing} missing values; fill or drop them.")
    return col


def get_section_labels(adata: AnnData, key: Any, name: str) -> pd.Series:
    """``adata.obs[key]`` as section labels: refused when it looks like a measurement.

    A column of non-whole numbers, or with so many distinct values that sections would
    average fewer than two cells, is almost surely a continuous column given by mistake (as
    sections it would add a dummy predictor per cell).
    """
    col = get_obs_column(adata, key, name)
    values = col.to_numpy()
    if pd.api.types.is_float_dtype(col) and not np.array_equal(values, np.round(values)):
        raise InputError(
            f"{name}={key!r} holds non-integer numbers (a measurement?); give a column of "
            "section labels."
        )
    n_labels = col.nunique()
    if n_labels > max(1, len(col) // 2):
        raise InputError(
            f"{name}={key!r} has {n_labels} distinct values for {len(col)} cells: as sections "
            "each would hold fewer than 2 cells; give a column of section labels."
        )
    return col


def gene_positions(adata: AnnData, genes: Any = None) -> tuple[pd.Index, np.ndarray]:
    """Names and column positions of ``genes`` (a name, a list of names, or None for all).

    Raises
    ------
    ValueError
        If ``adata.var_names`` has duplicates (a name would not say which column), or
        ``genes`` is empty, has duplicates or names genes not in ``adata.var_names``.
    """
    var_names = adata.var_names
    if not var_names.is_unique:
        repeated = var_names[var_names.duplicated()].unique().tolist()
        raise InputError(
            f"adata.var_names has duplicates ({repeated[:MAX_NAMES_SHOWN]}); "
            "make them unique first, e.g. with adata.var_names_make_unique()."
        )
    if genes is None:
        names = pd.Index(var_names)
    else:
        names = pd.Index([genes] if isinstance(genes, str) else list(genes))
        missing = [g for g in names if g not in var_names]
        if missing:
            more = len(missing) - MAX_NAMES_SHOWN
            extra = f" and {more} more" if more > 0 else ""
            raise InputError(f"genes not in adata.var_names: {missing[:MAX_NAMES_SHOWN]}{extra}.")
        if names.has_duplicates:
            raise InputError(f"genes contains duplicates: {names[names.duplicated()].tolist()}.")
    if len(names) == 0:
        raise InputError("genes is empty.")
    return names, var_names.get_indexer(names)


def get_coords(adata_or_coords: Any) -> np.ndarray:
    """Cell coordinates as a finite float (n_obs, n_dims) array.

    From ``adata.obsm['spatial']`` for an AnnData, else from the array itself.
    """
    if isinstance(adata_or_coords, AnnData):
        if "spatial" not in adata_or_coords.obsm:
            keys = list(adata_or_coords.obsm.keys())
            raise InputError(
                "adata.obsm has no 'spatial' entry (the cell coordinates); obsm keys are "
                f"{keys}. Store them in adata.obsm['spatial'] or pass the coordinate array."
            )
        coords, name = adata_or_coords.obsm["spatial"], "adata.obsm['spatial']"
    else:
        coords, name = adata_or_coords, "coordinates"
    coords = as_float_array(
        coords,
        f"{name} must be a numeric (n_obs, n_dims) array or an AnnData; "
        f"got {type(coords).__name__}.",
    )
    if coords.ndim != 2 or coords.shape[0] == 0 or coords.shape[1] == 0:
        raise InputError(
            f"{name} must be a non-empty 2-D (n_obs, n_dims) array; got {coords.shape}."
        )
    if not np.all(np.isfinite(coords)):
        raise InputError(f"{name} contains NaN or infinite values.")
    return coords


def group_indices(labels: Any) -> list[np.ndarray]:
    """Positions of the cells of each distinct label (sections), in sorted label order."""
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    return [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]


def check_response_values(matrix: Any, columns: np.ndarray, family: Any, layer: str | None):
    """Check the responses of the requested genes before any work.

    NaN or infinite values and values outside the family's range are errors; values that are
    not whole numbers under a count family (Poisson, negative binomial) get a warning naming
    the matrix: they are usually normalised or log-transformed data, not counts. Sparse
    matrices are checked through their stored values (and one zero, if any is implicit),
    dense ones a block of columns at a time (never copied whole); a dask array is checked
    block by block as it is read.
    """
    if not isinstance(matrix, Matrix):
        return
    label = layer_label(layer)
    if sp.issparse(matrix):
        whole = len(columns) == matrix.shape[1] and np.array_equal(columns, np.arange(len(columns)))
        if whole:
            values = matrix.data
        elif matrix.format == "csr":  # the requested genes' stored values, without a CSR copy
            values = matrix.data[np.isin(matrix.indices, columns)]
        else:
            values = matrix[:, columns].data
        integral = _check_values(values, family, label)
        if values.size < matrix.shape[0] * len(columns):  # the implicit zeros, for the range
            _check_values(np.zeros(1), family, label)
    else:
        step = max(1, CHECK_BLOCK_VALUES // max(1, matrix.shape[0]))
        blocks = (columns[s : s + step] for s in range(0, len(columns), step))
        integral = all([_check_values(np.asarray(matrix[:, b]), family, label) for b in blocks])
    if family.is_count and not integral:
        warnings.warn(
            f"{label} holds values that are not whole numbers, but distr={family.name!r} "
            "models counts: fit the raw counts (layer='counts' or whichever layer holds "
            "them), or choose a family for continuous data.",
            UserWarning,
            stacklevel=4,
        )


def _check_values(values: np.ndarray, family: Any, label: str) -> bool:
    """Raise on non-finite or out-of-range values; whether all are whole numbers."""
    integers = values.dtype.kind in "biu"  # finite and whole by their type
    if not integers and not np.all(np.isfinite(values)):
        raise InputError(f"{label} contains NaN or infinite values.")
    try:
        family.check_y(values)
    except ValueError as err:  # the family's range check: bad input, not a bug
        raise InputError(f"{label}: {err}") from None
    return integers or bool(np.array_equal(values, np.round(values)))


# ---------------------------------------------------------------------------------------------
# designs
# ---------------------------------------------------------------------------------------------
def design_frame(design: Any, adata: AnnData) -> pd.DataFrame:
    """The design as a numeric DataFrame aligned with ``adata.obs_names``.

    A DataFrame's index must be ``adata.obs_names`` (any order) or a RangeIndex of length
    ``n_obs``; an array's columns are named ``x0, x1, ...``.
    """
    if adata.n_obs < MIN_OBS:
        raise InputError(
            f"adata has {adata.n_obs} cells/spots (n_obs); a fit needs at least {MIN_OBS}."
        )
    if isinstance(design, pd.DataFrame):
        if design.index.equals(adata.obs_names):
            frame = design
        elif set(design.index) == set(adata.obs_names) and design.index.is_unique:
            frame = design.loc[adata.obs_names]
        elif len(design) == adata.n_obs and isinstance(design.index, pd.RangeIndex):
            frame = design.set_axis(adata.obs_names, axis=0)
        else:
            raise InputError(
                "design's index must be adata.obs_names (in any order) or a RangeIndex of "
                f"length n_obs={adata.n_obs}; got {len(design)} rows with other labels."
            )
    else:
        values = check_X(design, name="design", accept_sparse=True)
        if values.shape[0] != adata.n_obs:
            raise InputError(f"design must have n_obs={adata.n_obs} rows; got {values.shape[0]}.")
        if sp.issparse(values):
            values = values.toarray()  # designs are narrow: densifying is cheap
        frame = pd.DataFrame(
            values, index=adata.obs_names, columns=[f"x{j}" for j in range(values.shape[1])]
        )
    frame = _numeric_columns(frame.set_axis(frame.columns.astype(str), axis=1))  # a new frame
    check_X(frame, name="design")
    return frame


def _numeric_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The design's columns as float; categorical and text columns refused with the fix.

    pandas' nullable ``Int64`` / ``Float64`` / ``boolean`` columns become float (a missing
    value becomes NaN, which the design check then reports).
    """
    for name, dtype in frame.dtypes.items():
        if isinstance(dtype, pd.CategoricalDtype):
            kind = "categorical"
        elif pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            kind = "text"
        else:
            continue
        raise InputTypeError(
            f"design column {name!r} is {kind}; encode it as 0/1 columns first, e.g. "
            "pd.get_dummies(design, columns=[...], drop_first=True, dtype=float), or use "
            "stglm.spatial.build_design's section dummies."
        )
    return frame.astype(float)
