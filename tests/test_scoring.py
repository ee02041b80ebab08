"""stglm.scoring: scikit-learn's model selection picks the best model, not the worst."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from stglm import GLM, GLMCV, scoring
from stglm._errors import InputTypeError

LAMBDAS = [1e-4, 1e-2, 1.0]


def poisson_deviance(y, mu, w=None):
    """2·Σ w (y log(y/μ) − (y − μ)), written out here, not taken from stglm."""
    w = np.ones_like(y) if w is None else w
    ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return float(2 * np.sum(w * (ylogy - (y - mu))))


@pytest.fixture(scope="module")
def strong_signal():
    """Poisson counts with a strong log-linear signal: the smallest λ predicts best."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 4))
    y = rng.poisson(np.exp(0.5 + X @ np.array([0.8, -0.6, 0.4, 0.0]))).astype(float)
    return X, y


def test_gridsearch_with_neg_deviance_picks_the_lowest_held_out_deviance(strong_signal):
    X, y = strong_signal
    est = GLM(distr="poisson", link="log", alpha=1.0)
    folds = KFold(4, shuffle=True, random_state=1)
    search = GridSearchCV(est, {"reg_lambda": LAMBDAS}, cv=folds, scoring=scoring.neg_deviance)
    search.fit(X, y)
    by_hand = []
    for lam in LAMBDAS:
        total = 0.0
        for train, test in folds.split(X):
            fit = GLM(distr="poisson", link="log", alpha=1.0, reg_lambda=lam)
            fit.fit(X[train], y[train])
            total += poisson_deviance(y[test], np.exp(fit.beta0_ + X[test] @ fit.beta_))
        by_hand.append(total / folds.get_n_splits())
    assert_allclose(-search.cv_results_["mean_test_score"], by_hand, rtol=1e-10)
    assert search.best_params_["reg_lambda"] == LAMBDAS[int(np.argmin(by_hand))] == LAMBDAS[0]


def test_seed_score_would_pick_the_worst_model(strong_signal):
    """Why the scorers exist: the seed's deviance `score` maximised picks the largest λ."""
    X, y = strong_signal
    est = GLM(distr="poisson", link="log", alpha=1.0)
    search = GridSearchCV(est, {"reg_lambda": LAMBDAS}, cv=3)
    assert search.fit(X, y).best_params_["reg_lambda"] == LAMBDAS[-1]


def test_scorers_equal_score_with_weights_and_offset(strong_signal):
    X, y = strong_signal
    rng = np.random.default_rng(2)
    w, off = rng.uniform(0.5, 2, y.size), rng.normal(0, 0.1, y.size)
    fit = GLM(distr="poisson", link="log", reg_lambda=1e-2).fit(X, y, sample_weight=w, offset=off)
    mu = np.exp(fit.beta0_ + X @ fit.beta_ + off)
    neg = scoring.neg_deviance(fit, X, y, sample_weight=w, offset=off)
    assert_allclose(neg, -poisson_deviance(y, mu, w), rtol=1e-12)
    assert_allclose(neg, -fit.score(X, y, sample_weight=w, offset=off), rtol=1e-14)
    r2 = scoring.pseudo_r2(fit, X, y, sample_weight=w, offset=off)
    fit.set_params(score_metric="pseudo_r2")
    assert_allclose(r2, fit.score(X, y, sample_weight=w, offset=off), rtol=1e-14)
    assert 0 < r2 < 1


def test_cross_val_score_on_glmcv(strong_signal):
    X, y = strong_signal
    est = GLMCV(distr="poisson", link="log", n_lambdas=5, cv=3)
    scores = cross_val_score(est, X, y, cv=KFold(3), scoring=scoring.neg_deviance)
    assert scores.shape == (3,) and np.all(scores < 0)
    r2 = cross_val_score(est, X, y, cv=KFold(3), scoring=scoring.pseudo_r2)
    assert np.all((r2 > 0.3) & (r2 < 1))  # the signal explains much of the deviance


@pytest.mark.parametrize("scorer", [scoring.neg_deviance, scoring.pseudo_r2])
def test_scorer_rejects_foreign_estimators(scorer):
    from sklearn.linear_model import PoissonRegressor

    X, y = np.ones((4, 1)), np.arange(4.0)
    with pytest.raises(InputTypeError, match="estimator must be a fitted stglm GLM"):
        scorer(PoissonRegressor().fit(X, y), X, y)
