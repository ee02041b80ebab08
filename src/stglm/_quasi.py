"""glmGamPoi's quasi-likelihood F test for negative-binomial fits, vectorised over genes.

The quasi-likelihood (QL) test of glmGamPoi's ``test_de`` (Ahlmann-Eltze & Huber 2021,
version 1.10 as shipped in Debian 12), step by step (R function in brackets):

1. Every gene's overdispersion α_g = 1/θ_g is estimated (Cox–Reid) in the full model, and the
   gene's mean m_g = mean over samples of its fitted μ.
2. The **dispersion trend** α̂(m): a running weighted median of α_g over the genes ordered by
   m_g, in windows of ``npoints`` genes with normal weights on ±3 sd
   (``loc_median_fit``; :func:`dispersion_trend`).
3. Both models are fitted again with θ fixed at the trend, 1/α̂(m_g), and the QL dispersion of
   the gene is how much more variable it is than the trend says, at its mean:
   φ_g = (1 + m_g·α_g) / (1 + m_g·α̂(m_g))  (``overdispersion_shrinkage``; :func:`ql_dispersion`).
4. **Empirical-Bayes shrinkage** (``variance_prior``, glmGamPoi's maximum-likelihood version of
   limma's ``squeezeVar``/``fitFDist``): φ_g/φ0_g ~ F(d, d0) with d the residual df; the prior
   φ0 (a natural cubic spline in log m with knots at 1/3 and 2/3 of the range, or a constant)
   and the prior df d0 are fitted by maximum likelihood over the genes, and
   φ̃_g = (d0·φ0_g + d·φ_g)/(d0 + d) (:func:`shrink_ql`).
5. F_g = (D_reduced − D_full)/(df_test·φ̃_g) on (df_test, d0 + d) degrees of freedom, the
   deviances D at the trended θ for both models (:func:`ql_f_test`).

glmGamPoi fits the prior with Nelder–Mead at R's default tolerance; here the same likelihood is
maximised to its optimum (BFGS with exact gradients), so shrunken dispersions differ from
glmGamPoi's by the distance of its Nelder–Mead stop from the optimum (about 1e-5 relative on
the Visium genes; ``tests/references/inference_ql.R`` stores both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import optimize, special, stats

__all__ = [
    "QLShrinkage",
    "dispersion_trend",
    "overdispersion_shrinkage",
    "ql_dispersion",
    "ql_f_test",
    "shrink_ql",
]

#: Genes with a mean at or below this do not enter the prior's abundance trend (glmGamPoi).
MIN_TREND_MEAN = 1e-8
#: Upper bound of the prior df: beyond it the shrunken value equals the prior to ~d/1e10.
MAX_DF_PRIOR = 1e10
#: Windows of the running median evaluated at once (bounds memory to ~this many values).
_WINDOW_BLOCK = 1 << 22


@dataclass
class QLShrinkage:
    """What :func:`overdispersion_shrinkage` returns (glmGamPoi's names in brackets).

    Attributes
    ----------
    dispersion_trend : ndarray of shape (G,)
        The trended overdispersion α̂(m_g) (``dispersion_trend``): refit both models at
        θ = 1/α̂.
    ql_disp_estimate : ndarray of shape (G,)
        Every gene's QL dispersion φ_g (``ql_disp_estimate``).
    ql_disp_trend : ndarray of shape (G,)
        The prior φ0_g (``ql_disp_trend``; NaN where φ_g is NaN).
    ql_disp_shrunken : ndarray of shape (G,)
        The shrunken φ̃_g (``ql_disp_shrunken``), the F statistic's denominator.
    ql_df0 : float
        The prior df d0 (``ql_df0``); the F test's denominator df is d0 + df_resid.
    """

    dispersion_trend: np.ndarray
    ql_disp_estimate: np.ndarray
    ql_disp_trend: np.ndarray
    ql_disp_shrunken: np.ndarray
    ql_df0: float


def _weighted_medians(W: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """matrixStats::weightedMedian(x, w, interpolate=FALSE) of every row of W (ties: weighted).

    The first sorted value where the cumulative normalised weight exceeds 1/2; where it equals
    1/2 exactly, the weight-average of that value and the next (matrixStats' "weighted" ties).
    """
    w = weights / np.cumsum(weights)[-1]  # the C code's sequential total
    order = np.argsort(W, axis=1)  # ties: any order gives the same value
    xs = np.take_along_axis(W, order, axis=1)
    cum = np.cumsum(w[order], axis=1)
    half = np.argmax(cum > 0.5, axis=1)
    rows = np.arange(W.shape[0])
    res = xs[rows, half]
    inner = half > 0
    wlow = np.where(inner, cum[rows, np.maximum(half - 1, 0)], 0.0)
    tie = inner & ~(1.0 - wlow > 0.5)
    prev = xs[rows, np.maximum(half - 1, 0)]
    return np.where(tie, wlow * prev + (1.0 - wlow) * res, res)


def _interpolated_weighted_median(x: np.ndarray, weights: np.ndarray) -> float:
    """matrixStats::weightedMedian(x, w) with its default ``interpolate=TRUE``.

    Each sorted value sits at the middle of its weight's step of the cumulative normalised
    weight; the median interpolates linearly where that curve reaches 1/2.
    """
    order = np.argsort(x, kind="stable")
    xs = x[order]
    w = weights[order] / np.cumsum(weights)[-1]
    mid = np.cumsum(w) - w / 2
    half = int(np.argmax(mid >= 0.5)) if np.any(mid >= 0.5) else xs.size
    if half == 0 or half >= xs.size:
        return float(xs[min(half, xs.size - 1)])
    dy = 0.5 - mid[half]
    return float(xs[half] + dy / (mid[half] - mid[half - 1]) * (xs[half] - xs[half - 1]))


def dispersion_trend(
    overdispersion: np.ndarray, mean: np.ndarray, npoints: float | None = None
) -> np.ndarray:
    """GlmGamPoi's trend of the overdispersion in the mean: a running weighted median.

    The genes are ordered by ``mean``; each gene's trend is the weighted median of the
    ``npoints`` overdispersions centred on it (weights: the normal density at ``npoints``
    equally spaced points on [−3, 3]); the first and last half-windows take the value of the
    nearest full window. With fewer genes than the window, every gene gets one weighted median
    of all (weights in the genes' given order, and interpolated, as glmGamPoi's
    ``loc_median_fit`` does).

    Parameters
    ----------
    overdispersion : ndarray of shape (G,)
        α_g = 1/θ_g (0 for Poisson genes); NaN genes are left out and get NaN.
    mean : ndarray of shape (G,)
        The genes' mean fitted μ; NaN genes are left out.
    npoints : float, optional
        Window width (genes). Default: glm_gp's ``max(0.1·G, 100)``, G counting every gene.

    Returns
    -------
    ndarray of shape (G,)
        α̂(m_g).
    """
    a = np.asarray(overdispersion, dtype=float)
    m = np.asarray(mean, dtype=float)
    if a.shape != m.shape or a.ndim != 1:
        raise ValueError("overdispersion and mean must be 1-d arrays of the same length.")
    out = np.full(a.shape, np.nan)
    ok = np.isfinite(a) & np.isfinite(m)
    x, y = m[ok], a[ok]
    n = x.size
    if n == 0:
        return out
    if npoints is None:
        npoints = max(0.1 * a.size, 100.0)
    npoints = min(float(n), max(1.0, float(npoints)))
    half = int(np.floor(npoints / 2))
    start, end = half, n - half - 1  # 0-based centre of the first and last full window
    if end < start:
        w = stats.norm.pdf(np.linspace(-3, 3, n))
        out[ok] = _interpolated_weighted_median(y, w)
        return out
    weights = stats.norm.pdf(np.linspace(-3, 3, 2 * half + 1))
    order = np.argsort(x, kind="stable")
    windows = sliding_window_view(y[order], 2 * half + 1)
    block = max(1, _WINDOW_BLOCK // (2 * half + 1))
    centre = np.concatenate(
        [_weighted_medians(windows[i : i + block], weights) for i in range(0, len(windows), block)]
    )
    res = np.empty(n)
    res[start : end + 1] = centre
    res[:start] = centre[0]
    res[end + 1 :] = centre[-1]
    trend = np.empty(n)
    trend[order] = res
    out[ok] = trend
    return out


def ql_dispersion(overdispersion: np.ndarray, trend: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """QL dispersion of every gene: (1 + m·α)/(1 + m·α̂), glmGamPoi's ``ql_disp_estimate``.

    The NB variance μ + αμ² at the gene's mean, relative to the variance with the trended
    overdispersion α̂ its model is refitted with.

    Parameters
    ----------
    overdispersion, trend, mean : ndarray of shape (G,)
        α_g, α̂(m_g) and m_g.

    Returns
    -------
    ndarray of shape (G,)
    """
    m = np.asarray(mean, dtype=float)
    with np.errstate(invalid="ignore"):
        return (1.0 + m * np.asarray(overdispersion, float)) / (1.0 + m * np.asarray(trend, float))


def _f_loglik(s, logv, d1, logd2, grad: bool):
    """Σ [log f_F(s/v; d1, d2) − log v] and its gradient in (log v (per gene), log d2)."""
    d2 = np.exp(logd2)
    x = s * np.exp(-logv)
    q = d1 * x / d2
    lq = np.log1p(q)
    ll = (
        0.5 * d1 * np.log(d1 / d2)
        + (0.5 * d1 - 1.0) * np.log(x)
        - 0.5 * (d1 + d2) * lq
        - special.betaln(0.5 * d1, 0.5 * d2)
        - logv
    )
    if not grad:
        return ll.sum()
    r = q / (1.0 + q)
    g_logv = -0.5 * d1 + 0.5 * (d1 + d2) * r
    g_d2 = (
        -0.5 * d1 / d2
        - 0.5 * lq
        + 0.5 * (d1 + d2) * r / d2
        - 0.5 * (special.digamma(0.5 * d2) - special.digamma(0.5 * (d1 + d2)))
    )
    return ll.sum(), g_logv, (d2 * g_d2).sum()


def _fit_prior(s, d1, B, start):
    """ML of (β, log d0) for s/exp(Bβ) ~ F(d1, d0); returns (log prior per gene, d0)."""
    n = s.size
    hi = np.log(MAX_DF_PRIOR)

    def objective(par):
        beta, logd2 = par[:-1], min(par[-1], hi)
        logv = B @ beta
        ll, g_logv, g_logd2 = _f_loglik(s, logv, d1, logd2, True)
        g = np.r_[B.T @ g_logv, g_logd2 if par[-1] < hi else 0.0]
        return -ll / n, -g / n

    best = None
    for method in ("BFGS", "L-BFGS-B"):
        x0 = start if best is None else best.x
        bounds = None if method == "BFGS" else [(None, None)] * (len(start) - 1) + [(None, hi)]
        res = optimize.minimize(
            objective, x0, jac=True, method=method, bounds=bounds,
            options={"gtol": 1e-12, "maxiter": 10000} if method == "BFGS"
            else {"ftol": 1e-16, "gtol": 1e-12, "maxiter": 10000},
        )  # fmt: skip
        if best is None or res.fun <= best.fun:
            best = res
    logd2 = min(best.x[-1], hi)
    return B @ best.x[:-1], float(np.exp(logd2))


def _spline_basis(x: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the natural cubic splines in x (4 functions).

    Knots at 1/3 and 2/3 of x's range, the range as boundary knots: the space of R's
    ``splines::ns(x, knots=..., intercept=TRUE)``, which glmGamPoi's prior uses.
    """
    lo, hi = x.min(), x.max()
    knots = np.array([lo, lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3, hi])
    t = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    k = (knots - lo) / (hi - lo) if hi > lo else knots * 0

    def d(j):  # ESL's natural spline pieces (x − ξ_K)_+ is 0 inside the range
        return np.maximum(t - k[j], 0.0) ** 3 / (k[3] - k[j])

    N = np.column_stack([np.ones_like(t), t, d(0) - d(2), d(1) - d(2)])
    return np.linalg.qr(N)[0]


def shrink_ql(
    ql_disp: np.ndarray,
    mean: np.ndarray | None,
    df_resid: float,
    abundance_trend: bool = True,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Empirical-Bayes shrinkage of QL dispersions towards a prior (``variance_prior``).

    Maximum likelihood of φ_g/φ0_g ~ F(df_resid, d0) over the genes, first with a constant
    prior φ0; then, with ``abundance_trend`` and at least 10 genes with a mean above 1e-8, with
    log φ0 a natural cubic spline in log(mean) (those genes only; the others keep the
    constant prior). The posterior is φ̃ = (d0·φ0 + df_resid·φ)/(d0 + df_resid).

    Parameters
    ----------
    ql_disp : ndarray of shape (G,)
        QL dispersions (> 0; NaN genes are left out and stay NaN).
    mean : ndarray of shape (G,) or None
        The genes' means, for the trend (None: constant prior).
    df_resid : float
        Residual df of the full model (samples − coefficients).
    abundance_trend : bool, default=True
        Let the prior follow the mean (glm_gp uses it with ≥ 100 genes).

    Returns
    -------
    shrunk : ndarray of shape (G,)
        φ̃_g.
    df_prior : float
        d0 (inf when every φ_g is 1, NaN when all are NaN; at most 1e10).
    prior : ndarray of shape (G,)
        φ0_g.
    """
    s_all = np.asarray(ql_disp, dtype=float)
    ok = ~np.isnan(s_all)
    prior = np.full(s_all.shape, np.nan)
    if not ok.any():
        return s_all.copy(), float("nan"), prior
    s = s_all[ok]
    if np.all(s == 1):
        prior[ok] = 1.0
        return s_all.copy(), float("inf"), prior
    d1 = float(df_resid)
    if not d1 > 0:
        raise ValueError(f"df_resid must be positive; got {df_resid!r}.")
    if np.any(s <= 0):
        raise ValueError("QL dispersions must be positive.")
    ones = np.ones((s.size, 1))
    logv, d0 = _fit_prior(s, d1, ones, np.array([np.log(np.mean(s)), np.log(10.0)]))
    if abundance_trend and mean is not None:
        m = np.asarray(mean, dtype=float)[ok]
        nz = m > MIN_TREND_MEAN
        if s.size >= 10 and nz.sum() >= 10:
            B = _spline_basis(np.log(m[nz]))
            beta0 = np.linalg.lstsq(B, np.log(s[nz]), rcond=None)[0]
            logv_nz, d0 = _fit_prior(s[nz], d1, B, np.r_[beta0, np.log(d0)])
            logv = np.where(nz, 0.0, logv)
            logv[nz] = logv_nz
    v0 = np.exp(logv)
    prior[ok] = v0
    shrunk = np.full(s_all.shape, np.nan)
    shrunk[ok] = (d0 * v0 + d1 * s) / (d0 + d1)
    return shrunk, d0, prior


def overdispersion_shrinkage(
    overdispersion: np.ndarray,
    mean: np.ndarray,
    df_resid: float,
    abundance_trend: bool | None = None,
    npoints: float | None = None,
) -> QLShrinkage:
    """GlmGamPoi's ``overdispersion_shrinkage`` as ``glm_gp`` calls it.

    Parameters
    ----------
    overdispersion : ndarray of shape (G,)
        Gene-wise overdispersions α_g = 1/θ_g of the full model.
    mean : ndarray of shape (G,)
        The genes' mean fitted μ (over samples).
    df_resid : float
        Samples − coefficients of the full model.
    abundance_trend : bool, optional
        Trend in the prior of the QL dispersions; default: at least 100 genes (glm_gp).
    npoints : float, optional
        Window of :func:`dispersion_trend`; default glm_gp's max(0.1·G, 100).

    Returns
    -------
    QLShrinkage
    """
    a = np.asarray(overdispersion, dtype=float)
    m = np.asarray(mean, dtype=float)
    if abundance_trend is None:
        abundance_trend = a.size >= 100
    trend = dispersion_trend(a, m, npoints)
    phi = ql_dispersion(a, trend, m)
    shrunk, d0, prior = shrink_ql(phi, m, df_resid, abundance_trend)
    return QLShrinkage(trend, phi, prior, shrunk, d0)


#: Denominator df from which F(df_test, df)·df_test is taken as χ²(df_test): they differ
#: by O(1/df) relative, while SciPy's F tail (before 1.12) loses ≈ 1e-16·df there
#: (6.6e-5 relative at df = 1e12 with SciPy 1.11, the declared floor).
CHI2_LIMIT_DF = 1e8


def ql_f_test(
    dev_full: np.ndarray,
    dev_red: np.ndarray,
    df_test: float,
    shrunk: np.ndarray,
    df_total: float | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The QL F test: F = (D_reduced − D_full)/(df_test·φ̃) against F(df_test, df_total).

    Parameters
    ----------
    dev_full, dev_red : ndarray of shape (G,)
        Deviances (−2·log-likelihood up to the saturated model's) of the full and reduced
        models, both at the same (trended) θ; their difference is 2·(ℓ_full − ℓ_reduced).
    df_test : float
        Coefficients the reduced model leaves out.
    shrunk : ndarray of shape (G,)
        Shrunken QL dispersions φ̃.
    df_total : float or ndarray
        d0 + df_resid (inf, or from :data:`CHI2_LIMIT_DF` on: F·df_test is χ² on df_test).

    Returns
    -------
    F, pvalue : ndarray of shape (G,)
        As glmGamPoi's ``test_de`` (``f_statistic``, ``pval``); a negative difference from
        rounding gives p = 1, as R's ``pf``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        F = (np.asarray(dev_red, float) - np.asarray(dev_full, float)) / df_test / shrunk
    df2 = np.broadcast_to(np.asarray(df_total, dtype=float), F.shape)
    finite = df2 < CHI2_LIMIT_DF
    p = np.where(
        finite,
        stats.f.sf(F, df_test, np.where(finite, df2, 1.0)),
        stats.chi2.sf(F * df_test, df_test),
    )
    return F, np.where(np.isnan(F), np.nan, p)
