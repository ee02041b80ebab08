"""Count models (issue 11): log links, offsets, size factors, weights, penalty factors, NB θ.

What is checked here, and against what:

- ``fit_genes`` equals ``GLM`` / ``GLMCV`` fitted gene by gene (offsets (n,) and (n, G),
  size factors, sample weights as an array or obs column, penalty factors, θ fixed / "ml" /
  "cox-reid", poisson / NB / gamma with a log link, fixed λ and CV);
- ``GLMCV``'s batched route (dense, small p) equals its per-fold route (the same X as CSR);
- DESeq2's "poscounts" and the "total" size factors, written out here from their definitions;
- a family defined only in this file (Tweedie, p = 1.5, log link; numpy methods only) fits
  through ``GLM``, ``GLMCV`` and ``fit_genes`` and matches statsmodels;
- θ's edge cases (Poisson-like, all-zero, one-count and strongly overdispersed responses);
- the null model and λ_max with offsets, weights and penalty factors, by hand;
- validation of every new argument, before any work;
- what ``uns[key]['model']`` and ``var['<key>_theta_status']`` record.

``tests/test_statsmodels_results.py`` covers GLM's metamorphic relations (weights ≡ repeated
rows, offset shifts, penalty-factor scaling); they are not repeated here. Every reference
quantity (gradients, scores, size factors, null models) is computed here with NumPy/SciPy.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import assert_adata_equal, nb_theta_score
from scipy import optimize
from scipy.special import gammaln, polygamma
from sklearn.model_selection import KFold

import stglm
import stglm.spatial as S
from stglm import GLM, GLMCV, Family, fit_genes
from stglm._errors import BoundaryWarning
from stglm._families import MeanFunction
from stglm._offsets import size_factors as stglm_size_factors
from stglm.datasets import visium_prostate

#: Solver tolerance of every comparison (relative KKT; see test_fit_genes.TOL).
TOL = 1e-12
#: β agreement, relative to max|β| of the gene; θ agreement, relative.
BETA_RTOL = 1e-8
THETA_RTOL = 1e-6
QUIET = {"progress": False}
#: stglm's bounds on θ (docstring of stglm._dispersion).
THETA_MAX = 1e8
#: The worst relative errors measured by each comparison, printed with ``pytest -s``.
WORST: dict[str, float] = {}


def record(what: str, value: float) -> None:
    WORST[what] = max(WORST.get(what, 0.0), float(value))


@pytest.fixture(scope="module", autouse=True)
def _print_worst():
    yield
    if WORST:
        print("\nworst relative errors measured in test_count_models.py:")
        for key, value in sorted(WORST.items()):
            print(f"  {key:60s} {value:.3g}")


# ---------------------------------------------------------------------------------------------
# independent formulas (log link: μ = exp(z), z = β0 + offset + Xβ)
# ---------------------------------------------------------------------------------------------
def residual(distr, y, mu, theta=None):
    """r = ∂(−ℓ)/∂z for the log link."""
    if distr == "poisson":
        return mu - y
    if distr == "neg-binomial":
        return theta * (mu - y) / (theta + mu)
    if distr == "gamma":
        return 1.0 - y / mu
    raise AssertionError(distr)


def curvature(distr, y, mu, theta=None):
    """∂²(−ℓ)/∂z² for the log link."""
    if distr == "poisson":
        return mu
    if distr == "neg-binomial":
        return mu * theta * (theta + y) / (theta + mu) ** 2
    if distr == "gamma":
        return y / mu
    raise AssertionError(distr)


def nb_loglik(y, mu, theta):
    return (
        gammaln(y + theta)
        - gammaln(theta)
        - gammaln(y + 1)
        + theta * np.log(theta / (theta + mu))
        + np.where(y > 0, y * np.log(np.where(y > 0, mu, 1.0) / (theta + mu)), 0.0)
    )


def nb_theta_information(y, mu, w, theta):
    """−Σ w ∂²ℓ/∂θ² (the observed information of θ at fixed μ)."""
    h = (
        polygamma(1, y + theta)
        - polygamma(1, theta)
        + 1.0 / theta
        - 2.0 / (theta + mu)
        + (y + theta) / (theta + mu) ** 2
    )
    return float(-np.sum(w * h))


def gradient(distr, X, y, beta0, beta, *, offset=None, weight=None, theta=None):
    """(∂/∂β0, ∇_β) of the mean weighted −ℓ, J's smooth loss = −Σwℓ/Σw."""
    w = np.ones_like(y) if weight is None else weight
    o = 0.0 if offset is None else offset
    mu = np.exp(beta0 + o + X @ beta)
    r = w * residual(distr, y, mu, theta)
    return r.sum() / w.sum(), X.T @ r / w.sum()


def kkt(distr, X, y, beta0, beta, *, lam, alpha, factor=None, offset=None, weight=None, theta=None):
    """Largest violation of 0 ∈ ∂J, J = −Σwℓ/Σw + λΣ_j f_j[½(1−α)β_j² + α|β_j|]."""
    f = np.ones(X.shape[1]) if factor is None else np.asarray(factor, dtype=float)
    g0, g = gradient(distr, X, y, beta0, beta, offset=offset, weight=weight, theta=theta)
    g = g + lam * (1 - alpha) * f * beta
    l1 = lam * alpha * f
    viol = np.where(beta != 0, np.abs(g + l1 * np.sign(beta)), np.maximum(np.abs(g) - l1, 0.0))
    return max(float(viol.max(initial=0.0)), abs(g0))


def log_total_offset(counts):
    """log(total / geometric mean of the totals), totals over every gene of the matrix."""
    totals = np.asarray(counts.sum(axis=1), dtype=float).ravel()
    lt = np.log(totals)
    return lt - lt.mean()


def poscounts_reference(counts):
    """DESeq2's ``estimateSizeFactors(type="poscounts")``, written from its definition.

    Per gene the log geometric mean of its positive counts over all n cells,
    lgm = Σ_{y>0} log y / n (genes without counts are left out); per cell the median over
    its positive genes of log y − lgm; the size factors divided by their geometric mean.
    """
    Y = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    Y = Y.astype(float)
    n = Y.shape[0]
    with np.errstate(divide="ignore"):
        logY = np.where(Y > 0, np.log(np.where(Y > 0, Y, 1.0)), 0.0)
    lgm = logY.sum(axis=0) / n
    log_sf = np.empty(n)
    for i in range(n):
        pos = Y[i] > 0
        log_sf[i] = np.median(logY[i, pos] - lgm[pos])
    sf = np.exp(log_sf)
    return sf / np.exp(np.mean(np.log(sf)))


def rel_err(got, ref, scale=None):
    got, ref = np.atleast_1d(np.asarray(got, float)), np.atleast_1d(np.asarray(ref, float))
    s = np.abs(ref).max(initial=0.0) if scale is None else scale
    return float(np.abs(got - ref).max(initial=0.0) / max(s, 1e-300))


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def visium():
    """Every third spot (776) of the bundled data, with weights, an exposure and a layer > 0."""
    adata = visium_prostate()[::3].copy()
    rng = np.random.default_rng(11)
    n = adata.n_obs
    w = rng.uniform(0.25, 2.0, n)
    w[::23] = 0.0  # some samples left out entirely
    adata.obs["w"] = w
    adata.obs["log_exposure"] = rng.normal(0.0, 0.25, n)
    adata.obs["sf"] = np.exp(rng.normal(0.0, 0.3, n))
    adata.obs["label"] = "a"  # a non-numeric column
    adata.layers["shifted"] = sp.csr_matrix(adata.X.toarray() + 0.5)  # gamma responses > 0
    return adata


@pytest.fixture(scope="module")
def design(visium):
    """Standardised coordinates and the section (a 0/1 covariate, left unpenalised)."""
    coords = S.coordinates(visium)
    section = (visium.obs["list_ID"] == "CP").astype(float).rename("section")
    return pd.concat([coords, section], axis=1)


@pytest.fixture(scope="module")
def genes(visium):
    """16 random genes with at least 30 counts in the subset, and one with 3–10.

    Each has counts in both sections: the section's coefficient is left unpenalised in some
    tests, and a gene absent from one section has no finite optimum there.
    """
    cp = (visium.obs["list_ID"] == "CP").to_numpy()
    per_section = [np.asarray(visium.X[rows].sum(axis=0)).ravel() for rows in (cp, ~cp)]
    totals = per_section[0] + per_section[1]
    both = (per_section[0] > 0) & (per_section[1] > 0)
    rng = np.random.default_rng(0)
    picked = rng.choice(np.flatnonzero(both & (totals >= 30)), 16, replace=False)
    low = np.flatnonzero(both & (totals >= 3) & (totals <= 10))[:1]
    return list(visium.var_names[np.concatenate([picked, low])])


@pytest.fixture(scope="module")
def gene_offsets(visium, genes):
    """An (n, G) offset: log total plus gene-specific noise."""
    rng = np.random.default_rng(5)
    return log_total_offset(visium.X)[:, None] + rng.normal(0.0, 0.2, (visium.n_obs, len(genes)))


def gene_column(adata, gene, layer=None):
    matrix = adata.X if layer is None else adata.layers[layer]
    col = matrix[:, [adata.var_names.get_loc(gene)]]
    col = col.toarray() if sp.issparse(col) else np.asarray(col)
    return col.astype(np.float64).ravel()


def stored(out, gene, key="stglm"):
    """(intercept, coefficients, θ, θ status) of a gene as fit_genes stored them."""
    var = out.var.loc[gene]
    return (
        float(var[f"{key}_intercept"]),
        out.varm[f"{key}_coef"].loc[gene].to_numpy(),
        float(var[f"{key}_theta"]),
        str(var[f"{key}_theta_status"]),
    )


def assert_same_gene(out, gene, ref, what, check_theta=True):
    """fit_genes' result for ``gene`` equals the single fit ``ref`` (GLM or GLMCV)."""
    b0, b, theta, status = stored(out, gene)
    scale = np.abs(ref.beta_).max(initial=0.0)
    err_b = rel_err(b, ref.beta_, scale)
    err_0 = abs(b0 - ref.beta0_) / max(abs(ref.beta0_), scale)
    if scale < 1e-8:  # every coefficient 0 to solver tolerance (λ_max): compare absolutely
        err_b = float(np.abs(b - ref.beta_).max())
    assert err_b <= BETA_RTOL, (what, gene, err_b)
    assert err_0 <= BETA_RTOL, (what, gene, "intercept", b0, ref.beta0_)
    record(f"{what}: beta", err_b)
    record(f"{what}: intercept", err_0)
    if check_theta and ref.distr == "neg-binomial":
        err_t = abs(theta / ref.theta_ - 1.0)
        assert err_t <= THETA_RTOL, (what, gene, theta, ref.theta_)
        assert status == ref.theta_status_, (what, gene, status, ref.theta_status_)
        record(f"{what}: theta", err_t)


# ---------------------------------------------------------------------------------------------
# 1. fit_genes equals GLM gene by gene (fixed λ)
# ---------------------------------------------------------------------------------------------
FIXED_CASES = {
    "poisson-offset": dict(params=dict(distr="poisson"), offset="n"),
    "poisson-gene-offset": dict(params=dict(distr="poisson"), offset="nG"),
    "poisson-total-weights": dict(params=dict(distr="poisson"), sf="total", weight="array"),
    "poisson-factor-0": dict(
        params=dict(distr="poisson", alpha=0.9, penalty_factor=[1.0, 2.0, 0.0]), sf="total"
    ),
    "nb-fixed-total": dict(params=dict(distr="neg-binomial", theta=2.0), sf="total"),
    "nb-fixed-gene-offset": dict(params=dict(distr="neg-binomial", theta=0.7), offset="nG"),
    "nb-ml-obs-offset": dict(
        params=dict(distr="neg-binomial", theta="ml"), offset="obs", sf="total"
    ),
    "nb-cox-reid-gene-offset": dict(
        params=dict(distr="neg-binomial", theta="cox-reid"), offset="nG"
    ),
    "nb-ml-obs-columns": dict(
        params=dict(distr="neg-binomial", theta="ml"), offset="obs", weight="obs", sf="total"
    ),
    "nb-ml-unpenalised": dict(
        params=dict(distr="neg-binomial", theta="ml", reg_lambda=0.0), sf="total"
    ),
    "nb-cox-reid-factor-0": dict(
        params=dict(distr="neg-binomial", theta="cox-reid", penalty_factor=[1.0, 1.0, 0.0]),
        sf="total",
        weight="array",
    ),
    "gamma-offset": dict(params=dict(distr="gamma"), offset="n", layer="shifted"),
}


def case_inputs(case, visium, gene_offsets):
    """fit_genes' keyword arguments, and each gene's GLM offset and weights (by gene index)."""
    kw, log_sf = {}, np.zeros(visium.n_obs)
    extra = None
    if case.get("sf") == "total":
        kw["size_factors"] = "total"
        log_sf = log_total_offset(visium.X)  # all genes of the matrix
    offset = case.get("offset")
    if offset == "n":
        extra = np.random.default_rng(2).normal(0.0, 0.3, visium.n_obs)
        kw["offset"] = extra
    elif offset == "nG":
        extra = gene_offsets
        kw["offset"] = extra
    elif offset == "obs":
        kw["offset"] = "log_exposure"
        extra = visium.obs["log_exposure"].to_numpy()
    weight = visium.obs["w"].to_numpy()
    if case.get("weight") == "array":
        kw["sample_weight"] = weight
    elif case.get("weight") == "obs":
        kw["sample_weight"] = "w"
    else:
        weight = None

    def glm_offset(i):
        if extra is None:
            return log_sf
        return log_sf + (extra[:, i] if extra.ndim == 2 else extra)

    return kw, glm_offset, weight


@pytest.mark.parametrize("name", list(FIXED_CASES))
def test_fixed_lambda_fit_genes_equals_glm_per_gene(visium, design, genes, gene_offsets, name):
    case = FIXED_CASES[name]
    params = {"link": "log", "reg_lambda": 0.01, **case["params"]}
    layer = case.get("layer")
    kw, glm_offset, weight = case_inputs(case, visium, gene_offsets)
    out = fit_genes(
        visium, genes, design=design, tol=TOL, clip_coeffs=0, layer=layer, copy=True,
        **params, **kw, **QUIET,
    )  # fmt: skip
    X = design.to_numpy()
    for i, gene in enumerate(genes):
        y = gene_column(visium, gene, layer)
        ref = GLM(tol=TOL, clip_coeffs=0, verbose=False, **params)
        ref.fit(X, y, sample_weight=weight, offset=glm_offset(i))
        assert ref.converged_
        assert_same_gene(out, gene, ref, f"fixed λ {name}")
    var = out.var.loc[genes]
    assert (var["stglm_status"] == "ok").all() and var["stglm_converged"].all()
    if params["distr"] == "neg-binomial" and not isinstance(params["theta"], str):
        assert (var["stglm_theta"] == params["theta"]).all()
        assert (var["stglm_theta_status"] == "fixed").all()
    if params["distr"] != "neg-binomial":
        assert var["stglm_theta"].isna().all() and (var["stglm_theta_status"] == "").all()


# ---------------------------------------------------------------------------------------------
# 1b. fit_genes' CV equals GLMCV gene by gene (same folds, same path length)
# ---------------------------------------------------------------------------------------------
CV_CASES = {
    "poisson-offset": dict(params=dict(distr="poisson"), offset="n"),
    "poisson-total-weights-obs": dict(params=dict(distr="poisson"), sf="total", weight="obs"),
    "poisson-offset-factor-0": dict(
        params=dict(distr="poisson", penalty_factor=[1.0, 1.0, 0.0]), offset="n"
    ),
    "nb-fixed-offset": dict(params=dict(distr="neg-binomial", theta=2.0), offset="n"),
    "nb-ml-total": dict(params=dict(distr="neg-binomial", theta="ml"), sf="total"),
}


@pytest.mark.parametrize("name", list(CV_CASES))
def test_cv_fit_genes_equals_glmcv_per_gene(visium, design, genes, gene_offsets, name):
    case = CV_CASES[name]
    seed, n_folds = 5, 3
    params = {
        "link": "log", "reg_lambda": None, "n_lambdas": 6, "random_seed": seed, **case["params"]
    }  # fmt: skip
    kw, glm_offset, weight = case_inputs(case, visium, gene_offsets)
    names = genes[:6]
    out = fit_genes(
        visium, names, design=design, cv=n_folds, tol=TOL, clip_coeffs=0, copy=True,
        **params, **kw, **QUIET,
    )  # fmt: skip
    X = design.to_numpy()
    folds = KFold(n_folds, shuffle=True, random_state=seed)  # fit_genes' documented folds
    for i, gene in enumerate(names):
        y = gene_column(visium, gene)
        ref = GLMCV(cv=folds, tol=TOL, clip_coeffs=0, verbose=False, **params)
        ref.fit(X, y, sample_weight=weight, offset=glm_offset(i))
        row = out.var.loc[gene]
        err_l = abs(row["stglm_lambda"] / ref.reg_lambda_opt_ - 1.0)
        record(f"cv {name}: chosen lambda", err_l)
        assert err_l <= 1e-10, (gene, "chosen λ", row["stglm_lambda"], ref.reg_lambda_opt_)
        np.testing.assert_allclose(
            row["stglm_score"], ref.scores_[ref.best_index_], rtol=1e-8, err_msg=gene
        )
        assert_same_gene(out, gene, ref, f"cv {name}")


LMAX_GENES_CASES = {
    "poisson-offset": (dict(distr="poisson", link="log"), "n"),
    "poisson-weights-obs": (dict(distr="poisson", link="log"), "w"),
    "poisson-offset-factor-0": (
        dict(distr="poisson", link="log", penalty_factor=[1.0, 1.0, 0.0]),
        "n",
    ),
    "nb-fixed-offset": (dict(distr="neg-binomial", link="log", theta=2.0), "n"),
    "nb-ml-offset": (dict(distr="neg-binomial", link="log", theta="ml"), "n"),
    "tweedie-offset": (dict(distr="tweedie"), "n"),  # the family of section 4
}


@pytest.mark.parametrize("name", list(LMAX_GENES_CASES))
def test_fit_genes_lambda_max_equals_glmcv(visium, design, genes, name):
    """With ``n_lambdas=1`` the path is λ_max alone: fit_genes' equals GLMCV's, gene by gene."""
    params, data = LMAX_GENES_CASES[name]
    if params["distr"] == "tweedie":
        params = {**params, "distr": Tweedie()}
    names = genes[:6]
    offset = np.random.default_rng(2).normal(0.0, 0.3, visium.n_obs) if data == "n" else None
    weight = visium.obs["w"].to_numpy() if data == "w" else None
    kw = dict(reg_lambda=None, n_lambdas=1, tol=TOL, clip_coeffs=0, **params)
    sample_weight = None if weight is None else "w"
    out = fit_genes(visium, names, design=design, cv=3, offset=offset, size_factors=None,
                    sample_weight=sample_weight, copy=True, **kw, **QUIET)  # fmt: skip
    X = design.to_numpy()
    for gene in names:
        ref = GLMCV(cv=3, verbose=False, **kw)
        ref.fit(X, gene_column(visium, gene), sample_weight=weight, offset=offset)
        err = abs(out.var.loc[gene, "stglm_lambda"] / ref.reg_lambda_path_[0] - 1.0)
        record(f"fit_genes lambda_max {name}", err)
        assert err <= 1e-10, (gene, out.var.loc[gene, "stglm_lambda"], ref.reg_lambda_path_[0])


# ---------------------------------------------------------------------------------------------
# 2. GLMCV: the batched route equals the per-fold route
# ---------------------------------------------------------------------------------------------
def synthetic(distr, n=300, seed=3, theta=1.5):
    """X with a 0/1 column, an offset, weights with zeros, y from the family (log link)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    X[:, 3] = rng.random(n) < 0.4
    offset = rng.normal(0.0, 0.3, n)
    mu = np.exp(0.4 + offset + X @ np.array([0.3, -0.2, 0.0, 0.6]))
    if distr == "poisson":
        y = rng.poisson(mu)
    elif distr == "neg-binomial":
        y = rng.negative_binomial(theta, theta / (theta + mu))
    else:
        y = rng.gamma(2.0, mu / 2.0)
    w = rng.uniform(0.2, 2.0, n)
    w[::29] = 0.0
    return X, y.astype(float), offset, w


ROUTE_CASES = {
    "poisson": dict(distr="poisson"),
    "nb-fixed": dict(distr="neg-binomial", theta=1.5),
    "nb-ml": dict(distr="neg-binomial", theta="ml"),
    "nb-cox-reid": dict(distr="neg-binomial", theta="cox-reid"),
    "gamma": dict(distr="gamma"),
}


@pytest.mark.parametrize("name", list(ROUTE_CASES))
def test_glmcv_batched_route_equals_per_fold_route(name):
    params = ROUTE_CASES[name]
    X, y, offset, w = synthetic(params["distr"])
    kw = dict(
        link="log", n_lambdas=6, cv=3, penalty_factor=[1.0, 0.5, 1.0, 0.0], tol=TOL,
        clip_coeffs=0, verbose=False, **params,
    )  # fmt: skip
    dense = GLMCV(**kw).fit(X, y, sample_weight=w, offset=offset)
    per_fold = GLMCV(**kw).fit(sp.csr_matrix(X), y, sample_weight=w, offset=offset)
    assert not dense._batchable(sp.csr_matrix(X), 3) and dense._batchable(X, 3)
    np.testing.assert_allclose(per_fold.reg_lambda_path_, dense.reg_lambda_path_, rtol=1e-12)
    err_cv = rel_err(per_fold.cv_scores_, dense.cv_scores_)
    record(f"routes {name}: cv_scores", err_cv)
    assert err_cv <= 1e-8, err_cv  # θ's alternation stops at a relative change of 1e-8
    assert per_fold.best_index_ == dense.best_index_
    scale = np.abs(dense.coef_path_).max()
    err_path = rel_err(per_fold.coef_path_, dense.coef_path_, scale)
    record(f"routes {name}: coef_path", err_path)
    assert err_path <= BETA_RTOL, err_path
    err_icpt = rel_err(per_fold.intercept_path_, dense.intercept_path_)
    assert err_icpt <= BETA_RTOL, err_icpt
    err_b = rel_err(per_fold.beta_, dense.beta_)
    record(f"routes {name}: beta", err_b)
    assert err_b <= BETA_RTOL and abs(per_fold.beta0_ - dense.beta0_) <= 1e-8 * abs(dense.beta0_)
    err_t = rel_err(per_fold.theta_path_, dense.theta_path_)
    record(f"routes {name}: theta_path", err_t)
    assert err_t <= THETA_RTOL, (per_fold.theta_path_, dense.theta_path_)
    assert per_fold.theta_ == pytest.approx(dense.theta_, rel=THETA_RTOL)
    assert per_fold.theta_status_ == dense.theta_status_
    if isinstance(params.get("theta"), str):  # θ really varies along the path
        assert np.ptp(np.log(dense.theta_path_)) > 1e-3
    # the refit is optimal (KKT by hand, with its own θ)
    theta = dense.theta_ if params["distr"] == "neg-binomial" else None
    res = kkt(
        params["distr"], X, y, dense.beta0_, dense.beta_, lam=dense.reg_lambda_opt_, alpha=0.5,
        factor=kw["penalty_factor"], offset=offset, weight=w, theta=theta,
    )  # fmt: skip
    assert res < 1e-9, res


# ---------------------------------------------------------------------------------------------
# 3. size factors, from their definitions
# ---------------------------------------------------------------------------------------------
def test_poscounts_by_hand_on_a_small_matrix():
    """3 cells × 4 genes, one gene without counts: DESeq2's numbers worked out by hand."""
    Y = np.array([[1.0, 4.0, 0.0, 0.0], [2.0, 0.0, 0.0, 8.0], [4.0, 1.0, 0.0, 2.0]])
    lgm = np.array([np.log(8.0), np.log(4.0), 0.0, np.log(16.0)]) / 3  # Σ log y⁺ / n
    log_sf = np.array(
        [
            np.median([0.0 - lgm[0], np.log(4.0) - lgm[1]]),
            np.median([np.log(2.0) - lgm[0], np.log(8.0) - lgm[3]]),
            np.median([np.log(4.0) - lgm[0], 0.0 - lgm[1], np.log(2.0) - lgm[3]]),
        ]
    )
    expected = np.exp(log_sf - log_sf.mean())
    np.testing.assert_allclose(poscounts_reference(Y), expected, rtol=1e-14)
    for matrix in (Y, sp.csr_matrix(Y), sp.csc_matrix(Y)):
        np.testing.assert_allclose(stglm_size_factors(matrix, "poscounts"), expected, rtol=1e-13)
    totals = Y.sum(axis=1)
    np.testing.assert_allclose(
        stglm_size_factors(Y, "total"), totals / np.exp(np.log(totals).mean()), rtol=1e-14
    )


def test_size_factors_on_visium_equal_their_definitions(visium):
    ref_pos = poscounts_reference(visium.X)
    got_pos = stglm_size_factors(visium.X, "poscounts")
    record("size factors: poscounts", rel_err(got_pos / ref_pos, np.ones_like(ref_pos), 1.0))
    np.testing.assert_allclose(got_pos, ref_pos, rtol=1e-12)
    ref_tot = np.exp(log_total_offset(visium.X))
    np.testing.assert_allclose(stglm_size_factors(visium.X, "total"), ref_tot, rtol=1e-12)
    # the two estimators really differ on these zero-heavy spots, and both have geometric mean 1
    assert np.abs(np.log(ref_pos / ref_tot)).max() > 0.05
    assert abs(np.log(got_pos).mean()) < 1e-12


@pytest.mark.parametrize("distr", ["poisson", "neg-binomial"])
def test_fit_genes_poscounts_equals_glm_with_its_offset(visium, design, genes, distr):
    params = dict(distr=distr, link="log", reg_lambda=0.01)
    if distr == "neg-binomial":
        params["theta"] = "ml"
    names = genes[:10]
    out = fit_genes(
        visium, names, design=design, size_factors="poscounts", tol=TOL, clip_coeffs=0,
        copy=True, **params, **QUIET,
    )  # fmt: skip
    offset = np.log(poscounts_reference(visium.X))
    X = design.to_numpy()
    for gene in names:
        ref = GLM(tol=TOL, clip_coeffs=0, verbose=False, **params)
        ref.fit(X, gene_column(visium, gene), offset=offset)
        assert_same_gene(out, gene, ref, f"poscounts {distr}")
    assert out.uns["stglm"]["model"]["offset"] == "log size factors (poscounts)"


def test_size_factors_given_and_added_to_an_offset(visium, design, genes):
    """An obs column (or array) of size factors adds log s; with an offset the two add up."""
    params = dict(distr="poisson", link="log", reg_lambda=0.01, tol=TOL, clip_coeffs=0)
    names = genes[:5]
    sf = visium.obs["sf"].to_numpy()
    a = fit_genes(visium, names, design=design, size_factors="sf", offset="log_exposure",
                  copy=True, **params, **QUIET)  # fmt: skip
    b = fit_genes(visium, names, design=design, offset=np.log(sf) + visium.obs["log_exposure"],
                  copy=True, **params, **QUIET)  # fmt: skip
    c = fit_genes(visium, names, design=design, size_factors=sf, offset="log_exposure",
                  copy=True, **params, **QUIET)  # fmt: skip
    for other in (b, c):
        np.testing.assert_allclose(
            other.varm["stglm_coef"].loc[names], a.varm["stglm_coef"].loc[names], rtol=1e-10
        )
        np.testing.assert_allclose(
            other.var.loc[names, "stglm_intercept"], a.var.loc[names, "stglm_intercept"],
            rtol=1e-10,
        )  # fmt: skip
    assert a.uns["stglm"]["model"]["offset"] == "log size factors (obs['sf']) + obs['log_exposure']"
    assert c.uns["stglm"]["model"]["offset"] == "log size factors (array) + obs['log_exposure']"


# ---------------------------------------------------------------------------------------------
# 4. a family defined only here: Tweedie (p = 1.5, log link), numpy methods only
# ---------------------------------------------------------------------------------------------
class Tweedie(Family):
    """Tweedie quasi-likelihood, V(μ) = μ^p, log link: ℓ = yμ^{1−p}/(1−p) − μ^{2−p}/(2−p)."""

    name = "tweedie"
    mean_function = MeanFunction("exp")  # e^z exactly (η = ∞)
    likelihood_code = None  # no compiled kernel: the solvers use the methods below

    def __init__(self, power: float = 1.5):
        self.power = float(power)

    def loglik(self, y, mu):
        p = self.power
        return y * mu ** (1 - p) / (1 - p) - mu ** (2 - p) / (2 - p)

    def saturated_loglik(self, y):
        p = self.power
        y = np.asarray(y, dtype=float)
        return y ** (2 - p) * (1 / (1 - p) - 1 / (2 - p))  # 0 at y = 0

    def nll_dmu(self, y, mu):
        return mu ** (-self.power) * (mu - y)

    def nll_dmu2(self, y, mu):
        p = self.power
        return (1 - p) * mu ** (-p) + p * y * mu ** (-p - 1)

    def fisher_dmu2(self, mu):
        return mu ** (-self.power)

    def check_y(self, y):
        if np.any(np.asarray(y) < 0):
            raise ValueError("y must be non-negative for the Tweedie family.")


def tweedie_data(n=400, seed=4):
    """Compound Poisson–gamma responses with V(y) = φμ^1.5 (φ = 1), exact zeros included."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    offset = rng.normal(0.0, 0.2, n)
    mu = np.exp(0.5 + offset + X @ np.array([0.4, -0.3, 0.1]))
    p, phi = 1.5, 1.0
    counts = rng.poisson(mu ** (2 - p) / (phi * (2 - p)))
    shape, scale = (2 - p) / (p - 1), phi * (p - 1) * mu ** (p - 1)
    y = np.array(
        [rng.gamma(shape * k, s) if k else 0.0 for k, s in zip(counts, scale, strict=True)]
    )
    w = rng.uniform(0.5, 2.0, n)
    return X, y, offset, w


def tweedie_kkt(X, y, beta0, beta, *, lam, alpha, offset, weight):
    mu = np.exp(beta0 + offset + X @ beta)
    r = weight * mu ** (-0.5) * (mu - y)  # μ'·∂(−ℓ)/∂μ with μ' = μ
    g0, g = r.sum() / weight.sum(), X.T @ r / weight.sum() + lam * (1 - alpha) * beta
    l1 = lam * alpha
    viol = np.where(beta != 0, np.abs(g + l1 * np.sign(beta)), np.maximum(np.abs(g) - l1, 0.0))
    return max(float(viol.max()), abs(g0))


def statsmodels_tweedie(X, y, offset, weight):
    sm = pytest.importorskip("statsmodels.api")
    family = sm.families.Tweedie(var_power=1.5, link=sm.families.links.Log())
    model = sm.GLM(y, sm.add_constant(X), family=family, offset=offset, var_weights=weight)
    return model.fit(tol=1e-14, maxiter=200).params


def test_tweedie_family_through_glm_matches_statsmodels():
    X, y, offset, w = tweedie_data()
    assert (y == 0).any() and (y > 0).any()
    fam = Tweedie()
    assert fam.kernel is None
    m = GLM(distr=fam, reg_lambda=0.0, tol=TOL, clip_coeffs=0, verbose=False)
    m.fit(X, y, sample_weight=w, offset=offset)
    ref = statsmodels_tweedie(X, y, offset, w)
    err = rel_err(np.r_[m.beta0_, m.beta_], ref)
    record("tweedie GLM vs statsmodels (unpenalised)", err)
    assert err <= 1e-6, (np.r_[m.beta0_, m.beta_], ref)
    assert tweedie_kkt(X, y, m.beta0_, m.beta_, lam=0.0, alpha=0.5, offset=offset, weight=w) < 1e-9
    # penalised: the KKT conditions by hand; the prediction is the family's mean
    pen = GLM(distr=fam, reg_lambda=0.05, alpha=0.7, tol=TOL, clip_coeffs=0, verbose=False)
    pen.fit(X, y, sample_weight=w, offset=offset)
    res = tweedie_kkt(X, y, pen.beta0_, pen.beta_, lam=0.05, alpha=0.7, offset=offset, weight=w)
    assert res < 1e-9, res
    assert (pen.beta_ == 0).any() or np.abs(pen.beta_).sum() < np.abs(m.beta_).sum()
    np.testing.assert_allclose(
        pen.predict(X, offset=offset), np.exp(pen.beta0_ + offset + X @ pen.beta_), rtol=1e-12
    )


def test_tweedie_family_through_glmcv_both_routes():
    X, y, offset, w = tweedie_data()
    kw = dict(distr=Tweedie(), n_lambdas=6, cv=3, tol=TOL, clip_coeffs=0, verbose=False)
    dense = GLMCV(**kw).fit(X, y, sample_weight=w, offset=offset)
    per_fold = GLMCV(**kw).fit(sp.csr_matrix(X), y, sample_weight=w, offset=offset)
    np.testing.assert_allclose(per_fold.reg_lambda_path_, dense.reg_lambda_path_, rtol=1e-12)
    np.testing.assert_allclose(per_fold.cv_scores_, dense.cv_scores_, rtol=1e-9)
    assert per_fold.best_index_ == dense.best_index_
    np.testing.assert_allclose(per_fold.beta_, dense.beta_, rtol=1e-8, atol=1e-12)
    lam = dense.reg_lambda_opt_
    res = tweedie_kkt(X, y, dense.beta0_, dense.beta_, lam=lam, alpha=0.5, offset=offset, weight=w)
    assert res < 1e-9, res
    # λ_max zeroes β (first λ of the path) and a slightly smaller λ does not
    assert np.abs(dense.coef_path_[0]).max() <= 1e-10
    assert np.abs(dense.coef_path_[1]).max() > 1e-6
    # the CV deviance is the family's: 2Σw(ℓ(y, y) − ℓ(y, μ)) on the held-out samples
    train, test = dense.folds_[0]
    fold = GLM(
        distr=Tweedie(), reg_lambda=dense.reg_lambda_path_[2], tol=TOL, clip_coeffs=0, verbose=False
    ).fit(X[train], y[train], sample_weight=w[train], offset=offset[train])
    mu = np.exp(fold.beta0_ + offset[test] + X[test] @ fold.beta_)
    yt = y[test]
    saturated, ll = -4.0 * yt**0.5, -2.0 * yt * mu**-0.5 - 2.0 * mu**0.5
    dev = 2.0 * np.sum(w[test] * (saturated - ll))
    np.testing.assert_allclose(dense.cv_scores_[0, 2], dev, rtol=1e-7)


def test_tweedie_family_through_fit_genes(visium, design, genes):
    names = genes[:6]
    offset = log_total_offset(visium.X)
    kw = dict(distr=Tweedie(), tol=TOL, clip_coeffs=0)
    out = fit_genes(visium, names, design=design, reg_lambda=0.01, size_factors="total",
                    copy=True, **kw, **QUIET)  # fmt: skip
    unpen = fit_genes(visium, names, design=design, reg_lambda=0.0, size_factors="total",
                      copy=True, **kw, **QUIET)  # fmt: skip
    X = design.to_numpy()
    ones = np.ones(visium.n_obs)
    for gene in names:
        y = gene_column(visium, gene)
        ref = GLM(reg_lambda=0.01, verbose=False, **kw).fit(X, y, offset=offset)
        assert_same_gene(out, gene, ref, "tweedie fit_genes vs GLM")
        b0, b, _, _ = stored(out, gene)
        assert tweedie_kkt(X, y, b0, b, lam=0.01, alpha=0.5, offset=offset, weight=ones) < 1e-9
        b0, b, _, _ = stored(unpen, gene)
        err = rel_err(np.r_[b0, b], statsmodels_tweedie(X, y, offset, ones))
        record("tweedie fit_genes vs statsmodels (unpenalised)", err)
        assert err <= 1e-6, gene
    model = out.uns["stglm"]["model"]
    assert model["family"] == "tweedie" and model["link"] == "log" and model["theta"] == "none"
    assert out.var.loc[names, "stglm_theta"].isna().all()
    # CV without offset (with one, fit_genes' λ_max differs: test_fit_genes_lambda_max_*)
    cv = fit_genes(visium, names[:3], design=design, reg_lambda=None, n_lambdas=5, cv=3,
                   size_factors=None, copy=True, **kw, **QUIET)  # fmt: skip
    for gene in names[:3]:
        ref = GLMCV(n_lambdas=5, cv=KFold(3, shuffle=True, random_state=888), verbose=False, **kw)
        ref.fit(X, gene_column(visium, gene))
        assert cv.var.loc[gene, "stglm_lambda"] == pytest.approx(ref.reg_lambda_opt_, rel=1e-10)
        assert_same_gene(cv, gene, ref, "tweedie fit_genes CV vs GLMCV")


# ---------------------------------------------------------------------------------------------
# 5. θ's edge cases
# ---------------------------------------------------------------------------------------------
def underdispersed(n=2000, seed=8):
    """Binomial(8, μ/8) counts: variance < mean, so the NB likelihood rises to θ = ∞."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    offset = rng.normal(0.0, 0.2, n)
    mu = np.exp(0.3 + offset + X @ np.array([0.3, -0.2]))
    return X, rng.binomial(8, np.minimum(mu / 8, 1.0)).astype(float), offset


@pytest.mark.parametrize("method", ["ml", "cox-reid"])
def test_poisson_like_response_puts_theta_at_its_upper_bound(method):
    X, y, offset = underdispersed()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning of any kind
        nb = GLM(distr="neg-binomial", link="log", theta=method, reg_lambda=0.0, tol=TOL,
                 clip_coeffs=0, verbose=False).fit(X, y, offset=offset)  # fmt: skip
        pois = GLM(distr="poisson", link="log", reg_lambda=0.0, tol=TOL, clip_coeffs=0,
                   verbose=False).fit(X, y, offset=offset)  # fmt: skip
    assert nb.theta_status_ == "theta at upper bound" and nb.theta_ == THETA_MAX
    assert np.isfinite(nb.beta_).all() and np.isfinite(nb.beta0_)
    err = rel_err(np.r_[nb.beta0_, nb.beta_], np.r_[pois.beta0_, pois.beta_])
    record(f"Poisson-like NB ({method}) vs Poisson", err)
    assert err < 1e-6, err
    # the θ score is positive at the bound: no interior maximum (ML case)
    if method == "ml":
        mu = np.exp(nb.beta0_ + offset + X @ nb.beta_)
        assert nb_theta_score(y, mu, np.ones_like(y), 1e6) > 0


def edge_adata(seed=9):
    """Genes: Poisson-like, strongly overdispersed (θ = 0.1), all zeros, one count, ordinary."""
    rng = np.random.default_rng(seed)
    n = 1500
    X = rng.normal(size=(n, 2))
    mu = np.exp(0.8 + X @ np.array([0.4, -0.3]))
    cols = {
        "poissonlike": rng.binomial(12, np.minimum(mu / 12, 1.0)),
        "overdispersed": rng.negative_binomial(0.1, 0.1 / (0.1 + mu)),
        "allzero": np.zeros(n, dtype=int),
        "onecount": np.eye(1, n, 17, dtype=int).ravel(),
        "ordinary": rng.negative_binomial(3.0, 3.0 / (3.0 + mu)),
    }
    adata = ad.AnnData(
        sp.csr_matrix(np.column_stack(list(cols.values())).astype(np.float32)),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
        var=pd.DataFrame(index=list(cols)),
    )
    return adata, pd.DataFrame(X, index=adata.obs_names, columns=["x1", "x2"])


@pytest.mark.parametrize("method", ["ml", "cox-reid"])
@pytest.mark.parametrize("reg_lambda", [0.02, None], ids=["fixed", "cv"])
def test_fit_genes_theta_edge_cases(method, reg_lambda):
    adata, design = edge_adata()
    if method == "cox-reid" and reg_lambda is None:
        # The one-count gene's Cox–Reid fits on its training folds take ~1,000 Newton
        # iterations per θ round (73 s): test_one_count_training_fold_converges_quickly.
        adata = adata[:, adata.var_names != "onecount"].copy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fit_genes(
            adata, design=design, distr="neg-binomial", link="log", theta=method,
            reg_lambda=reg_lambda, n_lambdas=5, cv=3, tol=TOL, clip_coeffs=0, copy=True,
            size_factors=None, **QUIET,
        )  # fmt: skip
    # (a CV choice at the path's end warns too: not a θ edge case, so not counted here)
    messages = [str(w.message) for w in caught if not issubclass(w.category, BoundaryWarning)]
    if reg_lambda is None and "onecount" in adata.var_names:
        # the one-count gene's count falls in one held-out fold: one documented warning
        assert len(messages) == 1 and "1 genes have a training fold without counts" in messages[0]
    else:
        assert messages == []  # no warning storm, nor a single warning
    var = out.var
    status, tstatus = var["stglm_status"], var["stglm_theta_status"]
    # all zeros: not fitted, NaN results with their reason
    assert status["allzero"] == "all zeros" and tstatus["allzero"] == ""
    assert np.isnan(var.loc["allzero", ["stglm_intercept", "stglm_theta"]].astype(float)).all()
    assert out.varm["stglm_coef"].loc["allzero"].isna().all()
    fitted = [
        g for g in ("poissonlike", "overdispersed", "onecount", "ordinary") if g in adata.var_names
    ]
    if reg_lambda is None and "onecount" in fitted:
        assert status["onecount"] == "fold without counts"
        assert (status[[g for g in fitted if g != "onecount"]] == "ok").all()
    else:
        assert (status[fitted] == "ok").all()
    assert np.isfinite(out.varm["stglm_coef"].loc[fitted].to_numpy()).all()
    assert np.isfinite(var.loc[fitted, ["stglm_intercept", "stglm_theta"]].to_numpy(float)).all()
    assert tstatus["poissonlike"] == "theta at upper bound"
    assert var.loc["poissonlike", "stglm_theta"] == THETA_MAX
    assert tstatus["overdispersed"] == "converged" and tstatus["ordinary"] == "converged"
    if "onecount" in fitted:
        assert tstatus["onecount"] in ("theta at upper bound", "converged", "theta at lower bound")
    assert set(tstatus[fitted]) <= {"converged", "theta at upper bound", "theta at lower bound"}
    if reg_lambda is not None:  # every fitted gene equals its own GLM
        X = design.to_numpy()
        for gene in fitted:
            ref = GLM(distr="neg-binomial", link="log", theta=method, reg_lambda=reg_lambda,
                      tol=TOL, clip_coeffs=0, verbose=False)  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                ref.fit(X, gene_column(adata, gene))
            assert_same_gene(out, gene, ref, f"edge genes {method}")


def separated_adata(seed=12):
    """Genes with a section indicator in the design: "onesection" has no count in section 1."""
    rng = np.random.default_rng(seed)
    n = 800
    section = (np.arange(n) >= 500).astype(float)
    x = rng.normal(size=n)
    mu = np.exp(0.5 + 0.4 * x - 0.3 * section)
    y = rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(float)
    cols = {"onesection": np.where(section == 1, 0.0, y), "both": y}
    adata = ad.AnnData(
        np.column_stack(list(cols.values())),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
        var=pd.DataFrame(index=list(cols)),
    )
    design = pd.DataFrame({"section": section, "x": x}, index=adata.obs_names)
    return adata, design


@pytest.mark.parametrize(
    ("distr", "method"), [("neg-binomial", "ml"), ("neg-binomial", "cox-reid"), ("poisson", None)]
)
def test_separated_gene_gets_its_status_and_the_limit_models_theta(distr, method):
    """No count in section 1: the section coefficient runs to −∞ (status "separated"); θ and
    the other coefficients are those of the model fitted to section 0 alone."""
    adata, design = separated_adata()
    theta = method if distr == "neg-binomial" else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fit_genes(adata, design=design, distr=distr, link="log", theta=theta,
                        reg_lambda=0.0, tol=TOL, clip_coeffs=0, size_factors=None, copy=True,
                        **QUIET)  # fmt: skip
    var = out.var
    assert var.loc["onesection", "stglm_status"] == "separated"
    assert var.loc["both", "stglm_status"] == "ok"
    coef = out.varm["stglm_coef"].loc["onesection"]
    assert coef["section"] < -10  # on its way to −∞, finite
    keep = design["section"].to_numpy() == 0
    y = gene_column(adata, "onesection")
    limit = GLM(distr=distr, link="log", theta=theta, reg_lambda=0.0, tol=TOL, clip_coeffs=0,
                verbose=False).fit(design[["x"]].to_numpy()[keep], y[keep])  # fmt: skip
    assert abs(var.loc["onesection", "stglm_intercept"] / limit.beta0_ - 1) < 1e-7
    assert abs(coef["x"] / limit.beta_[0] - 1) < 1e-7
    if distr == "neg-binomial":
        assert var.loc["onesection", "stglm_theta_status"] == "converged"
        rel = abs(var.loc["onesection", "stglm_theta"] / limit.theta_ - 1)
        record(f"separated gene: θ vs the limit model ({method})", rel)
        assert rel < 1e-7
        # The single fit of the full design reaches the same θ.
        full = GLM(distr=distr, link="log", theta=theta, reg_lambda=0.0, tol=TOL, clip_coeffs=0,
                   verbose=False).fit(design.to_numpy(), y)  # fmt: skip
        assert abs(full.theta_ / limit.theta_ - 1) < 1e-7


def test_glm_all_zero_response_with_estimated_theta():
    """GLM on y = 0 with θ "ml": no optimum exists; it says so (status), without NaN β."""
    X = np.random.default_rng(0).normal(size=(200, 2))
    y = np.zeros(200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.filterwarnings("error", category=RuntimeWarning)
        m = GLM(distr="neg-binomial", link="log", theta="ml", reg_lambda=0.1, verbose=False,
                clip_coeffs=0).fit(X, y)  # fmt: skip
    assert m.theta_status_ == "all zeros"
    assert np.isfinite(m.beta_).all() and not m.beta_.any()
    assert m.predict(X).max() < 1e-6


@pytest.mark.parametrize("method", ["ml", "cox-reid"])
def test_one_count_training_fold_converges_quickly(method):
    """A response with a single count (a CV training fold of the edge data's one-count gene):
    θ goes to a bound and β stays finite within a few Newton iterations per θ round.

    ``max_iter=100`` keeps the test short: a healthy fit needs far fewer.
    """
    adata, design = edge_adata()
    X, y = design.to_numpy(), gene_column(adata, "onecount")
    folds = KFold(3, shuffle=True, random_state=888).split(X)
    train = next(tr for tr, _ in folds if y[tr].any())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ConvergenceWarning fails the test
        m = GLM(distr="neg-binomial", link="log", theta=method, reg_lambda=0.002, tol=TOL,
                clip_coeffs=0, max_iter=100, verbose=False).fit(X[train], y[train])  # fmt: skip
    assert m.converged_ and m.n_iter_ < 100, (m.n_iter_, m.theta_, m.theta_status_)
    assert m.theta_status_ in ("theta at upper bound", "theta at lower bound", "converged")
    assert np.isfinite(m.beta0_) and np.isfinite(m.beta_).all()
    assert m.beta0_ == pytest.approx(np.log(1.0 / train.size), abs=0.05)  # μ ≈ Σy/n


@pytest.mark.parametrize("method", ["ml", "cox-reid"])
def test_strong_overdispersion_is_recovered(method):
    """θ = 0.1 on n = 5,000: the estimate within 4 standard errors, its score 0 by hand."""
    rng = np.random.default_rng(21)
    n, theta = 5000, 0.1
    X = rng.normal(size=(n, 2))
    offset = rng.normal(0.0, 0.3, n)
    mu = np.exp(1.0 + offset + X @ np.array([0.5, -0.3]))
    y = rng.negative_binomial(theta, theta / (theta + mu)).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = GLM(distr="neg-binomial", link="log", theta=method, reg_lambda=0.0, tol=TOL,
                clip_coeffs=0, verbose=False).fit(X, y, offset=offset)  # fmt: skip
    assert m.theta_status_ == "converged"
    mu_hat = np.exp(m.beta0_ + offset + X @ m.beta_)
    se = 1.0 / np.sqrt(nb_theta_information(y, mu_hat, np.ones(n), m.theta_))
    assert abs(m.theta_ - theta) < 4 * se, (m.theta_, se)
    record(f"overdispersed θ ({method}): |θ̂ − 0.1| / SE", abs(m.theta_ - theta) / se)
    np.testing.assert_allclose(m.beta_, [0.5, -0.3], atol=0.15)
    if method == "ml":  # joint stationarity, by hand
        score = nb_theta_score(y, mu_hat, np.ones(n), m.theta_) * m.theta_ / n
        assert abs(score) < 1e-8, score
        g0, g = gradient("neg-binomial", X, y, m.beta0_, m.beta_, offset=offset, theta=m.theta_)
        assert max(abs(g0), np.abs(g).max()) < 1e-9


# ---------------------------------------------------------------------------------------------
# 6. the null model and λ_max
# ---------------------------------------------------------------------------------------------
def newton_fit(distr, X1, y, offset, w, theta=None, iters=60):
    """Unpenalised fit on the columns X1 (intercept included), Newton's method written here."""
    b = np.zeros(X1.shape[1])
    b[0] = np.log(np.sum(w * y) / np.sum(w * np.exp(offset)))
    for _ in range(iters):
        mu = np.exp(offset + X1 @ b)
        g = X1.T @ (w * residual(distr, y, mu, theta))
        H = X1.T @ (X1 * (w * curvature(distr, y, mu, theta))[:, None])
        step = np.linalg.solve(H, g)
        b -= step
        if np.abs(step).max() < 1e-15:
            break
    return b


def nb_ml_null(X1, y, offset, w):
    """(b, θ) of the unpenalised NB model on X1 with θ by ML: alternation written here."""
    theta = 1.0
    for _ in range(200):
        b = newton_fit("neg-binomial", X1, y, offset, w, theta)
        mu = np.exp(offset + X1 @ b)
        t = optimize.brentq(
            lambda s, mu=mu: nb_theta_score(y, mu, w, np.exp(s)), -8, 12, xtol=1e-15
        )
        if abs(np.exp(t) / theta - 1) < 1e-13:
            break
        theta = np.exp(t)
    return newton_fit("neg-binomial", X1, y, offset, w, theta), theta


def test_null_model_poisson_and_nb_by_hand():
    X, y, offset, w = synthetic("neg-binomial", n=500, seed=12)
    huge = 1e6
    pois = GLM(distr="poisson", link="log", reg_lambda=huge, tol=TOL, clip_coeffs=0,
               verbose=False).fit(X, y, sample_weight=w, offset=offset)  # fmt: skip
    assert not pois.beta_.any()
    expected = np.log(np.sum(w * y) / np.sum(w * np.exp(offset)))
    assert pois.beta0_ == pytest.approx(expected, rel=1e-12)
    assert pois.null_intercept_ == pytest.approx(expected, rel=1e-12)
    # unweighted: log(Σy / Σe^o)
    p1 = GLM(distr="poisson", link="log", reg_lambda=huge, tol=TOL, clip_coeffs=0,
             verbose=False).fit(X, y, offset=offset)  # fmt: skip
    assert p1.beta0_ == pytest.approx(np.log(y.sum() / np.exp(offset).sum()), rel=1e-12)

    theta = 1.5
    nb = GLM(distr="neg-binomial", link="log", theta=theta, reg_lambda=huge, tol=TOL,
             clip_coeffs=0, verbose=False).fit(X, y, sample_weight=w, offset=offset)  # fmt: skip
    assert not nb.beta_.any()

    def score(b0):  # Σ w θ(y − μ)/(θ + μ) = 0
        mu = np.exp(b0 + offset)
        return float(np.sum(w * theta * (y - mu) / (theta + mu)))

    root = optimize.brentq(score, -5, 5, xtol=1e-15)
    assert nb.beta0_ == pytest.approx(root, rel=1e-10, abs=1e-12)
    assert abs(score(nb.beta0_)) / np.sum(w) < 1e-11
    assert nb.beta0_ != pytest.approx(expected, rel=1e-4)  # not the Poisson intercept

    ml = GLM(distr="neg-binomial", link="log", theta="ml", reg_lambda=huge, tol=TOL,
             clip_coeffs=0, verbose=False).fit(X, y, sample_weight=w, offset=offset)  # fmt: skip
    assert not ml.beta_.any()
    (b0,), t_ref = nb_ml_null(np.ones((len(y), 1)), y, offset, w)
    assert ml.beta0_ == pytest.approx(b0, rel=1e-9)
    assert ml.theta_ == pytest.approx(t_ref, rel=THETA_RTOL)
    mu = np.exp(ml.beta0_ + offset)
    assert abs(nb_theta_score(y, mu, w, ml.theta_)) * ml.theta_ / w.sum() < 1e-9


LMAX_CASES = {
    "poisson": dict(distr="poisson"),
    "nb-fixed": dict(distr="neg-binomial", theta=1.5),
    "nb-ml": dict(distr="neg-binomial", theta="ml"),
}


@pytest.mark.parametrize("name", list(LMAX_CASES))
def test_glmcv_lambda_max_with_penalty_factors_by_hand(name):
    """λ_max = max_{f_j>0} |∇_j loss at the null model|/(f_j α), the null model fitting the
    intercept and the unpenalised predictor (and θ): at λ_max every penalised β_j is 0, at
    0.99·λ_max not."""
    params = LMAX_CASES[name]
    distr = params["distr"]
    X, y, offset, w = synthetic("neg-binomial", n=500, seed=13)
    factor = np.array([1.0, 2.0, 0.5, 0.0])
    alpha = 0.5
    free = factor == 0
    X1 = np.column_stack([np.ones(len(y)), X[:, free]])
    theta = params.get("theta")
    if theta == "ml":
        b, theta = nb_ml_null(X1, y, offset, w)
    else:
        b = newton_fit(distr, X1, y, offset, w, theta)
    beta = np.zeros(X.shape[1])
    beta[free] = b[1:]
    _, g = gradient(distr, X, y, b[0], beta, offset=offset, weight=w, theta=theta)
    lmax = np.max(np.abs(g[~free]) / factor[~free]) / alpha
    kw = dict(link="log", alpha=alpha, penalty_factor=factor, tol=TOL, clip_coeffs=0,
              verbose=False, **params)  # fmt: skip
    cv = GLMCV(n_lambdas=10, cv=3, **kw).fit(X, y, sample_weight=w, offset=offset)
    record(f"lambda_max {name}", abs(cv.reg_lambda_path_[0] / lmax - 1))
    assert cv.reg_lambda_path_[0] == pytest.approx(lmax, rel=1e-8)
    # β = 0 at λ_max up to rounding (the soft threshold is exactly at its kink there)
    assert np.abs(cv.coef_path_[0][~free]).max() <= 1e-10 and cv.coef_path_[0][free].all()
    np.testing.assert_allclose(cv.coef_path_[0][free], b[1:], rtol=1e-8)
    assert np.abs(cv.coef_path_[1][~free]).max() > 1e-6
    at = GLM(reg_lambda=lmax, **kw).fit(X, y, sample_weight=w, offset=offset)
    below = GLM(reg_lambda=0.99 * lmax, **kw).fit(X, y, sample_weight=w, offset=offset)
    assert np.abs(at.beta_[~free]).max() <= 1e-10
    assert np.abs(below.beta_[~free]).max() > 1e-6


# ---------------------------------------------------------------------------------------------
# 7. validation: every bad argument raises, naming it, before any work
# ---------------------------------------------------------------------------------------------
def small_problem():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    return X, rng.poisson(2.0, 40).astype(float)


GLM_BAD = [
    ({"distr": "gaussian", "link": "log"}, {}, "link"),
    ({"distr": "poisson", "link": "softplus"}, {}, "link"),
    ({"distr": "neg-binomial", "link": "identity"}, {}, "link"),
    ({"distr": Tweedie(), "link": "identity"}, {}, "link"),
    ({"distr": "neg-binomial", "theta": "bogus"}, {}, "theta"),
    ({"distr": "neg-binomial", "theta": -1.0}, {}, "theta"),
    ({"distr": "poisson", "theta": "ml"}, {}, "theta"),
    ({"distr": "gamma", "theta": "cox-reid"}, {}, "theta"),
    ({}, {"sample_weight": -np.ones(40)}, "sample_weight"),
    ({}, {"sample_weight": np.r_[np.nan, np.ones(39)]}, "sample_weight"),
    ({}, {"sample_weight": np.ones(39)}, "sample_weight"),
    ({}, {"sample_weight": np.zeros(40)}, "sample_weight"),
    ({}, {"offset": np.r_[np.nan, np.zeros(39)]}, "offset"),
    ({}, {"offset": np.zeros(41)}, "offset"),
    ({}, {"offset": np.full(40, np.inf)}, "offset"),
    ({"penalty_factor": [1.0, -1.0, 1.0]}, {}, "penalty_factor"),
    ({"penalty_factor": [1.0, 1.0]}, {}, "penalty_factor"),
    ({"penalty_factor": [1.0, np.nan, 1.0]}, {}, "penalty_factor"),
]


@pytest.mark.parametrize("estimator", [GLM, GLMCV])
@pytest.mark.parametrize(("params", "data", "name"), GLM_BAD)
def test_glm_and_glmcv_reject_bad_arguments(estimator, params, data, name):
    X, y = small_problem()
    m = estimator(verbose=False, **params)
    with pytest.raises((ValueError, TypeError), match=name):
        m.fit(X, y, **data)
    assert not hasattr(m, "beta_") and not hasattr(m, "n_features_in_")


def test_predict_and_score_check_the_offset():
    X, y = small_problem()
    m = GLM(link="log", verbose=False).fit(X, y, offset=np.zeros(40))
    for bad in (np.zeros(39), np.r_[np.nan, np.zeros(39)]):
        with pytest.raises(ValueError, match="offset"):
            m.predict(X, offset=bad)
        with pytest.raises(ValueError, match="offset"):
            m.score(X, y, offset=bad)
    with pytest.raises(ValueError, match="sample_weight"):
        m.score(X, y, sample_weight=-np.ones(40))


@pytest.fixture(scope="module")
def tiny(visium, design, genes):
    """60 spots and 5 genes of the Visium subset (validation only)."""
    adata = visium[:60, genes[:5]].copy()
    return adata, design.iloc[:60]


FIT_GENES_BAD = [
    ({"distr": "gaussian", "link": "log"}, "link"),
    ({"distr": "neg-binomial", "theta": "bogus"}, "theta"),
    ({"distr": "poisson", "theta": "ml"}, "theta"),
    ({"sample_weight": "neg"}, "sample_weight"),
    ({"sample_weight": "nan"}, "sample_weight"),
    ({"sample_weight": "short"}, "sample_weight"),
    ({"sample_weight": "zeros"}, "sample_weight"),
    ({"sample_weight": "missing_column"}, "sample_weight"),
    ({"sample_weight": "label"}, "sample_weight"),
    ({"offset": "nan"}, "offset"),
    ({"offset": "short"}, "offset"),
    ({"offset": "wide"}, "offset"),
    ({"offset": "nan-2d"}, "offset"),
    ({"offset": "missing_column"}, "offset"),
    ({"penalty_factor": [1.0, -1.0, 1.0]}, "penalty_factor"),
    ({"penalty_factor": [1.0, 1.0]}, "penalty_factor"),
    ({"size_factors": "bogus"}, "size_factors"),
    ({"size_factors": "neg"}, "size_factors"),
    ({"size_factors": "short"}, "size_factors"),
]


def bad_value(value, n, n_genes):
    """Turn the short names of FIT_GENES_BAD into bad inputs for ``n`` samples."""
    return (
        {
            "neg": -np.ones(n),
            "nan": np.r_[np.nan, np.ones(n - 1)],
            "short": np.ones(n - 1),
            "zeros": np.zeros(n),
            "wide": np.zeros((n, n_genes + 1)),
            "nan-2d": np.where(np.eye(n, n_genes) > 0, np.nan, 0.0),
        }.get(value, value)
        if isinstance(value, str)
        else value
    )


@pytest.mark.parametrize(("kw", "name"), FIT_GENES_BAD)
@pytest.mark.parametrize("reg_lambda", [0.1, None], ids=["fixed", "cv"])
def test_fit_genes_rejects_bad_arguments_before_any_work(tiny, monkeypatch, kw, name, reg_lambda):
    adata, design = tiny
    before = adata.copy()
    kw = {k: bad_value(v, adata.n_obs, adata.n_vars) for k, v in kw.items()}
    kw.setdefault("link", "log")
    kw.setdefault("size_factors", None)  # tiny has observations without counts

    def no_work(*args, **kwargs):
        raise AssertionError("fit_genes started fitting before validating its arguments")

    monkeypatch.setattr(stglm._transcriptome, "_GeneFitter", no_work)
    with pytest.raises((ValueError, TypeError), match=name):
        fit_genes(adata, design=design, reg_lambda=reg_lambda, **kw, **QUIET)
    assert_adata_equal(adata, before)


def test_size_factors_need_counts_in_every_observation(visium, design, genes):
    """An observation without counts has no size factor: rejected, naming size_factors."""
    adata = visium[:60, genes[:5]].copy()
    counts = adata.X.toarray().astype(np.float64)
    counts[3] = 0.0
    adata.X = sp.csr_matrix(counts)
    before = adata.copy()
    for method in ("total", "poscounts"):
        with pytest.raises(ValueError, match="size_factors"):
            fit_genes(adata, design=design.iloc[:60], size_factors=method, link="log", **QUIET)
        assert_adata_equal(adata, before)


# ---------------------------------------------------------------------------------------------
# 8. what was fitted: uns[key]['model'] and the θ statuses
# ---------------------------------------------------------------------------------------------
MODEL_CASES = [
    (
        dict(
            distr="neg-binomial",
            link="log",
            theta="ml",
            size_factors="total",
            offset="log_exposure",
        ),
        dict(
            family="neg-binomial",
            link="log",
            theta="ml",
            sample_weight="none",
            offset="log size factors (total) + obs['log_exposure']",
        ),
    ),
    (
        dict(distr="neg-binomial", link="log", theta="cox-reid", size_factors="poscounts"),
        dict(
            family="neg-binomial",
            link="log",
            theta="cox-reid",
            sample_weight="none",
            offset="log size factors (poscounts)",
        ),
    ),
    (  # fit_genes' default link is the log link; a given offset is the whole offset
        dict(distr="neg-binomial", theta=2.0, offset="array", sample_weight="w"),
        dict(
            family="neg-binomial",
            link="log",
            theta="fixed",
            sample_weight="obs['w']",
            offset="array",
        ),
    ),
    (  # the seed's mean, with the seed's defaults
        dict(distr="neg-binomial", link=None, theta=2.0, sample_weight="w"),
        dict(
            family="neg-binomial",
            link="softplus",
            theta="fixed",
            sample_weight="obs['w']",
            offset="none",
        ),
    ),
    (
        dict(distr="poisson", link="log", sample_weight="array", size_factors="sf"),
        dict(
            family="poisson",
            link="log",
            theta="none",
            sample_weight="array",
            offset="log size factors (obs['sf'])",
        ),
    ),
    (  # fit_genes' defaults: the log link and total size factors
        dict(distr="poisson"),
        dict(
            family="poisson",
            link="log",
            theta="none",
            sample_weight="none",
            offset="log size factors (total)",
        ),
    ),
    (
        dict(distr="poisson", link=None),
        dict(
            family="poisson",
            link="log-linear(eta=2)",
            theta="none",
            sample_weight="none",
            offset="none",
        ),
    ),
    (
        dict(distr="gamma", link="log", layer="shifted"),
        dict(family="gamma", link="log", theta="none", sample_weight="none", offset="none"),
    ),
]


@pytest.mark.parametrize(("kw", "expected"), MODEL_CASES)
def test_uns_model_records_what_was_fitted(visium, design, genes, kw, expected):
    kw = dict(kw)
    if kw.get("offset") == "array":
        kw["offset"] = np.zeros(visium.n_obs)
    if kw.get("sample_weight") == "array":
        kw["sample_weight"] = np.ones(visium.n_obs)
    names = genes[:4]
    out = fit_genes(
        visium, names, design=design, reg_lambda=0.05, tol=TOL, clip_coeffs=0, copy=True,
        **kw, **QUIET,
    )  # fmt: skip
    model = out.uns["stglm"]["model"]
    assert set(model) == {"family", "link", "offset", "theta", "sample_weight", "coefficients"}
    for key, value in expected.items():
        assert model[key] == value, (key, model[key], value)
    if expected["link"] == "log":
        assert "log fold change" in model["coefficients"]
    else:
        assert "log fold change" not in model["coefficients"]
    status = out.var["stglm_theta_status"]
    others = out.var_names.difference(names)
    assert (status[others] == "").all()  # not requested
    assert out.var.loc[others, "stglm_status"].eq("not requested").all()
    if kw["distr"] != "neg-binomial":
        assert (status[names] == "").all() and out.var.loc[names, "stglm_theta"].isna().all()
    elif isinstance(kw.get("theta"), str):
        assert set(status[names]) <= {"converged", "theta at upper bound", "theta at lower bound"}
        theta = out.var.loc[names, "stglm_theta"]
        assert ((theta >= 1e-8) & (theta <= THETA_MAX)).all()
        # the stored θ maximises the likelihood at the stored β (ML: its score is 0)
        if kw["theta"] == "ml":
            offset = log_total_offset(visium.X) + visium.obs["log_exposure"].to_numpy()
            w = np.ones(visium.n_obs)
            X = design.to_numpy()
            for gene in names:
                b0, b, t, st = stored(out, gene)
                if st != "converged":
                    continue
                mu = np.exp(b0 + offset + X @ b)
                s = nb_theta_score(gene_column(visium, gene), mu, w, t) * t / w.sum()
                assert abs(s) < 1e-8, (gene, s)
    else:
        assert (status[names] == "fixed").all()
        assert (out.var.loc[names, "stglm_theta"] == kw["theta"]).all()
    assert out.uns["stglm"]["params"]["distr"] == kw["distr"]


@pytest.mark.parametrize("alpha", [0.5, 0.0])  # residual-update CD, and CG for ridge
def test_weights_on_the_wide_design_route_equal_repeated_rows(alpha):
    """p above gram_max_features: the kernels that never form the Hessian honour Σ weights."""
    from stglm._solvers import NewtonOptions

    rng = np.random.default_rng(3)
    n, p = 150, NewtonOptions().gram_max_features + 20
    X = sp.random(n, p, density=0.02, random_state=4, format="csr")
    y = rng.poisson(np.exp(0.2 + X @ rng.normal(0, 0.5, p))).astype(float)
    w = rng.integers(1, 4, n).astype(float)
    kw = dict(distr="poisson", link="log", alpha=alpha, reg_lambda=0.05, tol=1e-12,
              clip_coeffs=0, verbose=False)  # fmt: skip
    weighted = GLM(**kw).fit(X, y, sample_weight=w)
    rows = np.repeat(np.arange(n), w.astype(int))
    repeated = GLM(**kw).fit(X[rows], y[rows])
    np.testing.assert_allclose(weighted.beta_, repeated.beta_, rtol=1e-7, atol=1e-10)
    assert weighted.beta0_ == pytest.approx(repeated.beta0_, rel=1e-9)
