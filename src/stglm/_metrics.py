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
    "weighted_column_sum",
]


def log_likelihood(family: Family, y: np.ndarray, y_hat: np.ndarray | float) -> float:
    """Σ ℓ(y_i, ŷ_i) (higher is better); ``y_hat`` may be a scalar."""
    y = np.asarray(y, dtype=float)
    y_hat = np.broadcast_to(np.asarray(y_hat, dtype=float), y.shape)
    return float(np.sum(family.loglik(y, y_hat)))


def deviance(family: Family, y: np.ndarray, y_hat: np.ndarray | float, sample_weight=None) -> float:
    """2·Σ m_i·(ℓ(y_i, y_i) − ℓ(y_i, ŷ_i)), a sum over samples (lower is better)."""
    y = np.asarray(y, dtype=float).reshape(-1)
    y_hat = np.broadcast_to(np.asarray(y_hat, dtype=float), y.shape)
    M = None if sample_weight is None else np.asarray(sample_weight, dtype=float)[:, None]
    return float(column_deviance(family, y[:, None], y_hat[:, None], M=M)[0])


def weighted_column_sum(values: np.ndarray, M: np.ndarray | None) -> np.ndarray:
    """Column sums of ``values``, weighted by M (a weight of 0 drops the sample)."""
    if M is None:
        return values.sum(axis=0)
    return np.where(M != 0, M * values, 0.0).sum(axis=0)


def column_deviance(
    family: Family,
    Y: np.ndarray,
    MU: np.ndarray,
    saturated: np.ndarray | None = None,
    M: np.ndarray | None = None,
) -> np.ndarray:
    """Deviance of each column of Y (n, G) under the means MU (n, G); shape (G,).

    ``saturated`` is Σ_i m_i·ℓ(y_i, y_i) per column when the caller scores many MU for one
    Y; ``M`` (n, G) or (n, 1) are sample weights.
    """
    if saturated is None:
        saturated = weighted_column_sum(family.saturated_loglik(Y), M)
    return 2.0 * (saturated - weighted_column_sum(family.loglik(Y, MU), M))


def r2_from_deviances(dev: np.ndarray, null_dev: np.ndarray) -> np.ndarray:
    """1 − dev/null_dev; where null_dev is 0, 1 for dev = 0 and 0 otherwise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - dev / null_dev
    return np.where(null_dev == 0.0, np.where(dev == 0.0, 1.0, 0.0), r2)


def column_pseudo_r2(
    family: Family, Y: np.ndarray, MU: np.ndarray, y_null: np.ndarray, M=None
) -> np.ndarray:
    """:func:`pseudo_r2` of each column of Y, with null means ``y_null`` (G,) or (n, G)."""
    saturated = weighted_column_sum(family.saturated_loglik(Y), M)
    dev = column_deviance(family, Y, MU, saturated, M)
    null_dev = column_deviance(family, Y, np.broadcast_to(y_null, MU.shape), saturated, M)
    return r2_from_deviances(dev, null_dev)


def pseudo_r2(
    family: Family, y: np.ndarray, y_hat: np.ndarray, y_null, sample_weight=None
) -> float:
    """1 − deviance(y, ŷ) / deviance(y, ȳ), with ȳ = ``y_null`` (the training mean).

    ``y_null`` may be an array (the null model's means with an offset).

    Can be negative on held-out data. When the null deviance is 0 (constant y),
    returns 1.0 for a perfect prediction and 0.0 otherwise, as scikit-learn's R² does.
    """
    y = np.asarray(y, dtype=float).reshape(-1, 1)
    y_hat = np.broadcast_to(np.asarray(y_hat, dtype=float).reshape(-1, 1), y.shape)
    null = np.asarray(y_null, dtype=float)
    null = np.array([null]) if null.ndim == 0 else null.reshape(-1, 1)
    M = None if sample_weight is None else np.asarray(sample_weight, dtype=float)[:, None]
    return float(column_pseudo_r2(family, y, y_hat, null, M)[0])
