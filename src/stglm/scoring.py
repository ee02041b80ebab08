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

from ._docs import shared_docs
from ._errors import InputTypeError

__all__ = ["neg_deviance", "pseudo_r2"]


def _check_estimator(estimator: Any) -> None:
    if not hasattr(estimator, "_score_as"):
        raise InputTypeError(
            f"estimator must be a fitted stglm GLM or GLMCV; got {type(estimator).__name__}."
        )


@shared_docs
def neg_deviance(
    estimator: Any, X: Any, y: Any, sample_weight: Any = None, offset: Any = None
) -> float:
    """Minus the deviance of a fitted estimator on (X, y): greater is better.

    Parameters
    ----------
    {scored_data}

    Returns
    -------
    float
        −D(y, μ̂) = −2·Σᵢ wᵢ (ℓ(yᵢ, yᵢ) − ℓ(yᵢ, μ̂ᵢ)), the negative of ``estimator.score`` with
        ``score_metric="deviance"``.
    """
    _check_estimator(estimator)
    return -estimator._score_as("deviance", X, y, sample_weight, offset)


@shared_docs
def pseudo_r2(
    estimator: Any, X: Any, y: Any, sample_weight: Any = None, offset: Any = None
) -> float:
    """The deviance pseudo-R² of a fitted estimator on (X, y): greater is better.

    Parameters
    ----------
    {scored_data}

    Returns
    -------
    float
        1 − D(y, μ̂)/D(y, μ̂₀), as ``estimator.score`` with ``score_metric="pseudo_r2"``; the
        null model μ̂₀ is the fitted null intercept (plus the offset, with one).
    """
    _check_estimator(estimator)
    return estimator._score_as("pseudo_r2", X, y, sample_weight, offset)
