"""Bad input: the documented error, a message naming the culprit, raised before any work."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import make_problem
from numpy.testing import assert_array_equal
from sklearn.exceptions import NotFittedError

import stglm._glm
from stglm.generalized_lm import GLM, _loss, batch_grad, deviance, log_likelihood

P = 3

# (parameter, bad value, error type); the message must name the parameter.
BAD_PARAMS = [
    ("distr", "binomial", ValueError),
    ("distr", "Poisson", ValueError),  # case sensitive, as in spateo
    ("alpha", -0.1, ValueError),
    ("alpha", 1.5, ValueError),
    ("alpha", "0.5", TypeError),
    ("reg_lambda", -1e-3, ValueError),
    ("learning_rate", 0.0, ValueError),
    ("learning_rate", -0.2, ValueError),
    ("theta", 0.0, ValueError),
    ("theta", -1.0, ValueError),
    ("tol", 0.0, ValueError),
    ("tol", -1e-6, ValueError),
    ("max_iter", 0, ValueError),
    ("max_iter", -5, ValueError),
    ("max_iter", 10.5, TypeError),
    ("max_iter", 100.0, TypeError),  # not an integer, even if integral
    ("max_iter", True, TypeError),
    ("clip_coeffs", -0.01, ValueError),
    ("eta", np.nan, ValueError),
    ("score_metric", "r2", ValueError),
    ("solver", "lbfgs", ValueError),
    ("fit_intercept", "yes", TypeError),
    ("random_seed", -1, ValueError),
    ("random_seed", 1.5, TypeError),
    ("verbose", "no", TypeError),
    ("Tau", np.eye(P + 1), ValueError),
    ("Tau", np.ones(P), ValueError),
    ("Tau", np.full((P, P), np.nan), ValueError),
]


def _data(distr="poisson"):
    return make_problem(distr, n=30, p=P, seed=0)


@pytest.fixture
def no_solver(monkeypatch):
    """Make any call to a solver fail loudly: validation must come first."""

    def boom(*args, **kwargs):
        raise AssertionError("the solver ran before the input was validated")

    monkeypatch.setattr(stglm._glm, "solve", boom)


def _assert_unfitted(model):
    fitted = [k for k in vars(model) if k.endswith("_") and not k.startswith("__")]
    assert not fitted, f"a rejected fit left attributes behind: {fitted}"


@pytest.mark.parametrize(
    ("name", "value", "error"), BAD_PARAMS, ids=[f"{n}={v!r}"[:40] for n, v, _ in BAD_PARAMS]
)
def test_bad_parameter(no_solver, name, value, error):
    X, y = _data()
    model = GLM(**{name: value})  # constructing never validates (scikit-learn convention)
    with pytest.raises(error, match=name):
        model.fit(X, y)
    _assert_unfitted(model)


def test_bad_parameter_via_set_params(no_solver):
    X, y = _data()
    model = GLM().set_params(alpha=2.0)
    with pytest.raises(ValueError, match="alpha"):
        model.fit(X, y)


def _bad_data_cases():
    X, y = _data()
    Xg, yg = _data("gamma")
    nan_X, inf_X, nan_y, inf_y = X.copy(), X.copy(), y.copy(), y.copy()
    nan_X[1, 1], inf_X[2, 0], nan_y[3], inf_y[4] = np.nan, np.inf, np.nan, -np.inf
    neg_y = y.copy()
    neg_y[0] = -1.0
    sparse_nan = sp.csr_matrix(nan_X)
    cases = [
        ("X 1-D", "poisson", X[:, 0], y, ValueError, "X must be 2-D"),
        ("X 3-D", "poisson", X[:, :, None], y, ValueError, "X must be 2-D"),
        ("length mismatch", "poisson", X, y[:-1], ValueError, r"X and y .*30 and 29"),
        ("NaN in X", "poisson", nan_X, y, ValueError, "X contains NaN"),
        ("inf in X", "poisson", inf_X, y, ValueError, "X contains NaN or infinite"),
        ("NaN in sparse X", "poisson", sparse_nan, y, ValueError, "X contains NaN"),
        ("NaN in y", "poisson", X, nan_y, ValueError, "y contains NaN"),
        ("inf in y", "gaussian", X, inf_y, ValueError, "y contains NaN or infinite"),
        ("y 2-D", "poisson", X, np.c_[y, y], ValueError, "y must be 1-D"),
        ("y None", "poisson", X, None, ValueError, "y is None"),
        ("X strings", "poisson", np.full((30, P), "a"), y, TypeError, "X must be a numeric"),
        ("X complex", "gaussian", X + 1j, y, ValueError, "Complex data not supported: X"),
        ("empty n", "poisson", np.empty((0, P)), np.empty(0), ValueError, r"X is empty.*0 sample"),
        ("empty p", "poisson", np.empty((30, 0)), y, ValueError, r"X is empty.*0 feature"),
        ("gamma y=0", "gamma", Xg, np.r_[0.0, yg[1:]], ValueError, "y must be strictly positive"),
        ("gamma y<0", "gamma", Xg, np.r_[-1.0, yg[1:]], ValueError, "y must be strictly positive"),
    ]
    cases += [
        (f"negative y {d}", d, X, neg_y, ValueError, "y must be non-negative")
        for d in ("poisson", "softplus", "neg-binomial")
    ]
    return cases


BAD_DATA = _bad_data_cases()


@pytest.mark.parametrize(
    ("distr", "X", "y", "error", "match"), [c[1:] for c in BAD_DATA], ids=[c[0] for c in BAD_DATA]
)
@pytest.mark.parametrize("solver", ["irls-cd", "batch-gradient"])
def test_bad_data(no_solver, distr, X, y, error, match, solver):
    model = GLM(distr=distr, solver=solver)
    with pytest.raises(error, match=match):
        model.fit(X, y)
    _assert_unfitted(model)


def test_gaussian_accepts_negative_y():
    X, y = _data("gaussian")
    GLM(distr="gaussian", verbose=False).fit(X, y - 100.0)


def test_count_families_accept_zero_y():
    X, _ = _data()
    y = np.zeros(30)
    y[::3] = 2.0
    for distr in ("poisson", "softplus", "neg-binomial"):
        assert np.all(np.isfinite(GLM(distr=distr, verbose=False).fit(X, y).beta_))


@pytest.mark.parametrize("method", ["predict", "score"])
def test_unfitted_raises_not_fitted(method):
    X, y = _data()
    args = (X,) if method == "predict" else (X, y)
    with pytest.raises(NotFittedError):
        getattr(GLM(), method)(*args)


def test_predict_checks_its_input():
    X, y = _data()
    model = GLM(verbose=False).fit(X, y)
    with pytest.raises(ValueError, match="Reshape your data"):
        model.predict(X[0])
    with pytest.raises(ValueError, match=f"X has {P + 1} features.*expecting {P}"):
        model.predict(np.c_[X, X[:, 0]])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        model.predict(bad)
    with pytest.raises(ValueError, match="y must be non-negative"):
        model.score(X, -y - 1.0)


@pytest.mark.parametrize("func", [batch_grad, _loss])
def test_function_face_rejects_unknown_distr(func):
    X, y = _data()
    with pytest.raises(ValueError, match="distr must be one of"):
        func("binomial", 0.5, 0.1, X, y, np.zeros(P + 1))


def test_metric_functions_reject_unknown_distr():
    y = np.ones(3)
    with pytest.raises(ValueError, match="distr"):
        deviance(y, y, "normal", 1.0)
    with pytest.raises(ValueError, match="distr"):
        log_likelihood("nb", y, y)


@pytest.mark.parametrize("solver", ["irls-cd", "batch-gradient"])
@pytest.mark.parametrize("fmt", ["dense", "fortran", "csr", "csc", "list"])
def test_fit_does_not_mutate_inputs(solver, fmt):
    X, y = _data()
    Tau = np.eye(P) + 0.1
    X_in = {
        "dense": X,
        "fortran": np.asfortranarray(X),
        "csr": sp.csr_matrix(X),
        "csc": sp.csc_matrix(X),
        "list": X.tolist(),
    }[fmt]
    y_in = y.tolist() if fmt == "list" else y
    X_copy = X_in.copy()
    y_copy = list(y_in) if fmt == "list" else y_in.copy()
    Tau_copy = Tau.copy()
    model = GLM(solver=solver, Tau=Tau, learning_rate=0.05, verbose=False).fit(X_in, y_in)
    model.predict(X_in)
    model.score(X_in, y_in)
    if sp.issparse(X_in):
        assert_array_equal(X_in.toarray(), X_copy.toarray())
        assert X_in.format == X_copy.format
    else:
        assert_array_equal(np.asarray(X_in), np.asarray(X_copy))
    assert_array_equal(np.asarray(y_in), np.asarray(y_copy))
    assert_array_equal(Tau, Tau_copy)
    assert model.Tau is Tau  # parameters are stored as given (scikit-learn convention)


def test_read_only_inputs_are_accepted():
    X, y = _data()
    X.flags.writeable = False
    y.flags.writeable = False
    GLM(verbose=False).fit(X, y).predict(X)
    GLM(solver="batch-gradient", learning_rate=0.05, verbose=False).fit(X, y)


# ---------------------------------------------------------------------------------------------
# the library's own error classes
# ---------------------------------------------------------------------------------------------
def _bad_calls():
    """Bad input to each layer that validates it: (call, the builtin its error must also be)."""
    import anndata as ad

    import stglm
    import stglm.spatial as S

    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.poisson(1.0, size=(20, 4)).astype(float))
    adata.obsm["spatial"] = rng.normal(size=(20, 2))
    X, y = rng.normal(size=(20, 2)), rng.poisson(1.0, size=20)
    return {
        "parameter": (lambda: GLM(alpha=2.0).fit(X, y), ValueError),
        "parameter-type": (lambda: GLM(max_iter=1.5).fit(X, y), TypeError),
        "data": (lambda: GLM().fit(X[:, 0], y), ValueError),
        "layer": (lambda: S.spatial_lag(adata, "0", layer="counts"), ValueError),
        "graph": (lambda: S.spatial_neighbors(adata, n_neighbors=50), ValueError),
        "not-anndata": (lambda: S.coordinates(X), TypeError),
        "fit_genes": (
            lambda: stglm.fit_genes(adata, ["nope"], design=X, progress=False),
            ValueError,
        ),
        "fit_genes-counts": (
            lambda: stglm.fit_genes(_negated(adata), design=X, progress=False),
            ValueError,
        ),
        "getter": (lambda: stglm.get.coef_df(adata), ValueError),
    }


def _negated(adata):
    out = adata.copy()
    out.X = -out.X
    return out


@pytest.mark.parametrize("case", list(_bad_calls()))
def test_bad_input_raises_the_library_error_classes(case):
    from stglm._errors import StglmInputError

    call, builtin = _bad_calls()[case]
    with pytest.raises(StglmInputError) as info:
        call()
    assert isinstance(info.value, builtin)  # existing `except ValueError` keeps working
