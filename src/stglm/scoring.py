"""Scorers for scikit-learn's model selection: greater is better.

``GLM.score`` keeps the seed's convention — the deviance when ``score_metric="deviance"``
(the default), where lower is better — but ``GridSearchCV``, ``cross_val_score`` and every
other scikit-learn selector maximise the score, so with the seed's ``score`` they choose the
worst model (for a λ grid, the largest λ). Pass one of these as ``scoring=`` instead::

    from sklearn.model_selection import GridSearchCV
    from stglm import GLM, scoring

    search = GridSearchCV(GLM(distr="poisson", link="log"), {"reg_lambda": [1e-3, 1e-2, 1e-1]},
                          scoring=scoring.neg_deviance)

Both follow scikit-learn's callable-scorer signature ``scorer(estimator, X, y)`` and take the
same ``sample_weight`` and ``offset`` as ``GLM.score``. They work for any fitted ``GLM`` or
``GLMCV``, whatever its ``score_metric``.
"""

from __future__ import annotations

from typing import Any

from ._errors import InputTypeError

__all__ = ["neg_deviance", "pseudo_r2"]


def _check_estimator(estimator: Any) -> None:
    if not hasattr(estimator, "_score_as"):
        raise InputTypeError(
            f"estimator must be a fitted stglm GLM or GLMCV; got {type(estimator).__name__}."
        )


def neg_deviance(
    estimator: Any, X: Any, y: Any, sample_weight: Any = None, offset: Any = None
) -> float:
    """Minus the deviance of a fitted estimator on (X, y): greater is better.

    Parameters
    ----------
    estimator : GLM or GLMCV
        A fitted estimator.
    X : array-like or sparse matrix of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    sample_weight : array-like of shape (n_samples,), default=None
        Weights of the samples' deviances (None: all 1).
    offset : array-like of shape (n_samples,), default=None
        The known part of the linear predictor.

    Returns
    -------
    float
        −D(y, μ̂) = −2·Σᵢ wᵢ (ℓ(yᵢ, yᵢ) − ℓ(yᵢ, μ̂ᵢ)), the negative of ``estimator.score`` with
        ``score_metric="deviance"``.
    """
    _check_estimator(estimator)
    return -estimator._score_as("deviance", X, y, sample_weight, offset)


def pseudo_r2(
    estimator: Any, X: Any, y: Any, sample_weight: Any = None, offset: Any = None
) -> float:
    """The deviance pseudo-R² of a fitted estimator on (X, y): greater is better.

    Parameters
    ----------
    estimator : GLM or GLMCV
        A fitted estimator.
    X : array-like or sparse matrix of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    sample_weight : array-like of shape (n_samples,), default=None
        Weights of the samples' deviances (None: all 1).
    offset : array-like of shape (n_samples,), default=None
        The known part of the linear predictor; with an offset the null model is the fitted
        null intercept plus the offset.

    Returns
    -------
    float
        1 − D(y, μ̂)/D(y, μ̂₀), as ``estimator.score`` with ``score_metric="pseudo_r2"``.
    """
    _check_estimator(estimator)
    return estimator._score_as("pseudo_r2", X, y, sample_weight, offset)
