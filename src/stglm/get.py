"""Getters that read what :func:`stglm.fit_genes` stored (scanpy's ``sc.get`` convention).

- :func:`coef_df` — the coefficients as a long, tidy DataFrame;
- :func:`fitted_mean` — one gene's fitted means over all cells;
- :func:`top_effects` — for each predictor, the genes with the largest effects.

Nothing here writes into ``adata``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ._anndata import dense_columns, design_frame
from ._docs import shared_docs
from ._errors import InputError
from ._families import get_family
from ._results import (
    INFERENCE_FIELDS,
    RANKED_STATUSES,
    check_gene,
    coef_key,
    design_key,
    mu_layer,
    offset_key,
    results_info,
    stat_key,
    var_key,
)
from ._validation import check_vector

__all__ = ["coef_df", "fitted_mean", "top_effects"]


@shared_docs
def coef_df(
    adata: AnnData, *, key_added: str = "stglm", include_intercept: bool = False
) -> pd.DataFrame:
    """Coefficients written by :func:`stglm.fit_genes` as a long, tidy DataFrame.

    Parameters
    ----------
    {adata_fitted}
    {key_added_fitted}
    include_intercept : bool, default=False
        Add a row per gene with predictor ``"intercept"``.

    Returns
    -------
    DataFrame
        Columns ``gene``, ``predictor``, ``coef``, ``lambda``, ``score``, ``status``; one row per
        fitted gene and predictor (genes not requested are left out), sorted by gene then
        predictor order. After ``fit_genes(..., inference=True)`` also ``se``, ``pvalue``
        and ``qvalue`` (the Wald standard error, p-value and Benjamini–Hochberg q-value over
        the fitted genes, per predictor; NaN for penalised predictors and the intercept).
        What one unit of ``coef`` means (for a log link: the natural-log fold change of the
        mean per unit of the predictor) is ``adata.uns[key_added]["model"]["coefficients"]``.
    """
    genes = list(results_info(adata, key_added)["genes"])
    coef = pd.DataFrame(adata.varm[coef_key(key_added)], index=adata.var_names).loc[genes]
    tables = {
        name: pd.DataFrame(
            np.asarray(adata.varm[stat_key(key_added, name)], dtype=float),
            index=adata.var_names,
            columns=coef.columns,
        ).loc[genes]
        for name in INFERENCE_FIELDS
        if stat_key(key_added, name) in adata.varm
    }
    if include_intercept:
        intercept = adata.var.loc[genes, var_key(key_added, "intercept")].to_numpy()
        coef.insert(0, "intercept", intercept)
        for table in tables.values():
            table.insert(0, "intercept", np.nan)  # no standard error of the intercept stored
    tidy = (
        coef.rename_axis("gene")
        .reset_index()
        .melt(id_vars="gene", var_name="predictor", value_name="coef")
    )
    for name, table in tables.items():
        tidy[name] = table.to_numpy().ravel(order="F")  # melt's order: predictor by predictor
    fields = ("lambda", "score", "status")
    info = adata.var.loc[genes, [var_key(key_added, f) for f in fields]]
    info.columns = list(fields)
    tidy = tidy.merge(info, left_on="gene", right_index=True, how="left")
    order = {p: i for i, p in enumerate(coef.columns)}
    gene_order = {g: i for i, g in enumerate(genes)}
    tidy = tidy.sort_values(
        ["gene", "predictor"], key=lambda s: s.map(gene_order if s.name == "gene" else order)
    )
    return tidy.reset_index(drop=True)


@shared_docs
def fitted_mean(
    adata: AnnData, gene: str, *, key_added: str = "stglm", design: Any = None, offset: Any = None
) -> np.ndarray:
    """Fitted means μ of one gene over all cells.

    Read from ``adata.layers[f"{key_added}_mu"]`` when :func:`stglm.fit_genes` stored it
    (``store_fitted=True``); otherwise recomputed as μ(β0 + offset + design · β) from the
    stored intercept, coefficients and offset (``obs[f"{key_added}_offset"]``), the gene's θ
    and the family and link in ``adata.uns[key_added]``, and the design fit_genes stored
    (``obsm[f"{key_added}_design"]``) or ``design``.

    Parameters
    ----------
    {adata_fitted}
    {gene_fitted}
    {key_added_fitted}
    design : DataFrame or array of shape (n_obs, n_predictors), optional
        The design given to :func:`stglm.fit_genes` (same alignment rules); default: the one
        it stored in ``adata.obsm[f"{key_added}_design"]``. Its columns must include the
        fitted predictors.
    offset : array of shape (n_obs,), optional
        The gene's offset, when fit_genes was given a per-gene (n_obs, n_genes) one (which it
        does not store); otherwise the stored one is used.

    Returns
    -------
    ndarray of shape (n_obs,)

    Raises
    ------
    ValueError
        If there are no results, the gene was not fitted, or the means were not stored and
        no (matching) ``design`` is given.
    """
    info = results_info(adata, key_added)
    j = check_gene(adata, gene, key_added)
    layer = mu_layer(key_added)
    if layer in adata.layers:
        return dense_columns(adata.layers[layer], [j]).ravel()
    if design is None:
        design = adata.obsm.get(design_key(key_added))
    if design is None:
        raise InputError(
            f"adata.layers[{layer!r}] and adata.obsm[{design_key(key_added)!r}] are absent; "
            "pass design=, the design given to fit_genes, to recompute the fitted means."
        )
    frame = design_frame(design, adata)
    predictors = [str(p) for p in info["predictors"]]
    missing = [p for p in predictors if p not in frame.columns]
    if missing:
        raise InputError(
            f"design lacks the fitted predictors {missing} (it has {list(frame.columns)})."
        )
    params = info["params"]
    theta_column = var_key(key_added, "theta")
    theta = params.get("theta", 1.0)
    if isinstance(theta, str) or theta_column in adata.var:  # the gene's own (estimated) θ
        theta = float(adata.var[theta_column].iloc[j]) if theta_column in adata.var else 1.0
    family = get_family(
        params["distr"], eta=float(params.get("eta", 2.0)),
        theta=theta if np.isfinite(theta) else 1.0, link=params.get("link"),
    )  # fmt: skip
    coef = np.asarray(adata.varm[coef_key(key_added)], dtype=float)[j]
    intercept = float(adata.var[var_key(key_added, "intercept")].iloc[j])
    if not params.get("fit_intercept", True):
        intercept = 0.0
    z = intercept + frame[predictors].to_numpy(dtype=np.float64) @ coef
    return np.asarray(family.mean(z + _gene_offset(adata, info, key_added, offset)), np.float64)


def _gene_offset(adata: AnnData, info: dict, key: str, offset: Any) -> np.ndarray | float:
    """A gene's offset for :func:`fitted_mean`: given, stored, or 0 (none was used)."""
    if offset is not None:
        return check_vector(offset, adata.n_obs, "offset", what="n_obs")
    if offset_key(key) in adata.obs:
        return adata.obs[offset_key(key)].to_numpy(dtype=float)
    if info.get("model", {}).get("offset", "none") != "none":
        raise InputError(
            "fit_genes was given a per-gene offset, which it does not store: pass this "
            "gene's offset= to recompute its fitted means."
        )
    return 0.0


@shared_docs
def top_effects(
    adata: AnnData, *, key_added: str = "stglm", top: int = 5
) -> dict[str, list[tuple[str, float]]]:
    """For each predictor, the ``top`` genes with the largest nonzero abs(coef), strongest first.

    Genes whose cross-validation is unreliable ("fold without counts") are left out, as in
    the coefficient heatmap: their coefficients do not compare with the others'.

    Parameters
    ----------
    {adata_fitted}
    {key_added_fitted}
    top : int, default=5
        Genes per predictor (fewer when fewer have a nonzero coefficient).

    Returns
    -------
    dict
        ``{predictor: [(gene, coef), ...]}`` in the design's predictor order; ties keep the
        fitting order of the genes.
    """
    if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
        raise InputError(f"top must be a positive integer; got {top!r}.")
    tidy = coef_df(adata, key_added=key_added)
    tidy = tidy[tidy["status"].isin(RANKED_STATUSES) & (tidy["coef"] != 0)]
    out = {}
    for predictor in adata.uns[key_added]["predictors"]:
        rows = tidy[tidy["predictor"] == predictor]
        rows = rows.iloc[np.argsort(-rows["coef"].abs().to_numpy(), kind="stable")[:top]]
        out[str(predictor)] = list(zip(rows["gene"], rows["coef"].astype(float), strict=True))
    return out
