"""GLMCV: choose λ by cross-validation along a warm-started regularisation path."""

from __future__ import annotations

import logging
import numbers
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed
from sklearn.model_selection import KFold, check_cv

from ._errors import InputError, InputTypeError
from ._glm import COMMON_CONSTRAINTS, GLM, _GLMBase
from ._path import (
    LAMBDA_MIN_RATIO,
    PathResult,
    batched_path,
    choose_lambda,
    clip,
    fit_path,
    lambda_path,
    score_path,
)
from ._penalties import ElasticNet
from ._solvers import Problem
from ._solvers._null_model import null_intercepts
from ._solvers._threads import single_blas_thread
from ._solvers.batched import BatchedNewtonCD, SharedDesign
from ._solvers.newton_cd import tolerance_scale
from ._theta import null_theta
from ._validation import Boolean, Integer, Options, Real, RealSequence

logger = logging.getLogger("stglm")

__all__ = ["GLMCV"]

#: n-vectors of working arrays per column of that batch (solver workspace, Newton terms, Y).
BATCH_ARRAYS = 12


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
        error (std over folds / √K) of the best.
    lambda_min_ratio : float, default=1e-3
        End of the data-driven path as a fraction of λ_max.
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
        "lambda_min_ratio": Real(0.0, 1.0, closed="neither"),
        "screening": Boolean(),
        "n_jobs": Integer(None, None, allow_none=True),
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
        lambda_min_ratio: float = LAMBDA_MIN_RATIO,
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
    def _folds(self, n_samples: int, X, y) -> list[tuple[np.ndarray, np.ndarray]]:
        """The (train, test) index pairs, validated."""
        cv = 5 if self.cv is None else self.cv  # None: scikit-learn's default of 5 folds
        if isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
            if cv < 2 or cv > n_samples:
                raise InputError(
                    f"cv must be between 2 and the number of samples ({n_samples}); got {cv}."
                )
            cv = KFold(int(cv), shuffle=True, random_state=self.random_seed)
        elif isinstance(cv, bool | float | str):
            raise InputTypeError(
                f"cv must be an int, a CV splitter or an iterable of (train, test); got {cv!r}."
            )
        try:
            folds = list(check_cv(cv).split(X, y))
        except (TypeError, ValueError) as err:
            raise InputError(f"cv could not be used to split the data: {err}") from None
        if len(folds) < 2:
            raise InputError(
                f"cv must give at least 2 folds; got {len(folds)} (an exhausted generator? "
                "pass a list of (train, test) pairs or a splitter to refit)."
            )
        for train, test in folds:
            for part in (train, test):
                part = np.asarray(part)
                if part.size == 0 or part.min() < 0 or part.max() >= n_samples:
                    raise InputError("cv gave an empty fold or indices outside the data.")
        return [(np.asarray(tr), np.asarray(te)) for tr, te in folds]

    def _lambdas(self, problem: Problem) -> np.ndarray:
        if self.reg_lambda is None:
            return lambda_path(problem, self.n_lambdas, self.lambda_min_ratio)
        lams = np.atleast_1d(np.asarray(self.reg_lambda, dtype=float))
        return np.sort(lams)[::-1]

    def _score_path(self, family, path: PathResult, X, y, data: dict, y_null) -> np.ndarray:
        """Score every λ's (clipped) solution of ``path`` on (X, y); shape (n_lambdas,).

        ``data`` holds the samples' weights and offset (or None); ``y_null`` is the null
        model's mean, a float, or (n,) means with an offset (for pseudo-R²).
        """
        # The λ's play the role of responses: one matrix product scores the whole path.
        n_lambdas = path.intercepts.shape[0]
        if path.theta is not None:  # each λ's own θ: the λ's are the columns here
            family = family.with_theta(path.theta)
        y_null = np.asarray(y_null, dtype=float)
        null = np.full(n_lambdas, float(y_null)) if y_null.ndim == 0 else y_null[:, None]
        return score_path(
            family,
            X,
            np.repeat(y[:, None], n_lambdas, axis=1),
            path.intercepts[None, :],
            clip(path.coefs, self.clip_coeffs)[None, :, :],
            fit_intercept=self.fit_intercept,
            metric=self.score_metric,
            y_null=null,
            sample_weight=data["sample_weight"],
            offset=data["offset"],
        )[:, 0]

    def _null_means(self, family, y, train, test, data: dict):
        """The training null model's mean(s) on the test samples (for pseudo-R²)."""
        w, o = data["sample_weight"], data["offset"]
        w_train = None if w is None else w[train]
        if o is None:
            return float(np.mean(y[train]) if w is None else np.average(y[train], weights=w_train))
        M = None if w_train is None else w_train[:, None]
        icpt = null_intercepts(family, y[train][:, None], self.fit_intercept, M, o[train])[0]
        return family.mean(icpt + o[test])

    def _options(self) -> dict:
        return {
            "learning_rate": self.learning_rate,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "random_seed": self.random_seed,
            "newton": self._newton_options,
        }

    def _theta_method(self) -> str | None:
        return self.theta if self._estimates_theta() else None

    def _fold_scores(self, problem, lams, train, test, data) -> tuple[np.ndarray, int]:
        """One fold's path on its training samples, scored on its held-out samples."""
        sub = replace(
            problem,
            X=problem.X[train],
            y=problem.y[train],
            **_sample_rows(data, train),
            cache={},
        )
        path = fit_path(
            sub, lams, self.solver, self._options(), screening=self.screening,
            theta_method=self._theta_method(),
        )  # fmt: skip
        y_null = self._null_means(problem.family, problem.y, train, test, data)
        X, y = problem.X, problem.y
        scores = self._score_path(
            problem.family, path, X[test], y[test], _sample_rows(data, test), y_null
        )
        return scores, int(path.n_iter.sum())

    def _batchable(self, X, n_folds: int) -> bool:
        """Whether the folds and the refit are solved as one batch (see the class doc).

        Besides a small dense design (``NewtonOptions.batched_max_features``), the batch's
        working arrays (about ``BATCH_ARRAYS`` n-vectors per fold, e.g. for leave-one-out on
        many samples) must fit the same memory budget as the design's pair products.
        """
        n, p = X.shape
        m = p + int(self.fit_intercept)
        budget = self._newton_options.pair_bytes_budget
        return (
            self.solver == "irls-cd"
            and not sp.issparse(X)
            and p <= self._newton_options.batched_max_features
            and 8 * n * m * (m + 1) // 2 <= budget
            and 8 * n * (n_folds + 1) * BATCH_ARRAYS <= budget
        )

    def _batched_paths(self, problem, folds, lams, data) -> tuple[np.ndarray, PathResult]:
        """Every fold's path and the full-data path in one batched solve.

        Column j < K of the batch is fold j's training set (sample weight = how often
        a sample is in it, so repeated indices count twice, times its sample weight);
        column K is all data. Returns the folds' held-out scores (K, n_lambdas) and the
        full-data path.
        """
        X, y, family = problem.X, problem.y, problem.family
        k = len(folds)
        weights = np.zeros((X.shape[0], k + 1))
        for j, (train, _) in enumerate(folds):
            np.add.at(weights[:, j], train, 1.0)
        weights[:, k] = 1.0
        if data["sample_weight"] is not None:
            weights *= data["sample_weight"][:, None]
        design = SharedDesign(X, self.fit_intercept, self._newton_options)
        solver = BatchedNewtonCD(
            family, design, self.alpha, problem.penalty.Tau, max_iter=self.max_iter,
            tol=self.tol, penalty_factor=data["penalty_factor"], options=self._newton_options,
        )  # fmt: skip
        Y = np.repeat(y[:, None], k + 1, axis=1)
        with single_blas_thread():
            path = batched_path(
                solver, Y, np.tile(lams, (k + 1, 1)), weights, offset=data["offset"],
                theta_method=self._theta_method(),
            )  # fmt: skip

        def column(j: int) -> PathResult:
            theta = None if path.theta is None else path.theta[:, j]
            return PathResult(
                lams, path.intercepts[:, j], path.coefs[:, j], path.n_iter[:, j],
                path.kkt[:, j], path.converged[:, j], theta,
            )  # fmt: skip

        cv_scores = np.array(
            [
                self._score_path(
                    family,
                    column(j),
                    X[test],
                    y[test],
                    _sample_rows(data, test),
                    self._null_means(family, y, train, test, data),
                )  # fmt: skip
                for j, (train, test) in enumerate(folds)
            ]
        )
        full = column(k)
        full.n_iter = path.n_iter.sum(axis=1)  # every column's iterations, charged to its λ
        return cv_scores, full

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
        """
        family, X, y, Tau, data = self._validate(X, y, sample_weight, offset)
        folds = self._folds(X.shape[0], X, y)
        w = data["sample_weight"]
        if family.is_count:
            counted = y if w is None else y * w
            empty = [j for j, (train, _) in enumerate(folds) if not np.any(counted[train])]
            if empty:
                warnings.warn(
                    f"training fold(s) {empty} have no counts (y is 0 on all their samples): "
                    "their fits have no finite optimum (the intercept runs to -inf), so the CV "
                    "scores and the chosen lambda are unreliable. Use fewer folds or a "
                    "stratified splitter.",
                    UserWarning,
                    stacklevel=2,
                )
        penalty = ElasticNet(0.0, self.alpha, Tau, data["penalty_factor"])
        problem = Problem(family, penalty, X, y, self.fit_intercept, w, data["offset"])
        if self._estimates_theta():  # λ_max at the λ = ∞ model's own θ
            theta0 = null_theta(problem, self.theta, self.solver, self._options())
            lams = self._lambdas(replace(problem, family=family.with_theta(theta0)))
        else:
            lams = self._lambdas(problem)

        if self._batchable(X, len(folds)):
            self.cv_scores_, full = self._batched_paths(problem, folds, lams, data)
            self.n_iter_ = int(full.n_iter.sum())
        else:
            jobs = (delayed(self._fold_scores)(problem, lams, tr, te, data) for tr, te in folds)
            results = Parallel(n_jobs=self.n_jobs)(jobs)
            self.cv_scores_ = np.array([scores for scores, _ in results])
            options = {**self._options(), "scale": tolerance_scale(problem)}
            full = fit_path(
                problem, lams, self.solver, options, screening=self.screening,
                theta_method=self._theta_method(),
            )  # fmt: skip
            self.n_iter_ = sum(it for _, it in results) + int(full.n_iter.sum())
        k = len(folds)
        self.scores_ = self.cv_scores_.mean(axis=0)
        self.scores_se_ = self.cv_scores_.std(axis=0, ddof=1) / np.sqrt(k)
        self.reg_lambda_path_ = lams
        self.folds_ = folds
        self.best_index_ = self._choose()
        self.reg_lambda_opt_ = float(lams[self.best_index_])

        self.coef_path_ = clip(full.coefs, self.clip_coeffs)
        self.intercept_path_ = full.intercepts
        fixed_theta = float(getattr(family, "theta", 1.0))
        self.theta_path_ = np.full(len(lams), fixed_theta) if full.theta is None else full.theta

        glm_params = {name: getattr(self, name) for name in GLM._get_param_names()}
        self.glm_ = GLM(**{**glm_params, "reg_lambda": self.reg_lambda_opt_})
        self.glm_._newton_options = self._newton_options
        # The full-data path already holds the refit at the chosen λ: start from it.
        best = self.best_index_
        start = (full.intercepts[best], full.coefs[best])
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

    def _choose(self) -> int:
        """Index of the chosen λ in the (decreasing) path."""
        scores, se = self.scores_[None, :], self.scores_se_[None, :]
        return int(choose_lambda(scores, se, self.score_metric, self.select)[0])


def _sample_rows(data: dict, rows: np.ndarray) -> dict:
    """The samples ``rows``' weights and offset (each None when not given)."""
    return {
        key: None if data[key] is None else data[key][rows] for key in ("sample_weight", "offset")
    }
