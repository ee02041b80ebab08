"""The cross-validation driver (stglm._cv) that GLMCV and fit_genes share.

Checked without faith in it: the choice of λ against the mean CV scores recomputed here
from each fold's scores, on the case issue 16 found by fuzzing (a held-out deviance that is
NaN at small λ); the boundary warning against which λ the results show was chosen; the two
front ends against each other (one driver: the same folds, scores and choice); and the
one-response scoring shortcut against the many-response loop it replaces.
"""

from __future__ import annotations

import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.model_selection import KFold

from stglm import GLMCV, fit_genes
from stglm._cv import (
    CHUNK_BLAS_GENES,
    CHUNK_MAX_GENES,
    CHUNK_TARGET_BYTES,
    FIXED_COLUMN_ARRAYS,
    CVResult,
    batch_bytes,
    choose_lambda,
    default_chunk_size,
    make_folds,
)
from stglm._errors import BoundaryWarning
from stglm._families import get_family
from stglm._path import score_path
from stglm._solvers import NewtonOptions

QUIET = {"verbose": False}


def recorded(fn):
    """(fn's result, the warnings it gave)."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        out = fn()
    return out, records


def of_kind(records, category):
    return [str(r.message) for r in records if issubclass(r.category, category)]


# ---------------------------------------------------------------------------------------------
# the choice never takes a NaN score (issue 16, found by fuzzing)
# ---------------------------------------------------------------------------------------------
def gamma_overflow_case():
    """Issue 16's case: gamma, X = normal(18, 2)·[1, 1000], y = exponential(1e6) + 1, cv=3.

    On one fold the held-out deviance is NaN from the 10th λ on (a held-out mean of 0).
    """
    rng = np.random.default_rng(3)
    n = 20
    X = rng.normal(18, 2, (n, 2)) * np.array([1, 1000])
    y = rng.exponential(1e6, n) + 1
    return X, y


@pytest.mark.parametrize("route", ["batched", "per-fold"])
@pytest.mark.parametrize("select", ["best", "one_se"])
def test_glmcv_never_chooses_a_lambda_whose_cv_score_is_nan(route, select):
    X, y = gamma_overflow_case()
    X = sp.csr_matrix(X) if route == "per-fold" else X
    model, records = recorded(lambda: GLMCV(distr="gamma", cv=3, select=select, **QUIET).fit(X, y))
    means = model.cv_scores_.mean(axis=0)  # recomputed here from the folds' scores
    assert np.isnan(means).any()  # the case still has NaN scores: the test is not vacuous
    assert np.isfinite(model.scores_[model.best_index_])
    finite = np.flatnonzero(np.isfinite(means))
    best = finite[np.argmin(means[finite])]
    if select == "best":
        assert model.best_index_ == best
    else:  # the largest λ within one standard error of the best, among finite scores
        se = model.cv_scores_.std(axis=0, ddof=1) / np.sqrt(3)
        within = finite[means[finite] <= means[best] + se[best]]
        assert model.best_index_ == within.min()
    assert any("NaN" in m for m in of_kind(records, UserWarning))
    assert not [r for r in records if issubclass(r.category, RuntimeWarning)]


def test_fit_genes_never_chooses_a_lambda_whose_cv_score_is_nan():
    """The same gene through fit_genes: its λ is GLMCV's, its score finite, one warning."""
    X, y = gamma_overflow_case()
    rng = np.random.default_rng(4)
    Y = np.column_stack([y, rng.gamma(2.0, 1.0, len(y)) + 0.1])
    adata = ad.AnnData(Y)
    adata.obs_names = [f"c{i}" for i in range(len(y))]
    adata.var_names = ["overflow", "plain"]
    design = pd.DataFrame(X, index=adata.obs_names, columns=["a", "b"])
    _, records = recorded(
        lambda: fit_genes(
            adata,
            design=design,
            distr="gamma",
            link=None,
            cv=3,
            reg_lambda=None,
            progress=False,
        )  # fmt: skip
    )
    ref = GLMCV(distr="gamma", cv=KFold(3, shuffle=True, random_state=888), **QUIET).fit(X, y)
    var = adata.var.loc["overflow"]
    assert np.isfinite(var["stglm_score"]) and var["stglm_status"] == "ok"
    assert var["stglm_lambda"] == pytest.approx(ref.reg_lambda_opt_, rel=1e-10)
    nan_warnings = [m for m in of_kind(records, UserWarning) if "NaN" in m]
    assert len(nan_warnings) == 1 and "1 of 2 genes (e.g. overflow)" in nan_warnings[0]


def test_choose_lambda_skips_nan_scores_in_constructed_cases():
    nan = np.nan
    scores = np.array([[1.0, nan, 0.5], [nan, nan, nan], [nan, 2.0, 3.0], [3.0, 2.0, 1.0]])
    se = np.full_like(scores, 0.6)
    np.testing.assert_array_equal(choose_lambda(scores, se, "deviance", "best"), [2, 0, 1, 2])
    # pseudo-R²: higher is better
    np.testing.assert_array_equal(choose_lambda(scores, se, "pseudo_r2", "best"), [0, 0, 2, 0])
    # one_se: the largest λ within 0.6 of the best, skipping NaN (row 0: 1.0 ≤ 0.5 + 0.6)
    np.testing.assert_array_equal(choose_lambda(scores, se, "deviance", "one_se"), [0, 0, 1, 2])
    # an infinite standard error must not let a NaN λ in
    inf_se = np.where(np.isnan(scores), nan, np.inf)
    picked = choose_lambda(scores[[0, 2]], inf_se[[0, 2]], "deviance", "one_se")
    np.testing.assert_array_equal(picked, [0, 1])


# ---------------------------------------------------------------------------------------------
# the boundary warning
# ---------------------------------------------------------------------------------------------
def strong_signal(n=150, seed=0):
    """Gaussian y = 1 + Xβ + small noise: shrinking only costs, so the smallest λ wins."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    return X, 1.0 + X @ np.array([1.0, -0.8, 0.5, 0.3]) + 0.01 * rng.standard_normal(n)


def test_glmcv_warns_when_it_chooses_the_smallest_lambda():
    X, y = strong_signal()
    fit = GLMCV(distr="gaussian", n_lambdas=8, lambda_min_ratio=1e-3, **QUIET)
    model, records = recorded(lambda: fit.fit(X, y))
    assert model.best_index_ == len(model.reg_lambda_path_) - 1 == 7  # a number: not extended
    (message,) = of_kind(records, BoundaryWarning)
    assert "lambda_min_ratio=0.001" in message and "lower lambda_min_ratio" in message
    # Given λ's: the warning names them instead.
    lams = [1.0, 0.1, 0.01]
    model, records = recorded(lambda: GLMCV(distr="gaussian", reg_lambda=lams, **QUIET).fit(X, y))
    assert model.reg_lambda_opt_ == 0.01
    (message,) = of_kind(records, BoundaryWarning)
    assert "reg_lambda" in message


def test_glmcv_is_silent_when_the_choice_is_interior_or_there_is_no_choice():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((150, 4))
    y = rng.poisson(3.0, 150).astype(float)  # no signal: the largest λ (all β = 0) wins
    model, records = recorded(lambda: GLMCV(n_lambdas=8, **QUIET).fit(X, y))
    assert model.best_index_ < len(model.reg_lambda_path_) - 1
    assert not of_kind(records, BoundaryWarning)
    X, y = strong_signal()
    _, records = recorded(lambda: GLMCV(distr="gaussian", reg_lambda=[0.01], **QUIET).fit(X, y))
    assert not of_kind(records, BoundaryWarning)  # one λ: nothing was chosen


def cv_result(scores):
    """A CVResult of one response with these mean scores (the rest is not read)."""
    scores = np.asarray(scores, dtype=float)[None, :]
    best = choose_lambda(scores, np.zeros_like(scores), "deviance", "best")
    empty = np.zeros((scores.shape[1], 1))
    return CVResult(scores[None], scores, 0 * scores, best, np.zeros(1), empty, empty[..., None],
                    None)  # fmt: skip


def test_a_flat_end_is_not_a_boundary_choice():
    """Chosen at the end, the curve still falling: at the boundary; falling by less than
    1e-5 of what the path gained (glmnet's fdev): saturated, not at the boundary."""
    falling = cv_result([10.0, 6.0, 5.0, 4.9])
    assert falling.at_smallest[0] and falling.at_boundary[0] and not falling.saturated[0]
    flat = cv_result([10.0, 6.0, 5.0, 5.0 - 4e-5])  # 4e-5 < 1e-5 · 5
    assert flat.at_smallest[0] and flat.saturated[0] and not flat.at_boundary[0]
    interior = cv_result([10.0, 6.0, 5.0, 5.5])
    assert not interior.at_boundary[0] and not interior.at_smallest[0]


def strong_poisson(n=4000, p=20, seed=4):
    """Poisson, many real effects, n ≫ p: the CV optimum lies below 1e-4·λ_max."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) * rng.uniform(0.2, 3, p)
    beta = rng.normal(0, 1.0, p) / X.std(axis=0)
    return X, rng.poisson(np.exp(X @ beta)).astype(float)


def test_the_auto_path_is_extended_when_the_choice_is_its_end():
    """ "auto" (1e-4 for n ≥ p) chose the end while still improving: the path is continued
    two decades at its spacing — the same as asking for 37 λ down to 1e-6·λ_max."""
    X, y = strong_poisson()
    kw = dict(distr="poisson", link="log", clip_coeffs=0, **QUIET)
    auto = GLMCV(**kw).fit(X, y)
    assert len(auto.reg_lambda_path_) == 25 + 12
    given = GLMCV(lambda_min_ratio=1e-6, n_lambdas=37, **kw).fit(X, y)
    np.testing.assert_allclose(auto.reg_lambda_path_, given.reg_lambda_path_, rtol=1e-12)
    assert auto.best_index_ == given.best_index_ > 24  # beyond the unextended path
    np.testing.assert_allclose(auto.scores_, given.scores_, rtol=1e-8)
    np.testing.assert_allclose(auto.beta_, given.beta_, rtol=0, atol=1e-7)
    short = GLMCV(lambda_min_ratio=1e-4, **kw).fit(X[:, :3], y)  # a number: never extended
    assert len(short.reg_lambda_path_) == 25


def test_fit_genes_extends_the_genes_whose_choice_is_their_paths_end():
    """Per gene, fit_genes' "auto" path = GLMCV's: extended for the gene that needs it only."""
    X, y = strong_poisson(seed=4)
    rng = np.random.default_rng(5)
    noise = rng.poisson(2.0, (X.shape[0], 2)).astype(float)
    adata = ad.AnnData(np.column_stack([y, noise]))
    adata.var_names = ["strong", "noise0", "noise1"]
    design = pd.DataFrame(X, index=adata.obs_names)
    out = fit_genes(adata, design=design, reg_lambda=None, size_factors=None, progress=False,
                    copy=True)  # fmt: skip
    for j, gene in enumerate(adata.var_names):
        ref = GLMCV(distr="poisson", link="log", clip_coeffs=0, **QUIET)
        ref.fit(X, adata.X[:, j])
        assert len(ref.reg_lambda_path_) == (37 if gene == "strong" else 25)
        np.testing.assert_allclose(out.var.loc[gene, "stglm_lambda"], ref.reg_lambda_opt_,
                                   rtol=1e-10, err_msg=gene)  # fmt: skip


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_fit_genes_counts_the_genes_at_the_boundary_in_one_warning(chunk_size):
    """Genes driven by the design choose the smallest λ, noise genes the largest; one
    warning counts the former over all chunks and names them."""
    rng = np.random.default_rng(2)
    n = 200
    X = rng.standard_normal((n, 3))
    driven = [rng.poisson(np.exp(1.5 + X @ rng.uniform(0.6, 1.0, 3))) for _ in range(3)]
    noise = [rng.poisson(4.0, n) for _ in range(3)]
    adata = ad.AnnData(np.column_stack(driven + noise).astype(float))
    adata.obs_names = [f"c{i}" for i in range(n)]
    adata.var_names = ["d0", "d1", "d2", "n0", "n1", "n2"]
    design = pd.DataFrame(X, index=adata.obs_names, columns=["a", "b", "c"])
    lams = [1.0, 0.1, 0.01, 0.001]
    _, records = recorded(
        lambda: fit_genes(
            adata,
            design=design,
            reg_lambda=lams,
            link="log",
            cv=3,
            chunk_size=chunk_size,
            progress=False,
        )  # fmt: skip
    )
    at_boundary = adata.var_names[adata.var["stglm_lambda"] == min(lams)]
    assert 0 < len(at_boundary) < adata.n_vars  # both kinds occur: not vacuous
    (message,) = of_kind(records, BoundaryWarning)
    assert f"{len(at_boundary)} of 6 genes" in message
    named = re.search(r"\(e\.g\. ([^)]*)\)", message).group(1).split(", ")
    assert set(named) == set(at_boundary)


# ---------------------------------------------------------------------------------------------
# one driver: folds, scores and the memory plan
# ---------------------------------------------------------------------------------------------
def test_an_integer_cv_gives_seeded_shuffled_kfold_folds():
    X = np.zeros((23, 2))
    folds = make_folds(4, 23, 7, X)
    expected = list(KFold(4, shuffle=True, random_state=7).split(X))
    assert len(folds) == 4
    for (tr, te), (tr_ref, te_ref) in zip(folds, expected, strict=True):
        np.testing.assert_array_equal(tr, tr_ref)
        np.testing.assert_array_equal(te, te_ref)
    assert not np.array_equal(make_folds(4, 23, 8, X)[0][1], folds[0][1])


def test_fit_genes_and_glmcv_share_folds_scores_and_choice():
    """fit_genes' CV of one gene is GLMCV's: the same held-out scores (to solver
    tolerance) and the same chosen λ, with sample weights and an offset."""
    rng = np.random.default_rng(5)
    n = 90
    X = rng.standard_normal((n, 3))
    w = rng.uniform(0.5, 2.0, n)
    offset = rng.normal(0.0, 0.3, n)
    y = rng.poisson(np.exp(0.5 + X @ [0.4, -0.3, 0.0] + offset)).astype(float)
    adata = ad.AnnData(y[:, None])
    adata.obs_names = [f"c{i}" for i in range(n)]
    adata.var_names = ["g"]
    adata.obs["w"], adata.obs["o"] = w, offset
    design = pd.DataFrame(X, index=adata.obs_names, columns=["a", "b", "c"])
    kw = dict(link="log", n_lambdas=6, score_metric="pseudo_r2", tol=1e-12, clip_coeffs=0.0)
    out = fit_genes(
        adata, design=design, reg_lambda=None, cv=3, sample_weight="w", offset="o",
        progress=False, copy=True, **kw,
    )  # fmt: skip
    ref = GLMCV(cv=3, **kw, **QUIET).fit(X, y, sample_weight=w, offset=offset)
    var = out.var.loc["g"]
    assert var["stglm_lambda"] == pytest.approx(ref.reg_lambda_opt_, rel=1e-10)
    assert var["stglm_score"] == pytest.approx(ref.scores_[ref.best_index_], rel=1e-8)


def test_one_response_scores_equal_the_many_response_loop():
    """score_path scores one response's whole path in one product; with a second response
    beside it (the per-λ loop) the first response's scores are the same."""
    rng = np.random.default_rng(6)
    n, p, K = 40, 3, 5
    X = rng.standard_normal((n, p))
    y = rng.negative_binomial(3, 0.5, n).astype(float)
    fam = get_family("neg-binomial", link="log", theta=2.0)
    icpt = rng.normal(0.5, 0.1, (K, 2))
    coefs = rng.normal(0.0, 0.2, (K, 2, p))
    theta = rng.uniform(1.0, 4.0, (K, 2))
    offset = rng.normal(0.0, 0.2, n)
    w = rng.uniform(0.5, 1.5, n)
    for metric, y_null in (("deviance", 0.0), ("pseudo_r2", np.array([y.mean(), y.mean()]))):
        kw = dict(fit_intercept=True, metric=metric, sample_weight=w, offset=offset)
        both = score_path(
            fam, X, np.column_stack([y, y[::-1]]), icpt, coefs, y_null=y_null, theta=theta, **kw
        )
        one = score_path(
            fam, X, y[:, None], icpt[:, :1], coefs[:, :1], y_null=y_null[:1] if metric !=
            "deviance" else 0.0, theta=theta[:, :1], **kw,
        )  # fmt: skip
        assert one.shape == (1, K)
        np.testing.assert_allclose(one[0], both[0], rtol=1e-12)


def test_glmcv_batching_and_fit_genes_chunks_follow_one_memory_plan():
    """A column of a batched solve costs batch_bytes(n, 1) for GLMCV's folds and for
    fit_genes' genes alike: GLMCV batches exactly as many folds as fit the budget, and a
    fit_genes chunk holds as many genes as fit its bytes."""
    n = 100_000
    per_column = batch_bytes(n, 1)
    # columns (folds + the full data) in the budget
    most = NewtonOptions().batch_bytes_budget // per_column
    X = np.zeros((n, 3))
    model = GLMCV(**QUIET)
    assert model._batchable(X, most - 1) and not model._batchable(X, most)
    wanted = max(CHUNK_BLAS_GENES, CHUNK_TARGET_BYTES // per_column)
    assert default_chunk_size(n, 10**15) == wanted
    assert default_chunk_size(10**7, 10**15) == CHUNK_BLAS_GENES  # large n: the BLAS minimum
    assert default_chunk_size(100, 10**15) == CHUNK_MAX_GENES  # small n: the most
    budget = 20 * per_column  # the budget caps it
    assert default_chunk_size(n, budget) == 20
    # the pair products' bytes come off the budget; n_jobs chunks share the rest
    assert default_chunk_size(n, budget, reserved=10 * per_column) == 10
    assert default_chunk_size(n, budget, reserved=10 * per_column, n_jobs=2) == 5
    # threads share the chunks' memory target: two threads, half the genes each
    assert default_chunk_size(n, 10**15, n_jobs=2) == wanted // 2
    fixed = batch_bytes(n, 1, FIXED_COLUMN_ARRAYS)
    assert default_chunk_size(n, 20 * fixed, n_arrays=FIXED_COLUMN_ARRAYS) == 20
    assert default_chunk_size(10**8, budget) == 1  # never less than one gene
    assert default_chunk_size(n, budget, reserved=2 * budget) == 1
