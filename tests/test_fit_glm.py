"""Tests of stglm.fit_glm: one gene of an AnnData against given predictors.

Every expected value is produced without fit_glm's own preprocessing: the response is
recomputed here by hand (raw counts, or counts normalised to 1e4 per cell, averaged over
a row-normalised graph built explicitly from its edges, then log1p) and fitted with a
direct ``GLMCV``; grid-search choices are checked against CV scores computed here
fold by fold with NumPy formulas for the Poisson deviance and pseudo-R².
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import assert_adata_equal
from sklearn.model_selection import KFold

import stglm._fit_glm as fit_glm_module
import stglm.spatial as S
from stglm import GLMCV, fit_glm
from stglm.datasets import visium_prostate

GENE = "FOLH1"  # 17,483 counts over 2,327 spots, expressed in both sections
FAST = {"cv": 3, "n_lambdas": 8}  # small CV passed identically to fit_glm and GLMCV
NO_PREPROCESSING = {"calc_first_moment": False, "log_transform": False}


# ---------------------------------------------------------------------------------------------
# helpers written from docs/SEMANTICS.md, independent of stglm
# ---------------------------------------------------------------------------------------------
def raw_counts(adata, gene, layer=None):
    matrix = adata.X if layer is None else adata.layers[layer]
    column = matrix[:, [adata.var_names.get_loc(gene)]]
    column = column.toarray() if sp.issparse(column) else np.asarray(column)
    return column.astype(np.float64).ravel()


def row_normalised_dense(W):
    """W̃ = D⁻¹W built entry by entry from W's edges (rows without edges stay 0)."""
    W = sp.coo_matrix(W)
    dense = np.zeros(W.shape)
    for i, j, w in zip(W.row, W.col, W.data, strict=True):
        dense[i, j] += w
    sums = dense.sum(axis=1)
    out = np.zeros_like(dense)
    out[sums > 0] = dense[sums > 0] / sums[sums > 0, None]
    return out


def smoothed_response(adata, gene, W, log=True, layer=None):
    """spateo's y: counts normalised to 1e4 per cell, neighbour mean over W̃, log1p."""
    matrix = adata.X if layer is None else adata.layers[layer]
    counts = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    counts = counts.astype(np.float64)
    totals = counts.sum(axis=1)
    assert np.all(totals > 0)
    normalised = 1e4 * counts[:, adata.var_names.get_loc(gene)] / totals
    y = row_normalised_dense(W) @ normalised
    return np.log1p(y) if log else y


def poisson_mean(z, eta=2.0):
    """μ(z): e^z up to η, then the tangent line e^η(z − η + 1)."""
    return np.where(z <= eta, np.exp(np.minimum(z, eta)), np.exp(eta) * (z - eta + 1.0))


def poisson_deviance(y, mu):
    """2·Σ[y·log(y/μ) − (y − μ)] with 0·log 0 = 0."""
    y = np.asarray(y, dtype=float)
    mu = np.broadcast_to(np.asarray(mu, dtype=float), y.shape)
    ratio = np.where(y > 0, y / mu, 1.0)
    return float(2.0 * np.sum(y * np.log(ratio) - (y - mu)))


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def visium():
    """The bundled Visium data; tests that could write into it work on their own copy."""
    return visium_prostate()


@pytest.fixture(scope="module")
def design(visium):
    """Standardised coordinates and the spatial lags of two marker genes (a DataFrame)."""
    coords = S.coordinates(visium)
    lag = S.spatial_lag(visium, ["TMEFF2", "OR51E2"], batch_key="list_ID")
    return pd.concat([coords, lag], axis=1)


def rich_adata(sparse=True, n_obs=600):
    """A Visium subset with something in every slot fit_glm could be tempted to write to."""
    adata = visium_prostate()[:n_obs].copy()
    if not sparse:
        adata.X = adata.X.toarray()
    adata.layers["counts"] = adata.X.copy()
    adata.obsp["spatial_connectivities"] = S.spatial_neighbors(adata)
    adata.obsm["X_extra"] = np.arange(2.0 * n_obs).reshape(n_obs, 2)
    adata.var["mean"] = np.asarray(adata.X.mean(axis=0)).ravel()
    adata.obs["total"] = np.asarray(adata.X.sum(axis=1)).ravel()
    adata.uns["nested"] = {"values": np.arange(3), "label": "x", "inner": {"k": 1.5}}
    return adata


def visium_design(adata):
    return S.coordinates(adata).to_numpy()


# ---------------------------------------------------------------------------------------------
# fit_glm equals a direct GLMCV fit
# ---------------------------------------------------------------------------------------------
def check_against_glmcv(out, model, X, y):
    """The documented outputs of fit_glm match a GLMCV fitted directly on (X, y)."""
    intercept, beta, opt_score, rex, reg = out
    ref = model.fit(X, y)
    assert isinstance(reg, GLMCV)
    np.testing.assert_allclose(intercept, ref.beta0_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(beta, ref.beta_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(reg.reg_lambda_opt_, ref.reg_lambda_opt_, rtol=1e-12)
    np.testing.assert_allclose(opt_score, ref.scores_[ref.best_index_], rtol=1e-10)
    np.testing.assert_allclose(rex, ref.predict(X), rtol=1e-10, atol=1e-12)
    # opt_score is the mean CV score at the chosen λ; with "best" it is the best mean score
    best = np.max if ref.score_metric == "pseudo_r2" else np.min
    np.testing.assert_allclose(opt_score, best(ref.scores_), rtol=1e-12)
    assert np.ndim(rex) == 1 and len(rex) == X.shape[0]


@pytest.mark.parametrize("as_frame", [True, False], ids=["DataFrame", "ndarray"])
def test_poisson_equals_glmcv_on_raw_counts(visium, design, as_frame):
    X = design if as_frame else design.to_numpy()
    out = fit_glm(X, visium, GENE, **NO_PREPROCESSING, **FAST)
    y = raw_counts(visium, GENE)
    check_against_glmcv(out, GLMCV(distr="poisson", score_metric="pseudo_r2", **FAST), X, y)
    reg = out[4]
    assert reg.distr == "poisson" and reg.score_metric == "pseudo_r2"  # fit_glm's defaults


def test_kwargs_override_defaults(visium, design):
    X = design.to_numpy()
    kwargs = {"distr": "neg-binomial", "score_metric": "deviance", "theta": 2.0, "alpha": 0.8}
    out = fit_glm(X, visium, GENE, **NO_PREPROCESSING, **FAST, **kwargs)
    y = raw_counts(visium, GENE)
    check_against_glmcv(out, GLMCV(**kwargs, **FAST), X, y)
    assert out[4].theta == 2.0 and out[4].alpha == 0.8


def test_return_model_false_gives_the_first_four(visium, design):
    X = design.to_numpy()
    five = fit_glm(X, visium, GENE, **NO_PREPROCESSING, **FAST)
    four = fit_glm(X, visium, GENE, **NO_PREPROCESSING, return_model=False, **FAST)
    assert isinstance(five, tuple) and len(five) == 5
    assert isinstance(four, tuple) and len(four) == 4
    assert not any(isinstance(part, GLMCV) for part in four)
    for a, b in zip(five[:4], four, strict=True):
        np.testing.assert_array_equal(a, b)
    assert isinstance(four[2], float)
    assert np.shape(four[1]) == (X.shape[1],) and np.shape(four[3]) == (visium.n_obs,)


@pytest.mark.parametrize("log_transform", [True, False], ids=["log1p", "no-log"])
def test_gaussian_first_moment_over_expression_graph(visium, design, log_transform):
    X = design.to_numpy()
    W = S.expression_neighbors(visium)
    # the graph spateo smoothed over: 5 neighbours per cell, itself excluded
    assert np.all(np.diff(W.indptr) == 5)
    assert W.diagonal().sum() == 0
    y = smoothed_response(visium, GENE, W, log=log_transform)

    out = fit_glm(X, visium, GENE, distr="gaussian", log_transform=log_transform, **FAST)
    check_against_glmcv(out, GLMCV(distr="gaussian", score_metric="pseudo_r2", **FAST), X, y)


def test_gaussian_spatial_graph(visium, design):
    X = design.to_numpy()
    y_spatial = smoothed_response(visium, GENE, S.spatial_neighbors(visium))
    y_expr = smoothed_response(visium, GENE, S.expression_neighbors(visium))
    assert not np.allclose(y_spatial, y_expr)  # the two graphs give different responses

    out = fit_glm(X, visium, GENE, distr="gaussian", graph="spatial", **FAST)
    check_against_glmcv(
        out, GLMCV(distr="gaussian", score_metric="pseudo_r2", **FAST), X, y_spatial
    )


def test_gaussian_given_graph_matrix_and_obsp_key():
    adata = rich_adata(n_obs=300)
    X = visium_design(adata)
    rng = np.random.default_rng(1)
    W = sp.random(adata.n_obs, adata.n_obs, density=0.02, random_state=rng, format="csr")
    W = W + sp.eye(adata.n_obs, format="csr")  # weighted, every row has an edge
    y = smoothed_response(adata, GENE, W)
    model = GLMCV(distr="gaussian", score_metric="pseudo_r2", **FAST)

    check_against_glmcv(fit_glm(X, adata, GENE, distr="gaussian", graph=W, **FAST), model, X, y)
    adata.obsp["my_graph"] = W
    check_against_glmcv(
        fit_glm(X, adata, GENE, distr="gaussian", graph="my_graph", **FAST), model, X, y
    )


def test_gaussian_layer_is_the_response_source():
    adata = rich_adata(n_obs=300)
    adata.X = sp.csr_matrix(adata.X.shape, dtype=np.float32)  # X is not the counts any more
    X = visium_design(adata)
    W = S.spatial_neighbors(adata)
    y = smoothed_response(adata, GENE, W, layer="counts")
    out = fit_glm(X, adata, GENE, distr="gaussian", graph=W, layer="counts", **FAST)
    check_against_glmcv(out, GLMCV(distr="gaussian", score_metric="pseudo_r2", **FAST), X, y)


def test_expression_graph_follows_layer():
    adata = rich_adata(n_obs=300)
    counts = adata.layers["counts"].toarray().astype(float)
    adata.X = (counts - counts.mean(axis=0)) / (counts.std(axis=0) + 1.0)  # scanpy-style scaled X
    X = visium_design(adata)
    W = S.expression_neighbors(adata, layer="counts")
    y = smoothed_response(adata, GENE, W, layer="counts")
    out = fit_glm(X, adata, GENE, distr="gaussian", layer="counts", **FAST)
    check_against_glmcv(out, GLMCV(distr="gaussian", score_metric="pseudo_r2", **FAST), X, y)


# ---------------------------------------------------------------------------------------------
# adata is never modified
# ---------------------------------------------------------------------------------------------
CASES = [
    pytest.param({"distr": "gaussian"}, id="gaussian-smoothed"),
    pytest.param({"distr": "gaussian", "graph": "spatial"}, id="gaussian-spatial"),
    pytest.param({"distr": "gaussian", "graph": "spatial_connectivities"}, id="gaussian-obsp"),
    pytest.param({"distr": "poisson", **NO_PREPROCESSING}, id="poisson"),
]


@pytest.mark.parametrize("sparse", [True, False], ids=["csr", "dense"])
@pytest.mark.parametrize("layer", [None, "counts"], ids=["X", "layer"])
@pytest.mark.parametrize("kwargs", CASES)
def test_adata_unchanged(sparse, layer, kwargs):
    adata = rich_adata(sparse=sparse, n_obs=400)
    before = adata.copy()
    X = visium_design(adata)
    fit_glm(X, adata, GENE, layer=layer, **kwargs, **FAST)
    assert_adata_equal(adata, before)


@pytest.mark.parametrize("sparse", [True, False], ids=["csr", "dense"])
@pytest.mark.parametrize("layer", [None, "counts"], ids=["X", "layer"])
def test_view_unchanged(sparse, layer):
    parent = rich_adata(sparse=sparse, n_obs=700)
    parent_before = parent.copy()
    view = parent[:500]
    assert view.is_view
    view_before = view.copy()
    X = visium_design(view)

    with warnings.catch_warnings():
        warnings.simplefilter("error", ad.ImplicitModificationWarning)  # a write into a view
        for kwargs in ({"distr": "gaussian"}, {"distr": "poisson", **NO_PREPROCESSING}):
            fit_glm(X, view, GENE, layer=layer, **kwargs, **FAST)

    assert view.is_view, "fit_glm turned the view into an actual AnnData"
    assert_adata_equal(view, view_before)
    assert_adata_equal(parent, parent_before)


def test_view_gives_the_same_fit_as_its_copy():
    parent = rich_adata(n_obs=700)
    view = parent[:500]
    X = visium_design(view)
    a = fit_glm(X, view, GENE, distr="gaussian", graph="spatial", **FAST)
    b = fit_glm(X, view.copy(), GENE, distr="gaussian", graph="spatial", **FAST)
    for got, expected in zip(a[:4], b[:4], strict=True):
        np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------------------------
# count families: no smoothing, no log, said once
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distr", ["poisson", "softplus", "neg-binomial"])
@pytest.mark.parametrize(
    "flags", [(True, True), (True, False), (False, True)], ids=["both", "moment", "log"]
)
def test_count_families_switch_preprocessing_off(distr, flags):
    adata = rich_adata(n_obs=300)
    X = visium_design(adata)
    first, log = flags
    with pytest.warns(UserWarning, match="switched off") as record:
        out = fit_glm(
            X, adata, GENE, calc_first_moment=first, log_transform=log, distr=distr, **FAST
        )
    assert sum("switched off" in str(w.message) for w in record) == 1  # said once
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all when both flags are False
        plain = fit_glm(X, adata, GENE, distr=distr, **NO_PREPROCESSING, **FAST)
    for got, expected in zip(out[:4], plain[:4], strict=True):
        np.testing.assert_array_equal(got, expected)
    # and both equal a GLMCV fitted on the raw counts
    y = raw_counts(adata, GENE)
    check_against_glmcv(out, GLMCV(distr=distr, score_metric="pseudo_r2", **FAST), X, y)


def test_gaussian_does_not_warn():
    adata = rich_adata(n_obs=300)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit_glm(visium_design(adata), adata, GENE, distr="gaussian", graph="spatial", **FAST)


# ---------------------------------------------------------------------------------------------
# grid search: the better CV score wins
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def intercept_problem():
    """Counts with a large true intercept: log μ = 3 + 0.5·x0 − 0.4·x1 (x centred)."""
    rng = np.random.default_rng(7)
    n = 150
    X = rng.normal(size=(n, 3))
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    y = rng.poisson(np.exp(3.0 + 0.5 * X[:, 0] - 0.4 * X[:, 1])).astype(float)
    other = rng.poisson(2.0, size=n).astype(float)
    adata = ad.AnnData(
        X=sp.csr_matrix(np.column_stack([y, other])),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
        var=pd.DataFrame(index=["g", "other"]),
    )
    return X, y, adata


def hand_cv_scores(X, y, n_folds, candidates, base):
    """Mean held-out score of each candidate over unshuffled KFold(n_folds), by hand."""
    means = []
    for params in candidates:
        scores = {"deviance": [], "pseudo_r2": []}
        for train, test in KFold(n_folds).split(X):
            m = GLMCV(**base, **params).fit(X[train], y[train])
            z = X[test] @ m.beta_ + (m.beta0_ if m.fit_intercept else 0.0)
            dev = poisson_deviance(y[test], poisson_mean(z))
            null = poisson_deviance(y[test], y[train].mean())
            scores["deviance"].append(dev)
            scores["pseudo_r2"].append(1.0 - dev / null)
        means.append({k: float(np.mean(v)) for k, v in scores.items()})
    return means


@pytest.mark.parametrize("metric", ["pseudo_r2", "deviance"])
@pytest.mark.parametrize("prefix", ["", "classifier__"], ids=["plain", "classifier__"])
def test_grid_search_picks_intercept(intercept_problem, metric, prefix):
    X, y, adata = intercept_problem
    base = {"distr": "poisson", "score_metric": metric, "cv": 3, "n_lambdas": 5}
    candidates = [{"fit_intercept": False}, {"fit_intercept": True}]  # the right one second
    hand = hand_cv_scores(X, y, 3, candidates, base)
    higher = metric == "pseudo_r2"
    pick = (np.argmax if higher else np.argmin)([h[metric] for h in hand])
    assert pick == 1, f"constructed case broken: hand CV scores {hand}"

    out = fit_glm(
        X,
        adata,
        "g",
        **NO_PREPROCESSING,
        gs_params={f"{prefix}fit_intercept": [False, True]},
        n_gs_cv=3,
        **base,
    )
    reg = out[4]
    assert reg.fit_intercept is True, (
        f"grid search chose fit_intercept={reg.fit_intercept} although its mean CV {metric} "
        f"is worse: {hand}"
    )
    check_against_glmcv(out, GLMCV(**base, fit_intercept=True), X, y)


@pytest.mark.parametrize("metric", ["pseudo_r2", "deviance"])
@pytest.mark.parametrize("prefix", ["", "classifier__"], ids=["plain", "classifier__"])
def test_grid_search_picks_unclipped(intercept_problem, metric, prefix):
    X, y, adata = intercept_problem
    base = {"distr": "poisson", "score_metric": metric, "cv": 3, "n_lambdas": 5}
    candidates = [{"clip_coeffs": 100.0}, {"clip_coeffs": 0.0}]  # 100 zeroes every β
    hand = hand_cv_scores(X, y, 4, candidates, base)
    pick = (np.argmax if metric == "pseudo_r2" else np.argmin)([h[metric] for h in hand])
    assert pick == 1, f"constructed case broken: hand CV scores {hand}"

    out = fit_glm(
        X,
        adata,
        "g",
        **NO_PREPROCESSING,
        gs_params={f"{prefix}clip_coeffs": [100.0, 0.0]},
        n_gs_cv=4,
        **base,
    )
    assert out[4].clip_coeffs == 0.0, (
        f"grid search kept clip_coeffs={out[4].clip_coeffs}; hand CV {metric}: {hand}"
    )
    assert np.all(out[1][:2] != 0)
    check_against_glmcv(out, GLMCV(**base, clip_coeffs=0.0), X, y)


def test_grid_search_two_parameters_mixed_keys(intercept_problem):
    """A two-parameter grid with plain and prefixed keys: the hand-computed best wins.

    α = 0.1 and 0.9 differ by well under 1 % in CV deviance here, so this also pins the
    grid-search folds: ``n_gs_cv`` contiguous, unshuffled blocks (GridSearchCV's integer
    ``cv`` for a regressor, as in spateo).
    """
    X, y, adata = intercept_problem
    base = {"distr": "poisson", "score_metric": "deviance", "cv": 3, "n_lambdas": 5}
    candidates = [{"alpha": a, "fit_intercept": f} for a in (0.1, 0.9) for f in (False, True)]
    hand = hand_cv_scores(X, y, 3, candidates, base)
    best = candidates[int(np.argmin([h["deviance"] for h in hand]))]
    out = fit_glm(
        X,
        adata,
        "g",
        **NO_PREPROCESSING,
        n_gs_cv=3,
        **base,
        gs_params={"alpha": [0.1, 0.9], "classifier__fit_intercept": [False, True]},
    )
    assert {"alpha": out[4].alpha, "fit_intercept": out[4].fit_intercept} == best
    check_against_glmcv(out, GLMCV(**base, **best), X, y)


# ---------------------------------------------------------------------------------------------
# errors, raised before any work
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def no_work(monkeypatch):
    """Make reading the response or fitting anything fail loudly: errors must come first."""

    def boom(*args, **kwargs):
        raise AssertionError("fit_glm started working before rejecting its input")

    monkeypatch.setattr(fit_glm_module, "_response", boom)
    monkeypatch.setattr(GLMCV, "fit", boom)
    monkeypatch.setattr(fit_glm_module.GridSearchCV, "fit", boom)


def bad_inputs():
    adata = rich_adata(n_obs=120)
    X = visium_design(adata)
    nan_X = X.copy()
    nan_X[3, 1] = np.nan
    return [
        pytest.param(X, adata, "NOT_A_GENE", {}, ValueError, "NOT_A_GENE", id="unknown-y_feat"),
        pytest.param(X, adata, 3, {}, ValueError, "y_feat", id="non-str-y_feat"),
        pytest.param(X[:-1], adata, GENE, {}, ValueError, "row", id="X-rows"),
        pytest.param(nan_X, adata, GENE, {}, ValueError, "NaN", id="X-NaN"),
        pytest.param(X, adata.to_df(), GENE, {}, TypeError, "AnnData", id="adata-DataFrame"),
        pytest.param(X, adata.X, GENE, {}, TypeError, "AnnData", id="adata-matrix"),
        pytest.param(
            X,
            adata,
            GENE,
            {"gs_params": {"classifier__nope": [1, 2]}},
            ValueError,
            "nope",
            id="gs_params-prefixed-key",
        ),
        pytest.param(
            X, adata, GENE, {"gs_params": {"nope": [1, 2]}}, ValueError, "nope", id="gs_params-key"
        ),
        pytest.param(
            X,
            adata,
            GENE,
            {"gs_params": [("alpha", [0.5])]},
            TypeError,
            "dict",
            id="gs_params-not-dict",
        ),
        pytest.param(X, adata, GENE, {"nope": 1}, TypeError, "nope", id="kwargs-name"),
        pytest.param(X, adata, GENE, {"distr": "poison"}, ValueError, "distr", id="kwargs-distr"),
        pytest.param(
            X,
            adata,
            GENE,
            {"n_gs_cv": 1, "gs_params": {"alpha": [0.5]}},
            ValueError,
            "n_gs_cv",
            id="n_gs_cv",
        ),
        pytest.param(
            X,
            adata,
            GENE,
            {"calc_first_moment": "yes"},
            TypeError,
            "calc_first_moment",
            id="flag-not-bool",
        ),
    ]


@pytest.mark.parametrize(("X", "adata", "y_feat", "kwargs", "error", "match"), bad_inputs())
def test_errors_before_any_work(no_work, X, adata, y_feat, kwargs, error, match):
    with pytest.raises(error, match=match):
        fit_glm(X, adata, y_feat, **kwargs)


def test_invalid_grid_value_raises_before_any_work(no_work):
    adata = rich_adata(n_obs=120)
    with pytest.raises(ValueError, match="alpha"):
        fit_glm(
            visium_design(adata), adata, GENE, **NO_PREPROCESSING, gs_params={"alpha": [0.5, 2.0]}
        )
