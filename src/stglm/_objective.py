"""The penalised objective J and its gradient, for dense or sparse X.

    J(β0, β) = −Σ m_i·ℓ(y_i, μ(z_i)) / Σ m_i + P(β),   z = β0 + offset + Xβ

with sample weights m (1 when not given: the mean over samples). These are the quantities
every solver minimises and every test checks.
"""

from __future__ import annotations

import numpy as np

from ._families import Family
from ._penalties import ElasticNet, kkt_residual

__all__ = ["linear_predictor", "objective", "gradient", "kkt"]


def linear_predictor(
    beta0: float, beta: np.ndarray, X, fit_intercept: bool = True, offset=None
) -> np.ndarray:
    """Z = β0 + offset + Xβ (β0 ignored without intercept); X may be a scipy sparse matrix."""
    z = np.asarray(X @ beta, dtype=float).reshape(-1)
    if fit_intercept:
        z = z + beta0
    return z if offset is None else z + offset


def _weighted_mean(values: np.ndarray, sample_weight) -> float:
    if sample_weight is None:
        return float(np.mean(values))
    keep = sample_weight != 0  # a weight-0 sample is not in the sample, whatever its value
    return float(np.sum(sample_weight[keep] * values[keep]) / np.sum(sample_weight))


def objective(
    family: Family,
    penalty: ElasticNet,
    X,
    y: np.ndarray,
    beta0: float,
    beta: np.ndarray,
    fit_intercept: bool = True,
    *,
    sample_weight: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> float:
    """Value of J at (β0, β)."""
    z = linear_predictor(beta0, beta, X, fit_intercept, offset)
    nll = _weighted_mean(-family.loglik(y, family.mean(z)), sample_weight)
    return nll + penalty.value(beta)


def gradient(
    family: Family,
    penalty: ElasticNet,
    X,
    y: np.ndarray,
    beta0: float,
    beta: np.ndarray,
    fit_intercept: bool = True,
    *,
    sample_weight: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Gradient of the smooth part of J: (Σm·r/Σm, Xᵀ(m·r)/Σm + ridge gradient).

    The first element is 0.0 without intercept.
    """
    z = linear_predictor(beta0, beta, X, fit_intercept, offset)
    r = family.residual(y, z)
    if sample_weight is None:
        total = r.shape[0]
    else:
        r = np.where(sample_weight != 0, sample_weight * r, 0.0)
        total = float(np.sum(sample_weight))
    g = np.asarray(X.T @ r, dtype=float).reshape(-1) / total + penalty.ridge_grad(beta)
    g0 = float(r.sum() / total) if fit_intercept else 0.0
    return g0, g


def kkt(
    family: Family,
    penalty: ElasticNet,
    X,
    y: np.ndarray,
    beta0: float,
    beta: np.ndarray,
    fit_intercept: bool = True,
    *,
    sample_weight: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> float:
    """KKT residual of J at (β0, β); see :func:`stglm._penalties.kkt_residual`."""
    g0, g = gradient(
        family,
        penalty,
        X,
        y,
        beta0,
        beta,
        fit_intercept,
        sample_weight=sample_weight,
        offset=offset,
    )
    return kkt_residual(g, beta, penalty.l1_weights, g0 if fit_intercept else None)
