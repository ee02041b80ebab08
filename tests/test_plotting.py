"""stglm.plotting: the coefficient path and CV curve of a fitted GLMCV."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402

from stglm import GLM, GLMCV  # noqa: E402
from stglm.plotting import plot_coef_path, plot_cv_curve  # noqa: E402

PLOTS = [plot_coef_path, plot_cv_curve]


def _data(n=100, p=4, seed=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    y = rng.poisson(np.exp(0.5 + 0.4 * X[:, 0] - 0.3 * X[:, 1])).astype(float)
    return X, y


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return GLMCV(eta=np.inf, n_lambdas=12, cv=5, verbose=False).fit(X, y)


@pytest.fixture(scope="module")
def fitted_one_se(data):
    X, y = data
    model = GLMCV(eta=np.inf, n_lambdas=15, cv=5, select="one_se", verbose=False).fit(X, y)
    assert model.best_index_ != int(np.argmin(model.scores_)), "one_se must choose another λ"
    return model


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _by_gid(ax: Axes, prefix: str):
    artists = list(ax.get_lines()) + list(ax.collections)
    return [a for a in artists if (a.get_gid() or "").startswith(prefix)]


def _vline_x(line) -> float:
    xs = np.asarray(line.get_xdata(), dtype=float)
    assert np.all(xs == xs[0])  # vertical
    return float(xs[0])


@pytest.mark.parametrize("plot", PLOTS)
def test_returns_axes_on_a_new_figure(plot, fitted):
    ax = plot(fitted)
    assert isinstance(ax, Axes) and isinstance(ax.figure, Figure)


@pytest.mark.parametrize("plot", PLOTS)
def test_draws_on_the_given_axes(plot, fitted):
    fig = Figure()
    ax_left, ax_right = fig.subplots(1, 2)
    assert plot(fitted, ax=ax_right) is ax_right
    assert ax_right.has_data() and not ax_left.has_data()


def test_coef_path_lines_and_chosen_lambda(fitted):
    ax = plot_coef_path(fitted)
    lines = _by_gid(ax, "coef:")
    assert len(lines) == fitted.coef_path_.shape[1]
    x = np.log(fitted.reg_lambda_path_)
    for j, line in enumerate(lines):
        np.testing.assert_allclose(line.get_xdata(), x)
        np.testing.assert_allclose(line.get_ydata(), fitted.coef_path_[:, j])
    (opt,) = _by_gid(ax, "lambda_opt")
    assert _vline_x(opt) == pytest.approx(np.log(fitted.reg_lambda_opt_), rel=1e-12)
    assert "λ" in ax.get_xlabel() and "log" in ax.get_xlabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[: len(lines)] == ["x0", "x1", "x2", "x3"]


def test_coef_path_feature_names(data):
    X, y = data
    names = ["TMEFF2", "OR51E2", "AMACR", "CRISP3"]
    model = GLMCV(n_lambdas=5, cv=3, verbose=False).fit(pd.DataFrame(X, columns=names), y)
    legend = [t.get_text() for t in plot_coef_path(model).get_legend().get_texts()]
    assert legend[:4] == names
    given = ["a", "b", "c", "d"]
    legend = [
        t.get_text() for t in plot_coef_path(model, feature_names=given).get_legend().get_texts()
    ]
    assert legend[:4] == given
    with pytest.raises(ValueError, match="feature_names"):
        plot_coef_path(model, feature_names=["a", "b"])


def test_coef_path_names_the_largest_features_when_there_are_many(tmp_path):
    """30 features: the legend (outside the axes) names the 10 largest at the chosen λ, the
    rest are grey and unnamed; every line is still drawn."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 30))
    coef = np.zeros(30)
    coef[:12] = np.linspace(0.6, 0.05, 12)
    y = rng.poisson(np.exp(0.3 + X @ coef)).astype(float)
    model = GLMCV(distr="poisson", link="log", n_lambdas=8, cv=3, verbose=False).fit(X, y)
    ax = plot_coef_path(model)
    assert len(_by_gid(ax, "coef:")) == 30
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    chosen = np.abs(model.coef_path_[model.best_index_])
    named = sorted(legend[:-1], key=lambda name: -chosen[int(name[1:])])
    assert len(named) == 10 and legend[-1].startswith("chosen λ")
    assert min(chosen[int(n[1:])] for n in named) >= np.sort(chosen)[-10]
    assert "10 of 30 features named" in ax.get_title()
    ax.figure.savefig(tmp_path / "path.png")  # the legend outside the axes fits the figure
    assert ax.get_legend().get_window_extent().x0 > ax.get_window_extent().x1
    with pytest.raises(ValueError, match="legend_max"):
        plot_coef_path(model, legend_max=0)


def test_coef_path_linear_lambda_axis(fitted):
    ax = plot_coef_path(fitted, log=False)
    (opt,) = _by_gid(ax, "lambda_opt")
    assert _vline_x(opt) == pytest.approx(fitted.reg_lambda_opt_)
    np.testing.assert_allclose(_by_gid(ax, "coef:")[0].get_xdata(), fitted.reg_lambda_path_)


def test_log_axis_rejects_lambda_zero(data):
    X, y = data
    model = GLMCV(reg_lambda=[0.1, 0.0], cv=3, verbose=False).fit(X, y)
    with pytest.raises(ValueError, match="log=False"):
        plot_coef_path(model)
    plot_coef_path(model, log=False)
    plot_cv_curve(model, log=False)


def test_cv_curve_mean_band_and_chosen_lambda(fitted):
    ax = plot_cv_curve(fitted)
    (mean,) = _by_gid(ax, "cv_mean")
    x = np.log(fitted.reg_lambda_path_)
    np.testing.assert_allclose(mean.get_xdata(), x)
    np.testing.assert_allclose(mean.get_ydata(), fitted.scores_)
    (band,) = _by_gid(ax, "cv_se")
    verts = np.concatenate([p.vertices for p in band.get_paths()])
    lo, hi = fitted.scores_ - fitted.scores_se_, fitted.scores_ + fitted.scores_se_
    assert verts[:, 1].min() == pytest.approx(lo.min()) and verts[:, 1].max() == pytest.approx(
        hi.max()
    )
    (opt,) = _by_gid(ax, "lambda_opt")
    assert _vline_x(opt) == pytest.approx(np.log(fitted.reg_lambda_opt_), rel=1e-12)
    assert _by_gid(ax, "lambda_best") == []  # select="best": one line only
    assert "deviance" in ax.get_ylabel()
    assert "λ" in ax.get_xlabel()


def test_cv_curve_marks_best_lambda_when_one_se_chose_another(fitted_one_se):
    model = fitted_one_se
    ax = plot_cv_curve(model)
    (opt,) = _by_gid(ax, "lambda_opt")
    (best,) = _by_gid(ax, "lambda_best")
    assert _vline_x(opt) == pytest.approx(np.log(model.reg_lambda_opt_), rel=1e-12)
    best_lam = model.reg_lambda_path_[np.argmin(model.scores_)]
    assert _vline_x(best) == pytest.approx(np.log(best_lam), rel=1e-12)
    assert _vline_x(opt) > _vline_x(best)  # one-SE picks the larger λ


def test_cv_curve_pseudo_r2_label(data):
    X, y = data
    model = GLMCV(n_lambdas=6, cv=3, score_metric="pseudo_r2", verbose=False).fit(X, y)
    assert "pseudo-R²" in plot_cv_curve(model).get_ylabel()


@pytest.mark.parametrize("plot", PLOTS)
def test_unfitted_model_raises_not_fitted(plot):
    with pytest.raises(NotFittedError):
        plot(GLMCV())


@pytest.mark.parametrize("plot", PLOTS)
@pytest.mark.parametrize(
    "bad", [GLM(), object(), None, "GLMCV"], ids=["GLM", "object", "None", "str"]
)
def test_non_glmcv_raises_type_error(plot, bad, data):
    if isinstance(bad, GLM):
        bad = GLM(verbose=False).fit(*data)  # even a fitted GLM is not a GLMCV
    with pytest.raises(TypeError, match="GLMCV"):
        plot(bad)


def test_save_png(fitted, tmp_path):
    fig = Figure(figsize=(8, 3), dpi=100)
    ax_path, ax_cv = fig.subplots(1, 2)
    plot_coef_path(fitted, ax=ax_path)
    plot_cv_curve(fitted, ax=ax_cv)
    out = tmp_path / "glmcv.png"
    fig.savefig(out)
    image = mpimg.imread(out)
    assert image.shape[:2] == (300, 800)
    assert image.shape[2] in (3, 4)
    assert np.ptp(image[..., :3]) > 0.5  # something dark was drawn on the white background


def test_plotting_does_not_touch_the_model(fitted):
    before = {k: np.copy(v) for k, v in vars(fitted).items() if isinstance(v, np.ndarray)}
    plot_coef_path(fitted)
    plot_cv_curve(fitted)
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(fitted, k), v)
