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
from ._families import Family, get_family

__all__ = [
    "ETA",
    "MAX_MAGNITUDE",
    "AnyOf",
    "ArrayOrNone",
    "Boolean",
    "Constraint",
    "Integer",
    "Options",
    "Real",
    "as_float_array",
    "check_coefficients",
    "check_means",
    "check_seed_problem",
    "check_tau",
    "check_X",
    "check_sample_data",
    "check_vector",
    "validate_data",
    "validate_params",
]

#: Largest magnitude accepted in X, y, offsets and weights (and the smallest for a design
#: column's largest entry): the solvers form squares and sums of squares of them, which
#: overflow (or underflow to 0) near 1e154 (1e-154); 1e100 leaves room for n and the weights.
MAX_MAGNITUDE = 1e100


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


#: The seed's Poisson threshold: a real number, or +inf (μ = e^z, the log link); −inf would
#: make the mean e^−inf·(z + …) = 0 everywhere.
ETA = Real(-np.inf, None, closed="right", allow_inf=True)


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
        raise InputError(f"{name} must be {self.description}; got {value!r}.")


class ArrayOrNone(Constraint):
    """None or an array-like (checked against the data's shape when the data is seen)."""

    def check(self, name, value):
        if value is None:
            return
        if isinstance(value, str | bytes | numbers.Number):
            raise InputTypeError(f"{name} must be None or an array of numbers; got {value!r}.")


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
def as_float_array(values: Any, message: str) -> np.ndarray:
    """``values`` as a float64 array; ``InputTypeError(message)`` where they are not numbers."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputTypeError(message) from None


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
    labels = None
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
            labels = list(X.columns)
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
    # max and min see NaN (it propagates) and inf in two contiguous passes, no temporary
    high, low = (values.max(), values.min()) if values.size else (0.0, 0.0)
    if not (np.isfinite(high) and np.isfinite(low)):
        raise InputError(f"{name} contains NaN or infinite values.")
    if max(high, -low) > MAX_MAGNITUDE or _may_have_tiny_columns(X, values):
        _check_column_magnitudes(X, name, labels)
    return X


def _may_have_tiny_columns(X, values: np.ndarray) -> bool:
    """Whether a column could have all its values below 1/:data:`MAX_MAGNITUDE` (cheap).

    Sparse: some stored value is that small. Dense: some column's sum of squares is below
    n/MAX_MAGNITUDE² (all-zero columns too, which the exact check then lets pass).
    """
    if sp.issparse(X):
        return bool(values.size) and np.abs(values).min() < 1 / MAX_MAGNITUDE
    squares = np.einsum("ij,ij->j", X, X)  # one pass, no n × p temporary
    return bool(np.any(squares < X.shape[0] / MAX_MAGNITUDE**2))


def _columns_listed(columns: np.ndarray, labels: list | None) -> str:
    named = columns if labels is None else [repr(labels[j]) for j in columns]
    shown = ", ".join(map(str, named[:5]))
    return shown + (f" and {columns.size - 5} more" if columns.size > 5 else "")


def _check_column_magnitudes(X, name: str, labels: list | None = None) -> None:
    """Refuse columns whose squares overflow or underflow (see :data:`MAX_MAGNITUDE`).

    Such a design is finite, but the solvers' scaling and Hessians would hold inf or 0 and
    no step could be trusted; the cure (rescaling the column) is the user's to choose.
    """
    if sp.issparse(X):
        # The largest |value| of each column: the columns' maxima of X.data's magnitudes.
        peak = np.asarray(abs(X).max(axis=0).todense()).ravel()
    else:
        peak = np.maximum(np.abs(X.max(axis=0)), np.abs(X.min(axis=0)))
    huge = np.flatnonzero(peak > MAX_MAGNITUDE)
    if huge.size:
        raise InputError(
            f"{name} has values too large to fit: column(s) {_columns_listed(huge, labels)} reach "
            f"{peak[huge].max():.3g} in magnitude (at most {MAX_MAGNITUDE:g} is accepted; "
            "squares of such values overflow). Rescale those columns, e.g. divide by their "
            "standard deviation."
        )
    tiny = np.flatnonzero((peak > 0) & (peak < 1 / MAX_MAGNITUDE))
    if tiny.size:
        raise InputError(
            f"{name} has values too small to fit: every value of column(s) "
            f"{_columns_listed(tiny, labels)} is below {1 / MAX_MAGNITUDE:g} in magnitude "
            "(squares of such values underflow to 0). Rescale those columns, e.g. divide by "
            "their standard deviation."
        )


def _check_magnitude(values: np.ndarray, name: str) -> None:
    """Refuse values beyond :data:`MAX_MAGNITUDE` (finite, but their squares overflow)."""
    if values.size and np.abs(values).max() > MAX_MAGNITUDE:
        raise InputError(
            f"{name} has values too large to fit: up to {np.abs(values).max():.3g} in "
            f"magnitude (at most {MAX_MAGNITUDE:g} is accepted; squares of such values "
            "overflow). Rescale it."
        )


def check_y(y: Any, n_samples: int, family: Family | None = None) -> np.ndarray:
    """Return y as a float64 1-D array of length ``n_samples`` in the family's support."""
    if y is None:
        raise InputError("fit requires y to be passed, but the target y is None.")
    if sp.issparse(y):
        y = y.toarray()
    _reject_complex(y, "y")
    y = as_float_array(y, f"y must be a numeric array; got {type(y).__name__}.")
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
    _check_magnitude(y, "y")
    if family is not None:
        family.check_y(y)
    return y


def check_tau(Tau: Any, n_features: int) -> np.ndarray | None:
    """Return the Tikhonov matrix as a float (p, p) array, or None for the identity."""
    if Tau is None:
        return None
    Tau = as_float_array(
        Tau, f"Tau must be a numeric (n_features, n_features) array; got {type(Tau).__name__}."
    )
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
    values = as_float_array(values, f"{name} must be a numeric array; got {type(values).__name__}.")
    if values.ndim == 2 and 1 in values.shape:
        values = values.reshape(-1)
    if values.shape != (length,):
        raise InputError(f"{name} must have shape ({what},) = ({length},); got {values.shape}.")
    if not np.all(np.isfinite(values)):
        raise InputError(f"{name} contains NaN or infinite values.")
    _check_magnitude(values, name)
    if nonnegative and np.any(values < 0):
        raise InputError(f"{name} must be non-negative; got a minimum of {values.min():g}.")
    if positive_sum and not values.sum() > 0:
        raise InputError(f"{name} must have a positive sum; every weight is zero.")
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


# ---------------------------------------------------------------------------------------------
# the seed's module functions (stglm.generalized_lm)
# ---------------------------------------------------------------------------------------------
#: The parameters of the seed's functions (batch_grad, _loss, ...), checked as GLM checks them.
SEED_FUNCTION_CONSTRAINTS = {
    "alpha": Real(0.0, 1.0, closed="both"),
    "reg_lambda": Real(0.0, None, closed="left"),
    "eta": ETA,
    "theta": Real(0.0, None, closed="neither"),
    "fit_intercept": Boolean(),
    "beta0": Real(),
}


def check_coefficients(beta: Any, n_features: int, fit_intercept: bool) -> np.ndarray:
    """The seed's packed coefficients: [β0, β] (n_features + 1) with intercept, else β."""
    if fit_intercept:
        return check_vector(beta, n_features + 1, "beta", what="n_features + 1")
    return check_vector(beta, n_features, "beta", what="n_features")


def check_means(values: Any, n_samples: int, family: Family, name: str) -> np.ndarray:
    """Predicted means (a scalar or (n_samples,)), finite and in the family's range."""
    _reject_complex(values, name)
    values = as_float_array(values, f"{name} must be a number or a numeric array.")
    if values.ndim:
        values = check_vector(values, n_samples, name)
    elif not np.isfinite(values):
        raise InputError(f"{name} contains NaN or infinite values.")
    if family.name == "gamma" and np.any(values <= 0):
        raise InputError(f"{name} must be strictly positive for distr='gamma' (means).")
    if family.name != "gaussian" and np.any(values < 0):
        raise InputError(f"{name} must be non-negative for distr={family.name!r} (means).")
    return values


def check_seed_problem(
    distr: Any,
    X: Any,
    y: Any,
    beta: Any,
    *,
    alpha: Any,
    reg_lambda: Any,
    Tau: Any,
    eta: Any,
    theta: Any,
    fit_intercept: Any,
):
    """Check the arguments of the seed's ``batch_grad`` and ``_loss`` before any work.

    Returns ``(family, X, y, beta, Tau)``, converted.
    """
    params = {"alpha": alpha, "reg_lambda": reg_lambda, "eta": eta, "theta": theta}
    validate_params({**params, "fit_intercept": fit_intercept}, SEED_FUNCTION_CONSTRAINTS)
    family = get_family(distr, eta=eta, theta=theta)
    X, y, Tau = validate_data(X, y, family, Tau)
    return family, X, y, check_coefficients(beta, X.shape[1], fit_intercept), Tau
