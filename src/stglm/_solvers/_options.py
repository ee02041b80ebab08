"""The Newton solvers' routes and memory budgets: one frozen set of options, passed in.

Which inner solver minimises a Newton model, whether a smooth problem starts with L-BFGS,
how the batched path takes its first step and how much memory the pair products may use
change how fast a fit is reached, never which optimum (to the KKT tolerance). The defaults
are what was measured best on this project's benchmarks; a caller (a test that must take
a route, a benchmark) passes other values instead of changing module constants.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_OPTIONS", "NewtonOptions", "newton_options"]


@dataclass(frozen=True)
class NewtonOptions:
    """Routes and budgets of the Newton solvers (:mod:`stglm._solvers.newton_cd`, ``batched``).

    Attributes
    ----------
    gram_max_features : int, default=1000
        Above this many features a single problem's Hessian is never formed: its Newton model
        is minimised by residual-update coordinate descent, or by conjugate gradients for a
        ridge model (no L1 term).
    lbfgs_min_size : float, default=50_000
        Smallest design (n·p) on which a smooth problem (λα = 0, not gaussian) starts with
        L-BFGS: below it each iteration's fixed cost outweighs its passes over X, and
        Newton's fewer iterations win (measured, 1 BLAS thread). ``np.inf``: never; 0: always.
    stale_first : bool, default=True
        The batched path's first Newton step at each λ uses the previous λ's last Hessian:
        a product saved per λ (GLMCV 2,000 × 20: 19.0 → 16.3 ms; Visium fit_genes CV 7.3 →
        5.5 s) for a few more iterations (299 → 305). Any positive definite matrix gives a
        descent direction, and the stopping rule (KKT) does not depend on it.
    pair_bytes_budget : int, default=256 MiB
        Largest pair-product matrix of a shared design kept in memory (beyond it the
        products are built block by block); also the memory a batch of GLMCV's folds may
        take.
    batched_max_features : int, default=64
        Dense designs with at most this many predictors solve all of GLMCV's folds (and the
        refit) in one batch.
    """

    gram_max_features: int = 1000
    lbfgs_min_size: float = 50_000
    stale_first: bool = True
    pair_bytes_budget: int = 256 * 2**20
    batched_max_features: int = 64


#: The options every solver uses unless given others.
DEFAULT_OPTIONS = NewtonOptions()


def newton_options(options: dict | None) -> NewtonOptions:
    """The :class:`NewtonOptions` of a solver's options dict (key ``"newton"``), or the defaults."""
    found = None if options is None else options.get("newton")
    return DEFAULT_OPTIONS if found is None else found
