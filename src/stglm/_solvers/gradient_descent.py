"""spateo's solver: fixed-step proximal gradient descent ("batch-gradient").

Kept so that spateo users can reproduce earlier results; it stops when the
coefficients stop moving, not at the optimum.  See ``docs/SEMANTICS.md``.
"""

from __future__ import annotations

import numpy as np

from ._common import Problem, SolverResult


def initial_coefficients(n_features: int, fit_intercept: bool, random_seed: int):
    """Spateo's start: N(0, 1)/(p+1) draws, β0 first; zeros without intercept."""
    if not fit_intercept:
        return 0.0, np.zeros(n_features)
    draws = np.random.RandomState(random_seed).normal(0.0, 1.0, n_features + 1) / (n_features + 1)
    return float(draws[0]), draws[1:].copy()


def batch_gradient(
    problem: Problem,
    beta0: float,
    beta: np.ndarray,
    *,
    learning_rate: float,
    max_iter: int,
    tol: float,
) -> SolverResult:
    """Run spateo's update from (β0, β).

    Each iteration takes b ← b − learning_rate·∇(smooth part of J), then
    soft-thresholds β (not β0) at learning_rate·λα. It stops once
    ‖b_new − b_old‖₂ / ‖b_new‖₂ < tol, checked from the third iteration on.
    """
    pen, icpt = problem.penalty, problem.fit_intercept
    beta = np.array(beta, dtype=float)
    converged = False
    n_iter = 0
    for t in range(max_iter):
        g0, g = problem.gradient(beta0, beta)
        # np.float64, not float: a diverging run must reach inf, not raise OverflowError.
        new_beta0 = np.float64(beta0 - learning_rate * g0 if icpt else 0.0)
        new_beta = pen.prox(beta - learning_rate * g, learning_rate)
        step = np.sqrt((new_beta0 - beta0) ** 2 + np.sum((new_beta - beta) ** 2))
        size = np.sqrt(new_beta0**2 + np.sum(new_beta**2))
        beta0, beta = new_beta0, new_beta
        n_iter = t + 1
        if not np.all(np.isfinite(beta)) or not np.isfinite(beta0):
            break
        if t >= 2 and step < tol * size:
            converged = True
            break
    kkt_end = problem.kkt(beta0, beta)
    return SolverResult(beta0, beta, n_iter, converged, kkt_end)
