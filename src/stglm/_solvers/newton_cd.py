"""Proximal Newton (IRLS) with coordinate descent: stglm's exact default solver ("irls-cd").

Each outer iteration

1. builds a quadratic model of the smooth part of J at the current point, with the
   true Hessian of −ℓ in z where it is positive and Fisher weights where it is not
   (:meth:`stglm._families.Family.hessian_weights`);
2. minimises model + λα‖β‖₁ by coordinate descent with soft-thresholding — on the
   (p+1)×(p+1) Gram matrix when p is small, through working residuals when p is large;
3. backtracks along the step until J decreases (Armijo), so no step increases J.

It stops when the KKT residual of J (:func:`stglm._penalties.kkt_residual`) falls
below ``tol`` times a scale that makes ``tol`` independent of how X and y are
measured: the size of the gradient's terms at the null model,
max_j (1/n)·Σ_i |x̃_ij|·|r_i| (:func:`stglm._solvers._null_model.tolerance_scales`), or
when the Newton step is exactly zero (nothing left to gain in floating point).

Smooth problems (λα = 0: ridge, or no penalty) on a large enough X first run L-BFGS
(:meth:`NewtonCD._lbfgs`): on a well-conditioned design it meets the same KKT rule (to a
tenth of the tolerance) in about twice as many iterations as Newton, each costing two
passes over X instead of a Gram product. When its convergence is too slow to pay
(ill-conditioned designs) Newton takes over from the point it reached. ``n_iter`` counts
the iterations of both phases.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from .._penalties import ElasticNet, kkt_residual
from ._cd_kernels import _cd_csc_residual, _cd_gram, _cg_csc
from ._common import Problem, SolverResult
from ._family_kernels import nll_and_terms
from ._null_model import intercept_is_exact, null_gradients, null_intercepts, tolerance_scales
from ._scaling import DesignScaling

#: Above this many features the Hessian is never formed (residual-update CD instead).
GRAM_MAX_FEATURES = 1000
#: Armijo's sufficient-decrease constant and the largest number of step halvings.
ARMIJO = 1e-4
MAX_HALVINGS = 50
#: Changes of J below this many ulps of J are rounding (the full-step and stuck tests).
ROUNDING_ULPS = 16
EPS = np.finfo(float).eps
#: Coordinate sweeps allowed for one quadratic model.
MAX_SWEEPS = 100_000
#: The L-BFGS phase of smooth problems (see :meth:`NewtonCD._lbfgs`): curvature pairs kept;
#: smallest design (n·p) for which it runs — below it each iteration's fixed cost outweighs
#: its passes over X, and Newton's fewer iterations win (measured, 1 BLAS thread); every
#: LBFGS_PATIENCE iterations the KKT residual must have fallen LBFGS_MIN_DROP-fold. It aims
#: at LBFGS_TOL_SHARE of the KKT tolerance: Newton's last step usually lands far below the
#: tolerance, and L-BFGS stopping just under it would leave fits visibly less accurate
#: (coefficients 1e-6 off where Newton's are 1e-9 off, at the default tol).
LBFGS_MEMORY = 10
LBFGS_MIN_SIZE = 50_000
LBFGS_PATIENCE = 3
LBFGS_MIN_DROP = 5.0
LBFGS_TOL_SHARE = 0.1
#: The null model's own fit (offsets, unpenalised predictors): its tolerance and iterations.
NULL_TOL = 1e-10
NULL_MAX_ITER = 100


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


def scaled_design(problem: Problem) -> tuple[DesignScaling, np.ndarray | None]:
    """The design's scaling and scaled copy (None for sparse X), kept in ``problem.cache``."""
    cache = problem.cache
    if "scaling" not in cache:  # built once, shared by every λ of a path
        X = problem.X
        cache["scaling"] = DesignScaling(X, problem.fit_intercept)
        cache["X_scaled"] = None if sp.issparse(X) else cache["scaling"].design(X)
    return cache["scaling"], cache["X_scaled"]


class NewtonCD:
    """The solver; one instance per problem, reusable from any start.

    Parameters
    ----------
    problem : Problem
    max_iter : int
        Maximum number of outer iterations: Newton's, plus the L-BFGS phase's where it
        runs (see :meth:`_lbfgs_applies`).
    tol : float
        KKT tolerance, relative to :func:`tolerance_scale` (or to ``scale`` if given).
    scale : float, optional
        Precomputed tolerance scale (a regularisation path shares one).
    """

    def __init__(self, problem: Problem, *, max_iter: int, tol: float, scale: float | None = None):
        self.problem = problem
        self.max_iter = max_iter
        self.tol_abs = tol * (tolerance_scale(problem) if scale is None else scale)
        X = problem.X
        p = problem.n_features
        self.use_gram = p <= GRAM_MAX_FEATURES
        if self.use_gram:
            # The Newton model is solved for centred, scaled columns (see _scaling).
            self.scaling, self.X_scaled = scaled_design(problem)
            self.ridge_scaled = problem.penalty.l2 * self.scaling.ridge_gram(
                problem.penalty.tikhonov_gram(p)
            )
        else:
            # Residual updates walk columns: CSC (a dense X is converted once).
            self.X_csc = sp.csc_matrix(X)
        self.ridge_gram = problem.penalty.gram  # None means the identity
        # λα per coordinate (penalty factors included).
        self.l1w = np.broadcast_to(problem.penalty.l1_weights, (p,)).astype(float)
        self.y_row = np.ascontiguousarray(problem.y, dtype=float).reshape(1, -1)
        m = problem.sample_weight
        self.m_row = None if m is None else np.ascontiguousarray(m, dtype=float).reshape(1, -1)
        # Σ m_i: the objective's normaliser (n without weights, exactly as before).
        self.total = problem.weight_total
        self.total_row = np.array([self.total])

    # -- pieces of one iteration -------------------------------------------------------------
    def _evaluate(self, z: np.ndarray, beta: np.ndarray):
        """(J, r, w) at z, in one pass.

        J is up to terms in y alone (they cancel in every comparison the solver makes); r
        and w are the working residual and the curvature weights.
        """
        r, w = np.empty((1, z.size)), np.empty((1, z.size))
        total = None if self.m_row is None else self.total_row
        fam = self.problem.family
        nll = nll_and_terms(fam, self.y_row, z.reshape(1, -1), r, w, self.m_row, total)[0]
        return float(nll + self.problem.penalty.value(beta)), r[0], w[0]

    def _gradient(self, r: np.ndarray, beta: np.ndarray) -> tuple[float, np.ndarray]:
        n = self.total  # r already carries the sample weights
        g = np.asarray(self.problem.X.T @ r, dtype=float).reshape(-1) / n
        g += self.problem.penalty.ridge_grad(beta)
        return float(r.sum() / n), g

    def _hessian(self, w: np.ndarray) -> np.ndarray:
        """Hessian of the Newton model in the scaled coordinates b' (see _scaling).

        (1/n)·X̃'ᵀ diag(w) X̃' + λ(1−α)·S⁻¹ΓᵀΓS⁻¹ on the β block, X̃' = [1, (X − c)/s].
        """
        X, n, p = self.problem.X, self.total, self.problem.n_features  # w carries the weights
        icpt = self.problem.fit_intercept
        if self.X_scaled is None:  # sparse: keep X sparse, transform the small Hessian
            Hxx = (X.T @ sp.csr_matrix(X.multiply(w[:, None]))).toarray() / n
            if icpt:
                H = np.empty((p + 1, p + 1))
                H[0, 0] = w.sum() / n
                H[0, 1:] = H[1:, 0] = np.asarray(X.T @ w, dtype=float).reshape(-1) / n
                H[1:, 1:] = Hxx
            else:
                H = Hxx
            H = self.scaling.hessian_to_scaled(H[None])[0]
        else:
            Xs = self.X_scaled * np.sqrt(w)[:, None]
            H = np.empty((p + 1, p + 1)) if icpt else None
            Hxx = Xs.T @ Xs / n
            if icpt:
                H[0, 0] = w.sum() / n
                H[0, 1:] = H[1:, 0] = (w @ self.X_scaled) / n
                H[1:, 1:] = Hxx
            else:
                H = Hxx
        block = slice(1, None) if icpt else slice(None)
        H[block, block] += self.ridge_scaled
        return H

    def _direction(self, r, w, g0, g, beta0, beta, inner_tol):
        """Minimiser (x0, x) of the penalised quadratic model around (β0, β)."""
        pen = self.problem.penalty
        if self.use_gram:
            sc = self.scaling
            icpt = self.problem.fit_intercept
            b = np.concatenate([[beta0], beta]) if icpt else beta
            grad = np.concatenate([[g0], g]) if icpt else g
            # A change of the scaled gradient by t is one of up to t·s_j in the original.
            tol_scaled = inner_tol / float(sc.scale.max(initial=1.0))
            x, _ = _cd_gram(
                self._hessian(w),
                sc.gradient_to_scaled(grad[None])[0],
                sc.to_scaled(b[None])[0],
                sc.l1_weights(self.l1w[None])[0],
                tol_scaled,
                MAX_SWEEPS,
            )
            x = sc.from_scaled(x[None])[0]
            return (x[0], x[1:]) if icpt else (0.0, x)
        Xc = self.X_csc
        G = np.zeros((0, 0)) if self.ridge_gram is None else self.ridge_gram
        icpt = self.problem.fit_intercept
        if not pen.has_l1:  # a ridge model is a linear system: conjugate gradients
            grad = np.concatenate([[g0], g]) if icpt else g
            step, _ = _cg_csc(
                Xc.indptr,
                Xc.indices,
                Xc.data,
                self.total,
                w,
                G,
                pen.l2,
                icpt,
                grad,
                inner_tol,
                10 * grad.size,
            )
            return (beta0 + step[0], beta + step[1:]) if icpt else (0.0, beta + step)
        x0, x, _ = _cd_csc_residual(
            Xc.indptr,
            Xc.indices,
            Xc.data,
            self.total,
            w,
            r,
            G,
            pen.l2,
            beta0,
            beta,
            self.problem.fit_intercept,
            self.l1w,
            inner_tol,
            MAX_SWEEPS,
        )
        return x0, x

    # -- the L-BFGS phase (smooth problems) ---------------------------------------------------
    def _lbfgs_applies(self) -> bool:
        """Whether :meth:`solve` starts with L-BFGS: J smooth and X large enough.

        A ridge problem (λα = 0) needs no coordinate descent, and an L-BFGS iteration costs
        two passes over X against a Newton iteration's Gram product and four passes. On a
        small X both are dominated by fixed per-iteration costs, where Newton's fewer
        iterations win; a gaussian J is quadratic (one Newton step solves it). A
        ``max_iter`` below twice the phase's budget leaves it out too: a caller counting
        on a few Newton iterations gets them.
        """
        prob = self.problem
        return (
            self.use_gram
            and not prob.penalty.has_l1
            and not prob.family.is_quadratic
            and prob.n_samples * prob.n_features >= LBFGS_MIN_SIZE
            and self.max_iter >= 2 * lbfgs_budget(prob.n_features)
        )

    def _scaled_gradient(
        self, r: np.ndarray, beta: np.ndarray, sc: DesignScaling
    ) -> tuple[np.ndarray, float]:
        """∇J in the coordinates of ``sc`` (intercept first) and the KKT residual (λα = 0)."""
        g0, g = self._gradient(r, beta)
        if self.problem.fit_intercept:
            return sc.gradient_to_scaled(np.r_[g0, g][None])[0], kkt_residual(g, beta, 0.0, g0)
        return sc.gradient_to_scaled(g[None])[0], kkt_residual(g, beta, 0.0)

    def _lbfgs(self, beta0: float, beta: np.ndarray, z: np.ndarray, evaluated: tuple):
        """L-BFGS on J for centred, unit-spread columns (see :mod:`._scaling`), from (β0, β).

        Stops when the KKT residual is at most ``LBFGS_TOL_SHARE`` of the tolerance, after
        :func:`lbfgs_budget` iterations, or as soon as it stops paying: no descent step
        found, or the KKT residual not down ``LBFGS_MIN_DROP``-fold over the last
        ``LBFGS_PATIENCE`` iterations (an ill-conditioned design, which Newton then
        finishes). Every step passes Newton's Armijo line search (J decreases, up to the
        16-ulp allowance of a full step).

        Parameters
        ----------
        beta0, beta : float, ndarray of shape (p,)
            The start.
        z : ndarray of shape (n,)
            Its linear predictor.
        evaluated : tuple
            (J, r, w) there (see :meth:`_evaluate`).

        Returns
        -------
        tuple
            (β0, β, z, (J, r, w), KKT residual, iterations, whether the KKT rule was met)
            at the last point.
        """
        prob = self.problem
        icpt = prob.fit_intercept
        m = prob.n_features + int(icpt)
        sc = self.scaling.standardising()
        F, r, w = evaluated
        gs, kkt = self._scaled_gradient(r, beta, sc)
        if kkt <= self.tol_abs:  # optimal already (a warm start on a path): nothing to refine
            return beta0, beta, z, (F, r, w), kkt, 0, True
        kkt_checked = kkt
        # First step: the inverse of the Hessian's diagonal in these coordinates (columns of
        # unit mean square, so its data part is about mean(w) on every coordinate).
        diag = np.full(m, float(w.mean() if self.m_row is None else w.sum() / self.total))
        gram = prob.penalty.gram
        tikhonov = 1.0 if gram is None else np.diagonal(gram)
        diag[int(icpt) :] += prob.penalty.l2 * tikhonov / sc.scale**2
        S, Y = np.zeros((LBFGS_MEMORY, m)), np.zeros((LBFGS_MEMORY, m))
        rho = np.zeros(LBFGS_MEMORY)
        stored = newest = 0
        # No curvature to start from (e.g. every w is 0): leave it all to Newton.
        budget = lbfgs_budget(prob.n_features) if diag.min() > 0.0 else 0
        target = LBFGS_TOL_SHARE * self.tol_abs
        n_iter = 0
        while kkt > target and n_iter < budget:
            if n_iter and n_iter % LBFGS_PATIENCE == 0:
                if not kkt * LBFGS_MIN_DROP <= kkt_checked:
                    break  # ill-conditioned: L-BFGS crawls where Newton converges
                kkt_checked = kkt
            if stored:
                q = _two_loop(-gs, S, Y, rho, stored, newest)
            else:
                q = -gs / diag
            delta = float(gs @ q)  # directional derivative of J along the step
            if not delta < 0.0:
                break
            d = sc.from_scaled(q[None])[0]
            d0, d = (d[0], d[1:]) if icpt else (0.0, d)
            dz = np.asarray(prob.X @ d, dtype=float).reshape(-1) + d0
            step, evaluated = self._line_search(z, dz, beta, d, F, delta)
            if step == 0.0:
                break
            n_iter += 1
            beta0, beta, z = beta0 + step * d0, beta + step * d, z + step * dz
            F, r, w = evaluated
            gs_new, kkt = self._scaled_gradient(r, beta, sc)
            s_k, y_k = step * q, gs_new - gs
            gs = gs_new
            sy = float(s_k @ y_k)
            # Only pairs of positive curvature (J need not be convex for gamma/NB).
            if sy > 1e-10 * np.sqrt(float(s_k @ s_k) * float(y_k @ y_k)):
                newest = (newest + 1) % LBFGS_MEMORY if stored else 0
                S[newest], Y[newest], rho[newest] = s_k, y_k, 1.0 / sy
                stored = min(stored + 1, LBFGS_MEMORY)
        return beta0, beta, z, (F, r, w), kkt, n_iter, kkt <= self.tol_abs

    # -- the loop ----------------------------------------------------------------------------
    def solve(self, beta0: float, beta: np.ndarray) -> SolverResult:
        """Minimise J from (β0, β); returns the solution and its KKT residual."""
        prob = self.problem
        X, l1 = prob.X, self.l1w
        beta = np.array(beta, dtype=float)
        beta0 = float(beta0) if prob.fit_intercept else 0.0
        z = prob.linear_predictor(beta0, beta)
        F, r, w = self._evaluate(z, beta)
        converged = False
        n_iter = 0
        kkt = np.inf
        if self._lbfgs_applies():  # half of max_iter at most: Newton keeps room to finish
            beta0, beta, z, (F, r, w), kkt, n_iter, converged = self._lbfgs(
                beta0, beta, z, (F, r, w)
            )
            if converged:
                return SolverResult(beta0, beta, n_iter, converged, kkt)
        while True:
            g0, g = self._gradient(r, beta)
            kkt = kkt_residual(g, beta, l1, g0 if prob.fit_intercept else None)
            if kkt <= self.tol_abs:
                converged = True
                break
            if n_iter >= self.max_iter:
                break
            n_iter += 1
            inner_tol = max(0.05 * kkt, 0.1 * self.tol_abs)
            x0, x = self._direction(r, w, g0, g, beta0, beta, inner_tol)
            d0, d = x0 - beta0, x - beta
            if d0 == 0.0 and not d.any():
                converged = True  # the model's minimiser is the current point
                break
            dz = np.asarray(X @ d, dtype=float).reshape(-1) + d0
            # Predicted decrease of the model's linear part (≤ 0 for a descent step).
            if prob.penalty.penalty_factor is None:  # the unweighted sum, bit for bit
                l1_change = prob.penalty.l1 * (np.abs(x).sum() - np.abs(beta).sum())
            else:
                l1_change = l1 @ (np.abs(x) - np.abs(beta))
            delta = g0 * d0 + g @ d + l1_change
            step, evaluated = self._line_search(z, dz, beta, d, F, delta)
            if step == 0.0:
                # No decrease representable in floating point: as close as we get. When the
                # model itself predicts less than J can resolve, that is the optimum in
                # floating point (a J of θ·n ≈ 1e-5 for an NB with θ → 0, say).
                converged = bool(abs(delta) <= ROUNDING_ULPS * EPS * abs(F))  # NaN: False
                break
            beta0, beta = beta0 + step * d0, beta + step * d
            z = z + step * dz
            F, r, w = evaluated
        return SolverResult(beta0, beta, n_iter, converged, kkt)

    def _line_search(self, z, dz, beta, d, F, delta):
        """Largest step 2^-k with sufficient decrease of J, with (J, r, w) there.

        Returns (0, None) if there is none.
        """
        step = 1.0
        for _ in range(MAX_HALVINGS):
            evaluated = self._evaluate(z + step * dz, beta + step * d)
            F_new = evaluated[0]
            if F_new <= F + ARMIJO * step * delta:
                return step, evaluated
            # At the optimum J is flat to rounding: take the full step if J is unchanged.
            if step == 1.0 and abs(F_new - F) <= ROUNDING_ULPS * EPS * abs(F):
                return step, evaluated
            step *= 0.5
        return 0.0, None


def newton_cd(
    problem: Problem,
    beta0: float,
    beta: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    scale: float | None = None,
) -> SolverResult:
    """Minimise J for ``problem`` from (β0, β) with :class:`NewtonCD`."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return NewtonCD(problem, max_iter=max_iter, tol=tol, scale=scale).solve(beta0, beta)
