"""The null model (β = 0, intercept at link(ȳ)): where paths start, λ_max, tolerance scales.

Functions take responses as columns of Y (n, G) so one gene and many genes share them,
and optional sample weights M (n, G): a 0/1 column selects a training fold.
"""

from __future__ import annotations

import numpy as np

from .._families import Family

#: The mean assumed for a count response without counts: μ → 0 from above.
EMPTY_COUNT_MEAN = 1e-10


def _mean(A: np.ndarray, M: np.ndarray | None) -> np.ndarray:
    """Column means of A, weighted by M when given."""
    return A.mean(axis=0) if M is None else (M * A).sum(axis=0) / M.sum(axis=0)


def null_intercepts(
    family: Family, Y: np.ndarray, fit_intercept: bool, M: np.ndarray | None = None
) -> np.ndarray:
    """link(ȳ_g) for each column (0 without intercept): the optimal intercept at β = 0.

    At β = 0 the intercept's stationarity gives μ = ȳ (the weighted mean) for every
    family here.
    """
    if not fit_intercept:
        return np.zeros(Y.shape[1])
    y_bar = _mean(Y, M)
    if family.name != "gaussian":
        y_bar = np.maximum(y_bar, EMPTY_COUNT_MEAN)
    return np.asarray(family.link(y_bar), dtype=float)


def _null_residuals(family: Family, Y: np.ndarray, fit_intercept: bool, M=None) -> np.ndarray:
    """∂(−ℓ)/∂z at the null model, times the sample weights."""
    z0 = null_intercepts(family, Y, fit_intercept, M)
    R = family.residual(Y, np.broadcast_to(z0, Y.shape))
    return R if M is None else M * R


def null_gradients(family: Family, X, Y: np.ndarray, fit_intercept: bool) -> np.ndarray:
    """∇_β of the mean negative log-likelihood at each column's null model; shape (G, p)."""
    R = _null_residuals(family, Y, fit_intercept)
    return np.asarray(X.T @ R, dtype=float).T / Y.shape[0]


def tolerance_scales(
    family: Family, X, Y: np.ndarray, fit_intercept: bool, X_abs=None, M=None
) -> np.ndarray:
    """The size of the gradient's terms at the null model: max_j (1/n)·Σ_i |x̃_ij|·|r_i|.

    ``tol`` is relative to this, so the KKT stopping rule means the same whatever the units
    of X and y — for Poisson means of 1e-6 as for 1e6. x̃ includes the intercept's column of
    ones. It is 0 only when the null model fits exactly (then so is the KKT residual).
    ``X_abs`` is |X| when the caller keeps it (a design shared by many calls); the means
    are weighted by M when given.
    """
    R = np.abs(_null_residuals(family, Y, fit_intercept, M))
    total = Y.shape[0] if M is None else M.sum(axis=0)
    X_abs = abs(X) if X_abs is None else X_abs
    terms = np.asarray(X_abs.T @ R, dtype=float) / total  # (p, G)
    scale = terms.max(axis=0, initial=0.0)
    if fit_intercept:
        scale = np.maximum(scale, R.sum(axis=0) / total)
    return scale
