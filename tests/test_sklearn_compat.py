"""scikit-learn compatibility: estimator checks, clone/params, GridSearchCV, sparse input,
and the meaning of predict / fit_predict / score."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import make_problem, ref_loglik, ref_mean
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.utils.estimator_checks import parametrize_with_checks
from statsmodels.genmod import families as sm_families

from stglm.generalized_lm import GLM, GLMCV, deviance

THETA = 2.0

ESTIMATORS = [
    GLM(verbose=False),
    GLM(distr="gaussian", verbose=False),
    GLM(distr="softplus", verbose=False),
    GLM(distr="neg-binomial", theta=THETA, verbose=False),
    GLM(distr="gamma", verbose=False),
    GLM(fit_intercept=False, alpha=1.0, verbose=False),
    # The checks' data are not standardised: spateo's fixed step needs to be small there.
    GLM(solver="batch-gradient", learning_rate=1e-4, max_iter=300, verbose=False),
    GLM(distr="gaussian", solver="batch-gradient", learning_rate=1e-4, max_iter=300, verbose=False),
    # λ by CV (a short path keeps the checks quick); check_fit2d_1sample's wording included.
    GLMCV(n_lambdas=4, cv=3, verbose=False),
]


def _expected_failed_checks(estimator):
    expected = {
        # stglm accepts a (n, 1) column y without a DataConversionWarning, as spateo did
        # (its docs describe y as [n_samples, 1] in places). That the fit is the same as
        # with a 1-D y -- the rest of this check -- is test_column_y_gives_the_same_fit.
        "check_supervised_y_2d": "column-vector y accepted silently, as in spateo",
    }
    if isinstance(estimator, GLMCV):
        # A repeated row can land in several folds, a weighted one lands in one: the
        # held-out scores, and so the chosen λ, differ. At a fixed λ weights are repeats
        # (GLM passes these checks).
        why = "CV folds split repeated rows, not weights: another cross-validation"
        expected["check_sample_weight_equivalence_on_dense_data"] = why
        expected["check_sample_weight_equivalence_on_sparse_data"] = why
    return expected


# check_array_api_input skips itself unless SCIPY_ARRAY_API is set; stglm works on NumPy and
# scipy.sparse only, so that skip is expected.
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        # batch-gradient with max_iter=300 on unscaled data stops early by design.
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def test_column_y_gives_the_same_fit():
    X, y = make_problem("poisson", n=60, p=3, seed=1)
    a = GLM(verbose=False).fit(X, y)
    b = GLM(verbose=False).fit(X, y[:, None])
    assert_array_equal(a.beta_, b.beta_)
    assert a.beta0_ == b.beta0_


# ---------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------
DOCUMENTED = [
    "distr",
    "alpha",
    "Tau",
    "reg_lambda",
    "learning_rate",
    "max_iter",
    "tol",
    "eta",
    "clip_coeffs",
    "score_metric",
    "fit_intercept",
    "random_seed",
    "theta",
    "verbose",
]


def test_get_params_has_every_parameter_with_its_default():
    params = GLM().get_params()
    assert set(DOCUMENTED) <= set(params)
    for name, p in inspect.signature(GLM).parameters.items():
        assert params[name] is p.default or params[name] == p.default


def test_set_params_and_clone():
    Tau = np.eye(3)
    model = GLM().set_params(distr="gamma", reg_lambda=0.3, Tau=Tau, solver="batch-gradient")
    params = model.get_params()
    assert (params["distr"], params["reg_lambda"], params["solver"]) == (
        "gamma",
        0.3,
        "batch-gradient",
    )
    twin = clone(model)
    assert twin is not model
    assert twin.get_params().keys() == params.keys()
    for k, v in twin.get_params().items():
        if k == "Tau":  # clone deep-copies array parameters
            assert v is not Tau and np.array_equal(v, Tau)
        else:
            assert v == params[k], k
    assert not hasattr(twin, "beta_")


def test_clone_of_fitted_model_is_unfitted_and_refits_identically():
    X, y = make_problem("poisson", n=60, p=3, seed=1)
    model = GLM(verbose=False).fit(X, y)
    twin = clone(model)
    assert not hasattr(twin, "beta_")
    assert_array_equal(twin.fit(X, y).beta_, model.beta_)


def test_repr_mentions_changed_parameters():
    assert "reg_lambda=0.3" in repr(GLM(reg_lambda=0.3))


# ---------------------------------------------------------------------------------------------
# GridSearchCV
# ---------------------------------------------------------------------------------------------
def test_grid_search_over_reg_lambda_matches_manual_cv():
    # GridSearchCV maximises score(): use pseudo-R² (deviance is lower-is-better).
    X, y = make_problem("poisson", n=90, p=4, seed=2)
    grid = [0.001, 0.05, 0.5]
    cv = KFold(3, shuffle=True, random_state=0)
    base = GLM(score_metric="pseudo_r2", clip_coeffs=0.0, verbose=False)
    search = GridSearchCV(base, {"reg_lambda": grid}, cv=cv).fit(X, y)

    manual = []
    for lam in grid:
        scores = []
        for train, test in cv.split(X):
            m = GLM(reg_lambda=lam, clip_coeffs=0.0, verbose=False).fit(X[train], y[train])
            mu = m.predict(X[test])
            # pseudo-R² by hand: null model = mean of the *training* y.
            fam = sm_families.Poisson()
            null = np.full(len(test), y[train].mean())
            scores.append(1 - fam.deviance(y[test], mu) / fam.deviance(y[test], null))
        manual.append(np.mean(scores))
    assert_allclose(search.cv_results_["mean_test_score"], manual, rtol=1e-9)
    assert search.best_params_["reg_lambda"] == grid[int(np.argmax(manual))]
    assert_array_equal(
        search.best_estimator_.beta_,
        GLM(reg_lambda=search.best_params_["reg_lambda"], clip_coeffs=0.0, verbose=False)
        .fit(X, y)
        .beta_,
    )


# ---------------------------------------------------------------------------------------------
# sparse input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("solver", ["irls-cd", "batch-gradient"])
def test_sparse_fit_equals_dense(distr, fit_intercept, fmt, solver):
    X, y = make_problem(distr, n=80, p=5, seed=3, theta=THETA, standardise=False)
    X[np.abs(X) < 0.8] = 0.0  # about 40% zeros
    Xs = sp.csr_matrix(X) if fmt == "csr" else sp.csc_matrix(X)
    kw = dict(
        distr=distr,
        fit_intercept=fit_intercept,
        theta=THETA,
        solver=solver,
        learning_rate=0.05,
        verbose=False,
    )
    dense = GLM(**kw).fit(X, y)
    sparse = GLM(**kw).fit(Xs, y)
    assert_allclose(sparse.beta_, dense.beta_, rtol=1e-9, atol=1e-12)
    assert sparse.beta0_ == pytest.approx(dense.beta0_, rel=1e-9, abs=1e-12)
    assert sparse.n_iter_ == dense.n_iter_
    assert_allclose(sparse.predict(Xs), dense.predict(X), rtol=1e-9)
    assert sparse.score(Xs, y) == pytest.approx(dense.score(X, y), rel=1e-9)


def test_sparse_array_and_coo_are_accepted():
    X, y = make_problem("poisson", n=60, p=3, seed=1)
    dense = GLM(verbose=False).fit(X, y)
    for Xs in (sp.csr_array(X), sp.coo_matrix(X)):
        assert_allclose(GLM(verbose=False).fit(Xs, y).beta_, dense.beta_, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# predict, fit_predict, score
# ---------------------------------------------------------------------------------------------
def _sm_family(distr):
    return {
        "gaussian": sm_families.Gaussian(),
        "poisson": sm_families.Poisson(),
        "softplus": sm_families.Poisson(),
        "gamma": sm_families.Gamma(),
        "neg-binomial": sm_families.NegativeBinomial(alpha=1 / THETA),
    }[distr]


def test_predict_is_mean_of_linear_predictor(distr, fit_intercept):
    X, y = make_problem(distr, n=80, p=4, seed=5, theta=THETA)
    model = GLM(distr=distr, fit_intercept=fit_intercept, theta=THETA, verbose=False).fit(X, y)
    X_new = np.random.RandomState(0).normal(size=(25, 4))
    z = X_new @ model.beta_ + (model.beta0_ if fit_intercept else 0.0)
    pred = model.predict(X_new)
    assert pred.shape == (25,)
    assert_allclose(pred, ref_mean(distr, z, model.eta), rtol=1e-12)
    if not fit_intercept:
        assert model.beta0_ == 0.0
    assert model.ynull_ == pytest.approx(y.mean())
    assert model.is_fitted_ and model.n_features_in_ == 4


def test_fit_predict_is_fit_then_predict(distr, fit_intercept):
    X, y = make_problem(distr, n=80, p=4, seed=5, theta=THETA)
    kw = dict(distr=distr, fit_intercept=fit_intercept, theta=THETA, verbose=False)
    assert_array_equal(GLM(**kw).fit_predict(X, y), GLM(**kw).fit(X, y).predict(X))


def test_score_deviance_and_pseudo_r2(distr, fit_intercept):
    X, y = make_problem(distr, n=80, p=4, seed=5, theta=THETA)
    X_test, y_test = make_problem(distr, n=40, p=4, seed=6, theta=THETA)
    kw = dict(distr=distr, fit_intercept=fit_intercept, theta=THETA, verbose=False)
    model = GLM(score_metric="deviance", **kw).fit(X, y)
    mu = model.predict(X_test)
    fam = _sm_family(distr)
    dev = model.score(X_test, y_test)
    assert dev == pytest.approx(deviance(y_test, mu, distr, THETA), rel=1e-12)
    assert dev == pytest.approx(fam.deviance(y_test, mu), rel=1e-10)
    # Same fit, other metric: 1 − dev/dev_null with the *training* mean as the null model.
    r2 = model.set_params(score_metric="pseudo_r2").score(X_test, y_test)
    null = np.full_like(y_test, y.mean())
    assert r2 == pytest.approx(1 - fam.deviance(y_test, mu) / fam.deviance(y_test, null), rel=1e-10)
    # And on the training data a fit beats the null model.
    assert model.score(X, y) > 0


def test_score_deviance_is_twice_loglik_gap_by_scipy():
    X, y = make_problem("neg-binomial", n=80, p=4, seed=5, theta=THETA)
    model = GLM(distr="neg-binomial", theta=THETA, verbose=False).fit(X, y)
    mu = model.predict(X)
    expected = 2 * (
        ref_loglik("neg-binomial", y, np.maximum(y, 1e-300), THETA)
        - ref_loglik("neg-binomial", y, mu, THETA)
    )
    assert model.score(X, y) == pytest.approx(expected, rel=1e-9)


def test_dataframe_input_keeps_feature_names():
    pd = pytest.importorskip("pandas")
    X, y = make_problem("poisson", n=60, p=3, seed=1)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    model = GLM(verbose=False).fit(df, y)
    assert list(model.feature_names_in_) == ["a", "b", "c"]
    assert_allclose(model.predict(df), GLM(verbose=False).fit(X, y).predict(X), rtol=1e-12)
