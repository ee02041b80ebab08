"""The solvers' compiled family kernels agree with the reference families (stglm._families)."""

import numpy as np
import pytest
from conftest import ref_residual

from stglm import get_family
from stglm._solvers._family_kernels import loglik_at_solution, nll_and_terms

FAMILIES = [
    ("gaussian", {}),
    ("poisson", {"eta": 2.0}),
    ("poisson", {"eta": np.inf}),
    ("softplus", {}),
    ("neg-binomial", {"theta": 2.5}),
    ("gamma", {}),
]


def kernel(fam, Y, Z, M=None):
    """The kernel on sample-major (n, G) arrays: it works gene-major, (G, n)."""
    R, W = np.empty_like(Z.T, order="C"), np.empty_like(Z.T, order="C")
    args = [np.ascontiguousarray(A.T) for A in (Y, Z)]
    weights = None if M is None else np.ascontiguousarray(M.T)
    nll = nll_and_terms(fam, *args, R, W, weights)
    return nll, R.T, W.T


@pytest.mark.parametrize(("distr", "kw"), FAMILIES)
def test_kernel_matches_reference_family(distr, kw):
    rng = np.random.default_rng(0)
    Z = rng.normal(0.5, 1.5, size=(400, 3))
    Z[:5] = [[-40.0], [-5.0], [2.0], [3.5], [40.0]][:5]  # both tails and around eta
    fam = get_family(distr, **kw)
    Y = rng.poisson(2.0, size=Z.shape).astype(float)
    if distr == "gamma":
        Y += 0.25
    if distr == "poisson" and np.isinf(fam.eta):
        Z = np.clip(Z, -30, 30)
    _, R, W = kernel(fam, Y, Z)
    np.testing.assert_allclose(R, fam.residual(Y, Z), rtol=1e-10, atol=1e-12)
    # and against the SEMANTICS formulas (conftest), where their σ(z) = ½(1 + tanh(z/2)) is
    # still accurate to 1e-10 (not in the far left tail of the softplus families)
    core = Z > -8.0
    np.testing.assert_allclose(
        R[core], ref_residual(distr, Y, Z, **kw)[core], rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(W, np.maximum(fam.hessian_weights(Y, Z), 0), rtol=1e-10, atol=1e-12)
    if distr == "poisson":
        # The kernel's −ℓ below η is μ − y·z: the seed's y·log(μ + ε) without its ε, a
        # difference of y·ε/μ, visible in this comparison where μ < 1e-7 (z < −15).
        Z = np.maximum(Z, -15.0)
    nll = kernel(fam, Y, Z)[0]
    # −ℓ up to terms in y alone: the difference between two means is the same.
    Z2 = Z + 0.1
    nll2 = kernel(fam, Y, Z2)[0]
    ref = [-fam.loglik(Y, fam.mean(z)).mean(axis=0) for z in (Z, Z2)]
    np.testing.assert_allclose(nll2 - nll, ref[1] - ref[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("distr", "kw"), FAMILIES)
def test_sample_weights_select_and_count_samples(distr, kw):
    """Weight 0 drops a sample, weight 2 counts it twice: the weighted mean of the terms."""
    rng = np.random.default_rng(1)
    fam = get_family(distr, **kw)
    Z = rng.normal(0.3, 1.0, size=(300, 2))
    Y = rng.poisson(2.0, size=Z.shape).astype(float) + (0.25 if distr == "gamma" else 0.0)
    M = rng.choice([0.0, 1.0, 2.0], size=Z.shape)
    Z[M[:, 0] == 0, 0] = 800.0  # a dropped sample may overflow exp: it must not leak in
    nll, R, W = kernel(fam, Y, Z, M)
    for k in range(Z.shape[1]):
        rows = np.repeat(np.arange(Z.shape[0]), M[:, k].astype(int))
        ref_nll, ref_R, ref_W = kernel(fam, Y[rows, k : k + 1], Z[rows, k : k + 1])
        np.testing.assert_allclose(nll[k], ref_nll[0], rtol=1e-12)
        kept = M[:, k] > 0
        np.testing.assert_array_equal(R[~kept, k], 0.0)
        np.testing.assert_array_equal(W[~kept, k], 0.0)
        last_copy = np.cumsum(M[:, k])[kept].astype(int) - 1  # each kept row's place in `rows`
        np.testing.assert_allclose(R[kept, k], M[kept, k] * ref_R[last_copy, 0])
        np.testing.assert_allclose(W[kept, k], M[kept, k] * ref_W[last_copy, 0])
        # the weighted residuals against the formulas, not only the kernel itself
        np.testing.assert_allclose(
            R[kept, k], M[kept, k] * ref_residual(distr, Y[kept, k], Z[kept, k], **kw)
        )


def test_log_link_nb_nll_is_accurate_at_every_theta():
    """The log-link NB −ℓ (one log1p per count) against 50-digit arithmetic.

    −ℓ = θ·log1p(μ/θ) + y·log1p(θ/μ) (the kernels' convention, module docstring), over θ
    from 1e-8 to 1e8 and means on both sides of θ: the kernel's sum of two non-negative
    terms must hold every digit where a difference of logs would cancel.
    """
    from decimal import Decimal, getcontext

    getcontext().prec = 50
    thetas = np.array([1e-8, 1e-3, 0.7, 3.0, 1e3, 1e8])
    z = np.array([-20.0, -3.0, -0.2, 0.0, 1.1, 6.0, 15.0])
    ys = np.array([0.0, 1.0, 7.0, 300.0])
    T, Zg, Yg = (a.ravel() for a in np.meshgrid(thetas, z, ys, indexing="ij"))
    fam = get_family("neg-binomial", link="log", theta=1.0)
    # one sample per row: each row's mean −ℓ is its sample's −ℓ
    Y, Z = Yg[:, None].copy(), Zg[:, None].copy()
    R, W = np.empty_like(Z), np.empty_like(Z)
    nll = nll_and_terms(fam, Y, Z, R, W, theta=T)

    def exact(theta, y, z):
        mu, th, yy = Decimal(float(np.exp(z))), Decimal(float(theta)), Decimal(float(y))
        return float(th * (1 + mu / th).ln() + yy * (1 + th / mu).ln())

    ref = np.array([exact(*args) for args in zip(T, Yg, Zg, strict=True)])
    np.testing.assert_allclose(nll, ref, rtol=1e-13, atol=0)
    mu = np.exp(Zg)
    np.testing.assert_allclose(R[:, 0], T * (mu - Yg) / (mu + T), rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("distr", ["poisson", "neg-binomial", "gaussian", "gamma"])
@pytest.mark.parametrize("weighted", [False, True])
def test_loglik_at_solution_is_the_family_loglik(distr, weighted):
    """Σm·ℓ from the kernels' mean −ℓ (no pass over the means) = Σm·``Family.loglik``.

    θ per gene spans 1e-3 to 1e8 (the solver's bounds), where the NB's lnΓ(y+θ) − lnΓ(θ)
    must not cancel; weights include 0 (a sample left out); counts include large and
    non-integer values.
    """
    rng = np.random.default_rng(3)
    n, g = 400, 5
    fam = get_family(distr, link=None if distr == "gaussian" else "log")
    Z = rng.normal(0.5, 1.0, (g, n))
    mu = fam.mean(Z)
    if distr == "gaussian":
        Y = rng.normal(mu)
    else:
        Y = rng.poisson(mu).astype(float) if fam.is_count else rng.gamma(2.0, mu / 2.0)
    if fam.is_count:  # past the NB's table of small integer counts: one by one
        Y[:, :4] = [64.0, 300.0, 1e4, 2.5]
    theta = np.array([1e-3, 0.4, 5.0, 1e3, 1e8]) if distr == "neg-binomial" else None
    w = rng.integers(0, 3, n).astype(float) if weighted else None
    Mg = None if w is None else np.tile(w, (g, 1))
    R, W = np.empty_like(Z), np.empty_like(Z)
    nll = nll_and_terms(fam, Y, Z, R, W, Mg, theta=theta)
    total = float(n) if w is None else float(w.sum())
    got = loglik_at_solution(fam, Y.T, nll, total, None if w is None else w[:, None], theta)
    ll_fam = fam if theta is None else fam.with_theta(theta)
    terms = ll_fam.loglik(Y.T, mu.T)
    expected = (terms if w is None else w[:, None] * terms).sum(axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
