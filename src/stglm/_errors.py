"""Errors stglm raises on purpose, for input it cannot use, and the warnings it gives.

Each error is a subclass of the builtin a caller would expect (``ValueError``, ``TypeError``), so
``except ValueError`` keeps working, and of :class:`StglmInputError`, so that the command
line can tell bad input (a one-line message) from a bug in stglm (a traceback).
"""

from __future__ import annotations

__all__ = [
    "BoundaryWarning",
    "InputError",
    "InputTypeError",
    "MissingDependencyError",
    "StglmInputError",
]


class StglmInputError(Exception):
    """Base of the errors stglm raises because its input is unusable, not because of a bug."""


class InputError(StglmInputError, ValueError):
    """A value stglm cannot use: out of range, missing, of the wrong shape, unknown name."""


class InputTypeError(StglmInputError, TypeError):
    """An argument of a type stglm cannot use."""


class BoundaryWarning(UserWarning):
    """Cross-validation chose the smallest λ of its path: the optimum may lie beyond it.

    Given once per fit (GLMCV) or once per run, counting the genes (fit_genes); extend the
    path with a smaller ``lambda_min_ratio`` (or smaller ``reg_lambda`` values).
    """


class MissingDependencyError(StglmInputError, ImportError):
    """A feature asked for whose optional dependencies (an extra, ``stglm[dask]``) are missing."""
