"""Goodness of fit in the seed's conventions: log-likelihood, deviance, pseudo-R²."""

from __future__ import annotations

import numpy as np

from ._families import Family

__all__ = [
    "column_deviance",
    "column_pseudo_r2",
    "deviance",
    "log_likelihood",
    "pseudo_r2",
    "r2_from_deviances",
]


def log_likelihood(family: Family, y: np.ndarray, y_hat: np.ndarray | float) -> float:
    """Σ ℓ(y_i, ŷ_i) (higher is better); ``y_hat`` may be a scalar."""
    y = np.asarray(y, dtype=float)
    y_hat = np.broadcast_to(np.asarray(y_hat, dtype=float), y.shape)
    return float(np.sum(family.loglik(y, y_hat)))


def deviance(family: Family, y: np.ndarray, y_hat: np.ndarray | float) -> float:
    """2·(logL(y, y) − logL(y, ŷ)), a sum over samples (lower is better)."""
    y = np.asarray(y, dtype=float).reshape(-1)
    y_hat = np.broadcast_to(np.asarray(y_hat, dtype=float), y.shape)
    return float(column_deviance(family, y[:, None], y_hat[:, None])[0])


def column_deviance(
    family: Family, Y: np.ndarray, MU: np.ndarray, saturated: np.ndarray | None = None
) -> np.ndarray:
    """Deviance of each column of Y (n, G) under the means MU (n, G); shape (G,).

    ``saturated`` is Σ_i ℓ(y_i, y_i) per column when the caller scores many MU for one Y.
    """
    if saturated is None:
        saturated = family.saturated_loglik(Y).sum(axis=0)
    return 2.0 * (saturated - family.loglik(Y, MU).sum(axis=0))


def r2_from_deviances(dev: np.ndarray, null_dev: np.ndarray) -> np.ndarray:
    """1 − dev/null_dev; where null_dev is 0, 1 for dev = 0 and 0 otherwise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - dev / null_dev
    return np.where(null_dev == 0.0, np.where(dev == 0.0, 1.0, 0.0), r2)


def column_pseudo_r2(
    family: Family, Y: np.ndarray, MU: np.ndarray, y_null: np.ndarray
) -> np.ndarray:
    """:func:`pseudo_r2` of each column of Y, with null means ``y_null`` (G,)."""
    saturated = family.saturated_loglik(Y).sum(axis=0)
    dev = column_deviance(family, Y, MU, saturated)
    null_dev = column_deviance(family, Y, np.broadcast_to(y_null, MU.shape), saturated)
    return r2_from_deviances(dev, null_dev)


def pseudo_r2(family: Family, y: np.ndarray, y_hat: np.ndarray, y_null: float) -> float:
    """1 − deviance(y, ŷ) / deviance(y, ȳ), with ȳ = ``y_null`` (the training mean).

    Can be negative on held-out data. When the null deviance is 0 (constant y),
    returns 1.0 for a perfect prediction and 0.0 otherwise, as scikit-learn's R² does.
    """
    y = np.asarray(y, dtype=float).reshape(-1, 1)
    y_hat = np.broadcast_to(np.asarray(y_hat, dtype=float).reshape(-1, 1), y.shape)
    return float(column_pseudo_r2(family, y, y_hat, np.array([y_null]))[0])
