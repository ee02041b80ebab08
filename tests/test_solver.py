"""The exact solver ("irls-cd"): optimality, metamorphic relations and stress cases.

Nothing here trusts stglm's own notion of optimality: the KKT residual, the gradient and
the objective are recomputed by the helpers in ``conftest.py`` (written from docs/SEMANTICS.md),
solutions are compared with problems whose answer is known by construction, and
metamorphic relations tie one fit to another. Numbers from R live in test_r_references.py.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import DISTRS, kkt_by_hand, ref_objective_z, ref_residual, with_routes
from conftest import model_kkt as kkt_of
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning

from stglm import GLM
from stglm._solvers import NewtonOptions, _inner
from stglm._solvers.newton_cd import NewtonCD
from stglm.generalized_lm import _loss

GRAM_MAX_FEATURES = NewtonOptions().gram_max_features
THETA = 2.0
LAMBDA = 0.12
TRUE_BETA = np.array([0.6, -0.4, 0.0, 0.3, 0.0, -0.2])


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def exact(routes: dict | None = None, **kw):
    """An unclipped, silent GLM (clip_coeffs=0 keeps the optimum itself), on ``routes``."""
    kw.setdefault("theta", THETA)
    return with_routes(GLM(clip_coeffs=0.0, verbose=False, **kw), **(routes or {}))


def record_inner(monkeypatch) -> list[str]:
    """The inner solver of every Newton direction of single fits, by class name."""
    used = []
    for cls in (_inner.GramCD, _inner.ResidualCD, _inner.ConjugateGradient):
        minimise = cls.minimise

        def recording(self, *args, _minimise=minimise, **kwargs):
            used.append(type(self).__name__)
            return _minimise(self, *args, **kwargs)

        monkeypatch.setattr(cls, "minimise", recording)
    return used


def packed(m):
    """[β0, β] with intercept, β without: the seed's layout for ``_loss``."""
    return np.r_[m.beta0_, m.beta_] if m.fit_intercept else np.asarray(m.beta_)


def standardise(X):
    return (X - X.mean(0)) / X.std(0)


def sample(distr, mu, rng):
    if distr == "gaussian":
        return mu + rng.standard_normal(mu.shape)
    if distr in ("poisson", "softplus"):
        return rng.poisson(mu).astype(float)
    if distr == "neg-binomial":
        return rng.negative_binomial(THETA, THETA / (THETA + mu)).astype(float)
    return rng.gamma(2.0, mu / 2.0)  # gamma: mean μ, y > 0


def make_data(distr, n=150, beta=TRUE_BETA, seed=0, eta=2.0):
    """Standardised X, y from the family with mean μ(0.8 + Xβ); β has zeros (lasso branch)."""
    rng = np.random.default_rng(seed)
    X = standardise(rng.standard_normal((n, beta.size)))
    z = 0.8 + X @ beta
    if distr == "poisson":
        mu = np.exp(np.minimum(z, eta)) * np.where(z > eta, z - eta + 1, 1)  # tangent above η
    elif distr == "gaussian":
        mu = z
    else:
        mu = np.logaddexp(0, z)
    return X, sample(distr, mu, rng)


def tau_matrix(p, seed=3):
    """A non-identity, non-symmetric, well-conditioned Tikhonov matrix."""
    rng = np.random.default_rng(seed)
    return np.eye(p) + 0.4 * rng.uniform(-1, 1, (p, p))


# ---------------------------------------------------------------------------------------------
# 1. correctness on standardised problems: KKT and the objective
# ---------------------------------------------------------------------------------------------
GRID = [
    (d, a, i, t)
    for d in DISTRS
    for a in (0.0, 0.5, 1.0)
    for i in (True, False)
    for t in (False, True)
]


def _grid_id(case):
    d, a, i, t = case
    return f"{d}-alpha{a:g}-{'icpt' if i else 'noicpt'}-{'tau' if t else 'identity'}"


@pytest.mark.parametrize("case", GRID, ids=[_grid_id(c) for c in GRID])
def test_kkt_at_convergence_and_not_worse_than_batch_gradient(case):
    distr, alpha, icpt, use_tau = case
    X, y = make_data(distr)
    Tau = tau_matrix(X.shape[1]) if use_tau else None
    kw = dict(distr=distr, alpha=alpha, reg_lambda=LAMBDA, Tau=Tau, fit_intercept=icpt)
    m = exact(tol=1e-10, **kw).fit(X, y)
    assert m.converged_
    kkt = kkt_of(m, X, y)
    assert kkt <= 1e-8, f"KKT residual {kkt:.3g} at the returned solution"
    assert_allclose(m.kkt_residual_, kkt, rtol=1e-6, atol=1e-14)  # the reported value is honest
    if not icpt:
        assert m.beta0_ == 0.0
    if alpha == 1.0:  # the design has true zeros: the off-support branch of the KKT is used
        assert np.any(m.beta_ == 0.0) and np.any(m.beta_ != 0.0), m.beta_

    J = _loss(distr, alpha, LAMBDA, X, y, packed(m), Tau=Tau, theta=THETA, fit_intercept=icpt)
    bg = exact(solver="batch-gradient", learning_rate=0.05, max_iter=3000, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        bg.fit(X, y)
    J_bg = _loss(distr, alpha, LAMBDA, X, y, packed(bg), Tau=Tau, theta=THETA, fit_intercept=icpt)
    assert J <= J_bg + 1e-13 * max(1.0, abs(J)), (J, J_bg)
    # _loss agrees with the objective written out by hand.
    z = X @ m.beta_ + m.beta0_
    assert_allclose(
        J,
        ref_objective_z(distr, y, z, m.beta_, reg_lambda=LAMBDA, alpha=alpha, Tau=Tau, theta=THETA),
        rtol=1e-13,
    )


def test_poisson_tangent_region_is_exercised():
    """The eta=2 grid problems really put some z above η (the linearised mean)."""
    X, y = make_data("poisson")
    m = exact(distr="poisson", alpha=0.5, reg_lambda=LAMBDA, tol=1e-10).fit(X, y)
    assert np.mean(X @ m.beta_ + m.beta0_ > 2.0) > 0.03


# ---------------------------------------------------------------------------------------------
# 2. metamorphic relations
# ---------------------------------------------------------------------------------------------
META_DISTRS = ("gaussian", "poisson", "gamma", "neg-binomial")


@pytest.mark.parametrize("fit_intercept", [True, False], ids=["icpt", "noicpt"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("distr", META_DISTRS)
def test_duplicated_columns_halved_with_half_penalty(distr, alpha, fit_intercept):
    """X̃ = [X, X]/2 at λ/2 gives each copy the original β, for any α < 1.

    With a = b = β: X̃(a, b) = Xβ, and λ/2·[½(1−α)(‖a‖² + ‖b‖²) + α(‖a‖₁ + ‖b‖₁)] is
    λ·[½(1−α)‖β‖² + α‖β‖₁]: J̃(β, β) = J(β). Any other split with the same a + b has a larger
    ridge term (strictly convex), so the split is equal at the optimum.
    """
    X, y = make_data(distr)
    kw = dict(distr=distr, alpha=alpha, fit_intercept=fit_intercept, tol=1e-12)
    m = exact(reg_lambda=LAMBDA, **kw).fit(X, y)
    m2 = exact(reg_lambda=LAMBDA / 2, **kw).fit(np.hstack([X, X]) / 2, y)
    p = X.shape[1]
    assert_allclose(m2.beta_[:p], m.beta_, atol=1e-8)
    assert_allclose(m2.beta_[p:], m.beta_, atol=1e-8)
    assert_allclose(m2.beta0_, m.beta0_, atol=1e-8)


@pytest.mark.parametrize("distr", ["gaussian", "poisson"])
def test_duplicated_columns_lasso_splits_the_same_total(distr):
    """α = 1: the split between copies is not unique, but a + b = 2β and J are."""
    X, y = make_data(distr)
    m = exact(distr=distr, alpha=1.0, reg_lambda=LAMBDA, tol=1e-12).fit(X, y)
    m2 = exact(distr=distr, alpha=1.0, reg_lambda=LAMBDA / 2, tol=1e-12).fit(
        np.hstack([X, X]) / 2, y
    )
    p = X.shape[1]
    assert_allclose(m2.beta_[:p] + m2.beta_[p:], 2 * m.beta_, atol=1e-7)
    assert np.all(m2.beta_[:p] * m2.beta_[p:] >= 0)  # never opposite signs (that costs L1)
    assert_allclose(m2.beta0_, m.beta0_, atol=1e-8)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("distr", DISTRS)
def test_stacked_rows_leave_the_solution_unchanged(distr, alpha):
    """[X; X], [y; y] has the same mean log-likelihood, hence the same J and optimum."""
    X, y = make_data(distr)
    kw = dict(distr=distr, alpha=alpha, reg_lambda=LAMBDA, tol=1e-12)
    m = exact(**kw).fit(X, y)
    m2 = exact(**kw).fit(np.vstack([X, X]), np.r_[y, y])
    assert_allclose(m2.beta_, m.beta_, atol=1e-9)
    assert_allclose(m2.beta0_, m.beta0_, atol=1e-9)


@pytest.mark.parametrize("use_tau", [False, True], ids=["identity", "tau"])
@pytest.mark.parametrize("c", [1e-3, 0.5, 10.0, -4.0])
@pytest.mark.parametrize("distr", ["gaussian", "poisson", "softplus"])
def test_rescaled_column_and_tau_column(distr, c, use_tau):
    """α = 0: X → X·D, Γ → Γ·D with D = diag(1, …, c, …, 1) gives β → D⁻¹β.

    X D (D⁻¹β) = Xβ and Γ D (D⁻¹β) = Γβ, so J is unchanged at the mapped point.
    """
    X, y = make_data(distr)
    p, j = X.shape[1], 3
    Tau = tau_matrix(p) if use_tau else np.eye(p)
    D = np.ones(p)
    D[j] = c
    kw = dict(distr=distr, alpha=0.0, reg_lambda=LAMBDA, tol=1e-12)
    m = exact(Tau=Tau, **kw).fit(X, y)
    m2 = exact(Tau=Tau * D, **kw).fit(X * D, y)
    expected = m.beta_.copy()
    expected[j] /= c
    assert_allclose(m2.beta_, expected, rtol=1e-7, atol=1e-9)
    assert_allclose(m2.beta0_, m.beta0_, atol=1e-9)


def test_tau_none_equals_identity():
    X, y = make_data("poisson")
    kw = dict(distr="poisson", alpha=0.3, reg_lambda=LAMBDA, tol=1e-12)
    a = exact(**kw).fit(X, y)
    b = exact(Tau=np.eye(X.shape[1]), **kw).fit(X, y)
    assert_allclose(b.beta_, a.beta_, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# 3. stress
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distr", ["gaussian", "poisson", "gamma"])
def test_exact_duplicate_columns(distr):
    """An exact duplicate column: ridge splits equally, lasso keeps J and the total."""
    X, y = make_data(distr)
    Xd = np.hstack([X, X[:, [0]]])
    for alpha in (0.0, 1.0):
        kw = dict(distr=distr, alpha=alpha, reg_lambda=LAMBDA, tol=1e-12)
        m = exact(**kw).fit(X, y)
        md = exact(**kw).fit(Xd, y)
        assert md.converged_
        assert kkt_of(md, Xd, y) <= 1e-8
        if alpha == 0.0:
            # ridge splits equally, t each; that is the original problem in β_0 = 2t with the
            # ridge weight of β_0 halved (λ/2·2t² = λ/2·β_0²/2): Γ = diag(1/√2, 1, …, 1)
            assert_allclose(md.beta_[0], md.beta_[-1], atol=1e-9)
            Tau = np.eye(X.shape[1])
            Tau[0, 0] = np.sqrt(0.5)
            mt = exact(Tau=Tau, **kw).fit(X, y)
            assert_allclose(md.beta_[0] + md.beta_[-1], mt.beta_[0], atol=1e-8)
            assert_allclose(md.beta_[1:-1], mt.beta_[1:], atol=1e-8)
        else:
            J = _loss(distr, alpha, LAMBDA, X, y, packed(m), theta=THETA)
            Jd = _loss(distr, alpha, LAMBDA, Xd, y, packed(md), theta=THETA)
            assert_allclose(Jd, J, rtol=1e-11)  # same optimal value
            assert_allclose(md.beta_[0] + md.beta_[-1], m.beta_[0], atol=1e-7)
            assert_allclose(md.beta_[1:-1], m.beta_[1:], atol=1e-7)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("distr", ["gaussian", "poisson"])
def test_more_features_than_samples(distr, alpha):
    rng = np.random.default_rng(4)
    n, p = 40, 120
    X = rng.standard_normal((n, p))
    beta = np.zeros(p)
    beta[:5] = [0.6, -0.6, 0.3, 0.3, -0.3]
    y = (
        X @ beta + rng.standard_normal(n)
        if distr == "gaussian"
        else rng.poisson(np.exp(0.5 + X @ beta)).astype(float)
    )
    for lam in (0.1, 0.01):
        m = exact(distr=distr, alpha=alpha, reg_lambda=lam, eta=np.inf, tol=1e-10).fit(X, y)
        assert m.converged_
        assert kkt_of(m, X, y) <= 1e-8


def wide_problem(distr, fmt, n=150, p=GRAM_MAX_FEATURES + 500, seed=5):
    """p > GRAM_MAX_FEATURES: the residual-update kernel. Sparse designs have density 5%."""
    rng = np.random.default_rng(seed)
    if fmt == "dense":
        X = rng.standard_normal((n, p))
    else:
        X = sp.random(
            n,
            p,
            density=0.05,
            random_state=seed,
            format=fmt,
            data_rvs=lambda k: rng.standard_normal(k),
        )
    beta = np.zeros(p)
    beta[:10] = 0.3 if fmt == "dense" else 1.0
    z = 0.5 + np.asarray(X @ beta).ravel()
    y = z + rng.standard_normal(n) if distr == "gaussian" else rng.poisson(np.exp(z)).astype(float)
    return X, y


@pytest.mark.parametrize("fmt", ["dense", "csc", "csr"])
@pytest.mark.parametrize("alpha", [0.5, 1.0])
@pytest.mark.parametrize("distr", ["gaussian", "poisson"])
def test_wide_residual_kernel(distr, alpha, fmt):
    X, y = wide_problem(distr, fmt)
    assert X.shape[1] > GRAM_MAX_FEATURES
    m = exact(distr=distr, alpha=alpha, reg_lambda=0.03, eta=np.inf, tol=1e-10).fit(X, y)
    assert m.converged_
    assert kkt_of(m, X, y) <= 1e-8
    if fmt != "dense":
        md = exact(distr=distr, alpha=alpha, reg_lambda=0.03, eta=np.inf, tol=1e-10).fit(
            X.toarray(), y
        )
        assert_allclose(m.beta_, md.beta_, atol=1e-10)
        assert_allclose(m.beta0_, md.beta0_, atol=1e-10)


def test_wide_ridge_more_features_than_samples_converges():
    rng = np.random.default_rng(0)
    n, p = 100, 1100
    X = rng.standard_normal((n, p))
    beta = np.zeros(p)
    beta[:10] = 0.3
    y = rng.poisson(np.exp(0.5 + X @ beta)).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = exact(
            distr="poisson", alpha=0.0, reg_lambda=0.1, eta=np.inf, max_iter=100, tol=1e-8
        ).fit(X, y)
    kkt = kkt_of(m, X, y)
    assert m.converged_ and kkt <= 1e-6, (
        f"ridge p>>n: not converged after {m.n_iter_} Newton iterations, KKT residual {kkt:.3g}"
    )


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("use_tau", [False, True], ids=["identity", "tau"])
@pytest.mark.parametrize("distr", ["gaussian", "poisson", "neg-binomial"])
def test_gram_and_residual_kernels_agree(distr, use_tau, alpha, monkeypatch):
    """Each kernel on the same small problem (the wide route forced): the same optimum."""
    X, y = make_data(distr)
    Tau = tau_matrix(X.shape[1]) if use_tau else None
    kw = dict(distr=distr, alpha=alpha, reg_lambda=LAMBDA, Tau=Tau, tol=1e-12)
    used = record_inner(monkeypatch)
    gram = exact(**kw).fit(X, y)
    assert set(used) == {"GramCD"} and len(used) == gram.n_iter_
    used.clear()
    resid = exact(routes={"gram_max_features": 0}, **kw).fit(X, y)
    # the wide route: residual-update CD, or conjugate gradients for a ridge model
    assert set(used) == {"ResidualCD" if alpha > 0 else "ConjugateGradient"}, used
    assert resid.converged_ and kkt_of(resid, X, y) <= 1e-9
    assert_allclose(resid.beta_, gram.beta_, atol=1e-9)
    assert_allclose(resid.beta0_, gram.beta0_, atol=1e-9)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("distr", ["gaussian", "poisson", "softplus"])
def test_sparse_equals_dense_gram_path(distr, alpha, fmt):
    rng = np.random.default_rng(6)
    n, p = 200, 20
    X = sp.random(
        n, p, density=0.2, random_state=6, format=fmt, data_rvs=lambda k: rng.standard_normal(k)
    )
    Xd = X.toarray()
    z = 0.3 + Xd @ rng.uniform(-0.8, 0.8, p)
    y = (
        z + rng.standard_normal(n)
        if distr == "gaussian"
        else rng.poisson(np.logaddexp(0, z)).astype(float)
    )
    kw = dict(distr=distr, alpha=alpha, reg_lambda=0.02, tol=1e-12)
    ms = exact(**kw).fit(X, y)
    md = exact(**kw).fit(Xd, y)
    assert_allclose(ms.beta_, md.beta_, atol=1e-10)
    assert_allclose(ms.beta0_, md.beta0_, atol=1e-10)
    assert kkt_of(ms, Xd, y) <= 1e-9


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["icpt", "noicpt"])
@pytest.mark.parametrize(
    "distr,eta", [("poisson", np.inf), ("poisson", 2.0), ("softplus", 2.0), ("neg-binomial", 2.0)]
)
def test_all_zero_counts(distr, eta, fit_intercept, alpha):
    """y ≡ 0: no crash, no NaN, β = 0 and a tiny fitted mean (β0 → −∞ is the infimum)."""
    X, _ = make_data("poisson")
    y = np.zeros(X.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        m = exact(
            distr=distr, eta=eta, alpha=alpha, reg_lambda=LAMBDA, fit_intercept=fit_intercept
        ).fit(X, y)
        mu = m.predict(X)
    assert np.isfinite(m.beta0_) and np.all(np.isfinite(m.beta_))
    if alpha > 0:
        assert_array_equal(m.beta_, 0.0)  # |∂J/∂β_j| → 0 < λα: soft-thresholded to exactly 0
    else:
        assert_allclose(m.beta_, 0.0, atol=1e-12)  # ridge: β → 0 as β0 → −∞
    assert np.all(np.isfinite(mu)) and np.all(mu >= 0)
    if fit_intercept:
        assert np.all(mu < 1e-6), mu.max()
    J = _loss(
        distr, alpha, LAMBDA, X, y, packed(m), eta=eta, theta=THETA, fit_intercept=fit_intercept
    )
    assert np.isfinite(J)


MEANS = [1e-6, 1e-3, 1.0, 1e3, 1e6]
# Regression guard: an earlier stopping rule, KKT <= tol*max(1, ||null gradient||_inf), floored
# the scale at 1, so at mean 1e-6 the default tol returned beta_ = 0 after 0 iterations with
# converged_ = True, and tol = 1e-10 left an error of 1.1e-6.


@pytest.mark.parametrize("mean", MEANS)
def test_poisson_means_across_twelve_decades_tight_tol(mean):
    """Noise-free y = exp(β0 + Xβ): the unpenalised optimum is exactly (β0, β)."""
    X, _ = make_data("poisson")
    b0 = np.log(mean)
    y = np.exp(b0 + X @ TRUE_BETA)
    m = exact(distr="poisson", eta=np.inf, reg_lambda=0.0, tol=1e-10).fit(X, y)
    assert m.converged_
    err = max(np.max(np.abs(m.beta_ - TRUE_BETA)), abs(m.beta0_ - b0))
    assert err <= 1e-8, f"mean {mean:g}, tol=1e-10: max coefficient error {err:.3g}"
    # counts drawn at that mean (all zero at 1e-6), lightly penalised: the KKT relative to the
    # gradient scale ‖Xᵀ(ȳ − y)‖∞/n + mean(y) must be small
    yc = np.random.default_rng(7).poisson(y).astype(float)
    mc = exact(distr="poisson", eta=np.inf, alpha=0.5, reg_lambda=1e-3 * mean, tol=1e-10).fit(X, yc)
    assert np.all(np.isfinite(mc.beta_)) and np.isfinite(mc.beta0_)
    scale = max(np.abs(X.T @ (yc.mean() - yc)).max() / len(yc), yc.mean(), 1e-300)
    if yc.any():
        assert kkt_of(mc, X, yc) <= 1e-8 * max(1.0, scale)


@pytest.mark.parametrize("mean", MEANS)
def test_poisson_means_default_tol_is_scale_free(mean):
    """The default tol must give the same (good) accuracy whatever the scale of the counts."""
    X, _ = make_data("poisson")
    y = np.exp(np.log(mean) + X @ TRUE_BETA)
    m = exact(distr="poisson", eta=np.inf, reg_lambda=0.0).fit(X, y)
    err = np.max(np.abs(m.beta_ - TRUE_BETA))
    assert err <= 1e-4, (
        f"mean {mean:g}: max |beta - beta_true| = {err:.3g} after "
        f"{m.n_iter_} iterations (converged_={m.converged_})"
    )


def test_float32_input_gives_the_float64_result():
    X, y = make_data("poisson")
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    kw = dict(distr="poisson", alpha=0.5, reg_lambda=LAMBDA, tol=1e-10)
    m32 = exact(**kw).fit(X32, y32)
    m64 = exact(**kw).fit(X32.astype(np.float64), y32.astype(np.float64))
    assert m32.beta_.dtype == np.float64
    assert_allclose(m32.beta_, m64.beta_, rtol=0, atol=1e-14)
    assert_allclose(m32.beta0_, m64.beta0_, rtol=0, atol=1e-14)
    # and close to the fit on the unrounded data (X moved by ~6e-8 relative)
    m = exact(**kw).fit(X, y)
    assert_allclose(m32.beta_, m.beta_, atol=1e-5)
    ms = exact(**kw).fit(sp.csr_matrix(X32), y32)
    assert_allclose(ms.beta_, m64.beta_, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("reg_lambda", [0.0, 1e-4, 1e-3])
def test_glmnet_documented_poisson_divergence_case(reg_lambda, alpha):
    """glmnet's FAQ: Poisson with x ~ U(5, 10) (far from 0) can diverge. Newton + line search must
    converge; unpenalised it must match statsmodels' IRLS."""
    rng = np.random.default_rng(2024)
    x = rng.uniform(5, 10, 100)
    y = rng.poisson(np.exp(1 + 0.3 * x)).astype(float)
    X = x[:, None]
    m = exact(distr="poisson", eta=np.inf, alpha=alpha, reg_lambda=reg_lambda, tol=1e-10).fit(X, y)
    assert m.converged_
    assert kkt_of(m, X, y) <= 1e-8
    assert abs(m.beta_[0] - 0.3) < 0.05  # the right neighbourhood, not a diverged point
    if reg_lambda == 0.0:
        sm = pytest.importorskip("statsmodels.api")
        ref = sm.GLM(y, sm.add_constant(x), family=sm.families.Poisson()).fit(tol=1e-14)
        assert_allclose([m.beta0_, m.beta_[0]], ref.params, rtol=1e-8)


# ---------------------------------------------------------------------------------------------
# 4. solver mechanics: warning, iteration count, monotone objective
# ---------------------------------------------------------------------------------------------
def test_convergence_warning_says_how_far():
    X, y = make_data("gamma")
    with pytest.warns(ConvergenceWarning) as record:
        m = exact(distr="gamma", alpha=0.5, reg_lambda=LAMBDA, max_iter=2, tol=1e-12).fit(X, y)
    assert not m.converged_ and m.n_iter_ == 2
    messages = [str(w.message) for w in record if issubclass(w.category, ConvergenceWarning)]
    assert len(messages) == 1
    found = re.search(r"KKT residual ([0-9.eE+-]+)", messages[0])
    assert found, messages[0]
    assert "max_iter=2" in messages[0]
    kkt = kkt_of(m, X, y)
    assert kkt > 1e-12
    assert_allclose(float(found.group(1)), kkt, rtol=5e-3)  # printed with 3 digits
    assert_allclose(m.kkt_residual_, kkt, rtol=1e-6)


def test_no_warning_when_converged():
    X, y = make_data("poisson")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        m = exact(distr="poisson", alpha=0.5, reg_lambda=LAMBDA).fit(X, y)
    assert m.converged_


def _record_steps(monkeypatch):
    """Wrap the single-problem solver's direction and its move to the line search's step.

    Returns (steps, directions): for every line search the (z, β, step) before and the
    (z, β) after the step taken, and one entry per Newton direction computed (one per
    outer iteration).
    """
    move, direction = NewtonCD.move, NewtonCD.direction
    steps, directions = [], []

    def recording_move(self, active, step):
        before = (active.Zc[0].copy(), active.beta[0].copy(), float(step[0]))
        move(self, active, step)
        steps.append((*before, active.Zc[0].copy(), active.beta[0].copy()))

    def recording_direction(self, *args, **kwargs):
        directions.append(None)
        return direction(self, *args, **kwargs)

    monkeypatch.setattr(NewtonCD, "move", recording_move)
    monkeypatch.setattr(NewtonCD, "direction", recording_direction)
    return steps, directions


MONOTONE = [
    ("gaussian", 0.5, False),
    ("poisson", 0.5, False),
    ("poisson", 1.0, True),
    ("softplus", 0.0, False),
    ("neg-binomial", 0.5, True),
    ("gamma", 0.5, False),
    ("gamma", 1.0, True),
]


@pytest.mark.parametrize("distr,alpha,use_tau", MONOTONE)
def test_no_step_increases_the_objective(distr, alpha, use_tau, monkeypatch):
    calls, directions = _record_steps(monkeypatch)
    X, y = make_data(distr, seed=11)
    Tau = tau_matrix(X.shape[1]) if use_tau else None
    m = exact(distr=distr, alpha=alpha, reg_lambda=LAMBDA, Tau=Tau, tol=1e-12).fit(X, y)
    assert m.n_iter_ == len(directions) >= 1  # n_iter_ counts outer (Newton) iterations
    assert len(calls) >= m.n_iter_ - 1  # every iteration but a final zero step searches a line
    kw = dict(reg_lambda=LAMBDA, alpha=alpha, Tau=Tau, theta=THETA)
    J = [ref_objective_z(distr, y, calls[0][0], calls[0][1], **kw)]
    J += [ref_objective_z(distr, y, z_new, b_new, **kw) for *_, z_new, b_new in calls]
    increases = np.diff(J) / np.abs(J[:-1])
    assert increases.max() <= 1e-15, (
        f"J went up by {increases.max():.3g} (relative) at iteration {increases.argmax() + 1}: {J}"
    )
    assert J[-1] < J[0]
    # the last iterate recorded is the returned solution
    assert_allclose(calls[-1][4], m.beta_, rtol=0, atol=0)


def test_no_step_increases_the_objective_wide(monkeypatch):
    calls, directions = _record_steps(monkeypatch)
    X, y = wide_problem("poisson", "csc")
    m = exact(distr="poisson", alpha=0.5, reg_lambda=0.03, eta=np.inf, tol=1e-10).fit(X, y)
    assert m.n_iter_ == len(directions) >= 1
    kw = dict(reg_lambda=0.03, alpha=0.5, eta=np.inf)
    J = [ref_objective_z("poisson", y, calls[0][0], calls[0][1], **kw)]
    J += [ref_objective_z("poisson", y, z_new, b_new, **kw) for *_, z_new, b_new in calls]
    assert (np.diff(J) / np.abs(J[:-1])).max() <= 1e-15, J


def test_n_iter_counts_outer_iterations(monkeypatch):
    X, y = make_data("neg-binomial")
    kw = dict(distr="neg-binomial", alpha=0.5, reg_lambda=LAMBDA, tol=1e-12)
    full = exact(**kw).fit(X, y)
    assert full.converged_ and full.n_iter_ >= 3
    with pytest.warns(ConvergenceWarning):
        capped = exact(max_iter=full.n_iter_ - 1, **kw).fit(X, y)
    assert capped.n_iter_ == full.n_iter_ - 1 and not capped.converged_
    # a start that is already optimal costs 0 iterations: lasso above λ_max, where the null
    # model (β = 0, β0 = log ȳ) satisfies the KKT conditions exactly
    lam_max = np.abs(X.T @ (y - y.mean())).max() / len(y)
    null = exact(distr="poisson", eta=np.inf, alpha=1.0, reg_lambda=2 * lam_max).fit(X, y)
    assert null.n_iter_ == 0 and null.converged_
    assert_array_equal(null.beta_, 0.0)
    assert_allclose(null.beta0_, np.log(y.mean()), rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# 6. batch-gradient stays available (smoke; tested in depth in test_batch_gradient.py)
# ---------------------------------------------------------------------------------------------
def test_batch_gradient_smoke_one_step_by_hand():
    """One spateo step from spateo's seeded start: b − lr·∇, then soft-threshold β at lr·λα."""
    X, y = make_data("poisson")
    lr, seed, lam, alpha = 0.05, 888, LAMBDA, 0.5
    with pytest.warns(ConvergenceWarning):
        m = exact(
            distr="poisson",
            alpha=alpha,
            reg_lambda=lam,
            solver="batch-gradient",
            learning_rate=lr,
            max_iter=1,
            random_seed=seed,
        ).fit(X, y)
    p = X.shape[1]
    start = np.random.RandomState(seed).normal(0.0, 1.0, p + 1) / (p + 1)
    b0, b = start[0], start[1:]
    r = ref_residual("poisson", y, b0 + X @ b, eta=2.0)
    g0, g = r.mean(), X.T @ r / len(y) + lam * (1 - alpha) * b
    v = b - lr * g
    expected = np.sign(v) * np.maximum(np.abs(v) - lr * lam * alpha, 0)
    assert m.n_iter_ == 1
    assert_allclose(m.beta0_, b0 - lr * g0, rtol=1e-12)
    assert_allclose(m.beta_, expected, rtol=1e-12, atol=1e-15)


def test_batch_gradient_smoke_runs_and_is_not_better_than_exact():
    X, y = make_data("poisson")
    kw = dict(distr="poisson", alpha=0.5, reg_lambda=LAMBDA)
    bg = exact(solver="batch-gradient", learning_rate=0.05, **kw).fit(X, y)
    bg2 = exact(solver="batch-gradient", learning_rate=0.05, **kw).fit(X, y)
    assert_array_equal(bg.beta_, bg2.beta_)  # seeded at every fit
    assert 3 <= bg.n_iter_ <= 1000
    ex = exact(tol=1e-10, **kw).fit(X, y)
    J_bg = _loss("poisson", 0.5, LAMBDA, X, y, packed(bg), theta=THETA)
    J_ex = _loss("poisson", 0.5, LAMBDA, X, y, packed(ex), theta=THETA)
    assert J_ex <= J_bg
    assert_allclose(bg.beta_, ex.beta_, atol=1e-2)  # spateo's rule stops near, not at, the optimum


# ---------------------------------------------------------------------------------------------
# sample weights of the batched solver (how GLMCV solves all folds in one batch)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distr", DISTRS)
def test_batched_sample_weights_select_rows_and_count_repeats(distr):
    """Column weights 0/1 fit the selected rows; weight 2 fits the row repeated."""
    from stglm._solvers.batched import BatchedNewtonCD, SharedDesign

    X, y = make_data(distr, n=120, seed=4)
    X = X * [1, 2, 3, 0.5, 1, 10] + [0, 0, 5, 0, 0, 3]  # the solver's scaling at work
    n = len(y)
    weights = np.ones((n, 4))
    weights[:40, 0] = 0.0  # a training fold without the first 40 rows
    weights[40:80, 1] = 0.0
    weights[::3, 2] = 2.0  # every third row counted twice
    model = exact(distr=distr, reg_lambda=LAMBDA, tol=1e-11)
    family = model._family()
    solver = BatchedNewtonCD(family, SharedDesign(X, True), 0.5, None, max_iter=100, tol=1e-11)
    res = solver.solve(np.repeat(y[:, None], 4, axis=1), LAMBDA, weights=weights)
    assert res.converged.all()
    for k in range(4):
        rows = np.repeat(np.arange(n), weights[:, k].astype(int))
        single = exact(distr=distr, reg_lambda=LAMBDA, tol=1e-11).fit(X[rows], y[rows])
        assert_allclose(res.coefs[k], single.beta_, rtol=0, atol=1e-8, err_msg=f"column {k}")
        assert_allclose(res.intercepts[k], single.beta0_, rtol=0, atol=1e-8)
        assert kkt_of(single, X[rows], y[rows]) <= 1e-8


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_batched_kernels_follow_the_formulas(fit_intercept, alpha):
    """The batched solver's compiled pieces against the penalty and scaling in numpy."""
    from stglm._penalties import ElasticNet, kkt_residual
    from stglm._solvers._batched_kernels import finish_gradients, newton_directions, penalties
    from stglm._solvers._cd_kernels import _cd_gram
    from stglm._solvers._scaling import DesignScaling

    rng = np.random.default_rng(11)
    n_genes, p = 5, 4
    off = int(fit_intercept)
    m = p + off
    B = rng.standard_normal((n_genes, m))
    B[:, off + 1] = 0.0  # zeros exercise the subgradient's two branches
    B[2, off:] = 0.0
    B[3] = 0.0  # with a zero gradient below: the model's minimiser is the current point
    lam = rng.uniform(0.05, 0.5, n_genes)
    Tau = rng.standard_normal((p, p)) + 2 * np.eye(p)
    gram = Tau.T @ Tau
    raw = rng.standard_normal((n_genes, m))  # R·X̃ of some working residuals
    raw[3] = 0.0
    total = rng.uniform(50, 100, n_genes)

    ones = np.ones(p)  # penalty factors: see test_penalty_factors for others
    pen = penalties(B, lam, alpha, ones, gram, fit_intercept)
    grads = raw.copy()
    kkt = finish_gradients(grads, total, B, lam, alpha, ones, gram, fit_intercept)
    for k in range(n_genes):
        enet = ElasticNet(lam[k], alpha, Tau)
        beta = B[k, off:]
        assert_allclose(pen[k], enet.value(beta), rtol=1e-13, atol=1e-15)
        g = raw[k] / total[k]
        g[off:] += enet.ridge_grad(beta)
        assert_allclose(grads[k], g, rtol=1e-13, atol=1e-15)
        expected = kkt_residual(g[off:], beta, enet.l1, g[0] if fit_intercept else None)
        assert_allclose(kkt[k], expected, rtol=1e-13, atol=1e-15)
        # ... and the same three written out here, without stglm's ElasticNet.
        l1, l2 = lam[k] * alpha, lam[k] * (1 - alpha)
        pen_by_hand = 0.5 * l2 * np.sum((Tau @ beta) ** 2) + l1 * np.abs(beta).sum()
        assert_allclose(pen[k], pen_by_hand, rtol=1e-13, atol=1e-15)
        g_by_hand = raw[k] / total[k] + np.r_[np.zeros(off), l2 * gram @ beta]
        assert_allclose(grads[k], g_by_hand, rtol=1e-13, atol=1e-15)
        kkt_hand = kkt_by_hand(g_by_hand[off:], beta, l1, g_by_hand[0] if fit_intercept else None)
        assert_allclose(kkt[k], kkt_hand, rtol=1e-13, atol=1e-15)

    X = rng.standard_normal((30, p)) * [1.0, 3.0, 0.2, 50.0] + [0.0, 4.0, 1.0, 100.0]
    scaling = DesignScaling(X, fit_intercept)
    assert not scaling.identity
    A = rng.standard_normal((n_genes, m, m))
    H_lik = A @ A.transpose(0, 2, 1) + m * np.eye(m)
    gram_scaled = scaling.ridge_gram(gram)
    tol = np.full(n_genes, 1e-12)
    X_new = np.empty_like(B)
    delta, at_minimum = newton_directions(
        H_lik, gram_scaled, grads, B, lam, alpha, ones, scaling.center, scaling.scale,
        fit_intercept, tol, 100_000, X_new,
    )  # fmt: skip
    G_s, B_s = scaling.gradient_to_scaled(grads), scaling.to_scaled(B)
    L1 = scaling.l1_weights(lam * alpha)
    for k in range(n_genes):
        H = H_lik[k].copy()
        H[off:, off:] += lam[k] * (1 - alpha) * gram_scaled
        x, _ = _cd_gram(H, G_s[k], B_s[k], L1[k], 1e-12, 100_000)
        expected = scaling.from_scaled(x[None, :])[0]
        assert_allclose(X_new[k], expected, rtol=1e-12, atol=1e-14)
        d = expected - B[k]
        decrease = grads[k] @ d + lam[k] * alpha * (
            np.abs(expected[off:]).sum() - np.abs(B[k, off:]).sum()
        )
        assert_allclose(delta[k], decrease, rtol=1e-10, atol=1e-14)
        assert at_minimum[k] == (not d.any())
        # Independently of _cd_gram and the scaling's methods: X_new minimises the Newton
        # model in the original coordinates. With b' = T⁻¹b (β' = s·β, β0' = β0 + c·β) its
        # gradient is g + T⁻ᵀH_likT⁻¹d + λ(1−α)ΓᵀΓ·d_β, its L1 weight λα.
        T_inv = np.diag(np.r_[np.ones(off), scaling.scale])
        if fit_intercept:
            T_inv[0, 1:] = scaling.center
        q = grads[k] + T_inv.T @ H_lik[k] @ T_inv @ d
        q[off:] += lam[k] * (1 - alpha) * gram @ d[off:]
        model_kkt = kkt_by_hand(q[off:], X_new[k, off:], lam[k] * alpha, q[0] if off else None)
        assert model_kkt <= 1e-9, (k, model_kkt)
    assert at_minimum[3]


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_single_problem_kkt_kernel_follows_the_formula(fit_intercept):
    """The compiled KKT residual of a single fit = kkt_residual = the formula by hand."""
    from stglm._penalties import kkt_residual
    from stglm._solvers._batched_kernels import kkt_max

    rng = np.random.default_rng(8)
    for _ in range(20):
        p = 7
        g, beta = rng.standard_normal(p), rng.standard_normal(p)
        beta[rng.random(p) < 0.4] = 0.0  # both branches of the subgradient
        l1w = rng.uniform(0.0, 1.0, p) * (rng.random(p) < 0.8)  # some unpenalised
        g0 = float(rng.standard_normal())
        got = kkt_max(g, beta, l1w, g0, fit_intercept)
        expected = kkt_residual(g, beta, l1w, g0 if fit_intercept else None)
        assert got == expected  # the same arithmetic, bit for bit
        by_hand = max(
            abs(gj + lj * np.sign(bj)) if bj != 0 else max(abs(gj) - lj, 0.0)
            for gj, bj, lj in zip(g, beta, l1w, strict=True)
        )
        assert got == (max(by_hand, abs(g0)) if fit_intercept else by_hand)
    g[3] = np.nan  # a NaN gradient never counts as converged
    assert np.isnan(kkt_max(g, beta, l1w, g0, fit_intercept))
    if fit_intercept:
        assert np.isnan(kkt_max(np.zeros(p), beta, l1w, np.nan, True))


def test_batched_kernels_never_take_nan_for_converged():
    """NaN never passes: a NaN gradient gives a NaN KKT residual (max() would drop it).

    A NaN J, a rise or too small a decrease fails Armijo's test.
    """
    from stglm._solvers._batched_kernels import (
        finish_gradients,
        move_points,
        settle_steps,
        sufficient_decrease,
    )

    B = np.zeros((3, 3))
    raw = np.array([[0.5, np.nan, 0.1], [np.nan, 0.0, 0.0], [0.2, 0.1, np.inf]])
    kkt = finish_gradients(raw, np.ones(3), B, np.full(3, 0.1), 0.5, np.ones(2), np.eye(2), True)
    assert np.isnan(kkt[0]) and np.isnan(kkt[1]) and kkt[2] == np.inf
    ok = sufficient_decrease(
        np.array([np.nan, 1.5, 0.99995]), np.ones(3), np.full(3, -1.0), np.ones(3), 1e-4, 3.2e-15
    )
    assert ok.tolist() == [False, False, False]
    # a full step takes B + D as evaluated; half a step moves by D/2; a step of 0 is stuck
    step, D = np.array([1.0, 0.5, 0.0, 0.0]), np.full((4, 3), 0.3)
    B, B_full = np.ones((4, 3)), np.full((4, 3), 1.3)
    L = np.zeros(4)
    current = tuple(np.full((4, 5), v) for v in (1.0, 2.0, 3.0))
    trial = tuple(np.full((4, 5), -v) for v in (1.0, 2.0, 3.0))
    move_points(step, D, B, B_full, L, np.full(4, 2.0), current, trial)
    assert_array_equal(B[0], B_full[0])
    assert_allclose(B[1], 1.15, rtol=1e-15)
    assert_array_equal(B[2:], 1.0)
    assert L.tolist() == [2.0, 2.0, 0.0, 0.0]
    for v, (cur, tri) in enumerate(zip(current, trial, strict=True), start=1):
        assert_array_equal(tri[:2], -v)  # a step: the trial terms are the new point's
        assert_array_equal(tri[2:], v)  # no step: the current terms, kept
        assert_array_equal(cur, v)
    # ... J follows; a stuck row is at the optimum in floating point only when its model
    # predicted a decrease below 16 ulp of J (never a NaN one)
    F, stuck, at_minimum = np.full(4, 4.0), np.zeros(4, dtype=bool), np.zeros(4, dtype=bool)
    delta = np.array([-1.0, -1.0, -1e-15, np.nan])
    flat = np.ones(4, dtype=bool)
    settle_steps(step, F, np.ones(4), delta, stuck, at_minimum, flat, 16 * 2.0**-52)
    assert F.tolist() == [1.0, 1.0, 4.0, 4.0]
    assert stuck.tolist() == [False, False, True, True]
    assert at_minimum.tolist() == [False, False, True, False]
    assert not flat.any()  # the steps taken changed J beyond rounding
    # a step whose predicted decrease and change of J are both below 16 ulp is flat
    F, step1 = np.full(2, 4.0), np.ones(2)
    settle_steps(step1, F, np.array([4.0, 3.0]), np.array([-1e-16, -1e-16]),
                 stuck[:2], at_minimum[:2], flat[:2], 16 * 2.0**-52)  # fmt: skip
    assert flat[:2].tolist() == [True, False]


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("blocked", [False, True])
def test_shared_design_hessians_by_hand(fit_intercept, blocked):
    """Each row's Hessian from the pair products = X̃'ᵀdiag(w)X̃'/n_g, also block by block.

    (The solvers' results cannot show a wrong Hessian: it only slows convergence.)
    """
    from stglm._solvers import batched

    # blocked: a few rows per block of Z, the last block partial
    options = NewtonOptions(pair_bytes_budget=8 * 28 * 7) if blocked else NewtonOptions()
    rng = np.random.default_rng(5)
    n = 53
    X = rng.standard_normal((n, 6)) * [1, 2, 3, 0.02, 1, 10] + [0, 0, 5, 0, 0, 3]
    design = batched.SharedDesign(X, fit_intercept, options)
    assert (design.Z is None) == blocked
    assert (design.subset(np.arange(40)).Z is None) == blocked  # a fold's design: the same budget
    if blocked:
        design.block = 7  # tiles of 7 rows, the last one partial (53 = 7·7 + 4)
    sc = design.scaling
    assert not sc.identity
    ones = [np.ones((n, 1))] if fit_intercept else []
    assert_array_equal(design.Xt, np.hstack([*ones, X]))
    scaled = np.hstack([*ones, (X - sc.center) / sc.scale])
    W = rng.uniform(0, 2, (4, n))
    W[1, ::3] = 0.0  # sample weights 0: a training fold
    total = W.sum(axis=1)
    H = design.hessians(W, total)
    for g in range(4):
        expected = scaled.T @ (W[g][:, None] * scaled) / total[g]
        assert_allclose(H[g], expected, rtol=1e-12, atol=1e-14)
    assert_allclose(design.hessians(W)[0], scaled.T @ (W[0][:, None] * scaled) / n, rtol=1e-12)
