"""One proximal Newton iteration with a batch axis: the loop, the line search, the stop rule.

Every Newton fit of stglm — one problem (:class:`stglm._solvers.newton_cd.NewtonCD`) or
many genes sharing a design (:class:`stglm._solvers.batched.BatchedNewtonCD`, where a
single problem would be a batch of one) — runs :class:`ProximalNewton`. Each outer
iteration, for every row (response) still active:

1. **gradient and convergence** — the KKT residual of J at the point
   (:func:`stglm._penalties.kkt_residual`); rows leave when it is at most their tolerance,
   when the model's minimiser is the point itself, when no step decreased J, when a step
   that J cannot resolve did not lower the KKT residual (stagnation), or when
   ``max_iter`` is reached (:meth:`ProximalNewton.check_convergence`); a row that stops
   at its model's minimum has converged only if its KKT residual is within
   ``ZERO_STEP_SLACK`` of its tolerance;
2. **inner solve** — the minimiser of the penalised quadratic model at the point, to an
   inner tolerance that tightens with the KKT residual (:func:`inner_tolerance`), by the
   model's inner solver (:mod:`stglm._solvers._inner`);
3. **line search** — the largest step 2^-k with Armijo's sufficient decrease of J
   (:meth:`ProximalNewton.line_search`), so no step increases J; a full step that leaves J
   unchanged to rounding passes too;
4. **acceptance** — rows move to their step; a row without one is stuck: it stops there,
   converged when the model predicted less decrease than J can resolve
   (:meth:`ProximalNewton.accept`).

The model — the *design backend* — owns the arithmetic on its data: J and its Newton
terms (r, w) at a point, the gradient, the direction and the trial points. It provides

- ``gradient(active) -> kkt`` (k,): the KKT residuals, the gradients kept for the direction;
- ``direction(active, inner_tol) -> (delta, at_minimum)``: the Newton step (kept by the
  model), the model's predicted decrease gᵀd + λα(‖β + d‖₁ − ‖β‖₁) (the Armijo term) and
  whether the step is exactly zero;
- ``trial(active, rows=None, step=None) -> J`` at the trial points: every row's full step
  (rows None), or the given rows at the given steps; the trial's Newton terms kept;
- ``move(active, step)``: rows with a step take their trial point and its terms.

The rows' bookkeeping lives in an :class:`stglm._solvers._active_set.ActiveSet`; the
iteration keeps ``F`` (J), ``tol``, ``kkt``, ``best_kkt``, ``n_iter``, ``stuck``, ``flat`` and
``at_minimum`` there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ._active_set import ActiveSet
from ._batched_kernels import all_ok, check_rows, settle_steps, sufficient_decrease

__all__ = [
    "ARMIJO",
    "MAX_HALVINGS",
    "MAX_SWEEPS",
    "ROUNDING",
    "ROUNDING_ULPS",
    "ZERO_STEP_SLACK",
    "NewtonStatus",
    "ProximalNewton",
    "inner_tolerance",
]

#: Armijo's sufficient-decrease constant and the largest number of step halvings.
ARMIJO = 1e-4
MAX_HALVINGS = 50
#: Changes of J below this many ulps of J are rounding (the full-step and stuck tests):
#: below ROUNDING·|J|.
ROUNDING_ULPS = 16
EPS = np.finfo(float).eps
ROUNDING = ROUNDING_ULPS * EPS
#: Coordinate sweeps allowed for one quadratic model.
MAX_SWEEPS = 100_000
#: A row whose Newton step is zero (no representable step improves its model) has converged
#: if its KKT residual is within this factor of its tolerance: a tolerance set just below
#: what rounding resolves is no failure; a model that cannot move at all (KKT residual of
#: the order of the gradient itself) is.
ZERO_STEP_SLACK = 100.0


def inner_tolerance(kkt: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """How well each row's Newton model is solved: 5 % of its KKT residual, ≥ tol/10.

    (:func:`stglm._solvers._batched_kernels.check_rows` computes the same in its pass.)
    """
    return np.maximum(0.05 * kkt, 0.1 * tol)


class NewtonModel(Protocol):
    """What :class:`ProximalNewton` needs of a design backend (see the module's doc)."""

    def gradient(self, active: ActiveSet) -> np.ndarray: ...

    def direction(
        self, active: ActiveSet, inner_tol: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def trial(self, active: ActiveSet, rows=None, step=None) -> np.ndarray: ...

    def move(self, active: ActiveSet, step: np.ndarray) -> None: ...


class StartPhase(Protocol):
    """A first phase run before Newton from the same point (the L-BFGS start).

    ``run(newton, active)`` advances the rows (their ``n_iter`` too) and returns which
    met the KKT rule (their ``kkt`` set); Newton finishes the others.
    """

    def run(self, newton: ProximalNewton, active: ActiveSet) -> np.ndarray: ...


@dataclass
class NewtonStatus:
    """How each row of a batch ended: KKT residual, iterations and convergence, shape (G,)."""

    kkt: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray


class ProximalNewton:
    """The Newton iteration of every stglm fit, on a batch of rows.

    Parameters
    ----------
    model : NewtonModel
        The design backend (see the module's doc).
    max_iter : int
        Most outer iterations per row (those of a start phase included).
    """

    def __init__(self, model: NewtonModel, *, max_iter: int):
        self.model = model
        self.max_iter = max_iter

    def setup(self, active: ActiveSet, F: np.ndarray, tol: np.ndarray) -> NewtonStatus:
        """Register the iteration's per-row arrays in ``active``; the status filled as rows leave.

        ``F`` is J at the start, ``tol`` the absolute KKT tolerances, one per row.
        """
        k = active.k
        flags = np.zeros((3, k), dtype=bool)
        active.add(
            F=np.array(F, dtype=float),
            tol=np.array(tol, dtype=float),
            kkt=np.empty(k),  # set by the first check (or the start phase) before any use
            n_iter=np.zeros(k, dtype=int),
            stuck=flags[0],
            at_minimum=flags[1],
            flat=flags[2],
            best_kkt=np.full(k, np.inf),
        )
        # Every row leaves exactly once, writing its entries.
        status = NewtonStatus(np.empty(k), np.empty(k, dtype=int), np.empty(k, dtype=bool))
        active.output("kkt", status.kkt)
        active.output("n_iter", status.n_iter)
        active.output("converged", status.converged)
        return status

    def solve(self, active: ActiveSet, start: StartPhase | None = None) -> None:
        """Iterate until every row has left ``active`` (see :meth:`setup` first)."""
        if start is not None:
            converged = start.run(self, active)
            if converged.any() and not active.retire(converged, converged=converged):
                return
        while (inner_tol := self.check_convergence(active)) is not None:
            delta, active.at_minimum = self.model.direction(active, inner_tol)
            step, F_new = self.line_search(active, delta)
            self.accept(active, step, F_new, delta)

    def check_convergence(self, active: ActiveSet) -> np.ndarray | None:
        """KKT residuals at the current points; rows that are done leave.

        Returns the inner tolerances of the rows that stay (each has counted one more
        iteration), or None when none is left.
        """
        k = active.k
        active.kkt = self.model.gradient(active)
        # Stagnation: a step that J cannot resolve and that did not lower the KKT residual
        # below its best (an inner solver moving at rounding level) ends the row like a zero
        # step: converged only if it passes the KKT test below, else not (max_iter of such
        # steps would follow).
        active.at_minimum |= active.flat & ~(active.kkt < active.best_kkt)
        active.best_kkt = np.fmin(active.best_kkt, active.kkt)
        done, leave, inner_tol = np.empty(k, dtype=bool), np.empty(k, dtype=bool), np.empty(k)
        if check_rows(
            active.kkt, active.tol, active.at_minimum, active.stuck, active.n_iter,
            self.max_iter, done, leave, inner_tol,
        ):  # fmt: skip
            # A row at its model's minimum (a zero or unresolvable step) stops, but it has
            # converged only if it passes the KKT test too, within ZERO_STEP_SLACK (a zero
            # step from a model that cannot move is no optimum).
            converged = done & (active.kkt <= ZERO_STEP_SLACK * active.tol)
            converged &= active.at_minimum | (active.kkt <= active.tol)
            if not active.retire(leave, converged=converged):
                return None
            inner_tol = inner_tolerance(active.kkt, active.tol)
        return inner_tol

    def line_search(self, active: ActiveSet, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the largest step 2^-k with sufficient decrease of J (0 if none), and J there.

        ``delta`` is the model's predicted decrease (≤ 0 for a descent direction). Each
        halving evaluates only the rows still searching; the model keeps every row's
        terms at its last trial.
        """
        step = np.ones(active.k)
        F_new = self.model.trial(active)
        ok = np.empty(active.k, dtype=bool)
        if all_ok(F_new, active.F, delta, step, ARMIJO, ROUNDING, ok):  # every full step taken
            return step, F_new
        todo = np.flatnonzero(~ok)
        for _ in range(MAX_HALVINGS - 1):
            step[todo] *= 0.5
            F_new[todo] = self.model.trial(active, todo, step[todo])
            ok = sufficient_decrease(
                F_new[todo], active.F[todo], delta[todo], step[todo], ARMIJO, ROUNDING
            )
            todo = todo[~ok]
            if todo.size == 0:
                return step, F_new
        step[todo] = 0.0
        return step, F_new

    def accept(
        self, active: ActiveSet, step: np.ndarray, F_new: np.ndarray, delta: np.ndarray
    ) -> None:
        """Rows with a step move there with their J; a row without one is stuck.

        See :func:`stglm._solvers._batched_kernels.settle_steps`.
        """
        settle_steps(
            step, active.F, F_new, delta, active.stuck, active.at_minimum, active.flat, ROUNDING
        )
        self.model.move(active, step)

    def take(self, active: ActiveSet, step: np.ndarray, F_new: np.ndarray) -> None:
        """Move the rows with a step (> 0) there, without the stuck bookkeeping (a start phase)."""
        moved = step > 0.0
        active.F[moved] = F_new[moved]
        self.model.move(active, step)
