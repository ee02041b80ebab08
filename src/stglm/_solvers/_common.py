"""What every solver receives and returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._families import Family
from .._penalties import ElasticNet


@dataclass
class Problem:
    """A penalised GLM fitting problem: minimise J(β0, β) over (β0, β).

    ``X`` is a float64 dense array or a CSR/CSC matrix; ``y`` a float64 vector.
    ``cache`` holds work derived from X alone (e.g. its scaled copy); problems that differ
    only in the penalty share it (``dataclasses.replace`` keeps the same dict).
    """

    family: Family
    penalty: ElasticNet
    X: object
    y: np.ndarray
    fit_intercept: bool = True
    cache: dict = field(default_factory=dict, repr=False, compare=False)

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
