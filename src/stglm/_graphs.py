"""Neighbourhood graphs over cells: in space, in expression space, or read from ``adata.obsp``.

Every graph is an (n_obs, n_obs) CSR matrix whose row ``i`` holds the weights of cell ``i``'s
neighbours (directed: kNN graphs are not symmetrised, so each cell averages over its own k
neighbours). Graphs are built from KD-trees / nearest-neighbour searches and never pass
through a dense n×n matrix. Nothing here writes into ``adata``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy.spatial import cKDTree
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from ._anndata import (
    check_adata,
    get_coords,
    get_matrix,
    get_section_labels,
    group_indices,
    is_lazy,
    row_sums_and_minima,
)
from ._errors import InputError, InputTypeError
from ._validation import Boolean, Integer, Options, Real, as_float_array, validate_params

__all__ = ["expression_neighbors", "get_graph", "spatial_neighbors"]

TARGET_SUM = 1e4  # counts per cell after normalisation, as in spateo / scanpy

_SPATIAL_CONSTRAINTS = {
    "n_neighbors": Integer(1, None),
    "radius": Real(0, None, closed="neither", allow_none=True),
    "kernel": Options(("gaussian", "bisquare", None)),
    "bandwidth": Real(0, None, closed="neither", allow_none=True),
    "include_self": Boolean(),
}
_EXPRESSION_CONSTRAINTS = {
    "n_neighbors": Integer(1, None),
    "n_pcs": Integer(1, None),
    "random_state": Integer(0, None, allow_none=True),
}


# ---------------------------------------------------------------------------------------------
# shared checks and transforms (also used by stglm.spatial)
# ---------------------------------------------------------------------------------------------
def size_factors(X: np.ndarray | sp.spmatrix | sp.sparray, name: str = "counts") -> np.ndarray:
    """Per-cell scale ``TARGET_SUM / total`` (0 for a cell with no counts), after checking X.

    A dask array is read once, chunk by chunk: a NaN or infinite value makes its row's
    total NaN or infinite, so the totals tell.
    """
    if is_lazy(X):
        totals, minima = row_sums_and_minima(X)
        finite, smallest = np.all(np.isfinite(totals)), minima.min(initial=0.0)
    else:
        values = X.data if sp.issparse(X) else X
        finite = np.all(np.isfinite(values))
        smallest = values.min() if finite and values.size else 0.0
        totals = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    if not finite:
        raise InputError(f"{name} contains NaN or infinite values.")
    if smallest < 0:
        raise InputError(f"{name} has negative values; normalising to {TARGET_SUM:g} needs counts.")
    # a cell with no counts stays all-zero rather than becoming NaN
    return np.divide(TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)


def log_normalize(X: np.ndarray | sp.spmatrix | sp.sparray) -> np.ndarray | sp.csr_matrix:
    """log1p of counts normalised to ``TARGET_SUM`` per cell; sparse input stays sparse (CSR)."""
    scale = size_factors(X)
    if sp.issparse(X):
        out = sp.csr_matrix(X, dtype=np.float64, copy=True)
        out.data *= np.repeat(scale, np.diff(out.indptr))
        np.log1p(out.data, out=out.data)
        return out
    return np.log1p(np.asarray(X, dtype=np.float64) * scale[:, None])


def check_graph(W: Any, n_obs: int, name: str = "graph") -> sp.csr_matrix:
    """Return a user-given (n_obs, n_obs) graph as a float CSR copy, rejecting bad input."""
    if sp.issparse(W):
        W = sp.csr_matrix(W, dtype=np.float64, copy=True)
    else:
        W = as_float_array(
            W, f"{name} must be a sparse or dense (n_obs, n_obs) matrix; got {type(W).__name__}."
        )
        if W.ndim == 2:  # any other shape is refused below
            W = sp.csr_matrix(W)
    if W.shape != (n_obs, n_obs):
        raise InputError(
            f"{name} must have shape (n_obs, n_obs) = ({n_obs}, {n_obs}); got {W.shape}."
        )
    if not np.all(np.isfinite(W.data)):
        raise InputError(f"{name} contains NaN or infinite weights.")
    return W


# ---------------------------------------------------------------------------------------------
# graph building blocks
# ---------------------------------------------------------------------------------------------
def _drop_self(idx: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index from a (n, k+1) kNN answer, keeping k neighbours per row.

    A point with a twin at distance 0 may not list itself among its k+1 nearest; such a row
    drops its farthest entry instead, so every row keeps exactly k other points.
    """
    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    k = idx.shape[1] - 1
    return idx[keep].reshape(n, k), dist[keep].reshape(n, k)


def _knn_edges(coords: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (rows, cols, distances) from each point to its k nearest other points."""
    dist, idx = cKDTree(coords).query(coords, k=k + 1)
    idx, dist = _drop_self(idx, dist)
    return np.repeat(np.arange(len(coords)), k), idx.ravel(), dist.ravel()


def _radius_edges(coords: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (rows, cols, distances) between distinct points at distance <= radius."""
    tree = cKDTree(coords)
    pairs = tree.sparse_distance_matrix(tree, radius, output_type="ndarray")
    pairs = pairs[pairs["i"] != pairs["j"]]
    return pairs["i"], pairs["j"], pairs["v"]


def _batch_indices(adata_or_coords: Any, batch_key: Any, n_obs: int) -> list[np.ndarray]:
    """Cell indices of each section (a single section when ``batch_key`` is None)."""
    if batch_key is None:
        return [np.arange(n_obs)]
    if isinstance(batch_key, str):
        if not isinstance(adata_or_coords, AnnData):
            raise InputTypeError(
                "batch_key names an adata.obs column, which needs an AnnData; with a coordinate "
                "array pass the section labels themselves (one per cell)."
            )
        labels = get_section_labels(adata_or_coords, batch_key, "batch_key").to_numpy()
    else:
        labels = np.asarray(batch_key)
        if labels.shape != (n_obs,):
            raise InputError(
                f"batch_key must be an adata.obs column name or one label per cell ({n_obs}); "
                f"got shape {labels.shape}."
            )
        if pd.isna(labels).any():
            raise InputError("batch_key has missing labels; fill or drop them.")
    return group_indices(labels)


def _default_bandwidth(dist: np.ndarray, kernel: str) -> float:
    """Median neighbour distance m (gaussian) or 2m (bisquare): weight ≈ 0.6 at distance m."""
    median = float(np.median(dist))
    if median <= 0:
        raise InputError(
            "Cannot choose a default bandwidth: the median neighbour distance is 0 (many cells "
            "share positions). Pass bandwidth explicitly."
        )
    return median if kernel == "gaussian" else 2.0 * median


def _kernel_weights(dist: np.ndarray, kernel: str, bandwidth: float) -> np.ndarray:
    u = dist / bandwidth
    if kernel == "gaussian":
        return np.exp(-0.5 * u**2)
    return np.where(u < 1.0, (1.0 - u**2) ** 2, 0.0)


# ---------------------------------------------------------------------------------------------
# public graphs
# ---------------------------------------------------------------------------------------------
def spatial_neighbors(
    adata_or_coords: AnnData | np.ndarray,
    *,
    n_neighbors: int = 6,
    radius: float | None = None,
    batch_key: str | Sequence[Any] | np.ndarray | None = None,
    kernel: Literal["gaussian", "bisquare"] | None = None,
    bandwidth: float | None = None,
    include_self: bool = False,
) -> sp.csr_matrix:
    """Spatial neighbourhood graph from cell coordinates (KD-tree, O(n·k) memory).

    Parameters
    ----------
    adata_or_coords : AnnData or ndarray of shape (n_obs, n_dims)
        An AnnData with coordinates in ``obsm['spatial']``, or the coordinates themselves.
    n_neighbors : int, default 6
        k of the k-nearest-neighbour graph (6 = the ring of a Visium spot). Ignored when
        ``radius`` is given. Must not exceed the number of other cells in a section.
    radius : float, optional
        If given, link every pair of distinct cells at Euclidean distance ``<= radius`` instead of
        using k nearest neighbours (a cell may then have no neighbours).
    batch_key : str or array-like, optional
        An ``adata.obs`` column (e.g. ``'list_ID'``), or one label per cell: neighbours are only
        searched within the same section, so no edge links two sections.
    kernel : {'gaussian', 'bisquare'} or None, default None
        Edge weights from the distance d: None gives 1 for every neighbour; ``'gaussian'``
        exp(-d²/(2h²)); ``'bisquare'`` (1 - (d/h)²)² for d < h, else 0 (such edges are dropped).
    bandwidth : float, optional
        The kernel's h. Default: the median neighbour distance m over all edges for
        ``'gaussian'`` and 2m for ``'bisquare'``, so that a neighbour at the typical distance gets
        weight ≈ 0.6 under either kernel (exp(-1/2) = 0.61, (3/4)² = 0.56).
    include_self : bool, default False
        Add each cell as its own neighbour (weight 1, the kernel at d = 0).

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_obs, n_obs)
        Row ``i`` holds the weights of cell ``i``'s neighbours (directed, not symmetrised). A kNN
        graph without kernel has exactly ``n_obs * n_neighbors`` stored ones.

    Raises
    ------
    ValueError
        Missing ``obsm['spatial']``, non-finite coordinates, unknown ``batch_key``, bad
        ``n_neighbors``/``radius``/``kernel``/``bandwidth``, or a section with too few cells.
    """
    validate_params(
        {
            "n_neighbors": n_neighbors,
            "radius": radius,
            "kernel": kernel,
            "bandwidth": bandwidth,
            "include_self": include_self,
        },
        _SPATIAL_CONSTRAINTS,
    )
    if bandwidth is not None and kernel is None:
        raise InputError(
            "bandwidth is only used with a kernel; pass kernel='gaussian' or 'bisquare'."
        )
    coords = get_coords(adata_or_coords)
    n_obs = coords.shape[0]
    batches = _batch_indices(adata_or_coords, batch_key, n_obs)
    if radius is None:
        for members in batches:
            if n_neighbors > len(members) - 1:
                where = "" if batch_key is None else " in one section"
                raise InputError(
                    f"n_neighbors={n_neighbors} but there are only {len(members)} cells{where}; "
                    f"n_neighbors must be at most {len(members) - 1}."
                )

    rows, cols, dists = [], [], []
    for members in batches:  # local indices of each section -> global ones
        if radius is None:
            r, c, d = _knn_edges(coords[members], n_neighbors)
        else:
            r, c, d = _radius_edges(coords[members], radius)
        rows.append(members[r])
        cols.append(members[c])
        dists.append(d)
    rows, cols, dists = np.concatenate(rows), np.concatenate(cols), np.concatenate(dists)

    if kernel is None:
        weights = np.ones_like(dists)
    else:
        if bandwidth is None and dists.size:
            bandwidth = _default_bandwidth(dists, kernel)
        weights = _kernel_weights(dists, kernel, bandwidth) if dists.size else dists
        kept = weights > 0
        rows, cols, weights = rows[kept], cols[kept], weights[kept]
    if include_self:
        rows = np.concatenate([rows, np.arange(n_obs)])
        cols = np.concatenate([cols, np.arange(n_obs)])
        weights = np.concatenate([weights, np.ones(n_obs)])
    W = sp.csr_matrix((weights, (rows, cols)), shape=(n_obs, n_obs))
    W.sum_duplicates()  # also sorts the indices
    return W


def expression_neighbors(
    adata: AnnData,
    *,
    n_neighbors: int = 5,
    n_pcs: int = 30,
    layer: str | None = None,
    random_state: int | None = 0,
) -> sp.csr_matrix:
    """k-nearest-neighbour graph in PCA space of the expression, self excluded.

    The kind of graph spateo's ``fit_glm`` smoothed expression over (``calc_first_moment``,
    "as in La Manno et al. 2018"): counts normalised to 1e4 per cell, log1p, PCA (sklearn,
    ARPACK, fixed ``random_state``, centred, sparse input kept sparse), then Euclidean kNN.
    spateo itself ran the PCA on normalised counts without log1p, and its sklearn default of 5
    neighbours counted the cell itself, which it then dropped, leaving 4.

    Parameters
    ----------
    adata : AnnData
        Raw counts in ``X`` (or ``layers[layer]``), dense or sparse, non-negative.
    n_neighbors : int, default 5
        Neighbours per cell, not counting the cell itself.
    n_pcs : int, default 30
        Principal components (spateo's default); capped at ``min(n_obs, n_vars) - 1``.
    layer : str, optional
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    random_state : int or None, default 0
        Seed of ARPACK's start vector, for a reproducible PCA.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_obs, n_obs)
        Binary: row ``i`` has a 1 at each of cell ``i``'s ``n_neighbors`` neighbours.
    """
    validate_params(
        {"n_neighbors": n_neighbors, "n_pcs": n_pcs, "random_state": random_state},
        _EXPRESSION_CONSTRAINTS,
    )
    check_adata(adata)
    X = get_matrix(adata, layer)
    n_obs, n_vars = X.shape
    if n_neighbors > n_obs - 1:
        raise InputError(
            f"n_neighbors={n_neighbors} but adata has only {n_obs} cells; "
            f"n_neighbors must be at most {n_obs - 1}."
        )
    if min(n_obs, n_vars) < 2:
        raise InputError(f"PCA needs at least 2 cells and 2 genes; adata has shape {X.shape}.")
    logX = log_normalize(X)
    n_comp = min(n_pcs, min(n_obs, n_vars) - 1)  # ARPACK needs fewer than min(n, p)
    pcs = PCA(n_components=n_comp, svd_solver="arpack", random_state=random_state).fit_transform(
        logX
    )
    # kneighbors() without X leaves each cell out of its own list (by index, so twins are kept)
    idx = NearestNeighbors(n_neighbors=n_neighbors).fit(pcs).kneighbors(return_distance=False)
    indptr = np.arange(0, n_obs * n_neighbors + 1, n_neighbors)
    W = sp.csr_matrix((np.ones(idx.size), idx.ravel(), indptr), shape=(n_obs, n_obs))
    W.sort_indices()
    return W


def get_graph(
    adata: AnnData,
    graph: str | np.ndarray | sp.spmatrix | sp.sparray = "spatial",
    **kwargs: Any,
) -> sp.csr_matrix:
    """Resolve a neighbourhood graph: build one, or reuse one stored in ``adata.obsp``.

    Parameters
    ----------
    adata : AnnData
        The cells.
    graph : str or matrix, default 'spatial'
        ``'spatial'`` builds :func:`spatial_neighbors` (``kwargs`` go to it); ``'expression'``
        builds :func:`expression_neighbors`; any other string is a key of ``adata.obsp`` (e.g.
        squidpy's ``'spatial_connectivities'``); a dense or sparse (n_obs, n_obs) matrix is used
        as given.
    **kwargs
        Keyword arguments of the builder; not allowed for a stored or given graph.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_obs, n_obs)
        A new float64 matrix (a stored graph is copied, so changing it leaves ``adata`` alone).
    """
    check_adata(adata)
    if isinstance(graph, str) and graph in ("spatial", "expression"):
        build = spatial_neighbors if graph == "spatial" else expression_neighbors
        return build(adata, **kwargs)
    if kwargs:
        given = repr(graph) if isinstance(graph, str) else f"a {type(graph).__name__}"
        raise InputTypeError(
            f"keyword arguments {sorted(kwargs)} only apply when building a graph "
            f"(graph='spatial' or 'expression'); got graph={given}."
        )
    if isinstance(graph, str):
        if graph not in adata.obsp:
            raise InputError(
                f"graph must be 'spatial', 'expression' or a key of adata.obsp "
                f"{list(adata.obsp.keys())}; got {graph!r}."
            )
        return check_graph(adata.obsp[graph], adata.n_obs, name=f"adata.obsp[{graph!r}]")
    return check_graph(graph, adata.n_obs)
