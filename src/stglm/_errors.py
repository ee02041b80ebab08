"""Errors stglm raises on purpose, for input it cannot use.

Each is a subclass of the builtin a caller would expect (``ValueError``, ``TypeError``), so
``except ValueError`` keeps working, and of :class:`StglmInputError`, so that the command
line can tell bad input (a one-line message) from a bug in stglm (a traceback).
"""

from __future__ import annotations

__all__ = ["InputError", "InputTypeError", "MissingDependencyError", "StglmInputError"]


class StglmInputError(Exception):
    """Base of the errors stglm raises because its input is unusable, not because of a bug."""


class InputError(StglmInputError, ValueError):
    """A value stglm cannot use: out of range, missing, of the wrong shape, unknown name."""


class InputTypeError(StglmInputError, TypeError):
    """An argument of a type stglm cannot use."""


class MissingDependencyError(StglmInputError, ImportError):
    """A feature asked for whose optional dependencies (an extra, ``stglm[dask]``) are missing."""
