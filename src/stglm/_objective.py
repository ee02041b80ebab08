"""The penalised objective J of one data set, its gradient and KKT residual, for dense or sparse X.

    J(β0, β) = −Σ m_i·ℓ(y_i, μ(z_i)) / Σ m_i + P(β),   z = β0 + offset + Xβ

with sample weights m (1 when not given: the mean over samples). :class:`Problem` holds
the data and evaluates these, the quantities every solver minimises and every test checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._families import Family
from ._penalties import ElasticNet, kkt_residual

__all__ = ["Problem", "linear_predictor"]


def linear_predictor(
    beta0: float, beta: np.ndarray, X, fit_intercept: bool = True, offset=None
) -> np.ndarray:
    """Z = β0 + offset + Xβ (β0 ignored without intercept); X may be a scipy sparse matrix."""
    z = np.asarray(X @ beta, dtype=float).reshape(-1)
    if fit_intercept:
        z = z + beta0
    return z if offset is None else z + offset


@dataclass
class Problem:
    """A penalised GLM fitting problem: minimise J(β0, β) over (β0, β).

    ``X`` is a float64 dense array or a CSR/CSC matrix; ``y`` a float64 vector.
    ``sample_weight`` (n,) non-negative weights m_i (None: all 1), ``offset`` (n,) a known
    term of the linear predictor z = β0 + offset + Xβ (None: 0).
    ``cache`` holds work derived from X alone (e.g. its scaled copy); problems that differ
    only in the penalty share it (``dataclasses.replace`` keeps the same dict).
    """

    family: Family
    penalty: ElasticNet
    X: object
    y: np.ndarray
    fit_intercept: bool = True
    sample_weight: np.ndarray | None = None
    offset: np.ndarray | None = None
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def weight_total(self) -> float:
        """Σ m_i, the objective's normaliser (n without sample weights)."""
        if self.sample_weight is None:
            return float(self.n_samples)
        return float(self.sample_weight.sum())

    def linear_predictor(self, beta0: float, beta: np.ndarray) -> np.ndarray:
        """Z = β0 + offset + Xβ (β0 ignored without intercept), the only place it is formed."""
        return linear_predictor(beta0, beta, self.X, self.fit_intercept, self.offset)

    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    def objective(self, beta0: float, beta: np.ndarray) -> float:
        """Value of J at (β0, β)."""
        fam, w = self.family, self.sample_weight
        values = -fam.loglik(self.y, fam.mean(self.linear_predictor(beta0, beta)))
        if w is None:
            nll = float(np.mean(values))
        else:
            keep = w != 0  # a weight-0 sample is not in the sample, whatever its value
            nll = float(np.sum(w[keep] * values[keep]) / np.sum(w))
        return nll + self.penalty.value(beta)

    def gradient(self, beta0: float, beta: np.ndarray) -> tuple[float, np.ndarray]:
        """Gradient of the smooth part of J: (Σm·r/Σm, Xᵀ(m·r)/Σm + ridge gradient).

        The first element is 0.0 without intercept.
        """
        r = self.family.residual(self.y, self.linear_predictor(beta0, beta))
        if self.sample_weight is not None:
            r = np.where(self.sample_weight != 0, self.sample_weight * r, 0.0)
        total = self.weight_total
        g = np.asarray(self.X.T @ r, dtype=float).reshape(-1) / total
        g += self.penalty.ridge_grad(beta)
        g0 = float(r.sum() / total) if self.fit_intercept else 0.0
        return g0, g

    def kkt(self, beta0: float, beta: np.ndarray) -> float:
        """KKT residual of J at (β0, β); see :func:`stglm._penalties.kkt_residual`."""
        g0, g = self.gradient(beta0, beta)
        return kkt_residual(g, beta, self.penalty.l1_weights, g0 if self.fit_intercept else None)
