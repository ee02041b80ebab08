"""Standard errors, Wald tests and false discovery rates of unpenalised fits.

R's ``summary.glm`` conventions, which MASS's ``summary.negbin`` follows:

- the covariance of b = (β0, β) is φ·(X̃ᵀWX̃)⁻¹ with the Fisher weights
  W_i = m_i·μ'(z_i)²/V(μ_i) at the optimum (prior weights m; for the negative binomial
  V = μ + μ²/θ, θ taken as known — the β block, as MASS reports it);
- φ = 1 for the Poisson and negative-binomial families (``Family.fixed_dispersion``), with z
  statistics and normal p-values; for the others (Gaussian, gamma) φ is estimated by Pearson's
  χ²/df = Σ m_i(y_i − μ_i)²/V(μ_i) / (n − rank), with t statistics on those df;
- ``robust=True`` gives the HC0 sandwich A⁻¹BA⁻¹, A = X̃ᵀWX̃, B = Σ_i m_i² s_i² x̃_i x̃_iᵀ
  with s_i = ∂ℓ_i/∂z_i (no φ: the sandwich does not rely on the variance function), and
  normal p-values.

Penalised coefficients get no standard errors: the lasso's and elastic net's estimates are
not asymptotically normal around the truth, and a refit on the predictors a penalty chose
from the same data is anti-conservative. Predictors left unpenalised (penalty factor 0)
are reported from the information of the fitted model restricted to them and the
intercept, conditional on the penalised coefficients (document when used).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from scipy import stats

from ._families import Family

__all__ = [
    "benjamini_hochberg",
    "design_gram",
    "estimated_dispersion",
    "fisher_weights",
    "pearson_dispersion",
    "testable_coordinates",
    "wald_table",
]


def fisher_weights(family: Family, Z: np.ndarray, M: np.ndarray | None = None) -> np.ndarray:
    """W = m·μ'(z)²/V(μ): the expected information per sample (IRLS weights), shape of Z."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        d1 = family.mean_deriv(Z)
        W = d1 * d1 * family.fisher_dmu2(family.mean(Z))
    W = np.where(np.isfinite(W), W, 0.0)
    return W if M is None else np.where(M != 0, M * W, 0.0)


def score_residuals(family: Family, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """Score residuals s = ∂ℓ/∂z per sample (minus stglm's working residual)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return -family.residual(Y, Z)


def design_gram(X, fit_intercept: bool) -> Callable[[np.ndarray], np.ndarray]:
    """gram(W) = X̃ᵀdiag(w)X̃ for each row w of W (k, n), X̃ = [1, X] (dense or sparse X)."""

    def gram(W: np.ndarray) -> np.ndarray:
        out = []
        for w in np.atleast_2d(W):
            if sp.issparse(X):
                H = np.asarray((X.T @ X.multiply(w[:, None]).tocsr()).toarray())
            else:
                H = X.T @ (X * w[:, None])
            if fit_intercept:
                col = np.asarray(X.T @ w).reshape(-1)
                H = np.block([[np.array([[w.sum()]]), col[None, :]], [col[:, None], H]])
            out.append(H)
        return np.array(out)

    return gram


def pearson_dispersion(
    family: Family, Y: np.ndarray, Mu: np.ndarray, M: np.ndarray | None, df_resid: np.ndarray
) -> np.ndarray:
    """Pearson's χ²/df per column of Y (n, G): Σ m(y − μ)²/V(μ) / df (NaN where df ≤ 0)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        chi2 = (Y - Mu) ** 2 * family.fisher_dmu2(Mu)
        chi2 = np.where(np.isfinite(chi2), chi2, 0.0)
    chi2 = chi2 if M is None else np.where(M != 0, M * chi2, 0.0)
    df = np.asarray(df_resid, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(df > 0, chi2.sum(axis=0) / df, np.nan)


def testable_coordinates(
    n_features: int, fit_intercept: bool, unpenalised_fit: bool, penalty_factor=None
) -> np.ndarray | None:
    """Positions in b = (β0, β) with valid standard errors; None when there are none.

    Every coordinate of an unpenalised fit (λ = 0); else the intercept and the predictors
    with penalty factor 0 (conditional on the penalised ones).
    """
    if unpenalised_fit:
        cols = np.arange(n_features)
    elif penalty_factor is not None and np.any(np.asarray(penalty_factor) == 0):
        cols = np.flatnonzero(np.asarray(penalty_factor) == 0)
    else:
        return None
    return np.r_[[0] if fit_intercept else [], cols + int(fit_intercept)].astype(int)


def estimated_dispersion(
    family: Family, Y: np.ndarray, Mu: np.ndarray, M: np.ndarray | None, n_eff, n_coef: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(Pearson φ, residual df) per column of Y, or (None, None) for a fixed dispersion.

    R's summary.glm: df = observations with weight > 0 − coefficients.
    """
    if family.fixed_dispersion:
        return None, None
    df = np.full(Y.shape[1], float(n_eff - n_coef))
    return pearson_dispersion(family, Y, Mu, M, df), df


def invert_information(H: np.ndarray) -> np.ndarray:
    """(G, m, m) inverses of information matrices; NaN where one is not positive definite.

    One stacked Cholesky factorisation for all genes; only when some matrix is singular
    are the genes factorised one by one, to find which.
    """
    H = np.asarray(H, dtype=float)
    try:
        inv_c = np.linalg.inv(np.linalg.cholesky(H))
        return np.swapaxes(inv_c, 1, 2) @ inv_c
    except np.linalg.LinAlgError:
        pass
    out = np.full_like(H, np.nan)
    for k in range(H.shape[0]):  # rare: a gene whose information is singular
        try:
            inv_c = np.linalg.inv(np.linalg.cholesky(H[k]))
        except np.linalg.LinAlgError:
            continue
        out[k] = inv_c.T @ inv_c
    return out


def wald_table(coef: np.ndarray, se: np.ndarray, df: np.ndarray | None, level: float = 0.95):
    """(z or t, two-sided p, lower, upper) for coefficients ``coef`` and errors ``se``.

    ``df`` None gives normal quantities (z), else Student t with ``df`` (per row,
    broadcasting over columns) — R's summary.glm.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = coef / se
    q = 0.5 + level / 2
    if df is None:
        p = 2 * stats.norm.sf(np.abs(stat))
        crit = stats.norm.ppf(q)
    else:
        df = np.asarray(df, dtype=float)
        df = df[..., None] if np.ndim(df) and np.ndim(coef) > np.ndim(df) else df
        p = 2 * stats.t.sf(np.abs(stat), df)
        crit = stats.t.ppf(q, df)
    return stat, p, coef - crit * se, coef + crit * se


def benjamini_hochberg(pvalues: np.ndarray, axis: int = 0) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (R's ``p.adjust(method="BH")``) along ``axis``.

    NaN p-values (untestable genes) are left out of the adjustment and stay NaN.
    """
    P = np.moveaxis(np.asarray(pvalues, dtype=float), axis, -1)
    out = np.full_like(P, np.nan)
    flat_p = P.reshape(-1, P.shape[-1])
    flat_q = out.reshape(-1, P.shape[-1])
    for row_p, row_q in zip(flat_p, flat_q, strict=True):
        ok = np.flatnonzero(np.isfinite(row_p))
        m = ok.size
        if m == 0:
            continue
        order = ok[np.argsort(row_p[ok], kind="mergesort")]
        ranked = row_p[order] * m / np.arange(1, m + 1)
        q = np.minimum.accumulate(ranked[::-1])[::-1]
        row_q[order] = np.minimum(q, 1.0)
    return np.moveaxis(out, -1, axis)
