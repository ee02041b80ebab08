"""The elastic-net penalty with a Tikhonov matrix, its proximal operator and KKT residual.

    P(β) = λ · [ ½(1 − α)·‖Γβ‖² + α·‖β‖₁ ]

The intercept is never penalised.  :func:`kkt_residual` is the single definition of
optimality used by every solver and every test in stglm.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ElasticNet", "kkt_residual", "soft_threshold"]


def soft_threshold(x: np.ndarray, thresh: float | np.ndarray) -> np.ndarray:
    """Proximal operator of ``thresh·‖·‖₁``: sign(x)·max(|x| − thresh, 0)."""
    return np.sign(x) * np.maximum(np.abs(x) - thresh, 0.0)


class ElasticNet:
    """Elastic-net penalty λ[½(1−α)‖Γβ‖² + α‖β‖₁].

    Parameters
    ----------
    reg_lambda : float
        Overall strength λ ≥ 0.
    alpha : float
        L1 share α in [0, 1] (1: lasso, 0: ridge).
    Tau : ndarray of shape (p, p) or None
        Tikhonov matrix Γ; ``None`` means the identity.
    """

    def __init__(self, reg_lambda: float, alpha: float, Tau: np.ndarray | None = None):
        self.reg_lambda = float(reg_lambda)
        self.alpha = float(alpha)
        self.Tau = None if Tau is None else np.asarray(Tau, dtype=float)
        # ΓᵀΓ is all the smooth part ever needs; None keeps the identity implicit.
        self.gram = None if self.Tau is None else self.Tau.T @ self.Tau

    @property
    def l1(self) -> float:
        """Weight of ‖β‖₁ in the objective, λα."""
        return self.reg_lambda * self.alpha

    @property
    def l2(self) -> float:
        """Weight of ½‖Γβ‖² in the objective, λ(1 − α)."""
        return self.reg_lambda * (1.0 - self.alpha)

    def tikhonov_gram(self, p: int) -> np.ndarray:
        """ΓᵀΓ as a dense (p, p) array."""
        return np.eye(p) if self.gram is None else self.gram

    def ridge_grad(self, beta: np.ndarray) -> np.ndarray:
        """Gradient of the smooth part, λ(1−α)·ΓᵀΓβ."""
        return self.l2 * (beta if self.gram is None else self.gram @ beta)

    def value(self, beta: np.ndarray) -> float:
        """P(β)."""
        tb = beta if self.Tau is None else self.Tau @ beta
        return float(0.5 * self.l2 * (tb @ tb) + self.l1 * np.abs(beta).sum())

    def prox(self, beta: np.ndarray, step: float) -> np.ndarray:
        """Proximal step of the L1 part with step size ``step``."""
        return soft_threshold(beta, step * self.l1)


def kkt_residual(
    grad_beta: np.ndarray,
    beta: np.ndarray,
    l1: float,
    grad_intercept: float | None = None,
) -> float:
    """Largest coordinate of the minimum-norm subgradient of the full objective.

    Parameters
    ----------
    grad_beta : ndarray of shape (p,)
        Gradient of the smooth part of J (loss + ridge) with respect to β.
    beta : ndarray of shape (p,)
        Current coefficients.
    l1 : float
        Weight of ‖β‖₁, λα.
    grad_intercept : float or None
        Gradient of J with respect to the intercept, if there is one.

    Returns
    -------
    float
        max over coordinates of |g_j + λα·sign(β_j)| for β_j ≠ 0,
        max(|g_j| − λα, 0) for β_j = 0, and |g_0| for the intercept. It is zero
        exactly at the stationary points of J, which are its minimisers wherever J is
        convex (always for gaussian, poisson and softplus).
    """
    grad_beta = np.asarray(grad_beta, dtype=float)
    beta = np.asarray(beta, dtype=float)
    nonzero = beta != 0
    sub = np.where(
        nonzero,
        np.abs(grad_beta + l1 * np.sign(beta)),
        np.maximum(np.abs(grad_beta) - l1, 0.0),
    )
    res = float(sub.max()) if sub.size else 0.0
    if grad_intercept is not None:
        res = max(res, abs(float(grad_intercept)))
    return res
