"""Proximal Newton (IRLS) with coordinate descent on one problem: the default solver ("irls-cd").

:class:`NewtonCD` is the design backend of a single problem for the Newton iteration of
:mod:`stglm._solvers._newton` (a batch of one row): each outer iteration

1. builds a quadratic model of the smooth part of J at the current point, with the
   true Hessian of −ℓ in z where it is positive and Fisher weights where it is not
   (:meth:`stglm._families.Family.hessian_weights`);
2. minimises model + λα‖β‖₁ by the inner solver for this design
   (:func:`stglm._solvers._inner.for_problem`): coordinate descent on the (p+1)×(p+1) Gram
   matrix when p is small, through working residuals when p is large (conjugate gradients
   for a ridge model);
3. backtracks along the step until J decreases (Armijo), so no step increases J.

It stops when the KKT residual of J (:func:`stglm._penalties.kkt_residual`) falls
below ``tol`` times a scale that makes ``tol`` independent of how X and y are
measured: the size of the gradient's terms at the null model,
max_j (1/n)·Σ_i |x̃_ij|·|r_i| (:func:`stglm._solvers._null_model.tolerance_scales`), or
when the Newton step is exactly zero (nothing left to gain in floating point).

Smooth problems (λα = 0: ridge, or no penalty) on a large enough X first run L-BFGS
(:class:`stglm._solvers._lbfgs.LBFGSStart`); ``n_iter`` counts the iterations of both phases.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .._penalties import ElasticNet, kkt_residual
from ._active_set import ActiveSet
from ._batched_kernels import kkt_max
from ._common import Problem, SolverResult
from ._family_kernels import nll_and_terms
from ._inner import for_problem
from ._lbfgs import LBFGSStart
from ._newton import ProximalNewton
from ._null_model import intercept_is_exact, null_gradients, null_intercepts, tolerance_scales
from ._options import DEFAULT_OPTIONS, NewtonOptions
from ._scaling import DesignScaling

#: The null model's own fit (offsets, unpenalised predictors): its tolerance and iterations.
NULL_TOL = 1e-10
NULL_MAX_ITER = 100


def _columns(problem: Problem) -> tuple:
    """(Y, M, O) of a single problem as the null-model functions take them: columns."""
    y = np.asarray(problem.y, dtype=float).reshape(-1, 1)
    m = problem.sample_weight
    return y, (None if m is None else m.reshape(-1, 1)), problem.offset


def null_intercept(problem: Problem) -> float:
    """Intercept of the null model at β = 0 (0 without intercept; a start where not exact)."""
    y, m, o = _columns(problem)
    return float(null_intercepts(problem.family, y, problem.fit_intercept, m, o)[0])


def null_gradient(problem: Problem, beta0: float | None = None) -> np.ndarray:
    """∇_β of the mean negative log-likelihood at the null model (β = 0, intercept β0)."""
    y, m, o = _columns(problem)
    z0 = None
    if beta0 is not None:
        z0 = problem.linear_predictor(beta0, np.zeros(problem.n_features)).reshape(-1, 1)
    return null_gradients(problem.family, problem.X, y, problem.fit_intercept, m, o, z0)[0]


def null_fit(problem: Problem) -> tuple[float, np.ndarray]:
    """The solution at λ = ∞: penalised β_j = 0; the intercept and unpenalised β_j fitted.

    Without offset or unpenalised predictors it is the closed-form null model; otherwise the
    unpenalised sub-problem is solved by the same Newton iteration (no other loop).
    """
    beta0, beta = null_intercept(problem), np.zeros(problem.n_features)
    free = problem.penalty.unpenalised
    if free is None and (
        not problem.fit_intercept or intercept_is_exact(problem.family, problem.offset)
    ):
        return beta0, beta
    free = np.array([], dtype=int) if free is None else free
    sub = replace(
        problem,
        penalty=ElasticNet(0.0, problem.penalty.alpha),
        X=problem.X[:, free],
        cache={},
    )
    res = newton_cd(sub, beta0, np.zeros(free.size), max_iter=NULL_MAX_ITER, tol=NULL_TOL)
    beta[free] = res.beta
    return float(res.beta0), beta


def tolerance_scale(problem: Problem) -> float:
    """Scale of the KKT stopping rule; see :func:`stglm._solvers._null_model.tolerance_scales`."""
    y, m, o = _columns(problem)
    return float(
        tolerance_scales(problem.family, problem.X, y, problem.fit_intercept, None, m, o)[0]
    )


class NewtonCD:
    """One problem's design backend of :class:`ProximalNewton`; reusable from any start.

    The batch has one row: the point (β0, β) and its linear predictor z, with J and the
    Newton terms r, w there, live in an :class:`ActiveSet` of one row, as do the trial
    point's terms (double-buffered).

    Parameters
    ----------
    problem : Problem
    max_iter : int
        Maximum number of outer iterations: Newton's, plus the L-BFGS start's where it
        runs (see :meth:`LBFGSStart.applies`).
    tol : float
        KKT tolerance, relative to :func:`tolerance_scale` (or to ``scale`` if given).
    scale : float, optional
        Precomputed tolerance scale (a regularisation path shares one).
    options : NewtonOptions, optional
        Routes (inner solver, L-BFGS start); the defaults when None.
    """

    def __init__(
        self,
        problem: Problem,
        *,
        max_iter: int,
        tol: float,
        scale: float | None = None,
        options: NewtonOptions | None = None,
    ):
        self.problem = problem
        self.max_iter = max_iter
        self.options = DEFAULT_OPTIONS if options is None else options
        self.tol_abs = tol * (tolerance_scale(problem) if scale is None else scale)
        p = problem.n_features
        # λα per coordinate (penalty factors included).
        self.l1w = np.broadcast_to(problem.penalty.l1_weights, (p,)).astype(float)
        self.inner = for_problem(problem, self.l1w, self.options)
        self.start = LBFGSStart(self) if LBFGSStart.applies(self, max_iter) else None
        self.y_row = np.ascontiguousarray(problem.y, dtype=float).reshape(1, -1)
        m = problem.sample_weight
        self.m_row = None if m is None else np.ascontiguousarray(m, dtype=float).reshape(1, -1)
        # Σ m_i: the objective's normaliser (n without weights, exactly as before).
        self.total = problem.weight_total
        self.total_row = np.array([self.total])

    # -- J, gradient ---------------------------------------------------------------------------
    def _evaluate(self, Z: np.ndarray, beta: np.ndarray, R: np.ndarray, W: np.ndarray) -> float:
        """J at the linear predictor Z (1, n) and β, in one pass; R and W get r and w there.

        J is up to terms in y alone (they cancel in every comparison the solver makes).
        """
        total = None if self.m_row is None else self.total_row
        fam = self.problem.family
        nll = nll_and_terms(fam, self.y_row, Z, R, W, self.m_row, total)[0]
        return float(nll + self.problem.penalty.value(beta))

    def _gradient(self, r: np.ndarray, beta: np.ndarray) -> tuple[float, np.ndarray]:
        n = self.total  # r already carries the sample weights
        g = np.asarray(self.problem.X.T @ r, dtype=float).reshape(-1) / n
        g += self.problem.penalty.ridge_grad(beta)
        return float(r.sum() / n), g

    def scaled_gradient(self, active: ActiveSet, sc: DesignScaling) -> tuple[np.ndarray, float]:
        """∇J in the coordinates of ``sc`` (intercept first) and the KKT residual (λα = 0)."""
        beta = active.beta[0]
        g0, g = self._gradient(active.Rc[0], beta)
        if self.problem.fit_intercept:
            return sc.gradient_to_scaled(np.r_[g0, g][None])[0], kkt_residual(g, beta, 0.0, g0)
        return sc.gradient_to_scaled(g[None])[0], kkt_residual(g, beta, 0.0)

    # -- the design backend of ProximalNewton -------------------------------------------------
    def gradient(self, active: ActiveSet) -> np.ndarray:
        """The KKT residual at the point, shape (1,); the gradient is kept for the direction.

        (:func:`stglm._penalties.kkt_residual` compiled: NaN, never converged, once any
        term of the gradient is.)
        """
        beta = active.beta[0]
        self.g0, self.g = self._gradient(active.Rc[0], beta)
        icpt = self.problem.fit_intercept
        return np.array([kkt_max(self.g, beta, self.l1w, self.g0, icpt)])

    def set_direction(self, d0: float, d: np.ndarray) -> None:
        """The step (d0, d) of the trial points, and its change of the linear predictor."""
        self.d0, self.d = d0, d
        self.dz = np.asarray(self.problem.X @ d, dtype=float).reshape(-1) + d0

    def direction(self, active: ActiveSet, inner_tol: np.ndarray):
        """The Newton step by the inner solver; (predicted decrease, step is zero), each (1,)."""
        beta0, beta = active.b0[0], active.beta[0]
        x0, x = self.inner.minimise(
            active.Rc[0], active.Wc[0], self.g0, self.g, beta0, beta, float(inner_tol[0])
        )
        d0, d = x0 - beta0, x - beta
        self.set_direction(d0, d)
        pen = self.problem.penalty
        # Predicted decrease of the model's linear part (≤ 0 for a descent step).
        if pen.penalty_factor is None:  # the unweighted sum, bit for bit
            l1_change = pen.l1 * (np.abs(x).sum() - np.abs(beta).sum())
        else:
            l1_change = self.l1w @ (np.abs(x) - np.abs(beta))
        delta = self.g0 * d0 + self.g @ d + l1_change
        return np.array([delta]), np.array([d0 == 0.0 and not d.any()])

    def trial(self, active: ActiveSet, rows=None, step=None) -> np.ndarray:
        """J at (β0, β, z) + t·(d0, d, dz): t = 1 (rows None) or ``step``; r, w kept there."""
        t = 1.0 if step is None else step[0]
        np.add(active.Zc[0], t * self.dz, out=active.Zt[0])
        beta = active.beta[0] + t * self.d
        return np.array([self._evaluate(active.Zt, beta, active.Rt, active.Wt)])

    def move(self, active: ActiveSet, step: np.ndarray) -> None:
        """Take the step t > 0 (the trial point's terms become the current ones)."""
        t = step[0]
        if t > 0.0:
            active.b0[0] = active.b0[0] + t * self.d0
            active.beta[0] = active.beta[0] + t * self.d
            active.Zc, active.Zt = active.Zt, active.Zc
            active.Rc, active.Rt = active.Rt, active.Rc
            active.Wc, active.Wt = active.Wt, active.Wc

    # -- the solve -------------------------------------------------------------------------------
    def solve(self, beta0: float, beta: np.ndarray) -> SolverResult:
        """Minimise J from (β0, β); returns the solution and its KKT residual."""
        prob = self.problem
        beta = np.array(beta, dtype=float)
        beta0 = float(beta0) if prob.fit_intercept else 0.0
        n = prob.n_samples
        active = ActiveSet(1)
        active.add(b0=np.array([beta0]), beta=beta.reshape(1, -1))
        buffers = np.empty((6, 1, n))  # z, r, w at the point and at the trial point
        active.add_buffers(Zc=buffers[0], Rc=buffers[1], Wc=buffers[2])
        active.add_scratch(Zt=buffers[3], Rt=buffers[4], Wt=buffers[5])
        active.Zc[0] = prob.linear_predictor(beta0, beta)
        F = self._evaluate(active.Zc, beta, active.Rc, active.Wc)
        b0_out, beta_out = np.zeros(1), np.zeros((1, prob.n_features))
        active.output("b0", b0_out)
        active.output("beta", beta_out)
        newton = ProximalNewton(self, max_iter=self.max_iter)
        status = newton.setup(active, [F], [self.tol_abs])
        newton.solve(active, self.start)
        self.g = self.d = self.dz = None  # the last step's work, not kept past the solve
        return SolverResult(
            float(b0_out[0]),
            beta_out[0],
            int(status.n_iter[0]),
            bool(status.converged[0]),
            float(status.kkt[0]),
        )


def newton_cd(
    problem: Problem,
    beta0: float,
    beta: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    scale: float | None = None,
    options: NewtonOptions | None = None,
) -> SolverResult:
    """Minimise J for ``problem`` from (β0, β) with :class:`NewtonCD`."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        solver = NewtonCD(problem, max_iter=max_iter, tol=tol, scale=scale, options=options)
        return solver.solve(beta0, beta)
