"""Regularisation paths: the data-driven λ sequence, warm starts and strong-rule screening."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ._families import Family
from ._metrics import r2_from_deviances, weighted_column_sum
from ._penalties import ElasticNet, kkt_residual
from ._solvers import Problem, newton_options, solve
from ._solvers._null_model import tolerance_scales
from ._solvers._scaling import scaled_design
from ._solvers.batched import BatchedNewtonCD
from ._solvers.newton_cd import null_fit, null_gradient, tolerance_scale
from ._theta import batched_theta, fit_theta

__all__ = [
    "LAMBDA_MIN_RATIO",
    "RIDGE_ALPHA_FOR_PATH",
    "PathResult",
    "batched_path",
    "clip",
    "fit_path",
    "lambda_path",
    "score_path",
]

#: Values of an (n, G) temporary per block of rows when a path is scored (16 MiB of float64),
#: and the fewest rows of a block: the score's work arrays stay small whatever n is.
SCORE_BLOCK_VALUES, SCORE_MIN_ROWS = 2 * 2**20, 1024
#: The path ends at this fraction of λ_max.
LAMBDA_MIN_RATIO = 1e-3
#: For α = 0 no λ zeroes β; λ_max is then computed as for α = 0.001 (glmnet's convention).
RIDGE_ALPHA_FOR_PATH = 1e-3


def lambda_max_from_gradient(
    null_grad: np.ndarray, alpha: float, penalty_factor: np.ndarray | None = None
) -> np.ndarray:
    """λ_max = max_j |g_j|/f_j / max(α, 0.001) along the last axis (one per response).

    g is the gradient at the λ = ∞ solution; predictors with factor f_j = 0 are free there
    (their gradient is 0) and are left out.
    """
    g = np.abs(np.asarray(null_grad, dtype=float))
    if penalty_factor is not None:
        f = np.asarray(penalty_factor, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(f > 0, g / np.where(f > 0, f, 1.0), 0.0)
    return g.max(axis=-1, initial=0.0) / max(alpha, RIDGE_ALPHA_FOR_PATH)


def geometric_path(lmax: np.ndarray | float, n_lambdas: int, min_ratio: float) -> np.ndarray:
    """``n_lambdas`` values log-spaced from λ_max down to ``min_ratio``·λ_max (per row).

    A λ_max of 0 (y constant, or X orthogonal to y: any λ zeroes β) is replaced by 1.
    """
    lmax = np.where(np.asarray(lmax, dtype=float) > 0.0, lmax, 1.0)
    return np.geomspace(lmax, lmax * min_ratio, n_lambdas, axis=-1)


def lambda_max(problem: Problem) -> float:
    """Smallest λ at which every β_j is 0: ‖∇_β loss at the null model‖∞ / α.

    At β = 0 (with the intercept, and any unpenalised predictors, at their best values:
    :func:`stglm._solvers.newton_cd.null_fit`) the ridge term has no gradient, so that
    point is optimal exactly when λα·f_j ≥ |∇_j loss| for all penalised j.
    For α = 0 the value for α = 0.001 is returned (as glmnet does).
    """
    return _lambda_max_from(problem, _null_point(problem)[2])


def _null_point(problem: Problem) -> tuple[float, np.ndarray, np.ndarray]:
    """(β0, β, ∇_β loss) at the λ = ∞ solution, where every path starts."""
    beta0, beta = null_fit(problem)
    if beta.any():  # unpenalised predictors were fitted
        return beta0, beta, _loss_gradient(problem, beta0, beta)
    return beta0, beta, null_gradient(problem, beta0)


def _lambda_max_from(problem: Problem, null_grad: np.ndarray) -> float:
    pen = problem.penalty
    return float(lambda_max_from_gradient(null_grad, pen.alpha, pen.penalty_factor))


def _loss_gradient(problem: Problem, beta0: float, beta: np.ndarray) -> np.ndarray:
    """∇_β of the mean negative log-likelihood (no penalty) at (β0, β)."""
    no_penalty = replace(problem, penalty=ElasticNet(0.0, problem.penalty.alpha))
    return no_penalty.gradient(beta0, beta)[1]


def lambda_path(
    problem: Problem, n_lambdas: int, min_ratio: float = LAMBDA_MIN_RATIO
) -> np.ndarray:
    """``n_lambdas`` values log-spaced from λ_max down to ``min_ratio``·λ_max."""
    return geometric_path(lambda_max(problem), n_lambdas, min_ratio)


@dataclass
class PathResult:
    """Solutions along a path, one row per λ (in the order given).

    For several responses solved together (:func:`batched_path`) every field has a
    second axis of length G after the λ axis: intercepts (K, G), coefs (K, G, p).
    """

    reg_lambdas: np.ndarray  # (n_lambdas,)
    intercepts: np.ndarray  # (n_lambdas,)
    coefs: np.ndarray  # (n_lambdas, n_features)
    n_iter: np.ndarray  # (n_lambdas,)
    kkt: np.ndarray  # (n_lambdas,)
    converged: np.ndarray  # (n_lambdas,) bool
    theta: np.ndarray | None = None  # (n_lambdas,): the NB size at each λ, when estimated


def _restrict(problem: Problem, penalty: ElasticNet, keep: np.ndarray) -> Problem:
    """The problem on the columns ``keep`` only (the others fixed at 0)."""
    sub = replace(problem, penalty=penalty.restrict(keep), X=problem.X[:, keep], cache={})
    cache = problem.cache
    if "scaling" in cache:  # the full design's transform, restricted: nothing recomputed
        sub.cache["scaling"] = cache["scaling"].columns(keep)
        scaled = cache["X_scaled"]
        sub.cache["X_scaled"] = (
            None if scaled is None else (sub.X if cache["scaling"].identity else scaled[:, keep])
        )
    return sub


def fit_path(
    problem: Problem,
    reg_lambdas: np.ndarray,
    solver: str,
    options: dict,
    *,
    screening: bool = True,
    theta_method: str | None = None,
) -> PathResult:
    """Solve ``problem`` at every λ of ``reg_lambdas``, warm-starting each from the previous.

    With ``screening`` (and α > 0) the sequential strong rule discards predictor j
    at λ_k when |∇_j J(λ_{k−1} solution)| < α(2λ_k − λ_{k−1}); after solving on the
    kept predictors, any discarded one that violates its KKT condition
    |∇_j| ≤ λ_k·α is brought back and the problem solved again, so every solution
    meets the same KKT tolerance as a single fit.

    ``problem.penalty`` supplies α, Γ and the penalty factors; its λ is ignored. With
    ``theta_method`` ("ml" or "cox-reid") the negative-binomial θ is estimated with β at
    every λ (:func:`stglm._theta.fit_theta`), warm-started from the previous λ's.
    """
    p = problem.n_features
    alpha = problem.penalty.alpha
    factor = problem.penalty.penalty_factor
    f = np.ones(p) if factor is None else factor
    options = dict(options)
    if solver == "irls-cd":
        if problem.n_features <= newton_options(options).gram_max_features:
            scaled_design(problem)  # once for the path; screened sub-problems slice it
        if "scale" not in options:
            options["scale"] = tolerance_scale(problem)  # one scale for the whole path
    k = len(reg_lambdas)
    out = PathResult(
        np.asarray(reg_lambdas, dtype=float),
        np.zeros(k),
        np.zeros((k, p)),
        np.zeros(k, dtype=int),
        np.zeros(k),
        np.zeros(k, dtype=bool),
    )
    # Smooth gradient of J at the previous solution; the path starts from the null model
    # (solved once: it is a Newton fit itself with an offset or unpenalised predictors).
    beta0, beta, grad = _null_point(problem)
    prev_lam = _lambda_max_from(problem, grad)
    theta = None
    if theta_method is not None:
        out.theta = np.zeros(k)
    for i, lam in enumerate(out.reg_lambdas):
        penalty = problem.penalty.with_lambda(lam)
        full = replace(problem, penalty=penalty)  # shares the design's cached work
        if screening and alpha > 0:
            keep = (np.abs(grad) >= alpha * f * (2 * lam - prev_lam)) | (beta != 0) | (f == 0)
        else:
            keep = np.ones(p, dtype=bool)
        n_iter = 0
        while True:
            idx = np.flatnonzero(keep)
            target = full if idx.size == p else _restrict(problem, penalty, idx)
            begin = (beta0, beta if idx.size == p else beta[idx])
            if theta_method is None:
                res = solve(target, solver, options, start=begin)
            else:
                fit = fit_theta(
                    target, theta_method, solver, options, begin, theta, design=problem.X
                )
                res, theta = fit.result, fit.theta
                full = replace(full, family=problem.family.with_theta(float(theta[0])))
            new_beta = res.beta
            if idx.size < p:
                new_beta = np.zeros(p)
                new_beta[idx] = res.beta
            n_iter += res.n_iter
            g0, g = full.gradient(res.beta0, new_beta)
            tol_abs = options["tol"] * options.get("scale", 1.0)
            violators = ~keep & (np.abs(g) > lam * alpha * f + tol_abs)
            if not violators.any():
                break
            keep |= violators  # a strong-rule mistake: bring them back and solve again
        beta0, beta = res.beta0, new_beta
        grad, prev_lam = g, lam
        out.intercepts[i], out.coefs[i] = beta0, beta
        out.n_iter[i], out.kkt[i], out.converged[i] = n_iter, res.kkt, res.converged
        if theta is not None:
            out.theta[i] = theta[0]
        if idx.size < p:  # the sub-problem's residual ignores discarded columns: take the full one
            l1 = penalty.l1_weights
            out.kkt[i] = kkt_residual(g, beta, l1, g0 if problem.fit_intercept else None)
    return out


def batched_path(
    solver: BatchedNewtonCD,
    Y: np.ndarray,
    reg_lambdas: np.ndarray,
    weights: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    offset: np.ndarray | None = None,
    theta: np.ndarray | None = None,
    theta_method: str | None = None,
) -> PathResult:
    """Warm-started paths for every column of Y (n, G), solved together.

    ``reg_lambdas`` is (G, K), each row decreasing; ``weights`` (n, G) are the columns'
    sample weights (0/1 for training folds); ``scale`` the columns' tolerance scales
    (computed once for the whole path when None); ``offset`` (n,) or (n, G) and ``theta``
    (G,) as in :meth:`BatchedNewtonCD.solve`. With ``theta_method`` each gene's θ is
    estimated with β at every λ (:func:`stglm._theta.batched_theta`), warm-started from the
    previous λ's (``theta``, if given, is the first λ's start). No screening: with the few
    predictors a batched design has, every Hessian comes from one product anyway.
    """
    d = solver.design
    if scale is None:
        scale = tolerance_scales(solver.family, d.X, Y, d.fit_intercept, d.X_abs, weights, offset)
    G, K = reg_lambdas.shape
    out = PathResult(
        reg_lambdas.T.copy(),
        np.zeros((K, G)),
        np.zeros((K, G, d.X.shape[1])),
        np.zeros((K, G), dtype=int),
        np.zeros((K, G)),
        np.zeros((K, G), dtype=bool),
    )
    # Column-major once: every solve copies Y and the weights into its gene-major rows,
    # which is then one contiguous copy instead of a transposition (11 % of a Visium CV).
    Y = np.asfortranarray(Y)
    weights = None if weights is None else np.asfortranarray(weights)
    start, terms = None, None
    if theta_method is not None:
        out.theta = np.zeros((K, G))
    for k in range(K):
        if theta_method is None:
            res = solver.solve(
                Y, reg_lambdas[:, k], start, scale, weights, terms, True, offset, theta
            )
            terms = res.terms
        else:
            fit = batched_theta(
                solver, Y, reg_lambdas[:, k], theta_method, start=start, scale=scale,
                weights=weights, offset=offset, theta_start=theta,
            )  # fmt: skip
            res, theta = fit.result, fit.theta
            out.theta[k] = theta
        out.intercepts[k], out.coefs[k] = res.intercepts, res.coefs
        out.n_iter[k], out.kkt[k], out.converged[k] = res.n_iter, res.kkt, res.converged
        start = np.column_stack([res.intercepts, res.coefs]) if d.fit_intercept else res.coefs
    return out


def clip(coefs: np.ndarray, clip_coeffs: float) -> np.ndarray:
    """Coefficients with |β_j| < ``clip_coeffs`` set to 0 (spateo's ``clip_coeffs``)."""
    return np.where(np.abs(coefs) < clip_coeffs, 0.0, coefs)


def score_path(
    family: Family,
    X,
    Y: np.ndarray,
    intercepts: np.ndarray,
    coefs: np.ndarray,
    *,
    fit_intercept: bool,
    metric: str,
    y_null: np.ndarray,
    sample_weight: np.ndarray | None = None,
    offset: np.ndarray | None = None,
    theta: np.ndarray | None = None,
) -> np.ndarray:
    """Score of each response at each λ of a path on (X, Y); shape (G, K).

    ``Y`` is (n, G); ``intercepts`` (K, G) and ``coefs`` (K, G, p) hold the (clipped) path of
    every response; ``metric`` is "deviance" or "pseudo_r2" (null means ``y_null``, (G,) or,
    with an offset, (n, G)). ``sample_weight`` (n,) weights the deviance; ``offset``, (n,)
    or (n, G), enters every linear predictor; ``theta`` (K, G) are the negative-binomial
    sizes at each λ when they were estimated along the path.
    """
    n_lambdas = intercepts.shape[0]
    if Y.shape[1] == 1 and n_lambdas > 1:
        # One response: its λ's play the role of responses, so one matrix product scores
        # the whole path (and the family carries each λ's θ).
        fam = family if theta is None else family.with_theta(theta[:, 0])
        y_null = np.asarray(y_null, dtype=float)
        null = y_null if y_null.ndim == 2 else np.full(n_lambdas, float(y_null.reshape(-1)[0]))
        return score_path(
            fam, X, np.repeat(Y, n_lambdas, axis=1), intercepts.T, coefs.transpose(1, 0, 2),
            fit_intercept=fit_intercept, metric=metric, y_null=null,
            sample_weight=sample_weight, offset=offset,
        ).T  # fmt: skip
    M = None if sample_weight is None else np.asarray(sample_weight, dtype=float).reshape(-1, 1)
    if offset is not None:
        offset = np.asarray(offset, dtype=float)
        offset = offset[:, None] if offset.ndim == 1 else offset
    families = [family if theta is None else family.with_theta(theta[k]) for k in range(n_lambdas)]
    # The saturated term depends on θ alone: once for a path of fixed θ.
    varying = theta is not None
    saturated = [saturated_sums(fam, Y, M) for fam in (families if varying else families[:1])]
    null_mu = None if metric == "deviance" else np.asarray(y_null, dtype=float)
    ll, null_ll = _loglik_sums(
        families, X, Y, intercepts, coefs, fit_intercept, M, offset, null_mu, varying
    )
    out = np.empty((Y.shape[1], n_lambdas))
    for k in range(n_lambdas):
        sat = saturated[k if varying else 0]
        dev = 2.0 * (sat - ll[k])
        if null_ll is None:
            out[:, k] = dev
        else:
            out[:, k] = r2_from_deviances(dev, 2.0 * (sat - null_ll[k if varying else 0]))
    return out


def _loglik_sums(families, X, Y, intercepts, coefs, fit_intercept, M, offset, null_mu, varying):
    """(Σm·ℓ at each λ's fit (K, G), Σm·ℓ at the null means (K or 1, G) or None).

    A block of rows at a time, so that the (rows, G) temporaries stay small for any n;
    ``null_mu`` (G,) or (n, G) are the null means (None: no null deviance), whose term
    depends on each λ's family only where θ is ``varying``.
    """
    K, G = len(families), Y.shape[1]
    ll = np.zeros((K, G))
    null_ll = None if null_mu is None else np.zeros((K if varying else 1, G))
    step = max(SCORE_MIN_ROWS, SCORE_BLOCK_VALUES // max(1, G))
    for start in range(0, Y.shape[0], step):
        rows = slice(start, start + step)
        Yb, Mb, ob = Y[rows], take(M, rows), take(offset, rows)
        for k, fam in enumerate(families):
            Z = np.asarray(X[rows] @ coefs[k].T, dtype=float)
            if fit_intercept:
                Z += intercepts[k][None, :]
            if ob is not None:
                Z += ob
            ll[k] += weighted_column_sum(fam.loglik(Yb, fam.mean(Z)), Mb)
            if null_ll is not None and (k == 0 or varying):
                mu0 = np.broadcast_to(null_mu[rows] if null_mu.ndim == 2 else null_mu, Yb.shape)
                null_ll[k] += weighted_column_sum(fam.loglik(Yb, mu0), Mb)
    return ll, null_ll


def take(values: np.ndarray | None, rows: slice) -> np.ndarray | None:
    """Rows of a per-sample (n, ·) array that may be None or a broadcast (1, ·) row."""
    if values is None or values.shape[0] == 1:
        return values
    return values[rows]


def saturated_sums(family: Family, Y: np.ndarray, M: np.ndarray | None) -> np.ndarray:
    """Σ_i m_i·ℓ(y_i, y_i) of each column of Y (n, G): the deviance's saturated term.

    For counts the term is exactly 0 where y = 0 (Poisson y·log y − y; negative binomial
    likewise), so only the non-zeros are evaluated, a column at a time.
    """
    if not family.is_count:
        return weighted_column_sum(family.saturated_loglik(Y), M)
    theta = getattr(family, "theta", None)
    per_column = theta is not None and np.ndim(theta) > 0  # θ (G,): one per column
    out = np.zeros(Y.shape[1])
    for j in range(Y.shape[1]):
        y = Y[:, j]
        nz = np.flatnonzero(y)
        fam = family.with_theta(float(np.ravel(theta)[j])) if per_column else family
        values = fam.saturated_loglik(y[nz])
        if M is None:
            out[j] = values.sum()
        else:
            m = M[nz, min(j, M.shape[1] - 1)]
            out[j] = np.where(m != 0, m * values, 0.0).sum()
    return out
