"""``stglm.get.coef_df`` after ``fit_genes(..., inference=True)``: se, pvalue, qvalue columns.

The references are the varm tables fit_genes wrote (read here by position), a single-gene
``GLM.coef_table`` (the per-gene inference) and Benjamini–Hochberg computed here with numpy.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import stglm
from stglm import GLM
from stglm.datasets import visium_prostate
from stglm.get import coef_df

GENES = ("KRT15", "CNN1", "TGM4", "MSMB", "ACPP", "KLK3")


@pytest.fixture(scope="module")
def fitted():
    """Poisson, log link, size factors; the section and lag unpenalised, x and y penalised."""
    full = visium_prostate()
    rng = np.random.default_rng(3)
    adata = full[np.sort(rng.choice(full.n_obs, 400, replace=False))].copy()
    genes = [g for g in GENES if g in adata.var_names]
    design = stglm.spatial.build_design(adata, section_key="list_ID", lag=["KRT15"], coords=True)
    stglm.fit_genes(
        adata, genes, design=design, distr="poisson", link="log", size_factors="total",
        reg_lambda=0.05, clip_coeffs=0.0, penalty_factor=[0, 0, 1, 1], inference=True,
        tol=1e-10, progress=False,
    )  # fmt: skip
    return adata, design, genes


def bh(p):
    """Benjamini–Hochberg q-values of a vector (NaN left out), here with numpy."""
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    order = np.argsort(p[ok])
    ranked = p[ok][order] * ok.sum() / np.arange(1, ok.sum() + 1)
    out = np.minimum.accumulate(ranked[::-1])[::-1]
    values = np.empty_like(out)
    values[order] = np.minimum(out, 1.0)
    q[ok] = values
    return q


@pytest.mark.parametrize("include_intercept", [False, True])
def test_columns_are_the_inference_tables(fitted, include_intercept):
    adata, design, genes = fitted
    df = coef_df(adata, include_intercept=include_intercept)
    assert list(df.columns) == [
        "gene", "predictor", "coef", "se", "pvalue", "qvalue", "lambda", "score", "status",
    ]  # fmt: skip
    positions = {g: i for i, g in enumerate(adata.var_names)}
    columns = list(design.columns)
    for row in df.to_dict("records"):
        if row["predictor"] == "intercept":
            assert np.isnan(row["se"]) and np.isnan(row["pvalue"]) and np.isnan(row["qvalue"])
            continue
        i, j = positions[row["gene"]], columns.index(row["predictor"])
        for name in ("se", "pvalue", "qvalue"):
            np.testing.assert_equal(row[name], np.asarray(adata.varm[f"stglm_{name}"])[i, j])
    # penalised predictors have none; the unpenalised ones have them for every fitted gene
    penalised = df["predictor"].isin(["x", "y"])
    assert df.loc[penalised, ["se", "pvalue", "qvalue"]].isna().all().all()
    free = df["predictor"].isin(["list_ID_NP", "lag_KRT15"])
    assert df.loc[free, ["se", "pvalue", "qvalue"]].notna().all().all()


def test_values_match_a_single_gene_coef_table_and_bh(fitted):
    adata, design, genes = fitted
    df = coef_df(adata).set_index(["gene", "predictor"])
    sf = np.asarray(adata.X.sum(axis=1)).ravel()
    offset = np.log(sf) - np.log(sf).mean()
    for gene in genes[:3]:
        y = adata[:, gene].X
        y = (y.toarray() if sp.issparse(y) else np.asarray(y)).ravel()
        model = GLM(
            distr="poisson", link="log", reg_lambda=0.05, clip_coeffs=0.0, tol=1e-10,
            penalty_factor=[0, 0, 1, 1], verbose=False,
        ).fit(design, y, offset=offset)  # fmt: skip
        table = model.coef_table()
        for predictor in ("list_ID_NP", "lag_KRT15"):
            row = df.loc[(gene, predictor)]
            np.testing.assert_allclose(row["coef"], table.loc[predictor, "coef"], rtol=1e-6)
            np.testing.assert_allclose(row["se"], table.loc[predictor, "se"], rtol=1e-6)
            np.testing.assert_allclose(row["pvalue"], table.loc[predictor, "pvalue"], rtol=1e-5)
    for predictor in ("list_ID_NP", "lag_KRT15"):
        rows = df.xs(predictor, level="predictor")
        np.testing.assert_allclose(rows["qvalue"], bh(rows["pvalue"].to_numpy()), rtol=1e-12)


def test_without_inference_there_are_no_such_columns(fitted, tmp_path):
    adata, design, genes = fitted
    plain = ad.AnnData(adata.X.copy(), obs=adata.obs.copy(), var=adata.var[[]].copy())
    stglm.fit_genes(plain, genes, design=design, reg_lambda=0.05, progress=False)
    assert "se" not in coef_df(plain).columns
    # the columns survive a round trip through .h5ad
    adata.write_h5ad(tmp_path / "inference.h5ad")
    back = ad.read_h5ad(tmp_path / "inference.h5ad")
    np.testing.assert_array_equal(
        coef_df(back)[["se", "pvalue", "qvalue"]].to_numpy(),
        coef_df(adata)[["se", "pvalue", "qvalue"]].to_numpy(),
    )


@pytest.mark.parametrize("theta", ["cox-reid", 2.0])
def test_fitted_mean_recomputes_count_models_with_their_offset_and_theta(theta):
    """Log link, size factors and θ per gene: the recomputed means equal the stored ones."""
    import stglm

    adata = stglm.datasets.visium_prostate()
    design = stglm.spatial.coordinates(adata)
    genes = list(adata.var_names[:8])
    stglm.fit_genes(
        adata, genes, design=design, distr="neg-binomial", link="log", theta=theta,
        reg_lambda=0.0, size_factors="total", store_fitted=True, progress=False,
    )  # fmt: skip
    stored = np.asarray(adata.layers["stglm_mu"])
    del adata.layers["stglm_mu"]
    for gene in genes:
        mu = stglm.get.fitted_mean(adata, gene, design=design)
        j = adata.var_names.get_loc(gene)
        np.testing.assert_allclose(mu, stored[:, j], rtol=1e-6)  # float32 storage


def test_a_refit_without_inference_drops_the_earlier_p_values():
    import stglm

    adata = stglm.datasets.visium_prostate()
    design = stglm.spatial.coordinates(adata)
    genes = list(adata.var_names[:5])
    kw = dict(design=design, link="log", reg_lambda=0.0, progress=False)
    stglm.fit_genes(adata, genes, inference=True, **kw)
    assert "stglm_pvalue" in adata.varm
    with pytest.raises(ValueError, match="inference"):  # another model: refused ...
        stglm.fit_genes(adata, genes, **kw)
    stglm.fit_genes(adata, genes, overwrite=True, **kw)  # ... or replaced, as asked
    assert not {"stglm_se", "stglm_pvalue", "stglm_qvalue"} & set(adata.varm.keys())
