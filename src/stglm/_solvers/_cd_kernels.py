"""Compiled coordinate-descent kernels for the penalised quadratic model of a Newton step.

Both kernels minimise, over x (the new coefficients, intercept included when the
caller includes it),

    gᵀ(x − b) + ½ (x − b)ᵀ H (x − b) + Σ_j l1w_j·|x_j|

(``_cd_gram``: per-coordinate L1 weights ``l1w``, 0 for the intercept; ``_cd_csc_residual``:
one weight ``l1`` for every β_j, none on the intercept.)

``_cd_gram`` works on a dense H (small p: each update costs O(p), independent of n).
``_cd_csc_residual`` never forms H = (1/n) X̃ᵀ diag(w) X̃ + l2·G: it applies it through an
n-vector of working residuals (large p: each update costs O(nnz of the column)).

All kernels use an active set: sweeps over the non-zero coordinates until they
settle, then one full sweep to confirm. They stop when the model's own KKT residual is
at most ``tol``; that is checked whenever no coordinate's update moved its partial
derivative by more than a working threshold, which shrinks if the check fails. A full
sweep that moved no coordinate also stops them: it is a fixed point (a tolerance below
rounding), and every further sweep would repeat it up to the cap. ``_cd_gram`` also stops
when ``STALL_SWEEPS`` sweeps in a row have not lowered the model's KKT residual below its
best: the coordinates then move at rounding level without settling (an unpenalised model
whose null fit is exact, e.g. poisson with y ≡ 1e-3), and every further sweep would
oscillate up to the cap.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Sweeps in a row without a new lowest model KKT residual after which ``_cd_gram`` stops:
#: a converging descent lowers it within a few sweeps (an exact solve on the support
#: follows every few), one that oscillates at rounding level never settles.
STALL_SWEEPS = 100


@njit(cache=True, nogil=True)
def _soft(v, t):
    if v > t:
        return v - t
    if v < -t:
        return v + t
    return 0.0


@njit(cache=True, nogil=True)
def _violation(grad, x, l1):
    """Distance of 0 from the subdifferential of a coordinate: its KKT residual."""
    if l1 == 0.0:
        return abs(grad)
    if x != 0.0:
        return abs(grad + l1) if x > 0.0 else abs(grad - l1)
    return max(abs(grad) - l1, 0.0)


@njit(cache=True, nogil=True)
def _active_set_solve(H, g, b, x, l1w):
    """Minimiser of the quadratic on the current support with the current signs, or None.

    With the support A = {j : x_j ≠ 0 or l1w_j = 0} and signs s fixed, stationarity is
    H_AA x_A = (H b)_A − g_A − l1w_A·s_A; None when H_AA is singular to working precision
    (its Cholesky factorisation fails).
    """
    m = b.shape[0]
    idx = np.empty(m, dtype=np.int64)
    k = 0
    for j in range(m):
        if x[j] != 0.0 or l1w[j] == 0.0:
            idx[k] = j
            k += 1
    if k == 0:
        return None
    A = np.empty((k, k))
    rhs = np.empty(k)
    for a in range(k):
        ja = idx[a]
        acc = -g[ja]
        for j in range(m):
            acc += H[ja, j] * b[j]
        if l1w[ja] > 0.0:
            acc -= l1w[ja] * (1.0 if x[ja] > 0.0 else -1.0)
        rhs[a] = acc
        for c in range(k):
            A[a, c] = H[ja, idx[c]]
    # Cholesky A = L Lᵀ, in place in the lower triangle.
    scale = 0.0
    for a in range(k):
        scale = max(scale, A[a, a])
    for a in range(k):
        for c in range(a + 1):
            acc = A[a, c]
            for t in range(c):
                acc -= A[a, t] * A[c, t]
            if a == c:
                if acc <= 1e-12 * scale:
                    return None
                A[a, a] = np.sqrt(acc)
            else:
                A[a, c] = acc / A[c, c]
    for a in range(k):  # forward, then backward substitution
        acc = rhs[a]
        for t in range(a):
            acc -= A[a, t] * rhs[t]
        rhs[a] = acc / A[a, a]
    for a in range(k - 1, -1, -1):
        acc = rhs[a]
        for t in range(a + 1, k):
            acc -= A[t, a] * rhs[t]
        rhs[a] = acc / A[a, a]
    out = np.zeros(m)
    for a in range(k):
        out[idx[a]] = rhs[a]
    return out


@njit(cache=True, nogil=True)
def _step_to_support(x, exact, l1w):
    """Move x toward ``exact`` until the first coordinate changes sign, zeroing it.

    J restricted to the current signs is a convex quadratic minimised at ``exact``, so the
    move decreases it; coordinates reaching 0 leave the support. Returns whether ``exact``
    kept every sign (then x = exact).
    """
    t = 1.0
    for j in range(x.shape[0]):
        if l1w[j] > 0.0 and x[j] != 0.0 and (exact[j] > 0.0) != (x[j] > 0.0):
            t = min(t, x[j] / (x[j] - exact[j]))
    for j in range(x.shape[0]):
        if (
            l1w[j] > 0.0
            and x[j] != 0.0
            and (exact[j] > 0.0) != (x[j] > 0.0)
            and x[j] / (x[j] - exact[j]) <= t
        ):
            x[j] = 0.0
        elif x[j] != 0.0 or l1w[j] == 0.0:
            x[j] += t * (exact[j] - x[j])
    return t == 1.0


@njit(cache=True, nogil=True)
def _model_kkt(q, x, l1w):
    """The quadratic model's KKT residual at x, from its gradient q there."""
    worst = 0.0
    for j in range(x.shape[0]):
        worst = max(worst, _violation(q[j], x[j], l1w[j]))
    return worst


@njit(cache=True, nogil=True)
def _cd_gram(H, g, b, l1w, tol, max_sweeps):
    """Coordinate descent on a dense Hessian H; returns (x, sweeps).

    Sweeps over the support alternate with an exact solve on it (:func:`_active_set_solve`,
    :func:`_step_to_support`): coordinate descent finds the support and signs, the solve
    removes its slow linear convergence on correlated predictors, and a full sweep confirms
    optimality.
    """
    m = b.shape[0]
    x = b.copy()
    q = g.copy()  # gradient of the quadratic at x, kept exact
    active = np.ones(m, dtype=np.bool_)
    full = True
    change_tol = tol  # when sweeps move less than this, check the model's KKT residual
    best_kkt, stalled = np.inf, 0  # the lowest model KKT residual, and sweeps since it
    sweeps = 0
    while sweeps < max_sweeps:
        sweeps += 1
        max_change = 0.0
        for j in range(m):
            if not (full or active[j]):
                continue
            hjj = H[j, j]
            if hjj <= 0.0:
                continue
            old = x[j]
            v = hjj * old - q[j]
            new = _soft(v, l1w[j]) / hjj
            d = new - old
            if d != 0.0:
                x[j] = new
                for k in range(m):
                    q[k] += H[k, j] * d
                change = hjj * abs(d)
                if change > max_change:
                    max_change = change
        sweep_kkt = _model_kkt(q, x, l1w)
        if sweep_kkt < best_kkt:
            best_kkt, stalled = sweep_kkt, 0
        else:
            stalled += 1
            if stalled >= STALL_SWEEPS:
                break  # rounding-level moves that never settle: more sweeps repeat them
        if full:
            for j in range(m):
                active[j] = (x[j] != 0.0) or l1w[j] == 0.0
            if max_change < change_tol:
                model_kkt = _model_kkt(q, x, l1w)
                if model_kkt <= tol or max_change == 0.0:
                    break  # optimal, or a fixed point: a sweep that moved nothing repeats
                change_tol *= 0.1  # small steps, yet not optimal: look closer
            full = False
        elif max_change < change_tol:
            full = True  # confirm with a sweep over every coordinate
        else:
            exact = _active_set_solve(H, g, b, x, l1w)
            if exact is not None:
                _step_to_support(x, exact, l1w)
                for k in range(m):  # q = g + H(x − b), afresh
                    acc = g[k]
                    for j in range(m):
                        acc += H[k, j] * (x[j] - b[j])
                    q[k] = acc
                full = True
    return x, sweeps


@njit(cache=True, nogil=True)
def _cd_csc_residual(
    indptr, indices, data, total, w, r, G, l2, b0, b, fit_intercept, l1w, tol, max_sweeps
):
    """Residual-update coordinate descent for a CSC matrix X given by its three arrays.

    The quadratic is (1/total)Σ[r_i δz_i + ½ w_i δz_i²] + ½ l2 xᵀGx + l1‖x‖₁ with
    δz = (x0 − b0) + X(x − b); ``total`` is the objective's normaliser (n, or Σ of the
    sample weights that r and w carry); ``G`` is ΓᵀΓ (an empty (0, 0) array means the
    identity).
    Returns (x0, x, sweeps).
    """
    p = indptr.shape[0] - 1
    n = w.shape[0]
    inv_n = 1.0 / total
    identity = G.shape[0] == 0
    s = r.copy()
    x = b.copy()
    x0 = b0
    gx = np.empty(p)
    if identity:
        gx[:] = x
    else:
        gx[:] = G @ x
    diag = np.empty(p)
    for j in range(p):
        acc = 0.0
        for k in range(indptr[j], indptr[j + 1]):
            acc += w[indices[k]] * data[k] * data[k]
        diag[j] = acc * inv_n + l2 * (1.0 if identity else G[j, j])
    w_sum = w.sum() * inv_n
    active = np.ones(p, dtype=np.bool_)
    full = True
    change_tol = tol  # when sweeps move less than this, check the model's KKT residual
    sweeps = 0
    while sweeps < max_sweeps:
        sweeps += 1
        max_change = 0.0
        if fit_intercept and w_sum > 0.0:
            d = -s.sum() * inv_n / w_sum
            if d != 0.0:
                x0 += d
                for i in range(n):
                    s[i] += w[i] * d
                change = w_sum * abs(d)
                if change > max_change:
                    max_change = change
        for j in range(p):
            if not (full or active[j]):
                continue
            hjj = diag[j]
            if hjj <= 0.0:
                continue
            grad = 0.0
            for k in range(indptr[j], indptr[j + 1]):
                grad += data[k] * s[indices[k]]
            grad = grad * inv_n + l2 * gx[j]
            old = x[j]
            new = _soft(hjj * old - grad, l1w[j]) / hjj
            d = new - old
            if d != 0.0:
                x[j] = new
                for k in range(indptr[j], indptr[j + 1]):
                    s[indices[k]] += w[indices[k]] * data[k] * d
                if identity:
                    gx[j] += d
                else:
                    for k in range(p):
                        gx[k] += G[k, j] * d
                change = hjj * abs(d)
                if change > max_change:
                    max_change = change
        if full:
            for j in range(p):
                active[j] = x[j] != 0.0
            if max_change < change_tol:
                # Small steps need not mean optimal (many coupled coordinates): measure the
                # model's KKT residual, one pass over the data.
                model_kkt = abs(s.sum() * inv_n) if fit_intercept else 0.0
                for j in range(p):
                    grad = 0.0
                    for k in range(indptr[j], indptr[j + 1]):
                        grad += data[k] * s[indices[k]]
                    grad = grad * inv_n + l2 * gx[j]
                    model_kkt = max(model_kkt, _violation(grad, x[j], l1w[j]))
                if model_kkt <= tol or max_change == 0.0:
                    break  # optimal, or a fixed point (rounding): more sweeps repeat it
                change_tol *= 0.1
            full = False
        elif max_change < change_tol:
            full = True
    return x0, x, sweeps


@njit(cache=True, nogil=True)
def _model_matvec(indptr, indices, data, total, w, G, l2, fit_intercept, v):
    """H·v for H = X̃ᵀdiag(w)X̃ / total + l2·[0 ⊕ G] (G empty: the identity), X̃ = [1, X]."""
    p = indptr.shape[0] - 1
    off = 1 if fit_intercept else 0
    u = np.full(w.shape[0], v[0] if fit_intercept else 0.0)
    for j in range(p):
        vj = v[off + j]
        if vj != 0.0:
            for k in range(indptr[j], indptr[j + 1]):
                u[indices[k]] += data[k] * vj
    u *= w
    out = np.empty(p + off)
    if fit_intercept:
        out[0] = u.sum() / total
    for j in range(p):
        acc = 0.0
        for k in range(indptr[j], indptr[j + 1]):
            acc += data[k] * u[indices[k]]
        out[off + j] = acc / total
    beta = v[off:]
    ridge = beta.copy() if G.shape[0] == 0 else G @ beta
    out[off:] += l2 * ridge
    return out


@njit(cache=True, nogil=True)
def _cg_csc(indptr, indices, data, total, w, G, l2, fit_intercept, g, tol, max_iter):
    """Newton step d solving H·d = −g by conjugate gradients (a ridge model: no L1 term).

    Stops when ‖H·d + g‖∞ ≤ tol, the model's KKT residual; returns (d, iterations).
    """
    d = np.zeros(g.shape[0])
    res = -g.copy()  # −(H d + g)
    direction = res.copy()
    rr = res @ res
    it = 0
    while it < max_iter and np.abs(res).max() > tol:
        it += 1
        Hp = _model_matvec(indptr, indices, data, total, w, G, l2, fit_intercept, direction)
        curv = direction @ Hp
        if curv <= 0.0:
            break
        step = rr / curv
        d += step * direction
        res -= step * Hp
        rr_new = res @ res
        direction = res + (rr_new / rr) * direction
        rr = rr_new
    return d, it
