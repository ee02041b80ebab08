"""Goodness of fit in the seed's conventions: log-likelihood, deviance, pseudo-R²."""

from __future__ import annotations

import numpy as np

from ._families import Family

__all__ = ["deviance", "log_likelihood", "pseudo_r2"]


def log_likelihood(family: Family, y: np.ndarray, y_hat: np.ndarray | float) -> float:
    """Σ ℓ(y_i, ŷ_i) (higher is better); ``y_hat`` may be a scalar."""
    y = np.asarray(y, dtype=float)
    y_hat = np.broadcast_to(np.asarray(y_hat, dtype=float), y.shape)
    return float(np.sum(family.loglik(y, y_hat)))


def deviance(family: Family, y: np.ndarray, y_hat: np.ndarray | float) -> float:
    """2·(logL(y, y) − logL(y, ŷ)), a sum over samples (lower is better)."""
    y = np.asarray(y, dtype=float)
    saturated = float(np.sum(family.saturated_loglik(y)))
    return 2.0 * (saturated - log_likelihood(family, y, y_hat))


def pseudo_r2(family: Family, y: np.ndarray, y_hat: np.ndarray, y_null: float) -> float:
    """1 − deviance(y, ŷ) / deviance(y, ȳ), with ȳ = ``y_null`` (the training mean).

    Can be negative on held-out data. When the null deviance is 0 (constant y),
    returns 1.0 for a perfect prediction and 0.0 otherwise, as scikit-learn's R² does.
    """
    dev = deviance(family, y, y_hat)
    null_dev = deviance(family, y, y_null)
    if null_dev == 0.0:
        return 1.0 if dev == 0.0 else 0.0
    return 1.0 - dev / null_dev
