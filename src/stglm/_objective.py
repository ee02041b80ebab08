"""The penalised objective J and its gradient, for dense or sparse X.

    J(β0, β) = −(1/n)·Σ ℓ(y_i, μ(z_i)) + P(β),   z = β0 + Xβ

These are the quantities every solver minimises and every test checks.
"""

from __future__ import annotations

import numpy as np

from ._families import Family
from ._penalties import ElasticNet, kkt_residual

__all__ = ["linear_predictor", "objective", "gradient", "kkt"]


def linear_predictor(beta0: float, beta: np.ndarray, X, fit_intercept: bool = True) -> np.ndarray:
    """Z = β0 + Xβ (β0 ignored without intercept); X may be a scipy sparse matrix."""
    z = np.asarray(X @ beta, dtype=float).reshape(-1)
    return z + beta0 if fit_intercept else z


def objective(
    family: Family,
    penalty: ElasticNet,
    X,
    y: np.ndarray,
    beta0: float,
    beta: np.ndarray,
    fit_intercept: bool = True,
) -> float:
    """Value of J at (β0, β)."""
    z = linear_predictor(beta0, beta, X, fit_intercept)
    return float(-np.mean(family.loglik(y, family.mean(z))) + penalty.value(beta))


def gradient(
    family: Family,
    penalty: ElasticNet,
    X,
    y: np.ndarray,
    beta0: float,
    beta: np.ndarray,
    fit_intercept: bool = True,
) -> tuple[float, np.ndarray]:
    """Gradient of the smooth part of J: ((1/n)Σr, (1/n)Xᵀr + λ(1−α)ΓᵀΓβ).

    The first element is 0.0 without intercept.
    """
    z = linear_predictor(beta0, beta, X, fit_intercept)
    r = family.residual(y, z)
    n = r.shape[0]
    g = np.asarray(X.T @ r, dtype=float).reshape(-1) / n + penalty.ridge_grad(beta)
    g0 = float(r.sum() / n) if fit_intercept else 0.0
    return g0, g


def kkt(
    family: Family,
    penalty: ElasticNet,
    X,
    y: np.ndarray,
    beta0: float,
    beta: np.ndarray,
    fit_intercept: bool = True,
) -> float:
    """KKT residual of J at (β0, β); see :func:`stglm._penalties.kkt_residual`."""
    g0, g = gradient(family, penalty, X, y, beta0, beta, fit_intercept)
    return kkt_residual(g, beta, penalty.l1, g0 if fit_intercept else None)
