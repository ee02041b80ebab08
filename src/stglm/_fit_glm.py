"""spateo's ``fit_glm``: one gene of an AnnData against given predictors, λ by cross-validation."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from sklearn.model_selection import GridSearchCV, ParameterGrid

from . import scoring
from ._anndata import check_adata, dense_columns, gene_positions, get_matrix
from ._errors import InputError, InputTypeError
from ._families import get_family
from ._glm_cv import GLMCV
from ._graphs import get_graph, size_factors
from ._validation import check_X
from .spatial import calc_1nd_moment

__all__ = ["fit_glm"]

#: GLMCV parameters fit_glm sets unless the caller does (spateo's choices).
FIT_GLM_DEFAULTS = {"distr": "poisson", "score_metric": "pseudo_r2"}
#: The grid-search key prefix spateo documented for GLMCV's parameters.
GRID_PREFIX = "classifier__"


def _response(
    adata: AnnData, y_feat: Any, layer: str | None, smooth: bool, log: bool, graph: Any
) -> np.ndarray:
    """The gene's expression, smoothed over ``graph`` and/or log1p-transformed as asked."""
    matrix = get_matrix(adata, layer)
    j = adata.var_names.get_loc(y_feat)
    if smooth:
        # Normalise every cell to 1e4 counts, then average over its neighbours (a new matrix:
        # the caller's AnnData is never touched).
        scaled = sp.diags(size_factors(matrix)) @ matrix
        # spateo's expression graph is built from the same counts the response comes from.
        expression = isinstance(graph, str) and graph == "expression"
        W = get_graph(adata, graph, layer=layer) if expression else get_graph(adata, graph)
        y = dense_columns(calc_1nd_moment(scaled[:, [j]], W, normalize_W=True)[0], [0]).ravel()
    else:
        y = dense_columns(matrix, [j]).ravel()
    return np.log1p(y) if log else y


def fit_glm(
    X: np.ndarray | pd.DataFrame,
    adata: AnnData,
    y_feat: str,
    calc_first_moment: bool = True,
    log_transform: bool = True,
    gs_params: dict | None = None,
    n_gs_cv: int | None = None,
    return_model: bool = True,
    *,
    layer: str | None = None,
    graph: Any = "expression",
    **kwargs: Any,
) -> tuple:
    """Fit a penalised GLM of one gene on the predictors X, with λ chosen by cross-validation.

    spateo 1.0's ``fit_glm``, without its bugs: ``adata`` is never modified and needs no
    ``uns['__type']``, dense and sparse expression both work, and the optional grid
    search picks the best model for the score metric (not the worst).

    Parameters
    ----------
    X : ndarray or DataFrame of shape (n_obs, n_predictors)
        Predictors; every column is used.
    adata : AnnData
        Source of the response: gene ``y_feat`` of ``adata.X`` (or ``layers[layer]``).
    y_feat : str
        The gene to model (a name in ``adata.var_names``).
    calc_first_moment : bool, default=True
        Gaussian and gamma only: normalise counts to 1e4 per cell and replace each cell
        by the mean of its neighbours in ``graph`` (row-normalised), as spateo did to
        soften dropouts (La Manno et al. 2018).
    log_transform : bool, default=True
        Gaussian and gamma only: log1p of the (smoothed) expression.
    gs_params : dict, optional
        Grid of GLMCV parameters (lists of values) searched with ``n_gs_cv``-fold CV;
        keys may carry spateo's ``"classifier__"`` prefix.
    n_gs_cv : int, optional
        Folds of the grid search (default 5).
    return_model : bool, default=True
        Also return the fitted GLMCV.
    layer : str, optional
        Read expression from ``adata.layers[layer]``.
    graph : {"expression", "spatial"}, obsp key or matrix, default="expression"
        Graph of the first-moment smoothing: spateo's kNN graph in expression PCA space
        (:func:`stglm.spatial.expression_neighbors`), the spatial kNN graph, a graph stored
        in ``adata.obsp``, or an (n_obs, n_obs) matrix.
    **kwargs
        GLMCV parameters; ``distr`` defaults to "poisson" and ``score_metric`` to
        "pseudo_r2" here. For count families ("poisson", "softplus", "neg-binomial")
        smoothing and log transform are switched off (counts must stay counts), with a
        warning when either was requested.

    Returns
    -------
    intercept : float
    Beta : ndarray of shape (n_predictors,)
    opt_score : float
        Mean cross-validated score at the chosen λ.
    rex : ndarray of shape (n_obs,)
        In-sample predictions of the response.
    reg : GLMCV
        The fitted model; only when ``return_model`` is True.
    """
    adata = check_adata(adata)
    if not isinstance(y_feat, str) or y_feat not in adata.var_names:
        raise InputError(f"y_feat={y_feat!r} is not a gene of adata.var_names.")
    gene_positions(adata, y_feat)  # refuses duplicated var_names, naming them
    X_values = check_X(X)
    if X_values.shape[0] != adata.n_obs:
        raise InputError(
            f"X must have one row per cell of adata ({adata.n_obs}); got {X_values.shape[0]}."
        )
    for name, value in (
        ("calc_first_moment", calc_first_moment),
        ("log_transform", log_transform),
        ("return_model", return_model),
    ):
        if not isinstance(value, bool | np.bool_):
            raise InputTypeError(f"{name} must be True or False; got {value!r}.")
    if n_gs_cv is not None and (not isinstance(n_gs_cv, int | np.integer) or n_gs_cv < 2):
        raise InputError(f"n_gs_cv must be an integer ≥ 2 or None; got {n_gs_cv!r}.")
    grid = _grid(gs_params)
    params = {**FIT_GLM_DEFAULTS, **kwargs}
    unknown = set(params) - set(GLMCV._get_param_names())
    if unknown:
        raise InputTypeError(f"unknown GLMCV parameters in kwargs: {sorted(unknown)}.")
    model = GLMCV(**params)
    model._check_params()
    for candidate in ParameterGrid(grid) if grid else ():
        # GridSearchCV would turn a bad candidate into a warning and a NaN score.
        GLMCV(**{**params, **candidate})._check_params()

    is_count = get_family(params["distr"], link=params.get("link")).is_count
    if is_count and (calc_first_moment or log_transform):
        warnings.warn(
            f"distr={params['distr']!r} models counts: calc_first_moment and log_transform are "
            "switched off (pass both as False to silence this).",
            UserWarning,
            stacklevel=2,
        )
        calc_first_moment = log_transform = False
    y = _response(adata, y_feat, layer, calc_first_moment, log_transform, graph)

    if grid:
        scorer = scoring.pseudo_r2 if model.score_metric == "pseudo_r2" else scoring.neg_deviance
        search = GridSearchCV(model, grid, cv=n_gs_cv or 5, scoring=scorer)
        model = search.fit(X, y).best_estimator_
    else:
        model.fit(X, y)
    opt_score = float(model.scores_[model.best_index_])
    rex = model.predict(X)
    out = (model.beta0_, model.beta_, opt_score, rex)
    return (*out, model) if return_model else out


def _grid(gs_params: dict | None) -> dict:
    """The grid with spateo's "classifier__" prefixes removed, checked against GLMCV's names."""
    if gs_params is None:
        return {}
    if not isinstance(gs_params, dict):
        raise InputTypeError(
            f"gs_params must be a dict of parameter lists; got {type(gs_params).__name__}."
        )
    grid = {}
    for key, values in gs_params.items():
        name = key[len(GRID_PREFIX) :] if key.startswith(GRID_PREFIX) else key
        if name not in GLMCV._get_param_names():
            raise InputError(f"gs_params key {key!r} is not a GLMCV parameter.")
        if isinstance(values, str) or not hasattr(values, "__iter__"):
            values = [values]
        grid[name] = list(values)
    return grid
