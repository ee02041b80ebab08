"""The elastic-net penalty with a Tikhonov matrix, its proximal operator and KKT residual.

    P(β) = λ · [ ½(1 − α)·‖Γβ‖² + α·‖β‖₁ ]

The intercept is never penalised.  :func:`kkt_residual` is the single definition of
optimality used by every solver and every test in stglm.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ElasticNet", "kkt_residual", "soft_threshold"]


def soft_threshold(x: np.ndarray, thresh: float | np.ndarray) -> np.ndarray:
    """Proximal operator of ``thresh·‖·‖₁``: sign(x)·max(abs(x) − thresh, 0)."""
    return np.sign(x) * np.maximum(np.abs(x) - thresh, 0.0)


class ElasticNet:
    """Elastic-net penalty λ·Σ_j f_j·[½(1−α)(Γβ)_j-terms + α·abs(β_j)] with factors f.

    Without factors, P(β) = λ[½(1−α)‖Γβ‖² + α‖β‖₁]. With ``penalty_factor`` f (glmnet's
    ``penalty.factor``, not rescaled), the L1 term is λα·Σ f_j·abs(β_j) and the ridge term
    ½λ(1−α)·‖ΓF^½β‖² (for Γ = I: ½λ(1−α)·Σ f_jβ_j²); f_j = 0 leaves β_j unpenalised.

    Parameters
    ----------
    reg_lambda : float
        Overall strength λ ≥ 0.
    alpha : float
        L1 share α in [0, 1] (1: lasso, 0: ridge).
    Tau : ndarray of shape (p, p) or None
        Tikhonov matrix Γ; ``None`` means the identity.
    penalty_factor : ndarray of shape (p,) or None
        Non-negative factors f; ``None`` means all 1.
    """

    def __init__(
        self,
        reg_lambda: float,
        alpha: float,
        Tau: np.ndarray | None = None,
        penalty_factor: np.ndarray | None = None,
    ):
        self.reg_lambda = float(reg_lambda)
        self.alpha = float(alpha)
        self.Tau = None if Tau is None else np.asarray(Tau, dtype=float)
        self.penalty_factor = (
            None if penalty_factor is None else np.asarray(penalty_factor, dtype=float)
        )
        # The ridge term's Hessian F^½ΓᵀΓF^½ is all the smooth part ever needs; None keeps
        # the identity implicit.
        gram = None if self.Tau is None else self.Tau.T @ self.Tau
        f = self.penalty_factor
        if f is not None:
            root = np.sqrt(f)
            gram = np.diag(f) if gram is None else root[:, None] * gram * root[None, :]
        self.gram = gram

    @property
    def l1(self) -> float:
        """Weight of ‖β‖₁ in the objective before penalty factors, λα."""
        return self.reg_lambda * self.alpha

    @property
    def l1_weights(self) -> float | np.ndarray:
        """Per-coordinate weights of abs(β_j), λα·f_j (the scalar λα without factors)."""
        return self.l1 if self.penalty_factor is None else self.l1 * self.penalty_factor

    @property
    def has_l1(self) -> bool:
        """Whether any coordinate has an L1 term (else J is smooth)."""
        return bool(np.any(np.asarray(self.l1_weights) != 0.0))

    @property
    def l2(self) -> float:
        """Weight of ½‖Γβ‖² in the objective, λ(1 − α)."""
        return self.reg_lambda * (1.0 - self.alpha)

    def tikhonov_gram(self, p: int) -> np.ndarray:
        """The ridge term's Hessian block before λ(1−α) (ΓᵀΓ with factors) as a (p, p) array."""
        return np.eye(p) if self.gram is None else self.gram

    def ridge_grad(self, beta: np.ndarray) -> np.ndarray:
        """Gradient of the smooth part, λ(1−α)·F^½ΓᵀΓF^½β."""
        return self.l2 * (beta if self.gram is None else self.gram @ beta)

    def value(self, beta: np.ndarray) -> float:
        """P(β)."""
        if self.penalty_factor is None:  # the seed's formula, bit for bit
            tb = beta if self.Tau is None else self.Tau @ beta
            return float(0.5 * self.l2 * (tb @ tb) + self.l1 * np.abs(beta).sum())
        quad = beta @ (self.gram @ beta)
        return float(0.5 * self.l2 * quad + np.sum(self.l1_weights * np.abs(beta)))

    def restrict(self, keep: np.ndarray) -> ElasticNet:
        """The penalty on the coordinates ``keep`` only (the others fixed at 0)."""
        tau = None if self.Tau is None else self.Tau[:, keep]
        f = None if self.penalty_factor is None else self.penalty_factor[keep]
        return ElasticNet(self.reg_lambda, self.alpha, tau, f)

    def with_lambda(self, reg_lambda: float) -> ElasticNet:
        """The same penalty at another λ."""
        return ElasticNet(reg_lambda, self.alpha, self.Tau, self.penalty_factor)

    @property
    def unpenalised(self) -> np.ndarray | None:
        """Indices of coordinates with factor 0 (None when there are none)."""
        if self.penalty_factor is None or not np.any(self.penalty_factor == 0.0):
            return None
        return np.flatnonzero(self.penalty_factor == 0.0)

    def prox(self, beta: np.ndarray, step: float) -> np.ndarray:
        """Proximal step of the L1 part with step size ``step``."""
        return soft_threshold(beta, step * self.l1_weights)


def kkt_residual(
    grad_beta: np.ndarray,
    beta: np.ndarray,
    l1: float | np.ndarray,
    grad_intercept: float | None = None,
) -> float:
    """Largest coordinate of the minimum-norm subgradient of the full objective.

    Parameters
    ----------
    grad_beta : ndarray of shape (p,)
        Gradient of the smooth part of J (loss + ridge) with respect to β.
    beta : ndarray of shape (p,)
        Current coefficients.
    l1 : float or ndarray of shape (p,)
        Weight of each abs(β_j), λα (times the penalty factors).
    grad_intercept : float or None
        Gradient of J with respect to the intercept, if there is one.

    Returns
    -------
    float
        max over coordinates of abs(g_j + λα·sign(β_j)) for β_j ≠ 0,
        max(abs(g_j) − λα, 0) for β_j = 0, and abs(g_0) for the intercept. It is zero
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
