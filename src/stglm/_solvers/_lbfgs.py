"""The L-BFGS start of smooth single problems (λα = 0: ridge, or no penalty), before Newton.

On a well-conditioned design L-BFGS meets the same KKT rule (to a tenth of the tolerance)
in about twice as many iterations as Newton, each costing two passes over X instead of a
Gram product. When its convergence is too slow to pay (ill-conditioned designs) Newton
takes over from the point it reached; ``n_iter`` counts the iterations of both phases.
Every step passes Newton's Armijo line search (:meth:`ProximalNewton.line_search`).
"""

from __future__ import annotations

import numpy as np

from ._active_set import ActiveSet
from ._inner import GramCD
from ._newton import ProximalNewton

__all__ = ["LBFGSStart", "lbfgs_budget"]

#: Curvature pairs kept; every LBFGS_PATIENCE iterations the KKT residual must have fallen
#: LBFGS_MIN_DROP-fold. It aims at LBFGS_TOL_SHARE of the KKT tolerance: Newton's last step
#: usually lands far below the tolerance, and L-BFGS stopping just under it would leave fits
#: visibly less accurate (coefficients 1e-6 off where Newton's are 1e-9 off, at the default
#: tol).
LBFGS_MEMORY = 10
LBFGS_PATIENCE = 3
LBFGS_MIN_DROP = 5.0
LBFGS_TOL_SHARE = 0.1


def lbfgs_budget(p: int) -> int:
    """Most L-BFGS iterations worth running before Newton takes over, for p features.

    About the cost of a typical Newton solve (≈ 5 iterations, each a Gram product of
    ≈ p/8 passes over X plus ≈ 4 passes) in L-BFGS iterations (≈ 2.2 passes each).
    """
    return int(5 * (4 + p / 8) / 2.2)


def _two_loop(
    q: np.ndarray, S: np.ndarray, Y: np.ndarray, rho: np.ndarray, stored: int, newest: int
) -> np.ndarray:
    """L-BFGS two-loop recursion: H·q for the inverse-Hessian estimate of the stored pairs.

    Pairs (S[j], Y[j]) sit in a ring buffer, the newest at index ``newest``; the initial
    matrix is γI with Nocedal and Wright's γ = sᵀy / yᵀy of the newest pair.
    """
    mem = S.shape[0]
    order = [(newest - k) % mem for k in range(stored)]  # newest first
    a = np.empty(stored)
    for k, j in enumerate(order):
        a[k] = rho[j] * (S[j] @ q)
        q = q - a[k] * Y[j]
    q = q / (rho[newest] * (Y[newest] @ Y[newest]))
    for k in range(stored - 1, -1, -1):
        j = order[k]
        q = q + (a[k] - rho[j] * (Y[j] @ q)) * S[j]
    return q


class _Pairs:
    """The ring buffer of curvature pairs (s, y) and their ρ = 1/sᵀy."""

    def __init__(self, m: int):
        self.S, self.Y = np.zeros((LBFGS_MEMORY, m)), np.zeros((LBFGS_MEMORY, m))
        self.rho = np.zeros(LBFGS_MEMORY)
        self.stored = self.newest = 0

    def direction(self, gs: np.ndarray, diag: np.ndarray) -> np.ndarray:
        """−H·g: the two-loop recursion, or the inverse diagonal before any pair."""
        if self.stored:
            return _two_loop(-gs, self.S, self.Y, self.rho, self.stored, self.newest)
        return -gs / diag

    def add(self, s_k: np.ndarray, y_k: np.ndarray) -> None:
        """Keep the pair if its curvature is positive (J need not be convex for gamma/NB)."""
        sy = float(s_k @ y_k)
        if sy > 1e-10 * np.sqrt(float(s_k @ s_k) * float(y_k @ y_k)):
            self.newest = (self.newest + 1) % LBFGS_MEMORY if self.stored else 0
            self.S[self.newest], self.Y[self.newest] = s_k, y_k
            self.rho[self.newest] = 1.0 / sy
            self.stored = min(self.stored + 1, LBFGS_MEMORY)


class LBFGSStart:
    """L-BFGS on J for centred, unit-spread columns (:mod:`._scaling`), from the start point.

    Stops when the KKT residual is at most ``LBFGS_TOL_SHARE`` of the tolerance, after
    :func:`lbfgs_budget` iterations, or as soon as it stops paying: no descent step found,
    or the KKT residual not down ``LBFGS_MIN_DROP``-fold over the last ``LBFGS_PATIENCE``
    iterations (an ill-conditioned design, which Newton then finishes).

    Parameters
    ----------
    model : NewtonCD
        The single problem's design backend (Gram route: its scaling is used).
    """

    def __init__(self, model):
        self.model = model

    @staticmethod
    def applies(model, max_iter: int) -> bool:
        """Whether a fit starts with L-BFGS: J smooth and X large enough.

        A ridge problem (λα = 0) needs no coordinate descent, and an L-BFGS iteration costs
        two passes over X against a Newton iteration's Gram product and four passes. On a
        small X both are dominated by fixed per-iteration costs, where Newton's fewer
        iterations win; a gaussian J is quadratic (one Newton step solves it). A
        ``max_iter`` below twice the phase's budget leaves it out too: a caller counting
        on a few Newton iterations gets them.
        """
        prob = model.problem
        return (
            isinstance(model.inner, GramCD)
            and not prob.penalty.has_l1
            and not prob.family.is_quadratic
            and prob.n_samples * prob.n_features >= model.options.lbfgs_min_size
            and max_iter >= 2 * lbfgs_budget(prob.n_features)
        )

    def _first_diagonal(self, active: ActiveSet, sc) -> np.ndarray:
        """The Hessian's diagonal in these coordinates, for the first step.

        Columns of unit mean square: its data part is about mean(w) on every coordinate.
        """
        model = self.model
        prob = model.problem
        w = active.Wc[0]
        m = prob.n_features + int(prob.fit_intercept)
        diag = np.full(m, float(w.mean() if model.m_row is None else w.sum() / model.total))
        gram = prob.penalty.gram
        tikhonov = 1.0 if gram is None else np.diagonal(gram)
        diag[int(prob.fit_intercept) :] += prob.penalty.l2 * tikhonov / sc.scale**2
        return diag

    def run(self, newton: ProximalNewton, active: ActiveSet) -> np.ndarray:
        """Advance the point of ``active`` (one row); whether the KKT rule was met."""
        model = self.model
        prob = model.problem
        sc = model.inner.scaling.standardising()
        tol_abs = float(active.tol[0])
        gs, kkt = model.scaled_gradient(active, sc)
        n_iter = 0
        if kkt > tol_abs:  # else optimal already (a warm start on a path): nothing to refine
            kkt_checked = kkt
            diag = self._first_diagonal(active, sc)
            pairs = _Pairs(diag.size)
            # No curvature to start from (e.g. every w is 0): leave it all to Newton.
            budget = lbfgs_budget(prob.n_features) if diag.min() > 0.0 else 0
            target = LBFGS_TOL_SHARE * tol_abs
            while kkt > target and n_iter < budget:
                if n_iter and n_iter % LBFGS_PATIENCE == 0:
                    if not kkt * LBFGS_MIN_DROP <= kkt_checked:
                        break  # ill-conditioned: L-BFGS crawls where Newton converges
                    kkt_checked = kkt
                q = pairs.direction(gs, diag)
                delta = float(gs @ q)  # directional derivative of J along the step
                if not delta < 0.0:
                    break
                d = sc.from_scaled(q[None])[0]
                model.set_direction(*((d[0], d[1:]) if prob.fit_intercept else (0.0, d)))
                step, F_new = newton.line_search(active, np.array([delta]))
                if step[0] == 0.0:
                    break
                n_iter += 1
                newton.take(active, step, F_new)
                gs_new, kkt = model.scaled_gradient(active, sc)
                pairs.add(step[0] * q, gs_new - gs)
                gs = gs_new
        active.n_iter[0] = n_iter
        active.kkt[0] = kkt
        return np.array([kkt <= tol_abs])
