"""Proximal Newton for many responses that share one design: all genes' Hessians at once.

For a design X̃ = [1, X] (n × m) shared by G genes, every gene's Gram matrix
X̃ᵀdiag(w_g)X̃ comes from one matrix product Zᵀ·W, where Z (n × m(m+1)/2) holds the
row-wise products of X̃'s column pairs and W (n × G) the genes' Newton weights.
Gradients, line searches and KKT checks are vectorised over genes; only the small
per-gene coordinate descent runs in a compiled loop. Genes leave the batch as they
converge. The iteration is the one of :mod:`stglm._solvers.newton_cd`, gene by gene.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numba import njit

from .._families import Family
from ._cd_kernels import _cd_gram
from ._family_kernels import family_code, nll_and_terms
from ._null_model import null_intercepts, tolerance_scales
from ._scaling import DesignScaling
from .newton_cd import ARMIJO, MAX_HALVINGS, MAX_SWEEPS

#: Largest pair-product matrix kept in memory; beyond it Z is built block by block.
PAIR_BYTES_BUDGET = 256 * 2**20


@njit(cache=True, nogil=True)
def _cd_gram_many(H, g, b, l1w, tol, max_sweeps):
    """:func:`_cd_gram` for each gene: H (G, m, m), g, b and l1w (G, m), tol (G,)."""
    out = np.empty_like(b)
    for k in range(b.shape[0]):
        x, _ = _cd_gram(H[k], g[k], b[k], l1w[k], tol[k], max_sweeps)
        out[k] = x
    return out


class SharedDesign:
    """A dense design X̃ = [1, X] (or X) with its column-pair products, built once.

    The pair products are those of the centred, scaled design X̃' = X̃·T (see
    :mod:`stglm._solvers._scaling`), so the Hessians come out in the coordinates in which
    the Newton model is solved.

    Parameters
    ----------
    X : ndarray of shape (n, p)
        Predictors (a dense float64 array).
    fit_intercept : bool
        Whether a column of ones is prepended.
    """

    def __init__(self, X: np.ndarray, fit_intercept: bool):
        X = np.asarray(X, dtype=np.float64)
        self.fit_intercept = fit_intercept
        self.X = X
        self.Xt = np.hstack([np.ones((X.shape[0], 1)), X]) if fit_intercept else X
        self.scaling = DesignScaling(X, fit_intercept)
        scaled = self.scaling.design(X)
        if self.scaling.identity:  # no copy when the design needs no transform
            self.Xt_scaled = self.Xt
        else:
            self.Xt_scaled = (
                np.hstack([np.ones((X.shape[0], 1)), scaled]) if fit_intercept else scaled
            )
        n, m = self.Xt.shape
        self.n, self.m = n, m
        self.rows, self.cols = np.triu_indices(m)
        pair_bytes = 8 * n * self.rows.size
        # Rows per block of Z: all of them when Z fits the budget.
        self.block = (
            n
            if pair_bytes <= PAIR_BYTES_BUDGET
            else max(1, PAIR_BYTES_BUDGET // (8 * self.rows.size))
        )
        self.Z = self._pairs(slice(None)) if self.block == n else None

    @cached_property
    def X_abs(self) -> np.ndarray:
        """|X|, for the tolerance scales of every chunk of genes."""
        return np.abs(self.X)

    def _pairs(self, rows: slice) -> np.ndarray:
        Xt = self.Xt_scaled[rows]
        return Xt[:, self.rows] * Xt[:, self.cols]

    def subset(self, index: np.ndarray) -> SharedDesign:
        """The design restricted to some samples (a training fold)."""
        X = self.X[index]
        return SharedDesign(X, self.fit_intercept)

    def hessians(self, W: np.ndarray) -> np.ndarray:
        """(1/n)·X̃'ᵀdiag(w_g)X̃' for each column w_g of W; shape (G, m, m)."""
        if self.Z is not None:
            packed = self.Z.T @ W
        else:
            packed = np.zeros((self.rows.size, W.shape[1]))
            for start in range(0, self.n, self.block):
                rows = slice(start, start + self.block)
                packed += self._pairs(rows).T @ W[rows]
        packed /= self.n
        H = np.empty((W.shape[1], self.m, self.m))
        H[:, self.rows, self.cols] = packed.T
        H[:, self.cols, self.rows] = packed.T
        return H


@dataclass
class BatchResult:
    """Solutions for G genes: intercepts (G,), coefficients (G, p), and diagnostics (G,)."""

    intercepts: np.ndarray
    coefs: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    kkt: np.ndarray


class BatchedNewtonCD:
    """Minimise J for every column of Y at its own λ (shared α, Γ, family and design).

    Parameters
    ----------
    family : Family
    design : SharedDesign
    alpha : float
    Tau : ndarray of shape (p, p) or None
    max_iter, tol : int, float
        As in :class:`stglm._solvers.newton_cd.NewtonCD`; ``tol`` is relative to each
        gene's ``scale`` (:func:`stglm._solvers._null_model.tolerance_scales` unless given).
    """

    def __init__(
        self, family: Family, design: SharedDesign, alpha: float, Tau, *, max_iter: int, tol: float
    ):
        self.family, self.design, self.alpha = family, design, float(alpha)
        self.code = family_code(family)
        p = design.X.shape[1]
        self.gram = np.eye(p) if Tau is None else Tau.T @ Tau
        self.Tau = Tau
        self.max_iter, self.tol = max_iter, tol
        self.penalized = np.ones(design.m, dtype=bool)
        if design.fit_intercept:
            self.penalized[0] = False
        self.gram_scaled = design.scaling.ridge_gram(self.gram)
        # A change of the scaled gradient by t is one of up to t·s_j in the original units.
        self.tol_factor = float(design.scaling.scale.max(initial=1.0))

    # -- vectorised pieces (rows of B are genes; B includes the intercept column if any) ------
    def _penalty(self, B: np.ndarray, lam: np.ndarray) -> np.ndarray:
        beta = B[:, 1:] if self.design.fit_intercept else B
        tb = beta if self.Tau is None else beta @ self.Tau.T
        ridge = 0.5 * lam * (1 - self.alpha) * np.einsum("gj,gj->g", tb, tb)
        return ridge + lam * self.alpha * np.abs(beta).sum(axis=1)

    def _gradient(self, R, B, lam) -> np.ndarray:
        G = (self.design.Xt.T @ R).T / self.design.n
        beta = B[:, 1:] if self.design.fit_intercept else B
        ridge = (lam * (1 - self.alpha))[:, None] * (beta @ self.gram)
        G[:, -beta.shape[1] :] += ridge
        return G

    def _kkt(self, Gr, B, lam) -> np.ndarray:
        l1 = (lam * self.alpha)[:, None]
        pen = self.penalized[None, :]
        sub = np.where(B != 0, np.abs(Gr + l1 * np.sign(B)), np.maximum(np.abs(Gr) - l1, 0.0))
        sub = np.where(pen, sub, np.abs(Gr))  # the intercept: its gradient
        return sub.max(axis=1)

    def _evaluate(self, Y, Z, B, lam, R, W) -> np.ndarray:
        """J per gene at (Z, B), filling R and W with the Newton terms there."""
        return nll_and_terms(*self.code, Y, Z, R, W) + self._penalty(B, lam)

    def solve(
        self,
        Y: np.ndarray,
        lam: np.ndarray,
        B: np.ndarray | None = None,
        scale: np.ndarray | None = None,
    ) -> BatchResult:
        """Solve for every column of Y (n, G) with λ_g = ``lam[g]``.

        Starts from B (G, m) or, if None, from each gene's null model.
        """
        d, fam = self.design, self.family
        n_genes = Y.shape[1]
        lam = np.broadcast_to(np.asarray(lam, dtype=float), (n_genes,)).copy()
        if B is None:
            B = np.zeros((n_genes, d.m))
            if d.fit_intercept:
                B[:, 0] = null_intercepts(fam, Y, True)
        B = np.array(B, dtype=float)
        if scale is None:
            scale = tolerance_scales(fam, d.X, Y, d.fit_intercept, d.X_abs)
        n_iter = np.zeros(n_genes, dtype=int)
        converged = np.zeros(n_genes, dtype=bool)
        kkt = np.full(n_genes, np.inf)
        # The working set: genes still iterating, their columns kept contiguous and compacted
        # only when some leave.
        genes = np.arange(n_genes)
        Ya, Ba, la = np.ascontiguousarray(Y, dtype=float), B.copy(), lam
        tol_a = self.tol * scale
        it_a = np.zeros(n_genes, dtype=int)
        stuck_a = np.zeros(n_genes, dtype=bool)
        at_minimum = np.zeros(n_genes, dtype=bool)
        Za = d.Xt @ Ba.T
        R, W = np.empty_like(Za), np.empty_like(Za)
        ridge_block = slice(1, None) if d.fit_intercept else slice(None)
        sc = d.scaling
        pen_mask = self.penalized[None, :]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            F = self._evaluate(Ya, Za, Ba, la, R, W)
            while True:
                Gr = self._gradient(R, Ba, la)
                kkt_a = self._kkt(Gr, Ba, la)
                done = (kkt_a <= tol_a) | at_minimum
                leave = done | stuck_a | (it_a >= self.max_iter)
                if leave.any():
                    out = genes[leave]
                    B[out], kkt[out], converged[out], n_iter[out] = (
                        Ba[leave],
                        kkt_a[leave],
                        done[leave],
                        it_a[leave],
                    )
                    keep = ~leave
                    if not keep.any():
                        break
                    genes, Ba, la, tol_a, it_a, stuck_a, kkt_a, Gr, F, at_minimum = (
                        genes[keep],
                        Ba[keep],
                        la[keep],
                        tol_a[keep],
                        it_a[keep],
                        stuck_a[keep],
                        kkt_a[keep],
                        Gr[keep],
                        F[keep],
                        at_minimum[keep],
                    )
                    Ya, Za, R, W = Ya[:, keep], Za[:, keep], R[:, keep], W[:, keep]
                it_a += 1
                H = d.hessians(W)  # in the scaled coordinates b' (see _scaling)
                H[:, ridge_block, ridge_block] += (la * (1 - self.alpha))[
                    :, None, None
                ] * self.gram_scaled
                inner_tol = np.maximum(0.05 * kkt_a, 0.1 * tol_a) / self.tol_factor
                X_new = sc.from_scaled(
                    _cd_gram_many(
                        H,
                        sc.gradient_to_scaled(Gr),
                        sc.to_scaled(Ba),
                        sc.l1_weights(la * self.alpha),
                        inner_tol,
                        MAX_SWEEPS,
                    )
                )
                D = X_new - Ba
                at_minimum = ~D.any(axis=1)  # the model's minimiser is the current point
                dZ = d.Xt @ D.T
                delta = np.einsum("gj,gj->g", Gr, D) + la * self.alpha * (
                    (np.abs(X_new) - np.abs(Ba)) * pen_mask
                ).sum(1)
                step, F_new, R_new, W_new = self._line_search(Ya, Za, dZ, Ba, D, la, F, delta)
                moved = step > 0
                # No representable decrease: as close as floating point gets; stop there.
                stuck_a |= ~moved
                Ba += step[:, None] * D
                Za += dZ * step[None, :]
                if moved.all():
                    F, R, W = F_new, R_new, W_new
                else:
                    F = np.where(moved, F_new, F)
                    R[:, moved], W[:, moved] = R_new[:, moved], W_new[:, moved]
        m_beta = slice(1, None) if d.fit_intercept else slice(None)
        intercepts = B[:, 0].copy() if d.fit_intercept else np.zeros(n_genes)
        return BatchResult(intercepts, B[:, m_beta].copy(), n_iter, converged, kkt)

    def _line_search(self, Y, Z, dZ, B, D, lam, F, delta):
        """Per gene, the largest step 2^-k with sufficient decrease of J (0 if none).

        Returns the steps, J there, and the Newton terms there (for the next iteration).
        """
        n_genes = B.shape[0]
        step = np.ones(n_genes)
        R, W = np.empty_like(Z), np.empty_like(Z)
        F_new = self._evaluate(Y, Z + dZ, B + D, lam, R, W)  # the full step, for every gene
        todo = np.arange(n_genes)
        eps = np.finfo(float).eps
        for _ in range(MAX_HALVINGS):
            s, trial = step[todo], F_new[todo]
            ok = trial <= F[todo] + ARMIJO * s * delta[todo]
            ok |= (s == 1.0) & (np.abs(trial - F[todo]) <= 16 * eps * np.abs(F[todo]))
            todo = todo[~ok]
            if todo.size == 0:
                return step, F_new, R, W
            step[todo] *= 0.5
            s = step[todo]
            Rt, Wt = np.empty((Z.shape[0], todo.size)), np.empty((Z.shape[0], todo.size))
            F_new[todo] = self._evaluate(
                Y[:, todo],
                Z[:, todo] + dZ[:, todo] * s[None, :],
                B[todo] + s[:, None] * D[todo],
                lam[todo],
                Rt,
                Wt,
            )
            R[:, todo], W[:, todo] = Rt, Wt
        step[todo] = 0.0
        return step, F_new, R, W
