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
measured: max(1, ‖∇_β loss at the null model‖∞).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._penalties import kkt_residual
from ._cd_kernels import _cd_csc_residual, _cd_gram
from ._common import Problem, SolverResult
from ._family_kernels import family_code, mean_nll, newton_terms

#: Above this many features the Hessian is never formed (residual-update CD instead).
GRAM_MAX_FEATURES = 1000
#: Armijo's sufficient-decrease constant and the largest number of step halvings.
ARMIJO = 1e-4
MAX_HALVINGS = 50
#: Coordinate sweeps allowed for one quadratic model.
MAX_SWEEPS = 100_000


def null_intercept(problem: Problem) -> float:
    """Intercept of the null model, link(ȳ) (0 without intercept)."""
    if not problem.fit_intercept:
        return 0.0
    fam = problem.family
    y_bar = float(np.mean(problem.y))
    if fam.name != "gaussian":
        y_bar = max(y_bar, 1e-10)  # an all-zero count vector: μ → 0 from above
    return float(fam.link(y_bar))


def null_gradient(problem: Problem) -> np.ndarray:
    """∇_β of the mean negative log-likelihood at the null model (β = 0, β0 = link(ȳ))."""
    z = np.full(problem.n_samples, null_intercept(problem))
    r = problem.family.residual(problem.y, z)
    return np.asarray(problem.X.T @ r, dtype=float).reshape(-1) / problem.n_samples


def tolerance_scale(problem: Problem) -> float:
    """max(1, ‖null_gradient‖∞): the KKT residual is compared with ``tol`` times this."""
    return max(1.0, float(np.max(np.abs(null_gradient(problem)), initial=0.0)))


class NewtonCD:
    """The solver; one instance per problem, reusable from any start.

    Parameters
    ----------
    problem : Problem
    max_iter : int
        Maximum number of Newton (outer) iterations.
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
        if not self.use_gram:
            # Residual updates walk columns: CSC (a dense X is converted once).
            self.X_csc = sp.csc_matrix(X)
        self.ridge_gram = problem.penalty.gram  # None means the identity
        self.code = family_code(problem.family)
        self.y2d = np.ascontiguousarray(problem.y, dtype=float).reshape(-1, 1)
        m = p + 1 if problem.fit_intercept else p
        self.penalized = np.ones(m, dtype=bool)
        if problem.fit_intercept:
            self.penalized[0] = False

    # -- pieces of one iteration -------------------------------------------------------------
    def _objective(self, z: np.ndarray, beta: np.ndarray) -> float:
        """J up to terms in y alone (they cancel in every comparison the solver makes)."""
        nll = mean_nll(*self.code, self.y2d, z.reshape(-1, 1))[0]
        return float(nll + self.problem.penalty.value(beta))

    def _newton_terms(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Working residual r and curvature weights w at z."""
        r, w = np.empty((z.size, 1)), np.empty((z.size, 1))
        newton_terms(*self.code, self.y2d, z.reshape(-1, 1), r, w)
        return r[:, 0], w[:, 0]

    def _gradient(self, r: np.ndarray, beta: np.ndarray) -> tuple[float, np.ndarray]:
        n = self.problem.n_samples
        g = np.asarray(self.problem.X.T @ r, dtype=float).reshape(-1) / n
        g += self.problem.penalty.ridge_grad(beta)
        return float(r.sum() / n), g

    def _hessian(self, w: np.ndarray) -> np.ndarray:
        """(1/n)·X̃ᵀ diag(w) X̃ + λ(1−α)ΓᵀΓ on the β block; X̃ = [1, X] with intercept."""
        X, n, p = self.problem.X, self.problem.n_samples, self.problem.n_features
        if sp.issparse(X):
            Hxx = (X.T @ sp.csr_matrix(X.multiply(w[:, None]))).toarray()
        else:
            Xs = X * np.sqrt(w)[:, None]
            Hxx = Xs.T @ Xs
        Hxx /= n
        Hxx += self.problem.penalty.l2 * self.problem.penalty.tikhonov_gram(p)
        if not self.problem.fit_intercept:
            return Hxx
        H = np.empty((p + 1, p + 1))
        H[0, 0] = w.sum() / n
        H[0, 1:] = H[1:, 0] = np.asarray(X.T @ w, dtype=float).reshape(-1) / n
        H[1:, 1:] = Hxx
        return H

    def _direction(self, r, w, g0, g, beta0, beta, inner_tol):
        """Minimiser (x0, x) of the penalised quadratic model around (β0, β)."""
        pen = self.problem.penalty
        if self.use_gram:
            H = self._hessian(w)
            if self.problem.fit_intercept:
                b, grad = np.concatenate([[beta0], beta]), np.concatenate([[g0], g])
            else:
                b, grad = beta, g
            x, _ = _cd_gram(H, grad, b, self.penalized, pen.l1, inner_tol, MAX_SWEEPS)
            return (x[0], x[1:]) if self.problem.fit_intercept else (0.0, x)
        Xc = self.X_csc
        G = np.zeros((0, 0)) if self.ridge_gram is None else self.ridge_gram
        x0, x, _ = _cd_csc_residual(
            Xc.indptr, Xc.indices, Xc.data, self.problem.n_samples, w, r, G, pen.l2,
            beta0, beta, self.problem.fit_intercept, pen.l1, inner_tol, MAX_SWEEPS,
        )
        return x0, x

    # -- the loop ----------------------------------------------------------------------------
    def solve(self, beta0: float, beta: np.ndarray) -> SolverResult:
        """Minimise J from (β0, β); returns the solution and its KKT residual."""
        prob = self.problem
        X, l1 = prob.X, prob.penalty.l1
        beta = np.array(beta, dtype=float)
        beta0 = float(beta0) if prob.fit_intercept else 0.0
        z = np.asarray(X @ beta, dtype=float).reshape(-1) + beta0
        F = self._objective(z, beta)
        converged = False
        n_iter = 0
        kkt = np.inf
        while True:
            r, w = self._newton_terms(z)
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
            dz = np.asarray(X @ d, dtype=float).reshape(-1) + d0
            # Predicted decrease of the model's linear part (≤ 0 for a descent step).
            delta = g0 * d0 + g @ d + l1 * (np.abs(x).sum() - np.abs(beta).sum())
            step, F_new = self._line_search(z, dz, beta, d, F, delta)
            if step == 0.0:
                break  # no decrease representable in floating point: as close as we get
            beta0, beta = beta0 + step * d0, beta + step * d
            z = z + step * dz
            F = F_new
        return SolverResult(beta0, beta, n_iter, converged, kkt)

    def _line_search(self, z, dz, beta, d, F, delta):
        """Largest step 2^-k with sufficient decrease of J; (0, F) if there is none."""
        step = 1.0
        for _ in range(MAX_HALVINGS):
            F_new = self._objective(z + step * dz, beta + step * d)
            if F_new <= F + ARMIJO * step * delta:
                return step, F_new
            # At the optimum J is flat to rounding: take the full step if J is unchanged.
            if step == 1.0 and abs(F_new - F) <= 16 * np.finfo(float).eps * abs(F):
                return step, F_new
            step *= 0.5
        return 0.0, F


def newton_cd(problem: Problem, beta0: float, beta: np.ndarray, *, max_iter: int, tol: float,
              scale: float | None = None) -> SolverResult:
    """Minimise J for ``problem`` from (β0, β) with :class:`NewtonCD`."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return NewtonCD(problem, max_iter=max_iter, tol=tol, scale=scale).solve(beta0, beta)
