"""β and the negative-binomial size θ estimated jointly, by alternation.

Given θ, the Newton solver finds the penalised β; given the means μ(β),
:func:`stglm._dispersion.estimate_theta` finds θ (ML, or the Cox–Reid adjusted profile
likelihood). The two steps repeat, each warm-started, until θ changes by less than
``THETA_RTOL`` (relative) for every response: a fixed point is a stationary point of the
joint (adjusted) likelihood in (β, θ) — what ``MASS::glm.nb`` computes, and, for Cox–Reid,
the joint optimum that glmGamPoi's single alternation approaches. The last β is solved at
the last θ. One driver serves single fits (one response) and batches of genes.

What keeps the rounds cheap (:func:`alternate`): the counts' tables are built once; after
a first solve of θ, each round takes one Newton step in log θ at the new β (one derivative
pass); only responses not yet stationary are solved again; a batch's first β solve is a
rough one (its θ start is poor anyway). A response whose β has no finite optimum
(separation, :mod:`stglm._separation`: e.g. no count in one tissue section) has its θ
estimated without the samples whose means run to 0 — the θ of the limit model — instead
of from what rounding leaves of them, which kept such genes wandering for dozens of rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from ._dispersion import (
    THETA_MAX,
    THETA_MIN,
    count_tables,
    estimate_theta,
    moment_theta,
    nb_profile,
)
from ._inference import design_gram
from ._penalties import ElasticNet
from ._separation import fit_separation
from ._solvers import solve
from ._solvers._null_model import null_intercepts, null_predictors, tolerance_scales
from ._solvers.newton_cd import null_fit

__all__ = [
    "THETA_MAX_ROUNDS",
    "THETA_RTOL",
    "ThetaFit",
    "alternate",
    "batched_theta",
    "fit_theta",
]

#: Relative change of θ between rounds below which the alternation stops.
THETA_RTOL = 1e-10
#: The batched alternation's first β solve stops at this many times the KKT tolerance: it
#: only has to bring θ's first estimate near (θ starts at a moment estimate of the null
#: model); every later solve, the last included, is at the full tolerance.
FIRST_SOLVE_LOOSENESS = 1e3
#: Tolerance of the profile-likelihood solves of θ (estimate_theta's ``tol``), and of the
#: first one after a rough first β solve.
THETA_SOLVE_TOL, ROUGH_THETA_TOL = 1e-10, 1e-4
#: Longest secant step of the alternation, in plain steps T(t) − t: a linear rate ρ needs
#: 1/(1 − ρ) of them (20: ρ up to 0.95, as genes with one or two counts have).
SECANT_MAX = 20.0
#: Largest number of (β, θ) rounds: most fits settle in 4–6 (the Visium genes: 4.7 on
#: average); genes with one or two counts, whose β and θ are strongly coupled, take up to
#: ~25; a response still moving here is reported "not converged".
THETA_MAX_ROUNDS = 30


@dataclass
class ThetaFit:
    """The β solution (whatever the solver returns), θ (G,), θ's status and rounds.

    ``separated`` (G,) marks the responses whose β has no finite optimum
    (:mod:`stglm._separation`); their θ is the limit model's. :func:`batched_theta` always
    sets it (all False when none is); :func:`fit_theta` leaves it None for a sparse design.
    """

    result: object
    theta: np.ndarray
    status: np.ndarray
    rounds: int
    converged: np.ndarray
    separated: np.ndarray | None = None


def alternate(
    solve: Callable[[np.ndarray, object, np.ndarray], object],
    means: Callable[[object, np.ndarray], tuple[np.ndarray, np.ndarray]],
    Y: np.ndarray,
    Mu_null: np.ndarray | None,
    *,
    method: str,
    sample_weight: np.ndarray | None = None,
    gram: Callable[[np.ndarray], np.ndarray] | None = None,
    design: np.ndarray | None = None,
    theta_start: np.ndarray | None = None,
    separated: np.ndarray | None = None,
    log_link: bool = False,
    rough_start: bool = False,
) -> ThetaFit:
    """Alternate β | θ and θ | β until θ is stationary for every response.

    In t = log θ the alternation is a fixed-point iteration t ← T(t), T(t) the best θ for
    the β that is optimal at t; it converges linearly, at the rate of the coupling between
    β and θ. A secant step on T(t) − t (kept only when it moves no more than
    ``SECANT_MAX`` plain steps) makes it superlinear, and only responses not yet stationary are
    solved again. A response is done when |T(t) − t| ≤ ``THETA_RTOL``; its θ is then the
    one its β was solved at (the pair is consistent to the last bit).

    The first θ step solves each response's profile likelihood (:func:`estimate_theta`);
    after an interior maximum, T(t) − t is taken as the Newton step −s/h of that profile at
    the new β (one derivative pass instead of a solve: both vanish at the same fixed
    point, and the step is T(t) − t up to its square). Where that profile is not concave
    there, the step is long (> 1 in log θ) or it would cross a bound, the next step solves
    again.

    Parameters
    ----------
    solve : callable
        ``solve(theta, previous, rows)`` returns the β solution with sizes ``theta`` for the
        responses ``rows`` (all of them, ``previous`` None, at first), warm-started from
        ``previous`` and merged into it.
    means : callable
        ``means(result, rows)`` returns (μ, μ') of those responses, both (k, n).
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
    separated : ndarray of shape (G, n), bool, optional
        Each response's separated samples (:func:`stglm._separation.separated_samples`):
        the θ steps leave them out, so θ is the one of the limit model their β runs
        towards (their means → 0; kept, they would leave only rounding noise in ℓ_CR).
    log_link : bool, default=False
        Whether μ' = μ (the Cox–Reid weights then need no μ').
    rough_start : bool, default=False
        Whether the first β solve was a rough one (a looser tolerance): then every response
        is solved again, at least once.
    """
    n_genes, n = Y.shape
    step = _ThetaStep(Y, method, sample_weight, separated, gram, design, log_link, rough_start)
    if theta_start is None:
        theta_start = moment_theta(Y, Mu_null, sample_weight)
    lo, hi = np.log(THETA_MIN), np.log(THETA_MAX)
    t = np.clip(np.log(np.asarray(theta_start, dtype=float)), lo, hi)
    rows = np.arange(n_genes)

    def size(t_rows: np.ndarray) -> np.ndarray:  # the bounds exactly, not exp(log(bound))
        return np.where(t_rows >= hi, THETA_MAX, np.where(t_rows <= lo, THETA_MIN, np.exp(t_rows)))

    result = solve(size(t), None, rows)
    t_prev = np.full(n_genes, np.nan)
    g_prev = np.full(n_genes, np.nan)
    converged = np.zeros(n_genes, dtype=bool)
    rounds = 0
    while rows.size and rounds < THETA_MAX_ROUNDS:
        rounds += 1
        tk = t[rows]
        g = step(rows, *means(result, rows), size(tk))  # T(t) − t
        done = np.abs(g) <= THETA_RTOL
        if rough_start and rounds == 1:
            done[:] = False
        done |= np.isin(step.status[rows], ("all zeros", "no samples"))
        converged[rows[done]] = True
        # The next t: a secant step on T(t) − t where the last round gives a slope, else
        # T(t) itself; the secant is kept only when it is no wilder than SECANT_MAX plain steps.
        dg = g - g_prev[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            secant = tk - g * (tk - t_prev[rows]) / dg
        keep = np.isfinite(secant) & (np.abs(secant - tk) <= SECANT_MAX * np.abs(g))
        nxt = np.clip(np.where(keep, secant, tk + g), lo, hi)
        step.newton[rows[(nxt <= lo) | (nxt >= hi)]] = False  # at a bound: solve there
        t_prev[rows], g_prev[rows] = tk, g
        rows = rows[~done]
        t[rows] = nxt[~done]
        if rows.size:
            result = solve(size(t[rows]), result, rows)
    has = None if separated is None else separated.any(axis=1)
    return ThetaFit(result, size(t), step.status, rounds, converged, has)


class _ThetaStep:
    """The θ | β step of :func:`alternate`: T(t) − t for some responses at their new means.

    Keeps what the rounds share — the θ steps' weights (the separated samples left out),
    the count tables (the counts never change) — and which responses may take a Newton
    step instead of a solve (``newton``), with each response's last θ status.
    """

    def __init__(self, Y, method, sample_weight, separated, gram, design, log_link, rough_start):
        n_genes, n = Y.shape
        self.Y, self.method, self.gram, self.design = Y, method, gram, design
        self.log_link = log_link
        self.weights = sample_weight
        self.tables = count_tables(Y, sample_weight)
        if separated is not None:
            base = np.ones((1, n)) if sample_weight is None else np.atleast_2d(sample_weight)
            self.weights = np.where(separated, 0.0, base)
            # The separated samples are zeros: the tables are the same, their total not.
            self.tables.total_weight = self.weights.sum(axis=1)
        self.newton = np.zeros(n_genes, dtype=bool)
        # A rough first round (its β solved roughly, and it finishes no response) needs no
        # precise θ: the Newton steps of the rounds to come refine it.
        self.tol = ROUGH_THETA_TOL if rough_start else THETA_SOLVE_TOL
        # After a rough first β, the moment estimate at its means starts the first solve
        # (the alternation's start was the null model's); warm starts from then on.
        self.warm = not rough_start
        self.status = np.full(n_genes, "not converged", dtype=object)

    def _kwargs(self, rows: np.ndarray, dMu: np.ndarray) -> dict:
        w = self.weights
        if w is not None and w.ndim == 2 and w.shape[0] > 1:
            w = w[rows]
        return dict(
            method=self.method, sample_weight=w, mean_deriv=None if self.log_link else dMu,
            gram=self.gram, design=self.design, tables=self.tables.take(rows), check_input=False,
        )  # fmt: skip

    def __call__(self, rows, Mu, dMu, theta) -> np.ndarray:
        """T(t) − t at θ for the responses ``rows`` with means Mu (and μ' dMu)."""
        g = np.empty(rows.size)
        quick = self.newton[rows]
        if quick.any():
            q = np.flatnonzero(quick)
            profile = nb_profile(self.Y[rows[q]], Mu[q], **self._kwargs(rows[q], dMu[q]))
            dt = profile.newton_step(theta[q])
            ok = np.abs(dt) <= 1.0  # (NaN where ℓ is not concave in log θ there)
            g[q[ok]] = dt[ok]
            quick[q[~ok]] = False
        full = np.flatnonzero(~quick)
        if full.size:
            r = rows[full]
            est = estimate_theta(
                self.Y[r], Mu[full], theta_start=theta[full] if self.warm else None,
                tol=self.tol, with_loglik=False, **self._kwargs(r, dMu[full]),
            )  # fmt: skip
            self.tol, self.warm = THETA_SOLVE_TOL, True
            self.status[r] = est.status
            self.newton[r] = est.status == "converged"
            g[full] = np.log(est.theta) - np.log(theta[full])
        return g


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
    family = problem.family
    y = np.asarray(problem.y, dtype=float)[None, :]
    m = problem.sample_weight

    iterations = []

    def solve_at(theta, previous, rows):
        sub = replace(problem, family=family.with_theta(float(theta[0])))
        begin = start if previous is None else (previous.beta0, previous.beta)
        result = solve(sub, solver, options, start=begin)
        iterations.append(result.n_iter)
        return result

    def means(result, rows):
        z = problem.linear_predictor(result.beta0, result.beta)
        return family.mean(z)[None, :], family.mean_deriv(z)[None, :]

    mu_null = None
    if theta_start is None:
        mu_null = family.mean(problem.linear_predictor(*null_fit(problem)))[None, :]
    else:
        theta_start = np.atleast_1d(np.asarray(theta_start, dtype=float))
    separated = None
    if not sp.issparse(problem.X):
        pen = problem.penalty
        separated = fit_separation(
            family, problem.X, y, pen.reg_lambda, pen.penalty_factor, m, problem.fit_intercept
        )
    fit = alternate(
        solve_at, means, y, mu_null, method=method, sample_weight=m,
        gram=design_gram(problem.X if design is None else design, problem.fit_intercept),
        theta_start=theta_start, separated=separated, log_link=family.link_name == "log",
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
    lam = np.broadcast_to(np.asarray(lam, dtype=float), (n_genes,))
    iterations = np.zeros(n_genes, dtype=int)
    M = None
    if weights is not None:  # (n, 1) shared by every gene, or (n, G)
        M = weights[:, 0] if weights.shape[1] == 1 else np.ascontiguousarray(weights.T)
    # The null model: θ's moment start and the solver's tolerance scales, which depend on
    # the data alone: computed once here, not again for every round's solve.
    Z0 = None
    if theta_start is None or scale is None:
        Z0 = null_predictors(
            family, Y, null_intercepts(family, Y, d.fit_intercept, weights, offset), offset
        )
    if scale is None:
        scale = tolerance_scales(family, d.X, Y, d.fit_intercept, d.X_abs, weights, offset, Z0)

    def solve_at(theta, previous, rows):
        if previous is None:
            res = solver.solve(
                Y, lam, start, FIRST_SOLVE_LOOSENESS * scale, weights, None, True, offset, theta
            )
            iterations[:] += res.n_iter
            return res
        # Only the responses not yet stationary, warm-started, merged into the previous.
        begin = previous.coefs[rows]
        if d.fit_intercept:
            begin = np.column_stack([previous.intercepts[rows], begin])
        sub = solver.solve(
            Y[:, rows], lam[rows], begin, scale[rows], _columns(weights, rows), None, True,
            _columns(offset, rows), theta,
        )  # fmt: skip
        iterations[rows] += sub.n_iter
        _merge(previous, sub, rows)
        return previous

    log_link = family.link_name == "log"

    def means(res, rows):
        Z = res.terms.Z[rows]
        Mu = family.mean(Z)
        return Mu, (Mu if log_link else family.mean_deriv(Z))  # μ' = μ for the log link

    mu_null = None if theta_start is not None else family.mean(Z0).T
    Yt = np.ascontiguousarray(Y.T)
    fit = alternate(
        solve_at, means, Yt, mu_null, method=method, sample_weight=M,
        gram=gram or (lambda W: d.hessians(W, np.ones(W.shape[0]))), theta_start=theta_start,
        separated=fit_separation(
            family, d.X, Yt, lam, solver.penalty.penalty_factor, M, d.fit_intercept
        ),
        log_link=log_link, rough_start=True,
    )  # fmt: skip
    fit.result.n_iter = iterations
    if fit.separated is None:  # none found: every gene's flag, for fit_genes' "separated"
        fit.separated = np.zeros(n_genes, dtype=bool)
    return fit


def _columns(values: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """Per-gene columns of an (n, G) array for ``rows``; an (n,) or (n, 1) one is shared."""
    if values is None or values.ndim == 1 or values.shape[1] == 1:
        return values
    return values[:, rows]


def _merge(full, sub, rows: np.ndarray) -> None:
    """Write the batch result ``sub`` of the responses ``rows`` into ``full``, in place."""
    full.intercepts[rows], full.coefs[rows] = sub.intercepts, sub.coefs
    full.converged[rows], full.kkt[rows] = sub.converged, sub.kkt
    if full.nll is not None:  # the mean −ℓ at the solutions (the in-sample deviance's)
        full.nll[rows] = sub.nll
    for name in ("Z", "R", "W", "nll", "H"):
        getattr(full.terms, name)[rows] = getattr(sub.terms, name)


def null_theta(problem, method: str, solver: str, options: dict) -> float:
    """θ of the λ = ∞ model (intercept and unpenalised predictors), where a path starts.

    Its λ_max is computed at this θ; the Cox–Reid term uses the full design, as every λ
    of the path does.
    """
    free = problem.penalty.unpenalised
    free = np.array([], dtype=int) if free is None else free
    sub = replace(
        problem, penalty=ElasticNet(0.0, problem.penalty.alpha), X=problem.X[:, free], cache={}
    )
    return float(fit_theta(sub, method, solver, options, design=problem.X).theta[0])
