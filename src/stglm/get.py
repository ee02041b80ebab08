"""Getters that turn stored results into tidy DataFrames (scanpy's ``sc.get`` convention)."""

from __future__ import annotations

import pandas as pd
from anndata import AnnData

__all__ = ["coef_df"]


def coef_df(
    adata: AnnData, *, key_added: str = "stglm", include_intercept: bool = False
) -> pd.DataFrame:
    """Coefficients written by :func:`stglm.fit_genes` as a long, tidy DataFrame.

    Parameters
    ----------
    adata : AnnData
        An AnnData that :func:`stglm.fit_genes` wrote into.
    key_added : str, default="stglm"
        The ``key_added`` used when fitting.
    include_intercept : bool, default=False
        Add a row per gene with predictor ``"intercept"``.

    Returns
    -------
    DataFrame
        Columns ``gene``, ``predictor``, ``coef``, ``lambda``, ``score``, ``status``; one row per
        fitted gene and predictor (genes not requested are left out), sorted by gene then
        predictor order.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData; got {type(adata).__name__}.")
    key = f"{key_added}_coef"
    if key not in adata.varm or key_added not in adata.uns:
        raise ValueError(
            f"no fit_genes results under key_added={key_added!r} "
            f"(adata.varm has {list(adata.varm.keys())})."
        )
    genes = list(adata.uns[key_added]["genes"])
    coef = pd.DataFrame(adata.varm[key], index=adata.var_names).loc[genes]
    if include_intercept:
        coef.insert(0, "intercept", adata.var.loc[genes, f"{key_added}_intercept"].to_numpy())
    tidy = (
        coef.rename_axis("gene")
        .reset_index()
        .melt(id_vars="gene", var_name="predictor", value_name="coef")
    )
    info = adata.var.loc[
        genes, [f"{key_added}_lambda", f"{key_added}_score", f"{key_added}_status"]
    ]
    info.columns = ["lambda", "score", "status"]
    tidy = tidy.merge(info, left_on="gene", right_index=True, how="left")
    order = {p: i for i, p in enumerate(coef.columns)}
    gene_order = {g: i for i, g in enumerate(genes)}
    tidy = tidy.sort_values(
        ["gene", "predictor"], key=lambda s: s.map(gene_order if s.name == "gene" else order)
    )
    return tidy.reset_index(drop=True)
