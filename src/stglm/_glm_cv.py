"""GLMCV: choose λ by cross-validation along a warm-started regularisation path."""

from __future__ import annotations

import logging
import numbers
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed
from sklearn.model_selection import KFold, check_cv

from ._families import COUNT_FAMILIES
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
from ._solvers._threads import single_blas_thread
from ._solvers.batched import PAIR_BYTES_BUDGET, BatchedNewtonCD, SharedDesign
from ._solvers.newton_cd import tolerance_scale
from ._validation import Boolean, Integer, Options, Real, RealSequence

logger = logging.getLogger("stglm")

__all__ = ["GLMCV"]

#: Dense designs with at most this many predictors solve all folds (and the refit) together.
BATCHED_MAX_FEATURES = 64
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
fit_intercept, random_seed, theta, verbose, solver
        As in :class:`GLM`. ``random_seed`` also seeds the shuffling of the folds.
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
        Mean of the training y.
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

    # -- helpers -----------------------------------------------------------------------------
    def _folds(self, n_samples: int, X, y) -> list[tuple[np.ndarray, np.ndarray]]:
        """The (train, test) index pairs, validated."""
        cv = 5 if self.cv is None else self.cv  # None: scikit-learn's default of 5 folds
        if isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
            if cv < 2 or cv > n_samples:
                raise ValueError(
                    f"cv must be between 2 and the number of samples ({n_samples}); got {cv}."
                )
            cv = KFold(int(cv), shuffle=True, random_state=self.random_seed)
        elif isinstance(cv, bool | float | str):
            raise TypeError(
                f"cv must be an int, a CV splitter or an iterable of (train, test); got {cv!r}."
            )
        try:
            folds = list(check_cv(cv).split(X, y))
        except (TypeError, ValueError) as err:
            raise ValueError(f"cv could not be used to split the data: {err}") from None
        if len(folds) < 2:
            raise ValueError(
                f"cv must give at least 2 folds; got {len(folds)} (an exhausted generator? "
                "pass a list of (train, test) pairs or a splitter to refit)."
            )
        for train, test in folds:
            for part in (train, test):
                part = np.asarray(part)
                if part.size == 0 or part.min() < 0 or part.max() >= n_samples:
                    raise ValueError("cv gave an empty fold or indices outside the data.")
        return [(np.asarray(tr), np.asarray(te)) for tr, te in folds]

    def _lambdas(self, problem: Problem) -> np.ndarray:
        if self.reg_lambda is None:
            return lambda_path(problem, self.n_lambdas, self.lambda_min_ratio)
        lams = np.atleast_1d(np.asarray(self.reg_lambda, dtype=float))
        return np.sort(lams)[::-1]

    def _score_path(self, family, intercepts, coefs, X, y, y_null: float) -> np.ndarray:
        """Score every λ's (clipped) solution on (X, y); shape (n_lambdas,)."""
        # The λ's play the role of responses: one matrix product scores the whole path.
        n_lambdas = intercepts.shape[0]
        return score_path(
            family,
            X,
            np.repeat(y[:, None], n_lambdas, axis=1),
            intercepts[None, :],
            clip(coefs, self.clip_coeffs)[None, :, :],
            fit_intercept=self.fit_intercept,
            metric=self.score_metric,
            y_null=np.full(n_lambdas, y_null),
        )[:, 0]

    def _options(self) -> dict:
        return {
            "learning_rate": self.learning_rate,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "random_seed": self.random_seed,
        }

    def _fold_scores(self, family, penalty, X, y, lams, train, test) -> tuple[np.ndarray, int]:
        sub = Problem(family, penalty, X[train], y[train], self.fit_intercept)
        path = fit_path(sub, lams, self.solver, self._options(), screening=self.screening)
        y_null = float(np.mean(y[train]))
        scores = self._score_path(family, path.intercepts, path.coefs, X[test], y[test], y_null)
        return scores, int(path.n_iter.sum())

    def _batchable(self, X, n_folds: int) -> bool:
        """Whether the folds and the refit are solved as one batch (see the class doc).

        Besides a small dense design, the batch's working arrays (about
        ``BATCH_ARRAYS`` n-vectors per fold, e.g. for leave-one-out on many samples) must
        fit the same memory budget as the design's pair products.
        """
        n, p = X.shape
        m = p + int(self.fit_intercept)
        return (
            self.solver == "irls-cd"
            and not sp.issparse(X)
            and p <= BATCHED_MAX_FEATURES
            and 8 * n * m * (m + 1) // 2 <= PAIR_BYTES_BUDGET
            and 8 * n * (n_folds + 1) * BATCH_ARRAYS <= PAIR_BYTES_BUDGET
        )

    def _batched_paths(self, family, X, y, Tau, folds, lams) -> tuple[np.ndarray, PathResult]:
        """Every fold's path and the full-data path in one batched solve.

        Column j < K of the batch is fold j's training set (sample weight = how often
        a sample is in it, so repeated indices count twice); column K is all data.
        Returns the folds' held-out scores (K, n_lambdas) and the full-data path.
        """
        k = len(folds)
        weights = np.zeros((X.shape[0], k + 1))
        for j, (train, _) in enumerate(folds):
            np.add.at(weights[:, j], train, 1.0)
        weights[:, k] = 1.0
        design = SharedDesign(X, self.fit_intercept)
        solver = BatchedNewtonCD(
            family, design, self.alpha, Tau, max_iter=self.max_iter, tol=self.tol
        )
        Y = np.repeat(y[:, None], k + 1, axis=1)
        with single_blas_thread():
            path = batched_path(solver, Y, np.tile(lams, (k + 1, 1)), weights)
        cv_scores = np.array(
            [
                self._score_path(
                    family,
                    path.intercepts[:, j],
                    path.coefs[:, j],
                    X[test],
                    y[test],
                    float(np.mean(y[train])),
                )
                for j, (train, test) in enumerate(folds)
            ]
        )
        full = PathResult(
            lams,
            path.intercepts[:, k],
            path.coefs[:, k],
            path.n_iter.sum(axis=1),  # every column's iterations, charged to its λ
            path.kkt[:, k],
            path.converged[:, k],
        )
        return cv_scores, full

    # -- fit ---------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> GLMCV:
        """Cross-validate the path, choose λ and refit on all data.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        GLMCV
            The fitted estimator.
        """
        family, X, y, Tau = self._validate(X, y)
        folds = self._folds(X.shape[0], X, y)
        if family.name in COUNT_FAMILIES:
            empty = [j for j, (train, _) in enumerate(folds) if not np.any(y[train])]
            if empty:
                warnings.warn(
                    f"training fold(s) {empty} have no counts (y is 0 on all their samples): "
                    "their fits have no finite optimum (the intercept runs to -inf), so the CV "
                    "scores and the chosen lambda are unreliable. Use fewer folds or a "
                    "stratified splitter.",
                    UserWarning,
                    stacklevel=2,
                )
        penalty = ElasticNet(0.0, self.alpha, Tau)
        problem = Problem(family, penalty, X, y, self.fit_intercept)
        lams = self._lambdas(problem)

        if self._batchable(X, len(folds)):
            self.cv_scores_, full = self._batched_paths(family, X, y, Tau, folds, lams)
            self.n_iter_ = int(full.n_iter.sum())
        else:
            jobs = (
                delayed(self._fold_scores)(family, penalty, X, y, lams, tr, te) for tr, te in folds
            )
            results = Parallel(n_jobs=self.n_jobs)(jobs)
            self.cv_scores_ = np.array([scores for scores, _ in results])
            options = {**self._options(), "scale": tolerance_scale(problem)}
            full = fit_path(problem, lams, self.solver, options, screening=self.screening)
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

        glm_params = {name: getattr(self, name) for name in GLM._get_param_names()}
        self.glm_ = GLM(**{**glm_params, "reg_lambda": self.reg_lambda_opt_})
        # The full-data path already holds the refit at the chosen λ: start from it.
        best = self.best_index_
        self.glm_._fit_validated(family, X, y, Tau, start=(full.intercepts[best], full.coefs[best]))
        for name in ("n_features_in_", "feature_names_in_"):  # glm_ predicts as GLMCV does
            if hasattr(self, name):
                setattr(self.glm_, name, getattr(self, name))
        self.beta0_, self.beta_ = self.glm_.beta0_, self.glm_.beta_
        self.ynull_ = float(np.mean(y))
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
