"""Shared fixtures and independent reference formulas for the test suite.

Everything here is written from docs/SEMANTICS.md with plain NumPy/SciPy, never by calling
stglm, so tests that compare against these helpers do not need faith in our own code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats
from scipy.special import digamma, gammaln

DISTRS = ("gaussian", "poisson", "softplus", "neg-binomial", "gamma")
COUNT_DISTRS = ("poisson", "softplus", "neg-binomial")
EPS = 2.0**-52


# ---------------------------------------------------------------------------------------------
# reference formulas (docs/SEMANTICS.md tables)
# ---------------------------------------------------------------------------------------------
def ref_softplus(z):
    z = np.asarray(z, dtype=float)
    # log1p(e^z) = max(z, 0) + log1p(e^-|z|): exact everywhere, no overflow.
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def ref_mean(distr, z, eta=2.0):
    """μ(z) per the SEMANTICS table."""
    z = np.asarray(z, dtype=float)
    if distr == "gaussian":
        return z.copy()
    if distr == "poisson":
        if np.isinf(eta):
            return np.exp(z)
        with np.errstate(over="ignore"):
            return np.where(z <= eta, np.exp(z), np.exp(eta) * (z - eta + 1.0))
    return ref_softplus(z)


def ref_loglik(distr, y, mu, theta=1.0):
    """Σ logL in the seed's convention, each written through scipy.stats where one exists."""
    y = np.asarray(y, dtype=float)
    mu = np.broadcast_to(np.asarray(mu, dtype=float), y.shape)
    if distr == "gaussian":
        # −½(y−μ)² is the N(μ, 1) log-density without its −½log 2π constant.
        return float(np.sum(stats.norm.logpdf(y, loc=mu, scale=1.0) + 0.5 * np.log(2 * np.pi)))
    if distr in ("poisson", "softplus"):
        # The seed drops log y! (and adds ε = 2^-52 inside the log: negligible unless μ is tiny).
        return float(np.sum(stats.poisson.logpmf(y, mu) + gammaln(y + 1.0)))
    if distr == "neg-binomial":
        return float(np.sum(stats.nbinom.logpmf(y, theta, theta / (theta + mu))))
    if distr == "gamma":
        return float(np.sum(stats.gamma(a=1.0, scale=mu).logpdf(y)))
    raise AssertionError(distr)


def ref_objective(
    distr, X, y, beta0, beta, *, reg_lambda, alpha, Tau=None, eta=2.0, theta=1.0, fit_intercept=True
):
    """J(b) = −(1/n)·logL + λ[½(1−α)‖Γβ‖² + α‖β‖₁]."""
    z = X @ beta + (beta0 if fit_intercept else 0.0)
    mu = ref_mean(distr, z, eta)
    tb = beta if Tau is None else Tau @ beta
    pen = reg_lambda * (0.5 * (1 - alpha) * tb @ tb + alpha * np.abs(beta).sum())
    return -ref_loglik(distr, y, mu, theta) / len(y) + pen


def soft_threshold(x, t):
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


def kkt_by_hand(grad_beta, beta, l1, grad_intercept=None):
    """Largest violation of 0 ∈ ∂J: |g_j + λα·sign β_j| on the support, (|g_j| − λα)+ off it."""
    viol = [
        abs(g + l1 * np.sign(b)) if b != 0 else max(abs(g) - l1, 0.0)
        for g, b in zip(grad_beta, beta, strict=True)
    ]
    if grad_intercept is not None:
        viol.append(abs(grad_intercept))
    return max(viol)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def sample_y(distr, mu, rng, theta=1.0):
    """Draw y from the family with mean μ (gamma shape 1, NB2 size θ)."""
    if distr == "gaussian":
        return mu + rng.normal(size=mu.shape)
    if distr in ("poisson", "softplus"):
        return rng.poisson(mu).astype(float)
    if distr == "neg-binomial":
        return rng.negative_binomial(theta, theta / (theta + mu)).astype(float)
    if distr == "gamma":
        return rng.gamma(1.0, mu)
    raise AssertionError(distr)


def make_problem(distr, n=120, p=4, seed=0, theta=2.0, standardise=True):
    """A well-posed problem: standardised X, y drawn from the family itself."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, p))
    if standardise:
        X = (X - X.mean(0)) / X.std(0)
    beta = rng.uniform(-0.5, 0.5, size=p)
    z = 0.5 + X @ beta
    y = sample_y(distr, ref_mean(distr, z), rng, theta)
    if distr == "gamma":
        y = np.maximum(y, 1e-3)  # keep the support strictly positive
    return X, y


@pytest.fixture(params=DISTRS)
def distr(request):
    return request.param


@pytest.fixture(params=[True, False], ids=["intercept", "no-intercept"])
def fit_intercept(request):
    return request.param


# ---------------------------------------------------------------------------------------------
# exact-solver tests (test_solver.py, test_r_references.py): gradient and KKT residual by hand
# ---------------------------------------------------------------------------------------------
def ref_residual(distr, y, z, eta=2.0, theta=1.0):
    """r_i = ∂(−logL_i)/∂z_i from the SEMANTICS table (the seed's y/μ, without ε)."""
    y = np.asarray(y, dtype=float)
    z = np.asarray(z, dtype=float)
    if distr == "gaussian":
        return z - y
    if distr == "poisson":
        if np.isinf(eta):
            return np.exp(z) - y  # μ'(1 − y/μ) with μ' = μ = e^z
        dmu = np.exp(np.minimum(z, eta))  # e^z below η, e^η on the tangent
        return dmu * (1.0 - y / ref_mean("poisson", z, eta))
    mu, dmu = ref_softplus(z), 0.5 * (1.0 + np.tanh(0.5 * z))  # μ' = logistic σ(z)
    if distr == "softplus":
        return dmu * (1.0 - y / mu)
    if distr == "gamma":
        return dmu * (1.0 / mu - y / mu**2)
    if distr == "neg-binomial":
        return dmu * ((theta + y) / (mu + theta) - y / mu)
    raise AssertionError(distr)


def ref_kkt(
    distr, X, y, beta0, beta, *, reg_lambda, alpha, Tau=None, eta=2.0, theta=1.0, fit_intercept=True
):
    """KKT residual of J at (β0, β): max over coordinates of the minimum-norm subgradient.

    Gradient (1/n)Xᵀr + λ(1−α)ΓᵀΓβ from docs/SEMANTICS.md; the L1 part enters through
    :func:`kkt_by_hand`. X may be dense or scipy sparse.
    """
    beta = np.asarray(beta, dtype=float)
    z = np.asarray(X @ beta, dtype=float).reshape(-1) + (beta0 if fit_intercept else 0.0)
    r = ref_residual(distr, y, z, eta, theta)
    tb = beta if Tau is None else np.asarray(Tau).T @ (np.asarray(Tau) @ beta)
    g = np.asarray(X.T @ r, dtype=float).reshape(-1) / len(r) + reg_lambda * (1 - alpha) * tb
    return kkt_by_hand(g, beta, reg_lambda * alpha, float(r.mean()) if fit_intercept else None)


def ref_objective_z(distr, y, z, beta, *, reg_lambda, alpha, Tau=None, eta=2.0, theta=1.0):
    """J from the linear predictor z: −(1/n)·Σ logL + penalty, logL written out (ε included).

    Unlike :func:`ref_loglik` it accepts non-integer counts (noise-free y = μ).
    """
    y = np.asarray(y, dtype=float)
    mu = ref_mean(distr, z, eta)
    if distr == "gaussian":
        ll = -0.5 * (y - mu) ** 2
    elif distr in ("poisson", "softplus"):
        ll = np.where(y > 0, y * np.log(mu + EPS), 0.0) - mu
    elif distr == "neg-binomial":
        ll = (
            gammaln(y + theta)
            - gammaln(theta)
            - gammaln(y + 1.0)
            + theta * np.log(theta)
            + np.where(y > 0, y * np.log(mu), 0.0)
            - (theta + y) * np.log(mu + theta)
        )
    elif distr == "gamma":
        ll = -y / mu - np.log(mu)
    else:
        raise AssertionError(distr)
    tb = beta if Tau is None else np.asarray(Tau) @ beta
    return float(
        -np.mean(ll) + reg_lambda * (0.5 * (1 - alpha) * tb @ tb + alpha * np.abs(beta).sum())
    )


# ---------------------------------------------------------------------------------------------
# AnnData identity (fit_glm / fit_genes must not touch their input)
# ---------------------------------------------------------------------------------------------
def assert_same_value(a, b, where):
    """Deep equality of AnnData slot values: arrays (dense/sparse), frames, dicts, scalars."""
    if sp.issparse(a) or sp.issparse(b):
        assert sp.issparse(a) and sp.issparse(b), f"{where}: sparse vs dense"
        assert a.format == b.format, f"{where}: format {a.format} != {b.format}"
        # matrix vs array API (an AnnData view's SparseCSRMatrixView is a csr_matrix)
        assert sp.isspmatrix(a) == sp.isspmatrix(b), f"{where}: {type(a)} vs {type(b)}"
        assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
        assert a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}"
        a, b = a.copy(), b.copy()
        a.sort_indices()
        b.sort_indices()
        np.testing.assert_array_equal(a.indptr, b.indptr, err_msg=where)
        np.testing.assert_array_equal(a.indices, b.indices, err_msg=where)
        np.testing.assert_array_equal(a.data, b.data, err_msg=where)
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict), f"{where}: dict vs {type(b).__name__}"
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            assert_same_value(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


def _own_problem(m) -> dict:
    """A fitted GLM's penalty and family parameters, as the reference functions take them."""
    eta = m.eta if m.distr == "poisson" else 2.0
    return dict(reg_lambda=m.reg_lambda, alpha=m.alpha, Tau=m.Tau, eta=eta, theta=m.theta)


def with_routes(model, **routes):
    """``model`` (GLM or GLMCV) with its own solver routes: fields of ``NewtonOptions``.

    How a test makes a fit take a route (the inner solver, the L-BFGS start, the batched
    folds) without changing any module's defaults.
    """
    from dataclasses import replace

    model._newton_options = replace(model._newton_options, **routes)
    return model


def model_kkt(m, X, y):
    """KKT residual of a fitted GLM's own problem (its family, λ, α, Γ), by hand."""
    own = _own_problem(m)
    return ref_kkt(m.distr, X, y, m.beta0_, m.beta_, fit_intercept=m.fit_intercept, **own)


def model_objective(m, X, y):
    """J of a fitted GLM's own problem at its coefficients, by hand."""
    z = np.asarray(X @ m.beta_, dtype=float).reshape(-1) + (m.beta0_ if m.fit_intercept else 0.0)
    return ref_objective_z(m.distr, y, z, m.beta_, **_own_problem(m))


def assert_adata_equal(got, expected):
    """Every slot of two AnnData objects is identical (values, dtypes, formats, keys)."""
    assert got.shape == expected.shape
    pd.testing.assert_index_equal(got.obs_names, expected.obs_names)
    pd.testing.assert_index_equal(got.var_names, expected.var_names)
    assert_same_value(got.X, expected.X, "X")
    pd.testing.assert_frame_equal(got.obs, expected.obs, check_exact=True, obj="obs")
    pd.testing.assert_frame_equal(got.var, expected.var, check_exact=True, obj="var")
    for slot in ("obsm", "varm", "obsp", "varp", "layers"):
        g, e = getattr(got, slot), getattr(expected, slot)
        assert sorted(g.keys()) == sorted(e.keys()), f"{slot}: {list(g)} != {list(e)}"
        for key in e.keys():
            assert_same_value(g[key], e[key], f"{slot}[{key!r}]")
    assert_same_value(dict(got.uns), dict(expected.uns), "uns")


def nb_theta_score(y, mu, w, theta):
    """Σ w ∂ℓ/∂θ of the NB2 log-likelihood, written out by hand (0 at the ML θ given μ)."""
    s = (
        digamma(y + theta)
        - digamma(theta)
        + np.log(theta)
        + 1.0
        - np.log(theta + mu)
        - (y + theta) / (theta + mu)
    )
    return float(np.sum(w * s))
