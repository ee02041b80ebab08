"""Centring and scaling of the design inside the Newton model (the problem is unchanged).

Real designs mix units (pixel coordinates ~1e4, shares in [0, 1], years ~2e3 beside an
intercept): the Hessian X̃ᵀWX̃ of such a design can have a condition number beyond 1e16,
and coordinate descent or a Cholesky solve on it then goes nowhere. Writing the
coefficients as b = T·b' with

    β_j = β'_j / s_j,    β0 = β0' − Σ_j c_j·β'_j / s_j

(c_j the column means when there is an intercept, s_j the columns' spread) makes the
model's design X̃' = X̃·T = [1, (X − c)/s] — centred and scaled columns — while J is the
same function. Gradients, Hessians and L1 weights move to b' by T; the L1 penalty
Σλα|β_j| becomes Σ(λα/s_j)|β'_j|. KKT residuals are always computed in the original b.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class DesignScaling:
    """The reparametrisation b = T·b' for a design X (dense or sparse) of shape (n, p).

    Arrays of coefficients, gradients and L1 weights are (G, m): one row per response,
    m = p + 1 with the intercept first when ``fit_intercept``, else m = p.
    """

    def __init__(self, X, fit_intercept: bool):
        n = X.shape[0]
        self.fit_intercept = fit_intercept
        if sp.issparse(X):
            mean = np.asarray(X.mean(axis=0)).ravel()
            sq = np.asarray(X.multiply(X).mean(axis=0)).ravel()
        else:
            mean = X.mean(axis=0)
            sq = np.einsum("ij,ij->j", X, X) / n  # one pass, no n × p temporary
        self.center = mean if fit_intercept else np.zeros(X.shape[1])
        var = np.maximum(sq - 2 * self.center * mean + self.center**2, 0.0)
        if not sp.issparse(X):
            # Where the one-pass formula cancels (|mean| ≫ spread), take two passes.
            cancels = var <= 1e-8 * sq
            if cancels.any():
                cols = X[:, cancels] - self.center[cancels]
                var[cancels] = np.einsum("ij,ij->j", cols, cols) / n
        # A constant column beside the intercept is the intercept again: centred by its own
        # value (not its mean, which rounds) it is exactly 0 in the model, which then never
        # moves its coefficient; an inexact centre leaves a 1e-17 column whose Newton steps
        # (H_jj ≈ 1e-34) run off along the singular direction.
        candidates = (var <= 1e-8 * sq) & fit_intercept  # no spread, to rounding
        self.constant = self._constant_columns(X, candidates)
        if self.constant.any():
            self.center = self.center.copy()
            self.center[self.constant] = self._first_values(X, self.constant)
            var[self.constant] = 0.0
        spread = np.sqrt(var)
        self.scale = np.where(spread > 0, spread, 1.0)  # a constant column is left as is
        self._standard = (self.center, self.scale)
        # A design that is already centred enough and evenly scaled is used as it is: the
        # transform would only cost a copy of X.
        ratio = np.abs(self.center) / self.scale
        self.identity = bool(
            ratio.max(initial=0.0) <= 1.0
            and self.scale.max(initial=1.0) <= 100 * self.scale.min(initial=1.0)
        )
        if self.identity:
            self.center, self.scale = np.zeros_like(self.center), np.ones_like(self.scale)

    @staticmethod
    def _constant_columns(X, candidates: np.ndarray) -> np.ndarray:
        """Which of the ``candidates`` (columns of no spread to rounding) hold one value."""
        constant = np.zeros(X.shape[1], dtype=bool)
        at = np.flatnonzero(candidates)
        if at.size:
            cols = X[:, at]
            high, low = cols.max(axis=0), cols.min(axis=0)
            if sp.issparse(X):
                high, low = high.toarray().ravel(), low.toarray().ravel()
            constant[at] = np.asarray(high == low).ravel()
        return constant

    @staticmethod
    def _first_values(X, columns: np.ndarray) -> np.ndarray:
        """Row 0 of the given columns (their value, for constant columns)."""
        row = X[[0]][:, np.flatnonzero(columns)]
        return np.asarray(row.toarray() if sp.issparse(row) else row, dtype=float).ravel()

    def standardising(self) -> DesignScaling:
        """The transform to centred, unit-spread columns, even where this one is the identity.

        Newton's model does not mind a factor of 100 between columns, but a first-order
        method (the L-BFGS phase) does; it only ever transforms vectors, never X.
        """
        full = object.__new__(DesignScaling)
        full.fit_intercept, full.identity, full.constant = self.fit_intercept, False, self.constant
        full.center, full.scale = self._standard
        full._standard = self._standard
        return full

    def columns(self, keep: np.ndarray) -> DesignScaling:
        """The same transform for the columns ``keep`` of the design (a screened path)."""
        sub = object.__new__(DesignScaling)
        sub.fit_intercept, sub.identity = self.fit_intercept, self.identity
        sub.constant = self.constant[keep]
        sub.center, sub.scale = self.center[keep], self.scale[keep]
        sub._standard = (self._standard[0][keep], self._standard[1][keep])
        return sub

    def design(self, X: np.ndarray) -> np.ndarray:
        """(X − c)/s for a dense X (X itself when the transform is the identity)."""
        return X if self.identity else (X - self.center) / self.scale

    def _split(self, B):
        return (B[:, 0], B[:, 1:]) if self.fit_intercept else (None, B)

    @staticmethod
    def _join(first: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """[first, rest] as one (G, m) array (np.column_stack without its generality)."""
        out = np.empty((rest.shape[0], rest.shape[1] + 1))
        out[:, 0] = first
        out[:, 1:] = rest
        return out

    def to_scaled(self, B: np.ndarray) -> np.ndarray:
        """B' = T⁻¹b: β' = s·β, β0' = β0 + c·β."""
        b0, beta = self._split(B)
        beta_s = beta * self.scale
        if not self.fit_intercept:
            return beta_s
        return self._join(b0 + beta @ self.center, beta_s)

    def from_scaled(self, B: np.ndarray) -> np.ndarray:
        """B = T·b': β = β'/s, β0 = β0' − c·β."""
        b0, beta_s = self._split(B)
        beta = beta_s / self.scale
        if not self.fit_intercept:
            return beta
        return self._join(b0 - beta @ self.center, beta)

    def gradient_to_scaled(self, Gr: np.ndarray) -> np.ndarray:
        """G' = Tᵀg: g'_0 = g_0, g'_β = (g_β − c·g_0)/s."""
        g0, g = self._split(Gr)
        if not self.fit_intercept:
            return g / self.scale
        return self._join(g0, (g - np.outer(g0, self.center)) / self.scale)

    def hessian_to_scaled(self, H: np.ndarray) -> np.ndarray:
        """TᵀHT for H of shape (G, m, m) (used where the scaled design is not formed)."""
        T = np.diag(np.r_[1.0, 1.0 / self.scale]) if self.fit_intercept else np.diag(1 / self.scale)
        if self.fit_intercept:
            T[0, 1:] = -self.center / self.scale
        H = T.T @ H @ T
        if not self.identity and self.constant.any():
            # exactly 0 for a centred constant column (the transform leaves rounding there)
            at = 1 + np.flatnonzero(self.constant)
            H[:, at, :] = 0.0
            H[:, :, at] = 0.0
        return H

    def transform_matrix(self) -> np.ndarray:
        """T (m, m) with b = T·b' (intercept first when fitted)."""
        if not self.fit_intercept:
            return np.diag(1.0 / self.scale)
        m = self.scale.size + 1
        T = np.eye(m)
        T[1:, 1:] = np.diag(1.0 / self.scale)
        T[0, 1:] = -self.center / self.scale
        return T

    def ridge_gram(self, gram: np.ndarray) -> np.ndarray:
        """ΓᵀΓ for β' (the ridge term's Hessian block in the scaled coordinates): S⁻¹ΓᵀΓS⁻¹."""
        return gram / np.outer(self.scale, self.scale)

    def l1_weights(self, l1: np.ndarray) -> np.ndarray:
        """Per-coordinate L1 weights for b' (0 for the intercept): λα/s_j.

        ``l1`` is (G,) (one λα per response) or (G, p) (per coordinate: penalty factors).
        """
        l1 = np.asarray(l1, dtype=float)
        W = (l1[:, None] if l1.ndim == 1 else l1) / self.scale[None, :]
        return self._join(np.zeros(W.shape[0]), W) if self.fit_intercept else W


def scaled_design(problem) -> tuple[DesignScaling, np.ndarray | None]:
    """A problem's design scaling and scaled copy (None for sparse X), kept in ``problem.cache``.

    Built once and shared by every λ of a path (problems that differ only in the penalty
    share the cache).
    """
    cache = problem.cache
    if "scaling" not in cache:
        X = problem.X
        cache["scaling"] = DesignScaling(X, problem.fit_intercept)
        cache["X_scaled"] = None if sp.issparse(X) else cache["scaling"].design(X)
    return cache["scaling"], cache["X_scaled"]
