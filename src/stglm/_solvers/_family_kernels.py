"""Fused, compiled evaluation of a family's Newton terms for the solvers' hot loops.

:class:`stglm._families.Family` is the reference definition of every family (and what
the public functions use). A Newton iteration needs, at each (y_i, z_i), the working
residual r = ∂(−ℓ)/∂z and the curvature weight w, and the line search needs −ℓ; in
numpy these cost a dozen temporary arrays. Here each is one pass over the data, per
element and per column, with the same formulas (tests check the two agree).

The objective's −ℓ drops the terms that depend on y (and θ) alone (log y!, lnΓ(y+θ),
θ·log θ, ...): the solvers only compare values of J for the same y and θ, so they cancel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._dispersion import nb_count_terms
from .._families import LIK_NEGBIN, MEAN_EXP, MEAN_SOFTPLUS

EPS = np.finfo(float).eps

# The kernels use numpy's error model: where a mean underflows to 0 (softplus of z ≪ 0),
# y/μ is inf or NaN — a J that the line search refuses, or a KKT residual that is never
# converged — instead of the ZeroDivisionError of Python's model.


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _xlogy(x, y):
    return 0.0 if x == 0.0 else x * math.log(y)


def _exponentials(mean_code, eta, Z, out):
    """The one exponential each mean function needs at every z, into ``out``.

    exp(min(z, η)) for the exponential mean, exp(−|z|) for softplus (see
    :func:`_mean_terms`). numpy's exp is vectorised (≈ 0.5 ns per element here, against
    ≈ 2.7 ns for the compiled scalar loop), so the kernels receive it ready.
    """
    if mean_code == MEAN_EXP:
        np.exp(np.minimum(Z, eta, out=out) if eta < np.inf else Z, out=out)
    elif mean_code == MEAN_SOFTPLUS:
        np.exp(np.negative(np.abs(Z, out=out), out=out), out=out)


@njit(cache=True, nogil=True, error_model="numpy")
def _mean_terms(mean_code, eta, z, e):
    """(μ, μ', μ'') at z, given e = exp(min(z, η)) (exp mean) or exp(−|z|) (softplus)."""
    if mean_code == 0:
        return z, 1.0, 0.0
    if mean_code == 1:
        if z <= eta:
            return e, e, e
        return e * (z - eta + 1.0), e, 0.0
    mu = max(z, 0.0) + math.log1p(e)
    s = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
    return mu, s, s * (1.0 - s)


@njit(cache=True, nogil=True, error_model="numpy")
def _nll(lik, theta, y, mu):
    """−ℓ(y, μ) up to terms in y alone."""
    if lik == 0:
        return 0.5 * (y - mu) * (y - mu)
    if lik == 1:
        return mu - _xlogy(y, mu + 2.220446049250313e-16)
    if lik == 2:
        # (θ + y)·log(μ + θ) − y·log μ less θ·log θ, written without cancellation: the two
        # logs of the y term agree to the digits θ/μ takes (θ → 0), and θ·log θ dwarfs
        # θ·log1p(μ/θ) (θ → ∞); either way J would keep only rounding noise to compare.
        return theta * math.log1p(mu / theta) + (0.0 if y == 0.0 else y * math.log1p(theta / mu))
    return y / mu + math.log(mu)


@njit(cache=True, nogil=True, error_model="numpy")
def _newton_pair(lik, mean_code, eta, theta, y, z, e):
    """(r, w): ∂(−ℓ)/∂z and the curvature weight (true Hessian if > 0, else Fisher)."""
    mu, d1, d2 = _mean_terms(mean_code, eta, z, e)
    if lik == 0 and mean_code == 0:
        return mu - y, 1.0
    exact_exp = mean_code == 1 and z <= eta
    if lik == 1 and exact_exp:
        return mu - y, mu  # exp mean: r = μ − y and ∂²/∂z² = μ exactly
    if lik == 2 and exact_exp:
        # log link: r = θ(μ − y)/(μ + θ), w = μθ(θ + y)/(μ + θ)² (never negative)
        q = 1.0 / (mu + theta)
        return theta * (mu - y) * q, mu * theta * (theta + y) * q * q
    if lik == 3 and exact_exp:
        return 1.0 - y / mu, y / mu  # log link: the true Hessian y/μ is positive
    if lik == 0:
        g1 = mu - y
        g2 = 1.0
        fisher = 1.0
    elif lik == 1:
        g1 = 1.0 - y / mu
        g2 = y / (mu * mu)
        fisher = 1.0 / mu
    elif lik == 2:
        g1 = (theta + y) / (mu + theta) - y / mu
        g2 = y / (mu * mu) - (theta + y) / ((mu + theta) * (mu + theta))
        fisher = theta / (mu * (mu + theta))
    else:
        g1 = 1.0 / mu - y / (mu * mu)
        g2 = 2.0 * y / (mu * mu * mu) - 1.0 / (mu * mu)
        fisher = 1.0 / (mu * mu)
    true = d2 * g1 + d1 * d1 * g2
    return d1 * g1, true if true > 0.0 else d1 * d1 * fisher


def nll_and_terms(family, Y, Z, R, W, M=None, total=None, theta=None):
    """Mean −ℓ per response (up to terms in y alone) and the Newton terms, in one pass.

    Arrays are gene-major, (G, n): one contiguous row per response. Returns the means,
    shape (G,); fills R and W with the working residuals and the curvature weights.
    With sample weights M (G, n), each row's mean is Σ_i m_i·(−ℓ_i) / Σ_i m_i and R, W
    are multiplied by m; samples of weight 0 are skipped (their R and W are 0), so a
    0/1 row of M selects a training fold. ``total`` (G,) is Σ_i m_i per row when the
    caller keeps it (a solver evaluates the same weights many times). ``theta`` (G,) is
    each row's negative-binomial size when it differs from the family's.

    Families without a compiled kernel (``family.kernel`` None) are evaluated with their
    numpy methods; their −ℓ then includes the terms in y alone, which cancel in every
    comparison a solver makes.
    """
    if total is None:
        total = np.full(Y.shape[0], float(Y.shape[1])) if M is None else M.sum(axis=1)
    total = np.asarray(total, dtype=float)
    spec = family.kernel
    if spec is None:
        return _numpy_terms(family, Y, Z, R, W, M, total)
    lik, mean_code, eta, theta_default = spec
    theta = np.full(Y.shape[0], theta_default) if theta is None else np.asarray(theta, float)
    with np.errstate(over="ignore"):
        _exponentials(mean_code, eta, Z, W)  # W holds the exponentials until the kernel reads them
    return _nll_and_terms(lik, mean_code, eta, theta, Y, Z, R, W, M, total)


def _numpy_terms(family, Y, Z, R, W, M, total):
    """:func:`nll_and_terms` from a family's numpy methods (no compiled kernel)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        nll = -family.loglik(Y, family.mean(Z))
        R[...] = family.residual(Y, Z)
        W[...] = np.maximum(family.hessian_weights(Y, Z), 0.0)
    if M is not None:
        out = M != 0  # weight 0: not in this response's sample (its terms may be inf)
        nll = np.where(out, M * nll, 0.0)
        R[...] = np.where(out, M * R, 0.0)
        W[...] = np.where(out, M * W, 0.0)
    return nll.sum(axis=1) / total


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _nb_log_element(theta, log_theta, y, z, mu):
    """(−ℓ, r, w) of the log-link negative binomial at one sample, μ = e^z: one log1p.

    −ℓ = θ·L₁ + y·L₂ as in :func:`_nll`, L₁ = log1p(μ/θ), L₂ = log1p(θ/μ), from one
    log1p: L₂ − L₁ = log θ − z exactly, so the smaller of the two ratios goes into the
    log1p and the other L is that one plus |log θ − z| — a sum of two non-negative terms,
    without cancellation whether θ ≪ μ or θ ≫ μ. Zeros (most counts) need only L₁.
    """
    q = 1.0 / (mu + theta)
    r = theta * (mu - y) * q
    w = mu * theta * (theta + y) * q * q
    if y == 0.0:
        return theta * math.log1p(mu / theta), r, w
    gap = log_theta - z  # L₂ − L₁
    if gap >= 0.0:  # μ ≤ θ
        l1 = math.log1p(mu / theta)
        return theta * l1 + y * (l1 + gap), r, w
    l2 = math.log1p(theta / mu)
    return theta * (l2 - gap) + y * l2, r, w


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _element(lik, mean_code, eta, theta, log_theta, y, z, e):
    """(−ℓ, r, w) at one sample, given its exponential e (and log θ, for the NB)."""
    if mean_code == 1 and z <= eta:
        if lik == 1:
            # The common case (every z for η = ∞): μ = e, −ℓ = μ − y·z up to the seed's ε
            # inside log(μ + ε), a relative ε/μ that no comparison can see.
            return e - y * z, e - y, e
        if lik == 2:
            return _nb_log_element(theta, log_theta, y, z, e)
    mu = _mean_terms(mean_code, eta, z, e)[0]
    r, w = _newton_pair(lik, mean_code, eta, theta, y, z, e)
    return _nll(lik, theta, y, mu), r, (w if w > 0.0 else 0.0)


@njit(cache=True, nogil=True, error_model="numpy")
def _nll_and_terms(lik, mean_code, eta, theta, Y, Z, R, W, M, total):
    """:func:`nll_and_terms` once W holds the exponentials (each read before it is written).

    The sum runs in four interleaved Kahan accumulators: one chain of dependent additions
    would take about four times as long, and J differences of 1e-16 matter to the line
    search.
    """
    g, n = Y.shape
    out = np.empty(g)
    sums = np.empty(4)
    carries = np.empty(4)
    for k in range(g):
        sums[:] = 0.0
        carries[:] = 0.0
        log_theta = math.log(theta[k])
        for i in range(n):
            m = 1.0
            if M is not None:
                m = M[k, i]
                if m == 0.0:  # not in this response's sample (e may be inf: never 0·e)
                    R[k, i] = 0.0
                    W[k, i] = 0.0
                    continue
            term, r, w = _element(
                lik, mean_code, eta, theta[k], log_theta, Y[k, i], Z[k, i], W[k, i]
            )
            lane = i & 3
            term = m * term - carries[lane]
            acc = sums[lane] + term
            carries[lane] = (acc - sums[lane]) - term
            sums[lane] = acc
            R[k, i] = m * r
            W[k, i] = m * w
        out[k] = ((sums[0] - carries[0]) + (sums[1] - carries[1])) + (
            (sums[2] - carries[2]) + (sums[3] - carries[3])
        )
        out[k] /= total[k]
    return out


@njit(cache=True, nogil=True)
def _saturated_nll_columns(lik, theta, Y, M):
    """Σ_i m_i·(−ℓ)(y_i, μ = y_i) per column of Y (n, G), in the kernels' convention.

    Terms with y = 0 are exactly 0 for every compiled count likelihood (and the Gaussian's
    are 0 everywhere), so only non-zero y are evaluated.
    """
    n, g = Y.shape
    out = np.zeros(g)
    for k in range(g):
        acc = 0.0
        for i in range(n):
            y = Y[i, k]
            if y == 0.0 and lik != 3:
                continue
            m = 1.0 if M is None else M[i, k if M.shape[1] > 1 else 0]
            if m != 0.0:
                acc += m * _nll(lik, theta[k], y, y)
        out[k] = acc
    return out


def saturated_nll(family, Y, M=None, theta=None):
    """Σ m·(−ℓ) of each column of Y (n, G) at μ = y, as :func:`nll_and_terms` evaluates −ℓ.

    With the mean −ℓ of a fit (``nll``, Σ m over the samples ``total``), each column's
    deviance is 2·(total·nll − this): the terms in y alone cancel. None for a family
    without a compiled kernel. ``theta`` (G,) as in :func:`nll_and_terms`.
    """
    spec = family.kernel
    if spec is None:
        return None
    lik, _, _, theta_default = spec
    theta = np.full(Y.shape[1], theta_default) if theta is None else np.asarray(theta, float)
    M = None if M is None else np.asarray(M, dtype=float)
    return _saturated_nll_columns(lik, theta, Y, M)


def loglik_at_solution(family, Y, nll, total, M=None, theta=None):
    """Σ m·ℓ of each column of Y (n, G) from a fit's mean −ℓ, in ``Family.loglik``'s terms.

    ``nll`` (G,) is the mean −ℓ that :func:`nll_and_terms` returned at the fit and
    ``total`` the Σ m it divided by; the −ℓ of the kernels differs from −``Family.loglik``
    only by the negative binomial's lnΓ(y+θ) − lnΓ(θ) − lnΓ(y+1), added back here over the
    non-zero counts (:func:`stglm._dispersion.nb_count_terms`): no pass over the fitted
    means. None for a family without a compiled kernel. ``theta`` (G,) as in :func:`nll_and_terms`.
    """
    spec = family.kernel
    if spec is None:
        return None
    lik, _, _, theta_default = spec
    loglik = -np.asarray(total, dtype=float) * np.asarray(nll, dtype=float)
    if lik == LIK_NEGBIN:
        theta = np.full(Y.shape[1], theta_default) if theta is None else np.asarray(theta, float)
        loglik = loglik + nb_count_terms(theta, Y, M)
    return loglik
