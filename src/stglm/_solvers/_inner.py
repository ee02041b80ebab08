"""Inner solvers: the minimiser of a Newton step's penalised quadratic model, by plug-in.

The model at (β0, β), with working residuals r and curvature weights w (both carrying the
sample weights), is

    gᵀ(x − b) + ½ (x − b)ᵀ H (x − b) + Σ_j λα·f_j·|x_j|,   H = X̃ᵀdiag(w)X̃ / Σm + λ(1−α)·ΓᵀΓ

on the β block. Which plug-in solves it depends on the design (:func:`for_problem`):

- :class:`GramCD` — coordinate descent on the (p+1) × (p+1) Hessian, formed for centred,
  scaled columns (:mod:`stglm._solvers._scaling`); small p;
- :class:`ResidualCD` — coordinate descent through an n-vector of working residuals, H
  never formed; p above ``NewtonOptions.gram_max_features``;
- :class:`ConjugateGradient` — a ridge model (no L1 term) on such a design is a linear
  system;
- :class:`SharedGramCD` — many genes on one dense design: every gene's Hessian from one
  product with the design's pair products, then coordinate descent per gene in a compiled
  loop (:class:`stglm._solvers.batched.BatchedNewtonCD`).

Single-problem plug-ins return the new point (x0, x); the shared one, for every row of a
batch, the new points with the predicted decreases and whether each step is zero.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._batched_kernels import newton_directions
from ._cd_kernels import _cd_csc_residual, _cd_gram, _cg_csc
from ._common import Problem
from ._newton import MAX_SWEEPS
from ._options import NewtonOptions
from ._scaling import scaled_design

__all__ = ["ConjugateGradient", "GramCD", "ResidualCD", "SharedGramCD", "for_problem"]


def for_problem(problem: Problem, l1w: np.ndarray, options: NewtonOptions):
    """The inner solver of a single problem: by the number of features and the L1 term."""
    if problem.n_features <= options.gram_max_features:
        return GramCD(problem, l1w)
    if not problem.penalty.has_l1:
        return ConjugateGradient(problem)
    return ResidualCD(problem, l1w)


class GramCD:
    """Coordinate descent on the Newton model's Hessian in centred, scaled coordinates b'.

    Parameters
    ----------
    problem : Problem
    l1w : ndarray of shape (p,)
        λα per coordinate (penalty factors included).
    """

    def __init__(self, problem: Problem, l1w: np.ndarray):
        self.problem = problem
        self.scaling, self.X_scaled = scaled_design(problem)
        p = problem.n_features
        pen = problem.penalty
        self.ridge_scaled = pen.l2 * self.scaling.ridge_gram(pen.tikhonov_gram(p))
        self.l1_scaled = self.scaling.l1_weights(l1w[None])[0]
        # A change of the scaled gradient by t is one of up to t·s_j in the original units.
        self.tol_factor = float(self.scaling.scale.max(initial=1.0))
        self.total = problem.weight_total

    def hessian(self, w: np.ndarray) -> np.ndarray:
        """(1/Σm)·X̃'ᵀ diag(w) X̃' + λ(1−α)·S⁻¹ΓᵀΓS⁻¹ on the β block, X̃' = [1, (X − c)/s]."""
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

    def minimise(self, r, w, g0, g, beta0, beta, inner_tol: float):
        """The model's minimiser (x0, x) around (β0, β) with gradient (g0, g)."""
        sc = self.scaling
        icpt = self.problem.fit_intercept
        b = np.concatenate([[beta0], beta]) if icpt else beta
        grad = np.concatenate([[g0], g]) if icpt else g
        x, _ = _cd_gram(
            self.hessian(w),
            sc.gradient_to_scaled(grad[None])[0],
            sc.to_scaled(b[None])[0],
            self.l1_scaled,
            inner_tol / self.tol_factor,
            MAX_SWEEPS,
        )
        x = sc.from_scaled(x[None])[0]
        return (x[0], x[1:]) if icpt else (0.0, x)


class _WideDesign:
    """The pieces of the model that the wide-design kernels take: X as CSC, ΓᵀΓ, λ(1−α)."""

    def __init__(self, problem: Problem):
        pen = problem.penalty
        self.X_csc = sp.csc_matrix(problem.X)  # the kernels walk columns (dense X converted once)
        self.G = np.zeros((0, 0)) if pen.gram is None else pen.gram  # empty: the identity
        self.l2 = pen.l2
        self.fit_intercept = problem.fit_intercept
        self.total = problem.weight_total


class ResidualCD(_WideDesign):
    """Residual-update coordinate descent: H applied through n working residuals, never formed."""

    def __init__(self, problem: Problem, l1w: np.ndarray):
        super().__init__(problem)
        self.l1w = l1w

    def minimise(self, r, w, g0, g, beta0, beta, inner_tol: float):
        """The model's minimiser (x0, x) around (β0, β) (the gradient is carried by r)."""
        Xc = self.X_csc
        x0, x, _ = _cd_csc_residual(
            Xc.indptr, Xc.indices, Xc.data, self.total, w, r, self.G, self.l2, beta0, beta,
            self.fit_intercept, self.l1w, inner_tol, MAX_SWEEPS,
        )  # fmt: skip
        return x0, x


class ConjugateGradient(_WideDesign):
    """A ridge model's Newton step by conjugate gradients on H·d = −g."""

    def minimise(self, r, w, g0, g, beta0, beta, inner_tol: float):
        """The model's minimiser (x0, x) = (β0, β) + d."""
        Xc = self.X_csc
        icpt = self.fit_intercept
        grad = np.concatenate([[g0], g]) if icpt else g
        step, _ = _cg_csc(
            Xc.indptr, Xc.indices, Xc.data, self.total, w, self.G, self.l2, icpt, grad,
            inner_tol, 10 * grad.size,
        )  # fmt: skip
        return (beta0 + step[0], beta + step[1:]) if icpt else (0.0, beta + step)


class SharedGramCD:
    """Every gene's Newton model on a shared design, by coordinate descent on its Hessian.

    The Hessians come in the scaled coordinates b' from one product with the design's pair
    products (:meth:`stglm._solvers.batched.SharedDesign.hessians`); the ridge block, the
    change of coordinates and the predicted decrease are in the compiled
    :func:`stglm._solvers._batched_kernels.newton_directions`. It reads the rows of a
    batch of :class:`stglm._solvers.batched.BatchedNewtonCD` (``W``, ``total``, ``Gr``,
    ``B``, ``lam``) and keeps each row's last likelihood Hessian in ``H``.

    Parameters
    ----------
    design : SharedDesign
    alpha : float
    factor : ndarray of shape (p,)
        Penalty factors.
    gram_scaled : ndarray of shape (p, p)
        S⁻¹ΓᵀΓS⁻¹, the ridge term's Hessian in the scaled coordinates.
    stale_first : bool
        Whether a row's first step reuses the Hessian it came with (``H`` finite): see
        :class:`stglm._solvers._options.NewtonOptions`.
    """

    def __init__(self, design, alpha: float, factor, gram_scaled, stale_first: bool):
        self.design, self.alpha, self.factor = design, alpha, factor
        self.gram_scaled = gram_scaled
        self.stale_first = stale_first
        self.tol_factor = float(design.scaling.scale.max(initial=1.0))

    def _hessians(self, active) -> None:
        """Each row's likelihood Hessian (no ridge term) at its point, into ``active.H``."""
        d = self.design
        if self.stale_first and active.H is not None and active.n_iter[0] == 1:
            fresh = ~np.isfinite(active.H).all(axis=(1, 2))  # rows without a last Hessian
            if fresh.any():
                active.H[fresh] = d.hessians(active.Wc[fresh], active.total[fresh])
        else:
            active.H = d.hessians(active.Wc, active.total)

    def minimise(self, active, inner_tol: np.ndarray):
        """(new points (k, m), predicted decreases (k,), whether each step is zero (k,))."""
        self._hessians(active)
        sc = self.design.scaling
        X_new = np.empty_like(active.B)
        delta, at_minimum = newton_directions(
            active.H, self.gram_scaled, active.Gr, active.B, active.lam, self.alpha,
            self.factor, sc.center, sc.scale, self.design.fit_intercept,
            inner_tol / self.tol_factor, MAX_SWEEPS, X_new,
        )  # fmt: skip
        return X_new, delta, at_minimum
