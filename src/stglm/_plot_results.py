"""Plots of :func:`stglm.fit_genes` results stored in an AnnData.

- :func:`plot_coef_heatmap` — genes × predictors heatmap of the coefficients.
- :func:`plot_gene_fit` — one gene's observed counts and fitted means on the tissue.

Both draw with matplotlib's object-oriented API on the Axes they are given (or on a new
figure's Axes when none are given), return those Axes and never call ``plt.show()``.
Nothing is written into ``adata``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.colors import Normalize, PowerNorm
from scipy.cluster.hierarchy import leaves_list, linkage

from ._anndata import dense_columns, layer_matrix
from ._errors import InputError
from ._results import check_gene, coef_frame, fitted_layer, results_info
from .get import fitted_mean

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_coef_heatmap", "plot_gene_fit"]

#: Linkage used to order rows and columns: seaborn's clustermap default.
LINKAGE_METHOD, LINKAGE_METRIC = "average", "euclidean"


# ---------------------------------------------------------------------------------------------
# heatmap
# ---------------------------------------------------------------------------------------------
def cluster_order(values: np.ndarray) -> np.ndarray:
    """Leaf order of the rows of ``values`` (average linkage, Euclidean distances).

    Fewer than two rows are returned in their order.
    """
    values = np.asarray(values, dtype=float)
    if values.shape[0] < 2:
        return np.arange(values.shape[0])
    return leaves_list(linkage(values, method=LINKAGE_METHOD, metric=LINKAGE_METRIC))


def _select_genes(coef: pd.DataFrame, genes: Sequence[str] | None, top: int) -> pd.DataFrame:
    if genes is None:
        if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
            raise InputError(f"top must be a positive integer; got {top!r}.")
        strength = coef.abs().max(axis=1).to_numpy()
        order = np.argsort(-strength, kind="stable")[: int(top)]
        return coef.iloc[order]
    genes = [genes] if isinstance(genes, str) else list(genes)
    if not genes:
        raise InputError("genes is empty.")
    unknown = [g for g in genes if g not in coef.index]
    if unknown:
        raise InputError(
            f"genes without a fit (not in var_names, not requested or all zeros): {unknown[:10]}."
        )
    return coef.loc[genes]


def plot_coef_heatmap(
    adata: AnnData,
    *,
    key_added: str = "stglm",
    genes: Sequence[str] | None = None,
    top: int = 40,
    cluster: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """Heatmap of the coefficients of :func:`stglm.fit_genes`: genes (rows) × predictors.

    Colours use a diverging colormap (``RdBu_r``) with limits ±max abs(coef), so white is 0,
    red a positive and blue a negative effect; a colorbar is added.

    Parameters
    ----------
    adata : AnnData
        An AnnData that :func:`stglm.fit_genes` wrote into.
    key_added : str, default="stglm"
        The ``key_added`` used when fitting.
    genes : sequence of str, optional
        Fitted genes to show. By default the ``top`` fitted genes with the largest
        max abs(coef) over the predictors.
    top : int, default=40
        Number of genes shown when ``genes`` is None.
    cluster : bool, default=True
        Order rows and columns by hierarchical clustering of their coefficients
        (``scipy.cluster.hierarchy.linkage`` with average linkage and Euclidean distances,
        then ``leaves_list``). False keeps the order of ``genes`` (strongest first when
        ``genes`` is None) and of the predictors.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; by default a new figure sized to the number of genes.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes holding the heatmap (``ax.images[0]``, whose array is the matrix drawn,
        rows top to bottom as the y tick labels); its figure also holds the colorbar.

    Raises
    ------
    ValueError
        If there are no results under ``key_added``, ``genes`` names a gene without a fit,
        or ``top`` is not a positive integer.
    """
    coef = _select_genes(coef_frame(adata, key_added), genes, top)
    if coef.empty:
        raise InputError(f"no fitted genes under key_added={key_added!r}.")
    if cluster:
        coef = coef.iloc[cluster_order(coef.to_numpy()), cluster_order(coef.to_numpy().T)]
    n_genes, n_pred = coef.shape
    if ax is None:
        import matplotlib.pyplot as plt  # only here: creating a figure is pyplot's job

        longest = max(len(str(p)) for p in coef.columns)
        width = 3.0 + 0.45 * n_pred + 0.06 * max(len(g) for g in coef.index)
        height = max(3.0, 1.2 + 0.07 * longest + 0.2 * n_genes)
        _, ax = plt.subplots(figsize=(width, height), layout="constrained")
    values = coef.to_numpy()
    vmax = float(np.max(np.abs(values))) if values.size else 0.0
    vmax = vmax if vmax > 0 else 1.0
    image = ax.imshow(
        values, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest"
    )
    image.set_gid("coef")
    ax.figure.colorbar(image, ax=ax, label="coefficient", shrink=min(1.0, 0.3 + 12 / n_genes))
    ax.set_xticks(
        np.arange(n_pred),
        labels=list(coef.columns),
        rotation=45,
        ha="right",
        rotation_mode="anchor",
        fontsize=max(6.0, min(10.0, 160 / n_pred)),
    )
    ax.set_yticks(
        np.arange(n_genes), labels=list(coef.index), fontsize=max(5.0, min(10.0, 320 / n_genes))
    )
    ax.tick_params(length=0)
    ax.set_xlabel("predictor")
    ax.set_ylabel("gene")
    how = "clustered" if cluster else ("top by max |coef|" if genes is None else "as given")
    ax.set_title(f"Coefficients ({n_genes} genes, {how})")
    return ax


# ---------------------------------------------------------------------------------------------
# one gene on the tissue
# ---------------------------------------------------------------------------------------------
def gene_fit_layout(coords: np.ndarray, width: float = 10.0) -> tuple[tuple[int, int], tuple]:
    """Panel grid and figure size for :func:`plot_gene_fit`'s two panels.

    Side by side (1 × 2) unless the tissue is much wider than tall (x span > 1.6 × y span,
    e.g. sections placed next to each other), then stacked (2 × 1) so each panel stays wide.

    Parameters
    ----------
    coords : ndarray of shape (n_obs, >= 2)
        The coordinates drawn.
    width : float, default=10.0
        Figure width in inches.

    Returns
    -------
    ((nrows, ncols), (width, height))
    """
    span = np.ptp(np.asarray(coords, dtype=float)[:, :2], axis=0)
    ratio = float(span[0] / span[1]) if span[1] > 0 else 1.0
    if ratio > 1.6:
        panel_height = float(np.clip((width - 1.5) / ratio, 1.5, 6.0))
        return (2, 1), (width, 2 * panel_height + 1.2)
    panel_height = float(np.clip((width - 1.5) / 2 / max(ratio, 1e-3), 2.0, 6.0))
    return (1, 2), (width, panel_height + 1.0)


def _marker_size(ax: Axes, coords: np.ndarray) -> float:
    """Marker area (points²) at which neighbouring cells about touch on ``ax`` (equal aspect)."""
    from scipy.spatial import cKDTree

    xy = np.asarray(coords, dtype=float)[:, :2]
    span = np.ptp(xy, axis=0)
    if len(xy) < 2 or not np.all(span > 0):
        return 20.0
    dist, _ = cKDTree(xy).query(xy, k=2)
    spacing = float(np.median(dist[:, 1]))
    box = ax.get_position(original=True)
    fig_w, fig_h = ax.figure.get_size_inches()
    points_per_unit = min(box.width * fig_w * 72 / span[0], box.height * fig_h * 72 / span[1])
    diameter = 0.8 * spacing * points_per_unit  # constrained layout shrinks the axes a little
    return float(np.clip(diameter**2, 0.5, 400.0)) if spacing > 0 else 20.0


def plot_gene_fit(
    adata: AnnData,
    gene: str,
    *,
    key_added: str = "stglm",
    basis: str = "spatial",
    axes: Sequence[Axes] | None = None,
    layer: str | None = None,
    design: Any = None,
    vmax: float | None = None,
) -> tuple[Axes, Axes]:
    """Draw a gene's observed counts and fitted means side by side on the tissue.

    Each panel (side by side, or stacked for a very wide tissue) is a scatter of the cells
    at ``adata.obsm[basis]`` (first two columns), coloured by value on one shared colour
    scale (one colorbar; from the smallest value of either panel to ``vmax``; a square-root
    scale for non-negative values), with equal aspect. Panel titles are ``"observed"`` and
    ``"fitted"``; each scatter's array (``ax.collections[0].get_array()``) holds the values
    drawn, in cell order.

    Parameters
    ----------
    adata : AnnData
        An AnnData that :func:`stglm.fit_genes` wrote into.
    gene : str
        A fitted gene.
    key_added : str, default="stglm"
        The ``key_added`` used when fitting.
    basis : str, default="spatial"
        The ``adata.obsm`` key of the coordinates.
    axes : pair of matplotlib.axes.Axes, optional
        Axes for the observed and fitted panels (same figure). By default a new figure:
        panels side by side, or stacked when the tissue is much wider than tall (see
        :func:`gene_fit_layout`).
    layer : str, optional
        Layer of the observed values; by default the one that was fitted (``adata.X`` unless
        fit_genes was given a ``layer``).
    design : DataFrame or array of shape (n_obs, n_predictors), optional
        The design given to :func:`stglm.fit_genes`; needed to recompute the fitted means
        when they were not stored (``store_fitted=False``). The stored layer
        ``f"{key_added}_mu"`` is used when present.
    vmax : float, optional
        Top of the shared colour scale; by default the 99th percentile of the values of both
        panels (larger values take the top colour, marked by the colorbar's arrow).

    Returns
    -------
    tuple of matplotlib.axes.Axes
        ``(observed_ax, fitted_ax)``; their figure also holds the colorbar.

    Raises
    ------
    ValueError
        If there are no results, the gene was not fitted, ``basis`` or ``layer`` is missing,
        or the fitted means were neither stored nor can be recomputed (no ``design``).
    """
    info = results_info(adata, key_added)
    j = check_gene(adata, gene, key_added)
    if basis not in adata.obsm:
        raise InputError(f"basis {basis!r} is not in adata.obsm (has {list(adata.obsm.keys())}).")
    coords = np.asarray(adata.obsm[basis], dtype=float)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise InputError(f"adata.obsm[{basis!r}] must have at least 2 columns; got {coords.shape}.")
    if layer is None:
        layer = fitted_layer(info)
    observed = dense_columns(layer_matrix(adata, layer), [j]).ravel()
    fitted = fitted_mean(adata, gene, key_added=key_added, design=design)

    if axes is None:
        import matplotlib.pyplot as plt  # only here: creating a figure is pyplot's job

        shape, figsize = gene_fit_layout(coords)
        fig, axes = plt.subplots(*shape, figsize=figsize, layout="constrained")
        fig.suptitle(f"{gene} ({info['params'].get('distr', '')})")
    axes = list(np.ravel(np.asarray(axes, dtype=object)))
    if len(axes) != 2:
        raise InputError(f"axes must be two Axes (observed, fitted); got {len(axes)}.")
    both = np.concatenate([observed, fitted])
    low = float(both.min())
    high = float(np.percentile(both, 99.0)) if vmax is None else float(vmax)
    high = high if high > low else max(float(both.max()), low + 1.0)
    # Counts are skewed: a square-root scale (Poisson's variance-stabilising transform)
    # shows the bulk of the cells; values outside [low, high] take the end colours.
    norm = PowerNorm(0.5, vmin=low, vmax=high) if low >= 0 else Normalize(vmin=low, vmax=high)
    for ax, values, title in zip(axes, (observed, fitted), ("observed", "fitted"), strict=True):
        ax.set_aspect("equal")
        points = ax.scatter(
            coords[:, 0],
            coords[:, 1],
            c=values,
            s=_marker_size(ax, coords),
            cmap="viridis",
            norm=norm,
            linewidths=0,
            rasterized=len(values) > 5000,
        )
        points.set_gid(title)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    scale = "√ scale" if isinstance(norm, PowerNorm) else "linear scale"
    axes[0].figure.colorbar(
        points,
        ax=axes,
        shrink=0.8,
        extend="max" if both.max() > high else "neither",
        label=f"{gene}: counts / fitted mean ({scale})",
    )
    return axes[0], axes[1]
