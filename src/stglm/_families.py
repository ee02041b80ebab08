"""Response families: a likelihood together with a mean function (the inverse link).

A :class:`Family` is one (likelihood, link) pair: it knows its mean function μ(z)
(:class:`MeanFunction`), the per-sample log-likelihood ℓ(y, μ) and the first two
derivatives of −ℓ with respect to μ. Everything a solver needs — the working residual
∂(−ℓ)/∂z and the Newton / Fisher weights ∂²(−ℓ)/∂z² — is derived from those pieces by the
chain rule in :class:`Family`, so a new family only describes its own mathematics and runs
through every solver (in numpy). The built-in families also name the compiled kernel that
evaluates them in the solvers' hot loops (:attr:`Family.kernel`).

Links: ``link=None`` keeps the seed's mean functions (``docs/SEMANTICS.md``: the Poisson
mean e^z continued linearly above ``eta``, softplus means for the negative binomial and
gamma); ``link="log"`` gives μ = e^z exactly, the model of R's ``glm``, MASS, glmGamPoi and
DESeq2, where coefficients are log fold changes per unit of the predictor.

A family is chosen from its name in exactly one place, :func:`get_family`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, gammaln, xlogy

from ._dispersion import _dlgamma
from ._errors import InputError

__all__ = [
    "DISTRIBUTIONS",
    "LINKS",
    "Family",
    "Gamma",
    "Gaussian",
    "MeanFunction",
    "NegativeBinomial",
    "Poisson",
    "Softplus",
    "get_family",
]

#: Machine epsilon added inside ``log`` by the seed's Poisson likelihood.
EPS = np.finfo(float).eps

#: Codes of the compiled kernels (:mod:`stglm._solvers._family_kernels`).
LIK_GAUSSIAN, LIK_POISSON, LIK_NEGBIN, LIK_GAMMA = 0, 1, 2, 3
MEAN_IDENTITY, MEAN_EXP, MEAN_SOFTPLUS = 0, 1, 2


def softplus(z: np.ndarray) -> np.ndarray:
    """Return log(1 + e^z), exact for large and very negative z."""
    z = np.asarray(z, dtype=float)
    # logaddexp(0, z) is log(1+e^z) without overflow, and e^z for z << 0.
    return np.logaddexp(0.0, z)


# -- mean functions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MeanFunction:
    """μ(z) with its first two derivatives and its inverse (the link).

    ``kind`` is "identity", "exp" (e^z, continued along its tangent above ``eta``; exact
    e^z for ``eta = inf``) or "softplus" (log(1 + e^z)).
    """

    kind: str
    eta: float = np.inf

    @property
    def code(self) -> int:
        """The kernels' code for this mean function."""
        return {"identity": MEAN_IDENTITY, "exp": MEAN_EXP, "softplus": MEAN_SOFTPLUS}[self.kind]

    @property
    def link_name(self) -> str:
        """The link's name as users write it (``"log"`` only for the exact exponential)."""
        if self.kind == "exp":
            return "log" if not np.isfinite(self.eta) else f"log-linear(eta={self.eta:g})"
        return self.kind

    def mean(self, z):
        z = np.asarray(z, dtype=float)
        if self.kind == "identity":
            return z
        if self.kind == "softplus":
            return softplus(z)
        if not np.isfinite(self.eta):
            return np.exp(z)
        e = np.exp(self.eta)
        return np.where(z > self.eta, e * (z - self.eta + 1.0), np.exp(np.minimum(z, self.eta)))

    def deriv(self, z):
        z = np.asarray(z, dtype=float)
        if self.kind == "identity":
            return np.ones_like(z)
        if self.kind == "softplus":
            return expit(z)
        return np.exp(np.minimum(z, self.eta))

    def deriv2(self, z):
        z = np.asarray(z, dtype=float)
        if self.kind == "identity":
            return np.zeros_like(z)
        if self.kind == "softplus":
            s = expit(z)
            return s * (1.0 - s)
        return np.where(z > self.eta, 0.0, np.exp(np.minimum(z, self.eta)))

    def inverse(self, mu):
        mu = np.asarray(mu, dtype=float)
        if self.kind == "identity":
            return mu
        if self.kind == "softplus":
            return mu + np.log(-np.expm1(-mu))  # log(e^μ − 1) without overflow
        if not np.isfinite(self.eta):
            return np.log(mu)
        e = np.exp(self.eta)
        return np.where(mu > e, mu / e + self.eta - 1.0, np.log(np.minimum(mu, e)))


IDENTITY = MeanFunction("identity")
LOG = MeanFunction("exp")
SOFTPLUS = MeanFunction("softplus")


class Family:
    """Base class: a response distribution together with its mean function.

    Subclasses implement ``loglik``, ``nll_dmu``, ``nll_dmu2`` and ``fisher_dmu2``, set
    ``name`` and ``mean_function`` (a :class:`MeanFunction`), and may override
    ``check_y`` and the flags below. A family defined outside stglm (Tweedie, binomial, …)
    runs through every solver with these numpy methods; the built-in ones also name a
    compiled kernel (:attr:`kernel`).
    """

    name: str = ""
    mean_function: MeanFunction = IDENTITY
    #: Whether the true Hessian ∂²(−ℓ)/∂z² is non-negative for every (y, z) (else the
    #: solvers fall back to Fisher weights where it is not).
    canonical: bool = False
    #: Whether responses are counts: an all-zero response then has no finite fit.
    is_count: bool = False
    #: Whether −ℓ is quadratic in z (one Newton step solves an unpenalised fit).
    is_quadratic: bool = False
    #: Whether the dispersion φ is 1 by the model (Poisson, NB given θ) rather than estimated
    #: by Pearson's χ²/df for standard errors (R's summary.glm convention).
    fixed_dispersion: bool = False
    #: The compiled likelihood's code, or None (numpy only).
    likelihood_code: int | None = None

    # -- mean function ---------------------------------------------------------------------
    @property
    def link_name(self) -> str:
        """The link's name: "identity", "log", "softplus" or the seed's "log-linear(eta=…)"."""
        return self.mean_function.link_name

    def mean(self, z: np.ndarray) -> np.ndarray:
        """Mean μ(z) of the response given the linear predictor z."""
        return self.mean_function.mean(z)

    def mean_deriv(self, z: np.ndarray) -> np.ndarray:
        """First derivative μ'(z)."""
        return self.mean_function.deriv(z)

    def mean_deriv2(self, z: np.ndarray) -> np.ndarray:
        """Second derivative μ''(z)."""
        return self.mean_function.deriv2(z)

    def link(self, mu: np.ndarray) -> np.ndarray:
        """Inverse of the mean function, z such that μ(z) = mu."""
        return self.mean_function.inverse(mu)

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

    # -- what the compiled kernels need ------------------------------------------------------
    @property
    def kernel(self) -> tuple[int, int, float, float] | None:
        """(likelihood code, mean code, eta, theta) for the compiled kernels, or None."""
        if self.likelihood_code is None:
            return None
        mf = self.mean_function
        return (self.likelihood_code, mf.code, float(mf.eta), float(getattr(self, "theta", 1.0)))

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


def _check_counts(y: np.ndarray, name: str) -> None:
    if np.any(y < 0):
        raise InputError(f"y must be non-negative for distr='{name}' (counts).")


class Gaussian(Family):
    """Normal response with identity mean: ℓ = −½(y − μ)²."""

    name = "gaussian"
    canonical = True
    is_quadratic = True
    likelihood_code = LIK_GAUSSIAN

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

    is_count = True
    fixed_dispersion = True
    likelihood_code = LIK_POISSON

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
        _check_counts(y, self.name)


class Poisson(_PoissonLikelihood):
    """Poisson with μ = e^z, linearised above ``eta`` (the seed's mean).

    Above ``eta`` the mean continues along the tangent e^η·(z − η + 1), so μ and
    μ' are continuous; ``eta=np.inf`` (what ``link="log"`` gives) is the canonical
    log-linear model.
    """

    name = "poisson"

    def __init__(self, eta: float = 2.0):
        self.eta = float(eta)
        self.canonical = not np.isfinite(self.eta)
        self.mean_function = MeanFunction("exp", self.eta)

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


class Softplus(_PoissonLikelihood):
    """Poisson likelihood with the softplus mean μ = log(1 + e^z)."""

    name = "softplus"
    mean_function = SOFTPLUS


def _link_mean(link: str) -> MeanFunction:
    """The mean function of the NB / gamma families' ``link`` ("softplus" or "log")."""
    return LOG if link == "log" else SOFTPLUS


class NegativeBinomial(Family):
    """NB2 with size ``theta`` (variance μ + μ²/θ); softplus (the seed's) or log mean.

    ``theta`` is MASS's size, glmGamPoi's and DESeq2's 1/overdispersion and statsmodels'
    1/α. The log-likelihood is the full log-pmf.
    """

    name = "neg-binomial"
    is_count = True
    fixed_dispersion = True
    likelihood_code = LIK_NEGBIN

    def __init__(self, theta: float = 1.0, link: str = "softplus"):
        self.theta = float(theta)
        self.link_kind = link
        self.mean_function = _link_mean(link)
        # With μ = e^z the true Hessian μθ(θ + y)/(μ + θ)² is never negative.
        self.canonical = link == "log"

    def loglik(self, y, mu):
        y, mu, t = np.broadcast_arrays(np.asarray(y, float), np.asarray(mu, float), self.theta)
        shape = y.shape
        y, mu, t = np.atleast_1d(y, mu, t)
        # lnΓ(y+θ) − lnΓ(θ) − lnΓ(y+1) + θ·log θ + y·log μ − (θ+y)·log(μ+θ), regrouped as
        # [lnΓ(y+θ) − lnΓ(θ) − y·log θ] − lnΓ(y+1) + y·log μ − (θ+y)·log1p(μ/θ): neither
        # θ·log θ nor lnΓ(θ) is left to cancel (written directly, each sample loses ~1e-7 at
        # θ = 1e8). The bracket and lnΓ(y+1) are 0 where y = 0: evaluated only where y > 0.
        out = -(t + y) * np.log1p(mu / t)
        out += xlogy(y, mu)
        nz = y > 0
        yn = y[nz]
        out[nz] += _dlgamma(t[nz], yn) - gammaln(yn + 1.0)
        return out.reshape(shape) if shape else out[0]

    def nll_dmu(self, y, mu):
        return (self.theta + y) / (mu + self.theta) - y / mu

    def nll_dmu2(self, y, mu):
        return y / (mu * mu) - (self.theta + y) / (mu + self.theta) ** 2

    def fisher_dmu2(self, mu):
        return self.theta / (mu * (mu + self.theta))

    def residual(self, y, z):
        if self.link_kind == "log":  # θ(μ − y)/(μ + θ): no 0/0 where μ underflows
            mu = np.exp(z)
            return self.theta * (mu - y) / (mu + self.theta)
        return super().residual(y, z)

    def hessian_weights(self, y, z):
        if self.link_kind == "log":
            mu = np.exp(z)
            return mu * self.theta * (self.theta + y) / (mu + self.theta) ** 2
        return super().hessian_weights(y, z)

    def check_y(self, y):
        _check_counts(y, self.name)

    def with_theta(self, theta) -> NegativeBinomial:
        """The same family with another size (an array broadcasts against y's columns)."""
        out = NegativeBinomial(link=self.link_kind)
        out.theta = theta if np.ndim(theta) else float(theta)
        return out

    def __repr__(self) -> str:
        link = "" if self.link_kind == "softplus" else f", link={self.link_kind!r}"
        return f"NegativeBinomial(theta={self.theta!r}{link})"


class Gamma(Family):
    """Gamma with shape 1, softplus (the seed's) or log mean: ℓ = −y/μ − log μ.

    The shape (dispersion) does not change the coefficients, which equal R's
    ``glm(family=Gamma(link="log"))`` for ``link="log"``.
    """

    name = "gamma"
    likelihood_code = LIK_GAMMA

    def __init__(self, link: str = "softplus"):
        self.link_kind = link
        self.mean_function = _link_mean(link)
        self.canonical = link == "log"  # true Hessian y/μ > 0

    def loglik(self, y, mu):
        return -y / mu - np.log(mu)

    def nll_dmu(self, y, mu):
        return 1.0 / mu - y / (mu * mu)

    def nll_dmu2(self, y, mu):
        return 2.0 * y / mu**3 - 1.0 / (mu * mu)

    def fisher_dmu2(self, mu):
        return 1.0 / (mu * mu)

    def residual(self, y, z):
        if self.link_kind == "log":
            return 1.0 - y * np.exp(-z)
        return super().residual(y, z)

    def hessian_weights(self, y, z):
        if self.link_kind == "log":
            return y * np.exp(-z)
        return super().hessian_weights(y, z)

    def check_y(self, y):
        if np.any(y <= 0):
            raise InputError("y must be strictly positive for distr='gamma'.")

    def __repr__(self) -> str:
        return "Gamma()" if self.link_kind == "softplus" else f"Gamma(link={self.link_kind!r})"


#: The valid values of ``distr``, in the seed's order.
DISTRIBUTIONS = ("gaussian", "poisson", "softplus", "neg-binomial", "gamma")
#: The links each ``distr`` accepts besides None (the seed's mean function).
LINKS = {
    "gaussian": ("identity",),
    "poisson": ("log",),
    "softplus": ("softplus",),
    "neg-binomial": ("log", "softplus"),
    "gamma": ("log", "softplus"),
}


def get_family(
    distr: str | Family, eta: float = 2.0, theta: float = 1.0, link: str | None = None
) -> Family:
    """Return the family object for a ``distr`` name (the only place names are resolved).

    Parameters
    ----------
    distr : str or Family
        One of ``"gaussian"``, ``"poisson"``, ``"softplus"``, ``"neg-binomial"``,
        ``"gamma"`` (case sensitive, as in spateo), or a :class:`Family` instance,
        which is returned unchanged.
    eta : float, default=2.0
        Threshold above which the seed's Poisson mean is linearised (Poisson, link None).
    theta : float, default=1.0
        Negative-binomial size (neg-binomial only).
    link : {None, "log", "identity", "softplus"}, default=None
        None keeps the seed's mean function; "log" gives μ = e^z for poisson (the same
        model as ``eta=np.inf``), neg-binomial and gamma; see :data:`LINKS`.

    Returns
    -------
    Family

    Raises
    ------
    ValueError
        If ``distr`` is not a known name, or ``link`` is not one of its links.
    """
    if isinstance(distr, Family):
        if link is not None and link != distr.link_name:
            raise InputError(
                f"link={link!r} contradicts the Family instance given as distr "
                f"({distr!r}, link {distr.link_name!r}); leave link=None."
            )
        return distr
    if distr not in DISTRIBUTIONS:
        raise InputError(
            f"distr must be one of {', '.join(map(repr, DISTRIBUTIONS))} or a Family instance; "
            f"got {distr!r}."
        )
    if link is not None and link not in LINKS[distr]:
        valid = ", ".join(map(repr, (None, *LINKS[distr])))
        raise InputError(f"link must be one of {valid} for distr={distr!r}; got {link!r}.")
    if distr == "gaussian":
        return Gaussian()
    if distr == "poisson":
        return Poisson(eta=np.inf if link == "log" else eta)
    if distr == "softplus":
        return Softplus()
    if distr == "neg-binomial":
        return NegativeBinomial(theta=theta, link=link or "softplus")
    return Gamma(link=link or "softplus")
