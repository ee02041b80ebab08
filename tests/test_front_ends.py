"""stglm's own front ends: fit_genes' and test_genes' defaults, and a second fit_genes call.

The defaults are checked against single-gene ``GLM`` fits of the model written out here —
log link, offset log(total / geometric mean of the totals) computed with NumPy, θ by
Cox–Reid, no clipping — and ``link=None`` against the seed's ``GLM()`` defaults. A second
fit under the same key is checked against one fit of all the genes, and the refusals leave
the AnnData as it was.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import assert_adata_equal

import stglm
import stglm.spatial as S
from stglm import GLM, fit_genes, test_genes
from stglm._defaults import front_end_model
from stglm.datasets import visium_prostate

QUIET = {"progress": False}
LAM = 0.02


@pytest.fixture(scope="module")
def data():
    """Every fourth Visium spot, 8 well-detected genes and a section + coordinates design."""
    full = visium_prostate()[::4].copy()
    detected = np.asarray((full.X > 0).mean(axis=0)).ravel()
    genes = list(full.var_names[np.argsort(-detected)[5:13]])
    design = S.build_design(full, section_key="list_ID", coords=True)
    return full, design, genes


def counts(adata, gene):
    col = adata[:, gene].X
    return np.asarray(col.toarray() if sp.issparse(col) else col, dtype=float).ravel()


def log_size_factors(adata):
    """log(total_i / geometric mean of the totals), written out with NumPy."""
    total = np.asarray(adata.X.sum(axis=1), dtype=float).ravel()
    return np.log(total) - np.log(total).mean()


# ---------------------------------------------------------------------------------------------
# defaults
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distr", ["poisson", "neg-binomial"])
def test_fit_genes_defaults_are_the_count_model(data, distr):
    """Default fit_genes = per gene GLM(link="log", clip_coeffs=0) with the offset
    log(total / geometric mean) (θ by Cox–Reid for NB), not the seed's model."""
    adata, design, genes = data
    kw = dict(design=design, distr=distr, reg_lambda=LAM, copy=True, **QUIET)
    out = fit_genes(adata, genes[:4], **kw)
    model = out.uns["stglm"]["model"]
    assert model["link"] == "log" and model["offset"] == "log size factors (total)"
    assert model["theta"] == ("cox-reid" if distr == "neg-binomial" else "none")
    X, offset = design.to_numpy(), log_size_factors(adata)
    np.testing.assert_allclose(out.obs["stglm_offset"], offset, rtol=0, atol=1e-12)
    theta = "cox-reid" if distr == "neg-binomial" else 1.0
    for gene in genes[:4]:
        ref = GLM(distr=distr, link="log", theta=theta, reg_lambda=LAM, clip_coeffs=0,
                  tol=1e-10, verbose=False).fit(X, counts(adata, gene), offset=offset)  # fmt: skip
        got = out.varm["stglm_coef"].loc[gene].to_numpy()
        np.testing.assert_allclose(got, ref.beta_, rtol=0, atol=2e-5, err_msg=gene)
        if distr == "neg-binomial":
            np.testing.assert_allclose(out.var.loc[gene, "stglm_theta"], ref.theta_, rtol=1e-3)


def test_link_none_is_the_seeds_model_with_its_defaults(data):
    """link=None: the seed's mean, θ = 1, no offset and clip_coeffs 0.01 — GLM()'s defaults."""
    adata, design, genes = data
    out = fit_genes(adata, genes[:3], design=design, distr="neg-binomial", link=None,
                    reg_lambda=LAM, tol=1e-10, copy=True, **QUIET)  # fmt: skip
    params, model = out.uns["stglm"]["params"], out.uns["stglm"]["model"]
    assert params["clip_coeffs"] == 0.01 and params["theta"] == 1.0
    assert model["offset"] == "none" and model["link"] == "softplus"
    for gene in genes[:3]:
        ref = GLM(distr="neg-binomial", reg_lambda=LAM, tol=1e-10, verbose=False)
        ref.fit(design.to_numpy(), counts(adata, gene))
        got = out.varm["stglm_coef"].loc[gene].to_numpy()
        np.testing.assert_allclose(got, ref.beta_, rtol=0, atol=1e-6, err_msg=gene)
        assert np.all((got == 0) | (np.abs(got) >= 0.01))  # the seed's clipping


def test_an_offset_of_ones_own_is_the_whole_offset(data):
    """With offset= the "auto" size factors are none (log(total) is not added twice)."""
    adata, design, genes = data
    offset = log_size_factors(adata)
    given = fit_genes(adata, genes[:2], design=design, reg_lambda=LAM, offset=offset, copy=True,
                      **QUIET)  # fmt: skip
    auto = fit_genes(adata, genes[:2], design=design, reg_lambda=LAM, copy=True, **QUIET)
    np.testing.assert_allclose(given.obs["stglm_offset"], offset)
    np.testing.assert_allclose(
        given.varm["stglm_coef"].loc[genes[:2]], auto.varm["stglm_coef"].loc[genes[:2]], atol=1e-7
    )


@pytest.mark.parametrize(
    ("distr", "link", "theta", "size_factors", "clip"),
    [
        ("poisson", "log", 1.0, "total", 0.0),
        ("neg-binomial", "log", "cox-reid", "total", 0.0),
        ("gamma", "log", 1.0, None, 0.0),  # not counts: no size factors
        ("gaussian", None, 1.0, None, 0.0),  # its own (identity) mean, no clipping
        ("softplus", None, 1.0, None, 0.0),
    ],
)
def test_one_rule_for_every_front_end(distr, link, theta, size_factors, clip):
    """front_end_model's defaults per family; the CLI's Model gives the same."""
    from stglm.cli import Model

    model = front_end_model(distr)
    assert (model.link, model.theta, model.size_factors, model.clip_coeffs) == (
        link, theta, size_factors, clip,
    )  # fmt: skip
    cli = Model(distr, None, None, None)
    assert (cli.link, cli.size_factors, cli.clip_coeffs) == (link, size_factors, clip)
    seed = front_end_model(distr, link=None)
    assert seed.clip_coeffs == 0.01 and seed.size_factors is None and seed.link is None


def test_test_genes_uses_the_same_defaults(data):
    """test_genes' defaults: the log link and total size factors (as fit_genes'), also for
    a Poisson test; link=None brings no size factors."""
    adata, design, genes = data
    table, out = test_genes(adata, genes[:2], design=design, reduced=["x", "y"],
                            distr="poisson", copy=True, **QUIET)  # fmt: skip
    model = out.uns["stglm_test"]["model"]
    assert model["link"] == "log" and model["offset"] == "log size factors (total)"
    _, seed = test_genes(adata, genes[:2], design=design, reduced=["x", "y"], distr="poisson",
                         link=None, copy=True, **QUIET)  # fmt: skip
    assert seed.uns["stglm_test"]["model"]["offset"] == "none"


# ---------------------------------------------------------------------------------------------
# a second fit_genes call under the same key
# ---------------------------------------------------------------------------------------------
def fitted(adata, genes, key="stglm"):
    columns = [f"{key}_{f}" for f in ("intercept", "lambda", "score", "kkt", "status")]
    return adata.varm[f"{key}_coef"].loc[genes].to_numpy(), adata.var.loc[genes, columns]


@pytest.mark.parametrize("reg_lambda", [LAM, None], ids=["fixed", "cv"])
def test_a_second_fit_of_the_same_model_adds_its_genes(data, reg_lambda):
    """Genes A then B (overlapping) = one fit of A ∪ B; A's results are kept, genes fitted
    again get the second fit's, uns lists the union."""
    adata, design, genes = data
    kw = dict(design=design, reg_lambda=reg_lambda, n_lambdas=5, cv=3, **QUIET)
    a, b = genes[:5], genes[3:]
    both = fit_genes(adata, genes, copy=True, **kw)
    merged = fit_genes(adata, a, copy=True, **kw)
    first_coef, first_var = fitted(merged, a[:3])
    assert fit_genes(merged, b, **kw) is None
    assert list(merged.uns["stglm"]["genes"]) == a + [g for g in b if g not in a]
    assert (merged.var.loc[genes, "stglm_status"] == "ok").all()
    coef, var = fitted(merged, a[:3])  # only in the first call: untouched
    np.testing.assert_array_equal(coef, first_coef)
    assert var.equals(first_var)
    got, ref = fitted(merged, genes), fitted(both, genes)
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[1]["stglm_lambda"], ref[1]["stglm_lambda"], rtol=1e-12)
    others = [g for g in adata.var_names if g not in genes]
    assert (merged.var.loc[others, "stglm_status"] == "not requested").all()


def test_merged_inference_recomputes_q_values_over_all_genes(data):
    """q-values after two calls = BH over all genes' p-values, as one call gives."""
    adata, design, genes = data
    kw = dict(design=design, reg_lambda=0, inference=True, **QUIET)
    both = fit_genes(adata, genes, copy=True, **kw)
    merged = fit_genes(adata, genes[:4], copy=True, **kw)
    fit_genes(merged, genes[4:], **kw)
    for table in ("stglm_pvalue", "stglm_qvalue", "stglm_se"):
        np.testing.assert_allclose(
            merged.varm[table].loc[genes], both.varm[table].loc[genes], rtol=1e-6, err_msg=table
        )


def test_merged_fitted_means_cover_both_calls(data):
    """A first fit with store_fitted=True: the second call's genes get their means too."""
    adata, design, genes = data
    kw = dict(design=design, reg_lambda=LAM, **QUIET)
    both = fit_genes(adata, genes[:4], store_fitted=True, copy=True, **kw)
    merged = fit_genes(adata, genes[:2], store_fitted=True, copy=True, **kw)
    fit_genes(merged, genes[2:4], **kw)
    cols = [adata.var_names.get_loc(g) for g in genes[:4]]
    np.testing.assert_allclose(
        merged.layers["stglm_mu"][:, cols], both.layers["stglm_mu"][:, cols], rtol=1e-5
    )


def test_merging_survives_an_h5ad_round_trip(data, tmp_path):
    adata, design, genes = data
    kw = dict(design=design, reg_lambda=LAM, **QUIET)
    first = fit_genes(adata, genes[:2], copy=True, **kw)
    first.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    fit_genes(back, genes[2:4], **kw)
    assert list(back.uns["stglm"]["genes"]) == genes[:4]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"reg_lambda": 0.05}, "reg_lambda"),
        ({"distr": "neg-binomial"}, "distr"),
        ({"link": None}, "link"),
        ({"size_factors": "poscounts"}, "offset"),
        ({"design": "other"}, "design"),
        ({"layer": "counts"}, "layer"),
        ({"inference": True, "reg_lambda": 0}, "inference"),
    ],
)
def test_a_second_fit_of_another_model_is_refused(data, change, named):
    """Another model under the same key: an error naming overwrite and what differs, raised
    before any work (the AnnData unchanged); overwrite=True replaces the results."""
    adata, design, genes = data
    adata = adata.copy()
    adata.layers["counts"] = adata.X.copy()
    kw = dict(design=design, reg_lambda=LAM, **QUIET)
    fit_genes(adata, genes[:2], **kw)
    second = {**kw, **change}
    if change.get("design") == "other":
        second["design"] = design.assign(x=design["x"] * 2.0)
    refused_then_replaced(fit_genes, adata, genes, second, named, "stglm")


def refused_then_replaced(call, adata, genes, second, named, key):
    """A second ``call`` on genes[2:4] with another model: refused before any work, naming
    ``named`` and overwrite=; with overwrite=True its results replace the first call's."""
    before = adata.copy()
    with pytest.raises(ValueError, match="overwrite") as err:
        call(adata, genes[2:4], **second)
    assert named in str(err.value)
    assert_adata_equal(adata, before)
    call(adata, genes[2:4], overwrite=True, **second)
    assert list(adata.uns[key]["genes"]) == genes[2:4]
    assert (adata.var.loc[genes[:2], f"{key}_status"] == "not requested").all()


def test_foreign_results_under_the_key_are_not_overwritten(data):
    """A key holding something else (an older stglm's results, another tool's) is refused."""
    adata, design, genes = data
    adata = adata.copy()
    adata.uns["stglm"] = {"note": "someone else's"}
    with pytest.raises(ValueError, match="overwrite=True"):
        fit_genes(adata, genes[:1], design=design, reg_lambda=LAM, **QUIET)
    assert dict(adata.uns["stglm"]) == {"note": "someone else's"}
    with pytest.raises(TypeError, match="overwrite"):
        fit_genes(adata, genes[:1], design=design, reg_lambda=LAM, overwrite="yes", **QUIET)


def test_get_reads_merged_results(data):
    """coef_df lists the genes of both calls."""
    adata, design, genes = data
    kw = dict(design=design, reg_lambda=LAM, **QUIET)
    out = fit_genes(adata, genes[:2], copy=True, **kw)
    fit_genes(out, genes[2:3], **kw)
    assert set(stglm.get.coef_df(out)["gene"]) == set(genes[:3])


# ---------------------------------------------------------------------------------------------
# a second test_genes call under the same key
# ---------------------------------------------------------------------------------------------
TEST_COLUMNS = ["stglm_test_stat", "stglm_test_pvalue", "stglm_test_theta_full"]


@pytest.mark.parametrize("test", ["lrt", "wald"])
def test_a_second_test_of_the_same_test_adds_its_genes(data, test):
    """Genes A then B (overlapping) = one test of A ∪ B: the statistics of each gene, the
    q-values over all of them (in adata and in the second call's table), uns lists the
    union; A's genes not tested again keep their results. Before, the second call
    replaced the first's genes with "not requested"."""
    adata, design, genes = data
    kw = dict(design=design, reduced=[c for c in design.columns if c != "x"], test=test, **QUIET)
    a, b = genes[:5], genes[3:]
    table_both, both = test_genes(adata, genes, copy=True, **kw)
    _, merged = test_genes(adata, a, copy=True, **kw)
    first = merged.var.loc[a[:3], TEST_COLUMNS].copy()
    table_b = test_genes(merged, b, **kw)
    assert list(merged.uns["stglm_test"]["genes"]) == a + [g for g in b if g not in a]
    assert (merged.var.loc[genes, "stglm_test_status"] == "ok").all()
    assert merged.var.loc[a[:3], TEST_COLUMNS].equals(first)
    for column in [*TEST_COLUMNS, "stglm_test_qvalue"]:
        np.testing.assert_allclose(
            merged.var.loc[genes, column], both.var.loc[genes, column], rtol=1e-6, err_msg=column
        )
    np.testing.assert_allclose(table_b["qvalue"], table_both.loc[b, "qvalue"], rtol=1e-6)
    others = [g for g in adata.var_names if g not in genes]
    assert (merged.var.loc[others, "stglm_test_status"] == "not requested").all()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"reduced": "no y"}, "reduced"),
        ({"test": "wald"}, "test"),
        ({"distr": "poisson"}, "distr"),
        ({"design": "other"}, "design"),
        ({"layer": "counts"}, "layer"),
    ],
)
def test_a_second_test_of_another_test_is_refused(data, change, named):
    """Another test under the same key: an error naming overwrite and what differs, before
    any work (the AnnData unchanged); overwrite=True replaces the results."""
    adata, design, genes = data
    adata = adata.copy()
    adata.layers["counts"] = adata.X.copy()
    kw = dict(design=design, reduced=[c for c in design.columns if c != "x"], **QUIET)
    test_genes(adata, genes[:2], **kw)
    second = {**kw, **change}
    if change.get("design") == "other":
        second["design"] = design.assign(y=design["y"] * 2.0)
    if change.get("reduced") == "no y":
        second["reduced"] = [c for c in design.columns if c != "y"]
    refused_then_replaced(test_genes, adata, genes, second, named, "stglm_test")


def test_ql_tests_are_not_merged(data):
    """The QL test's prior is estimated from the genes tested together: a second QL call
    on other genes is refused (naming overwrite) rather than mixing two priors."""
    adata, design, genes = data
    kw = dict(design=design, reduced=["x"], test="ql", **QUIET)
    _, out = test_genes(adata, genes[:4], copy=True, **kw)
    before = out.copy()
    with pytest.raises(ValueError, match="overwrite=True"):
        test_genes(out, genes[4:], **kw)
    assert_adata_equal(out, before)


def test_a_test_and_a_fit_under_one_key_do_not_mix(data):
    """A test under a key holding fit_genes results is refused; with overwrite=True nothing
    of the fit is left (its coefficients would sit beside the test's columns)."""
    adata, design, genes = data
    out = fit_genes(adata, genes[:2], design=design, reg_lambda=LAM, copy=True, **QUIET)
    kw = dict(design=design, reduced=["x"], key_added="stglm", **QUIET)
    with pytest.raises(ValueError, match="overwrite"):
        test_genes(out, genes[:2], **kw)
    test_genes(out, genes[:2], overwrite=True, **kw)
    assert "stglm_coef" not in out.varm and "stglm_intercept" not in out.var
    assert list(out.uns["stglm"]["genes"]) == genes[:2]
    with pytest.raises(ValueError, match="overwrite"):
        fit_genes(out, genes[:2], design=design, reg_lambda=LAM, **QUIET)
