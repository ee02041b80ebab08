"""Proximal Newton for many responses that share one design: all genes' Hessians at once.

For a design X̃ = [1, X] (n × m) shared by G genes, every gene's Gram matrix
X̃ᵀdiag(w_g)X̃ comes from one matrix product W·Z, where Z (n × m(m+1)/2) holds the
row-wise products of X̃'s column pairs and W (G × n) the genes' Newton weights.
Gradients, line searches and KKT checks are vectorised over genes; only the small
per-gene coordinate descent runs in a compiled loop. Genes leave the batch as they
converge. :class:`BatchedNewtonCD` is the design backend of these genes for the Newton
iteration of :mod:`stglm._solvers._newton`, the one single problems run too.

The working arrays are gene-major (G × n, one contiguous row per gene), allocated once
per solver and double-buffered: a step is accepted by swapping buffers, and genes that
leave are replaced by moving only the rows of the last ones into their places
(:class:`stglm._solvers._active_set.ActiveSet`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .._families import Family
from .._penalties import ElasticNet
from ._active_set import ActiveSet
from ._batched_kernels import (
    finish_gradients,
    move_points,
    pair_products,
    penalties,
    unpack_hessians,
)
from ._family_kernels import nll_and_terms
from ._inner import SharedGramCD
from ._newton import ProximalNewton
from ._null_model import null_intercepts, tolerance_scales
from ._options import DEFAULT_OPTIONS, NewtonOptions
from ._scaling import DesignScaling

#: Bytes of one tile of the pair products when Z is not kept whole: a few hundred to a few
#: thousand rows, small enough to stay in a core's cache while W's rows stream past.
PAIR_TILE_BYTES = 2 * 2**20


#: Rows per block of a float32 product (its partial sums are added in float64).
FLOAT32_BLOCK_ROWS = 65_536


def tile_rows(n_pairs: int) -> int:
    """Rows of Z per tile (:data:`PAIR_TILE_BYTES`), at least 64."""
    return max(64, PAIR_TILE_BYTES // (8 * n_pairs))


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
    options : NewtonOptions, optional
        ``pair_budget()``: the largest pair-product matrix kept whole (the defaults when
        None).
    """

    def __init__(self, X: np.ndarray, fit_intercept: bool, options: NewtonOptions | None = None):
        X = np.asarray(X, dtype=np.float64)
        self.fit_intercept = fit_intercept
        self.options = DEFAULT_OPTIONS if options is None else options
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
        # Z whole when it fits the budget (in float32 where only that fits, if allowed);
        # else tiles of it, each rebuilt into one buffer per Hessian product (a tile stays
        # in cache while the weights stream past it).
        self.pair_dtype = self._dtype(self.options.pair_budget())
        whole = self.pair_dtype is not None
        self.pair_dtype = self.pair_dtype or np.dtype(np.float64)
        self.block = n if whole else tile_rows(self.rows.size)
        self.Z = self._pairs(slice(None)) if whole else None

    def _dtype(self, budget: int) -> np.dtype | None:
        """The dtype of Z kept whole within ``budget`` bytes (None: tiled, in float64)."""
        choice = self.options.pair_dtype
        values = self.n * self.rows.size
        if choice != "float32" and 8 * values <= budget:
            return np.dtype(np.float64)
        if choice != "float64" and 4 * values <= budget:
            return np.dtype(np.float32)
        return None

    @property
    def pair_layout(self) -> str:
        """How Z is held: "float64" or "float32" (whole), or "float64 tiles" (rebuilt)."""
        return str(self.pair_dtype) + ("" if self.Z is not None else " tiles")

    @property
    def pair_bytes(self) -> int:
        """Bytes of the whole pair-product matrix Z (n × m(m+1)/2, its dtype)."""
        return self.pair_dtype.itemsize * self.n * self.rows.size

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
        Z = np.empty((stop - start, self.rows.size), dtype=self.pair_dtype)
        pair_products(self._XtT_scaled, start, stop, Z)
        return Z

    def subset(self, index: np.ndarray) -> SharedDesign:
        """The design restricted to some samples (a training fold)."""
        X = self.X[index]
        return SharedDesign(X, self.fit_intercept, self.options)

    def hessians(
        self, W: np.ndarray, total: np.ndarray | None = None, exact: bool = False
    ) -> np.ndarray:
        """(1/n_g)·X̃'ᵀdiag(w_g)X̃' for each row w_g of W (G, n); shape (G, m, m).

        n_g is ``total[g]`` (the row's sum of sample weights), or n. A float32 Z gives
        Hessians to about 1e-6 relative (enough for Newton's directions: the stopping
        rule is the KKT residual's); ``exact`` asks for float64 products (the Fisher
        information of standard errors).
        """
        if self.Z is not None and self.Z.dtype == np.float32:
            packed = self._tiled_product(W) if exact else self._float32_product(W)
        elif self.Z is not None:
            # The same product in OpenBLAS's faster orientation: measured 1.2–1.5× apart
            # (W·Z for 6–128 genes and 231–300 pairs, Zᵀ·Wᵀ for 128 genes and 55 pairs).
            few_genes = W.shape[0] <= self.rows.size
            packed = W @ self.Z if few_genes else (self.Z.T @ W.T).T
        else:
            packed = self._tiled_product(W)
        total = np.full(W.shape[0], float(self.n)) if total is None else total
        return unpack_hessians(packed, total, self.rows, self.cols, self.m)

    def _float32_product(self, W: np.ndarray) -> np.ndarray:
        """W·Z (G, pairs) from a float32 Z: single precision a block of rows at a time.

        W is converted a block at a time (no float32 copy of it whole) and the blocks'
        products are summed in float64, so that rounding does not grow with n.
        """
        packed = np.zeros((W.shape[0], self.rows.size))
        step = FLOAT32_BLOCK_ROWS
        for start in range(0, self.n, step):
            stop = min(start + step, self.n)
            packed += W[:, start:stop].astype(np.float32) @ self.Z[start:stop]
        return packed

    def _tiled_product(self, W: np.ndarray) -> np.ndarray:
        """W·Z (G, pairs), Z built a tile at a time (:func:`tiled_pair_product`)."""
        block = self.block if self.Z is None else tile_rows(self.rows.size)  # float32 Z: exact
        return tiled_pair_product(self._XtT_scaled, W, block)


def tiled_pair_product(XT: np.ndarray, W: np.ndarray, block: int) -> np.ndarray:
    """W·Z (G, pairs) for Z the column-pair products of the design XT (m, n), in float64.

    Z is never held whole: it is built ``block`` rows at a time into one buffer (building a
    tile costs about a G-th of its product), and the buffers (tile, partial product) are
    allocated once per call, so that threads never share them. W is (G, n); the columns
    of the result are in ``np.triu_indices(m)`` order (:func:`unpack_hessians`).
    """
    m, n = XT.shape
    n_pairs = m * (m + 1) // 2
    packed = np.zeros((W.shape[0], n_pairs))
    part = np.empty_like(packed)
    tile = np.empty((min(block, n), n_pairs))
    for start in range(0, n, block):
        stop = min(start + block, n)
        Z = tile[: stop - start]
        pair_products(XT, start, stop, Z)
        np.matmul(W[:, start:stop], Z, out=part)
        packed += part
    return packed


class Workspace:
    """Flat float64 buffers that solvers view as their (G, n) gene-major arrays.

    Grown when a solve needs more, never shrunk: solvers that share one (solving one after
    another, never at once) allocate their working memory once, whatever their G and n.
    What a solve returns never points into it.
    """

    def __init__(self):
        self._buffers: list[np.ndarray] = []

    def arrays(self, n_arrays: int, n_genes: int, n: int) -> list[np.ndarray]:
        """``n_arrays`` C-contiguous (n_genes, n) views, one per buffer."""
        size = n_genes * n
        for i in range(n_arrays):
            if i == len(self._buffers):
                self._buffers.append(np.empty(size))
            elif self._buffers[i].size < size:
                self._buffers[i] = np.empty(size)
        return [buf[:size].reshape(n_genes, n) for buf in self._buffers[:n_arrays]]

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return sum(buf.nbytes for buf in self._buffers)


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

    ``terms`` are the Newton terms at the solutions (see :class:`NewtonTerms`), if kept;
    ``nll`` the mean −ℓ there (up to terms in y alone, as the solver evaluates it).
    """

    intercepts: np.ndarray
    coefs: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    kkt: np.ndarray
    terms: NewtonTerms | None
    nll: np.ndarray | None = None


class BatchedNewtonCD:
    """Minimise J for every column of Y at its own λ (shared α, Γ, family and design).

    The design backend of :class:`ProximalNewton` for these genes: one row per gene, its
    coefficients ``B`` (intercept first), λ, Σ sample weights, θ, last Hessian and
    gradient, and its gene-major buffers (responses, weights, the point's and the trial's
    linear predictors and Newton terms) in an :class:`ActiveSet`.

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
    options : NewtonOptions, optional
        ``stale_first``: a path's first step at each λ with the previous λ's last Hessian
        (the defaults when None).
    workspace : Workspace, optional
        Where the gene-major buffers live: solvers that run one after another (a thread's
        chunks, the folds of a cross-validation) may share one, so that its memory is
        allocated once (None: the solver's own).
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
        options: NewtonOptions | None = None,
        workspace: Workspace | None = None,
    ):
        self.family, self.design, self.alpha = family, design, float(alpha)
        self.workspace = Workspace() if workspace is None else workspace
        p = design.X.shape[1]
        self.penalty = ElasticNet(0.0, alpha, Tau, penalty_factor)
        self.gram = self.penalty.tikhonov_gram(p)
        self.factor = np.ones(p) if penalty_factor is None else self.penalty.penalty_factor
        self.max_iter, self.tol = max_iter, tol
        self.options = DEFAULT_OPTIONS if options is None else options
        self.gram_scaled = design.scaling.ridge_gram(self.gram)
        self.inner = SharedGramCD(
            design, self.alpha, self.factor, self.gram_scaled, self.options.stale_first
        )

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
        """``n_arrays`` (G, n) buffers from the solver's :class:`Workspace` (one per path)."""
        return self.workspace.arrays(n_arrays, n_genes, self.design.n)

    @staticmethod
    def _sample(active: ActiveSet, rows: np.ndarray | None = None):
        """The rows' (sample weights, their sums), or None without weights."""
        if active.M is None:
            return None
        if rows is None:
            return active.M, active.total
        return active.M[rows], active.total[rows]

    # -- the design backend of ProximalNewton -------------------------------------------------
    def gradient(self, active: ActiveSet) -> np.ndarray:
        """Every row's KKT residual; the gradients are kept (``active.Gr``) for the direction."""
        active.Gr, kkt = self._gradient(active.Rc, active.B, active.lam, active.total)
        return kkt

    def direction(self, active: ActiveSet, inner_tol: np.ndarray):
        """Every row's Newton step (:class:`SharedGramCD`): (predicted decreases, zero steps).

        The full step's predictors go straight into the trial buffer.
        """
        self.X_new, delta, at_minimum = self.inner.minimise(active, inner_tol)
        self.D = self.X_new - active.B
        np.matmul(self.D, self.design.XtT, out=active.Zt)
        active.Zt += active.Zc
        return delta, at_minimum

    def trial(self, active: ActiveSet, rows=None, step=None) -> np.ndarray:
        """J at every row's full step (rows None), or at B + t·D for ``rows`` at ``step``.

        The trial buffers keep each row's Newton terms there (and −ℓ, for the move).
        """
        if rows is None:
            F, self.L_new = self._evaluate(
                active.Y, active.Zt, self.X_new, active.lam, active.Rt, active.Wt,
                self._sample(active), active.theta,
            )  # fmt: skip
            return F
        s = step[:, None]
        Zs = active.Zc[rows] + s * (self.D[rows] @ self.design.XtT)
        Rs, Ws = np.empty_like(Zs), np.empty_like(Zs)
        F, self.L_new[rows] = self._evaluate(
            active.Y[rows], Zs, active.B[rows] + s * self.D[rows], active.lam[rows], Rs, Ws,
            self._sample(active, rows), None if active.theta is None else active.theta[rows],
        )  # fmt: skip
        active.Zt[rows], active.Rt[rows], active.Wt[rows] = Zs, Rs, Ws
        return F

    def move(self, active: ActiveSet, step: np.ndarray) -> None:
        """Rows with a step take their trial point; the trial buffers become the current ones.

        Rows without a step keep their terms: they are copied into the trial rows first.
        """
        move_points(
            step, self.D, active.B, self.X_new, active.L, self.L_new,
            (active.Zc, active.Rc, active.Wc), (active.Zt, active.Rt, active.Wt),
        )  # fmt: skip
        active.Zc, active.Zt = active.Zt, active.Zc
        active.Rc, active.Rt = active.Rt, active.Rc
        active.Wc, active.Wt = active.Wt, active.Wc

    # -- the solve -------------------------------------------------------------------------------
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
        d = self.design
        n_genes = Y.shape[1]
        if scale is None:
            scale = tolerance_scales(self.family, d.X, Y, d.fit_intercept, d.X_abs, weights, offset)
        active = self._rows(Y, lam, self._start(Y, B, weights, offset), weights, theta, terms)
        B_out = np.empty_like(active.B)
        active.output("B", B_out)
        nll_out = np.full(n_genes, np.nan)
        active.output("L", nll_out)
        final = self._final_terms(active, terms, keep_terms)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            F = self._first_evaluation(active, terms, offset)
            newton = ProximalNewton(self, max_iter=self.max_iter)
            status = newton.setup(active, F, self.tol * scale)
            newton.solve(active)
        self.D = self.X_new = self.L_new = None  # the last step's work, not kept past the solve
        m_beta = slice(1, None) if d.fit_intercept else slice(None)
        intercepts = B_out[:, 0].copy() if d.fit_intercept else np.zeros(n_genes)
        return BatchResult(
            intercepts, B_out[:, m_beta].copy(), status.n_iter, status.converged, status.kkt,
            final, nll_out,
        )  # fmt: skip

    def _start(self, Y, B, weights, offset) -> np.ndarray:
        """The starting coefficients (G, m): a copy of B, or each gene's null model."""
        if B is not None:
            return np.array(B, dtype=float)
        d = self.design
        start = np.zeros((Y.shape[1], d.m))
        if d.fit_intercept:
            start[:, 0] = null_intercepts(self.family, Y, True, weights, offset)
        return start

    def _rows(self, Y, lam, start, weights, theta, terms) -> ActiveSet:
        """The batch's rows: per-gene arrays and the gene-major buffers (solver workspace)."""
        d = self.design
        n_genes = Y.shape[1]
        weighted = weights is not None
        ws = self._workspace(n_genes, 8 if weighted else 7)
        Zc, Rc, Wc, Zt, Rt, Wt, Yw = (a[:n_genes] for a in ws[:7])
        Mw = ws[7][:n_genes] if weighted else None
        np.copyto(Yw, Y.T)
        if weighted:
            np.copyto(Mw, weights.T)
        active = ActiveSet(n_genes)
        active.add(
            B=start,
            lam=np.full(n_genes, lam, dtype=float),
            total=np.full(n_genes, float(d.n)) if Mw is None else Mw.sum(axis=1),
            theta=None if theta is None else np.array(theta, dtype=float),
            # The previous λ's last Hessians serve the first step at this λ (stale_first).
            H=None if terms is None or terms.H is None else terms.H.copy(),
            Gr=None,
            L=None,
        )
        active.add_buffers(Y=Yw, M=Mw, Zc=Zc, Rc=Rc, Wc=Wc)
        active.add_scratch(Zt=Zt, Rt=Rt, Wt=Wt)
        return active

    def _final_terms(self, active: ActiveSet, terms, keep_terms: bool) -> NewtonTerms | None:
        """The Newton terms returned at the solutions (``terms``' own arrays when given)."""
        final = terms
        if final is None and keep_terms:
            Z = active.Zc
            final = NewtonTerms(
                np.empty_like(Z), np.empty_like(Z), np.empty_like(Z), np.empty(active.k)
            )
        if final is None:
            return None
        if final.H is None:
            final.H = np.full((active.k, self.design.m, self.design.m), np.nan)  # NaN: no step
        active.output_buffers(("Zc", "Rc", "Wc"), (final.Z, final.R, final.W))
        active.output("L", final.nll)
        active.output("H", final.H)
        return final

    def _first_evaluation(self, active: ActiveSet, terms, offset) -> np.ndarray:
        """J at the start, with its terms in the current buffers (copied from ``terms``)."""
        if terms is None:
            np.matmul(active.B, self.design.XtT, out=active.Zc)
            if offset is not None:
                active.Zc += offset.T if offset.ndim == 2 else offset  # then carried by every step
            F, active.L = self._evaluate(
                active.Y, active.Zc, active.B, active.lam, active.Rc, active.Wc,
                self._sample(active), active.theta,
            )  # fmt: skip
            return F
        np.copyto(active.Zc, terms.Z)
        np.copyto(active.Rc, terms.R)
        np.copyto(active.Wc, terms.W)
        active.L = terms.nll.copy()
        return active.L + self._penalty(active.B, active.lam)
