"""GLMCV and the regularisation path, checked against things that need no faith in stglm.

* Path solutions are compared with independent single-λ fits and certified by KKT
  conditions computed here from the formulas (gradient of J written out by hand), and,
  where a closed form or an outside solver exists, against those (ridge normal
  equations, R glmnet fits in ``tests/references/glmnet_fits.json``).
* The CV curve is compared with R ``cv.glmnet`` on the real Visium design
  (``tests/references/cv_glmnet.json``; see ``tests/references/README.md``).
* Strong-rule screening is exercised on designs where the test itself shows that the
  rule discards a predictor that is non-zero at the next λ.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import with_routes
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, PredefinedSplit

import stglm._path as path_module
from stglm import GLM, GLMCV
from stglm._families import get_family
from stglm._path import fit_path
from stglm._penalties import ElasticNet
from stglm._solvers import Problem
from stglm._solvers.batched import BatchedNewtonCD

REFERENCES = Path(__file__).parent / "references"
KKT_TOL = 1e-8
QUIET = {"verbose": False}


# ---------------------------------------------------------------------------------------------
# Independent formulas (numpy only; nothing from stglm)
# ---------------------------------------------------------------------------------------------
def mean_and_residual(distr: str, eta: float, y: np.ndarray, z: np.ndarray):
    """μ(z) and r = ∂(−ℓ)/∂z for gaussian (ℓ = −½(y−μ)²) and Poisson (ℓ = y log μ − μ).

    The Poisson mean is e^z up to ``eta`` and e^η(z − η + 1) above it (docs/SEMANTICS.md).
    """
    if distr == "gaussian":
        return z, z - y
    above = z > eta
    e_eta = np.exp(eta) if np.isfinite(eta) else np.inf
    mu = np.where(above, e_eta * (z - eta + 1.0), np.exp(np.minimum(z, eta)))
    dmu = np.where(above, e_eta, np.exp(np.minimum(z, eta)))
    return mu, dmu * (1.0 - y / mu)


def unit_deviance(distr: str, y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Gaussian (y − μ)²; Poisson 2[y log(y/μ) − (y − μ)] with 0·log 0 = 0."""
    if distr == "gaussian":
        return (y - mu) ** 2
    ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return 2.0 * (ylogy - (y - mu))


def smooth_gradient(distr, eta, X, y, b0, beta, lam, alpha, tau=None, fit_intercept=True):
    """Gradient of −(1/n)Σℓ + ½λ(1−α)‖Γβ‖² w.r.t. (β0, β)."""
    z = X @ beta + (b0 if fit_intercept else 0.0)
    _, r = mean_and_residual(distr, eta, y, z)
    gram = np.eye(X.shape[1]) if tau is None else tau.T @ tau
    g = X.T @ r / len(y) + lam * (1.0 - alpha) * (gram @ beta)
    return float(r.mean()), g


def kkt_by_hand(distr, eta, X, y, b0, beta, lam, alpha, tau=None, fit_intercept=True) -> float:
    """Largest violation of the optimality conditions of J (0 exactly at the optimum)."""
    g0, g = smooth_gradient(distr, eta, X, y, b0, beta, lam, alpha, tau, fit_intercept)
    l1 = lam * alpha
    viol = np.where(beta != 0, np.abs(g + l1 * np.sign(beta)), np.maximum(np.abs(g) - l1, 0.0))
    return max(float(viol.max()), abs(g0) if fit_intercept else 0.0)


def lambda_max_by_hand(distr, eta, X, y, alpha, fit_intercept=True) -> float:
    """‖∇_β loss at the null model‖∞ / α (the null model predicts ȳ, or z = 0 without intercept)."""
    if fit_intercept:
        mu0 = y.mean()
        z0 = (
            mu0
            if distr == "gaussian"
            else (np.log(mu0) if mu0 <= np.exp(eta) else mu0 / np.exp(eta) + eta - 1.0)
        )
    else:
        z0 = 0.0
    _, r = mean_and_residual(distr, eta, y, np.full_like(y, z0))
    return float(np.max(np.abs(X.T @ r)) / len(y) / alpha)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
FAMILIES = {  # id: (distr, eta, intercept of the simulation)
    "gaussian": ("gaussian", np.inf, 1.0),
    "poisson": ("poisson", np.inf, 0.5),
    "poisson-eta2": ("poisson", 2.0, 2.2),  # many z above η = 2: the linear piece is used
}


def simulate(family_id: str, n: int = 120, p: int = 6, seed: int = 0):
    distr, _, b0 = FAMILIES[family_id]
    rng = np.random.default_rng(seed)
    corr = 0.6 ** np.abs(np.subtract.outer(np.arange(p), np.arange(p)))
    X = rng.standard_normal((n, p)) @ np.linalg.cholesky(corr).T
    beta = np.zeros(p)
    beta[[0, 1, min(4, p - 1)]] = [0.8, -0.5, 0.3]
    if distr == "gaussian":
        return X, b0 + X @ beta + rng.standard_normal(n)
    return X, rng.poisson(np.exp(b0 + 0.5 * X @ beta)).astype(float)


P = 6
TAU = np.eye(P) - 0.7 * np.eye(P, k=1)  # a first-difference-like, non-identity Tikhonov matrix


def load_visium():
    design = pd.read_csv(REFERENCES / "visium_design.csv")
    folds = pd.read_csv(REFERENCES / "visium_foldid.csv")
    assert (design["spot"] == folds["spot"]).all()
    X = design[[c for c in design if c.startswith("lag_")]].to_numpy(dtype=float)
    return X, design["y"].to_numpy(dtype=float), folds["foldid"].to_numpy()


# =============================================================================================
# 1. The path
# =============================================================================================
def per_fold_glmcv(**params) -> GLMCV:
    """A GLMCV that solves each fold's path on its own (as for sparse or wide designs)."""
    return with_routes(GLMCV(**params), batched_max_features=0)


@pytest.fixture
def batched_solves(monkeypatch) -> list[int]:
    """The number of responses of every batched solve (the batched route's trace)."""
    sizes = []
    solve = BatchedNewtonCD.solve

    def recording(self, Y, *args, **kwargs):
        sizes.append(Y.shape[1])
        return solve(self, Y, *args, **kwargs)

    monkeypatch.setattr(BatchedNewtonCD, "solve", recording)
    return sizes


# Routes through GLMCV: all folds in one batched solve (small dense designs), or each fold's
# path on its own with or without strong-rule screening.
ROUTES = {"batched": (True, False), "screening": (False, True), "no-screening": (False, False)}


@pytest.mark.parametrize("tau", [None, "tau"], ids=["identity", "Tau"])
@pytest.mark.parametrize(
    "alpha,route",
    [
        (1.0, "batched"),
        (1.0, "screening"),
        (1.0, "no-screening"),
        (0.5, "batched"),
        (0.5, "screening"),
        (0.5, "no-screening"),
        (0.0, "batched"),
        (0.0, "no-screening"),
    ],
)
@pytest.mark.parametrize("family_id", list(FAMILIES))
def test_path_equals_single_fits_and_meets_kkt(
    family_id, alpha, route, tau, batched_solves
):  # fmt: skip
    distr, eta, _ = FAMILIES[family_id]
    tau = TAU if tau == "tau" else None
    batched, screening = ROUTES[route]
    X, y = simulate(family_id)
    model = (GLMCV if batched else per_fold_glmcv)(
        distr=distr,
        eta=eta,
        alpha=alpha,
        Tau=tau,
        cv=2,
        n_lambdas=10,
        lambda_min_ratio=1e-2,
        clip_coeffs=0.0,
        tol=1e-10,
        screening=screening,
        **QUIET,
    ).fit(X, y)
    # the route taken: the 2 folds and the full data in batches of 3, or no batch at all
    assert (set(batched_solves) == {3}) if batched else not batched_solves, batched_solves
    assert np.count_nonzero(model.coef_path_[-1]) >= 3  # the path reaches a non-trivial model
    for k, lam in enumerate(model.reg_lambda_path_):
        b0, beta = model.intercept_path_[k], model.coef_path_[k]
        assert kkt_by_hand(distr, eta, X, y, b0, beta, lam, alpha, tau) <= KKT_TOL, k
        single = GLM(
            distr=distr,
            eta=eta,
            alpha=alpha,
            Tau=tau,
            reg_lambda=lam,
            clip_coeffs=0.0,
            tol=1e-10,
            **QUIET,
        ).fit(X, y)
        assert (
            kkt_by_hand(distr, eta, X, y, single.beta0_, single.beta_, lam, alpha, tau) <= KKT_TOL
        )
        np.testing.assert_allclose(beta, single.beta_, rtol=0, atol=1e-8, err_msg=f"λ #{k}")
        np.testing.assert_allclose(b0, single.beta0_, rtol=0, atol=1e-8)
        if alpha > 0:  # the same zero pattern: screening never leaves out an active predictor
            np.testing.assert_array_equal(beta == 0, single.beta_ == 0)


def small_path_params(distr, eta) -> dict:
    """A short, tightly solved GLMCV: 3 folds, 10 λ down to 1e-2·λ_max, no clipping."""
    return dict(
        distr=distr,
        eta=eta,
        cv=3,
        n_lambdas=10,
        lambda_min_ratio=1e-2,
        clip_coeffs=0.0,
        tol=1e-11,
        **QUIET,
    )


@pytest.mark.parametrize("family_id", list(FAMILIES))
def test_batched_folds_equal_per_fold_paths(family_id, batched_solves):
    """One batched solve of all folds (sample weights 0/1) = each fold's path on its own."""
    distr, eta, _ = FAMILIES[family_id]
    X, y = simulate(family_id)
    params = small_path_params(distr, eta)
    batched = GLMCV(**params).fit(X, y)
    assert batched_solves and set(batched_solves) == {4}  # 3 folds and the full data
    batched_solves.clear()
    per_fold = per_fold_glmcv(**params).fit(X, y)
    assert not batched_solves
    np.testing.assert_allclose(batched.cv_scores_, per_fold.cv_scores_, rtol=1e-8)
    np.testing.assert_allclose(batched.coef_path_, per_fold.coef_path_, rtol=0, atol=1e-8)
    assert batched.best_index_ == per_fold.best_index_
    # Not only the same as each other: the held-out deviances of independent single-λ fits,
    # and the refit path optimal by hand (GLMCV's default α = 0.5).
    lams = batched.reg_lambda_path_
    glm_params = dict(distr=distr, eta=eta, clip_coeffs=0.0, tol=1e-11, **QUIET)
    by_hand = cv_scores_by_hand(X, y, batched.folds_, lams, "deviance", **glm_params)
    np.testing.assert_allclose(batched.cv_scores_, by_hand, rtol=1e-7, atol=1e-9)
    for k, lam in enumerate(lams):
        b0, beta = batched.intercept_path_[k], batched.coef_path_[k]
        assert kkt_by_hand(distr, eta, X, y, b0, beta, lam, 0.5) <= KKT_TOL, k


def test_batched_folds_count_repeated_training_indices(batched_solves):
    """A training index listed twice weighs twice in the batch, as the repeated row does."""
    X, y = simulate("poisson")
    n = len(y)
    rng = np.random.default_rng(3)
    folds = []
    for test in np.array_split(rng.permutation(n), 3):
        train = np.setdiff1d(np.arange(n), test)
        folds.append((np.concatenate([train, train[:20]]), test))  # 20 rows twice
    params = dict(eta=np.inf, cv=folds, n_lambdas=6, clip_coeffs=0.0, tol=1e-11, **QUIET)
    batched = GLMCV(**params).fit(X, y)
    assert batched_solves
    batched_solves.clear()
    per_fold = per_fold_glmcv(**params).fit(X, y)  # fits X[train] with the repeated rows
    assert not batched_solves
    np.testing.assert_allclose(batched.cv_scores_, per_fold.cv_scores_, rtol=1e-8)
    # ... and both equal single GLM fits on X[train] (rows repeated), deviance by hand.
    glm_params = dict(distr="poisson", eta=np.inf, clip_coeffs=0.0, tol=1e-11, **QUIET)
    lams = batched.reg_lambda_path_
    by_hand = cv_scores_by_hand(X, y, folds, lams, "deviance", **glm_params)
    np.testing.assert_allclose(batched.cv_scores_, by_hand, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("tau", [None, "tau"], ids=["identity", "Tau"])
def test_gaussian_ridge_path_equals_normal_equations(tau):
    """α = 0, gaussian: β(λ) solves (X̃ᵀX̃/n + λΓᵀΓ)β = X̃ᵀỹ/n on centred data."""
    tau = TAU if tau == "tau" else None
    X, y = simulate("gaussian")
    n = len(y)
    model = GLMCV(
        distr="gaussian", alpha=0.0, Tau=tau, cv=2, n_lambdas=8, clip_coeffs=0.0, tol=1e-12, **QUIET
    ).fit(X, y)
    Xc, yc = X - X.mean(0), y - y.mean()
    gram = np.eye(P) if tau is None else tau.T @ tau
    for k, lam in enumerate(model.reg_lambda_path_):
        beta = np.linalg.solve(Xc.T @ Xc / n + lam * gram, Xc.T @ yc / n)
        np.testing.assert_allclose(model.coef_path_[k], beta, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(model.intercept_path_[k], y.mean() - X.mean(0) @ beta, rtol=1e-9)


def _glmnet_fits():
    ref = json.loads((REFERENCES / "glmnet_fits.json").read_text())
    return ref["fits"]


def _fit_id(fit: dict) -> str:
    b0 = "b0" if fit["intercept"] else "nob0"
    return f"{fit['dataset']}-{fit['kind']}-a{fit['alpha']:.3g}-{b0}"


@pytest.mark.parametrize("screening", [True, False], ids=["screening", "no-screening"])
@pytest.mark.parametrize("fit", _glmnet_fits(), ids=_fit_id)
def test_fit_path_equals_r_glmnet(fit, screening):
    """fit_path on R glmnet's λ sequences (λ/α of J, see README §2) gives glmnet's β."""
    if fit["dataset"] == "synthetic":
        data = pd.read_csv(REFERENCES / "synthetic_data.csv")
        X, y = data[[f"x{j}" for j in range(1, 9)]].to_numpy(), data["y"].to_numpy(float)
    else:
        X, y, _ = load_visium()
    family = get_family(fit["family"], eta=np.inf)
    problem = Problem(family, ElasticNet(0.0, fit["alpha"]), X, y, fit["intercept"])
    options = {"learning_rate": 0.2, "max_iter": 1000, "tol": 1e-13, "random_seed": 0}
    res = fit_path(problem, np.asarray(fit["lambda"]), "irls-cd", options, screening=screening)
    beta_r = np.asarray(fit["beta"])
    for k, lam in enumerate(fit["lambda"]):
        assert (
            kkt_by_hand(
                fit["family"],
                np.inf,
                X,
                y,
                res.intercepts[k],
                res.coefs[k],
                lam,
                fit["alpha"],
                fit_intercept=fit["intercept"],
            )
            <= 1e-10
        )
    scale = max(1.0, np.abs(beta_r).max())
    np.testing.assert_allclose(res.coefs, beta_r, rtol=0, atol=1e-7 * scale)
    if fit["intercept"]:
        np.testing.assert_allclose(res.intercepts, fit["a0"], rtol=0, atol=1e-7 * scale)


@pytest.mark.parametrize("fit_intercept", [True, False], ids=["b0", "no-b0"])
@pytest.mark.parametrize("alpha", [0.5, 1.0])
@pytest.mark.parametrize("family_id", list(FAMILIES))
def test_lambda_max_is_smallest_lambda_zeroing_beta(family_id, alpha, fit_intercept):
    distr, eta, _ = FAMILIES[family_id]
    X, y = simulate(family_id)
    if distr == "gaussian" and not fit_intercept:
        y = y + 2.0  # the null model z = 0 is then far from y
    lam_max = lambda_max_by_hand(distr, eta, X, y, alpha, fit_intercept)
    model = GLMCV(
        distr=distr,
        eta=eta,
        alpha=alpha,
        cv=2,
        n_lambdas=7,
        lambda_min_ratio=0.05,
        fit_intercept=fit_intercept,
        clip_coeffs=0.0,
        tol=1e-10,
        **QUIET,
    ).fit(X, y)
    np.testing.assert_allclose(
        model.reg_lambda_path_, np.geomspace(lam_max, 0.05 * lam_max, 7), rtol=1e-12
    )
    assert np.all(model.coef_path_[0] == 0.0)
    common = dict(
        distr=distr,
        eta=eta,
        alpha=alpha,
        fit_intercept=fit_intercept,
        clip_coeffs=0.0,
        tol=1e-10,
        **QUIET,
    )
    at_max = GLM(reg_lambda=lam_max, **common).fit(X, y)
    assert np.all(at_max.beta_ == 0.0)
    assert (
        kkt_by_hand(
            distr,
            eta,
            X,
            y,
            at_max.beta0_,
            at_max.beta_,
            lam_max,
            alpha,
            fit_intercept=fit_intercept,
        )
        <= KKT_TOL
    )
    below = GLM(reg_lambda=0.99 * lam_max, **common).fit(X, y)
    assert np.count_nonzero(below.beta_) >= 1
    # ... and necessarily so: the null model violates the KKT conditions at 0.99·λ_max.
    null_b0 = at_max.beta0_
    assert (
        kkt_by_hand(
            distr,
            eta,
            X,
            y,
            null_b0,
            np.zeros(P),
            0.99 * lam_max,
            alpha,
            fit_intercept=fit_intercept,
        )
        > 1e-4 * lam_max
    )


def test_lambda_max_ridge_uses_glmnet_convention():
    X, y = simulate("poisson")
    model = GLMCV(alpha=0.0, eta=np.inf, cv=2, n_lambdas=3, **QUIET).fit(X, y)
    expected = lambda_max_by_hand("poisson", np.inf, X, y, alpha=1e-3)
    np.testing.assert_allclose(model.reg_lambda_path_[0], expected, rtol=1e-12)


def test_lambdas_above_lambda_max_give_null_model():
    X, y = simulate("poisson")
    lam_max = lambda_max_by_hand("poisson", np.inf, X, y, 0.5)
    model = GLMCV(
        eta=np.inf,
        reg_lambda=[10 * lam_max, 2 * lam_max, lam_max, 0.5 * lam_max],
        cv=2,
        clip_coeffs=0.0,
        tol=1e-10,
        **QUIET,
    ).fit(X, y)
    assert np.all(model.coef_path_[:3] == 0.0)
    np.testing.assert_allclose(model.intercept_path_[:3], np.log(y.mean()), rtol=1e-12)
    assert np.count_nonzero(model.coef_path_[3]) > 0


def test_given_reg_lambda_is_used_as_given_sorted_decreasingly():
    X, y = simulate("poisson")
    given = [0.01, 0.3, 0.1, 0.003, 0.03]
    common = dict(eta=np.inf, cv=3, clip_coeffs=0.0, tol=1e-10, **QUIET)
    model = GLMCV(reg_lambda=given, **common).fit(X, y)
    np.testing.assert_array_equal(model.reg_lambda_path_, [0.3, 0.1, 0.03, 0.01, 0.003])
    presorted = GLMCV(reg_lambda=sorted(given, reverse=True), **common).fit(X, y)
    np.testing.assert_allclose(model.cv_scores_, presorted.cv_scores_, rtol=1e-12)
    np.testing.assert_allclose(model.coef_path_, presorted.coef_path_, rtol=0, atol=1e-12)
    for k, lam in enumerate(model.reg_lambda_path_):
        single = GLM(reg_lambda=lam, eta=np.inf, clip_coeffs=0.0, tol=1e-10, **QUIET).fit(X, y)
        np.testing.assert_allclose(model.coef_path_[k], single.beta_, rtol=0, atol=1e-8)
    # A scalar is a one-value path.
    one = GLMCV(reg_lambda=0.1, **common).fit(X, y)
    np.testing.assert_array_equal(one.reg_lambda_path_, [0.1])
    assert one.cv_scores_.shape == (3, 1) and one.reg_lambda_opt_ == 0.1


def strong_rule_case(distr: str, seed: int):
    """Correlated design (ρ = 0.9 between neighbours), n = 30, p = 8."""
    rng = np.random.default_rng(seed)
    n, p = 30, 8
    corr = 0.9 ** np.abs(np.subtract.outer(np.arange(p), np.arange(p)))
    X = rng.standard_normal((n, p)) @ np.linalg.cholesky(corr).T
    beta = rng.standard_normal(p) * (rng.random(p) < 0.5)
    if distr == "gaussian":
        return X, X @ beta + 0.5 * rng.standard_normal(n)
    return X, rng.poisson(np.exp(0.5 + 0.4 * X @ beta)).astype(float)


@pytest.mark.parametrize(
    "distr,seed,alpha", [("gaussian", 1, 0.5), ("gaussian", 73, 1.0), ("poisson", 3, 0.5)]
)
def test_strong_rule_violators_are_brought_back(distr, seed, alpha, monkeypatch):
    X, y = strong_rule_case(distr, seed)
    p = X.shape[1]
    family = get_family(distr, eta=np.inf)
    problem = Problem(family, ElasticNet(0.0, alpha), X, y, True)
    lams = np.geomspace(
        lambda_max_by_hand(distr, np.inf, X, y, alpha),
        0.01 * lambda_max_by_hand(distr, np.inf, X, y, alpha),
        10,
    )
    options = {"learning_rate": 0.2, "max_iter": 1000, "tol": 1e-12, "random_seed": 0}
    plain = fit_path(problem, lams, "irls-cd", options, screening=False)

    # Precondition, shown here from the formulas: the sequential strong rule
    # |∇_j J(β̂(λ_{k−1}))| < α(2λ_k − λ_{k−1}) discards some j that is non-zero at λ_k.
    mistakes = []
    for k in range(1, len(lams)):
        _, g = smooth_gradient(
            distr, np.inf, X, y, plain.intercepts[k - 1], plain.coefs[k - 1], lams[k - 1], alpha
        )
        discarded = (np.abs(g) < alpha * (2 * lams[k] - lams[k - 1])) & (plain.coefs[k - 1] == 0)
        mistakes += [(k, j) for j in np.flatnonzero(discarded & (plain.coefs[k] != 0))]
    assert mistakes, "test design no longer makes the strong rule discard an active predictor"

    sizes = []  # number of predictors of every problem handed to the solver
    real_solve = path_module.solve
    monkeypatch.setattr(
        path_module,
        "solve",
        lambda prob, *a, **kw: sizes.append(prob.n_features) or real_solve(prob, *a, **kw),
    )
    screened = fit_path(problem, lams, "irls-cd", options, screening=True)
    assert any(s < p for s in sizes)  # screening did restrict some problems

    np.testing.assert_allclose(screened.coefs, plain.coefs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(screened.intercepts, plain.intercepts, rtol=0, atol=1e-9)
    for k, j in mistakes:
        assert screened.coefs[k, j] != 0.0
    for k, lam in enumerate(lams):
        assert (
            kkt_by_hand(distr, np.inf, X, y, screened.intercepts[k], screened.coefs[k], lam, alpha)
            <= KKT_TOL
        )


# =============================================================================================
# 2. The CV curve against R cv.glmnet (Visium design, fixed folds, fixed λ)
# =============================================================================================
CV_REF = json.loads((REFERENCES / "cv_glmnet.json").read_text())
# The plain gaussian α = 0.5 case solves a different objective in every fold (README §3);
# "gaussian_mapped" is its comparable counterpart.
CV_CASES = {
    f"{c['kind']}-a{c['alpha']:g}": c
    for c in CV_REF["cases"]
    if not (c["kind"] == "gaussian" and c["alpha"] < 1)
}
CV_REL_TOL = 1e-6


def _cv_glmnet_fit(case: dict, select: str) -> GLMCV:
    X, y, foldid = load_visium()
    return GLMCV(
        distr=case["family"],
        alpha=case["alpha"],
        eta=np.inf,
        reg_lambda=case["lambda"],
        cv=PredefinedSplit(foldid - 1),
        clip_coeffs=0.0,
        tol=1e-10,
        select=select,
        **QUIET,
    ).fit(X, y)


def _case_and_model(name, cv_fits, select):
    return CV_CASES[name], cv_fits[(name, select)]


@pytest.fixture(scope="module")
def cv_fits():
    return {
        (name, select): _cv_glmnet_fit(case, select)
        for name, case in CV_CASES.items()
        for select in ("best", "one_se")
    }


def test_cv_cases_cover_the_comparable_references():
    assert set(CV_CASES) == {"poisson-a0.5", "poisson-a1", "gaussian_mapped-a0.5", "gaussian-a1"}


@pytest.mark.parametrize("name", list(CV_CASES))
def test_cv_curve_matches_cv_glmnet(name, cv_fits):
    """cvm = K·scores_/n.

    stglm: scores_[l] = (1/K)·Σ_k D_kl, D_kl = Σ_{i∈k} d_il (the fold's summed unit
    deviance; gaussian deviance = RSS, i.e. d = (y − μ)², and poisson d = 2[y log(y/μ) − (y−μ)]).
    cv.glmnet: cvm_l = Σ_k n_k·(D_kl/n_k) / Σ_k n_k = Σ_k D_kl / n (its gaussian "deviance"
    is the mean squared error, the same d). Hence cvm = K·scores_/n for any fold sizes.
    """
    case, model = CV_CASES[name], cv_fits[(name, "best")]
    X, y, foldid = load_visium()
    n, K = len(y), len(case["fold_sizes"])
    np.testing.assert_allclose(model.reg_lambda_path_, case["lambda"], rtol=1e-15)
    np.testing.assert_allclose(K * model.scores_ / n, case["cvm"], rtol=CV_REL_TOL, atol=0)
    # Per fold: cv_scores_[k] / n_k = cv.glmnet's per-fold mean deviance.
    fold_sizes = np.asarray(case["fold_sizes"])
    np.testing.assert_array_equal(fold_sizes, np.bincount(foldid)[1:])
    np.testing.assert_allclose(
        model.cv_scores_ / fold_sizes[:, None], case["fold_mean_deviance"], rtol=CV_REL_TOL, atol=0
    )


@pytest.mark.parametrize("name", list(CV_CASES))
def test_cv_standard_error_matches_cvsd(name, cv_fits):
    """With equal fold sizes n/K (5 × 80 here) cvsd = K·scores_se_/n exactly.

    cvsd = sqrt(Σ_k n_k(D_k/n_k − cvm)² / n / (K−1)); with n_k = n/K,
    D_k/n_k − cvm = (K/n)(D_k − D̄), so cvsd = (K/n)·std(D, ddof=1)/√K = (K/n)·scores_se_.
    """
    case, model = _case_and_model(name, cv_fits, "best")
    n, K = sum(case["fold_sizes"]), len(case["fold_sizes"])
    assert len(set(case["fold_sizes"])) == 1
    np.testing.assert_allclose(K * model.scores_se_ / n, case["cvsd"], rtol=CV_REL_TOL, atol=0)


@pytest.mark.parametrize("name", list(CV_CASES))
def test_lambda_min_matches_cv_glmnet(name, cv_fits):
    case, model = _case_and_model(name, cv_fits, "best")
    assert model.best_index_ == case["index_min"] - 1
    assert model.reg_lambda_opt_ == pytest.approx(case["lambda_min"], rel=1e-14)
    assert model.glm_.reg_lambda == model.reg_lambda_opt_


def cv_glmnet_one_se_rule(cv_scores: np.ndarray, fold_sizes: np.ndarray) -> int:
    """cv.glmnet's lambda.1se (glmnet 4.1-6 cvstats/getOptcv) from stglm's summed fold deviances.

    cvraw = D_k/n_k, cvm = weighted mean (weights n_k), cvsd = sqrt(weighted var/(K−1));
    lambda.1se = the largest λ with cvm ≤ cvm[min] + cvsd[min] (path decreasing: first index).
    """
    w = fold_sizes.astype(float)
    cvraw = cv_scores / w[:, None]
    cvm = (w[:, None] * cvraw).sum(0) / w.sum()
    cvsd = np.sqrt((w[:, None] * (cvraw - cvm) ** 2).sum(0) / w.sum() / (len(w) - 1))
    imin = int(np.flatnonzero(cvm <= cvm.min())[0])
    return int(np.flatnonzero(cvm <= cvm[imin] + cvsd[imin])[0])


@pytest.mark.parametrize("name", list(CV_CASES))
def test_lambda_1se_matches_cv_glmnet(name, cv_fits):
    case, model = _case_and_model(name, cv_fits, "one_se")
    assert case["index_1se"] != case["index_min"]  # the reference distinguishes the two rules
    # Equal fold sizes: the rules coincide, so compare with R directly ...
    assert model.best_index_ == case["index_1se"] - 1
    assert model.reg_lambda_opt_ == pytest.approx(case["lambda_1se"], rel=1e-14)
    # ... and with cv.glmnet's fold-size-weighted rule reimplemented on our fold scores.
    fold_sizes = np.asarray(case["fold_sizes"])
    assert model.best_index_ == cv_glmnet_one_se_rule(model.cv_scores_, fold_sizes)
    # The CV part does not depend on the selection rule.
    np.testing.assert_array_equal(model.cv_scores_, cv_fits[(name, "best")].cv_scores_)


@pytest.mark.parametrize("name", list(CV_CASES))
def test_fold_fits_equal_cv_glmnet_fold_fits(name):
    """The path on each training fold gives R's fold coefficients (cv_glmnet.json fold_beta)."""
    case = CV_CASES[name]
    X, y, foldid = load_visium()
    family = get_family(case["family"], eta=np.inf)
    options = {"learning_rate": 0.2, "max_iter": 1000, "tol": 1e-12, "random_seed": 0}
    for k in range(len(case["fold_sizes"])):
        train = foldid != k + 1
        problem = Problem(family, ElasticNet(0.0, case["alpha"]), X[train], y[train], True)
        res = fit_path(problem, np.asarray(case["lambda"]), "irls-cd", options)
        np.testing.assert_allclose(res.coefs, case["fold_beta"][k], rtol=0, atol=1e-8)
        np.testing.assert_allclose(res.intercepts, case["fold_a0"][k], rtol=0, atol=1e-8)


# =============================================================================================
# 3. Reproducibility, the forms of cv, errors
# =============================================================================================
@pytest.fixture(scope="module")
def poisson_data():
    return simulate("poisson", n=90, seed=5)


def _fit(X, y, **kw):
    params = dict(eta=np.inf, n_lambdas=8, cv=4, **QUIET)
    params.update(kw)
    return GLMCV(**params).fit(X, y)


def _assert_same_fit(a: GLMCV, b: GLMCV):
    assert len(a.folds_) == len(b.folds_)
    for (tr_a, te_a), (tr_b, te_b) in zip(a.folds_, b.folds_, strict=True):
        np.testing.assert_array_equal(tr_a, tr_b)
        np.testing.assert_array_equal(te_a, te_b)
    np.testing.assert_array_equal(a.reg_lambda_path_, b.reg_lambda_path_)
    np.testing.assert_array_equal(a.cv_scores_, b.cv_scores_)
    np.testing.assert_array_equal(a.coef_path_, b.coef_path_)
    assert a.reg_lambda_opt_ == b.reg_lambda_opt_
    np.testing.assert_array_equal(a.beta_, b.beta_)
    assert a.beta0_ == b.beta0_


def test_identical_calls_give_identical_results(poisson_data):
    X, y = poisson_data
    _assert_same_fit(_fit(X, y), _fit(X, y))


def test_refitting_the_same_object_gives_the_same_result(poisson_data):
    X, y = poisson_data
    model = _fit(X, y)
    first = clone(model).fit(X, y)
    model.fit(X[::-1], y[::-1])  # something else in between
    model.fit(X, y)
    _assert_same_fit(model, first)


def test_int_cv_gives_seeded_shuffled_kfold(poisson_data):
    X, y = poisson_data
    model = _fit(X, y, cv=4, random_seed=7)
    expected = list(KFold(4, shuffle=True, random_state=7).split(X))
    test_sets = [te for _, te in model.folds_]
    for (tr, te), (_, te_e) in zip(model.folds_, expected, strict=True):
        np.testing.assert_array_equal(te, te_e)
        np.testing.assert_array_equal(tr, np.setdiff1d(np.arange(len(y)), te))
    # a partition of the samples, shuffled (not contiguous blocks)
    np.testing.assert_array_equal(np.sort(np.concatenate(test_sets)), np.arange(len(y)))
    assert not np.array_equal(test_sets[0], np.arange(len(test_sets[0])))


def test_different_random_seed_gives_different_folds(poisson_data):
    X, y = poisson_data
    a, b = _fit(X, y, random_seed=1), _fit(X, y, random_seed=2)
    assert any(
        not np.array_equal(ta, tb) for (_, ta), (_, tb) in zip(a.folds_, b.folds_, strict=True)
    )
    assert not np.array_equal(a.cv_scores_, b.cv_scores_)


def test_cv_forms_are_equivalent(poisson_data):
    """int, PredefinedSplit, KFold and a list of (train, test) give the same folds and scores."""
    X, y = poisson_data
    ref = _fit(X, y, cv=3, random_seed=11)
    fold_of = np.empty(len(y), dtype=int)
    for k, (_, te) in enumerate(ref.folds_):
        fold_of[te] = k
    as_list = [(tr.copy(), te.copy()) for tr, te in ref.folds_]
    for cv in (PredefinedSplit(fold_of), KFold(3, shuffle=True, random_state=11), as_list):
        other = _fit(X, y, cv=cv, random_seed=999)  # the seed must not matter for these
        _assert_same_fit(other, ref)
    # An unshuffled splitter is used as given: contiguous blocks.
    blocks = _fit(X, y, cv=KFold(3))
    np.testing.assert_array_equal(blocks.folds_[0][1], np.arange(30))


@pytest.mark.parametrize(
    "params,error,match",
    [
        ({"cv": 1}, ValueError, "cv must be between 2"),
        ({"cv": 0}, ValueError, "cv must be between 2"),
        ({"cv": -3}, ValueError, "cv must be between 2"),
        ({"cv": 91}, ValueError, "cv must be between 2"),
        ({"cv": 5.0}, TypeError, "cv must be an int"),
        ({"cv": "5"}, TypeError, "cv must be an int"),
        ({"cv": True}, TypeError, "cv must be an int"),
        ({"cv": KFold(200)}, ValueError, "cv could not be used"),
        ({"cv": [(np.arange(45), np.arange(45, 90))]}, ValueError, "at least 2 folds"),
        (
            {"cv": [(np.arange(45), np.arange(45, 95)), (np.arange(45, 90), np.arange(45))]},
            ValueError,
            "outside the data",
        ),
        ({"cv": [(np.arange(90), np.array([], dtype=int))] * 2}, ValueError, "empty fold"),
        ({"reg_lambda": [0.1, -0.01]}, ValueError, "reg_lambda"),
        ({"reg_lambda": -0.1}, ValueError, "reg_lambda"),
        ({"reg_lambda": []}, ValueError, "reg_lambda"),
        ({"reg_lambda": [0.1, np.nan]}, ValueError, "reg_lambda"),
        ({"reg_lambda": np.nan}, ValueError, "reg_lambda"),
        ({"reg_lambda": [0.1, np.inf]}, ValueError, "reg_lambda"),
        ({"reg_lambda": [[0.1, 0.01]]}, ValueError, "reg_lambda"),
        ({"reg_lambda": "abc"}, TypeError, "reg_lambda"),
        ({"reg_lambda": "0.1"}, (TypeError, ValueError), "reg_lambda"),
        ({"n_lambdas": 0}, ValueError, "n_lambdas"),
        ({"n_lambdas": -1}, ValueError, "n_lambdas"),
        ({"n_lambdas": 2.5}, TypeError, "n_lambdas"),
        ({"select": "min"}, ValueError, "select"),
        ({"lambda_min_ratio": 0.0}, ValueError, "lambda_min_ratio"),
        ({"lambda_min_ratio": 1.0}, ValueError, "lambda_min_ratio"),
    ],
)
def test_bad_parameters_raise_clear_errors(poisson_data, params, error, match):
    X, y = poisson_data
    with pytest.raises(error, match=match):
        GLMCV(**params, **QUIET).fit(X, y)


def test_clone_and_grid_search(poisson_data):
    X, y = poisson_data
    base = GLMCV(eta=np.inf, n_lambdas=6, cv=3, score_metric="pseudo_r2", **QUIET)
    copy = clone(base)
    assert copy.get_params() == base.get_params() and not hasattr(copy, "glm_")
    outer = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(base, {"alpha": [0.2, 1.0]}, cv=outer).fit(X, y)
    # Each mean test score is the mean pseudo-R² of a clone fitted on the outer training part.
    for i, alpha in enumerate(search.cv_results_["param_alpha"]):
        manual = [
            clone(base).set_params(alpha=alpha).fit(X[tr], y[tr]).score(X[te], y[te])
            for tr, te in outer.split(X)
        ]
        assert search.cv_results_["mean_test_score"][i] == pytest.approx(np.mean(manual), rel=1e-12)
    best = int(np.argmax(search.cv_results_["mean_test_score"]))  # pseudo-R²: higher is better
    assert search.best_params_["alpha"] == search.cv_results_["param_alpha"][best]
    assert isinstance(search.best_estimator_, GLMCV) and hasattr(search.best_estimator_, "glm_")


def test_training_fold_without_counts_warns():
    X, y = simulate("poisson")
    y = np.zeros_like(y)
    y[:3] = [1.0, 2.0, 1.0]
    folds = [
        (np.arange(3, len(y)), np.arange(3)),
        (np.arange(len(y) // 2), np.arange(len(y) // 2, len(y))),
    ]
    with pytest.warns(UserWarning, match=r"training fold\(s\) \[0\] have no counts"):
        GLMCV(eta=np.inf, cv=folds, n_lambdas=4, **QUIET).fit(X, y)


def test_n_jobs_does_not_change_the_result(poisson_data, batched_solves):
    """The folds' paths solved in parallel (the per-fold route) = solved one after another."""
    X, y = poisson_data
    params = dict(eta=np.inf, n_lambdas=8, cv=4, **QUIET)
    parallel = per_fold_glmcv(n_jobs=2, **params).fit(X, y)
    _assert_same_fit(parallel, per_fold_glmcv(n_jobs=None, **params).fit(X, y))
    assert not batched_solves


def test_sparse_X_gives_the_dense_result(poisson_data):
    import scipy.sparse as sp

    X, y = poisson_data
    Xs = X.copy()
    Xs[np.abs(Xs) < 0.5] = 0.0
    dense = _fit(Xs, y, clip_coeffs=0.0, tol=1e-10)
    sparse = _fit(sp.csr_matrix(Xs), y, clip_coeffs=0.0, tol=1e-10)
    np.testing.assert_allclose(sparse.cv_scores_, dense.cv_scores_, rtol=1e-8)
    np.testing.assert_allclose(sparse.coef_path_, dense.coef_path_, rtol=0, atol=1e-8)
    assert sparse.best_index_ == dense.best_index_


# =============================================================================================
# 4. Selection, delegation, attributes
# =============================================================================================
def cv_scores_by_hand(X, y, folds, lams, metric, **glm_params) -> np.ndarray:
    """Held-out score of independent single-λ GLM fits, with deviance written out here."""
    distr = glm_params["distr"]
    eta = glm_params.get("eta", np.inf)
    out = np.empty((len(folds), len(lams)))
    for k, (tr, te) in enumerate(folds):
        for j, lam in enumerate(lams):
            m = GLM(reg_lambda=lam, **glm_params).fit(X[tr], y[tr])
            mu, _ = mean_and_residual(distr, eta, y[te], m.beta0_ + X[te] @ m.beta_)
            dev = unit_deviance(distr, y[te], mu).sum()
            if metric == "deviance":
                out[k, j] = dev
            else:
                null = unit_deviance(distr, y[te], np.full(len(te), y[tr].mean())).sum()
                out[k, j] = 1.0 - dev / null
    return out


@pytest.mark.parametrize("metric", ["deviance", "pseudo_r2"])
@pytest.mark.parametrize("family_id", ["gaussian", "poisson"])
def test_cv_scores_equal_independent_fold_fits(family_id, metric):
    distr, eta, _ = FAMILIES[family_id]
    X, y = simulate(family_id, n=80, seed=2)
    params = dict(distr=distr, eta=eta, clip_coeffs=0.0, tol=1e-10, **QUIET)
    model = GLMCV(n_lambdas=6, cv=3, score_metric=metric, **params).fit(X, y)
    by_hand = cv_scores_by_hand(X, y, model.folds_, model.reg_lambda_path_, metric, **params)
    np.testing.assert_allclose(model.cv_scores_, by_hand, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(model.scores_, by_hand.mean(0), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(
        model.scores_se_, by_hand.std(0, ddof=1) / np.sqrt(3), rtol=1e-6, atol=1e-9
    )


def one_se_by_hand(cv_scores: np.ndarray, higher_is_better: bool) -> tuple[int, int]:
    """(best, one-SE) indices on a decreasing path, from the fold scores only."""
    K = cv_scores.shape[0]
    mean = cv_scores.mean(0)
    se = cv_scores.std(0, ddof=1) / np.sqrt(K)
    if higher_is_better:
        best = int(np.flatnonzero(mean == mean.max())[0])
        ok = mean >= mean[best] - se[best]
    else:
        best = int(np.flatnonzero(mean == mean.min())[0])
        ok = mean <= mean[best] + se[best]
    return best, int(np.flatnonzero(ok)[0])  # first = largest λ


@pytest.mark.parametrize("metric", ["deviance", "pseudo_r2"])
def test_selection_best_and_one_se(metric):
    X, y = simulate("poisson", n=100, seed=4)
    common = dict(eta=np.inf, n_lambdas=15, cv=5, score_metric=metric, **QUIET)
    best_model = GLMCV(select="best", **common).fit(X, y)
    se_model = GLMCV(select="one_se", **common).fit(X, y)
    np.testing.assert_array_equal(best_model.cv_scores_, se_model.cv_scores_)
    best, one_se = one_se_by_hand(best_model.cv_scores_, metric == "pseudo_r2")
    assert one_se < best, "test data must make the one-SE rule choose a larger λ"
    if metric == "deviance":
        assert best == int(np.argmin(best_model.scores_))
    else:
        assert best == int(np.argmax(best_model.scores_))
    assert best_model.best_index_ == best
    assert best_model.reg_lambda_opt_ == best_model.reg_lambda_path_[best]
    assert se_model.best_index_ == one_se
    assert se_model.reg_lambda_opt_ == se_model.reg_lambda_path_[one_se]
    assert se_model.reg_lambda_opt_ > best_model.reg_lambda_opt_


def test_predict_fit_predict_score_delegate_to_glm(poisson_data):
    X, y = poisson_data
    for metric in ("deviance", "pseudo_r2"):
        model = _fit(X, y, score_metric=metric)
        glm = model.glm_
        assert isinstance(glm, GLM) and glm.reg_lambda == model.reg_lambda_opt_
        for name in GLM._get_param_names():
            if name != "reg_lambda":
                assert glm.get_params()[name] is getattr(model, name) or glm.get_params()[
                    name
                ] == getattr(model, name)
        np.testing.assert_array_equal(model.beta_, glm.beta_)
        assert model.beta0_ == glm.beta0_
        np.testing.assert_array_equal(model.predict(X), glm.predict(X))
        assert model.score(X, y) == glm.score(X, y)
        np.testing.assert_array_equal(clone(model).fit_predict(X, y), glm.predict(X))
        # glm_ is the fit at the chosen λ: an independent GLM there agrees.
        own = GLM(**{**glm.get_params(), "clip_coeffs": 0.0, "tol": 1e-10}).fit(X, y)
        exact = _fit(X, y, score_metric=metric, clip_coeffs=0.0, tol=1e-10)
        np.testing.assert_allclose(exact.beta_, own.beta_, rtol=0, atol=1e-8)
        np.testing.assert_allclose(exact.coef_path_[exact.best_index_], own.beta_, atol=1e-8)
        # predict by hand
        np.testing.assert_allclose(
            model.predict(X), np.exp(model.beta0_ + X @ model.beta_), rtol=1e-12
        )


def test_attributes_have_documented_shapes(poisson_data):
    X, y = poisson_data
    n, p = X.shape
    model = _fit(X, y, n_lambdas=9, cv=4)
    assert model.reg_lambda_path_.shape == (9,)
    assert np.all(np.diff(model.reg_lambda_path_) < 0)
    assert model.cv_scores_.shape == (4, 9)
    assert model.scores_.shape == model.scores_se_.shape == (9,)
    assert model.coef_path_.shape == (9, p)
    assert model.intercept_path_.shape == (9,)
    assert len(model.folds_) == 4 and all(len(f) == 2 for f in model.folds_)
    assert model.beta_.shape == (p,)
    assert isinstance(model.beta0_, float)
    assert isinstance(model.reg_lambda_opt_, float)
    assert isinstance(model.best_index_, int) and 0 <= model.best_index_ < 9
    assert model.ynull_ == pytest.approx(y.mean(), rel=1e-15)
    assert isinstance(model.n_iter_, int) and model.n_iter_ > 0
    assert model.n_features_in_ == p
    assert model.predict(X).shape == (n,)
    # clip_coeffs is applied to the path as to beta_
    clipped = model.coef_path_[model.coef_path_ != 0]
    assert np.all(np.abs(clipped) >= model.clip_coeffs)


def test_unfitted_model_raises_not_fitted(poisson_data):
    X, _ = poisson_data
    with pytest.raises(NotFittedError):
        GLMCV().predict(X)


def test_dataframe_feature_names(poisson_data):
    X, y = poisson_data
    df = pd.DataFrame(X, columns=[f"gene{j}" for j in range(X.shape[1])])
    model = _fit(df, y)
    np.testing.assert_array_equal(model.feature_names_in_, df.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(df)


def test_glm_inherits_feature_names(poisson_data):
    X, y = poisson_data
    df = pd.DataFrame(X, columns=[f"gene{j}" for j in range(X.shape[1])])
    model = _fit(df, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.glm_.predict(df)
    np.testing.assert_array_equal(model.glm_.feature_names_in_, df.columns)


@pytest.mark.parametrize("family_id", list(FAMILIES))
def test_first_step_with_the_previous_hessian_reaches_the_same_path(family_id, monkeypatch):
    """The batched path's first step at each λ may use the previous λ's last Hessian: the
    step changes, the optimum (KKT, checked by hand) and the CV curve do not."""
    from stglm._solvers._inner import SharedGramCD
    from stglm._solvers.batched import SharedDesign

    distr, eta, _ = FAMILIES[family_id]
    X, y = simulate(family_id)
    params = small_path_params(distr, eta)
    calls = {"directions": 0, "products": 0}  # Newton directions, Hessian products
    minimise, hessians = SharedGramCD.minimise, SharedDesign.hessians

    def counting(name, method):
        def counted(*args, **kwargs):
            calls[name] += 1
            return method(*args, **kwargs)

        return counted

    monkeypatch.setattr(SharedGramCD, "minimise", counting("directions", minimise))
    monkeypatch.setattr(SharedDesign, "hessians", counting("products", hessians))
    fits, counts = {}, {}
    for stale in (True, False):
        calls.update(directions=0, products=0)
        fits[stale] = with_routes(GLMCV(**params), stale_first=stale).fit(X, y)
        counts[stale] = dict(calls)
    # the route: a fresh product for every direction, or none for each λ's first step
    assert counts[False]["products"] == counts[False]["directions"]
    assert counts[True]["products"] < counts[True]["directions"]
    np.testing.assert_allclose(fits[True].coef_path_, fits[False].coef_path_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fits[True].cv_scores_, fits[False].cv_scores_, rtol=1e-8)
    model = fits[True]
    for k, lam in enumerate(model.reg_lambda_path_):
        kkt = kkt_by_hand(
            distr, eta, X, y, model.intercept_path_[k], model.coef_path_[k], lam, 0.5, None
        )
        assert kkt <= KKT_TOL, k


def test_batch_only_when_its_working_arrays_fit_the_budget():
    """Many folds on many samples (leave-one-out) take the per-fold route, not one batch."""
    model = GLMCV(**QUIET)
    assert model._batchable(np.zeros((2_000, 20)), 5)
    assert not model._batchable(np.zeros((5_000, 5)), 5_000)  # 5,001 columns × 5,000 rows
    assert not model._batchable(np.zeros((100, 65)), 5)  # too many predictors
    assert not GLMCV(solver="batch-gradient", **QUIET)._batchable(np.zeros((100, 5)), 5)
