"""What every solver receives and returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._families import Family
from .._objective import linear_predictor
from .._penalties import ElasticNet


@dataclass
class Problem:
    """A penalised GLM fitting problem: minimise J(β0, β) over (β0, β).

    ``X`` is a float64 dense array or a CSR/CSC matrix; ``y`` a float64 vector.
    ``sample_weight`` (n,) non-negative weights m_i (None: all 1), ``offset`` (n,) a known
    term of the linear predictor z = β0 + offset + Xβ (None: 0). The objective is
    J = −Σ m_i ℓ_i / Σ m_i + P(β).
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

    @property
    def data_kwargs(self) -> dict:
        """``sample_weight`` and ``offset``, as the functions of ``_objective`` take them."""
        return {"sample_weight": self.sample_weight, "offset": self.offset}

    def linear_predictor(self, beta0: float, beta: np.ndarray) -> np.ndarray:
        """Z = β0 + offset + Xβ (β0 ignored without intercept), the only place it is formed."""
        return linear_predictor(beta0, beta, self.X, self.fit_intercept, self.offset)

    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]


@dataclass
class SolverResult:
    """Solution of a :class:`Problem` and how it was reached.

    ``kkt`` is the KKT residual at the returned point; ``converged`` says whether the
    solver's own stopping rule was met before ``max_iter``.
    """

    beta0: float
    beta: np.ndarray
    n_iter: int
    converged: bool
    kkt: float
