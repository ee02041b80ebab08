"""Pictures of per-gene tests: volcano plot, p-value histogram, a gene's spatial effect.

They read what :func:`stglm.fit_genes` (``inference=True``) and :func:`stglm.test_genes`
wrote into the AnnData, draw on the Axes they are given (or a new figure's) and return it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ._anndata import design_frame
from ._errors import InputError
from ._results import check_gene, coef_key, results_info, stat_key, test_key

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_pvalue_histogram", "plot_spatial_effect", "plot_volcano"]


def _new_ax(ax, size=(5.0, 4.0)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=size, layout="constrained")
    return ax


def _inference_column(adata: AnnData, key: str, predictor: str, name: str) -> pd.Series:
    """One predictor's column of an inference table of ``fit_genes(inference=True)``."""
    info = results_info(adata, key)
    table_key = stat_key(key, name)
    if table_key not in adata.varm:
        raise InputError(
            f"no inference results under key_added={key!r}: run fit_genes(..., inference=True)."
        )
    predictors = [str(p) for p in info["predictors"]]
    if predictor not in predictors:
        raise InputError(f"predictor {predictor!r} is not one of the design's {predictors}.")
    table = pd.DataFrame(
        np.asarray(adata.varm[table_key]), index=adata.var_names, columns=predictors
    )
    return table.loc[list(info["genes"]), predictor]


def plot_volcano(
    adata: AnnData,
    predictor: str,
    *,
    key_added: str = "stglm",
    fdr: float = 0.05,
    top: int = 10,
    ax: Axes | None = None,
) -> Axes:
    """Effect against −log10 q for one predictor over all fitted genes; top genes labelled.

    The effect is the coefficient (for a log link, the natural-log fold change of the mean
    per unit of the predictor); genes with q ≤ ``fdr`` are coloured by the sign of their
    effect, the ``top`` smallest q-values are labelled.

    Parameters
    ----------
    adata : AnnData
        Results of ``fit_genes(..., inference=True)``.
    predictor : str
        A column of the design.
    key_added : str, default="stglm"
    fdr : float, default=0.05
        The q-value threshold drawn (dashed line) and coloured.
    top : int, default=10
        How many of the most significant genes to label.
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    if not 0 < fdr < 1:
        raise InputError(f"fdr must be in (0, 1); got {fdr!r}.")
    q = _inference_column(adata, key_added, predictor, "qvalue")
    info = results_info(adata, key_added)
    predictors = [str(p) for p in info["predictors"]]
    coef = pd.DataFrame(
        np.asarray(adata.varm[coef_key(key_added)]), index=adata.var_names, columns=predictors
    ).loc[q.index, predictor]
    ok = np.isfinite(q.to_numpy()) & np.isfinite(coef.to_numpy())
    q, coef = q[ok], coef[ok]
    floor = np.nextafter(0, 1)
    y = -np.log10(np.maximum(q.to_numpy(), floor))
    x = coef.to_numpy()
    ax = _new_ax(ax)
    hit = q.to_numpy() <= fdr
    # Genes without a finite optimum (all counts in one section, say) have huge, meaningless
    # effects: the axis spans the significant genes and the bulk, the rest sit at its edge.
    span = np.abs(x[hit]).max(initial=0.0) if hit.any() else 0.0
    lim = 1.2 * max(span, np.quantile(np.abs(x), 0.9) if x.size else 1.0, 1e-12)
    outside = np.abs(x) > lim
    x = np.clip(x, -lim, lim)
    ax.set_xlim(-1.05 * lim, 1.05 * lim)
    ax.scatter(x[~hit], y[~hit], s=8, c="0.7", lw=0, label=f"q > {fdr:g}", gid="genes_ns")
    for sign, colour, word in ((1, "#b2182b", "up"), (-1, "#2166ac", "down")):
        mine = hit & (np.sign(x) == sign)
        ax.scatter(
            x[mine], y[mine], s=12, c=colour, lw=0, label=f"q ≤ {fdr:g}, {word}",
            gid=f"genes_{word}",
        )  # fmt: skip
    ax.axhline(-np.log10(fdr), color="0.3", lw=0.8, ls="--")
    ax.axvline(0.0, color="0.3", lw=0.5)
    order = np.argsort(q.to_numpy(), kind="mergesort")[: max(0, int(top))]
    if outside.any():
        ax.scatter(x[outside], y[outside], s=14, marker="|", c="0.3", gid="genes_clipped")
    for rank, i in enumerate(order):  # alternate sides so neighbouring labels overlap less
        side = 1 if rank % 2 == 0 else -1
        ax.annotate(
            q.index[i], (x[i], y[i]), fontsize=8, xytext=(4 * side, 2), textcoords="offset points",
            ha="left" if side > 0 else "right",
        )  # fmt: skip
    link = info.get("model", {}).get("link", "")
    unit = "log fold change per unit" if link == "log" else "coefficient"
    ax.set_xlabel(f"{predictor}: {unit}")
    ax.set_ylabel("−log10 q (BH)")
    ax.set_title(f"{int(hit.sum())} of {len(q)} genes at q ≤ {fdr:g}")
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    return ax


def plot_pvalue_histogram(
    adata: AnnData,
    *,
    predictor: str | None = None,
    key_added: str = "stglm",
    bins: int = 20,
    ax: Axes | None = None,
) -> Axes:
    """Histogram of the genes' p-values, with the uniform density a null would give.

    A calibrated test gives a flat histogram where genes do not respond, and a spike near
    0 where they do; a hump in the middle or a slope points at a mis-specified model.

    Parameters
    ----------
    adata : AnnData
        Results of :func:`stglm.test_genes` (``predictor`` None) or of
        ``fit_genes(..., inference=True)`` (``predictor`` a design column).
    predictor : str, optional
    key_added : str, default="stglm"
        ``key_added`` of the run to show (test_genes' default is "stglm_test").
    bins : int, default=20
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    if predictor is None:
        column = test_key(key_added, "pvalue")
        if column not in adata.var or key_added not in adata.uns:
            raise InputError(
                f"no test_genes results under key_added={key_added!r} (adata.var has no "
                f"{column!r}); pass predictor= for fit_genes(..., inference=True) results."
            )
        p = adata.var[column].to_numpy(dtype=float)
        tested = list(adata.uns[key_added].get("tested", []))
        terms = tested[0] if len(tested) == 1 else f"{len(tested)} terms"
        what = f"{str(adata.uns[key_added].get('test', '')).upper()} of {terms}"
    else:
        p = _inference_column(adata, key_added, predictor, "pvalue").to_numpy()
        what = f"Wald test of {predictor}"
    p = p[np.isfinite(p)]
    if p.size == 0:
        raise InputError("there are no finite p-values to show.")
    ax = _new_ax(ax)
    ax.hist(p, bins=bins, range=(0, 1), color="0.45", edgecolor="white", gid="pvalues")
    ax.axhline(p.size / bins, color="#b2182b", lw=1, ls="--", label="uniform (no effect)")
    ax.set_xlim(0, 1)
    ax.set_xlabel("p-value")
    ax.set_ylabel("genes")
    ax.set_title(f"{what} ({p.size} genes)")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_spatial_effect(
    adata: AnnData,
    gene: str,
    *,
    predictors: Sequence[str],
    design: Any,
    key_added: str = "stglm",
    basis: str = "spatial",
    ax: Axes | None = None,
) -> Axes:
    """A gene's fitted spatial effect Σ_j β_j·x_ij over ``predictors``, on the tissue.

    For a log link this is the log fold change of the gene's mean at each cell that the
    chosen (spatial) predictors explain, on a diverging scale centred at 0.

    Parameters
    ----------
    adata : AnnData
        Results of :func:`stglm.fit_genes`.
    gene : str
        A fitted gene.
    predictors : sequence of str
        Design columns whose contributions are summed (e.g. the coordinates or lags).
    design : DataFrame
        The design given to fit_genes.
    key_added : str, default="stglm"
    basis : str, default="spatial"
        ``adata.obsm`` key of the coordinates.
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    info = results_info(adata, key_added)
    j = check_gene(adata, gene, key_added)
    frame = design_frame(design, adata)
    names = [str(p) for p in predictors]
    missing = [p for p in names if p not in frame.columns or p not in info["predictors"]]
    if not names or missing:
        raise InputError(
            f"predictors must be design columns that were fitted; not {missing or names}."
        )
    if basis not in adata.obsm:
        raise InputError(f"basis {basis!r} is not in adata.obsm (has {list(adata.obsm.keys())}).")
    coords = np.asarray(adata.obsm[basis], dtype=float)[:, :2]
    coef = pd.Series(np.asarray(adata.varm[coef_key(key_added)])[j], index=list(info["predictors"]))
    effect = frame[names].to_numpy(dtype=float) @ coef[names].to_numpy(dtype=float)
    ok = np.all(np.isfinite(coords), axis=1)
    ax = _new_ax(ax, size=(6.0, 4.0))
    lim = float(np.nanmax(np.abs(effect[ok]))) or 1.0
    art = ax.scatter(
        coords[ok, 0], coords[ok, 1], c=effect[ok], cmap="RdBu_r", vmin=-lim, vmax=lim, s=6,
        lw=0, gid="effect",
    )  # fmt: skip
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    link = info.get("model", {}).get("link", "")
    label = "log fold change" if link == "log" else "contribution to the linear predictor"
    ax.figure.colorbar(art, ax=ax, label=label, shrink=0.8)
    ax.set_title(f"{gene}: {' + '.join(names)}")
    return ax
