"""The exact solver against numbers produced by R (never by stglm).

- R's ``glm`` as shipped inside statsmodels' wheel
  (``statsmodels/genmod/tests/results/results_glm.py``): ``Cpunish`` (Poisson, log link) and
  ``Longley`` (gaussian), both badly scaled designs, fitted without penalty.
- ``tests/references/glm_softplus.json``: R ``glm`` with a softplus link for the Poisson,
  negative-binomial (θ fixed) and Gamma likelihoods, with and without intercept.
- ``tests/references/glmnet_fits.json``: ``glmnet`` on the α × λ grid, synthetic and Visium
  designs, with and without intercept. The stored ``alpha``/``lambda`` are the parameters of
  stglm's objective J (glmnet's gaussian λ rescaling is undone; see references/README.md).

Every comparison also checks the KKT residual with the helper written in ``conftest.py``
from docs/SEMANTICS.md, so a failure says whether the solver or the reference is off.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ref_kkt
from numpy.testing import assert_allclose
from scipy.special import gammaln

from stglm import GLM

REF = Path(__file__).parent / "references"


def exact(**kw):
    """An unclipped, silent GLM: clip_coeffs=0 keeps the optimum itself."""
    return GLM(clip_coeffs=0.0, verbose=False, **kw)


def coefs(m, fit_intercept=True):
    return np.r_[m.beta0_, m.beta_] if fit_intercept else np.asarray(m.beta_)


# ---------------------------------------------------------------------------------------------
# R glm results shipped with statsmodels
# ---------------------------------------------------------------------------------------------
R = pytest.importorskip("statsmodels.genmod.tests.results.results_glm")
datasets = pytest.importorskip("statsmodels.datasets")


def cpunish_data():
    """Exactly statsmodels' TestGlmPoisson: log of column 3 (VC100k96), constant appended."""
    data = datasets.cpunish.load()
    X = np.array(data.exog, dtype=float)  # INCOME, PERPOVERTY, PERBLACK, VC100k96, SOUTH, DEGREE
    X[:, 3] = np.log(X[:, 3])
    return X, np.array(data.endog, dtype=float)


def longley_data():
    """Exactly statsmodels' TestGlmGaussian (constant appended last)."""
    data = datasets.longley.load()
    return np.array(data.exog, dtype=float), np.array(data.endog, dtype=float)


def longley_exact_ols():
    """OLS on Longley by exact rational arithmetic (normal equations over Fractions).

    Equals NIST StRD's certified values (b0 = -3482258.63459582, b1 = 15.0618722713733, ...).
    Returned as [slopes..., intercept], statsmodels' order.
    """
    X, y = longley_data()
    A = [[Fraction(1)] + [Fraction(v) for v in row] for row in X.tolist()]
    b = [Fraction(v) for v in y.tolist()]
    m = len(A[0])
    M = [
        [sum(r[i] * r[j] for r in A) for j in range(m)]
        + [sum(r[i] * bk for r, bk in zip(A, b, strict=True))]
        for i in range(m)
    ]
    for i in range(m):  # Gauss-Jordan, exact
        for k in range(m):
            if k != i:
                f = M[k][i] / M[i][i]
                M[k] = [a - f * c for a, c in zip(M[k], M[i], strict=True)]
    sol = [float(M[i][m] / M[i][i]) for i in range(m)]
    return np.array(sol[1:] + sol[:1])


def test_cpunish_poisson_matches_r_glm():
    X, y = cpunish_data()
    res = R.Cpunish()
    m = exact(distr="poisson", eta=np.inf, reg_lambda=0.0, tol=1e-12).fit(X, y)
    assert m.converged_, f"no convergence on Cpunish: KKT {m.kkt_residual_:.3g} after {m.n_iter_}"
    # statsmodels' IRLS needs ~6 iterations; an earlier inner solver needed 637-720 of the
    # default max_iter=1000 on this badly scaled design (INCOME ~ 3e4).
    assert m.n_iter_ <= 50, m.n_iter_
    params = np.r_[m.beta_, m.beta0_]  # statsmodels' order: slopes, then the constant
    # R printed 7 significant digits; 1e-6 relative is within that rounding.
    assert_allclose(
        params, res.params, rtol=1e-6, err_msg="Cpunish coefficients differ from R's glm"
    )
    mu = m.predict(X)
    assert_allclose(mu, res.fittedvalues, rtol=1e-6)
    deviance = 2 * np.sum(np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0) - (y - mu))
    assert_allclose(deviance, res.deviance, rtol=1e-9)
    llf = np.sum(y * np.log(mu) - mu - gammaln(y + 1))
    assert_allclose(llf, res.llf, rtol=1e-10)
    # The optimum itself, relative to the size of the gradient at the start (X is badly scaled:
    # INCOME ~ 3e4).
    kkt = ref_kkt("poisson", X, y, m.beta0_, m.beta_, reg_lambda=0.0, alpha=0.5, eta=np.inf)
    scale = np.abs(X.T @ (y.mean() - y)).max() / len(y)
    assert kkt <= 1e-8 * scale


def test_longley_gaussian_matches_r_glm():
    X, y = longley_data()
    res = R.Longley()
    m = exact(distr="gaussian", reg_lambda=0.0, tol=1e-12).fit(X, y)
    params = np.r_[m.beta_, m.beta0_]
    assert m.converged_, (
        f"irls-cd did not converge on Longley in max_iter={m.max_iter}: KKT residual "
        f"{m.kkt_residual_:.3g}, max rel. error vs R {np.max(np.abs(params / res.params - 1)):.3g}"
    )
    assert_allclose(params, res.params, rtol=1e-6, err_msg="Longley coefficients differ from R")
    assert_allclose(
        params,
        longley_exact_ols(),
        rtol=1e-8,
        err_msg="Longley coefficients differ from the exact (NIST) solution",
    )
    # A Newton method needs a handful of steps on a quadratic; an earlier CD inner solver
    # stalled here (KKT ~1e4 after 100000 iterations, coefficients off by 670 %).
    assert m.n_iter_ <= 20, m.n_iter_
    rss = np.sum((y - m.predict(X)) ** 2)
    assert_allclose(rss, res.deviance, rtol=1e-9)


def test_longley_exact_solution_is_r_solution():
    """The exact-arithmetic helper above agrees with R (a failure above is about the solver)."""
    assert_allclose(longley_exact_ols(), R.Longley().params, rtol=1e-8)


def test_longley_standardised_converges():
    """The same problem on standardised columns is easy: the difficulty is scaling only."""
    X, y = longley_data()
    mean, sd = X.mean(0), X.std(0)
    m = exact(distr="gaussian", reg_lambda=0.0, tol=1e-12).fit((X - mean) / sd, y)
    assert m.converged_
    slopes = m.beta_ / sd
    intercept = m.beta0_ - mean @ slopes
    assert_allclose(np.r_[slopes, intercept], longley_exact_ols(), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# R glm with a softplus link (tests/references/glm_softplus.json)
# ---------------------------------------------------------------------------------------------
SOFTPLUS = json.loads((REF / "glm_softplus.json").read_text())
SOFTPLUS_DATA = pd.read_csv(REF / "softplus_data.csv")
SOFTPLUS_DISTR = {
    "poisson": ("softplus", "y_poisson"),
    "negbin": ("neg-binomial", "y_nb"),
    "gamma": ("gamma", "y_gamma"),
}


@pytest.mark.parametrize("key", list(SOFTPLUS["fits"]))
def test_softplus_link_matches_r_glm(key):
    ref = SOFTPLUS["fits"][key]
    distr, ycol = SOFTPLUS_DISTR[key.split("_")[0]]
    X = SOFTPLUS_DATA[["x1", "x2", "x3"]].to_numpy()
    y = SOFTPLUS_DATA[ycol].to_numpy(dtype=float)
    theta = SOFTPLUS["theta"]
    icpt = ref["intercept"]
    m = exact(distr=distr, theta=theta, reg_lambda=0.0, fit_intercept=icpt, tol=1e-10).fit(X, y)
    assert m.converged_
    b = coefs(m, icpt)
    assert_allclose(
        b,
        ref["coef"],
        rtol=0,
        atol=1e-6,
        err_msg=f"{key}: coefficients differ from R's glm by {np.max(np.abs(b - ref['coef'])):.3g}",
    )
    kkt = ref_kkt(
        distr, X, y, m.beta0_, m.beta_, reg_lambda=0.0, alpha=0.5, theta=theta, fit_intercept=icpt
    )
    assert kkt <= 1e-8
    # logL at the fit: R's loglik_objective is the seed's logL (no log y! for Poisson).
    mu = m.predict(X)
    if distr == "softplus":
        ll = np.sum(y * np.log(mu) - mu)
    elif distr == "neg-binomial":
        ll = np.sum(
            gammaln(y + theta)
            - gammaln(theta)
            - gammaln(y + 1)
            + theta * np.log(theta / (theta + mu))
            + y * np.log(mu / (theta + mu))
        )
    else:
        ll = np.sum(-y / mu - np.log(mu))
    assert_allclose(ll, ref["loglik_objective"], rtol=1e-12)


@pytest.mark.parametrize("key", list(SOFTPLUS["fits"]))
def test_kkt_helper_agrees_with_r_at_r_solution(key):
    """Our hand-written KKT helper is ~0 at R's solution (it checks the helper, not stglm)."""
    ref = SOFTPLUS["fits"][key]
    distr, ycol = SOFTPLUS_DISTR[key.split("_")[0]]
    X = SOFTPLUS_DATA[["x1", "x2", "x3"]].to_numpy()
    y = SOFTPLUS_DATA[ycol].to_numpy(dtype=float)
    c = np.asarray(ref["coef"])
    b0, b = (c[0], c[1:]) if ref["intercept"] else (0.0, c)
    kkt = ref_kkt(
        distr,
        X,
        y,
        b0,
        b,
        reg_lambda=0.0,
        alpha=0.5,
        theta=SOFTPLUS["theta"],
        fit_intercept=ref["intercept"],
    )
    # R's max_abs_score is for the summed log-likelihood; ours is per sample.
    assert kkt <= 10 * ref["max_abs_score"] / len(y) + 1e-14


# ---------------------------------------------------------------------------------------------
# glmnet (tests/references/glmnet_fits.json)
# ---------------------------------------------------------------------------------------------
GLMNET = json.loads((REF / "glmnet_fits.json").read_text())


def glmnet_data(name):
    if name == "synthetic":
        d = pd.read_csv(REF / "synthetic_data.csv")
        X = d[GLMNET["columns"]["synthetic"]].to_numpy()
    else:
        d = pd.read_csv(REF / "visium_design.csv")
        X = d[GLMNET["columns"]["visium"]].to_numpy()
    return X, d["y"].to_numpy(dtype=float)


def _glmnet_id(f):
    return (
        f"{f['dataset']}-{f['kind']}-alpha{f['alpha']:.3g}-"
        f"{'intercept' if f['intercept'] else 'no-intercept'}"
    )


@pytest.mark.parametrize("fit", GLMNET["fits"], ids=[_glmnet_id(f) for f in GLMNET["fits"]])
def test_matches_glmnet(fit):
    X, y = glmnet_data(fit["dataset"])
    icpt = fit["intercept"]
    for k, lam in enumerate(fit["lambda"]):
        m = exact(
            distr=fit["family"],
            alpha=fit["alpha"],
            reg_lambda=lam,
            eta=np.inf,
            fit_intercept=icpt,
            tol=1e-10,
        ).fit(X, y)
        assert m.converged_, f"lambda[{k}]={lam:.4g}: no convergence (KKT {m.kkt_residual_:.3g})"
        ref_b = np.asarray(fit["beta"][k])
        dev = np.max(np.abs(m.beta_ - ref_b))
        if icpt:
            dev = max(dev, abs(m.beta0_ - fit["a0"][k]))
        else:
            assert m.beta0_ == 0.0
        assert dev <= 1e-6, (
            f"lambda[{k}]={lam:.4g}: max |stglm - glmnet| = {dev:.3g}\n"
            f"stglm  {np.r_[m.beta0_, m.beta_]}\nglmnet {np.r_[fit['a0'][k], ref_b]}"
        )
        # glmnet zeroes exactly the coefficients we zero (lasso part active).
        if fit["alpha"] > 0:
            assert np.array_equal(m.beta_ == 0, ref_b == 0), (m.beta_, ref_b)
        kkt = ref_kkt(
            fit["family"],
            X,
            y,
            m.beta0_,
            m.beta_,
            reg_lambda=lam,
            alpha=fit["alpha"],
            eta=np.inf,
            fit_intercept=icpt,
        )
        assert kkt <= 1e-8


@pytest.mark.parametrize("fit", GLMNET["fits"], ids=[_glmnet_id(f) for f in GLMNET["fits"]])
def test_kkt_helper_agrees_with_glmnet_kkt(fit):
    """The helper reproduces the KKT residual R computed at glmnet's own solution."""
    X, y = glmnet_data(fit["dataset"])
    for k, lam in enumerate(fit["lambda"]):
        ours = ref_kkt(
            fit["family"],
            X,
            y,
            fit["a0"][k],
            np.asarray(fit["beta"][k]),
            reg_lambda=lam,
            alpha=fit["alpha"],
            eta=np.inf,
            fit_intercept=fit["intercept"],
        )
        theirs = max(fit["kkt_beta"][k], fit["kkt_intercept"][k])
        assert ours <= 1e-10
        assert abs(ours - theirs) <= 1e-11
