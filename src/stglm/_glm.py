"""The GLM estimator: one penalised fit at a fixed λ."""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

from ._families import DISTRIBUTIONS, Family, get_family
from ._metrics import deviance, pseudo_r2
from ._objective import linear_predictor
from ._path import clip
from ._penalties import ElasticNet, soft_threshold
from ._solvers import SOLVERS, Problem, SolverResult, solve
from ._validation import (
    Boolean,
    Integer,
    Options,
    Real,
    check_X,
    validate_params,
)
from ._validation import (
    validate_data as check_problem_data,
)

logger = logging.getLogger("stglm")

__all__ = ["GLM"]

#: Constraints shared by GLM and GLMCV, declared once.
COMMON_CONSTRAINTS = {
    "distr": Options(DISTRIBUTIONS),
    "alpha": Real(0.0, 1.0, closed="both"),
    "learning_rate": Real(0.0, None, closed="neither"),
    "max_iter": Integer(1, None, closed="left"),
    "tol": Real(0.0, None, closed="neither"),
    "eta": Real(None, None, allow_inf=True),
    "clip_coeffs": Real(0.0, None, closed="left"),
    "score_metric": Options(("deviance", "pseudo_r2")),
    "fit_intercept": Boolean(),
    "random_seed": Integer(0, 2**32 - 1, closed="both"),
    "theta": Real(0.0, None, closed="neither"),
    "verbose": Boolean(),
    "solver": Options(tuple(SOLVERS)),
}


@functools.cache
def _param_names(cls) -> tuple[str, ...]:
    """scikit-learn's parameter names of an estimator class (its constructor's), once per class."""
    return tuple(super(_GLMBase, cls)._get_param_names())


class _GLMBase(RegressorMixin, BaseEstimator):
    """Shared machinery of GLM and GLMCV: validation, prediction and scoring."""

    _constraints: dict = COMMON_CONSTRAINTS

    @classmethod
    def _get_param_names(cls) -> list[str]:
        # scikit-learn reads the constructor's signature at every get_params/clone/fit
        # (≈ 0.15 ms, 1–2 % of a small GLMCV); a class's signature does not change.
        return list(_param_names(cls))

    def _family(self) -> Family:
        return get_family(self.distr, eta=self.eta, theta=self.theta)

    def _check_params(self) -> None:
        """Check every constructor parameter against ``_constraints``; raises before any work."""
        validate_params(self.get_params(deep=False), self._constraints)

    def _validate(self, X: Any, y: Any):
        """Check every parameter and the data before any work; returns (family, X, y, Tau)."""
        self._check_params()
        family = self._family()
        X_in, (X, y, Tau) = X, check_problem_data(X, y, family, self.Tau)
        # scikit-learn's bookkeeping of n_features_in_ / feature_names_in_ only; after the
        # checks, so a rejected fit leaves no fitted attribute behind.
        validate_data(self, X_in, skip_check_array=True, reset=True)
        return family, X, y, Tau

    def _check_predict_X(self, X: Any):
        check_is_fitted(self, "beta_")
        X_in, X = X, check_X(X)  # first, so a 1-D X gets the "reshape your data" message
        validate_data(self, X_in, skip_check_array=True, reset=False)
        if X.shape[1] != self.beta_.shape[0]:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.beta_.shape[0]} features as input."
            )
        return X

    def predict(self, X: Any) -> np.ndarray:
        """Predicted mean μ(β0 + Xβ) for each row of X.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        X = self._check_predict_X(X)
        z = linear_predictor(self.beta0_, self.beta_, X, self.fit_intercept)
        return self._family().mean(z)

    def fit_predict(self, X: Any, y: Any) -> np.ndarray:
        """Fit the model, then predict on the same X.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self.fit(X, y).predict(X)

    def score(self, X: Any, y: Any) -> float:
        """Deviance (lower is better) or pseudo-R² (higher is better), by ``score_metric``.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        float
        """
        X = self._check_predict_X(X)
        family = self._family()
        y = check_problem_data(X, y, family)[1]
        y_hat = family.mean(linear_predictor(self.beta0_, self.beta_, X, self.fit_intercept))
        if self.score_metric == "deviance":
            return deviance(family, y, y_hat)
        return pseudo_r2(family, y, y_hat, self.ynull_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.positive_only = self.distr != "gaussian"
        return tags


class GLM(_GLMBase):
    """Penalised generalized linear model for gene expression (spateo's ``GLM``).

    Minimises J(β0, β) = −(1/n)·logL(y, μ(β0 + Xβ)) + λ·[½(1−α)‖Γβ‖² + α‖β‖₁]
    (see ``docs/SEMANTICS.md`` for each family's mean function and likelihood).

    Parameters
    ----------
    distr : {"gaussian", "poisson", "softplus", "neg-binomial", "gamma"}, default="poisson"
        Response family (case sensitive).
    alpha : float in [0, 1], default=0.5
        L1 share of the elastic net: 1 is the lasso, 0 ridge.
    Tau : ndarray of shape (n_features, n_features), default=None
        Tikhonov matrix Γ of the ridge term ‖Γβ‖²; None means the identity.
    reg_lambda : float >= 0, default=0.1
        Penalty strength λ.
    learning_rate : float > 0, default=0.2
        Step size of ``solver="batch-gradient"``; unused by other solvers.
    max_iter : int >= 1, default=1000
        Maximum number of iterations: for "irls-cd" its outer iterations (L-BFGS, then
        Newton, iterations; see ``n_iter_``), for "batch-gradient" its gradient steps.
    tol : float > 0, default=1e-6
        Stopping tolerance. "irls-cd" stops when the KKT residual of J is below ``tol``
        times the size of the gradient's terms at the null model,
        max_j (1/n)·Σ_i |x̃_ij|·|r_i| (so ``tol`` is relative, whatever the units of X and
        y); "batch-gradient" stops when the relative change of the coefficients is below
        ``tol`` (spateo's rule).
    eta : float, default=2.0
        Poisson only: the mean is e^z up to ``eta`` and continues linearly above it;
        ``np.inf`` gives the canonical log-linear Poisson model.
    clip_coeffs : float >= 0, default=0.01
        After fitting, coefficients with |β_j| below this are set to 0 (spateo's
        behaviour); use 0 to keep the exact optimum.
    score_metric : {"deviance", "pseudo_r2"}, default="deviance"
        What :meth:`score` returns.
    fit_intercept : bool, default=True
        Whether to fit an unpenalised intercept β0.
    random_seed : int, default=888
        Seed of the random start of "batch-gradient" (drawn anew at every fit).
    theta : float > 0, default=1.0
        Negative-binomial size θ (variance μ + μ²/θ).
    verbose : bool, default=True
        Log the number of iterations and the KKT residual to the ``stglm`` logger.
    solver : {"irls-cd", "batch-gradient"}, default="irls-cd"
        "irls-cd" (proximal Newton with coordinate descent) reaches the exact optimum
        of J, stopping on the KKT residual. "batch-gradient" reproduces spateo's
        fixed-step proximal gradient descent, for reproducing earlier results.

    Attributes
    ----------
    beta0_ : float
        Intercept (0.0 without intercept).
    beta_ : ndarray of shape (n_features,)
        Coefficients.
    n_iter_ : int
        Iterations run by the solver. For "irls-cd": Newton iterations, plus, on smooth
        problems (λα = 0) with a large X, the L-BFGS iterations it starts with (only when
        ``max_iter`` leaves room for both phases; Newton takes over if L-BFGS converges
        slowly).
    converged_ : bool
        Whether the solver's stopping rule was met within ``max_iter``.
    kkt_residual_ : float
        KKT residual of J at the solution before ``clip_coeffs`` was applied.
    ynull_ : float
        Mean of the training y (the null model's prediction, used by pseudo-R²).
    is_fitted_ : bool
        True after :meth:`fit`.
    n_features_in_ : int
        Number of features seen during fit.
    """

    _constraints = {**COMMON_CONSTRAINTS, "reg_lambda": Real(0.0, None, closed="left")}

    def __init__(
        self,
        distr: str = "poisson",
        alpha: float = 0.5,
        Tau: np.ndarray | None = None,
        reg_lambda: float = 0.1,
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
    ):
        self.distr = distr
        self.alpha = alpha
        self.Tau = Tau
        self.reg_lambda = reg_lambda
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

    def fit(self, X: Any, y: Any) -> GLM:
        """Fit the model.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Predictors. CSR/CSC matrices are used without densifying.
        y : array-like of shape (n_samples,)
            Response, in the family's support (counts ≥ 0; gamma: y > 0).

        Returns
        -------
        GLM
            The fitted estimator.
        """
        family, X, y, Tau = self._validate(X, y)
        return self._fit_validated(family, X, y, Tau)

    def _fit_validated(self, family: Family, X, y: np.ndarray, Tau, start=None) -> GLM:
        """Fit on data already checked by :meth:`_validate`, optionally from ``start`` (β0, β)."""
        problem = Problem(
            family, ElasticNet(self.reg_lambda, self.alpha, Tau), X, y, self.fit_intercept
        )
        result = solve(problem, self.solver, self._solver_options(), start=start)
        self._store(result, y)
        return self

    def _prox(self, beta: np.ndarray, thresh: float) -> np.ndarray:
        """Proximal operator of ``thresh·‖β‖₁`` (soft-thresholding), spateo's documented method.

        Parameters
        ----------
        beta : ndarray
            Coefficients.
        thresh : float
            Threshold, ``learning_rate·reg_lambda·alpha`` in the gradient step.

        Returns
        -------
        ndarray
            sign(β)·max(|β| − thresh, 0).
        """
        return soft_threshold(np.asarray(beta, dtype=float), thresh)

    def _solver_options(self) -> dict:
        return {
            "learning_rate": self.learning_rate,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "random_seed": self.random_seed,
        }

    def _store(self, result: SolverResult, y: np.ndarray) -> None:
        """Set the fitted attributes from a solver result, applying ``clip_coeffs``."""
        if not result.converged:
            warnings.warn(
                f"{type(self).__name__} (solver={self.solver!r}) did not converge in "
                f"max_iter={self.max_iter} iterations; KKT residual {result.kkt:.3g} "
                f"(tol={self.tol:g}). Increase max_iter.",
                ConvergenceWarning,
                stacklevel=4,  # the caller of GLM.fit
            )
        beta = clip(np.asarray(result.beta, dtype=float), self.clip_coeffs)
        self.beta0_ = float(result.beta0)
        self.beta_ = beta
        self.n_iter_ = int(result.n_iter)
        self.converged_ = bool(result.converged)
        self.kkt_residual_ = float(result.kkt)
        self.ynull_ = float(np.mean(y))
        self.is_fitted_ = True
        if self.verbose:
            logger.info(
                "GLM(%s, lambda=%g, alpha=%g): %d iterations, converged=%s, KKT residual %.3g",
                self.distr,
                self.reg_lambda,
                self.alpha,
                self.n_iter_,
                self.converged_,
                self.kkt_residual_,
            )
