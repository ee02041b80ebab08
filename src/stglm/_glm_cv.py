"""GLMCV: choose λ by cross-validation along a warm-started regularisation path."""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._cv import (
    EXTENSION_DECADES,
    Scoring,
    batch_bytes,
    batched_fold_paths,
    cross_validate,
    empty_training_folds,
    extended_grid,
    lambda_grid,
    make_folds,
    path_min_ratio,
    separate_fold_paths,
    warn_choice,
)
from ._glm import COMMON_CONSTRAINTS, GLM, _GLMBase
from ._path import PathResult, clip, lambda_max
from ._penalties import ElasticNet
from ._solvers import Problem
from ._theta import null_theta
from ._validation import AnyOf, Boolean, Integer, JobCount, Options, Real, RealSequence

logger = logging.getLogger("stglm")

__all__ = ["GLMCV"]


class GLMCV(_GLMBase):
    """Penalised GLM with λ chosen by K-fold cross-validation (spateo's ``GLMCV``).

    The path is solved on each training fold with warm starts, scored on the
    held-out fold, and the model is refitted on all data at the chosen λ. For a
    dense design of at most 64 predictors (with the default solver), the folds and
    the full data are solved together, as one batch of sample-weighted problems
    sharing one design (each Newton iteration forms all their Hessians with one
    matrix product); otherwise each fold's path is solved on its own, with
    strong-rule screening.

    Parameters
    ----------
    distr, alpha, Tau, learning_rate, max_iter, tol, eta, clip_coeffs, score_metric, \
fit_intercept, random_seed, theta, verbose, solver, link, penalty_factor
        As in :class:`GLM`. ``random_seed`` also seeds the shuffling of the folds. An
        estimated ``theta`` ("ml" or "cox-reid") is re-estimated at every λ of every
        fold's path jointly with β, warm-started from the previous λ's (θ is part of the
        model at each λ, as the refit at the chosen λ estimates it); ``theta_path_`` holds
        the full data's.
    reg_lambda : list of float or None, default=None
        The λ values to try, used as given but sorted decreasingly. None gives
        ``n_lambdas`` values log-spaced from λ_max — the smallest λ at which every β
        is 0: ‖∇_β loss at the null model‖∞/α (for α = 0 the value for α = 0.001,
        glmnet's convention) — down to ``lambda_min_ratio``·λ_max.
    n_lambdas : int, default=25
        Length of the data-driven path.
    cv : int, cross-validation splitter or iterable of (train, test), default=5
        An integer gives that many shuffled folds drawn from ``random_seed``
        (``KFold(cv, shuffle=True, random_state=random_seed)``); a splitter such as
        ``PredefinedSplit(fold_ids)`` or a list of (train, test) index arrays is used
        as given.
    select : {"best", "one_se"}, default="best"
        "best" picks the λ with the lowest mean CV deviance (or highest mean
        pseudo-R²); "one_se" the largest λ whose mean score is within one standard
        error (std over folds / √K) of the best. A λ whose mean score is NaN (a held-out
        mean outside the family's range, or an overflow) is never chosen, with a warning.
    lambda_min_ratio : float in (0, 1) or "auto", default="auto"
        End of the data-driven path as a fraction of λ_max. "auto" is glmnet's default:
        1e-4 with at least as many samples as features, 1e-2 with fewer; and when the
        chosen λ is the path's end while the mean held-out score was still improving
        there — by more than 1e-5 of what the whole path improved it, over the last step
        (glmnet's ``fdev``, at which glmnet ends its path; a flatter end has reached the
        unpenalised fit's score) — the path is extended by two more decades at the same
        spacing and cross-validated again (``reg_lambda_path_`` and the other path
        attributes are then longer than ``n_lambdas``). A number is used as given. A
        choice of the end of the final path, still improving, warns
        (:class:`stglm._errors.BoundaryWarning`): a smaller ratio extends the path.
    screening : bool, default=True
        Use sequential strong rules (with a KKT check) along each fold's own path (not
        used by the batched solve, which forms every Hessian in one product anyway).
    n_jobs : int or None, default=None
        Folds fitted in parallel with joblib (None: one process) when each fold's path
        is solved on its own (sparse or wider designs, or ``solver="batch-gradient"``);
        the batched solve of a small dense design runs in one thread.

    Attributes
    ----------
    reg_lambda_path_ : ndarray of shape (n_lambdas,)
        The λ values, decreasing.
    cv_scores_ : ndarray of shape (n_folds, n_lambdas)
        Held-out score of each fold at each λ (deviance summed over the fold's
        samples, or pseudo-R²).
    scores_ : ndarray of shape (n_lambdas,)
        Mean of ``cv_scores_`` over folds.
    scores_se_ : ndarray of shape (n_lambdas,)
        Standard error of the mean over folds, std(ddof=1)/√K.
    reg_lambda_opt_ : float
        The chosen λ.
    best_index_ : int
        Its position in ``reg_lambda_path_``.
    glm_ : GLM
        Model refitted on all data at ``reg_lambda_opt_``.
    beta0_, beta_ : float, ndarray of shape (n_features,)
        ``glm_``'s intercept and coefficients.
    coef_path_ : ndarray of shape (n_lambdas, n_features)
        Coefficients fitted on all data at each λ (after ``clip_coeffs``).
    intercept_path_ : ndarray of shape (n_lambdas,)
        Intercepts fitted on all data at each λ.
    folds_ : list of (train, test) index arrays
        The folds used.
    ynull_ : float
        (Weighted) mean of the training y.
    theta_, theta_status_ : float, str
        ``glm_``'s θ and how it was estimated (see :class:`GLM`).
    theta_path_ : ndarray of shape (n_lambdas,)
        θ at each λ on all data (the fixed value when not estimated).
    n_iter_ : int
        Total solver iterations over all folds and λ.
    """

    _constraints = {
        **COMMON_CONSTRAINTS,
        "reg_lambda": RealSequence(Real(0.0, None, closed="left")),
        "n_lambdas": Integer(1, None, closed="left"),
        "select": Options(("best", "one_se")),
        "lambda_min_ratio": AnyOf(
            Options(("auto",)), Real(0.0, 1.0, closed="neither"), description="'auto' or in (0, 1)"
        ),
        "screening": Boolean(),
        "n_jobs": JobCount(),
    }

    def __init__(
        self,
        distr: str = "poisson",
        alpha: float = 0.5,
        Tau: np.ndarray | None = None,
        reg_lambda: list[float] | None = None,
        n_lambdas: int = 25,
        cv: Any = 5,
        learning_rate: float = 0.2,
        max_iter: int = 1000,
        tol: float = 1e-6,
        eta: float = 2.0,
        clip_coeffs: float = 0.01,
        score_metric: str = "deviance",
        fit_intercept: bool = True,
        random_seed: int = 888,
        theta: float = 1.0,
        verbose: bool = True,
        *,
        solver: str = "irls-cd",
        select: str = "best",
        lambda_min_ratio: float | str = "auto",
        screening: bool = True,
        n_jobs: int | None = None,
        link: str | None = None,
        penalty_factor: Any = None,
    ):
        self.distr = distr
        self.alpha = alpha
        self.Tau = Tau
        self.reg_lambda = reg_lambda
        self.n_lambdas = n_lambdas
        self.cv = cv
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.tol = tol
        self.eta = eta
        self.clip_coeffs = clip_coeffs
        self.score_metric = score_metric
        self.fit_intercept = fit_intercept
        self.random_seed = random_seed
        self.theta = theta
        self.verbose = verbose
        self.solver = solver
        self.select = select
        self.lambda_min_ratio = lambda_min_ratio
        self.screening = screening
        self.n_jobs = n_jobs
        self.link = link
        self.penalty_factor = penalty_factor

    # -- helpers -----------------------------------------------------------------------------
    def _theta_method(self) -> str | None:
        return self.theta if self._estimates_theta() else None

    def _batchable(self, X, n_folds: int) -> bool:
        """Whether the folds and the refit are solved as one batch (see the class doc).

        Besides a small dense design (``NewtonOptions.batched_max_features``), the batch's
        working arrays (:func:`stglm._cv.batch_bytes` of the folds and the full data, e.g.
        for leave-one-out on many samples) must fit the same memory budget as the design's
        pair products (``NewtonOptions.batch_bytes_budget``).
        """
        n, p = X.shape
        m = p + int(self.fit_intercept)
        budget = self._newton_options.batch_bytes_budget
        return (
            self.solver == "irls-cd"
            and not sp.issparse(X)
            and p <= self._newton_options.batched_max_features
            and 8 * n * m * (m + 1) // 2 <= budget
            and batch_bytes(n, n_folds + 1) <= budget
        )

    def _paths(self, problem: Problem, lams, folds) -> tuple[list[PathResult], PathResult]:
        """The folds' paths (the (K, 1) layout) and the full data's, by the route that fits."""
        if self._batchable(problem.X, len(folds)):
            return batched_fold_paths(
                problem, lams, folds, max_iter=self.max_iter, tol=self.tol,
                theta_method=self._theta_method(), options=self._newton_options,
            )  # fmt: skip
        return separate_fold_paths(
            problem, lams, folds, self.solver, self._solver_options(), screening=self.screening,
            theta_method=self._theta_method(), n_jobs=self.n_jobs,
        )  # fmt: skip

    def _lambdas(self, problem: Problem) -> np.ndarray:
        """The path's λ values: as given, or from λ_max at the λ = ∞ model (its own θ)."""
        lmax = None
        if self.reg_lambda is None:
            if self._estimates_theta():
                theta0 = null_theta(problem, self.theta, self.solver, self._solver_options())
                problem = replace(problem, family=problem.family.with_theta(theta0))
            lmax = lambda_max(problem)
        return lambda_grid(self.reg_lambda, self.n_lambdas, self._min_ratio(problem.X), lmax)

    def _cross_validate(self, problem: Problem, lams, folds, scoring: Scoring):
        """(the full data's path, the CV result) along ``lams``."""
        paths, full = self._paths(problem, lams, folds)
        test_X = (problem.X[test] for _, test in folds)  # one fold's at a time
        w = problem.sample_weight
        cv = cross_validate(
            paths, folds, test_X, problem.y[:, None], w, problem.offset, scoring, self.select
        )
        return full, cv

    def _extends(self) -> bool:
        """Whether a path still improving at its end is extended (the "auto" path only)."""
        return self.reg_lambda is None and isinstance(self.lambda_min_ratio, str)

    def _min_ratio(self, X) -> float:
        """The path's end as a fraction of λ_max (``lambda_min_ratio``, "auto" resolved)."""
        return path_min_ratio(self.lambda_min_ratio, *X.shape)

    # -- fit ---------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, sample_weight: Any = None, offset: Any = None) -> GLMCV:
        """Cross-validate the path, choose λ and refit on all data.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight, offset : array-like of shape (n_samples,), default=None
            As in :meth:`GLM.fit`; the folds split them with the samples, and held-out
            deviances are weighted by them.

        Returns
        -------
        GLMCV
            The fitted estimator.

        Warns
        -----
        BoundaryWarning
            When the chosen λ is the smallest of a path of several (see
            ``lambda_min_ratio``).
        UserWarning
            When the mean CV score is NaN at some λ (never chosen), or a training fold
            of a count response has no counts.
        """
        family, X, y, Tau, data = self._validate(X, y, sample_weight, offset)
        folds = make_folds(self.cv, X.shape[0], self.random_seed, X, y)
        w = data["sample_weight"]
        if family.is_count:
            _warn_empty_folds(y if w is None else y * w, folds)
        penalty = ElasticNet(0.0, self.alpha, Tau, data["penalty_factor"])
        problem = Problem(family, penalty, X, y, self.fit_intercept, w, data["offset"])
        scoring = Scoring(family, self.score_metric, self.clip_coeffs, self.fit_intercept)
        lams = self._lambdas(problem)
        full, cv = self._cross_validate(problem, lams, folds, scoring)
        min_ratio, n_iter = self._min_ratio(X), 0
        if self._extends() and cv.at_boundary[0]:  # "auto": extend a path still improving
            n_iter = int(cv.n_iter.sum()) + int(full.n_iter.sum())  # the first pass's work
            lams, min_ratio = extended_grid(lams), min_ratio * 10.0**-EXTENSION_DECADES
            full, cv = self._cross_validate(problem, lams, folds, scoring)
        warn_choice(
            cv.at_boundary, cv.nan_scores, given_lambdas=self.reg_lambda is not None,
            lambda_min_ratio=min_ratio,
        )  # fmt: skip
        self.n_iter_ = n_iter + int(cv.n_iter.sum()) + int(full.n_iter.sum())
        self.cv_scores_ = cv.cv_scores[:, 0, :]
        self.scores_, self.scores_se_ = cv.scores[0], cv.se[0]
        self.reg_lambda_path_ = lams
        self.folds_ = folds
        self.best_index_ = int(cv.best[0])
        self.reg_lambda_opt_ = float(lams[self.best_index_])
        self.coef_path_ = clip(full.coefs, self.clip_coeffs)
        self.intercept_path_ = full.intercepts
        fixed_theta = float(getattr(family, "theta", 1.0))
        self.theta_path_ = np.full(len(lams), fixed_theta) if full.theta is None else full.theta
        # The full-data path already holds the refit at the chosen λ: start from it.
        start = (full.intercepts[self.best_index_], full.coefs[self.best_index_])
        self._refit(family, X, y, Tau, data, start)
        if self.verbose:
            logger.info(
                "GLMCV(%s): chose lambda=%.4g (index %d of %d) by %s %s",
                self.distr,
                self.reg_lambda_opt_,
                self.best_index_,
                len(lams),
                self.select,
                self.score_metric,
            )
        return self

    def _refit(self, family, X, y, Tau, data: dict, start) -> None:
        """Refit on all data at the chosen λ (``glm_``), from ``start`` (β0, β)."""
        glm_params = {name: getattr(self, name) for name in GLM._get_param_names()}
        self.glm_ = GLM(**{**glm_params, "reg_lambda": self.reg_lambda_opt_})
        self.glm_._newton_options = self._newton_options
        self.glm_._fit_validated(family, X, y, Tau, data, start=start)
        for name in ("n_features_in_", "feature_names_in_"):  # glm_ predicts as GLMCV does
            if hasattr(self, name):
                setattr(self.glm_, name, getattr(self, name))
        self.beta0_, self.beta_ = self.glm_.beta0_, self.glm_.beta_
        self.theta_, self.theta_status_ = self.glm_.theta_, self.glm_.theta_status_
        self.ynull_ = self.glm_.ynull_
        self.null_intercept_ = self.glm_.null_intercept_
        self._inference = self.glm_._inference
        self.covariance_matrix_ = self.glm_.covariance_matrix_
        self.is_fitted_ = True


def _warn_empty_folds(counted: np.ndarray, folds) -> None:
    """Warn about training folds without counts (``counted``: y times the sample weights)."""
    empty = np.flatnonzero(empty_training_folds(counted[:, None], folds)[:, 0]).tolist()
    if empty:
        warnings.warn(
            f"training fold(s) {empty} have no counts (y is 0 on all their samples): "
            "their fits have no finite optimum (the intercept runs to -inf), so the CV "
            "scores and the chosen lambda are unreliable. Use fewer folds or a "
            "stratified splitter.",
            UserWarning,
            stacklevel=3,
        )
