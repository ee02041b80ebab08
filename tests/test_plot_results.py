"""Plots of fit_genes results: what is drawn is checked against values computed here.

Fits use a small subset of the bundled Visium data (300 spots × 40 genes) and a design built
with numpy (section dummy, standardised coordinates). Expected matrices, orders and fitted
means are computed in the tests from the stored coefficients with numpy/scipy.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy.cluster.hierarchy import leaves_list, linkage  # noqa: E402

import stglm  # noqa: E402
from stglm._plot_results import plot_coef_heatmap, plot_gene_fit  # noqa: E402
from stglm.datasets import visium_prostate  # noqa: E402

ETA = 2.0  # fit_genes' default Poisson threshold


@pytest.fixture(autouse=True)
def _close_figures(monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show() was called"))
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data():
    full = visium_prostate()
    rng = np.random.default_rng(1)
    spots = np.sort(rng.choice(full.n_obs, 300, replace=False))
    genes = [
        "KRT15",
        "CNN1",
        "AMACR",
        *rng.choice(full.var_names.drop(["KRT15", "CNN1", "AMACR"]), 37, replace=False),
    ]
    small = full[spots, genes].copy()
    xy = np.asarray(small.obsm["spatial"], dtype=float)
    design = pd.DataFrame(
        {
            "section_NP": (small.obs["list_ID"] == "NP").to_numpy(dtype=float),
            "x": (xy[:, 0] - xy[:, 0].mean()) / xy[:, 0].std(),
            "y": (xy[:, 1] - xy[:, 1].mean()) / xy[:, 1].std(),
            "noise": rng.normal(size=len(xy)),
        },
        index=small.obs_names,
    )
    return small, design


@pytest.fixture(scope="module")
def fits(data):
    """(results with the fitted means stored, results without them, design)."""
    small, design = data
    # The seed's mean (link=None): the test recomputes it with poisson_mean.
    kwargs = dict(design=design, distr="poisson", alpha=0.5, reg_lambda=0.02, progress=False,
                  link=None)  # fmt: skip
    stored = stglm.fit_genes(small, store_fitted=True, copy=True, **kwargs)
    bare = stglm.fit_genes(small, copy=True, **kwargs)
    return stored, bare, design


def coef_matrix(adata, key="stglm"):
    """Coefficients of the fitted genes, straight from varm/var/uns."""
    coef = pd.DataFrame(
        np.asarray(adata.varm[f"{key}_coef"]),
        index=adata.var_names,
        columns=list(adata.uns[key]["predictors"]),
    )
    ok = adata.var[f"{key}_status"].astype(str).isin(["ok", "not converged"])
    return coef[ok.to_numpy()]


def poisson_mean(z):
    return np.where(z <= ETA, np.exp(np.minimum(z, ETA)), np.exp(ETA) * (z - ETA + 1.0))


def tick_labels(ticks):
    return [t.get_text() for t in ticks]


def check_png(fig, path):
    fig.savefig(path, dpi=100)
    image = mpimg.imread(path)
    h, w = image.shape[:2]
    assert image.ndim == 3 and 250 <= h <= 2500 and 250 <= w <= 2500
    assert image[..., :3].std() > 0.01
    return image


# ---------------------------------------------------------------------------------------------
# heatmap
# ---------------------------------------------------------------------------------------------
def test_heatmap_order_is_scipy_clustering(fits, tmp_path):
    adata = fits[0]
    coef = coef_matrix(adata)
    strength = coef.abs().max(axis=1).to_numpy()
    top = coef.iloc[np.argsort(-strength, kind="stable")[:15]]
    M = top.to_numpy()
    rows = leaves_list(linkage(M, method="average", metric="euclidean"))
    cols = leaves_list(linkage(M.T, method="average", metric="euclidean"))

    ax = plot_coef_heatmap(adata, top=15, scale="none")
    assert tick_labels(ax.get_yticklabels()) == list(top.index[rows])
    assert tick_labels(ax.get_xticklabels()) == list(top.columns[cols])
    image = ax.images[0]
    np.testing.assert_array_equal(image.get_array(), M[rows][:, cols])
    # diverging colormap centred at 0, with a colorbar
    assert image.norm.vmin == -image.norm.vmax == -np.abs(M).max()
    assert image.get_cmap().name == "RdBu_r"
    assert len(ax.figure.axes) == 2
    check_png(ax.figure, tmp_path / "heatmap.png")


def test_heatmap_without_clustering_and_given_genes(fits):
    adata = fits[0]
    coef = coef_matrix(adata)
    order = np.argsort(-coef.abs().max(axis=1).to_numpy(), kind="stable")[:8]
    ax = plot_coef_heatmap(adata, top=8, cluster=False, scale="none")
    assert tick_labels(ax.get_yticklabels()) == list(coef.index[order])
    assert tick_labels(ax.get_xticklabels()) == list(coef.columns)

    fig, ax2 = plt.subplots()
    genes = ["CNN1", "KRT15", "AMACR"]
    assert plot_coef_heatmap(adata, genes=genes, cluster=False, ax=ax2, scale="none") is ax2
    np.testing.assert_array_equal(ax2.images[0].get_array(), coef.loc[genes].to_numpy())
    # clustering a given set keeps its genes
    ax3 = plot_coef_heatmap(adata, genes=genes)
    assert sorted(tick_labels(ax3.get_yticklabels())) == sorted(genes)


def test_heatmap_scales_each_predictor_by_its_largest_effect(fits):
    """Default scale: a predictor with 100× larger effects (a section dummy, say) does not wash
    out the others: each column is coef / that predictor's max |coef| over the fitted genes,
    the max in the column label; genes ranked by the scaled values."""
    adata = fits[0].copy()
    coef = coef_matrix(adata)
    loud = coef.columns[0]
    scaled_coef = coef.copy()
    scaled_coef[loud] *= 100
    adata.varm["stglm_coef"] = adata.varm["stglm_coef"].assign(
        **{loud: adata.varm["stglm_coef"][loud] * 100}
    )
    maxima = scaled_coef.abs().max(axis=0)
    expected = scaled_coef / maxima
    order = np.argsort(-expected.abs().max(axis=1).to_numpy(), kind="stable")[:10]
    ax = plot_coef_heatmap(adata, top=10, cluster=False)
    drawn = ax.images[0].get_array()
    np.testing.assert_allclose(drawn, expected.iloc[order].to_numpy(), rtol=1e-14)
    assert ax.images[0].norm.vmin == -1 and ax.images[0].norm.vmax == 1
    assert tick_labels(ax.get_xticklabels()) == [f"{p} (±{maxima[p]:.2g})" for p in coef.columns]
    assert "max |coef|" in ax.figure.axes[1].get_ylabel()
    # unscaled, the loud predictor takes the whole colour range
    raw = plot_coef_heatmap(adata, top=10, cluster=False, scale="none").images[0].get_array()
    quiet = np.abs(raw[:, 1:]).max() / np.abs(raw).max()
    assert quiet < 0.05 < np.abs(drawn[:, 1:]).max()


def test_heatmap_labels_are_legible(fits):
    """Issue 16 ("its labels are tiny"): gene and predictor labels get 11 pt when few, and
    never drop below 6 / 7 pt however many are drawn; a figure of a few genes is not a
    column of 4-pt text."""
    adata = fits[0]
    few = plot_coef_heatmap(adata, top=5, cluster=False)
    assert all(t.get_fontsize() == 11.0 for t in few.get_yticklabels())
    assert all(t.get_fontsize() >= 7.0 for t in few.get_xticklabels())
    many = plot_coef_heatmap(adata, top=200, cluster=False)
    assert all(t.get_fontsize() >= 6.0 for t in many.get_yticklabels())


def test_heatmap_predictors_and_zero_columns(fits):
    """predictors= picks the columns drawn and ranked by; all-zero columns are left out."""
    adata = fits[0].copy()
    coef = coef_matrix(adata)
    zero = coef.columns[-1]
    adata.varm["stglm_coef"] = adata.varm["stglm_coef"].assign(**{zero: 0.0})
    ax = plot_coef_heatmap(adata, cluster=False, scale="none")
    assert tick_labels(ax.get_xticklabels()) == list(coef.columns[:-1])
    chosen = list(coef.columns[1:3])
    ax = plot_coef_heatmap(adata, predictors=chosen, top=5, cluster=False, scale="none")
    assert tick_labels(ax.get_xticklabels()) == chosen
    order = np.argsort(-coef[chosen].abs().max(axis=1).to_numpy(), kind="stable")[:5]
    assert tick_labels(ax.get_yticklabels()) == list(coef.index[order])
    with pytest.raises(ValueError, match="predictors not in the fit: \\['nope'\\]"):
        plot_coef_heatmap(adata, predictors=["nope"])
    with pytest.raises(ValueError, match="scale must be one of"):
        plot_coef_heatmap(adata, scale="gene")


def test_heatmap_errors(fits, data):
    adata = fits[0]
    with pytest.raises(ValueError, match="NOTAGENE"):
        plot_coef_heatmap(adata, genes=["KRT15", "NOTAGENE"])
    with pytest.raises(ValueError, match="no fit_genes results"):
        plot_coef_heatmap(adata, key_added="other")
    with pytest.raises(ValueError, match="top"):
        plot_coef_heatmap(adata, top=0)


# ---------------------------------------------------------------------------------------------
# one gene: observed vs fitted
# ---------------------------------------------------------------------------------------------
def test_gene_fit_panels_show_counts_and_stored_means(fits, tmp_path):
    adata = fits[0]
    gene = "KRT15"
    j = adata.var_names.get_loc(gene)
    observed = adata.X[:, j].toarray().ravel()
    fitted = adata.layers["stglm_mu"][:, j]
    before = (set(adata.obs), set(adata.var), set(adata.uns), set(adata.layers))

    ax_obs, ax_fit = plot_gene_fit(adata, gene)
    assert (ax_obs.get_title(), ax_fit.get_title()) == ("observed", "fitted")
    obs_points, fit_points = ax_obs.collections[0], ax_fit.collections[0]
    np.testing.assert_array_equal(obs_points.get_array(), observed)
    np.testing.assert_allclose(fit_points.get_array(), fitted, rtol=1e-6)
    np.testing.assert_array_equal(obs_points.get_offsets(), adata.obsm["spatial"])
    # one shared colour scale, equal aspect, one colorbar
    assert (obs_points.norm.vmin, obs_points.norm.vmax) == (
        fit_points.norm.vmin,
        fit_points.norm.vmax,
    )
    assert ax_obs.get_aspect() == ax_fit.get_aspect() == 1.0
    assert len(ax_obs.figure.axes) == 3
    check_png(ax_obs.figure, tmp_path / "gene_fit.png")
    assert before == (set(adata.obs), set(adata.var), set(adata.uns), set(adata.layers))


def test_gene_fit_one_row_per_group(fits, tmp_path):
    """groupby: a row of (observed, fitted) per section, titled with its name, each showing
    only its cells, all on one colour scale with one colorbar."""
    adata = fits[0]
    gene = "KRT15"
    j = adata.var_names.get_loc(gene)
    observed = adata.X[:, j].toarray().ravel()
    sections = adata.obs["list_ID"].astype(str).to_numpy()
    axes = plot_gene_fit(adata, gene, groupby="list_ID")
    labels = list(pd.unique(adata.obs["list_ID"].astype("category").cat.categories))
    assert axes.shape == (len(labels), 2)
    norms = set()
    for (ax_obs, ax_fit), label in zip(axes, labels, strict=True):
        assert (ax_obs.get_title(), ax_fit.get_title()) == (
            f"{label}: observed",
            f"{label}: fitted",
        )
        cells = sections == label
        np.testing.assert_array_equal(ax_obs.collections[0].get_array(), observed[cells])
        np.testing.assert_array_equal(
            ax_obs.collections[0].get_offsets(), adata.obsm["spatial"][cells]
        )
        norms |= {
            (ax.collections[0].norm.vmin, ax.collections[0].norm.vmax) for ax in (ax_obs, ax_fit)
        }
    assert len(norms) == 1 and len(axes[0, 0].figure.axes) == 2 * len(labels) + 1
    check_png(axes[0, 0].figure, tmp_path / "grouped.png")
    with pytest.raises(ValueError, match="groupby 'slide' is not a column"):
        plot_gene_fit(adata, gene, groupby="slide")
    with pytest.raises(ValueError, match="axes must be 4 Axes"):
        plot_gene_fit(adata, gene, groupby="list_ID", axes=plt.subplots(1, 2)[1])


def test_gene_fit_recomputes_means_from_the_design(fits):
    stored, bare, design = fits
    gene = "AMACR"
    j = bare.var_names.get_loc(gene)
    z = (
        bare.var["stglm_intercept"].iloc[j]
        + design.to_numpy() @ np.asarray(bare.varm["stglm_coef"])[j]
    )
    expected = poisson_mean(z)

    fig, axes = plt.subplots(1, 2)
    ax_obs, ax_fit = plot_gene_fit(bare, gene, axes=axes, design=design)
    assert ax_obs is axes[0] and ax_fit is axes[1]
    np.testing.assert_allclose(ax_fit.collections[0].get_array(), expected, rtol=1e-12)
    # the same as the means fit_genes stored itself (float32)
    np.testing.assert_allclose(expected, stored.layers["stglm_mu"][:, j], rtol=1e-5)
    # a shuffled design is aligned by obs_names
    ax_obs, ax_fit = plot_gene_fit(bare, gene, design=design.sample(frac=1.0, random_state=0))
    np.testing.assert_allclose(ax_fit.collections[0].get_array(), expected, rtol=1e-12)


def test_gene_fit_errors(fits, data):
    stored, bare, design = fits
    bare = bare.copy()
    assert len(plot_gene_fit(bare, "KRT15")) == 2  # from the design fit_genes stored
    del bare.obsm["stglm_design"]
    with pytest.raises(ValueError, match="design="):
        plot_gene_fit(bare, "KRT15")
    with pytest.raises(ValueError, match="lacks the fitted predictors"):
        plot_gene_fit(bare, "KRT15", design=design.drop(columns="noise"))
    with pytest.raises(ValueError, match="not in adata.var_names"):
        plot_gene_fit(stored, "NOTAGENE")
    with pytest.raises(ValueError, match="basis"):
        plot_gene_fit(stored, "KRT15", basis="X_umap")
    partial = stglm.fit_genes(
        data[0], ["KRT15"], design=design, reg_lambda=0.02, copy=True, progress=False
    )
    with pytest.raises(ValueError, match="not requested"):
        plot_gene_fit(partial, "CNN1", design=design)


def test_unreliable_cv_genes_are_plotted_alone_but_not_ranked(fits):
    """A "fold without counts" gene has a fit (its panel draws) but stays off the heatmap."""
    stored, _, design = fits
    flagged = stored.copy()
    status = flagged.var["stglm_status"].astype(str)
    status["CNN1"] = "fold without counts"
    flagged.var["stglm_status"] = pd.Categorical(status)
    ax = plot_coef_heatmap(flagged, cluster=False)
    rows = tick_labels(ax.get_yticklabels())
    assert "CNN1" not in rows and "KRT15" in rows
    axes = plot_gene_fit(flagged, "CNN1", design=design)
    assert len(axes) == 2


def test_gene_fit_leaves_out_cells_without_coordinates(fits):
    """A NaN coordinate: that cell is not drawn (a warning says how many), the rest are."""
    adata = fits[0].copy()
    xy = np.asarray(adata.obsm["spatial"], dtype=float).copy()
    xy[[3, 7], 0] = np.nan
    adata.obsm["spatial"] = xy
    with pytest.warns(UserWarning, match="2 cells without coordinates"):
        ax_obs, _ = plot_gene_fit(adata, "KRT15")
    assert len(ax_obs.collections[0].get_offsets()) == adata.n_obs - 2
    with pytest.warns(UserWarning, match="2 cells without coordinates"):
        axes = plot_gene_fit(adata, "KRT15", groupby="list_ID")
    assert sum(len(ax.collections[0].get_offsets()) for ax in axes[:, 0]) == adata.n_obs - 2
    adata.obsm["spatial"] = np.full_like(xy, np.nan)
    with pytest.raises(ValueError, match="no cell with finite coordinates"):
        plot_gene_fit(adata, "KRT15")
