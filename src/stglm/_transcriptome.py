"""Whole-transcriptome fitting: every gene of an AnnData against one shared design."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from joblib import Parallel, delayed
from sklearn.model_selection import KFold
from tqdm.auto import tqdm

from ._anndata import check_adata, dense_columns, design_frame, gene_positions, layer_matrix
from ._errors import InputError, InputTypeError
from ._families import COUNT_FAMILIES, Family
from ._glm import GLM
from ._glm_cv import GLMCV
from ._path import (
    LAMBDA_MIN_RATIO,
    batched_path,
    choose_lambda,
    clip,
    geometric_path,
    lambda_max_from_gradient,
    score_path,
)
from ._results import (
    ALL_ZEROS,
    FOLD_WITHOUT_COUNTS,
    NOT_CONVERGED,
    OK,
    store_results,
    var_key,
)
from ._solvers._null_model import null_gradients
from ._solvers._threads import single_blas_thread
from ._solvers.batched import BatchedNewtonCD, SharedDesign
from ._validation import check_tau

__all__ = ["fit_genes"]

#: Working arrays per gene of a chunk, in n-vectors of float64 (the solver's gene-major
#: workspace and returned Newton terms, the responses and their training-fold copies).
CHUNK_ARRAYS = 13
#: Most genes per chunk: enough for each Hessian product to run at the BLAS rate, few
#: enough that small designs' working arrays stay near the caches (Visium CV: 64–128
#: genes 6.5–7.3 s, all 1,255 at once 7.5 s; before the gene-major layout 9.6 s vs 21 s).
CHUNK_MAX_GENES = 128
#: Memory for a chunk's working arrays: 4× the expression matrix, within these bounds.
CHUNK_BYTES_MIN, CHUNK_BYTES_MAX = 128 * 2**20, 512 * 2**20


def _response_matrix(adata: AnnData, genes: Any, layer: str | None):
    """(the genes' names, their column positions, the expression matrix to read from)."""
    matrix = layer_matrix(adata, layer)
    names, columns = gene_positions(adata, genes)
    return names, columns, matrix


def _nbytes(matrix) -> int:
    """Bytes held by a dense or sparse matrix."""
    if sp.issparse(matrix):
        return int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes)
    return int(getattr(matrix, "nbytes", 0) or 8 * matrix.shape[0] * matrix.shape[1])


def default_chunk_size(n_obs: int, input_bytes: int) -> int:
    """Genes per chunk for ``n_obs`` samples and an expression matrix of ``input_bytes``.

    At most ``CHUNK_MAX_GENES``, with working arrays (``CHUNK_ARRAYS`` n-vectors per gene)
    within 4× the input's bytes, clipped to 128–512 MiB.
    """
    budget = int(np.clip(4 * input_bytes, CHUNK_BYTES_MIN, CHUNK_BYTES_MAX))
    return int(np.clip(budget // (8 * CHUNK_ARRAYS * n_obs), 1, CHUNK_MAX_GENES))


class _GeneFitter:
    """Fits chunks of genes with the batched solver; shared work is done once in ``__init__``."""

    def __init__(self, estimator: GLM | GLMCV, family: Family, X: np.ndarray, Tau, folds):
        self.est, self.family, self.Tau = estimator, family, Tau
        self.design = SharedDesign(X, estimator.fit_intercept)
        self.folds = folds
        # Training-fold designs (their pair products) and held-out predictors are built once
        # and reused by every chunk.
        self.fold_designs = [self.design.subset(train) for train, _ in folds] if folds else []
        self.test_X = [X[test] for _, test in folds] if folds else []

    def _solver(self, design: SharedDesign) -> BatchedNewtonCD:
        e = self.est
        return BatchedNewtonCD(
            self.family, design, e.alpha, self.Tau, max_iter=e.max_iter, tol=e.tol
        )

    def _clip(self, coefs: np.ndarray) -> np.ndarray:
        return clip(coefs, self.est.clip_coeffs)

    def _scores(self, X, Y, icpt, coefs, y_null):
        """Score of every gene at every λ on (X, Y): shape (G, K)."""
        e = self.est
        return score_path(
            self.family,
            X,
            Y,
            icpt,
            self._clip(coefs),
            fit_intercept=e.fit_intercept,
            metric=e.score_metric,
            y_null=y_null,
        )

    def fit(self, Y: np.ndarray) -> dict:
        """Fit the genes in the columns of Y; returns per-gene result arrays."""
        e, fam, d = self.est, self.family, self.design
        n_genes = Y.shape[1]
        if isinstance(e, GLMCV):
            if e.reg_lambda is None:
                lmax = lambda_max_from_gradient(
                    null_gradients(fam, d.X, Y, d.fit_intercept), e.alpha
                )
                lams = geometric_path(lmax, e.n_lambdas, e.lambda_min_ratio)
            else:
                fixed = np.sort(np.atleast_1d(np.asarray(e.reg_lambda, dtype=float)))[::-1]
                lams = np.tile(fixed, (n_genes, 1))
            K = lams.shape[1]
            cv_scores = []
            # The folds' mean solution at each λ: the refit's start at the chosen one (no
            # full-data path needed: from there Newton takes a few steps).
            mean_icpt = np.zeros((K, n_genes))
            mean_coefs = np.zeros((K, n_genes, d.X.shape[1]))
            n_iter = np.zeros(n_genes, dtype=int)
            folds = zip(self.folds, self.fold_designs, self.test_X, strict=True)
            for (train, test), train_design, test_X in folds:
                Y_train = Y[train]
                path = batched_path(self._solver(train_design), Y_train, lams)
                cv_scores.append(
                    self._scores(test_X, Y[test], path.intercepts, path.coefs, Y_train.mean(axis=0))
                )
                mean_icpt += path.intercepts / len(self.folds)
                mean_coefs += path.coefs / len(self.folds)
                n_iter += path.n_iter.sum(axis=0)
            scores = np.mean(cv_scores, axis=0)  # (G, K)
            se = np.std(cv_scores, axis=0, ddof=1) / np.sqrt(len(self.folds))
            best = choose_lambda(scores, se, e.score_metric, e.select)
            rows = np.arange(n_genes)
            start = mean_coefs[best, rows]
            if d.fit_intercept:
                start = np.column_stack([mean_icpt[best, rows], start])
            res = self._solver(d).solve(Y, lams[rows, best], start)
            return {
                "intercept": res.intercepts,
                "coef": self._clip(res.coefs),
                "lambda": lams[rows, best],
                "score": scores[rows, best],
                "converged": res.converged,
                "kkt": res.kkt,
                "n_iter": n_iter + res.n_iter,
            }
        lam = np.full(n_genes, float(e.reg_lambda))
        res = self._solver(d).solve(Y, lam)
        coefs = self._clip(res.coefs)
        icpt = res.intercepts[None, :]
        score = self._scores(d.X, Y, icpt, coefs[None], Y.mean(axis=0))[:, 0]
        return {
            "intercept": res.intercepts,
            "coef": coefs,
            "lambda": lam,
            "score": score,
            "converged": res.converged,
            "kkt": res.kkt,
            "n_iter": res.n_iter,
        }


def fit_genes(
    adata: AnnData,
    genes: Any = None,
    *,
    design: Any,
    distr: str = "poisson",
    alpha: float = 0.5,
    reg_lambda: float | list[float] | None = 0.1,
    Tau: np.ndarray | None = None,
    n_lambdas: int = 25,
    cv: int = 5,
    eta: float = 2.0,
    theta: float = 1.0,
    clip_coeffs: float = 0.01,
    score_metric: str = "deviance",
    fit_intercept: bool = True,
    random_seed: int = 888,
    max_iter: int = 1000,
    tol: float = 1e-6,
    select: str = "best",
    lambda_min_ratio: float = LAMBDA_MIN_RATIO,
    layer: str | None = None,
    key_added: str = "stglm",
    store_fitted: bool = False,
    chunk_size: int | None = None,
    n_jobs: int | None = None,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Fit a penalised GLM of every requested gene on one design of predictors.

    Every gene is modelled as ``GLM`` (one ``reg_lambda``) or ``GLMCV`` (a list of λ,
    or None for each gene's data-driven path) would model it on its own — with the
    same parameters and results to solver tolerance — but the genes are solved
    together: the design's pair products, the folds and each training fold's design
    are built once, and each Newton iteration forms all genes' Hessians with one
    matrix product. With cross-validation, the refit at each gene's chosen λ starts
    from the folds' mean solution there (GLMCV's full-data path is not needed).
    Counts are read chunk by chunk of genes; sparse matrices are never densified whole.

    Parameters
    ----------
    adata : AnnData
        Counts (or other responses) in ``adata.X`` or ``adata.layers[layer]``.
    genes : str or list of str, optional
        Genes to fit (default: all of ``adata.var_names``).
    design : DataFrame or array of shape (n_obs, n_predictors)
        Predictors, for example from :func:`stglm.spatial.niche_composition` or
        :func:`stglm.spatial.spatial_lag`. A DataFrame's index must be
        ``adata.obs_names`` (any order) or a RangeIndex; its columns name the predictors.
    distr, alpha, reg_lambda, Tau, n_lambdas, cv, eta, theta, clip_coeffs, score_metric, \
fit_intercept, random_seed, max_iter, tol, select, lambda_min_ratio
        As in :class:`stglm.GLM` and :class:`stglm.GLMCV` (``cv`` must be an integer
        here: the folds are shuffled from ``random_seed``, identical for every gene).
    layer : str, optional
        Read the responses from this layer instead of ``adata.X``.
    key_added : str, default="stglm"
        Prefix of the result keys.
    store_fitted : bool, default=False
        Also store the fitted means as a dense layer ``f"{key_added}_mu"`` (n_obs × n_vars
        float32; zero for genes not fitted).
    chunk_size : int, optional
        Genes solved together (default: :func:`default_chunk_size` — at most 128, and
        fewer when their working arrays would exceed about 4× the expression matrix's
        bytes, within 128–512 MiB).
    n_jobs : int, optional
        Chunks solved in parallel threads (opt-in; at most the number of chunks).
    progress : bool, default=True
        Show a tqdm progress bar over genes.
    copy : bool, default=False
        Work on a copy of ``adata`` and return it, leaving ``adata`` untouched.

    Returns
    -------
    AnnData or None
        The copy with results when ``copy=True``, else None. Results are written to:

        - ``adata.varm[f"{key_added}_coef"]`` — DataFrame (n_vars × n_predictors) of
          coefficients, NaN for genes not requested;
        - ``adata.var[f"{key_added}_intercept"]``, ``[f"{key_added}_lambda"]`` (λ used or
          chosen), ``[f"{key_added}_score"]`` (in-sample score for a fixed λ, mean CV
          score at the chosen λ otherwise), ``[f"{key_added}_converged"]``,
          ``[f"{key_added}_kkt"]`` (KKT residual), ``[f"{key_added}_n_iter"]`` (Newton
          iterations, over all folds' paths and the refit with cross-validation) and
          ``[f"{key_added}_status"]`` ("ok"; "not converged"; "all zeros" for a count
          gene without counts — not fitted —; "fold without counts" for a count gene
          whose counts all fall in one held-out fold — some training fold has none, its
          fit has no finite optimum (the intercept runs to −∞), so the gene's CV scores
          and chosen λ are unreliable, though the refit at that λ is exact —; or
          "not requested");
        - ``adata.uns[key_added]`` — ``{"params": ..., "predictors": [...], "genes": [...]}``;
        - ``adata.layers[f"{key_added}_mu"]`` with ``store_fitted=True``.
    """
    check_adata(adata)
    params = dict(
        distr=distr,
        alpha=alpha,
        reg_lambda=reg_lambda,
        Tau=Tau,
        n_lambdas=n_lambdas,
        cv=cv,
        eta=eta,
        theta=theta,
        clip_coeffs=clip_coeffs,
        score_metric=score_metric,
        fit_intercept=fit_intercept,
        random_seed=random_seed,
        max_iter=max_iter,
        tol=tol,
        select=select,
        lambda_min_ratio=lambda_min_ratio,
    )
    fixed_lambda = reg_lambda is not None and np.ndim(reg_lambda) == 0
    if fixed_lambda:
        est = GLM(**{k: v for k, v in params.items() if k in GLM._get_param_names()}, verbose=False)
    else:
        est = GLMCV(**params, verbose=False)
    est._check_params()
    for name, value, low in (("chunk_size", chunk_size, 1), ("n_jobs", n_jobs, None)):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | np.integer)
            or (low is not None and value < low)
        ):
            raise InputError(f"{name} must be a positive integer or None; got {value!r}.")
    if not isinstance(key_added, str) or not key_added:
        raise InputError(f"key_added must be a non-empty string; got {key_added!r}.")
    family = est._family()
    frame = design_frame(design, adata)
    X = frame.to_numpy(dtype=np.float64)
    Tau = check_tau(Tau, X.shape[1])
    names, columns, matrix = _response_matrix(adata, genes, layer)
    folds = None
    if not fixed_lambda:
        if isinstance(cv, bool) or not isinstance(cv, int | np.integer):
            raise InputTypeError(f"cv must be an integer number of folds in fit_genes; got {cv!r}.")
        if cv < 2 or cv > adata.n_obs:
            raise InputError(f"cv must be between 2 and n_obs={adata.n_obs}; got {cv}.")
        folds = list(KFold(int(cv), shuffle=True, random_state=random_seed).split(X))

    if copy:
        adata = adata.copy()
    if sp.issparse(matrix) and matrix.format != "csc":
        # One CSC copy of the requested genes (the input's size at most) makes each chunk a
        # cheap column slice; the dense block of a chunk is all that is ever densified.
        matrix, columns = sp.csc_matrix(matrix[:, columns]), np.arange(len(columns))
    n = adata.n_obs
    if chunk_size is None:
        chunk_size = default_chunk_size(n, _nbytes(matrix))
    chunks = [
        np.arange(s, min(s + chunk_size, len(names))) for s in range(0, len(names), chunk_size)
    ]

    fitter = _GeneFitter(est, family, X, Tau, folds)
    p = X.shape[1]
    out = {
        "intercept": np.full(len(names), np.nan),
        "coef": np.full((len(names), p), np.nan),
        "lambda": np.full(len(names), np.nan),
        "score": np.full(len(names), np.nan),
        "converged": np.zeros(len(names), dtype=bool),
        "kkt": np.full(len(names), np.nan),
        "n_iter": np.zeros(len(names), dtype=int),
    }
    status = np.full(len(names), OK, dtype=object)
    fitted_mu = np.zeros((n, len(names)), dtype=np.float32) if store_fitted else None

    def run(chunk: np.ndarray):
        with single_blas_thread():
            return _fit_chunk(chunk)

    def _fit_chunk(chunk: np.ndarray):
        Y = dense_columns(matrix, columns[chunk])
        if not np.all(np.isfinite(Y)):
            raise InputError("the expression matrix contains NaN or infinite values.")
        try:
            family.check_y(Y)
        except ValueError as err:  # the family's range check: bad input, not a bug
            raise InputError(str(err)) from None
        usable = np.ones(len(chunk), dtype=bool)
        empty_fold = np.zeros(len(chunk), dtype=bool)
        if distr in COUNT_FAMILIES:
            totals = Y.sum(axis=0)
            usable = totals > 0
            for _, test in folds or ():
                empty_fold |= usable & (Y[test].sum(axis=0) == totals)  # all counts held out
        result = None
        if usable.any():  # all usable: no copy of the block
            result = fitter.fit(Y if usable.all() else Y[:, usable])
        return chunk, usable, empty_fold, result

    bar = tqdm(
        total=len(names),
        desc=f"stglm: fitting {len(names)} genes",
        unit="gene",
        disable=not progress,
    )
    n_workers = 1 if n_jobs is None else max(1, min(n_jobs, len(chunks)))
    with Parallel(n_jobs=n_workers, prefer="threads", return_as="generator") as parallel:
        for chunk, usable, empty_fold, result in parallel(delayed(run)(c) for c in chunks):
            idx = chunk[usable]
            status[chunk[~usable]] = ALL_ZEROS
            status[chunk[empty_fold]] = FOLD_WITHOUT_COUNTS
            if result is not None:
                for key, values in result.items():
                    out[key][idx] = values
                if fitted_mu is not None:
                    Z = X @ result["coef"].T + (
                        result["intercept"][None, :] if fit_intercept else 0
                    )
                    fitted_mu[:, idx] = family.mean(Z)
            bar.update(len(chunk))
    bar.close()
    status[(status == OK) & ~out["converged"]] = NOT_CONVERGED
    where = f"adata.var[{var_key(key_added, 'status')!r}]"
    if np.any(status == NOT_CONVERGED):
        warnings.warn(
            f"{int(np.sum(status == NOT_CONVERGED))} genes did not converge in "
            f"max_iter={max_iter}; see {where}.",
            stacklevel=2,
        )
    if np.any(status == FOLD_WITHOUT_COUNTS):
        warnings.warn(
            f"{int(np.sum(status == FOLD_WITHOUT_COUNTS))} genes have a training fold without "
            "counts (all their counts fall in one held-out fold): that fold's fit has no finite "
            f"optimum, so their CV scores and chosen λ are unreliable; see {where}.",
            stacklevel=2,
        )
    store_results(adata, key_added, names, frame.columns, out, status, fitted_mu, params, layer)
    return adata if copy else None
