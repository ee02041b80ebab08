"""Plots of :func:`stglm.fit_genes` results stored in an AnnData.

- :func:`plot_coef_heatmap` — genes × predictors heatmap of the coefficients.
- :func:`plot_gene_fit` — one gene's observed counts and fitted means on the tissue.

Both draw with matplotlib's object-oriented API on the Axes they are given (or on a new
figure's Axes when none are given), return those Axes and never call ``plt.show()``.
Nothing is written into ``adata``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.colors import Normalize, PowerNorm
from scipy.cluster.hierarchy import leaves_list, linkage

from ._anndata import dense_columns, layer_matrix
from ._docs import shared_docs
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


#: Scales of plot_coef_heatmap's colours.
HEATMAP_SCALES = ("predictor", "none")


def _select_predictors(coef: pd.DataFrame, predictors: Sequence[str] | None) -> pd.DataFrame:
    """The requested predictors' columns; by default every predictor with a nonzero fit."""
    if predictors is None:
        return coef.loc[:, (coef.to_numpy() != 0).any(axis=0)]
    predictors = [predictors] if isinstance(predictors, str) else list(predictors)
    if not predictors:
        raise InputError("predictors is empty.")
    unknown = [p for p in predictors if p not in coef.columns]
    if unknown:
        raise InputError(f"predictors not in the fit: {unknown[:10]} (has {list(coef.columns)}).")
    return coef.loc[:, predictors]


def _select_genes(coef: pd.DataFrame, genes: Sequence[str] | None, top: int) -> pd.DataFrame:
    """The requested genes' rows; by default the ``top`` genes by max |coef| (as drawn)."""
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


def _column_max(coef: pd.DataFrame) -> np.ndarray:
    """Each predictor's max |coef| over all fitted genes (1 where all are 0)."""
    top = coef.abs().max(axis=0).to_numpy()
    return np.where(top > 0, top, 1.0)


def _coefficient_label(info: dict) -> str:
    """What one unit of colour is: the scale the model's coefficients act on."""
    link = info.get("model", {}).get("link")
    return "coefficient (log scale)" if link == "log" else "coefficient"


@shared_docs
def plot_coef_heatmap(
    adata: AnnData,
    *,
    key_added: str = "stglm",
    genes: Sequence[str] | None = None,
    predictors: Sequence[str] | None = None,
    top: int = 40,
    scale: str = "predictor",
    cluster: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """Heatmap of the coefficients of :func:`stglm.fit_genes`: genes (rows) × predictors.

    Colours use a diverging colormap (``RdBu_r``) centred on 0, so white is 0, red a positive
    and blue a negative effect; a colorbar is added. Predictors are in different units (0/1
    section dummies, 0–1 niche shares, standardised coordinates), so by default each column
    is divided by that predictor's max abs(coef) over the fitted genes, written under its name:
    one predictor with large effects (often a section dummy) does not wash out the others.

    Parameters
    ----------
    {adata_fitted}
    {key_added_fitted}
    genes : sequence of str, optional
        Fitted genes to show. By default the ``top`` fitted genes with the largest max
        abs(value drawn) over the predictors shown (each predictor's strongest genes, with
        ``scale="predictor"``).
    predictors : sequence of str, optional
        Predictors to show (and to rank genes by), e.g. the niche shares without the section
        dummies. By default every predictor with a nonzero coefficient (all-zero columns,
        such as penalised-away predictors, are left out).
    top : int, default=40
        Number of genes shown when ``genes`` is None.
    scale : {"predictor", "none"}, default="predictor"
        ``"predictor"``: each column divided by its predictor's max abs(coef) over all fitted
        genes (colours from −1 to 1, the max in the column's label). ``"none"``: the
        coefficients themselves on one scale, ±max abs(coef).
    cluster : bool, default=True
        Order rows and columns by hierarchical clustering of the values drawn
        (``scipy.cluster.hierarchy.linkage`` with average linkage and Euclidean distances,
        then ``leaves_list``). False keeps the order of ``genes`` (strongest first when
        ``genes`` is None) and of the predictors.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; by default a new figure sized to the number of genes.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes holding the heatmap (``ax.images[0]``, whose array is the matrix drawn,
        rows top to bottom as the y tick labels, columns as the x tick labels); its figure
        also holds the colorbar.

    Raises
    ------
    ValueError
        If there are no results under ``key_added``, ``genes`` names a gene without a fit,
        ``predictors`` one that was not fitted, ``scale`` is unknown, or ``top`` is not a
        positive integer.
    """
    if scale not in HEATMAP_SCALES:
        raise InputError(f"scale must be one of {HEATMAP_SCALES}; got {scale!r}.")
    fitted = coef_frame(adata, key_added)
    shown = _select_predictors(fitted, predictors)
    if shown.shape[1] == 0:
        raise InputError(f"every coefficient under key_added={key_added!r} is 0: nothing to draw.")
    column_max = _column_max(shown)
    drawn = shown / column_max if scale == "predictor" else shown
    drawn = _select_genes(drawn, genes, top)
    if drawn.empty:
        raise InputError(f"no fitted genes under key_added={key_added!r}.")
    maxima = pd.Series(column_max, index=shown.columns)
    if cluster:
        values = drawn.to_numpy()
        drawn = drawn.iloc[cluster_order(values), cluster_order(values.T)]
    n_genes, n_pred = drawn.shape
    labels = [str(p) for p in drawn.columns]
    if scale == "predictor":
        labels = [f"{p} (±{maxima[p]:.2g})" for p in drawn.columns]
    if ax is None:
        import matplotlib.pyplot as plt  # only here: creating a figure is pyplot's job

        longest = max(len(label) for label in labels)
        width = 3.5 + 0.5 * n_pred + 0.08 * max(len(str(g)) for g in drawn.index)
        height = max(3.5, 1.5 + 0.08 * longest + 0.22 * n_genes)
        _, ax = plt.subplots(figsize=(width, height), layout="constrained")
    values = drawn.to_numpy()
    vmax = 1.0 if scale == "predictor" else float(np.max(np.abs(values)))
    vmax = vmax if vmax > 0 else 1.0
    image = ax.imshow(
        values, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest"
    )
    image.set_gid("coef")
    label = _coefficient_label(results_info(adata, key_added))
    if scale == "predictor":
        label += " / predictor's max |coef|"
    ax.figure.colorbar(image, ax=ax, label=label, shrink=min(1.0, 0.3 + 12 / n_genes))
    ax.set_xticks(
        np.arange(n_pred),
        labels=labels,
        rotation=45,
        ha="right",
        rotation_mode="anchor",
        fontsize=max(7.0, min(11.0, 160 / n_pred)),
    )
    ax.set_yticks(
        np.arange(n_genes), labels=list(drawn.index), fontsize=max(6.0, min(11.0, 320 / n_genes))
    )
    ax.tick_params(length=0)
    ax.set_xlabel("predictor")
    ax.set_ylabel("gene")
    how = "clustered" if cluster else ("top by max |value|" if genes is None else "as given")
    ax.set_title(f"Coefficients ({n_genes} genes, {how})")
    return ax


# ---------------------------------------------------------------------------------------------
# one gene on the tissue
# ---------------------------------------------------------------------------------------------
def gene_fit_layout(
    coords: np.ndarray, width: float = 10.0, groups: np.ndarray | None = None
) -> tuple[tuple[int, int], tuple]:
    """Panel grid and figure size for :func:`plot_gene_fit`'s panels.

    Without groups, two panels side by side (1 × 2) unless the tissue is much wider than tall
    (x span > 1.6 × y span, e.g. sections placed next to each other), then stacked (2 × 1) so
    each panel stays wide. With groups, one row of (observed, fitted) per group, each row as
    tall as the widest group's aspect needs.

    Parameters
    ----------
    coords : ndarray of shape (n_obs, >= 2)
        The coordinates drawn.
    width : float, default=10.0
        Figure width in inches.
    groups : ndarray of shape (n_obs,), optional
        Each cell's group (section, optical plane): one row of panels per group.

    Returns
    -------
    ((nrows, ncols), (width, height))
    """
    xy = np.asarray(coords, dtype=float)[:, :2]
    placed = np.isfinite(xy).all(axis=1)  # cells without coordinates are not drawn
    xy = xy[placed] if placed.any() else np.zeros((1, 2))
    if groups is not None:
        groups = np.asarray(groups)[placed] if placed.any() else np.asarray(groups)[:1]
        labels = pd.unique(np.asarray(groups))
        ratios = []
        for label in labels:
            span = np.ptp(xy[np.asarray(groups) == label], axis=0)
            ratios.append(float(span[0] / span[1]) if span[1] > 0 else 1.0)
        row_height = float(np.clip((width - 1.5) / 2 / max(max(ratios), 1e-3), 1.5, 5.0))
        return (len(labels), 2), (width, len(labels) * (row_height + 0.35) + 0.8)
    span = np.ptp(xy, axis=0)
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


@shared_docs
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
    groupby: str | None = None,
) -> tuple[Axes, Axes] | np.ndarray:
    """Draw a gene's observed counts and fitted means side by side on the tissue.

    Each panel (side by side, or stacked for a very wide tissue) is a scatter of the cells
    at ``adata.obsm[basis]`` (first two columns), coloured by value on one shared colour
    scale (one colorbar; from the smallest value of either panel to ``vmax``; a square-root
    scale for non-negative values), with equal aspect. Panel titles are ``"observed"`` and
    ``"fitted"``; each scatter's array (``ax.collections[0].get_array()``) holds the values
    drawn, in cell order. With ``groupby`` (sections, or optical planes whose positions
    overlap), each group gets its own row of two panels, titled with the group's name, so
    overlapping groups are not drawn over each other.

    Parameters
    ----------
    {adata_fitted}
    {gene_fitted}
    {key_added_fitted}
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
        The design given to :func:`stglm.fit_genes`, to recompute the fitted means when
        they were not stored (``store_fitted=False``); default: the one fit_genes stored in
        ``adata.obsm[f"{key_added}_design"]``. The stored layer ``f"{key_added}_mu"`` is
        used when present.
    vmax : float, optional
        Top of the shared colour scale; by default the 99th percentile of the values of both
        panels (larger values take the top colour, marked by the colorbar's arrow).
    groupby : str, optional
        A categorical (or string) ``adata.obs`` column: one row of panels per group, in the
        column's category order (or order of appearance); ``axes`` must then hold
        ``2 × n_groups`` Axes.

    Returns
    -------
    tuple of matplotlib.axes.Axes, or ndarray of Axes of shape (n_groups, 2)
        ``(observed_ax, fitted_ax)``, or with ``groupby`` one such row per group; their figure
        also holds the colorbar.

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
    groups = None if groupby is None else _groups(adata, groupby)
    placed = _placed_cells(coords, basis)
    if not placed.all():
        coords, observed, fitted = coords[placed], observed[placed], fitted[placed]
        groups = None if groups is None else (groups[0][placed], groups[1])
    if axes is None:
        import matplotlib.pyplot as plt  # only here: creating a figure is pyplot's job

        shape, figsize = gene_fit_layout(coords, groups=None if groups is None else groups[0])
        fig, axes = plt.subplots(*shape, figsize=figsize, layout="constrained", squeeze=False)
        fig.suptitle(f"{gene} ({info['params'].get('distr', '')})")
    axes = list(np.ravel(np.asarray(axes, dtype=object)))
    n_rows = 1 if groups is None else len(groups[1])
    if len(axes) != 2 * n_rows:
        raise InputError(
            f"axes must be {2 * n_rows} Axes (observed, fitted"
            f"{' per group' if groups is not None else ''}); got {len(axes)}."
        )
    norm, extend = _gene_fit_norm(observed, fitted, vmax)
    rows = [(np.ones(len(coords), dtype=bool), "")]
    if groups is not None:
        rows = [(groups[0] == label, f"{label}: ") for label in groups[1]]
    for r, (cells, prefix) in enumerate(rows):
        for ax, values, title in zip(
            axes[2 * r : 2 * r + 2], (observed, fitted), ("observed", "fitted"), strict=True
        ):
            points = _draw_panel(ax, coords[cells], values[cells], norm, f"{prefix}{title}")
    scale = "√ scale" if isinstance(norm, PowerNorm) else "linear scale"
    axes[0].figure.colorbar(
        points,
        ax=axes,
        shrink=0.8 if n_rows == 1 else min(0.8, 0.3 + 0.5 / n_rows),
        extend=extend,
        label=f"{gene}: counts / fitted mean ({scale})",
    )
    if groups is None:
        return axes[0], axes[1]
    return np.asarray(axes, dtype=object).reshape(n_rows, 2)


def _placed_cells(coords: np.ndarray, basis: str) -> np.ndarray:
    """Which cells have finite coordinates; a warning counts those left out."""
    placed = np.isfinite(coords[:, :2]).all(axis=1)
    if not placed.any():
        raise InputError(f"adata.obsm[{basis!r}] has no cell with finite coordinates.")
    if not placed.all():
        warnings.warn(
            f"{int((~placed).sum())} cells without coordinates (NaN or infinite in "
            f"adata.obsm[{basis!r}]) are not drawn.",
            UserWarning,
            stacklevel=3,
        )
    return placed


def _groups(adata: AnnData, groupby: str) -> tuple[np.ndarray, list]:
    """Each cell's group and the groups in order (categories, or order of appearance)."""
    if not isinstance(groupby, str) or groupby not in adata.obs:
        raise InputError(f"groupby {groupby!r} is not a column of adata.obs.")
    column = adata.obs[groupby]
    if isinstance(column.dtype, pd.CategoricalDtype):
        labels = [c for c in column.cat.categories if (column == c).any()]
    elif pd.api.types.is_float_dtype(column):
        raise InputError(
            f"groupby {groupby!r} must be categorical (sections, planes); it holds floats."
        )
    else:
        labels = list(pd.unique(column))
    return column.to_numpy(), labels


def _gene_fit_norm(observed: np.ndarray, fitted: np.ndarray, vmax: float | None):
    """The panels' shared colour scale and the colorbar's extension."""
    both = np.concatenate([observed, fitted])
    low = float(both.min())
    high = float(np.percentile(both, 99.0)) if vmax is None else float(vmax)
    high = high if high > low else max(float(both.max()), low + 1.0)
    # Counts are skewed: a square-root scale (Poisson's variance-stabilising transform)
    # shows the bulk of the cells; values outside [low, high] take the end colours.
    norm = PowerNorm(0.5, vmin=low, vmax=high) if low >= 0 else Normalize(vmin=low, vmax=high)
    return norm, "max" if both.max() > high else "neither"


def _draw_panel(ax: Axes, coords: np.ndarray, values: np.ndarray, norm, title: str):
    """One scatter of cells coloured by value, equal aspect, no ticks."""
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
    points.set_gid(title.rsplit(": ", 1)[-1])
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return points
