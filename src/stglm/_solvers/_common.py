"""What every solver receives and returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._objective import Problem

__all__ = ["Problem", "SolverResult"]


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
