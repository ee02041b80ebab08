"""The null model (β = 0): where paths start, λ_max, tolerance scales.

Functions take responses as columns of Y (n, G) so one gene and many genes share them,
optional sample weights M (n, G) (a 0/1 column selects a training fold) and an optional
offset O, (n,) or (n, G), in the linear predictor z = β0 + O + Xβ.

Without offset the best intercept at β = 0 is link(ȳ) (the weighted mean) for every
family. With an offset it has a closed form for the identity link and for the log link of
the Poisson and gamma likelihoods; elsewhere (the negative binomial, the seed's mean
functions) the closed form here is a start, and the Newton solver finishes it
(:func:`stglm._solvers.newton_cd.null_fit` for one problem; for many genes,
:class:`stglm._solvers.batched.BatchedNewtonCD` at λ = 0 on the unpenalised columns).
"""

from __future__ import annotations

import numpy as np

from .._families import LIK_GAMMA, LIK_POISSON, Family

#: Values of a block of rows (2 Mi float64, 16 MiB), and its fewest rows, where the
#: tolerance scales are computed a block at a time.
BLOCK_VALUES, BLOCK_MIN_ROWS = 2 * 2**20, 1024
#: The mean assumed for a count response without counts: μ → 0 from above.
EMPTY_COUNT_MEAN = 1e-10
#: The tolerance scale's floor, relative to the size of the residuals' terms (see
#: :func:`tolerance_scales`): a null model that already fits to this precision is not asked
#: to be improved upon by a further factor ``tol`` (below rounding: every iteration would
#: run the coordinate-descent cap and never converge).
RESIDUAL_FLOOR = 1e-6


def _mean(A: np.ndarray, M: np.ndarray | None) -> np.ndarray:
    """Column means of A, weighted by M when given."""
    return A.mean(axis=0) if M is None else (M * A).sum(axis=0) / M.sum(axis=0)


def _is_log(family: Family) -> bool:
    mf = family.mean_function
    return mf.kind == "exp" and not np.isfinite(mf.eta)


def intercept_is_exact(family: Family, offset) -> bool:
    """Whether :func:`null_intercepts` is the exact optimum at β = 0 (else a start)."""
    if offset is None:
        return True
    if family.mean_function.kind == "identity":
        return True
    return _is_log(family) and family.likelihood_code in (LIK_POISSON, LIK_GAMMA)


def null_intercepts(
    family: Family,
    Y: np.ndarray,
    fit_intercept: bool,
    M: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> np.ndarray:
    """The intercept of each column's null model (0 without intercept); shape (G,).

    Exact where :func:`intercept_is_exact`, a close start elsewhere.
    """
    if not fit_intercept:
        return np.zeros(Y.shape[1])
    if offset is None:
        y_bar = _mean(Y, M)
        if family.is_count or family.mean_function.kind != "identity":
            y_bar = np.maximum(y_bar, EMPTY_COUNT_MEAN)
        return np.asarray(family.link(y_bar), dtype=float)
    off = np.asarray(offset, dtype=float)
    off = off[:, None] if off.ndim == 1 else off
    if family.mean_function.kind == "identity":
        return _mean(Y - off, M)
    if _is_log(family):
        with np.errstate(over="ignore", divide="ignore"):
            if family.likelihood_code == LIK_GAMMA:  # Σm(y·e^{−z} − 1) = 0
                return np.log(_mean(Y * np.exp(-off), M))
            # Σm(y − e^z) = 0: exact for Poisson, the start for the others.
            y_sum = np.maximum(_mean(Y, M), EMPTY_COUNT_MEAN)
            return np.log(y_sum) - np.log(_mean(np.broadcast_to(np.exp(off), Y.shape), M))
    y_bar = np.maximum(_mean(Y, M), EMPTY_COUNT_MEAN)
    return np.asarray(family.link(y_bar), dtype=float) - _mean(np.broadcast_to(off, Y.shape), M)


def null_predictors(
    family: Family, Y: np.ndarray, intercepts: np.ndarray, offset=None
) -> np.ndarray:
    """The null models' linear predictors z_i = β0 + o_i, shape (n, G)."""
    Z = np.broadcast_to(intercepts, Y.shape)
    if offset is not None:
        off = np.asarray(offset, dtype=float)
        Z = Z + (off[:, None] if off.ndim == 1 else off)
    return Z


def _null_residuals(family: Family, Y, Z0, M=None) -> np.ndarray:
    """∂(−ℓ)/∂z at the null model, times the sample weights."""
    R = family.residual(Y, _distinct_rows(Z0))
    return R if M is None else np.where(M != 0, M * R, 0.0)


def _distinct_rows(Z: np.ndarray) -> np.ndarray:
    """Z, or its first row where every row is the same view (a broadcast: no offset).

    The residuals then evaluate their exponentials once per gene, not once per sample
    (5 ns each where numpy's exp has no SIMD kernel), and broadcast against y.
    """
    Z = np.asarray(Z)
    if Z.ndim == 2 and Z.shape[0] > 1 and Z.strides[0] == 0:
        return Z[:1]
    return Z


def null_gradients(
    family: Family,
    X,
    Y: np.ndarray,
    fit_intercept: bool,
    M: np.ndarray | None = None,
    offset: np.ndarray | None = None,
    Z0: np.ndarray | None = None,
) -> np.ndarray:
    """∇_β of the mean negative log-likelihood at each column's null model; shape (G, p).

    ``Z0`` (n, G) are the null models' linear predictors when the caller has solved them
    (see the module's doc); else from :func:`null_intercepts`.
    """
    if Z0 is None:
        Z0 = null_predictors(
            family, Y, null_intercepts(family, Y, fit_intercept, M, offset), offset
        )
    R = _null_residuals(family, Y, Z0, M)
    total = Y.shape[0] if M is None else M.sum(axis=0)
    return (np.asarray(X.T @ R, dtype=float) / total).T


def tolerance_scales(
    family: Family,
    X,
    Y: np.ndarray,
    fit_intercept: bool,
    X_abs=None,
    M=None,
    offset=None,
    Z0=None,
) -> np.ndarray:
    """The size of the gradient's terms at the null model: max_j Σ_i m_i·|x̃_ij|·|r_i| / Σ m_i.

    ``tol`` is relative to this, so the KKT stopping rule means the same whatever the units
    of X and y — for Poisson means of 1e-6 as for 1e6. x̃ includes the intercept's column of
    ones. ``X_abs`` is |X| when the caller keeps it (a design shared by many calls).

    Every family's residual is affine in y, r_i = a(z_i) + b(z_i)·y_i; where the null model
    already fits (y ≡ 1e-3 for Poisson: r_i is rounding), the scale is at least
    :data:`RESIDUAL_FLOOR` times the same sum over the terms' sizes abs(a) + abs(b·y), so
    that ``tol`` stays above what rounding can resolve. It is 0 only when those are 0 too
    (gaussian y ≡ 0; then so is the KKT residual).
    """
    if Z0 is None:
        Z0 = null_predictors(
            family, Y, null_intercepts(family, Y, fit_intercept, M, offset), offset
        )
    total = Y.shape[0] if M is None else M.sum(axis=0)
    X_abs = abs(X) if X_abs is None else X_abs
    n, G = Y.shape
    # A block of rows at a time: the residuals' temporaries stay small for any n.
    step = max(BLOCK_MIN_ROWS, BLOCK_VALUES // max(1, G))
    terms, r_sum, size_sum = 0.0, 0.0, 0.0
    for start in range(0, n, step):
        rows = slice(start, start + step)
        whole = start == 0 and step >= n  # one block: no copies
        Mb = M if M is None or whole or M.shape[0] == 1 else M[rows]
        Yb, Zb = (Y, Z0) if whole else (Y[rows], Z0[rows])
        R = _null_residuals(family, Yb, Zb, Mb)
        # |r| and the terms' sizes side by side, for one product with |X|, in the layout of
        # r (column-major for blocks of genes: written row-major they would be transposed,
        # 2.3× the time of the whole step).
        sizes = np.empty((Yb.shape[0], 2 * G), order="F" if R.flags.f_contiguous else "C")
        R_abs, size = sizes[:, :G], sizes[:, G:]
        with np.errstate(invalid="ignore", over="ignore"):
            R_free = _null_residuals(family, 0.0, Zb, Mb)  # a(z): no y part
            np.abs(np.subtract(R, R_free, out=size), out=size)
            size += np.abs(R_free)
        np.abs(R, out=R_abs)
        both = np.asarray((X_abs if whole else X_abs[rows]).T @ sizes, dtype=float)
        terms = terms + both
        r_sum = r_sum + R_abs.sum(axis=0)
        size_sum = size_sum + size.sum(axis=0)
    terms = terms / np.tile(np.broadcast_to(total, (G,)), 2)  # (p, 2G)
    scale = terms[:, :G].max(axis=0, initial=0.0)
    floor = terms[:, G:].max(axis=0, initial=0.0)
    if fit_intercept:
        scale = np.maximum(scale, r_sum / total)
        floor = np.maximum(floor, size_sum / total)
    # NaN sizes (a family whose a(z) is undefined) leave the scale as it was.
    return np.fmax(scale, RESIDUAL_FLOOR * floor)
