"""Spatial smoothing and spatial predictors for stglm's models.

- :func:`calc_1nd_moment` — spateo's neighbour smoothing ``W̃ X`` (row-normalised graph).
- Graphs: :func:`spatial_neighbors`, :func:`expression_neighbors`, :func:`get_graph`
  (implemented in ``stglm._graphs``).
- Predictors, as DataFrames indexed by ``obs_names`` and ready to be a design matrix:
  :func:`niche_composition`, :func:`spatial_lag`, :func:`coordinates`, and
  :func:`build_design`, which puts them together with section indicators (the design of
  the ``stglm fit`` command).

Sparse inputs stay sparse and no function writes into ``adata``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._anndata import (
    Matrix,
    check_adata,
    dense_columns,
    gene_positions,
    get_coords,
    get_matrix,
    get_obs_column,
    get_section_labels,
    group_indices,
)
from ._errors import InputError, InputTypeError
from ._graphs import expression_neighbors, get_graph, size_factors, spatial_neighbors
from ._validation import Boolean, as_float_array, validate_params

__all__ = [
    "build_design",
    "calc_1nd_moment",
    "coordinates",
    "expression_neighbors",
    "get_graph",
    "niche_composition",
    "spatial_lag",
    "spatial_neighbors",
]

#: niche_composition warns about categories with fewer cells than this.
RARE_CATEGORY_CELLS = 30


def _check_W(W: Any, normalize_W: bool) -> Matrix:
    """W as a finite float64 square matrix (CSR of the same sparse family, or ndarray)."""
    if sp.issparse(W):
        if W.dtype.kind not in "biuf":
            raise InputTypeError(f"W must be numeric; got dtype {W.dtype}.")
        W = W.tocsr().astype(np.float64, copy=False)  # tocsr keeps spmatrix vs sparray
        values = W.data
    else:
        W = as_float_array(
            W, f"W must be a numeric dense or scipy sparse matrix; got {type(W).__name__}."
        )
        values = W
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise InputError(f"W must be a square (n_obs, n_obs) matrix; got shape {W.shape}.")
    if not np.all(np.isfinite(values)):
        raise InputError("W contains NaN or infinite values.")
    if normalize_W and values.size and values.min() < 0:
        raise InputError(
            "W has negative weights; row-normalising (normalize_W=True) needs non-negative weights."
        )
    return W


def _check_moment_X(X: Any, n_obs: int) -> Matrix:
    """X as a finite numeric 1-D or 2-D array (or sparse matrix) with ``n_obs`` rows."""
    if sp.issparse(X):
        values = X.data
    else:
        X = np.asarray(X)
        values = X
        if X.ndim not in (1, 2):
            raise InputError(f"X must be 1-D or 2-D; got {X.ndim}-D with shape {X.shape}.")
    if X.dtype.kind not in "biuf":
        raise InputTypeError(f"X must be numeric; got dtype {X.dtype}.")
    if X.shape[0] != n_obs:
        raise InputError(
            f"X has {X.shape[0]} rows but W is {n_obs}×{n_obs}; W must be (n_obs, n_obs) with "
            "n_obs = X.shape[0]."
        )
    if not np.all(np.isfinite(values)):
        raise InputError("X contains NaN or infinite values.")
    return X


def calc_1nd_moment(
    X: Matrix, W: Matrix, normalize_W: bool = True
) -> tuple[Matrix, Matrix] | Matrix:
    """First moment of X over each cell's neighbours: ``W̃ @ X`` (spateo's smoothing).

    Parameters
    ----------
    X : array-like of shape (n_obs,) or (n_obs, n_features), or scipy sparse matrix/array
        Values per cell (e.g. normalised expression).
    W : ndarray, scipy sparse matrix or scipy sparse array of shape (n_obs, n_obs)
        Neighbour weights; row ``i`` lists cell ``i``'s neighbours. Never densified.
    normalize_W : bool, default True
        Divide each row of W by its sum first, so row ``i`` of the result is the (weighted)
        mean of X over cell ``i``'s neighbours. Needs non-negative weights.

    Returns
    -------
    (W̃X, W̃) : tuple
        When ``normalize_W`` is True. ``W̃`` is a new matrix of W's kind: an ndarray for dense W,
        CSR for sparse W (``csr_matrix`` for a scipy sparse matrix, ``csr_array`` for a sparse
        array). ``W̃X`` is an ndarray, or sparse when both X and W are sparse.
    WX : ndarray or sparse
        When ``normalize_W`` is False: only the product ``W @ X`` (spateo's second form).

    Warns
    -----
    UserWarning
        With ``normalize_W``, when some rows of W sum to 0 (cells without neighbours): those rows
        of ``W̃`` and of the result are 0, not NaN as in spateo.

    Raises
    ------
    ValueError
        W not square, X's rows not matching W, NaN/inf values, or negative weights to normalise.
    TypeError
        Non-numeric W or X.
    """
    validate_params({"normalize_W": normalize_W}, {"normalize_W": Boolean()})
    W = _check_W(W, normalize_W)
    X = _check_moment_X(X, W.shape[0])
    if not normalize_W:
        return W @ X

    row_sums = np.asarray(W.sum(axis=1), dtype=np.float64).ravel()
    empty = row_sums == 0
    if empty.any():
        warnings.warn(
            f"{int(empty.sum())} of {len(row_sums)} rows of W have no neighbours (row sum 0); "
            "their smoothed values are set to 0.",
            UserWarning,
            stacklevel=2,
        )
    inv = np.divide(1.0, row_sums, out=np.zeros_like(row_sums), where=~empty)
    if sp.issparse(W):
        # scale the stored values row by row: O(nnz), same sparse family as the input
        W_norm = W.copy()
        W_norm.data = W_norm.data * np.repeat(inv, np.diff(W_norm.indptr))
    else:
        W_norm = W * inv[:, None]
    return W_norm @ X, W_norm


def _resolve_graph(adata: AnnData, graph: Any, graph_kwargs: dict[str, Any]) -> sp.csr_matrix:
    return get_graph(adata, "spatial" if graph is None else graph, **graph_kwargs)


def niche_composition(
    adata: AnnData,
    obs_key: str,
    *,
    graph: str | Matrix | None = None,
    **graph_kwargs: Any,
) -> pd.DataFrame:
    """Share of each category of ``adata.obs[obs_key]`` among each cell's neighbours.

    Parameters
    ----------
    adata : AnnData
        The cells.
    obs_key : str
        A categorical (or discrete) column of ``adata.obs``, e.g. a cell type.
    graph : str or matrix, optional
        The neighbourhood graph, resolved by :func:`get_graph`: None or ``'spatial'`` builds
        :func:`spatial_neighbors` with ``graph_kwargs``; also ``'expression'``, an
        ``adata.obsp`` key, or an (n_obs, n_obs) matrix. Shares are weighted by the graph's
        weights; the cell itself counts only if the graph has self-loops.
    **graph_kwargs
        Passed to the graph builder (e.g. ``n_neighbors=6, batch_key='list_ID'``).

    Returns
    -------
    pandas.DataFrame of shape (n_obs, n_categories)
        Indexed by ``obs_names``; columns ``niche_<category>`` in the column's category order
        (sorted values for a non-categorical column; unused categories give a zero column).
        Rows sum to 1; a cell without neighbours gets a row of zeros, with a ``UserWarning``.
        Categories of fewer than ``RARE_CATEGORY_CELLS`` cells get a ``UserWarning`` too: their
        niche coefficients rest on a handful of neighbourhoods and are the first to be
        large by chance (merge them, or leave their columns out).
    """
    check_adata(adata)
    labels = get_obs_column(adata, obs_key, "obs_key")
    categorical = pd.Categorical(labels)
    _warn_rare_categories(categorical, obs_key)
    W = _resolve_graph(adata, graph, graph_kwargs)
    n_obs, n_cat = adata.n_obs, len(categorical.categories)
    onehot = sp.csr_matrix(
        (np.ones(n_obs), categorical.codes, np.arange(n_obs + 1)), shape=(n_obs, n_cat)
    )
    shares, _ = calc_1nd_moment(onehot, W)
    columns = [f"niche_{c}" for c in categorical.categories]
    return pd.DataFrame(shares.toarray(), index=adata.obs_names.copy(), columns=columns)


def _warn_rare_categories(categorical: pd.Categorical, obs_key: str) -> None:
    counts = pd.Series(categorical).value_counts()
    rare = counts[(counts > 0) & (counts < RARE_CATEGORY_CELLS)].sort_values()
    if len(rare):
        listed = ", ".join(f"{c} ({n})" for c, n in rare.items())
        warnings.warn(
            f"{obs_key}: {len(rare)} categor{'y has' if len(rare) == 1 else 'ies have'} fewer "
            f"than {RARE_CATEGORY_CELLS} cells: {listed}. Their niche_<category> coefficients "
            "rest on a few neighbourhoods and can be large by chance; merge rare categories "
            "or leave their columns out of the design.",
            UserWarning,
            stacklevel=3,
        )


def spatial_lag(
    adata: AnnData,
    genes: str | Sequence[str],
    *,
    graph: str | Matrix | None = None,
    layer: str | None = None,
    normalize: bool = True,
    **graph_kwargs: Any,
) -> pd.DataFrame:
    """Neighbour mean of the expression of chosen genes (the spatial lag).

    Parameters
    ----------
    adata : AnnData
        Counts in ``X`` (or ``layers[layer]``), dense or sparse.
    genes : str or sequence of str
        Names in ``adata.var_names``.
    graph : str or matrix, optional
        The neighbourhood graph, resolved by :func:`get_graph` as in :func:`niche_composition`
        (default: :func:`spatial_neighbors` with ``graph_kwargs``). Row-normalised, so each
        value is a (weighted) mean over the cell's neighbours.
    layer : str, optional
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    normalize : bool, default True
        Normalise counts to 1e4 per cell (totals over all genes) and apply log1p before
        averaging. False averages the values as they are (an already normalised layer).
    **graph_kwargs
        Passed to the graph builder.

    Returns
    -------
    pandas.DataFrame of shape (n_obs, n_genes)
        Indexed by ``obs_names``, columns ``lag_<gene>``. A cell without neighbours gets zeros,
        with a ``UserWarning``. Only the chosen genes' columns are ever densified.
    """
    check_adata(adata)
    validate_params({"normalize": normalize}, {"normalize": Boolean()})
    genes = [genes] if isinstance(genes, str) else list(genes)
    if not genes or not all(isinstance(g, str) for g in genes):
        raise InputTypeError(
            f"genes must be a gene name or a non-empty list of names; got {genes!r}."
        )
    _, cols = gene_positions(adata, genes)
    X = get_matrix(adata, layer, lazy=True)  # a dask array: totals and these columns only
    scale = size_factors(X) if normalize else None  # checks X before the graph is built
    W = _resolve_graph(adata, graph, graph_kwargs)

    values = dense_columns(X, cols)
    if normalize:
        values = np.log1p(values * scale[:, None])
    elif not np.all(np.isfinite(values)):
        raise InputError("The selected genes' values contain NaN or infinite values.")
    lag, _ = calc_1nd_moment(values, W)
    return pd.DataFrame(lag, index=adata.obs_names.copy(), columns=[f"lag_{g}" for g in genes])


def coordinates(adata: AnnData, *, standardize: bool = True) -> pd.DataFrame:
    """Cell coordinates from ``adata.obsm['spatial']`` as predictors.

    Parameters
    ----------
    adata : AnnData
        Coordinates in ``obsm['spatial']`` (2 or 3 columns).
    standardize : bool, default True
        Centre each column and divide it by its standard deviation (ddof=0), so the penalty
        treats x and y alike; a constant column becomes 0.

    Returns
    -------
    pandas.DataFrame of shape (n_obs, n_dims)
        Indexed by ``obs_names``, columns ``x``, ``y`` (and ``z``).
    """
    check_adata(adata)
    validate_params({"standardize": standardize}, {"standardize": Boolean()})
    coords = get_coords(adata)
    if coords.shape[1] not in (2, 3):
        raise InputError(
            f"adata.obsm['spatial'] must have 2 or 3 columns (x, y[, z]); got {coords.shape[1]}."
        )
    if standardize:
        coords = _standardize(coords)
    return pd.DataFrame(
        coords, index=adata.obs_names.copy(), columns=list("xyz"[: coords.shape[1]])
    )


def _standardize(coords: np.ndarray) -> np.ndarray:
    """Columns centred and divided by their standard deviation (ddof=0); constant ones 0."""
    coords = coords - coords.mean(axis=0)
    std = coords.std(axis=0)
    return np.divide(coords, std, out=np.zeros_like(coords), where=std > 0)


def _section_dummies(adata: AnnData, section_key: str) -> pd.DataFrame:
    """0/1 columns ``<key>_<section>`` for every section but the first (the reference)."""
    labels = pd.Categorical(get_section_labels(adata, section_key, "section_key"))
    dummies = pd.get_dummies(labels, prefix=section_key, drop_first=True, dtype=float)
    return dummies.set_axis(adata.obs_names.copy(), axis=0)


def _section_coordinates(adata: AnnData, section_key: str) -> pd.DataFrame:
    """Coordinates standardised within each section (sections lie apart on one slide)."""
    frame = coordinates(adata, standardize=False)
    values = frame.to_numpy(copy=True)
    for members in group_indices(get_section_labels(adata, section_key, "section_key")):
        values[members] = _standardize(values[members])
    return pd.DataFrame(values, index=frame.index, columns=frame.columns)


def build_design(
    adata: AnnData,
    *,
    section_key: str | None = None,
    niche: str | None = None,
    lag: str | Sequence[str] | None = None,
    coords: bool = False,
    layer: str | None = None,
    graph: str | Matrix | None = None,
    **graph_kwargs: Any,
) -> pd.DataFrame:
    """A design of spatial predictors: sections, niche shares, spatial lags, coordinates.

    The design the ``stglm fit`` command builds from ``--section-key``, ``--niche``,
    ``--lag`` and ``--coords`` (``--n-neighbors`` is ``n_neighbors=``): the same call here
    and on the command line fit the same model.

    Parameters
    ----------
    adata : AnnData
        The cells: coordinates in ``obsm['spatial']`` (for niche, lag and coords), counts in
        ``X`` or ``layers[layer]`` (for lag).
    section_key : str, optional
        An ``adata.obs`` column of the tissue section. Adds a 0/1 column
        ``<section_key>_<section>`` for every section but the first in category order (sorted
        values for a non-categorical column), the reference; builds the spatial graph within
        sections; standardises the coordinates within each section.
    niche : str, optional
        An ``adata.obs`` column (e.g. cell type): columns ``niche_<category>`` of
        :func:`niche_composition`.
    lag : str or sequence of str, optional
        Genes: columns ``lag_<gene>`` of :func:`spatial_lag` (log1p-normalised counts).
    coords : bool, default False
        Add standardised coordinates ``x``, ``y`` (``z``) of :func:`coordinates`.
    layer : str, optional
        The counts of the lags: ``adata.layers[layer]`` instead of ``adata.X``.
    graph : str or matrix, optional
        The neighbourhood graph of niche and lag, resolved by :func:`get_graph` (built once,
        shared by both). By default :func:`spatial_neighbors` with ``graph_kwargs`` and
        ``batch_key=section_key``.
    **graph_kwargs
        Passed to the graph builder, e.g. ``n_neighbors=6``.

    Returns
    -------
    pandas.DataFrame of shape (n_obs, n_predictors)
        Indexed by ``obs_names``; columns in this order: section dummies, niche shares, lags,
        coordinates.

    Raises
    ------
    ValueError
        If no predictor results (nothing requested, or a single section and nothing else),
        two predictors share a name, or a column, gene, layer or the coordinates are missing.
    """
    check_adata(adata)
    validate_params({"coords": coords}, {"coords": Boolean()})
    lag = [lag] if isinstance(lag, str) else list(lag or [])
    # The cheap checks first: a misspelt column or gene fails before the graph is built.
    if section_key is not None:
        get_section_labels(adata, section_key, "section_key")
    if niche is not None:
        get_obs_column(adata, niche, "niche")
    if lag:
        gene_positions(adata, lag)
    if graph is None or (isinstance(graph, str) and graph == "spatial"):
        graph_kwargs.setdefault("batch_key", section_key)
    W = _resolve_graph(adata, graph, graph_kwargs) if niche is not None or lag else None

    parts = []
    if section_key is not None:
        parts.append(_section_dummies(adata, section_key))
    if niche is not None:
        parts.append(niche_composition(adata, niche, graph=W))
    if lag:
        parts.append(spatial_lag(adata, lag, graph=W, layer=layer))
    if coords:
        parts.append(
            coordinates(adata) if section_key is None else _section_coordinates(adata, section_key)
        )
    design = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=adata.obs_names.copy())
    if design.shape[1] == 0:
        raise InputError(
            "no predictors: give section_key (with more than one section), niche, lag or "
            "coords=True."
        )
    if design.columns.has_duplicates:
        dup = design.columns[design.columns.duplicated()].tolist()
        raise InputError(f"duplicate predictor names {dup}; rename the categories.")
    return design
