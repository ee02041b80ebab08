"""spateo 1.0's ``spateo.tools.ST_regression.generalized_lm``, implemented by stglm.

A thin face: every documented name with its documented signature and defaults,
delegating to stglm's modules (families, penalties, objective, estimators).
Change ``from spateo.tools.ST_regression.generalized_lm import GLM`` to
``from stglm.generalized_lm import GLM``; the fixed spateo bugs are listed in the
README.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from . import _metrics
from ._errors import InputError
from ._families import get_family
from ._fit_glm import fit_glm
from ._glm import GLM
from ._glm_cv import GLMCV
from ._objective import Problem, linear_predictor
from ._penalties import ElasticNet
from ._validation import (
    SEED_FUNCTION_CONSTRAINTS,
    check_coefficients,
    check_means,
    check_seed_problem,
    check_X,
    check_y,
    validate_params,
)
from .spatial import calc_1nd_moment

__all__ = [
    "GLM",
    "GLMCV",
    "_grad_nl",
    "_loss",
    "_nl",
    "_z",
    "batch_grad",
    "calc_1nd_moment",
    "deviance",
    "fit_glm",
    "log_likelihood",
    "pseudo_r2",
]

Distr = Literal["gaussian", "poisson", "softplus", "neg-binomial", "gamma"]


def _z(beta0: float, beta: np.ndarray, X: np.ndarray, fit_intercept: bool) -> np.ndarray:
    """Linear predictor z = β0 + Xβ (β0 ignored when ``fit_intercept`` is False).

    Parameters
    ----------
    beta0 : float
        The intercept.
    beta : ndarray of shape (n_features,)
        Coefficients.
    X : ndarray or sparse matrix of shape (n_samples, n_features)
        Input data.
    fit_intercept : bool
        Whether β0 is added.

    Returns
    -------
    z : ndarray of shape (n_samples,)
    """
    validate_params({"beta0": beta0, "fit_intercept": fit_intercept}, SEED_FUNCTION_CONSTRAINTS)
    X = check_X(X)
    beta = check_coefficients(beta, X.shape[1], fit_intercept=False)
    return linear_predictor(beta0, beta, X, fit_intercept)


def _family(distr: Distr, eta: float = 2.0, theta: float = 1.0):
    """The family of the seed's arguments, ``eta`` and ``theta`` checked first."""
    validate_params({"eta": eta, "theta": theta}, SEED_FUNCTION_CONSTRAINTS)
    return get_family(distr, eta=eta, theta=theta)


def _response(y, family) -> np.ndarray:
    """The response as a checked (n,) array in the family's support."""
    shape = getattr(y, "shape", None) or np.shape(y)
    return check_y(y, shape[0] if shape else 0, family)


def _nl(distr: Distr, z: np.ndarray, eta: float, fit_intercept: bool) -> np.ndarray:
    """Mean function μ(z) of ``distr``.

    Parameters
    ----------
    distr : str
        Family name.
    z : ndarray
        Linear predictor.
    eta : float
        Poisson: threshold above which e^z continues along its tangent.
    fit_intercept : bool
        Kept for spateo's signature; the result does not depend on it (spateo
        dropped the tangent's constant without intercept, a bug fixed here).

    Returns
    -------
    nl : ndarray, same shape as z
    """
    return _family(distr, eta).mean(_finite(z))


def _grad_nl(distr: Distr, z: np.ndarray, eta: float) -> np.ndarray:
    """Derivative μ'(z) of the mean function of ``distr``.

    Returns
    -------
    grad_nl : ndarray, same shape as z
    """
    return _family(distr, eta).mean_deriv(_finite(z))


def _finite(z) -> np.ndarray:
    """The linear predictor as a float array, refusing NaN (±inf are limits of the mean)."""
    z = np.asarray(z, dtype=float)
    if np.isnan(z).any():
        raise InputError("z contains NaN values.")
    return z


def _split(beta: np.ndarray, fit_intercept: bool) -> tuple[float, np.ndarray]:
    """The seed's packed coefficients [β0, β] (β0 only with intercept) -> (β0, β)."""
    beta = np.asarray(beta, dtype=float).reshape(-1)
    return (float(beta[0]), beta[1:]) if fit_intercept else (0.0, beta)


def _seed_problem(distr, alpha, reg_lambda, X, y, beta, Tau, eta, theta, fit_intercept):
    """(Problem, β0, β) of the seed's functions' arguments, checked."""
    family, X, y, beta, Tau = check_seed_problem(
        distr, X, y, beta, alpha=alpha, reg_lambda=reg_lambda, Tau=Tau, eta=eta, theta=theta,
        fit_intercept=fit_intercept,
    )  # fmt: skip
    beta0, b = _split(beta, fit_intercept)
    return Problem(family, ElasticNet(reg_lambda, alpha, Tau), X, y, fit_intercept), beta0, b


def batch_grad(
    distr: Distr,
    alpha: float,
    reg_lambda: float,
    X: np.ndarray,
    y: np.ndarray,
    beta: np.ndarray,
    Tau: np.ndarray | None = None,
    eta: float = 2.0,
    theta: float = 1.0,
    fit_intercept: bool = True,
) -> np.ndarray:
    """Gradient of the smooth part of the objective (log-likelihood and ridge terms).

    Parameters
    ----------
    distr : str
        Family name.
    alpha : float
        L1 share of the elastic net.
    reg_lambda : float
        Penalty strength λ.
    X : ndarray or sparse matrix of shape (n_samples, n_features)
        Input data.
    y : ndarray of shape (n_samples,)
        Response.
    beta : ndarray of shape (n_features + 1,) or (n_features,)
        [β0, β] with intercept, β without.
    Tau : ndarray of shape (n_features, n_features), optional
        Tikhonov matrix (identity when None).
    eta : float
        Poisson linearisation threshold.
    theta : float
        Negative-binomial size.
    fit_intercept : bool
        Whether ``beta`` starts with an intercept.

    Returns
    -------
    g : ndarray, same shape as ``beta``
        (1/n)·Σr for β0 first (with intercept), then (1/n)·Xᵀr + λ(1−α)ΓᵀΓβ.
    """
    problem, beta0, b = _seed_problem(
        distr, alpha, reg_lambda, X, y, beta, Tau, eta, theta, fit_intercept
    )
    g0, g = problem.gradient(beta0, b)
    return np.concatenate([[g0], g]) if fit_intercept else g


def log_likelihood(
    distr: Distr, y: np.ndarray, y_hat: np.ndarray | float, theta: float = 1.0
) -> float:
    """Log-likelihood logL of ``y`` under predictions ``y_hat`` (higher is better).

    Despite spateo's summary line ("negative log-likelihood") the value is logL, as
    its Returns section and behaviour say. Poisson and softplus omit the log y! term;
    neg-binomial is the full NB2 log-pmf; gamma has shape 1.

    Returns
    -------
    logL : float
    """
    family = _family(distr, theta=theta)
    y = _response(y, family)
    return _metrics.log_likelihood(family, y, check_means(y_hat, y.shape[0], family, "y_hat"))


def _loss(
    distr: Distr,
    alpha: float,
    reg_lambda: float,
    X: np.ndarray,
    y: np.ndarray,
    beta: np.ndarray,
    Tau: np.ndarray | None = None,
    eta: float = 2.0,
    theta: float = 1.0,
    fit_intercept: bool = True,
) -> float:
    """Objective J = −(1/n)·logL + λ[½(1−α)‖Γβ‖² + α‖β‖₁] (intercept unpenalised).

    Parameters are those of :func:`batch_grad`.

    Returns
    -------
    loss : float
    """
    problem, beta0, b = _seed_problem(
        distr, alpha, reg_lambda, X, y, beta, Tau, eta, theta, fit_intercept
    )
    return problem.objective(beta0, b)


def pseudo_r2(y: np.ndarray, yhat: np.ndarray, ynull_: float, distr: Distr, theta: float) -> float:
    """Pseudo-R² = 1 − deviance(y, ŷ) / deviance(y, ȳ), with ȳ = ``ynull_``.

    Returns
    -------
    float
        1 for a perfect fit; may be negative on held-out data.
    """
    family = _family(distr, theta=theta)
    y = _response(y, family)
    yhat = check_means(yhat, y.shape[0], family, "yhat")
    return _metrics.pseudo_r2(family, y, yhat, check_means(ynull_, y.shape[0], family, "ynull_"))


def deviance(y: np.ndarray, yhat: np.ndarray, distr: Distr, theta: float) -> float:
    """Deviance 2·(logL(y, y) − logL(y, ŷ)), summed over samples (lower is better).

    Returns
    -------
    score : float
    """
    family = _family(distr, theta=theta)
    y = _response(y, family)
    return _metrics.deviance(family, y, check_means(yhat, y.shape[0], family, "yhat"))
