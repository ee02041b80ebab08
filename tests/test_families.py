"""Mean functions, log-likelihoods, deviance and pseudo-R² against independent references.

References: the docs/SEMANTICS.md formulas written out in NumPy, scipy.stats log-densities,
statsmodels' family deviances and central finite differences.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import COUNT_DISTRS, DISTRS, ref_loglik, ref_mean, ref_softplus
from numpy.testing import assert_allclose
from scipy import stats
from statsmodels.genmod import families as sm_families

from stglm.generalized_lm import _grad_nl, _nl, deviance, log_likelihood, pseudo_r2

ETA = 2.0
H = 1e-6  # central-difference step


def _z_grid(eta=ETA):
    z = np.linspace(-8.0, 8.0, 161)
    z = np.concatenate([z, [eta - 1e-3, eta + 1e-3, eta - 0.3, eta + 0.3]])
    return z[np.abs(z - eta) > 10 * H]  # μ' has a kink at η: stay off it


# ---------------------------------------------------------------------------------------------
# mean functions
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_nl_matches_semantics_table(distr, fit_intercept):
    z = _z_grid()
    assert_allclose(_nl(distr, z, ETA, fit_intercept), ref_mean(distr, z, ETA), rtol=1e-13)


def test_poisson_mean_is_continuous_at_eta_without_intercept():
    # spateo dropped the tangent's constant without intercept, so μ jumped at η.
    lo, hi = _nl("poisson", np.array([ETA - 1e-9, ETA + 1e-9]), ETA, False)
    assert hi == pytest.approx(lo, rel=1e-8)
    assert hi == pytest.approx(np.exp(ETA), rel=1e-8)


def test_poisson_eta_inf_is_pure_exp():
    z = np.linspace(-20, 30, 101)
    assert_allclose(_nl("poisson", z, np.inf, True), np.exp(z), rtol=1e-14)
    assert_allclose(_grad_nl("poisson", z, np.inf), np.exp(z), rtol=1e-14)


@pytest.mark.parametrize("distr_", ["softplus", "neg-binomial", "gamma"])
def test_softplus_is_stable_at_extremes(distr_):
    z = np.array([-800.0, -50.0, -10.5, 35.5, 50.0, 800.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / underflow warnings
        mu = _nl(distr_, z, ETA, True)
        d = _grad_nl(distr_, z, ETA)
    assert_allclose(mu, ref_softplus(z), rtol=1e-14)
    assert mu[1] == pytest.approx(np.exp(-50.0), rel=1e-12)  # e^z regime, not 0
    assert mu[-1] == 800.0 and mu[-2] == pytest.approx(50.0, rel=1e-15)
    with np.errstate(over="ignore"):  # e^800 = inf gives σ = 0, the correct limit
        sigma = 1.0 / (1.0 + np.exp(-z))
    assert_allclose(d, sigma, rtol=1e-12)


@pytest.mark.parametrize("eta", [ETA, 0.5, np.inf])
def test_grad_nl_is_derivative_of_nl(distr, eta):
    z = _z_grid(eta if np.isfinite(eta) else ETA)
    fd = (_nl(distr, z + H, eta, True) - _nl(distr, z - H, eta, True)) / (2 * H)
    assert_allclose(_grad_nl(distr, z, eta), fd, rtol=1e-6, atol=1e-9)


def test_grad_nl_poisson_above_eta_is_constant():
    z = np.array([ETA + 0.1, ETA + 1.0, ETA + 10.0])
    assert_allclose(_grad_nl("poisson", z, ETA), np.exp(ETA), rtol=1e-15)


def test_unknown_distr_is_value_error_listing_valid_names():
    with pytest.raises(ValueError, match="distr must be one of .*'neg-binomial'"):
        _nl("binomial", np.zeros(3), ETA, True)
    with pytest.raises(ValueError, match="distr"):
        log_likelihood("Poisson", np.ones(3), np.ones(3))  # case sensitive, as in spateo


# ---------------------------------------------------------------------------------------------
# log-likelihood
# ---------------------------------------------------------------------------------------------
def _y_mu(distr, n=60, seed=1):
    rng = np.random.RandomState(seed)
    mu = rng.uniform(0.3, 6.0, size=n)  # not tiny: keeps the seed's ε out of the comparison
    if distr == "gaussian":
        return mu + rng.normal(size=n), mu
    if distr == "gamma":
        return rng.gamma(1.0, mu), mu
    y = rng.poisson(mu).astype(float)
    y[:5] = 0.0  # zeros must be handled (0·log 0 = 0)
    return y, mu


@pytest.mark.parametrize("theta", [0.5, 1.0, 3.7])
def test_loglik_negbin_is_scipy_nbinom(theta):
    y, mu = _y_mu("neg-binomial")
    expected = stats.nbinom.logpmf(y, theta, theta / (theta + mu)).sum()
    assert log_likelihood("neg-binomial", y, mu, theta) == pytest.approx(expected, rel=1e-12)


def test_loglik_negbin_holds_its_digits_at_every_theta():
    """The NB log-pmf against 50-digit arithmetic, θ from 1e-8 to 1e8, μ on both sides of θ.

    For integer y, lnΓ(y+θ) − lnΓ(θ) = Σ_{j<y} log(θ+j) and lnΓ(y+1) = Σ_{j<y} log(j+1),
    exact in Decimal. Written directly, θ·log θ − (θ+y)·log(μ+θ) loses ~1e-7 per sample
    at θ = 1e8, and a likelihood-ratio statistic sums that over thousands of samples.
    """
    from decimal import Decimal, getcontext

    from stglm import get_family

    getcontext().prec = 50
    thetas = np.array([1e-8, 1e-3, 0.7, 3.0, 1e3, 1e8])
    mus = np.exp(np.array([-20.0, -3.0, 0.0, 1.1, 6.0, 15.0]))
    ys = np.array([0.0, 1.0, 7.0, 300.0])
    T, M, Y = (a.ravel() for a in np.meshgrid(thetas, mus, ys, indexing="ij"))
    got = get_family("neg-binomial", link="log").with_theta(T).loglik(Y, M)

    def exact(theta, y, mu):
        th, mu = Decimal(float(theta)), Decimal(float(mu))
        steps = range(int(y))
        lgamma_ratio = sum(((th + j).ln() - Decimal(j + 1).ln() for j in steps), Decimal(0))
        ll = lgamma_ratio + th * (th / (th + mu)).ln() + Decimal(int(y)) * (mu / (th + mu)).ln()
        return float(ll)

    ref = np.array([exact(*args) for args in zip(T, Y, M, strict=True)])
    assert_allclose(got, ref, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("distr_", ["poisson", "softplus"])
def test_loglik_poisson_is_scipy_without_log_factorial(distr_):
    y, mu = _y_mu(distr_)
    log_fact = np.sum([np.log(np.arange(1, k + 1)).sum() for k in y.astype(int)])
    expected = stats.poisson.logpmf(y, mu).sum() + log_fact
    assert log_likelihood(distr_, y, mu) == pytest.approx(expected, rel=1e-12)


def test_loglik_gaussian_is_norm_logpdf_without_constant():
    y, mu = _y_mu("gaussian")
    expected = np.sum(stats.norm.logpdf(y, mu, 1.0) + 0.5 * np.log(2 * np.pi))
    assert log_likelihood("gaussian", y, mu) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(-0.5 * np.sum((y - mu) ** 2), rel=1e-12)


def test_loglik_gamma_is_shape_one_gamma():
    y, mu = _y_mu("gamma")
    expected = stats.gamma(a=1.0, scale=mu).logpdf(y).sum()
    assert log_likelihood("gamma", y, mu) == pytest.approx(expected, rel=1e-12)


def test_loglik_accepts_scalar_prediction(distr):
    y, _ = _y_mu(distr)
    assert log_likelihood(distr, y, 2.5, 1.5) == pytest.approx(
        ref_loglik(distr, y, np.full_like(y, 2.5), 1.5), rel=1e-12
    )


def test_loglik_is_higher_for_better_predictions(distr):
    # "negative log-likelihood" in the seed's summary line, but logL in behaviour: keep logL.
    y, mu = _y_mu(distr)
    assert log_likelihood(distr, y, mu, 2.0) > log_likelihood(distr, y, 50.0 * mu, 2.0)


# ---------------------------------------------------------------------------------------------
# deviance and pseudo-R²
# ---------------------------------------------------------------------------------------------
def _sm_deviance(distr, y, mu, theta):
    """statsmodels' unscaled deviance for the family with the same likelihood."""
    fam = {
        "gaussian": sm_families.Gaussian,
        "poisson": sm_families.Poisson,
        "softplus": sm_families.Poisson,  # same likelihood, only the mean function differs
        "gamma": sm_families.Gamma,  # shape 1 (scale 1) is the seed's gamma
        "neg-binomial": lambda: sm_families.NegativeBinomial(alpha=1.0 / theta),  # NB2
    }[distr]()
    return fam.deviance(y, mu)


@pytest.mark.parametrize("theta", [0.5, 2.0])
def test_deviance_matches_statsmodels(distr, theta):
    y, mu = _y_mu(distr)
    assert deviance(y, mu, distr, theta) == pytest.approx(
        _sm_deviance(distr, y, mu, theta), rel=1e-10
    )


def test_deviance_is_twice_loglik_gap(distr):
    y, mu = _y_mu(distr)
    if distr in COUNT_DISTRS:
        y = y + 1.0  # scipy's pmf at μ = y = 0 is a corner the identity need not visit
    expected = 2 * (ref_loglik(distr, y, y, 1.3) - ref_loglik(distr, y, mu, 1.3))
    assert deviance(y, mu, distr, 1.3) == pytest.approx(expected, rel=1e-10)
    assert deviance(y, y, distr, 1.3) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("distr_", COUNT_DISTRS)
def test_count_families_handle_zeros(distr_):
    y = np.array([0.0, 0.0, 1.0, 3.0, 0.0, 7.0])
    mu = np.array([0.5, 2.0, 1.0, 2.5, 0.1, 6.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no log(0) / 0·inf warnings either
        values = [
            log_likelihood(distr_, y, mu, 2.0),
            deviance(y, mu, distr_, 2.0),
            pseudo_r2(y, mu, y.mean(), distr_, 2.0),
            deviance(np.zeros(4), np.full(4, 0.5), distr_, 2.0),
        ]
    assert np.all(np.isfinite(values))
    assert values[1] == pytest.approx(_sm_deviance(distr_, y, mu, 2.0), rel=1e-10)
    # All-zero y: the deviance is 2Σμ (Poisson) or 2θΣlog(1 + μ/θ) (NB2), by hand.
    expected = 2 * 4 * (0.5 if distr_ != "neg-binomial" else 2.0 * np.log1p(0.5 / 2.0))
    assert values[3] == pytest.approx(expected, rel=1e-12)


def test_pseudo_r2_by_hand(distr):
    y, mu = _y_mu(distr)
    ynull = float(y.mean())
    dev = _sm_deviance(distr, y, mu, 1.0)
    dev_null = _sm_deviance(distr, y, np.full_like(y, ynull), 1.0)
    assert pseudo_r2(y, mu, ynull, distr, 1.0) == pytest.approx(1 - dev / dev_null, rel=1e-10)
    assert pseudo_r2(y, y, ynull, distr, 1.0) == pytest.approx(1.0)
    assert pseudo_r2(y, np.full_like(y, ynull), ynull, distr, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_pseudo_r2_can_be_negative_on_held_out_data(distr):
    y, mu = _y_mu(distr)
    assert pseudo_r2(y, 20.0 * mu, float(y.mean()), distr, 1.0) < 0


def test_pseudo_r2_constant_y():
    # Null deviance 0: 1 for a perfect prediction, 0 otherwise (as scikit-learn's R²).
    y = np.full(5, 2.0)
    assert pseudo_r2(y, y, 2.0, "poisson", 1.0) == 1.0
    assert pseudo_r2(y, y + 1, 2.0, "poisson", 1.0) == 0.0


@pytest.mark.parametrize("distr_", DISTRS)
def test_metrics_accept_column_vectors(distr_):
    # The seed documents y as [n_samples, 1] in places.
    y, mu = _y_mu(distr_)
    assert log_likelihood(distr_, y[:, None], mu[:, None], 1.0) == pytest.approx(
        log_likelihood(distr_, y, mu, 1.0)
    )
