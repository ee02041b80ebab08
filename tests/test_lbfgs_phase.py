"""The L-BFGS phase of the exact solver on smooth problems (λα = 0).

Ridge (α = 0) and unpenalised fits on a large enough X start with L-BFGS and hand over to
Newton only if it converges too slowly. Most tests force the phase on for small designs
(``forced``: the solver option ``lbfgs_min_size=0``). Every check is against code or numbers
not written in stglm: the KKT residual and J from ``conftest.py``, scikit-learn's and
statsmodels' solvers, R's glm (statsmodels' copy of its results).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import model_kkt as kkt_of
from conftest import model_objective as objective_of
from conftest import ref_kkt, ref_objective_z, sample_y
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning
from test_solver import THETA, exact
from test_solver import _record_steps as record_newton_steps

from stglm._solvers import NewtonOptions
from stglm._solvers._lbfgs import LBFGSStart, lbfgs_budget

LBFGS_MIN_SIZE = NewtonOptions().lbfgs_min_size
SMOOTH_FAMILIES = [
    ("poisson", np.inf),
    ("poisson", 0.5),  # the linear continuation above η is reached by many samples
    ("softplus", 2.0),
    ("neg-binomial", 2.0),
    ("gamma", 2.0),
]


def smooth_data(distr, n=400, p=25, seed=0, eta=2.0):
    """Normal X with columns of unequal means and spreads, y from the family."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) * rng.uniform(0.5, 3.0, p) + rng.uniform(-1, 1, p)
    z = 0.5 + (X - X.mean(0)) / X.std(0) @ (rng.standard_normal(p) * 0.15)
    if distr == "poisson":
        mu = np.exp(np.minimum(z, eta)) * np.where(z > eta, z - eta + 1, 1)
    else:
        mu = np.logaddexp(0, z)
    return X, sample_y(distr, mu, rng, THETA)


def forced(**kw):
    """A GLM that runs the L-BFGS phase whatever the size of X."""
    return exact(routes={"lbfgs_min_size": 0}, **kw)


def tau_matrix(p, seed=3):
    rng = np.random.default_rng(seed)
    return np.eye(p) + 0.2 * rng.uniform(-1, 1, (p, p))


def record_lbfgs(monkeypatch):
    """One entry per L-BFGS phase: its iterations and whether it converged."""
    phases = []
    run = LBFGSStart.run

    def recording_run(self, newton, active):
        converged = run(self, newton, active)
        phases.append({"n_iter": int(active.n_iter[0]), "converged": bool(converged[0])})
        return converged

    monkeypatch.setattr(LBFGSStart, "run", recording_run)
    return phases


def record(monkeypatch):
    """Count L-BFGS iterations (one entry per phase) and Newton directions."""
    phases = record_lbfgs(monkeypatch)
    _, newton = record_newton_steps(monkeypatch)
    return phases, newton


@pytest.mark.parametrize("use_tau", [False, True], ids=["identity", "tau"])
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["icpt", "noicpt"])
@pytest.mark.parametrize("distr,eta", SMOOTH_FAMILIES)
def test_lbfgs_reaches_the_optimum_and_agrees_with_newton(
    distr, eta, fit_intercept, use_tau, monkeypatch
):
    X, y = smooth_data(distr, n=4000, eta=eta)  # large enough for the phase to run
    Tau = tau_matrix(X.shape[1]) if use_tau else None
    kw = dict(
        distr=distr,
        eta=eta,
        alpha=0.0,
        reg_lambda=0.02,
        Tau=Tau,
        fit_intercept=fit_intercept,
        tol=1e-9,
    )
    phases, newton_steps = record(monkeypatch)
    m = exact(**kw).fit(X, y)
    assert len(phases) == 1 and phases[0]["n_iter"] >= 1, phases
    if fit_intercept:
        # Centred columns: L-BFGS alone meets the KKT rule. (Without an intercept the
        # columns' means stay in the design, and it may hand over to Newton.)
        assert phases[0]["converged"] and not newton_steps
    assert m.converged_
    kkt = kkt_of(m, X, y)
    assert kkt <= 1e-8, f"KKT residual {kkt:.3g} after {phases[0]} L-BFGS"
    assert_allclose(m.kkt_residual_, kkt, rtol=1e-6, atol=1e-14)

    # The same problem by Newton alone: the same optimum.
    phases.clear()
    newton = exact(routes={"lbfgs_min_size": np.inf}, **kw).fit(X, y)
    assert not phases
    assert kkt_of(newton, X, y) <= 1e-8
    assert_allclose(m.beta_, newton.beta_, rtol=0, atol=1e-8)
    assert abs(m.beta0_ - newton.beta0_) <= 1e-8
    J, J_newton = objective_of(m, X, y), objective_of(newton, X, y)
    assert abs(J - J_newton) <= 1e-13 * abs(J_newton)


@pytest.mark.parametrize("reg_lambda", [0.0, 0.01])
def test_poisson_ridge_matches_scikit_learn(reg_lambda, monkeypatch):  # phase on by size
    """PoissonRegressor(alpha=λ) minimises J with α = 0 exactly (its own L-BFGS)."""
    from sklearn.linear_model import PoissonRegressor

    X, y = smooth_data("poisson", n=2000, p=30, seed=5, eta=np.inf)
    phases, _ = record(monkeypatch)
    m = exact(distr="poisson", eta=np.inf, alpha=0.0, reg_lambda=reg_lambda, tol=1e-10).fit(X, y)
    assert phases[0]["n_iter"] >= 1
    ref = PoissonRegressor(alpha=reg_lambda, tol=1e-12, max_iter=10_000).fit(X, y)
    assert_allclose(m.beta_, ref.coef_, rtol=0, atol=1e-6)
    assert abs(m.beta0_ - ref.intercept_) <= 1e-6
    kw = dict(reg_lambda=reg_lambda, alpha=0.0, eta=np.inf)
    J = ref_objective_z("poisson", y, m.beta0_ + X @ m.beta_, m.beta_, **kw)
    J_ref = ref_objective_z("poisson", y, ref.intercept_ + X @ ref.coef_, ref.coef_, **kw)
    assert J <= J_ref + 1e-14 * abs(J_ref)


def test_sparse_design_gives_the_dense_result(monkeypatch):
    X, y = smooth_data("poisson", eta=np.inf)
    X[np.abs(X) < 1.0] = 0.0
    phases, _ = record(monkeypatch)
    kw = dict(distr="poisson", eta=np.inf, alpha=0.0, reg_lambda=0.01, tol=1e-10)
    dense = forced(**kw).fit(X, y)
    sparse = forced(**kw).fit(sp.csr_matrix(X), y)
    assert len(phases) == 2 and all(ph["n_iter"] >= 1 for ph in phases)
    assert kkt_of(sparse, sp.csr_matrix(X), y) <= 1e-8
    assert_allclose(sparse.beta_, dense.beta_, rtol=0, atol=1e-9)
    assert sparse.n_iter_ == dense.n_iter_


def test_n_iter_counts_lbfgs_and_newton_iterations(monkeypatch):
    X, y = smooth_data("neg-binomial", seed=2)
    kw = dict(distr="neg-binomial", alpha=0.0, reg_lambda=0.01, tol=1e-12)
    phases, newton = record(monkeypatch)
    full = forced(**kw).fit(X, y)
    assert full.converged_
    assert full.n_iter_ == phases[0]["n_iter"] + len(newton) >= 2

    # a max_iter without room for both phases keeps Newton alone, capped as before
    budget = lbfgs_budget(X.shape[1])
    for max_iter in (1, 2, 5):
        phases.clear()
        newton.clear()
        with pytest.warns(ConvergenceWarning, match=rf"max_iter={max_iter}\b.*KKT residual"):
            capped = forced(max_iter=max_iter, **kw).fit(X, y)
        assert not phases
        assert not capped.converged_ and capped.n_iter_ == max_iter == len(newton)
        assert capped.kkt_residual_ == pytest.approx(kkt_of(capped, X, y), rel=1e-6)
    # with room for both, max_iter caps them together
    phases.clear()
    newton.clear()
    both = forced(max_iter=2 * budget, **kw).fit(X, y)
    assert 1 <= phases[0]["n_iter"] <= budget
    assert both.n_iter_ == phases[0]["n_iter"] + len(newton) <= 2 * budget

    # an optimal start costs nothing
    phases.clear()
    model = forced(**kw)
    model.fit(X, y)
    again = forced(**kw)._fit_validated(*model._validate(X, y), start=(model.beta0_, model.beta_))
    assert again.n_iter_ == 0 and again.converged_


def test_steps_never_increase_the_objective(monkeypatch):
    """Every accepted step of both phases lowers J (recomputed by the reference code)."""
    X, y = smooth_data("gamma", seed=4)
    steps, _ = record_newton_steps(monkeypatch)  # (z, β, step, z_new, β_new) per line search
    phases = record_lbfgs(monkeypatch)
    kw = dict(reg_lambda=0.01, alpha=0.0, theta=THETA)
    m = forced(distr="gamma", tol=1e-12, **kw).fit(X, y)
    assert phases[0]["n_iter"] >= 2
    J = [ref_objective_z("gamma", y, steps[0][0], steps[0][1], **kw)]
    J += [ref_objective_z("gamma", y, z_new, b_new, **kw) for *_, z_new, b_new in steps]
    # the line search allows a full step 16 ulp of J (no representable decrease left)
    assert (np.diff(J) / np.abs(J[:-1])).max() <= 16 * np.finfo(float).eps, J
    assert_allclose(steps[-1][-1], m.beta_, rtol=0, atol=0)


def test_used_only_where_it_pays(monkeypatch):
    phases, _ = record(monkeypatch)
    X, y = smooth_data("poisson", n=2500)  # n·p above LBFGS_MIN_SIZE
    assert X.size >= LBFGS_MIN_SIZE
    exact(distr="poisson", alpha=0.5, reg_lambda=0.01).fit(X, y)  # L1 part: not smooth
    exact(distr="gaussian", alpha=0.0, reg_lambda=0.01).fit(X, y)  # quadratic: one Newton step
    small = LBFGS_MIN_SIZE // X.shape[1] - 1
    exact(distr="poisson", alpha=0.0, reg_lambda=0.01).fit(X[:small], y[:small])  # fixed costs
    assert not phases
    exact(distr="poisson", alpha=0.0, reg_lambda=0.01).fit(X, y)
    exact(distr="poisson", alpha=0.0, reg_lambda=0.0).fit(X, y)  # no penalty: smooth too
    assert len(phases) == 2 and all(ph["n_iter"] >= 1 for ph in phases)


def _statsmodels_poisson(X, y):
    sm = pytest.importorskip("statsmodels.api")
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson()).fit(tol=1e-14, maxiter=200)
    return res.params[0], res.params[1:]


def test_falls_back_to_newton_on_an_ill_conditioned_design(monkeypatch):
    """Longley's collinear design (condition number ~1e9 after scaling): L-BFGS stalls.

    Newton finishes, and the fit is statsmodels' IRLS optimum.
    """
    datasets = pytest.importorskip("statsmodels.datasets")
    data = datasets.longley.load()
    X = np.array(data.exog, dtype=float)
    y = np.round(np.array(data.endog, dtype=float) / 1000.0)  # employment in thousands: counts
    phases, newton = record(monkeypatch)
    m = forced(distr="poisson", eta=np.inf, alpha=0.0, reg_lambda=0.0, tol=1e-12).fit(X, y)
    assert m.converged_
    assert phases[0]["n_iter"] >= 1 and not phases[0]["converged"] and len(newton) >= 1
    assert phases[0]["n_iter"] < lbfgs_budget(X.shape[1])  # gave up early
    assert m.n_iter_ == phases[0]["n_iter"] + len(newton)
    scale = np.abs(X.T @ (y - y.mean())).max() / len(y)
    kw = dict(reg_lambda=0.0, alpha=0.0, eta=np.inf)
    assert ref_kkt("poisson", X, y, m.beta0_, m.beta_, **kw) <= 1e-10 * scale
    b0, beta = _statsmodels_poisson(X, y)
    assert_allclose(np.r_[m.beta0_, m.beta_], np.r_[b0, beta], rtol=1e-5)


def test_forced_phase_on_cpunish_matches_r_glm(monkeypatch):
    """R's glm on Cpunish (Poisson, INCOME ~3e4 beside shares), with the phase forced on."""
    R = pytest.importorskip("statsmodels.genmod.tests.results.results_glm")
    datasets = pytest.importorskip("statsmodels.datasets")
    data = datasets.cpunish.load()
    X = np.array(data.exog, dtype=float)
    X[:, 3] = np.log(X[:, 3])
    y = np.array(data.endog, dtype=float)
    phases, _ = record(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        m = forced(distr="poisson", eta=np.inf, reg_lambda=0.0, tol=1e-12).fit(X, y)
    assert phases[0]["n_iter"] >= 1 and m.converged_ and m.n_iter_ <= 50
    assert_allclose(np.r_[m.beta_, m.beta0_], R.Cpunish().params, rtol=1e-6)
