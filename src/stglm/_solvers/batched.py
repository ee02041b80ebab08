"""Proximal Newton for many responses that share one design: all genes' Hessians at once.

For a design X̃ = [1, X] (n × m) shared by G genes, every gene's Gram matrix
X̃ᵀdiag(w_g)X̃ comes from one matrix product W·Z, where Z (n × m(m+1)/2) holds the
row-wise products of X̃'s column pairs and W (G × n) the genes' Newton weights.
Gradients, line searches and KKT checks are vectorised over genes; only the small
per-gene coordinate descent runs in a compiled loop. Genes leave the batch as they
converge. The iteration is the one of :mod:`stglm._solvers.newton_cd`, gene by gene.

The working arrays are gene-major (G × n, one contiguous row per gene), allocated once
per solver and double-buffered: a step is accepted by swapping buffers, and genes that
leave are replaced by moving only the rows of the last ones into their places. (In the
sample-major layout, compaction and fresh temporaries cost more than the arithmetic.)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .._families import Family
from .._penalties import ElasticNet
from ._batched_kernels import (
    accept_steps,
    copy_rows,
    finish_gradients,
    newton_directions,
    pair_products,
    penalties,
    sufficient_decrease,
    unpack_hessians,
)
from ._family_kernels import EPS, nll_and_terms
from ._null_model import null_intercepts, tolerance_scales
from ._scaling import DesignScaling
from .newton_cd import ARMIJO, MAX_HALVINGS, MAX_SWEEPS, ROUNDING_ULPS

#: Take a path's first Newton step at each λ with the previous λ's last Hessian: a product
#: saved per λ (GLMCV 2,000 × 20: 19.0 → 16.3 ms; Visium fit_genes CV 7.3 → 5.5 s) for a few
#: more iterations (299 → 305). Any positive definite matrix gives a descent direction, and
#: the stopping rule (KKT) does not depend on it.
STALE_FIRST = True
#: Largest pair-product matrix kept in memory; beyond it Z is built block by block.
PAIR_BYTES_BUDGET = 256 * 2**20


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
        # X̃ kept transposed, (m, n) contiguous: the step's predictors D·X̃ᵀ, every
        # iteration, come 2.5× faster from it than from X̃ (6 × 21 by 21 × 2,000: 6 against
        # 15 µs), and R·X̃ through its transposed view is as fast as from X̃.
        n, p = X.shape
        self.scaling = DesignScaling(X, fit_intercept)
        self.XtT = self._with_intercept(X)
        self.Xt = self.XtT.T
        # The pair products come from the scaled design (the same array when no transform).
        self._XtT_scaled = (
            self.XtT if self.scaling.identity else self._with_intercept(self.scaling.design(X))
        )
        self.n, self.m = n, m = self.Xt.shape
        self.rows, self.cols = np.triu_indices(m)
        pair_bytes = 8 * n * self.rows.size
        # Rows per block of Z: all of them when Z fits the budget.
        self.block = (
            n
            if pair_bytes <= PAIR_BYTES_BUDGET
            else max(1, PAIR_BYTES_BUDGET // (8 * self.rows.size))
        )
        self.Z = self._pairs(slice(None)) if self.block == n else None

    def _with_intercept(self, X: np.ndarray) -> np.ndarray:
        """[1, X]ᵀ (or Xᵀ) as an (m, n) C-contiguous array."""
        if not self.fit_intercept:
            return np.ascontiguousarray(X.T)  # no copy of a column-major X
        out = np.empty((X.shape[1] + 1, X.shape[0]))
        out[0] = 1.0
        out[1:] = X.T
        return out

    @cached_property
    def X_abs(self) -> np.ndarray:
        """|X|, for the tolerance scales of every chunk of genes."""
        return np.abs(self.X)

    def _pairs(self, rows: slice) -> np.ndarray:
        """Z for some rows: columns x̃_a·x̃_b for a ≤ b, in ``np.triu_indices`` order."""
        start, stop, _ = rows.indices(self.n)
        Z = np.empty((stop - start, self.rows.size))
        pair_products(self._XtT_scaled, start, stop, Z)
        return Z

    def subset(self, index: np.ndarray) -> SharedDesign:
        """The design restricted to some samples (a training fold)."""
        X = self.X[index]
        return SharedDesign(X, self.fit_intercept)

    def hessians(self, W: np.ndarray, total: np.ndarray | None = None) -> np.ndarray:
        """(1/n_g)·X̃'ᵀdiag(w_g)X̃' for each row w_g of W (G, n); shape (G, m, m).

        n_g is ``total[g]`` (the row's sum of sample weights), or n.
        """
        if self.Z is not None:
            # The same product in OpenBLAS's faster orientation: measured 1.2–1.5× apart
            # (W·Z for 6–128 genes and 231–300 pairs, Zᵀ·Wᵀ for 128 genes and 55 pairs).
            few_genes = W.shape[0] <= self.rows.size
            packed = W @ self.Z if few_genes else (self.Z.T @ W.T).T
        else:
            packed = np.zeros((W.shape[0], self.rows.size))
            for start in range(0, self.n, self.block):
                rows = slice(start, start + self.block)
                packed += W[:, rows] @ self._pairs(rows)
        total = np.full(W.shape[0], float(self.n)) if total is None else total
        return unpack_hessians(packed, total, self.rows, self.cols, self.m)


@dataclass
class NewtonTerms:
    """What an evaluation leaves at a point, for G responses.

    The linear predictors Z (G, n), the Newton terms R and W (G, n), the mean −ℓ (G,)
    and the last Hessians used. A path hands them from one λ to the next, whose start is
    the previous solution: only the penalty changes there.
    """

    Z: np.ndarray
    R: np.ndarray
    W: np.ndarray
    nll: np.ndarray
    #: The last Hessian of each response's likelihood (G, m, m; no ridge term), or None.
    H: np.ndarray | None = None


@dataclass
class BatchResult:
    """Solutions for G genes: intercepts (G,), coefficients (G, p), and diagnostics (G,).

    ``terms`` are the Newton terms at the solutions (see :class:`NewtonTerms`), if kept.
    """

    intercepts: np.ndarray
    coefs: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    kkt: np.ndarray
    terms: NewtonTerms | None


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
    penalty_factor : ndarray of shape (p,) or None
        Per-predictor penalty factors (see :class:`stglm._penalties.ElasticNet`).
    """

    def __init__(
        self,
        family: Family,
        design: SharedDesign,
        alpha: float,
        Tau,
        *,
        max_iter: int,
        tol: float,
        penalty_factor: np.ndarray | None = None,
    ):
        self.family, self.design, self.alpha = family, design, float(alpha)
        p = design.X.shape[1]
        self.penalty = ElasticNet(0.0, alpha, Tau, penalty_factor)
        self.gram = self.penalty.tikhonov_gram(p)
        self.factor = np.ones(p) if penalty_factor is None else self.penalty.penalty_factor
        self.max_iter, self.tol = max_iter, tol
        self.gram_scaled = design.scaling.ridge_gram(self.gram)
        # A change of the scaled gradient by t is one of up to t·s_j in the original units.
        self.tol_factor = float(design.scaling.scale.max(initial=1.0))

    # -- per-gene pieces (rows of B are genes; B includes the intercept column if any) -------
    def _penalty(self, B: np.ndarray, lam: np.ndarray) -> np.ndarray:
        fit_intercept = self.design.fit_intercept
        return penalties(B, lam, self.alpha, self.factor, self.gram, fit_intercept)

    def _gradient(self, R, B, lam, total) -> tuple[np.ndarray, np.ndarray]:
        """∇J per gene (rows), from the working residuals R (G, n), and the KKT residuals."""
        Gr = R @ self.design.Xt
        kkt = finish_gradients(
            Gr, total, B, lam, self.alpha, self.factor, self.gram, self.design.fit_intercept
        )
        return Gr, kkt

    def _evaluate(self, Y, Z, B, lam, R, W, sample, theta=None) -> tuple[np.ndarray, np.ndarray]:
        """(J, mean −ℓ) per gene at (Z, B), filling R and W with the Newton terms there.

        ``sample`` is None or (M, total): the rows' sample weights and their sums; ``theta``
        the rows' negative-binomial sizes (None: the family's).
        """
        nll = nll_and_terms(self.family, Y, Z, R, W, *(sample or ()), theta=theta)
        return nll + self._penalty(B, lam), nll

    def _workspace(self, n_genes: int, n_arrays: int) -> list[np.ndarray]:
        """``n_arrays`` (G, n) buffers, kept by the solver so that a path allocates once."""
        ws = getattr(self, "_ws", None)
        if ws is None or len(ws) < n_arrays or ws[0].shape[0] < n_genes:
            ws = [np.empty((n_genes, self.design.n)) for _ in range(n_arrays)]
            self._ws = ws
        return ws

    def solve(
        self,
        Y: np.ndarray,
        lam: np.ndarray,
        B: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        terms: NewtonTerms | None = None,
        keep_terms: bool = False,
        offset: np.ndarray | None = None,
        theta: np.ndarray | None = None,
    ) -> BatchResult:
        """Solve for every column of Y (n, G) with λ_g = ``lam[g]``.

        Starts from B (G, m) or, if None, from each gene's null model. ``weights`` (n, G),
        non-negative with positive column sums, weight each column's samples: J_g's mean
        −ℓ becomes Σ_i m_ig·(−ℓ_ig) / Σ_i m_ig. A 0/1 column fits a training fold on the
        full design, so all folds of a cross-validation share one design and one batch.
        ``terms`` are the Newton terms at B when the caller has them (a path's previous
        solution): the first evaluation is then skipped, and their arrays are reused for
        the returned terms. The result carries the terms at the solutions when ``terms``
        were given or ``keep_terms`` is set (three more n-vectors per gene), else None.
        ``offset``, (n,) or (n, G), is added to every linear predictor (z = b·x̃ + offset);
        ``theta`` (G,) gives each gene its own negative-binomial size.
        """
        d, fam = self.design, self.family
        n_genes = Y.shape[1]
        # The working rows (Ba, la, ...) follow the genes still in the batch; B receives
        # each gene's solution as it leaves.
        la = np.full(n_genes, lam, dtype=float)
        if B is None:
            Ba = np.zeros((n_genes, d.m))
            if d.fit_intercept:
                Ba[:, 0] = null_intercepts(fam, Y, True, weights, offset)
        else:
            Ba = np.array(B, dtype=float)
        B = np.empty_like(Ba)
        if scale is None:
            scale = tolerance_scales(fam, d.X, Y, d.fit_intercept, d.X_abs, weights, offset)
        n_iter = np.zeros(n_genes, dtype=int)
        converged = np.zeros(n_genes, dtype=bool)
        kkt = np.full(n_genes, np.inf)
        weighted = weights is not None
        # Gene-major working arrays: the current point (Zc, Rc, Wc), the trial point
        # (Zt, Rt, Wt), the responses and weights (their rows move with the genes).
        ws = self._workspace(n_genes, 8 if weighted else 7)
        Zc, Rc, Wc, Zt, Rt, Wt, Yw = (a[:n_genes] for a in ws[:7])
        Mw = ws[7][:n_genes] if weighted else None
        np.copyto(Yw, Y.T)
        if weighted:
            np.copyto(Mw, weights.T)
        total_a = np.full(n_genes, float(d.n)) if Mw is None else Mw.sum(axis=1)
        th_a = None if theta is None else np.array(theta, dtype=float)
        # The previous λ's last Hessians serve the first step at this λ (see STALE_FIRST).
        Ha = None if terms is None or terms.H is None else terms.H.copy()
        final = terms
        if final is None and keep_terms:
            final = NewtonTerms(
                np.empty_like(Zc), np.empty_like(Zc), np.empty_like(Zc), np.empty(n_genes)
            )
        if final is not None and final.H is None:
            final.H = np.full((n_genes, d.m, d.m), np.nan)  # NaN: no Newton step taken yet
        genes = np.arange(n_genes)  # which gene each working row holds
        tol_a = self.tol * scale
        it_a = np.zeros(n_genes, dtype=int)
        stuck_a = np.zeros(n_genes, dtype=bool)
        at_minimum = np.zeros(n_genes, dtype=bool)
        k = n_genes
        sc = d.scaling
        XtT = d.XtT
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if terms is None:
                np.matmul(Ba, XtT, out=Zc)
                if offset is not None:
                    Zc += offset.T if offset.ndim == 2 else offset  # then carried by every step
                sample = None if Mw is None else (Mw, total_a)
                F, L = self._evaluate(Yw, Zc, Ba, la, Rc, Wc, sample, th_a)
            else:
                np.copyto(Zc, terms.Z)
                np.copyto(Rc, terms.R)
                np.copyto(Wc, terms.W)
                L = terms.nll.copy()
                F = L + self._penalty(Ba, la)
            while True:
                Gr, kkt_a = self._gradient(Rc[:k], Ba, la, total_a)
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
                    if final is not None:
                        copy_rows(
                            (Zc, Rc, Wc), (final.Z, final.R, final.W), np.flatnonzero(leave), out
                        )
                        final.nll[out] = L[leave]
                        if Ha is not None:
                            final.H[out] = Ha[leave]
                    keep = ~leave
                    k_new = int(keep.sum())
                    if k_new == 0:
                        break
                    # Fill the leaving rows among the first k_new with the kept rows beyond.
                    dst = np.flatnonzero(leave[:k_new])
                    src = k_new + np.flatnonzero(keep[k_new:])
                    moved_arrays = (Yw, Zc, Rc, Wc) if Mw is None else (Yw, Mw, Zc, Rc, Wc)
                    copy_rows(moved_arrays, moved_arrays, src, dst)
                    order = np.arange(k)
                    order[dst] = src
                    order = order[:k_new]
                    genes, Ba, la, tol_a, it_a, stuck_a, kkt_a, Gr, F, L, at_minimum, total_a = (
                        a[order]
                        for a in (
                            genes,
                            Ba,
                            la,
                            tol_a,
                            it_a,
                            stuck_a,
                            kkt_a,
                            Gr,
                            F,
                            L,
                            at_minimum,
                            total_a,
                        )
                    )
                    Ha = None if Ha is None else Ha[order]
                    th_a = None if th_a is None else th_a[order]
                    k = k_new
                it_a += 1
                # Hessians in the scaled coordinates b' (see _scaling), without the ridge.
                if STALE_FIRST and Ha is not None and it_a[0] == 1:
                    fresh = ~np.isfinite(Ha).all(axis=(1, 2))  # genes without a last Hessian
                    if fresh.any():
                        Ha[fresh] = d.hessians(Wc[:k][fresh], total_a[fresh])
                else:
                    Ha = d.hessians(Wc[:k], total_a)
                inner_tol = np.maximum(0.05 * kkt_a, 0.1 * tol_a) / self.tol_factor
                X_new = np.empty_like(Ba)
                delta, at_minimum = newton_directions(
                    Ha,
                    self.gram_scaled,
                    Gr,
                    Ba,
                    la,
                    self.alpha,
                    self.factor,
                    sc.center,
                    sc.scale,
                    d.fit_intercept,
                    inner_tol,
                    MAX_SWEEPS,
                    X_new,
                )
                D = X_new - Ba
                # The full step's predictors go straight into the trial buffer.
                np.matmul(D, XtT, out=Zt[:k])
                Zt[:k] += Zc[:k]
                step, F_new, L_new = self._line_search(
                    Yw[:k],
                    (Zc[:k], Rc[:k], Wc[:k]),
                    (Zt[:k], Rt[:k], Wt[:k]),
                    None if Mw is None else (Mw[:k], total_a),
                    Ba,
                    X_new,
                    D,
                    la,
                    F,
                    delta,
                    th_a,
                )
                # A step of 0 (no representable decrease) leaves the gene stuck: as close as
                # floating point gets; it stops there, converged when the model predicted
                # less decrease than J can resolve (as in NewtonCD.solve).
                accept_steps(step, D, Ba, X_new, F, F_new, L, L_new, stuck_a)
                at_minimum |= (step == 0.0) & (np.abs(delta) <= ROUNDING_ULPS * EPS * np.abs(F))
                # Accept: the trial buffers become the current ones (rows stay aligned).
                Zc, Zt, Rc, Rt, Wc, Wt = Zt, Zc, Rt, Rc, Wt, Wc
        m_beta = slice(1, None) if d.fit_intercept else slice(None)
        intercepts = B[:, 0].copy() if d.fit_intercept else np.zeros(n_genes)
        return BatchResult(intercepts, B[:, m_beta].copy(), n_iter, converged, kkt, final)

    def _line_search(self, Y, current, trial, sample, B, B_full, D, lam, F, delta, theta=None):
        """Per gene, the largest step 2^-k with sufficient decrease of J (0 if none).

        ``trial`` (Z, R, W) arrives with Z at the full step; it leaves with the Newton
        terms at each gene's accepted step (the current ones, copied, where the step is
        0). ``sample`` as in :meth:`_evaluate`. Returns the steps, and J and the mean −ℓ
        there. ``B_full`` is B + D, the full step.
        """
        Zc, Rc, Wc = current
        Zt, Rt, Wt = trial
        n_genes = B.shape[0]
        step = np.ones(n_genes)
        F_new, L_new = self._evaluate(Y, Zt, B_full, lam, Rt, Wt, sample, theta)
        todo = np.arange(n_genes)
        for _ in range(MAX_HALVINGS):
            ok = sufficient_decrease(F_new[todo], F[todo], delta[todo], step[todo], ARMIJO, EPS)
            todo = todo[~ok]
            if todo.size == 0:
                return step, F_new, L_new
            step[todo] *= 0.5
            s = step[todo]
            Zs = Zc[todo] + s[:, None] * (D[todo] @ self.design.XtT)
            Rs, Ws = np.empty_like(Zs), np.empty_like(Zs)
            F_new[todo], L_new[todo] = self._evaluate(
                Y[todo],
                Zs,
                B[todo] + s[:, None] * D[todo],
                lam[todo],
                Rs,
                Ws,
                None if sample is None else (sample[0][todo], sample[1][todo]),
                None if theta is None else theta[todo],
            )
            Zt[todo], Rt[todo], Wt[todo] = Zs, Rs, Ws
        step[todo] = 0.0
        Zt[todo], Rt[todo], Wt[todo] = Zc[todo], Rc[todo], Wc[todo]
        return step, F_new, L_new
