"""Response families: mean function, likelihood and their derivatives.

Each family is an object that knows its mean function μ(z) (the inverse link of
spateo's conventions, see ``docs/SEMANTICS.md``), the per-sample log-likelihood
ℓ(y, μ), and the first two derivatives of −ℓ with respect to μ.  Everything a
solver needs — the working residual ∂(−ℓ)/∂z and the Newton / Fisher weights
∂²(−ℓ)/∂z² — is derived from those pieces by the chain rule in :class:`Family`,
so a new family only describes its own mathematics.

A family is chosen from its name in exactly one place, :func:`get_family`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, gammaln, xlogy

__all__ = [
    "COUNT_FAMILIES",
    "DISTRIBUTIONS",
    "Family",
    "Gamma",
    "Gaussian",
    "NegativeBinomial",
    "Poisson",
    "Softplus",
    "get_family",
]

#: Families whose responses are counts: an all-zero response has no finite maximum-likelihood fit.
COUNT_FAMILIES = ("poisson", "softplus", "neg-binomial")
#: Machine epsilon added inside ``log`` by the seed's Poisson likelihood.
EPS = np.finfo(float).eps


def softplus(z: np.ndarray) -> np.ndarray:
    """Return log(1 + e^z), exact for large and very negative z."""
    z = np.asarray(z, dtype=float)
    # logaddexp(0, z) is log(1+e^z) without overflow, and e^z for z << 0.
    return np.logaddexp(0.0, z)


class Family:
    """Base class: a response distribution together with its mean function.

    Subclasses implement ``mean``, ``mean_deriv``, ``mean_deriv2``, ``loglik``,
    ``nll_dmu``, ``nll_dmu2`` and ``fisher_dmu2`` and set ``name``.
    """

    name: str = ""
    #: Whether the Hessian ∂²(−ℓ)/∂z² can be negative for some (y, z).
    canonical: bool = False

    # -- mean function ---------------------------------------------------------------------
    def mean(self, z: np.ndarray) -> np.ndarray:
        """Mean μ(z) of the response given the linear predictor z."""
        raise NotImplementedError

    def mean_deriv(self, z: np.ndarray) -> np.ndarray:
        """First derivative μ'(z)."""
        raise NotImplementedError

    def link(self, mu: np.ndarray) -> np.ndarray:
        """Inverse of the mean function, z such that μ(z) = mu."""
        raise NotImplementedError

    def mean_deriv2(self, z: np.ndarray) -> np.ndarray:
        """Second derivative μ''(z)."""
        raise NotImplementedError

    # -- likelihood --------------------------------------------------------------------------
    def loglik(self, y: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """Per-sample log-likelihood ℓ(y, μ) in the seed's convention."""
        raise NotImplementedError

    def saturated_loglik(self, y: np.ndarray) -> np.ndarray:
        """Per-sample log-likelihood of the saturated model, ℓ(y, y)."""
        return self.loglik(y, y)

    def nll_dmu(self, y: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """∂(−ℓ)/∂μ."""
        raise NotImplementedError

    def nll_dmu2(self, y: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """∂²(−ℓ)/∂μ² (may be negative)."""
        raise NotImplementedError

    def fisher_dmu2(self, mu: np.ndarray) -> np.ndarray:
        """E_y[∂²(−ℓ)/∂μ²] = 1 / Var(y) for the likelihood's own variance function."""
        raise NotImplementedError

    def check_y(self, y: np.ndarray) -> None:
        """Raise ``ValueError`` if ``y`` lies outside the family's support."""

    # -- derived quantities (chain rule) -----------------------------------------------------
    def residual(self, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Working residual r = ∂(−ℓ)/∂z = μ'(z) · ∂(−ℓ)/∂μ."""
        return self.mean_deriv(z) * self.nll_dmu(y, self.mean(z))

    def hessian_weights(self, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Curvature weights for a Newton step on −ℓ as a function of z.

        The true second derivative μ''·∂(−ℓ)/∂μ + μ'²·∂²(−ℓ)/∂μ² where it is
        positive, and the Fisher weight μ'²/Var(y) where it is not (non-canonical
        links make the true value negative for some samples).
        """
        mu = self.mean(z)
        d1 = self.mean_deriv(z)
        true = self.mean_deriv2(z) * self.nll_dmu(y, mu) + d1 * d1 * self.nll_dmu2(y, mu)
        if self.canonical:
            return true
        fisher = d1 * d1 * self.fisher_dmu2(mu)
        return np.where(true > 0.0, true, fisher)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.__dict__.items()))))


class _SoftplusMean:
    """Mixin: μ = softplus(z) = log(1 + e^z), μ' = σ(z), μ'' = σ(z)(1 − σ(z))."""

    def mean(self, z):
        return softplus(z)

    def mean_deriv(self, z):
        return expit(z)

    def link(self, mu):
        mu = np.asarray(mu, dtype=float)
        return mu + np.log(-np.expm1(-mu))  # log(e^μ − 1) without overflow

    def mean_deriv2(self, z):
        s = expit(z)
        return s * (1.0 - s)


class Gaussian(Family):
    """Normal response with identity mean: ℓ = −½(y − μ)²."""

    name = "gaussian"
    canonical = True

    def mean(self, z):
        return np.asarray(z, dtype=float)

    def mean_deriv(self, z):
        return np.ones_like(z, dtype=float)

    def link(self, mu):
        return np.asarray(mu, dtype=float)

    def mean_deriv2(self, z):
        return np.zeros_like(z, dtype=float)

    def loglik(self, y, mu):
        return -0.5 * (y - mu) ** 2

    def nll_dmu(self, y, mu):
        return mu - y

    def nll_dmu2(self, y, mu):
        return np.ones_like(mu, dtype=float)

    def fisher_dmu2(self, mu):
        return np.ones_like(mu, dtype=float)


class _PoissonLikelihood(Family):
    """Poisson log-likelihood without the log y! term: ℓ = y·log(μ + ε) − μ."""

    def loglik(self, y, mu):
        # y·log(μ + ε) with numpy's vectorised log (3× faster than xlogy); xlogy's
        # 0·log(·) = 0 only matters where the product is not finite.
        y, mu = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(mu, dtype=float))
        with np.errstate(divide="ignore", invalid="ignore"):
            ll = y * np.log(mu + EPS) - mu
        bad = ~np.isfinite(ll)
        if bad.any():
            ll[bad] = xlogy(y[bad], mu[bad] + EPS) - mu[bad]
        return ll

    def nll_dmu(self, y, mu):
        # The seed's gradient uses y/μ (not y/(μ+ε)); the difference is ~1e-16 relative.
        return 1.0 - y / mu

    def nll_dmu2(self, y, mu):
        return y / (mu * mu)

    def fisher_dmu2(self, mu):
        return 1.0 / mu

    def check_y(self, y):
        if np.any(y < 0):
            raise ValueError(f"y must be non-negative for distr='{self.name}' (counts).")


class Poisson(_PoissonLikelihood):
    """Poisson with μ = e^z, linearised above ``eta``.

    Above ``eta`` the mean continues along the tangent e^η·(z − η + 1), so μ and
    μ' are continuous; ``eta=np.inf`` gives the canonical log-linear model.
    """

    name = "poisson"

    def __init__(self, eta: float = 2.0):
        self.eta = float(eta)
        self.canonical = not np.isfinite(self.eta)

    def mean(self, z):
        z = np.asarray(z, dtype=float)
        if not np.isfinite(self.eta):
            return np.exp(z)
        e = np.exp(self.eta)
        return np.where(z > self.eta, e * (z - self.eta + 1.0), np.exp(np.minimum(z, self.eta)))

    def mean_deriv(self, z):
        return np.exp(np.minimum(np.asarray(z, dtype=float), self.eta))

    def link(self, mu):
        mu = np.asarray(mu, dtype=float)
        if not np.isfinite(self.eta):
            return np.log(mu)
        e = np.exp(self.eta)
        return np.where(mu > e, mu / e + self.eta - 1.0, np.log(np.minimum(mu, e)))

    def mean_deriv2(self, z):
        z = np.asarray(z, dtype=float)
        return np.where(z > self.eta, 0.0, np.exp(np.minimum(z, self.eta)))

    def residual(self, y, z):
        if self.canonical:
            return np.exp(z) - y  # μ'·(1 − y/μ) simplifies; avoids 0/0 when μ underflows
        return super().residual(y, z)

    def hessian_weights(self, y, z):
        if self.canonical:
            return np.exp(z)  # the generic formula equals μ but loses digits to cancellation
        return super().hessian_weights(y, z)

    def __repr__(self) -> str:
        return f"Poisson(eta={self.eta!r})"


class Softplus(_SoftplusMean, _PoissonLikelihood):
    """Poisson likelihood with the softplus mean μ = log(1 + e^z)."""

    name = "softplus"


class NegativeBinomial(_SoftplusMean, Family):
    """NB2 with size ``theta`` (variance μ + μ²/θ) and softplus mean; full log-pmf."""

    name = "neg-binomial"

    def __init__(self, theta: float = 1.0):
        self.theta = float(theta)

    def loglik(self, y, mu):
        t = self.theta
        return (
            gammaln(y + t)
            - gammaln(t)
            - gammaln(y + 1.0)
            + t * np.log(t)
            + xlogy(y, mu)
            - (t + y) * np.log(mu + t)
        )

    def nll_dmu(self, y, mu):
        return (self.theta + y) / (mu + self.theta) - y / mu

    def nll_dmu2(self, y, mu):
        return y / (mu * mu) - (self.theta + y) / (mu + self.theta) ** 2

    def fisher_dmu2(self, mu):
        return self.theta / (mu * (mu + self.theta))

    def check_y(self, y):
        if np.any(y < 0):
            raise ValueError("y must be non-negative for distr='neg-binomial' (counts).")

    def __repr__(self) -> str:
        return f"NegativeBinomial(theta={self.theta!r})"


class Gamma(_SoftplusMean, Family):
    """Gamma with shape 1 and softplus mean: ℓ = −y/μ − log μ."""

    name = "gamma"

    def loglik(self, y, mu):
        return -y / mu - np.log(mu)

    def nll_dmu(self, y, mu):
        return 1.0 / mu - y / (mu * mu)

    def nll_dmu2(self, y, mu):
        return 2.0 * y / mu**3 - 1.0 / (mu * mu)

    def fisher_dmu2(self, mu):
        return 1.0 / (mu * mu)

    def check_y(self, y):
        if np.any(y <= 0):
            raise ValueError("y must be strictly positive for distr='gamma'.")


#: The valid values of ``distr``, in the seed's order.
DISTRIBUTIONS = ("gaussian", "poisson", "softplus", "neg-binomial", "gamma")


def get_family(distr: str | Family, eta: float = 2.0, theta: float = 1.0) -> Family:
    """Return the family object for a ``distr`` name (the only place names are resolved).

    Parameters
    ----------
    distr : str or Family
        One of ``"gaussian"``, ``"poisson"``, ``"softplus"``, ``"neg-binomial"``,
        ``"gamma"`` (case sensitive, as in spateo), or a :class:`Family` instance,
        which is returned unchanged.
    eta : float, default=2.0
        Threshold above which the Poisson mean is linearised (Poisson only).
    theta : float, default=1.0
        Negative-binomial size (neg-binomial only).

    Returns
    -------
    Family

    Raises
    ------
    ValueError
        If ``distr`` is not a known name.
    """
    if isinstance(distr, Family):
        return distr
    if distr == "gaussian":
        return Gaussian()
    if distr == "poisson":
        return Poisson(eta=eta)
    if distr == "softplus":
        return Softplus()
    if distr == "neg-binomial":
        return NegativeBinomial(theta=theta)
    if distr == "gamma":
        return Gamma()
    raise ValueError(f"distr must be one of {', '.join(map(repr, DISTRIBUTIONS))}; got {distr!r}.")
