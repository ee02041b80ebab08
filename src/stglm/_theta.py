"""β and the negative-binomial size θ estimated jointly, by alternation.

Given θ, the Newton solver finds the penalised β; given the means μ(β),
:func:`stglm._dispersion.estimate_theta` finds θ (ML, or the Cox–Reid adjusted profile
likelihood). The two steps repeat, each warm-started, until θ changes by less than
``THETA_RTOL`` (relative) for every response: a fixed point is a stationary point of the
joint (adjusted) likelihood in (β, θ) — what ``MASS::glm.nb`` computes, and, for Cox–Reid,
the joint optimum that glmGamPoi's single alternation approaches. The last β is solved at
the last θ. One driver serves single fits (one response) and batches of genes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ._dispersion import THETA_MAX, THETA_MIN, estimate_theta, moment_theta
from ._inference import design_gram

__all__ = [
    "THETA_MAX_ROUNDS",
    "THETA_RTOL",
    "ThetaFit",
    "alternate",
    "batched_theta",
    "fit_theta",
]

#: Relative change of θ between rounds below which the alternation stops.
THETA_RTOL = 1e-8
#: Largest number of (β, θ) rounds.
THETA_MAX_ROUNDS = 100


@dataclass
class ThetaFit:
    """The β solution (whatever the solver returns), θ (G,), θ's status and rounds."""

    result: object
    theta: np.ndarray
    status: np.ndarray
    rounds: int
    converged: np.ndarray


def alternate(
    solve: Callable[[np.ndarray, object], object],
    means: Callable[[object], tuple[np.ndarray, np.ndarray]],
    Y: np.ndarray,
    Mu_null: np.ndarray,
    *,
    method: str,
    sample_weight: np.ndarray | None = None,
    gram: Callable[[np.ndarray], np.ndarray] | None = None,
    design: np.ndarray | None = None,
    theta_start: np.ndarray | None = None,
) -> ThetaFit:
    """Alternate β | θ and θ | β until θ is stationary for every response.

    Parameters
    ----------
    solve : callable
        ``solve(theta, previous)`` returns the β solution for sizes ``theta`` (G,), warm
        started from ``previous`` (None at first).
    means : callable
        ``means(result)`` returns (μ, μ') of a solution, both (G, n) gene-major.
    Y : ndarray of shape (G, n)
        Responses, gene-major.
    Mu_null : ndarray of shape (G, n) or None
        The null model's means, for the first θ (the moment estimate) when no
        ``theta_start`` is given.
    method : {"ml", "cox-reid"}
    sample_weight : ndarray of shape (n,) or (G, n), optional
    gram, design
        The Cox–Reid term's Gram matrices (see :func:`estimate_theta`).
    theta_start : ndarray of shape (G,), optional
        The first θ (a path's previous λ), instead of the moment estimate.
    """
    if theta_start is None:
        theta_start = moment_theta(Y, Mu_null, sample_weight)
    theta = np.clip(np.asarray(theta_start, dtype=float), THETA_MIN, THETA_MAX)
    result = solve(theta, None)
    converged = np.zeros(Y.shape[0], dtype=bool)
    status = np.full(Y.shape[0], "not converged", dtype=object)
    rounds = 0
    while rounds < THETA_MAX_ROUNDS:
        rounds += 1
        Mu, dMu = means(result)
        est = estimate_theta(
            Y, Mu, method=method, sample_weight=sample_weight, mean_deriv=dMu,
            gram=gram, design=design, theta_start=theta,
        )  # fmt: skip
        change = np.abs(est.theta - theta) / theta
        theta, status = est.theta, est.status
        converged = (change <= THETA_RTOL) | np.isin(status, ("all zeros", "no samples"))
        # A θ pinned at a bound moves no further: the alternation is done for that gene.
        converged |= (change <= THETA_RTOL * 1e4) & np.isin(
            status, ("theta at upper bound", "theta at lower bound")
        )
        result = solve(theta, result)
        if converged.all():
            break
    return ThetaFit(result, theta, np.asarray(status, dtype=object), rounds, converged)


def fit_theta(
    problem,
    method: str,
    solver: str,
    options: dict,
    start=None,
    theta_start=None,
    design=None,
) -> ThetaFit:
    """θ and β of a single problem (a negative-binomial family) by :func:`alternate`.

    ``start`` (β0, β) and ``theta_start`` warm-start the alternation (a path's previous λ).
    ``design`` is the X of the Cox–Reid term when it is not ``problem.X``: a screened
    sub-problem of a path keeps the full design's adjustment, so θ does not depend on
    which predictors the strong rules set aside.
    """
    from ._solvers import solve  # the solvers import nothing from here
    from ._solvers.newton_cd import null_fit

    family = problem.family
    y = np.asarray(problem.y, dtype=float)[None, :]
    m = problem.sample_weight

    iterations = []

    def solve_at(theta, previous):
        sub = replace(problem, family=family.with_theta(float(theta[0])))
        begin = start if previous is None else (previous.beta0, previous.beta)
        result = solve(sub, solver, options, start=begin)
        iterations.append(result.n_iter)
        return result

    def means(result):
        z = problem.linear_predictor(result.beta0, result.beta)
        return family.mean(z)[None, :], family.mean_deriv(z)[None, :]

    mu_null = None
    if theta_start is None:
        mu_null = family.mean(problem.linear_predictor(*null_fit(problem)))[None, :]
    else:
        theta_start = np.atleast_1d(np.asarray(theta_start, dtype=float))
    fit = alternate(
        solve_at, means, y, mu_null, method=method, sample_weight=m,
        gram=design_gram(problem.X if design is None else design, problem.fit_intercept),
        theta_start=theta_start,
    )  # fmt: skip
    fit.result.n_iter = int(sum(iterations))  # every round's Newton iterations
    return fit


def batched_theta(
    solver, Y: np.ndarray, lam: np.ndarray, method: str, *, start=None, scale=None,
    weights=None, offset=None, theta_start=None, gram=None,
) -> ThetaFit:  # fmt: skip
    """θ per gene jointly with the batched solver's β at λ ``lam`` (G,), by :func:`alternate`.

    ``Y`` (n, G), ``weights`` (n, G) or (n, 1) and ``offset`` as in
    :meth:`stglm._solvers.batched.BatchedNewtonCD.solve`; the Cox–Reid Gram matrices come
    from the design's pair products (in its scaled coordinates: θ is the same), or from
    ``gram`` (another design's: the full one for a null model).
    """
    family, d = solver.family, solver.design
    n_genes = Y.shape[1]
    iterations = np.zeros(n_genes, dtype=int)
    M = None
    if weights is not None:  # (n, 1) shared by every gene, or (n, G)
        M = weights[:, 0] if weights.shape[1] == 1 else np.ascontiguousarray(weights.T)

    def solve_at(theta, previous):
        begin = start
        if previous is not None:
            begin = previous.coefs
            if d.fit_intercept:
                begin = np.column_stack([previous.intercepts, previous.coefs])
        res = solver.solve(
            Y, lam, begin, scale, weights, None, True, offset, theta
        )  # fmt: skip
        iterations[:] += res.n_iter
        return res

    def means(res):
        Z = res.terms.Z
        return family.mean(Z), family.mean_deriv(Z)

    mu_null = None
    if theta_start is None:
        from ._solvers._null_model import null_intercepts, null_predictors

        icpt = null_intercepts(family, Y, d.fit_intercept, weights, offset)
        mu_null = family.mean(null_predictors(family, Y, icpt, offset)).T
    fit = alternate(
        solve_at, means, np.ascontiguousarray(Y.T), mu_null, method=method,
        sample_weight=M, gram=gram or (lambda W: d.hessians(W, np.ones(W.shape[0]))),
        theta_start=theta_start,
    )  # fmt: skip
    fit.result.n_iter = iterations
    return fit


def null_theta(problem, method: str, solver: str, options: dict) -> float:
    """θ of the λ = ∞ model (intercept and unpenalised predictors), where a path starts.

    Its λ_max is computed at this θ; the Cox–Reid term uses the full design, as every λ
    of the path does.
    """
    from ._penalties import ElasticNet  # light; kept next to its only use

    free = problem.penalty.unpenalised
    free = np.array([], dtype=int) if free is None else free
    sub = replace(
        problem, penalty=ElasticNet(0.0, problem.penalty.alpha), X=problem.X[:, free], cache={}
    )
    return float(fit_theta(sub, method, solver, options, design=problem.X).theta[0])
