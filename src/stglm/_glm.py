"""The GLM estimator: one penalised fit at a fixed λ."""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

from ._errors import InputError, InputTypeError
from ._families import DISTRIBUTIONS, Family, get_family
from ._inference import (
    design_gram,
    estimated_dispersion,
    fisher_weights,
    invert_information,
    score_residuals,
    testable_coordinates,
    wald_table,
)
from ._metrics import deviance, pseudo_r2
from ._objective import linear_predictor
from ._path import clip
from ._penalties import ElasticNet, soft_threshold
from ._solvers import SOLVERS, NewtonOptions, Problem, SolverResult, solve
from ._solvers.newton_cd import null_fit
from ._theta import fit_theta
from ._validation import (
    ETA,
    AnyOf,
    ArrayOrNone,
    Boolean,
    Constraint,
    Integer,
    Options,
    Real,
    check_sample_data,
    check_vector,
    check_X,
    validate_params,
)
from ._validation import (
    validate_data as check_problem_data,
)

logger = logging.getLogger("stglm")

__all__ = ["GLM"]

#: The ways ``theta`` can be estimated instead of fixed.
THETA_METHODS = ("ml", "cox-reid")


class _FamilyInstance(Constraint):
    def check(self, name, value):
        if not isinstance(value, Family):
            raise InputTypeError(f"{name} must be a Family instance; got {value!r}.")


#: Constraints shared by GLM and GLMCV, declared once.
COMMON_CONSTRAINTS = {
    "distr": AnyOf(
        Options(DISTRIBUTIONS),
        _FamilyInstance(),
        description=f"one of {', '.join(map(repr, DISTRIBUTIONS))} or a Family instance",
    ),
    "link": Options((None, "log", "identity", "softplus")),
    "penalty_factor": ArrayOrNone(),
    "alpha": Real(0.0, 1.0, closed="both"),
    "learning_rate": Real(0.0, None, closed="neither"),
    "max_iter": Integer(1, None, closed="left"),
    "tol": Real(0.0, None, closed="neither"),
    "eta": ETA,
    "clip_coeffs": Real(0.0, None, closed="left"),
    "score_metric": Options(("deviance", "pseudo_r2")),
    "fit_intercept": Boolean(),
    "random_seed": Integer(0, 2**32 - 1, closed="both"),
    "theta": AnyOf(
        Real(0.0, None, closed="neither"),
        Options(THETA_METHODS),
        description='a positive number, "ml" or "cox-reid"',
    ),
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
    #: (covariance, robust covariance, dispersion, df) of an unpenalised fit, else None.
    _inference = None
    #: The irls-cd solver's routes and budgets (:class:`stglm._solvers.NewtonOptions`). Not
    #: a parameter: routes change how fast the optimum is reached, not which one (to the
    #: KKT tolerance). A test that must take a route gives one instance its own options.
    _newton_options: NewtonOptions = NewtonOptions()

    @classmethod
    def _get_param_names(cls) -> list[str]:
        # scikit-learn reads the constructor's signature at every get_params/clone/fit
        # (≈ 0.15 ms, 1–2 % of a small GLMCV); a class's signature does not change.
        return list(_param_names(cls))

    def _estimates_theta(self) -> bool:
        return isinstance(self.theta, str)

    def _solver_options(self) -> dict:
        """The solver's options (``solve``'s ``options``), for GLM and GLMCV alike."""
        return {
            "learning_rate": self.learning_rate,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "random_seed": self.random_seed,
            "newton": self._newton_options,
        }

    def _family(self, theta: float | None = None) -> Family:
        """The family; an estimated θ starts at (or is) ``theta``, else ``theta_`` or 1."""
        if theta is None:
            theta = getattr(self, "theta_", 1.0) if self._estimates_theta() else self.theta
        return get_family(self.distr, eta=self.eta, theta=theta, link=self.link)

    def _check_params(self) -> None:
        """Check every constructor parameter against ``_constraints``; raises before any work."""
        validate_params(self.get_params(deep=False), self._constraints)
        # Raises for a link the family does not have.
        family = self._family(1.0 if self._estimates_theta() else None)
        if self._estimates_theta() and family.name != "neg-binomial":
            raise InputError(
                f"theta={self.theta!r} estimates the negative-binomial size; distr="
                f"{self.distr!r} has none. Use distr='neg-binomial' or a numeric theta."
            )
        if self.solver == "batch-gradient" and self._estimates_theta():
            raise InputError(
                "solver='batch-gradient' (spateo's algorithm) fits a fixed theta only; use "
                "solver='irls-cd' to estimate theta."
            )

    def _validate(self, X: Any, y: Any, sample_weight: Any = None, offset: Any = None):
        """Check every parameter and the data before any work.

        Returns (family, X, y, Tau, data) with data = {sample_weight, offset, penalty_factor}.
        """
        self._check_params()
        family = self._family(1.0 if self._estimates_theta() else None)
        X_in, (X, y, Tau) = X, check_problem_data(X, y, family, self.Tau)
        weights, offset = check_sample_data(sample_weight, offset, X.shape[0])
        factor = check_vector(
            self.penalty_factor, X.shape[1], "penalty_factor", nonnegative=True,
            what="n_features",
        )  # fmt: skip
        # scikit-learn's bookkeeping of n_features_in_ / feature_names_in_ only; after the
        # checks, so a rejected fit leaves no fitted attribute behind.
        validate_data(self, X_in, skip_check_array=True, reset=True)
        data = {"sample_weight": weights, "offset": offset, "penalty_factor": factor}
        return family, X, y, Tau, data

    def _check_predict_X(self, X: Any):
        check_is_fitted(self, "beta_")
        X_in, X = X, check_X(X)  # first, so a 1-D X gets the "reshape your data" message
        validate_data(self, X_in, skip_check_array=True, reset=False)
        if X.shape[1] != self.beta_.shape[0]:
            raise InputError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.beta_.shape[0]} features as input."
            )
        return X

    def predict(self, X: Any, offset: Any = None) -> np.ndarray:
        """Predicted mean μ(β0 + offset + Xβ) for each row of X.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
        offset : array-like of shape (n_samples,), default=None
            The known part of the linear predictor (e.g. log size factors); None is 0.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        X = self._check_predict_X(X)
        offset = check_vector(offset, X.shape[0], "offset")
        z = linear_predictor(self.beta0_, self.beta_, X, self.fit_intercept, offset)
        return self._family().mean(z)

    def fit_predict(
        self, X: Any, y: Any, sample_weight: Any = None, offset: Any = None
    ) -> np.ndarray:
        """Fit the model, then predict on the same X (and offset).

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self.fit(X, y, sample_weight=sample_weight, offset=offset).predict(X, offset)

    def score(self, X: Any, y: Any, sample_weight: Any = None, offset: Any = None) -> float:
        """Deviance (lower is better) or pseudo-R² (higher is better), by ``score_metric``.

        The seed's convention, kept for spateo compatibility. scikit-learn's model selection
        (``GridSearchCV``, ``cross_val_score``) maximises its score, and would pick the worst
        model by deviance: pass ``scoring=stglm.scoring.neg_deviance`` (or
        ``stglm.scoring.pseudo_r2``) there.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the samples' deviances (None: all 1).
        offset : array-like of shape (n_samples,), default=None
            The known part of the linear predictor; with an offset the pseudo-R²'s null
            model is the fitted null intercept plus the offset (not ``ynull_``).

        Returns
        -------
        float
        """
        return self._score_as(self.score_metric, X, y, sample_weight, offset)

    def _score_as(self, metric: str, X: Any, y: Any, sample_weight: Any, offset: Any) -> float:
        """``score`` by the given metric ("deviance" or "pseudo_r2")."""
        X = self._check_predict_X(X)
        family = self._family()
        y = check_problem_data(X, y, family)[1]
        weights, offset = check_sample_data(sample_weight, offset, X.shape[0])
        z = linear_predictor(self.beta0_, self.beta_, X, self.fit_intercept, offset)
        y_hat = family.mean(z)
        if metric == "deviance":
            return deviance(family, y, y_hat, weights)
        y_null = self.ynull_
        if offset is not None:
            y_null = family.mean(self.null_intercept_ + offset)
        return pseudo_r2(family, y, y_hat, y_null, weights)

    def coef_table(self, robust: bool = False, level: float = 0.95):
        """Coefficients with standard errors, Wald tests and confidence intervals.

        R's ``summary.glm`` conventions (README, "Inference"): the covariance is
        φ·(X̃ᵀWX̃)⁻¹ with the Fisher weights at the optimum (sample weights and offset
        included; for the negative binomial θ taken as known, as MASS reports β's block);
        φ = 1 and z statistics for poisson, softplus and neg-binomial; φ estimated by
        Pearson's χ²/(n − rank) and t statistics for gaussian and gamma. ``robust=True``
        uses the HC0 sandwich (no φ) and z statistics — R's
        ``sandwich::vcovHC(fit, type="HC0")``, with the Fisher information as the bread.

        Only an unpenalised fit has valid standard errors: ``reg_lambda=0``, or the
        predictors given ``penalty_factor`` 0 (their rows, conditional on the penalised
        coefficients; penalised rows are NaN).

        Parameters
        ----------
        robust : bool, default=False
            Sandwich (HC0) instead of model-based standard errors.
        level : float, default=0.95
            Confidence level of ``ci_lower``/``ci_upper``.

        Returns
        -------
        pandas.DataFrame
            Indexed by "intercept" (if fitted) and the feature names (``feature_names_in_``
            or x0, x1, …), with columns ``coef, se, z`` (or ``t``), ``pvalue``,
            ``ci_lower, ci_upper``.

        Raises
        ------
        ValueError
            For a penalised fit: Wald p-values of lasso, elastic-net and ridge estimates
            are not valid, and neither are those of a refit on the predictors the penalty
            selected from the same data.
        """
        import pandas as pd

        check_is_fitted(self, "beta_")
        if self._inference is None:
            raise InputError(
                f"coef_table needs an unpenalised fit; this one has reg_lambda="
                f"{getattr(self, 'reg_lambda_opt_', self.reg_lambda)!r} on every predictor. "
                "Penalised (lasso, elastic-net, ridge) estimates have no valid Wald standard "
                "errors, and a refit on the predictors the penalty selected from the same "
                "data is anti-conservative. Refit with reg_lambda=0, or give the predictors "
                "to test penalty_factor=0, or select on one half of the samples and test on "
                "the other (sample splitting), or use stglm.test_genes for nested designs."
            )
        cov, robust_cov, dispersion, df = self._inference
        if not 0 < level < 1:
            raise InputError(f"level must be in (0, 1); got {level!r}.")
        C = robust_cov if robust else cov
        coef = np.r_[self.beta0_, self.beta_] if self.fit_intercept else np.asarray(self.beta_)
        se = np.sqrt(np.diagonal(C))
        t_test = df is not None and not robust
        stat, p, lo, hi = wald_table(coef, se, df if t_test else None, level)
        names = getattr(self, "feature_names_in_", None)
        names = [f"x{j}" for j in range(self.beta_.size)] if names is None else list(names)
        index = (["intercept"] if self.fit_intercept else []) + names
        return pd.DataFrame(
            {"coef": coef, "se": se, "t" if t_test else "z": stat, "pvalue": p,
             "ci_lower": lo, "ci_upper": hi},
            index=index,
        )  # fmt: skip

    def _store_inference(self, problem: Problem) -> None:
        """The covariances ``coef_table`` reports, for unpenalised coefficients only."""
        self._inference = None
        self.covariance_matrix_ = None
        pen = problem.penalty
        m = problem.n_features + int(problem.fit_intercept)
        free = testable_coordinates(
            problem.n_features, problem.fit_intercept, pen.reg_lambda == 0, pen.penalty_factor
        )
        if free is None:
            return
        family = problem.family
        z = problem.linear_predictor(self.beta0_, self.beta_)
        w = problem.sample_weight
        gram = design_gram(problem.X, problem.fit_intercept)
        A = gram(fisher_weights(family, z, w)[None])[0][np.ix_(free, free)]
        s = score_residuals(family, problem.y, z)
        s = s if w is None else np.where(w != 0, w * s, 0.0)
        B = gram((s * s)[None])[0][np.ix_(free, free)]
        A_inv = invert_information(A[None])[0]
        n_eff = problem.n_samples if w is None else int(np.count_nonzero(w))
        phi, df = estimated_dispersion(
            family, problem.y[:, None], family.mean(z)[:, None],
            None if w is None else w[:, None], n_eff, free.size,
        )  # fmt: skip
        dispersion = None if phi is None else float(phi[0])
        df = None if df is None else df[0]
        cov = np.full((m, m), np.nan)
        robust = np.full((m, m), np.nan)
        cov[np.ix_(free, free)] = A_inv * (1.0 if dispersion is None else dispersion)
        robust[np.ix_(free, free)] = A_inv @ B @ A_inv
        self.covariance_matrix_ = cov
        self._inference = (cov, robust, dispersion, df)
        self.dispersion_ = 1.0 if dispersion is None else dispersion

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
        max_j (1/n)·Σ_i abs(x̃_ij·r_i) (so ``tol`` is relative, whatever the units of X and
        y); "batch-gradient" stops when the relative change of the coefficients is below
        ``tol`` (spateo's rule).
    eta : float, default=2.0
        Poisson only: the mean is e^z up to ``eta`` and continues linearly above it;
        ``np.inf`` gives the canonical log-linear Poisson model.
    clip_coeffs : float >= 0, default=0.01
        After fitting, coefficients with abs(β_j) below this are set to 0 (spateo's
        behaviour); use 0 to keep the exact optimum.
    score_metric : {"deviance", "pseudo_r2"}, default="deviance"
        What :meth:`score` returns.
    fit_intercept : bool, default=True
        Whether to fit an unpenalised intercept β0.
    random_seed : int, default=888
        Seed of the random start of "batch-gradient" (drawn anew at every fit).
    theta : float > 0 or {"ml", "cox-reid"}, default=1.0
        Negative-binomial size θ (variance μ + μ²/θ; MASS's size, 1/glmGamPoi's
        overdispersion, 1/statsmodels' α). A number fixes it (the seed's behaviour);
        "ml" estimates it with β by maximum likelihood (``MASS::glm.nb``), "cox-reid" by
        the Cox–Reid adjusted profile likelihood (glmGamPoi, edgeR, DESeq2). With a
        penalty, θ is estimated jointly with the penalised β (alternating until both are
        stationary). The value used is ``theta_``.
    verbose : bool, default=True
        Log the number of iterations and the KKT residual to the ``stglm`` logger.
    solver : {"irls-cd", "batch-gradient"}, default="irls-cd"
        "irls-cd" (proximal Newton with coordinate descent) reaches the exact optimum
        of J, stopping on the KKT residual. "batch-gradient" reproduces spateo's
        fixed-step proximal gradient descent, for reproducing earlier results.
    link : {None, "log", "identity", "softplus"}, default=None
        None keeps the seed's mean functions (``docs/SEMANTICS.md``); "log" gives
        μ = e^z exactly for poisson (the same model as ``eta=np.inf``), neg-binomial and
        gamma: coefficients are then log fold changes per unit of the predictor, as in
        R's ``glm``, MASS and glmGamPoi.
    penalty_factor : array-like of shape (n_features,), default=None
        Non-negative factor f_j on each coefficient's penalty (glmnet's
        ``penalty.factor``, not rescaled): λ·Σ_j f_j[½(1−α)β_j² + α·abs(β_j)]. 0 leaves a
        predictor unpenalised (a section or batch covariate).

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
        (Weighted) mean of the training y (the null model's prediction, used by pseudo-R²).
    null_intercept_ : float
        Intercept of the null model (β = 0) given the training offset and weights.
    theta_ : float
        The negative-binomial size used (fixed or estimated); 1.0 for other families.
    covariance_matrix_ : ndarray of shape (n_params, n_params) or None
        Covariance of (β0, β) (intercept first), as ``coef_table`` reports it: for an
        unpenalised fit, or (NaN outside) the predictors with ``penalty_factor`` 0; None
        for a penalised fit.
    dispersion_ : float
        The dispersion φ used by ``coef_table`` (Pearson's χ²/df for gaussian and gamma,
        1 otherwise); set with ``covariance_matrix_``.
    theta_status_ : str
        How θ was estimated: "fixed", "converged", "theta at upper bound" (no
        overdispersion: a Poisson-like response), "theta at lower bound", "all zeros".
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
        link: str | None = None,
        penalty_factor: Any = None,
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
        self.link = link
        self.penalty_factor = penalty_factor

    def fit(self, X: Any, y: Any, sample_weight: Any = None, offset: Any = None) -> GLM:
        """Fit the model.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Predictors. CSR/CSC matrices are used without densifying.
        y : array-like of shape (n_samples,)
            Response, in the family's support (counts ≥ 0; gamma: y > 0).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights m_i (glmnet's convention): J = −Σ m_i ℓ_i / Σ m_i + λP(β),
            so weight 2 is the row repeated. None: all 1.
        offset : array-like of shape (n_samples,), default=None
            Known term of the linear predictor z = β0 + offset + Xβ, e.g. log size factors
            (log sequencing depth) for a log link. None: 0.

        Returns
        -------
        GLM
            The fitted estimator.
        """
        family, X, y, Tau, data = self._validate(X, y, sample_weight, offset)
        return self._fit_validated(family, X, y, Tau, data)

    def _problem(self, family: Family, X, y: np.ndarray, Tau, data: dict) -> Problem:
        penalty = ElasticNet(self.reg_lambda, self.alpha, Tau, data["penalty_factor"])
        return Problem(
            family, penalty, X, y, self.fit_intercept, data["sample_weight"], data["offset"]
        )

    def _fit_validated(self, family: Family, X, y: np.ndarray, Tau, data: dict, start=None) -> GLM:
        """Fit on data already checked by :meth:`_validate`, optionally from ``start`` (β0, β)."""
        problem = self._problem(family, X, y, Tau, data)
        options = self._solver_options()
        theta, theta_status = float(getattr(family, "theta", 1.0)), "fixed"
        if self._estimates_theta():
            fit = fit_theta(problem, self.theta, self.solver, options, start)
            result, theta, theta_status = fit.result, float(fit.theta[0]), str(fit.status[0])
            problem = replace(problem, family=family.with_theta(theta))
        else:
            result = solve(problem, self.solver, options, start=start)
        self._store(result, y, problem)
        self.theta_, self.theta_status_ = theta, theta_status
        self._store_inference(problem)
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
            sign(β)·max(abs(β) − thresh, 0).
        """
        return soft_threshold(np.asarray(beta, dtype=float), thresh)

    def _store(self, result: SolverResult, y: np.ndarray, problem: Problem) -> None:
        """Set the fitted attributes from a solver result, applying ``clip_coeffs``."""
        if not result.converged:
            if result.n_iter < self.max_iter:  # stopped where no step improved J
                why = (
                    f"stopped after {result.n_iter} iterations at a point it could not "
                    f"improve; KKT residual {result.kkt:.3g} (tol={self.tol:g}). A tol "
                    "below what rounding resolves, or a badly scaled problem"
                )
            else:
                why = (
                    f"did not converge in max_iter={self.max_iter} iterations; KKT residual "
                    f"{result.kkt:.3g} (tol={self.tol:g}). Increase max_iter"
                )
            warnings.warn(
                f"{type(self).__name__} (solver={self.solver!r}) {why}.",
                ConvergenceWarning,
                stacklevel=4,  # the caller of GLM.fit
            )
        beta = clip(np.asarray(result.beta, dtype=float), self.clip_coeffs)
        self.beta0_ = float(result.beta0)
        self.beta_ = beta
        self.n_iter_ = int(result.n_iter)
        self.converged_ = bool(result.converged)
        self.kkt_residual_ = float(result.kkt)
        w = problem.sample_weight
        self.ynull_ = float(np.mean(y) if w is None else np.sum(w * y) / np.sum(w))
        self.null_intercept_ = null_fit(replace(problem, penalty=ElasticNet(0.0, 0.0)))[0]
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
