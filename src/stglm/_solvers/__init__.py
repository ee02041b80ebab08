"""Solvers for the penalised GLM objective, chosen by name in one place."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ._common import Problem, SolverResult
from ._options import NewtonOptions, newton_options
from ._threads import single_blas_thread
from .gradient_descent import batch_gradient, initial_coefficients
from .newton_cd import newton_cd, null_intercept

__all__ = ["SOLVERS", "NewtonOptions", "Problem", "SolverResult", "newton_options", "solve"]


def _run_batch_gradient(problem: Problem, options: dict, start) -> SolverResult:
    if start is None:
        start = initial_coefficients(
            problem.n_features, problem.fit_intercept, options["random_seed"]
        )
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        result = batch_gradient(
            problem,
            *start,
            learning_rate=options["learning_rate"],
            max_iter=options["max_iter"],
            tol=options["tol"],
        )
        J_start = problem.objective(*start)
        J_end = problem.objective(result.beta0, result.beta)
    if np.isfinite(J_end) and J_end > J_start:
        # The coefficients stopped moving, but uphill: spateo reported such runs as converged.
        warnings.warn(
            f"solver='batch-gradient' ended at a higher objective than it started from "
            f"({J_end:.6g} > {J_start:.6g}): learning_rate={options['learning_rate']!r} is too "
            "large for this problem. Lower it, standardise X, or use solver='irls-cd'.",
            ConvergenceWarning,
            stacklevel=5,  # the caller of GLM.fit
        )
    if not (np.isfinite(result.beta0) and np.all(np.isfinite(result.beta))):
        raise ValueError(
            f"learning_rate={options['learning_rate']!r} is too large for this problem: "
            f"solver='batch-gradient' diverged (non-finite coefficients after {result.n_iter} "
            "iterations). Lower learning_rate, standardise X, or use solver='irls-cd'."
        )
    return result


def _run_newton_cd(problem: Problem, options: dict, start) -> SolverResult:
    if start is None:
        start = (null_intercept(problem), np.zeros(problem.n_features))
    return newton_cd(
        problem,
        *start,
        max_iter=options["max_iter"],
        tol=options["tol"],
        scale=options.get("scale"),
        options=newton_options(options),
    )


#: name -> function(problem, options, start) returning a SolverResult. The first is the default.
SOLVERS = {"irls-cd": _run_newton_cd, "batch-gradient": _run_batch_gradient}


def solve(problem: Problem, solver: str, options: dict, start=None) -> SolverResult:
    """Minimise ``problem`` with the named solver from ``start`` (β0, β) or its default start.

    ``options`` holds the estimator's ``learning_rate``, ``max_iter``, ``tol`` and
    ``random_seed``, optionally ``scale`` (a path's tolerance scale) and ``newton`` (the
    :class:`NewtonOptions` of irls-cd's routes; the defaults when absent).
    """
    with single_blas_thread():
        return SOLVERS[solver](problem, options, start)
