"""Compiled per-row pieces of the Newton iteration (:mod:`stglm._solvers._newton`, ``batched``).

The arrays of one Newton iteration are small — (G, m) coefficients and gradients, G
Hessians of m × m — so in numpy their dozens of element-wise steps cost more in call
overhead than in arithmetic (≈ 60 % of a 2,000 × 20 cross-validation). Each kernel
here is one pass over them, with the formulas of :mod:`stglm._penalties` and
:mod:`stglm._solvers._scaling` (tests compare the two). The products with the design
(R·X̃, D·X̃ᵀ, W·Z) stay with BLAS.

Rows of every (G, m) array are genes; column 0 is the intercept when ``fit_intercept``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._cd_kernels import _cd_gram, _violation


@njit(cache=True, nogil=True)
def pair_products(XT, start, stop, out):
    """Rows start..stop−1 of Z, Z[i] = (x̃_ia·x̃_ib for a ≤ b in ``np.triu_indices`` order).

    XT is the transposed design (m, n). Rows go through a small tile so that each row
    of Z is written once, in order, from contiguous values (1.3–1.6× faster than numpy's
    column blocks, whose writes are strided).
    """
    m = XT.shape[0]
    rows_per_tile = 32
    tile = np.empty((rows_per_tile, m))
    for i0 in range(start, stop, rows_per_tile):
        size = min(rows_per_tile, stop - i0)
        for a in range(m):
            for r in range(size):
                tile[r, a] = XT[a, i0 + r]
        for r in range(size):
            row = out[i0 + r - start]
            x = tile[r]
            t = 0
            for a in range(m):
                for b in range(a, m):
                    row[t] = x[a] * x[b]
                    t += 1


@njit(cache=True, nogil=True)
def unpack_hessians(packed, total, rows, cols, m):
    """(G, m, m) symmetric matrices from their upper triangles ``packed`` (G, pairs) / total."""
    out = np.empty((packed.shape[0], m, m))
    for k in range(packed.shape[0]):
        for t in range(rows.size):
            v = packed[k, t] / total[k]
            out[k, rows[t], cols[t]] = v
            out[k, cols[t], rows[t]] = v
    return out


@njit(cache=True, nogil=True)
def copy_rows(sources, targets, src, dst):
    """Row src[j] of each source → row dst[j] of the matching target (no temporaries).

    With targets = sources it moves rows within arrays (the gene-major compaction); rows
    are copied in order, so a row must not be read after it has been written.
    """
    for a in range(len(sources)):
        for j in range(src.size):
            targets[a][dst[j], :] = sources[a][src[j], :]


@njit(cache=True, nogil=True)
def penalties(B, lam, alpha, factor, gram, fit_intercept):
    """λ_g[½(1−α)·βᵀGβ + α·Σ f_j|β_j|] for each row of B.

    ``gram`` is G = F^½ΓᵀΓF^½ (p, p) and ``factor`` the penalty factors f (p,).
    """
    n_genes, m = B.shape
    off = 1 if fit_intercept else 0
    out = np.empty(n_genes)
    for k in range(n_genes):
        quad = 0.0
        l1 = 0.0
        for a in range(m - off):
            b = B[k, off + a]
            if b == 0.0:
                continue
            l1 += factor[a] * abs(b)
            acc = 0.0
            for c in range(m - off):
                acc += gram[a, c] * B[k, off + c]
            quad += b * acc
        out[k] = lam[k] * (0.5 * (1.0 - alpha) * quad + alpha * l1)
    return out


@njit(cache=True, nogil=True, inline="always")
def _worse(worst, v):
    """The larger of two KKT terms; NaN once either is.

    Not max(): Python's and numba's max(0.0, nan) is 0.0, and a NaN residual must never
    count as converged.
    """
    return v if worst == worst and not v <= worst else worst


@njit(cache=True, nogil=True)
def kkt_max(g, beta, l1w, g0, fit_intercept):
    """One problem's KKT residual from its gradient (g0 for the intercept, g for β).

    :func:`stglm._penalties.kkt_residual`'s formula with per-coordinate L1 weights ``l1w``
    (tests compare the two), NaN once any term is.
    """
    worst = abs(g0) if fit_intercept else 0.0
    for j in range(g.size):
        worst = _worse(worst, _violation(g[j], beta[j], l1w[j]))
    return worst


@njit(cache=True, nogil=True)
def finish_gradients(Gr, total, B, lam, alpha, factor, gram, fit_intercept):
    """Turn Gr = R·X̃ (G, m) into ∇J in place; return each gene's KKT residual.

    ∇J = R·X̃ / n_g plus the ridge term λ_g(1−α)·ΓᵀΓβ on β; the residual is
    :func:`stglm._penalties.kkt_residual`'s (|g_0| for the intercept). A NaN gradient
    gives a NaN residual, as numpy's max would: such a gene must never count as converged.
    """
    n_genes, m = B.shape
    off = 1 if fit_intercept else 0
    kkt = np.empty(n_genes)
    for k in range(n_genes):
        l2 = lam[k] * (1.0 - alpha)
        l1 = lam[k] * alpha
        worst = 0.0
        for j in range(m):
            g = Gr[k, j] / total[k]
            if j < off:
                v = abs(g)
            else:
                if l2 != 0.0:
                    acc = 0.0
                    for c in range(m - off):
                        acc += gram[j - off, c] * B[k, off + c]
                    g += l2 * acc
                v = _violation(g, B[k, j], l1 * factor[j - off])
            worst = _worse(worst, v)
            Gr[k, j] = g
        kkt[k] = worst
    return kkt


@njit(cache=True, nogil=True)
def newton_directions(
    H_lik,
    gram_scaled,
    Gr,
    B,
    lam,
    alpha,
    factor,
    center,
    scale,
    fit_intercept,
    tol,
    max_sweeps,
    X_new,
):
    """Each gene's Newton model minimised by coordinate descent, in the scaled coordinates.

    ``H_lik`` (G, m, m) are the likelihood's Hessians in the scaled coordinates b' = T⁻¹b
    (:mod:`stglm._solvers._scaling`: β'_j = s_j·β_j, β0' = β0 + c·β); the ridge block
    λ_g(1−α)·S⁻¹ΓᵀΓS⁻¹ (``gram_scaled``) is added here. The minimisers, mapped back to b,
    go into ``X_new``. Returns the predicted decrease gᵀd + λα(‖β_new‖₁ − ‖β‖₁) per gene
    (the line search's Armijo term) and whether the model's minimiser is the current point.
    """
    n_genes, m = B.shape
    off = 1 if fit_intercept else 0
    delta = np.empty(n_genes)
    at_minimum = np.empty(n_genes, dtype=np.bool_)
    H = np.empty((m, m))
    g = np.empty(m)
    b = np.empty(m)
    l1w = np.zeros(m)
    for k in range(n_genes):
        l2 = lam[k] * (1.0 - alpha)
        l1 = lam[k] * alpha
        H[:, :] = H_lik[k]
        if l2 != 0.0:
            for a in range(off, m):
                for c in range(off, m):
                    H[a, c] += l2 * gram_scaled[a - off, c - off]
        g0 = Gr[k, 0] if fit_intercept else 0.0
        shift = 0.0  # c·β, the intercept's move between coordinates
        for j in range(off, m):
            s, c = scale[j - off], center[j - off]
            g[j] = (Gr[k, j] - c * g0) / s
            b[j] = B[k, j] * s
            l1w[j] = l1 * factor[j - off] / s
            shift += c * B[k, j]
        if fit_intercept:
            g[0] = g0
            b[0] = B[k, 0] + shift
        x, _ = _cd_gram(H, g, b, l1w, tol[k], max_sweeps)
        shift = 0.0
        for j in range(off, m):
            X_new[k, j] = x[j] / scale[j - off]
            shift += center[j - off] * X_new[k, j]
        if fit_intercept:
            X_new[k, 0] = x[0] - shift
        decrease = 0.0
        still = True
        for j in range(m):
            d = X_new[k, j] - B[k, j]
            if d != 0.0:
                still = False
            decrease += Gr[k, j] * d
            if j >= off:
                decrease += l1 * factor[j - off] * (abs(X_new[k, j]) - abs(B[k, j]))
        delta[k] = decrease
        at_minimum[k] = still
    return delta, at_minimum


@njit(cache=True, nogil=True)
def check_rows(kkt, tol, at_minimum, stuck, n_iter, max_iter, done, leave, inner_tol):
    """The stop rule per row, in place; whether any row leaves.

    ``done``: the KKT residual is at most the tolerance (never when it is NaN) or the
    model's minimiser is the point; ``leave``: done, stuck, or ``max_iter`` reached. Rows
    that stay count one more iteration and get their inner tolerance, 5 % of the KKT
    residual but at least a tenth of the tolerance (NaN propagates, as ``np.maximum``).
    """
    any_leave = False
    for k in range(kkt.size):
        done[k] = kkt[k] <= tol[k] or at_minimum[k]
        leave[k] = done[k] or stuck[k] or n_iter[k] >= max_iter
        if leave[k]:
            any_leave = True
        else:
            n_iter[k] += 1
        a, b = 0.05 * kkt[k], 0.1 * tol[k]
        inner_tol[k] = a if (a != a or a > b) else b
    return any_leave


@njit(cache=True, nogil=True)
def sufficient_decrease(trial_F, F, delta, step, armijo, rounding):
    """Armijo's test per row: J(trial) ≤ J + c·t·Δ.

    A full step that leaves J unchanged to rounding (``rounding``·|J|, 16 ulp) passes too:
    nothing is left to gain in floating point.
    """
    ok = np.empty(F.size, dtype=np.bool_)
    all_ok(trial_F, F, delta, step, armijo, rounding, ok)
    return ok


@njit(cache=True, nogil=True)
def all_ok(trial_F, F, delta, step, armijo, rounding, ok):
    """:func:`sufficient_decrease` into ``ok``; whether every row passes."""
    passed = True
    for k in range(F.size):
        ok[k] = trial_F[k] <= F[k] + armijo * step[k] * delta[k] or (
            step[k] == 1.0 and abs(trial_F[k] - F[k]) <= rounding * abs(F[k])
        )
        passed = passed and ok[k]
    return passed


@njit(cache=True, nogil=True)
def settle_steps(step, F, F_new, delta, stuck, at_minimum, flat, rounding):
    """In place, per row: J takes its trial value where the step t > 0; t = 0 marks it stuck.

    A stuck row whose model predicted a decrease below ``rounding``·|J| (16 ulp) is at the
    optimum in floating point: ``at_minimum`` (a NaN prediction never is). A row that moved
    by such a step, J unchanged to rounding, is ``flat``: whether that is its optimum is
    decided by its KKT residual (:meth:`stglm._solvers._newton.ProximalNewton.check_convergence`).
    """
    for k in range(step.size):
        resolution = rounding * abs(F[k])
        flat[k] = (
            step[k] > 0.0 and abs(delta[k]) <= resolution and abs(F_new[k] - F[k]) <= resolution
        )
        if step[k] > 0.0:
            F[k] = F_new[k]
        else:
            stuck[k] = True
            if abs(delta[k]) <= rounding * abs(F[k]):
                at_minimum[k] = True


@njit(cache=True, nogil=True)
def move_points(step, D, B, B_full, L, L_new, current, trial):
    """In place: B moves by t·D and −ℓ takes its trial value, where t > 0.

    A full step takes B_full (= B + D, where the line search evaluated J) itself, so that
    the point and its J agree to the last bit and the model's exact zeros stay exact.
    Where t = 0 the rows of the ``current`` buffers (Z, R, W) are copied into ``trial``, so
    that after the buffers are swapped every row holds the terms at its point.
    """
    for k in range(step.size):
        if step[k] == 1.0:
            B[k, :] = B_full[k, :]
        elif step[k] > 0.0:
            for j in range(B.shape[1]):
                B[k, j] += step[k] * D[k, j]
        if step[k] > 0.0:
            L[k] = L_new[k]
        else:
            for a in range(len(current)):
                trial[a][k, :] = current[a][k, :]
