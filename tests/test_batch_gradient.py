"""The objective, its gradient, and spateo's solver ``solver="batch-gradient"``.

- ``_loss`` equals J written out by hand with scipy log-densities; ``batch_grad`` equals
  its central finite-difference gradient (minus the L1 term's derivative).
- The solver is a real minimiser of J: the KKT residual, computed here from the
  finite-difference-verified gradient and the L1 subgradient written out in the test,
  is ≤ 1e-5; for α = 0 it agrees with scipy's L-BFGS on the hand-written J.
- Its iterations are the documented update, replayed by hand.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import kkt_by_hand, make_problem, ref_objective, soft_threshold
from numpy.testing import assert_allclose, assert_array_equal
from scipy import optimize
from sklearn.exceptions import ConvergenceWarning

from stglm._penalties import kkt_residual
from stglm.generalized_lm import GLM, _loss, batch_grad

REFERENCES = Path(__file__).parent / "references"

ETA, THETA = 2.0, 2.0
ALPHA, LAMBDA = 0.3, 0.4


def _tau(p, seed=7):
    # Not symmetric, so a ΓΓᵀ-for-ΓᵀΓ mix-up shows.
    return np.eye(p) + 0.4 * np.random.RandomState(seed).normal(size=(p, p))


def _fd_problem(distr, fit_intercept, p=4):
    X, y = make_problem(distr, n=50, p=p, seed=11, theta=THETA, standardise=False)
    rng = np.random.RandomState(5)
    beta = rng.choice([-1, 1], size=p) * rng.uniform(0.3, 0.9, size=p)  # away from the kink
    b = np.r_[0.4, beta] if fit_intercept else beta
    return X, y, b


def _packed(model):
    return np.r_[model.beta0_, model.beta_] if model.fit_intercept else model.beta_.copy()


def _glm(distr, fit_intercept, **kw):
    params = dict(
        distr=distr,
        fit_intercept=fit_intercept,
        theta=THETA,
        eta=ETA,
        solver="batch-gradient",
        verbose=False,
    )
    return GLM(**{**params, **kw})


# ---------------------------------------------------------------------------------------------
# _loss and batch_grad
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_tau", [False, True], ids=["identity", "tau"])
def test_loss_is_J_by_hand(distr, fit_intercept, use_tau):
    X, y, b = _fd_problem(distr, fit_intercept)
    Tau = _tau(X.shape[1]) if use_tau else None
    beta0, beta = (b[0], b[1:]) if fit_intercept else (0.0, b)
    expected = ref_objective(
        distr,
        X,
        y,
        beta0,
        beta,
        reg_lambda=LAMBDA,
        alpha=ALPHA,
        Tau=Tau,
        eta=ETA,
        theta=THETA,
        fit_intercept=fit_intercept,
    )
    got = _loss(distr, ALPHA, LAMBDA, X, y, b, Tau, ETA, THETA, fit_intercept)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("use_tau", [False, True], ids=["identity", "tau"])
def test_batch_grad_is_finite_difference_of_loss(distr, fit_intercept, use_tau):
    X, y, b = _fd_problem(distr, fit_intercept)
    p = X.shape[1]
    Tau = _tau(p) if use_tau else None
    if distr == "poisson":  # cover both sides of η but keep off the kink
        z = X @ b[-p:] + (b[0] if fit_intercept else 0.0)
        assert np.any(z > ETA) and np.any(z < ETA) and np.min(np.abs(z - ETA)) > 1e-4

    def J(v):
        return _loss(distr, ALPHA, LAMBDA, X, y, v, Tau, ETA, THETA, fit_intercept)

    h = 1e-6
    fd = np.array([(J(b + h * e) - J(b - h * e)) / (2 * h) for e in np.eye(b.size)])
    # _loss includes λα‖β‖₁ (differentiable here); batch_grad is the smooth part only.
    l1_grad = LAMBDA * ALPHA * np.sign(b)
    if fit_intercept:
        l1_grad[0] = 0.0  # the intercept is never penalised
    g = batch_grad(distr, ALPHA, LAMBDA, X, y, b, Tau, ETA, THETA, fit_intercept)
    assert g.shape == b.shape
    assert_allclose(g + l1_grad, fd, rtol=1e-6, atol=1e-7)


def test_batch_grad_formula_gaussian_by_hand():
    # (1/n)Xᵀ(μ − y) + λ(1−α)ΓᵀΓβ and (1/n)Σ(μ − y) for β0, from SEMANTICS directly.
    X, y, b = _fd_problem("gaussian", True)
    Tau = _tau(X.shape[1])
    r = b[0] + X @ b[1:] - y
    expected = np.r_[r.mean(), X.T @ r / len(y) + LAMBDA * (1 - ALPHA) * Tau.T @ Tau @ b[1:]]
    got = batch_grad("gaussian", ALPHA, LAMBDA, X, y, b, Tau, ETA, THETA, True)
    assert_allclose(got, expected, rtol=1e-12)


def test_batch_grad_sparse_equals_dense(distr):
    import scipy.sparse as sp

    X, y, b = _fd_problem(distr, True)
    X[np.abs(X) < 0.7] = 0.0
    dense = batch_grad(distr, ALPHA, LAMBDA, X, y, b, None, ETA, THETA, True)
    for fmt in (sp.csr_matrix, sp.csc_matrix):
        assert_allclose(
            batch_grad(distr, ALPHA, LAMBDA, fmt(X), y, b, None, ETA, THETA, True),
            dense,
            rtol=1e-12,
        )


# ---------------------------------------------------------------------------------------------
# batch-gradient reaches the optimum
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_tau", [False, True], ids=["identity", "tau"])
def test_batch_gradient_reaches_kkt(distr, fit_intercept, use_tau):
    X, y = make_problem(distr, n=100, p=4, seed=3, theta=THETA)
    Tau = _tau(4) if use_tau else None
    alpha, lam = 0.5, 0.05
    model = _glm(
        distr,
        fit_intercept,
        alpha=alpha,
        reg_lambda=lam,
        Tau=Tau,
        learning_rate=0.1,
        max_iter=50_000,
        tol=1e-12,
        clip_coeffs=0.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # must stop by its own rule
        model.fit(X, y)
    g = batch_grad(distr, alpha, lam, X, y, _packed(model), Tau, ETA, THETA, fit_intercept)
    g0, gb = (g[0], g[1:]) if fit_intercept else (None, g)
    res = kkt_by_hand(gb, model.beta_, lam * alpha, g0)
    assert res <= 1e-5
    # Our shared definition and the reported attribute agree with the hand-written one.
    assert kkt_residual(gb, model.beta_, lam * alpha, g0) == pytest.approx(res, abs=1e-12)
    assert model.kkt_residual_ == pytest.approx(res, abs=1e-12)
    assert model.converged_
    if not fit_intercept:
        assert model.beta0_ == 0.0


@pytest.mark.parametrize("distr_", ["gaussian", "poisson", "softplus"])  # J convex
def test_batch_gradient_matches_scipy_on_smooth_objective(distr_, fit_intercept):
    # α = 0: J is smooth, so L-BFGS on the hand-written J is an independent optimum.
    X, y = make_problem(distr_, n=100, p=3, seed=4)
    Tau = _tau(3)

    def J(v):
        beta0, beta = (v[0], v[1:]) if fit_intercept else (0.0, v)
        return ref_objective(
            distr_,
            X,
            y,
            beta0,
            beta,
            reg_lambda=0.2,
            alpha=0.0,
            Tau=Tau,
            eta=ETA,
            fit_intercept=fit_intercept,
        )

    ref = optimize.minimize(
        J,
        np.zeros(3 + fit_intercept),
        method="L-BFGS-B",
        options={"gtol": 1e-11, "ftol": 1e-15, "maxiter": 10_000},
    ).x
    model = _glm(
        distr_,
        fit_intercept,
        alpha=0.0,
        reg_lambda=0.2,
        Tau=Tau,
        learning_rate=0.1,
        max_iter=50_000,
        tol=1e-12,
        clip_coeffs=0.0,
    ).fit(X, y)
    assert_allclose(_packed(model), ref, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the documented update, replayed by hand
# ---------------------------------------------------------------------------------------------
def _replay(distr, X, y, *, fit_intercept, lr, lam, alpha, Tau=None, seed=888, max_iter, tol):
    """SEMANTICS' batch gradient descent, from its description (β0 first in b)."""
    p = X.shape[1]
    if fit_intercept:
        b = np.random.RandomState(seed).normal(0.0, 1.0, p + 1) / (p + 1)
    else:
        b = np.zeros(p)
    for t in range(1, max_iter + 1):
        new = b - lr * batch_grad(distr, alpha, lam, X, y, b, Tau, ETA, THETA, fit_intercept)
        k = 1 if fit_intercept else 0
        new[k:] = soft_threshold(new[k:], lr * lam * alpha)  # β only, never β0
        rel = np.linalg.norm(new - b) / np.linalg.norm(new)
        b = new
        if t >= 3 and rel < tol:
            return b, t
    return b, max_iter


@pytest.mark.parametrize("n_steps", [1, 2])
def test_first_steps_are_the_documented_update(distr, fit_intercept, n_steps):
    X, y = make_problem(distr, n=60, p=5, seed=8, theta=THETA)
    Tau = _tau(5)
    kw = dict(lr=0.3, lam=0.2, alpha=0.7, Tau=Tau, seed=123)
    expected, _ = _replay(distr, X, y, fit_intercept=fit_intercept, max_iter=n_steps, tol=0.0, **kw)
    model = _glm(
        distr,
        fit_intercept,
        learning_rate=0.3,
        reg_lambda=0.2,
        alpha=0.7,
        Tau=Tau,
        random_seed=123,
        max_iter=n_steps,
        clip_coeffs=0.0,
    )
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        model.fit(X, y)
    assert model.n_iter_ == n_steps
    assert_allclose(_packed(model), expected, rtol=1e-12, atol=1e-15)
    if n_steps == 1 and fit_intercept:
        assert np.any(model.beta_ == 0.0)  # the soft-threshold did act (threshold 0.042)


def test_clip_coeffs_zeroes_small_beta_not_beta0():
    X, y = make_problem("poisson", n=60, p=5, seed=8)
    expected, _ = _replay(
        "poisson", X, y, fit_intercept=True, lr=0.05, lam=0.0, alpha=0.5, max_iter=1, tol=0.0
    )
    clip = np.sort(np.abs(expected[1:]))[2]  # between the 3rd and 4th smallest |β_j|
    assert abs(expected[0]) < clip  # so a wrongly clipped β0 would show
    model = _glm(
        "poisson", True, learning_rate=0.05, reg_lambda=0.0, max_iter=1, clip_coeffs=clip + 1e-12
    )
    with pytest.warns(ConvergenceWarning):
        model.fit(X, y)
    kept = np.where(np.abs(expected[1:]) < clip + 1e-12, 0.0, expected[1:])
    assert_allclose(model.beta_, kept, rtol=1e-12)
    assert np.count_nonzero(model.beta_) == 2
    assert model.beta0_ == pytest.approx(expected[0], rel=1e-12)


def test_prox_method_is_soft_threshold():
    beta = np.array([-2.0, -0.1, 0.0, 0.05, 1.5])
    assert_array_equal(GLM()._prox(beta, 0.1), [-1.9, 0.0, 0.0, 0.0, 1.4])


@pytest.mark.parametrize("tol", [1e-2, 1e-4])
def test_stopping_rule_relative_change(distr, fit_intercept, tol):
    X, y = make_problem(distr, n=60, p=3, seed=2, theta=THETA)
    expected, n_iter = _replay(
        distr,
        X,
        y,
        fit_intercept=fit_intercept,
        lr=0.1,
        lam=0.05,
        alpha=0.5,
        max_iter=5000,
        tol=tol,
    )
    assert 3 <= n_iter < 5000
    model = _glm(
        distr,
        fit_intercept,
        learning_rate=0.1,
        reg_lambda=0.05,
        alpha=0.5,
        max_iter=5000,
        tol=tol,
        clip_coeffs=0.0,
    ).fit(X, y)
    assert model.n_iter_ == n_iter
    assert_allclose(_packed(model), expected, rtol=1e-12, atol=1e-15)


def test_at_least_three_iterations():
    # Even a tolerance every step meets is only checked from the third iteration on.
    X, y = make_problem("poisson", n=60, p=3, seed=2)
    model = _glm("poisson", True, tol=1e3, learning_rate=0.1).fit(X, y)
    assert model.n_iter_ == 3 and model.converged_


def test_refit_gives_the_same_answer():
    X, y = make_problem("poisson", n=80, p=4, seed=6)
    X2, y2 = make_problem("poisson", n=80, p=4, seed=9)
    model = _glm("poisson", True, learning_rate=0.1, tol=1e-4)
    first = _packed(model.fit(X, y))
    _packed(model.fit(X2, y2))
    assert_array_equal(_packed(model.fit(X, y)), first)  # reseeded at every fit
    assert_array_equal(_packed(_glm("poisson", True, learning_rate=0.1, tol=1e-4).fit(X, y)), first)


def test_verbose_does_not_change_stopping(caplog):
    # spateo only stopped early with verbose=True.
    X, y = make_problem("softplus", n=80, p=4, seed=6)
    quiet = _glm("softplus", True, learning_rate=0.1, tol=1e-5, max_iter=20_000).fit(X, y)
    with caplog.at_level("INFO", logger="stglm"):
        loud = _glm(
            "softplus", True, learning_rate=0.1, tol=1e-5, max_iter=20_000, verbose=True
        ).fit(X, y)
    assert quiet.n_iter_ == loud.n_iter_ < 20_000
    assert_array_equal(_packed(quiet), _packed(loud))
    assert any("iterations" in r.getMessage() for r in caplog.records)


def test_max_iter_reached_warns():
    X, y = make_problem("poisson", n=60, p=3, seed=2)
    with pytest.warns(ConvergenceWarning, match="max_iter=5"):
        model = _glm("poisson", True, learning_rate=0.01, max_iter=5).fit(X, y)
    assert model.n_iter_ == 5 and not model.converged_


@pytest.mark.parametrize(
    "distr_",
    [
        "gaussian",
        "poisson",
        "softplus",
        "neg-binomial",
        "gamma",
    ],
)
def test_divergence_is_a_clear_error(distr_):
    X, y = make_problem(distr_, n=60, p=3, seed=2)
    with pytest.raises(ValueError, match="learning_rate"):
        _glm(distr_, True, learning_rate=1e3, max_iter=500).fit(X, y)


@pytest.mark.filterwarnings("ignore:GLM .solver='batch-gradient'. did not converge")
def test_uphill_run_is_reported_not_called_converged():
    """spateo's step on a real, unstandardised design: the coefficients settle far uphill.

    spateo called this converged; stglm keeps the seed's stopping rule but warns that the
    objective ended above its starting value (computed here independently of the solver).
    """
    import pandas as pd

    design = pd.read_csv(REFERENCES / "visium_design.csv")
    X = design[[c for c in design.columns if c.startswith("lag_")]].to_numpy()
    y = design["y"].to_numpy(dtype=float)
    model = GLM(solver="batch-gradient", eta=2.0, clip_coeffs=0, verbose=False)
    with pytest.warns(ConvergenceWarning, match="higher objective than it started"):
        model.fit(X, y)
    p = X.shape[1]
    start = np.random.RandomState(888).normal(0.0, 1.0, p + 1) / (p + 1)
    end = np.r_[model.beta0_, model.beta_]
    assert _loss("poisson", 0.5, 0.1, X, y, end) > _loss("poisson", 0.5, 0.1, X, y, start)
