"""Plots of fits, whole-transcriptome results and per-gene tests.

A fitted :class:`~stglm.GLMCV`'s coefficient path and CV curve; whole-transcriptome results
(coefficient heatmap, a gene's fit on the tissue); per-gene tests (volcano plot, p-value
histogram, a gene's spatial effect).

Every function draws with matplotlib's object-oriented API on the Axes they are given
(or on a new figure's Axes when ``ax`` is None) and return that Axes; they never call
``plt.show()``. λ is shown as its natural logarithm, as glmnet's plots do.

Every artist that carries meaning has a ``gid`` so that it can be found again:
``"coef:<name>"`` for a coefficient line, ``"cv_mean"`` and ``"cv_se"`` for the CV curve
and its ±1 standard-error band, ``"lambda_opt"`` for the chosen λ and ``"lambda_best"``
for the best-score λ when ``select="one_se"`` chose another one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._docs import shared_docs
from ._errors import InputError, InputTypeError
from ._glm_cv import GLMCV
from ._plot_results import plot_coef_heatmap, plot_gene_fit
from ._plot_tests import plot_pvalue_histogram, plot_spatial_effect, plot_volcano

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "plot_coef_heatmap",
    "plot_coef_path",
    "plot_cv_curve",
    "plot_gene_fit",
    "plot_pvalue_histogram",
    "plot_spatial_effect",
    "plot_volcano",
]

_FITTED_ATTRIBUTES = ("reg_lambda_path_", "coef_path_", "scores_", "scores_se_", "reg_lambda_opt_")
_METRIC_LABELS = {"deviance": "deviance", "pseudo_r2": "pseudo-R²"}


def _check_model(model: Any, caller: str) -> None:
    """Raise TypeError for a non-GLMCV and NotFittedError for an unfitted one."""
    if not isinstance(model, GLMCV):
        raise InputTypeError(f"{caller} needs a fitted GLMCV; got {type(model).__name__}.")
    check_is_fitted(model, list(_FITTED_ATTRIBUTES))


def _get_ax(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt  # only here: creating a figure is pyplot's job

    _, ax = plt.subplots(layout="constrained")  # room for a legend outside the axes
    return ax


def _lambda_axis(values: np.ndarray, log: bool) -> np.ndarray:
    """Positions of λ values on the x axis: log λ, or λ itself when ``log`` is False."""
    values = np.asarray(values, dtype=float)
    if not log:
        return values
    if np.any(values <= 0):
        raise InputError("The λ path contains values <= 0, which have no logarithm; use log=False.")
    return np.log(values)


def _lambda_label(log: bool) -> str:
    return "log(λ)" if log else "λ"


def _feature_names(model: GLMCV, feature_names: Sequence[str] | None) -> list[str]:
    p = model.coef_path_.shape[1]
    if feature_names is not None:
        names = [str(name) for name in feature_names]
        if len(names) != p:
            raise InputError(
                f"feature_names has {len(names)} names but the model has {p} features."
            )
        return names
    if hasattr(model, "feature_names_in_"):
        return [str(name) for name in model.feature_names_in_]
    return [f"x{j}" for j in range(p)]


@shared_docs
def plot_coef_path(
    model: GLMCV,
    ax: Axes | None = None,
    *,
    feature_names: Sequence[str] | None = None,
    log: bool = True,
    legend_max: int = 10,
) -> Axes:
    """Plot the coefficient path of a fitted GLMCV against log λ.

    One line per feature shows ``coef_path_[:, j]`` (the full-data fit at each λ of
    ``reg_lambda_path_``, after ``clip_coeffs``); a dashed vertical line marks the
    chosen λ, ``reg_lambda_opt_``. The intercept is not drawn. With many features only the
    ``legend_max`` largest at the chosen λ are coloured and named in the legend (outside the
    plot, on the right); the others are thin grey lines.

    Parameters
    ----------
    {glmcv_model}
    feature_names : sequence of str, optional
        Legend labels, one per feature. By default ``model.feature_names_in_`` when
        the model was fitted on a DataFrame, else ``x0, x1, ...``.
    log : bool, default=True
        Put log(λ) (natural logarithm) on the x axis; False puts λ itself.
    legend_max : int, default=10
        At most this many features are named: those with the largest abs(coefficient) at the
        chosen λ (then those that enter the path first).

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn on; each feature's line has the gid ``"coef:<name>"``.

    Raises
    ------
    {glmcv_raises}
    ValueError
        If ``feature_names`` has the wrong length, ``legend_max`` is not a positive integer,
        or ``log`` is True and the path contains λ = 0.
    """
    _check_model(model, "plot_coef_path")
    names = _feature_names(model, feature_names)
    if isinstance(legend_max, bool) or not isinstance(legend_max, int | np.integer):
        raise InputTypeError(f"legend_max must be a positive integer; got {legend_max!r}.")
    if legend_max < 1:
        raise InputError(f"legend_max must be a positive integer; got {legend_max!r}.")
    ax = _get_ax(ax)
    x = _lambda_axis(model.reg_lambda_path_, log)
    named = _named_features(model, legend_max)
    colours = _named_colours()
    for j, name in enumerate(names):
        if j in named:
            style = {"label": name, "color": colours[sorted(named).index(j) % len(colours)]}
        else:
            style = {"color": "0.75", "linewidth": 0.6}
        ax.plot(
            x, model.coef_path_[:, j], gid=f"coef:{name}", zorder=2 if j in named else 1, **style
        )
    _mark_chosen_lambda(ax, model, log, f"chosen λ = {model.reg_lambda_opt_:.3g}")
    ax.axhline(0.0, color="grey", linewidth=0.5, zorder=0)
    ax.set_xlabel(_lambda_label(log))
    ax.set_ylabel("coefficient")
    title = f"Coefficient path ({model.distr}, α = {model.alpha:g})"
    if len(named) < len(names):
        title += f"\n{len(named)} of {len(names)} features named (largest at the chosen λ)"
    ax.set_title(title)
    if len(named) > 6:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    else:
        ax.legend(fontsize="small")
    return ax


def _mark_chosen_lambda(ax: Axes, model: GLMCV, log: bool, label: str) -> None:
    """The dashed vertical line at the chosen λ (gid ``"lambda_opt"``)."""
    x_opt = _lambda_axis([model.reg_lambda_opt_], log)[0]
    ax.axvline(x_opt, color="black", linestyle="--", linewidth=1.0, label=label, gid="lambda_opt")


def _named_colours() -> list:
    """tab20's dark then light colours without its greys (grey is for unnamed features)."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    return [c for i, c in enumerate(tab20) if i % 2 == 0 and i != 14] + [
        c for i, c in enumerate(tab20) if i % 2 == 1 and i != 15
    ]


def _named_features(model: GLMCV, legend_max: int) -> set[int]:
    """The features the legend names: largest |coef| at the chosen λ, then earliest to enter."""
    path = np.abs(np.asarray(model.coef_path_))
    chosen = path[int(model.best_index_)]
    nonzero = path > 0
    entry = np.where(nonzero.any(axis=0), np.argmax(nonzero, axis=0), path.shape[0])
    order = np.lexsort((entry, -chosen))
    return {int(j) for j in order[:legend_max]}


@shared_docs
def plot_cv_curve(model: GLMCV, ax: Axes | None = None, *, log: bool = True) -> Axes:
    """Plot the mean cross-validation score of a fitted GLMCV against log λ.

    The line is ``scores_`` (the mean over folds of each fold's held-out score),
    the shaded band ``scores_ ± scores_se_`` (one standard error of that mean).
    A dashed vertical line marks the chosen λ; when ``select="one_se"`` chose a
    λ other than the one with the best mean score, a dotted line marks the latter.

    Parameters
    ----------
    {glmcv_model}
    log : bool, default=True
        Put log(λ) (natural logarithm) on the x axis; False puts λ itself.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn on; the mean line has the gid ``"cv_mean"``, the band ``"cv_se"``, the
        chosen λ ``"lambda_opt"`` and the best-score λ (``select="one_se"`` only)
        ``"lambda_best"``.

    Raises
    ------
    {glmcv_raises}
    ValueError
        If ``log`` is True and the path contains λ = 0.
    """
    _check_model(model, "plot_cv_curve")
    ax = _get_ax(ax)
    x = _lambda_axis(model.reg_lambda_path_, log)
    mean, se = np.asarray(model.scores_), np.asarray(model.scores_se_)
    metric = _METRIC_LABELS.get(model.score_metric, str(model.score_metric))
    line = ax.plot(x, mean, marker="o", markersize=3, label=f"mean CV {metric}", gid="cv_mean")[0]
    ax.fill_between(
        x,
        mean - se,
        mean + se,
        color=line.get_color(),
        alpha=0.25,
        linewidth=0,
        label="± 1 standard error",
        gid="cv_se",
    )
    _mark_chosen_lambda(ax, model, log, f"chosen λ = {model.reg_lambda_opt_:.3g} ({model.select})")
    # The best mean score (a NaN score is never best, as in the CV driver); ties go to the
    # largest λ, the first in the decreasing path.
    best = int(np.nanargmin(mean) if model.score_metric == "deviance" else np.nanargmax(mean))
    if model.select == "one_se" and best != model.best_index_:
        lam_best = float(model.reg_lambda_path_[best])
        ax.axvline(
            x[best],
            color="grey",
            linestyle=":",
            linewidth=1.0,
            label=f"best-score λ = {lam_best:.3g}",
            gid="lambda_best",
        )

    n_folds = np.shape(model.cv_scores_)[0] if hasattr(model, "cv_scores_") else None
    folds = f", {n_folds} folds" if n_folds else ""
    ax.set_xlabel(_lambda_label(log))
    ax.set_ylabel(f"mean CV {metric} (± 1 s.e.)")
    ax.set_title(f"Cross-validation ({model.distr}, α = {model.alpha:g}{folds})")
    ax.legend(fontsize="small")
    return ax
