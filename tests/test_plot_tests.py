"""The pictures of per-gene tests: what they draw is what the results hold."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

import stglm
from stglm.plotting import plot_pvalue_histogram, plot_spatial_effect, plot_volcano

GENES = 60


@pytest.fixture(scope="module")
def fitted():
    adata = stglm.datasets.visium_prostate()
    adata = adata[:, adata.var_names[:GENES]].copy()
    design = stglm.spatial.coordinates(adata)
    design["section"] = (adata.obs["list_ID"] == "CP").astype(float).to_numpy()
    stglm.fit_genes(
        adata, design=design, distr="poisson", link="log", reg_lambda=0.0,
        size_factors="total", clip_coeffs=0, inference=True, progress=False,
    )  # fmt: skip
    stglm.test_genes(adata, design=design, reduced=["section"], distr="poisson", progress=False)
    return adata, design


def test_volcano_draws_every_tested_gene_by_its_q_value(fitted):
    adata, _ = fitted
    ax = plot_volcano(adata, "x", fdr=0.05, top=5)
    q = adata.varm["stglm_qvalue"]["x"].to_numpy()
    drawn = {a.get_gid(): len(a.get_offsets()) for a in ax.collections}
    coef = adata.varm["stglm_coef"]["x"].to_numpy()
    assert drawn["genes_up"] == int(np.sum((q <= 0.05) & (coef > 0)))
    assert drawn["genes_down"] == int(np.sum((q <= 0.05) & (coef < 0)))
    assert drawn["genes_up"] + drawn["genes_down"] + drawn["genes_ns"] == int(np.isfinite(q).sum())
    assert len(ax.texts) == 5
    plt.close(ax.figure)


def test_pvalue_histogram_counts_the_tested_genes(fitted):
    adata, _ = fitted
    ax = plot_pvalue_histogram(adata, key_added="stglm_test", bins=10)
    p = adata.var["stglm_test_pvalue"].to_numpy()
    heights = [patch.get_height() for patch in ax.patches if patch.get_gid() == "pvalues"]
    assert sum(heights) == np.isfinite(p).sum()
    plt.close(ax.figure)
    ax = plot_pvalue_histogram(adata, predictor="y")  # fit_genes(inference=True) results
    plt.close(ax.figure)


def test_spatial_effect_is_the_predictors_contribution(fitted):
    adata, design = fitted
    gene = adata.var_names[0]
    ax = plot_spatial_effect(adata, gene, predictors=["x", "y"], design=design)
    coef = adata.varm["stglm_coef"].loc[gene]
    expected = design[["x", "y"]].to_numpy() @ coef[["x", "y"]].to_numpy()
    art = next(a for a in ax.collections if a.get_gid() == "effect")
    np.testing.assert_allclose(np.asarray(art.get_array()), expected)
    plt.close(ax.figure)


def test_bad_requests_name_what_is_wrong(fitted):
    adata, design = fitted
    with pytest.raises(ValueError, match="predictor 'nope'"):
        plot_volcano(adata, "nope")
    with pytest.raises(ValueError, match="fdr"):
        plot_volcano(adata, "x", fdr=2.0)
    with pytest.raises(ValueError, match="no test_genes results"):
        plot_pvalue_histogram(adata, key_added="stglm")
    with pytest.raises(ValueError, match="predictors"):
        plot_spatial_effect(adata, adata.var_names[0], predictors=["zz"], design=design)
