"""Validation of parameters and data, in one place.

Estimators declare their parameters once as ``_parameter_constraints``
(a mapping from name to a :class:`Constraint`); :func:`validate_params` checks
them all before any work, with messages that name the parameter.
:func:`validate_data` converts and checks ``X``, ``y`` and ``Tau``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._errors import InputError, InputTypeError
from ._families import Family

__all__ = [
    "AnyOf",
    "ArrayOrNone",
    "Boolean",
    "Constraint",
    "Integer",
    "Options",
    "Real",
    "check_tau",
    "check_X",
    "check_sample_data",
    "check_vector",
    "validate_data",
    "validate_params",
]


class Constraint:
    """A rule for one parameter; ``check`` raises with a message naming it."""

    def check(self, name: str, value: Any) -> None:  # pragma: no cover - interface
        """Raise ``TypeError``/``ValueError`` if ``value`` violates the rule."""
        raise NotImplementedError


class Options(Constraint):
    """One of a fixed set of values."""

    def __init__(self, options: Iterable[Any]):
        self.options = tuple(options)

    def check(self, name, value):
        if not any(value is o or (type(value) is type(o) and value == o) for o in self.options):
            valid = ", ".join(map(repr, self.options))
            raise InputError(f"{name} must be one of {valid}; got {value!r}.")


class Boolean(Constraint):
    """A bool (or numpy bool)."""

    def check(self, name, value):
        if not isinstance(value, bool | np.bool_):
            raise InputTypeError(f"{name} must be True or False; got {value!r}.")


class Real(Constraint):
    """A real number in an interval; ``closed`` says which ends are included."""

    kind: type = numbers.Real
    kind_name = "a real number"

    def __init__(
        self,
        low: float | None = None,
        high: float | None = None,
        closed: str = "both",
        allow_inf: bool = False,
        allow_none: bool = False,
    ):
        self.low, self.high, self.closed = low, high, closed
        self.allow_inf, self.allow_none = allow_inf, allow_none

    def _interval(self) -> str:
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        low = "-inf" if self.low is None else self.low
        high = "inf" if self.high is None else self.high
        return f"{left}{low}, {high}{right}"

    def check(self, name, value):
        if value is None and self.allow_none:
            return
        if isinstance(value, bool | np.bool_) or not isinstance(value, self.kind):
            raise InputTypeError(
                f"{name} must be {self.kind_name}; got {value!r} ({type(value).__name__})."
            )
        if np.isnan(value) or (np.isinf(value) and not self.allow_inf):
            raise InputError(f"{name} must be finite; got {value!r}.")
        low_ok = (
            self.low is None
            or value > self.low
            or (value == self.low and self.closed in ("both", "left"))
        )
        high_ok = (
            self.high is None
            or value < self.high
            or (value == self.high and self.closed in ("both", "right"))
        )
        if not (low_ok and high_ok):
            raise InputError(f"{name} must be in {self._interval()}; got {value!r}.")


class Integer(Real):
    """An integer in an interval (bools are rejected)."""

    kind = numbers.Integral
    kind_name = "an integer"


class JobCount(Constraint):
    """joblib's ``n_jobs``: None, or a non-zero integer (-1 is every core, -2 all but one)."""

    def check(self, name, value):
        if value is None:
            return
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
            raise InputTypeError(
                f"{name} must be a non-zero integer (joblib's: -1 is every core) or None; "
                f"got {value!r}."
            )
        if value == 0:
            raise InputError(
                f"{name} must be a non-zero integer (joblib's: -1 is every core) or None; "
                f"got {value!r}."
            )


class AnyOf(Constraint):
    """Satisfies at least one of several constraints (e.g. a number or a method name)."""

    def __init__(self, *constraints: Constraint, description: str):
        self.constraints, self.description = constraints, description

    def check(self, name, value):
        for constraint in self.constraints:
            try:
                constraint.check(name, value)
                return
            except (TypeError, ValueError):
                continue
        raise ValueError(f"{name} must be {self.description}; got {value!r}.")


class ArrayOrNone(Constraint):
    """None or an array-like (checked against the data's shape when the data is seen)."""

    def check(self, name, value):
        if value is None:
            return
        if isinstance(value, str | bytes | numbers.Number):
            raise TypeError(f"{name} must be None or an array of numbers; got {value!r}.")


class RealSequence(Constraint):
    """A non-empty 1-D sequence of reals, each satisfying ``element``."""

    def __init__(self, element: Real, allow_none: bool = True, allow_scalar: bool = True):
        self.element, self.allow_none, self.allow_scalar = element, allow_none, allow_scalar

    def check(self, name, value):
        if value is None and self.allow_none:
            return
        if isinstance(value, numbers.Real) and self.allow_scalar:
            self.element.check(name, value)
            return
        if isinstance(value, str | bytes) or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in np.ravel(value)
        ):
            raise InputTypeError(f"{name} must be a number or a list of numbers; got {value!r}.")
        values = np.asarray(value, dtype=float)
        if values.ndim != 1 or values.size == 0:
            raise InputError(f"{name} must be a non-empty 1-D list of numbers; got {value!r}.")
        for v in values:
            self.element.check(f"every value of {name}", float(v))


def validate_params(params: Mapping[str, Any], constraints: Mapping[str, Constraint]) -> None:
    """Check every parameter in ``params`` that has a constraint."""
    for name, constraint in constraints.items():
        if name in params:
            constraint.check(name, params[name])


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def _reject_complex(values: Any, name: str) -> None:
    """Raise on complex input, which ``np.asarray(..., float)`` would silently truncate."""
    if np.asarray(values).dtype.kind == "c":
        raise InputError(f"Complex data not supported: {name} has complex values.")


def check_X(X: Any, *, name: str = "X", accept_sparse: bool = True) -> np.ndarray | sp.csr_matrix:
    """Return X as a float64 2-D array (or CSR/CSC matrix), rejecting bad input.

    Parameters
    ----------
    X : array-like or scipy sparse matrix/array
        Design matrix of shape (n_samples, n_features).
    name : str
        Name used in error messages.
    accept_sparse : bool
        Whether scipy sparse input is allowed (kept sparse, as CSR or CSC).
    """
    if sp.issparse(X):
        if not accept_sparse:
            raise InputTypeError(
                f"{name} must be dense here; got a scipy sparse {X.format} matrix."
            )
        fmt = X.format if X.format in ("csr", "csc") else "csr"
        X = sp.csr_matrix(X) if fmt == "csr" else sp.csc_matrix(X)
        X = X.astype(np.float64)
        values = X.data
    else:
        if hasattr(X, "dtypes") and hasattr(X, "columns"):  # DataFrame: numeric columns only
            non_numeric = [c for c, t in X.dtypes.items() if not np.issubdtype(t, np.number)]
            if non_numeric:
                raise InputTypeError(f"{name} must be numeric; columns {non_numeric} are not.")
        _reject_complex(X, name)
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputTypeError(
                f"{name} must be a numeric array; got {type(X).__name__} ({exc})."
            ) from None
        values = X
    if X.ndim != 2:
        raise InputError(
            f"{name} must be 2-D of shape (n_samples, n_features); got {X.ndim}-D with shape "
            f"{X.shape}. Reshape your data, e.g. X.reshape(-1, 1) for a single feature."
        )
    # The wording is scikit-learn's (check_array), which its estimator checks expect.
    if X.shape[0] == 0:
        raise InputError(
            f"{name} is empty: found array with 0 sample(s) (shape={X.shape}) while a minimum "
            "of 1 is required."
        )
    if X.shape[1] == 0:
        raise InputError(
            f"{name} is empty: found array with 0 feature(s) (shape={X.shape}) while a minimum "
            "of 1 is required."
        )
    if not np.all(np.isfinite(values)):
        raise InputError(f"{name} contains NaN or infinite values.")
    return X


def check_y(y: Any, n_samples: int, family: Family | None = None) -> np.ndarray:
    """Return y as a float64 1-D array of length ``n_samples`` in the family's support."""
    if y is None:
        raise InputError("fit requires y to be passed, but the target y is None.")
    if sp.issparse(y):
        y = y.toarray()
    _reject_complex(y, "y")
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputTypeError(f"y must be a numeric array; got {type(y).__name__}.") from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"y must be 1-D of shape (n_samples,); got shape {y.shape}.")
    if y.shape[0] != n_samples:
        raise InputError(
            f"X and y have different numbers of samples: {n_samples} and {y.shape[0]}."
        )
    if not np.all(np.isfinite(y)):
        raise InputError("y contains NaN or infinite values.")
    if family is not None:
        family.check_y(y)
    return y


def check_tau(Tau: Any, n_features: int) -> np.ndarray | None:
    """Return the Tikhonov matrix as a float (p, p) array, or None for the identity."""
    if Tau is None:
        return None
    try:
        Tau = np.asarray(Tau, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputTypeError(
            f"Tau must be a numeric (n_features, n_features) array; got {Tau!r}."
        ) from None
    if Tau.shape != (n_features, n_features):
        raise InputError(
            f"Tau must have shape (n_features, n_features) = ({n_features}, {n_features}); "
            f"got {Tau.shape}."
        )
    if not np.all(np.isfinite(Tau)):
        raise InputError("Tau contains NaN or infinite values.")
    return Tau


def check_vector(
    values: Any,
    length: int,
    name: str,
    *,
    nonnegative: bool = False,
    positive_sum: bool = False,
    what: str = "n_samples",
) -> np.ndarray | None:
    """Return a float (length,) array (or None for None), rejecting bad input.

    Used for sample weights, offsets and penalty factors; ``what`` names the length in
    the message.
    """
    if values is None:
        return None
    if sp.issparse(values):
        values = values.toarray()
    _reject_complex(values, name)
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a numeric array; got {type(values).__name__}.") from None
    if values.ndim == 2 and 1 in values.shape:
        values = values.reshape(-1)
    if values.shape != (length,):
        raise ValueError(f"{name} must have shape ({what},) = ({length},); got {values.shape}.")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    if nonnegative and np.any(values < 0):
        raise ValueError(f"{name} must be non-negative; got a minimum of {values.min():g}.")
    if positive_sum and not values.sum() > 0:
        raise ValueError(f"{name} must have a positive sum; every weight is zero.")
    return values


def check_sample_data(sample_weight: Any, offset: Any, n_samples: int):
    """Return (sample_weight, offset) as float (n,) arrays or None, checked."""
    weights = check_vector(
        sample_weight, n_samples, "sample_weight", nonnegative=True, positive_sum=True
    )
    return weights, check_vector(offset, n_samples, "offset")


def validate_data(X: Any, y: Any, family: Family, Tau: Any = None, *, accept_sparse: bool = True):
    """Check and convert a fitting problem: returns ``(X, y, Tau)``."""
    X = check_X(X, accept_sparse=accept_sparse)
    y = check_y(y, X.shape[0], family)
    Tau = check_tau(Tau, X.shape[1])
    return X, y, Tau
