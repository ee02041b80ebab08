"""Whole-transcriptome fitting: every gene of an AnnData against one shared design."""

from __future__ import annotations

import threading
import warnings
from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from joblib import Parallel, delayed, effective_n_jobs
from tqdm.auto import tqdm

from ._anndata import (
    Matrix,
    check_adata,
    check_response_values,
    dense_block,
    dense_columns,
    design_frame,
    gene_positions,
    is_lazy,
    layer_matrix,
    layer_of_record,
)
from ._csr_columns import is_canonical
from ._cv import (
    BATCH_COLUMN_ARRAYS,
    DEFAULT_PLAN,
    EXTENSION_DECADES,
    FIXED_COLUMN_ARRAYS,
    MemoryPlan,
    Scoring,
    as_column,
    cross_validate,
    default_chunk_size,
    empty_training_folds,
    extended_grid,
    gene_fold_paths,
    lambda_grid,
    make_folds,
    path_min_ratio,
    warn_choice,
)
from ._defaults import AUTO, front_end_model
from ._distributed import block_threads, run_lazy_blocks
from ._errors import InputError, InputTypeError
from ._families import Family
from ._glm import GLM
from ._glm_cv import GLMCV
from ._inference import (
    estimated_dispersion,
    fisher_weights,
    invert_information,
    testable_coordinates,
    wald_table,
)
from ._offsets import resolve_offset, resolve_weights
from ._path import clip, lambda_max_from_gradient
from ._results import (
    ALL_ZEROS,
    FOLD_WITHOUT_COUNTS,
    NOT_CONVERGED,
    OK,
    RANKED_STATUSES,
    SEPARATED,
    check_key,
    digest,
    merge_into,
    mu_layer,
    store_results,
    var_key,
)
from ._separation import separated_genes
from ._solvers._family_kernels import loglik_at_solution, saturated_nll
from ._solvers._null_model import intercept_is_exact, null_gradients
from ._solvers._options import warn_if_short
from ._solvers._threads import single_blas_thread
from ._solvers.batched import BatchedNewtonCD, SharedDesign, Workspace
from ._solvers.newton_cd import NULL_MAX_ITER, NULL_TOL
from ._theta import batched_theta
from ._validation import JobCount, check_tau, check_vector

__all__ = ["default_chunk_size", "fit_genes"]


def _response_matrix(adata: AnnData, genes: Any, layer: str | None):
    """(the genes' names, their column positions, the expression matrix to read from)."""
    matrix = layer_matrix(adata, layer)
    names, columns = gene_positions(adata, genes)
    return names, columns, matrix


class ThreadWorkspaces:
    """Each thread's solver :class:`Workspace`, kept across the chunks of one call.

    Allocated once per call and thread (grown if a later chunk is larger), not per chunk
    or per fold; fitters that run one after the other in a thread (test_genes' full and
    reduced models) share one, so that a block needs one set of buffers, not two. Pickled
    empty: a worker process builds its own (and the fitters pickled together still share).
    """

    def __init__(self):
        self._local = threading.local()

    def get(self) -> Workspace:
        """The calling thread's workspace (its solvers run one at a time)."""
        workspace = getattr(self._local, "workspace", None)
        if workspace is None:
            workspace = self._local.workspace = Workspace()
        return workspace

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._local = threading.local()


class _GeneFitter:
    """Fits chunks of genes with the batched solver; shared work is done once in ``__init__``.

    ``weights`` (n,) are the samples' weights (None: all 1); ``penalty_factor`` (p,) as in
    :class:`stglm.GLM`; the estimator's ``theta`` may be "ml" or "cox-reid" (one θ per
    gene, estimated with β at every λ). ``inference`` adds standard errors and Wald
    p-values to each fit's results, ``with_score`` its in-sample score (fit_genes'), and
    ``with_loglik`` its Σm·ℓ where the solver's −ℓ gives it (test_genes').
    """

    def __init__(
        self,
        estimator: GLM | GLMCV,
        family: Family,
        X: np.ndarray,
        Tau,
        folds,
        weights,
        factor,
        inference: bool = False,
        *,
        with_score: bool = True,
        with_loglik: bool = False,
        workspaces: ThreadWorkspaces | None = None,
    ):
        self.est, self.family, self.Tau = estimator, family, Tau
        self.inference = inference
        # The in-sample score (fit_genes), and Σm·ℓ at each fit where the solver's −ℓ gives
        # it (test_genes, which has no use for the score).
        self.with_score, self.with_loglik = with_score, with_loglik
        # The estimator's routes and budgets, with the machine's memory read once per call;
        # the full design and each training fold's share the pair products' budget.
        options = estimator._newton_options
        budget = options.memory()
        n_designs = 1 + (len(folds) if folds else 0)
        self.options = replace(
            options, memory_budget=budget, pair_bytes_budget=options.pair_budget() // n_designs
        )
        self.design = SharedDesign(X, estimator.fit_intercept, self.options)
        self.folds = folds
        self.weights, self.factor = weights, factor
        self.theta_method = estimator.theta if estimator._estimates_theta() else None
        # Training-fold designs (their pair products) and held-out predictors are built once
        # and reused by every chunk.
        self.fold_designs = [self.design.subset(train) for train, _ in folds] if folds else []
        self.test_X = [X[test] for _, test in folds] if folds else []
        self.scoring = Scoring(
            family, estimator.score_metric, estimator.clip_coeffs, estimator.fit_intercept
        )
        self.workspaces = ThreadWorkspaces() if workspaces is None else workspaces

    def memory_plan(self) -> MemoryPlan:
        """What :func:`run_blocks` sizes chunks from (:func:`stglm._cv.default_chunk_size`).

        The bytes of pair products kept, the float64 n-vectors per gene of a chunk, and this
        call's memory budget.
        """
        designs = [self.design, *self.fold_designs]
        kept = sum(d.pair_bytes for d in designs if d.Z is not None)
        fixed = isinstance(self.est, GLM) and not self.inference and self.theta_method is None
        n_arrays = FIXED_COLUMN_ARRAYS if fixed else BATCH_COLUMN_ARRAYS
        return MemoryPlan(kept, n_arrays, self.options.memory())

    def decisions(self, chunk_size: int, n_workers: int) -> dict[str, Any]:
        """The memory plan's choices, for ``uns[key]["plan"]``; warns if they may not fit.

        They follow from the data's sizes and the budget only (never the free memory), so
        that the same call gives the same results everywhere.
        """
        plan = self.memory_plan()
        n_obs = self.design.n
        warn_if_short(plan.reserved + n_workers * chunk_size * 8 * plan.n_arrays * n_obs)
        out = {
            "memory_budget": int(plan.budget),
            "chunk_size": int(chunk_size),
            "pair_products": self.design.pair_layout,
        }
        if self.fold_designs:
            out["fold_pair_products"] = ", ".join(
                sorted({d.pair_layout for d in self.fold_designs})
            )
        return out

    def _solver(self, design: SharedDesign) -> BatchedNewtonCD:
        """A solver on ``design`` with this thread's workspace."""
        e = self.est
        return BatchedNewtonCD(
            self.family, design, e.alpha, self.Tau, max_iter=e.max_iter, tol=e.tol,
            penalty_factor=self.factor, options=self.options, workspace=self.workspaces.get(),
        )  # fmt: skip

    def _clip(self, coefs: np.ndarray) -> np.ndarray:
        return clip(coefs, self.est.clip_coeffs)

    def _solve(self, solver, Y, lam, start, offset, theta_start=None):
        """(result, θ, θ's status, separated) at λ ``lam`` (G,) on all samples, from ``start``.

        ``start`` None: each gene's null model. θ and its status are None without θ to
        estimate; ``separated`` (G,) is the θ fit's own (it needs it for its θ steps), None
        without one (:meth:`_separated` then finds it). Nothing is kept on ``self``: one
        fitter serves blocks in several threads at once (n_jobs, Dask's threads).
        """
        w = as_column(self.weights)
        if self.theta_method is None:
            res = solver.solve(Y, lam, start, None, w, keep_terms=self.inference, offset=offset)
            return res, None, None, None
        fit = batched_theta(
            solver, Y, lam, self.theta_method, start=start, weights=w, offset=offset,
            theta_start=theta_start,
        )  # fmt: skip
        # The θ step's status, where the alternation itself did not settle.
        fit.status[~fit.converged] = "not converged"
        return fit.result, fit.theta, fit.status, fit.separated

    def _separated(self, Y, lam, found) -> np.ndarray:
        """Each gene's separation flag (G,): ``found`` by a θ fit, else found here."""
        if found is not None:
            return found
        return separated_genes(self.family, self.design, Y, lam, self.factor, self.weights)

    def fit(self, Y: np.ndarray, offset: np.ndarray | None = None, theta=None) -> dict:
        """Fit the genes in the columns of Y (offset (n,) or their (n, G) columns).

        ``theta`` (G,) fixes each gene's negative-binomial size (a QL test's trended θ),
        whatever the estimator's ``theta``; fixed λ only.
        """
        e, d = self.est, self.design
        n_genes = Y.shape[1]
        if isinstance(e, GLMCV):
            return self._fit_cv(Y, offset)
        lam = np.full(n_genes, float(e.reg_lambda))
        separated = None
        if theta is None:
            res, theta, theta_status, separated = self._solve(self._solver(d), Y, lam, None, offset)
        else:
            w = as_column(self.weights)
            res = self._solver(d).solve(
                Y, lam, None, None, w, keep_terms=self.inference, offset=offset, theta=theta
            )
            theta_status = np.full(n_genes, "fixed", dtype=object)
        coefs = self._clip(res.coefs)
        icpt = res.intercepts[None, :]
        th = None if theta is None else theta[None, :]
        score = np.full(n_genes, np.nan)
        if self.with_score:  # the in-sample score (test_genes has no use for it)
            score = self._deviance_at_solution(Y, res, coefs, theta)
            if score is None:
                y_null = 0.0
                if e.score_metric != "deviance":
                    y_null = self.scoring.null_means(Y, self.weights, offset, offset)
                score = self.scoring.scores(
                    d.X, Y, icpt, coefs[None], self.weights, offset, y_null, th
                )[:, 0]
        result = {
            "intercept": res.intercepts,
            "coef": coefs,
            "lambda": lam,
            "score": score,
            "converged": res.converged,
            "kkt": res.kkt,
            "n_iter": res.n_iter,
            "separated": self._separated(Y, lam, separated),
            **self._theta_out(theta, n_genes, theta_status),
            **self._wald(res, Y, theta),
        }
        if self.with_loglik:  # None where the solver's −ℓ does not give it
            result["loglik"] = self._loglik_at_solution(Y, res, coefs, theta)
        return result

    def _deviance_at_solution(self, Y, res, coefs, theta) -> np.ndarray | None:
        """Each gene's in-sample deviance from the −ℓ the solver ended with, or None.

        2·(Σm·(−ℓ) at the solution − Σm·(−ℓ) at μ = y), the saturated term over the
        non-zero counts: no pass over the fitted means. ``theta`` (G,) is each gene's NB
        size when it was estimated or given (the solver's −ℓ is at that θ: the last β of an
        alternation is solved at its last θ). Only where that −ℓ is the score's: the
        deviance metric, a compiled family, and coefficients that the clipping leaves as
        they are (else None: the caller scores the clipped fit).
        """
        sums = self._solver_sums(Y, res, coefs)
        if self.est.score_metric != "deviance" or sums is None:
            return None
        M, total = sums
        saturated = saturated_nll(self.family, Y, M, theta)
        if saturated is None:
            return None
        return 2.0 * (total * res.nll - saturated)

    def _loglik_at_solution(self, Y, res, coefs, theta) -> np.ndarray | None:
        """Each gene's Σm·ℓ (``Family.loglik``'s terms) from the solver's −ℓ, or None.

        As :meth:`_deviance_at_solution`: only for a compiled family and coefficients
        that the clipping leaves as they are.
        """
        sums = self._solver_sums(Y, res, coefs)
        if sums is None:
            return None
        M, total = sums
        return loglik_at_solution(self.family, Y, res.nll, total, M, theta)

    def _solver_sums(self, Y, res, coefs) -> tuple[np.ndarray | None, float] | None:
        """(weights (n, 1) or None, Σm) where the solver's mean −ℓ is the fit's, else None.

        It is not where the solver kept none, or where the clipping moved the coefficients.
        """
        if res.nll is None or not np.array_equal(coefs, res.coefs):
            return None
        M = as_column(self.weights)
        return M, (float(Y.shape[0]) if M is None else float(M.sum()))

    def fitted_means(self, result: dict, offset) -> np.ndarray:
        """The fitted means (n, G) of a chunk's ``result`` (offset: (n, G), (n, 1) or 0)."""
        Z = self.design.X @ result["coef"].T
        if self.design.fit_intercept:
            Z = Z + result["intercept"][None, :]
        return self.family.mean(Z + offset)

    def _wald(self, res, Y: np.ndarray, theta) -> dict:
        """Standard errors and Wald p-values of the unpenalised coefficients (G, p).

        From the Fisher information of every gene at its solution, all genes' at once from
        the design's pair products (in its scaled coordinates, mapped back); R's
        summary.glm conventions (:mod:`stglm._inference`).
        """
        if not self.inference:
            return {}
        d, fam = self.design, self.family
        n_genes, p = Y.shape[1], d.X.shape[1]
        Z = res.terms.Z  # gene-major (G, n), offset included
        fam_rows = fam if theta is None else fam.with_theta(theta[:, None])
        M = None if self.weights is None else self.weights[None, :]
        H = d.hessians(fisher_weights(fam_rows, Z, M), np.ones(n_genes), exact=True)
        unpenalised = isinstance(self.est, GLM) and self.est.reg_lambda == 0
        free = testable_coordinates(p, d.fit_intercept, unpenalised, self.factor)
        T = d.scaling.transform_matrix()[np.ix_(free, free)]
        cov = T @ invert_information(H[:, free][:, :, free]) @ T.T
        var = np.diagonal(cov, axis1=1, axis2=2).copy()
        n_eff = d.n if self.weights is None else np.count_nonzero(self.weights)
        fam_cols = fam if theta is None else fam.with_theta(theta)
        phi, df = estimated_dispersion(
            fam_cols, Y, fam.mean(Z).T, as_column(self.weights), n_eff, free.size
        )
        if phi is not None:
            var *= phi[:, None]
        coef_free = (
            np.column_stack([res.intercepts, res.coefs])[:, free]
            if d.fit_intercept
            else res.coefs[:, free]
        )
        _, pvalue, _, _ = wald_table(coef_free, np.sqrt(var), df)
        se_out = np.full((n_genes, p), np.nan)
        p_out = np.full((n_genes, p), np.nan)
        cols = free[free >= int(d.fit_intercept)] - int(d.fit_intercept)
        keep = free >= int(d.fit_intercept)
        se_out[:, cols] = np.sqrt(var)[:, keep]
        p_out[:, cols] = pvalue[:, keep]
        return {"se": se_out, "pvalue": p_out}

    def _null_model(self, Y: np.ndarray, offset):
        """(Z0 (n, G) or None, θ0 (G,) or None): each gene's λ = ∞ model, where its path starts.

        The intercept and the unpenalised predictors fitted (λ = 0 on them alone, with θ
        estimated when it is), by the same batched solver; None where the closed-form null
        model is exact (no unpenalised predictors, no θ to estimate, an exact intercept).
        """
        e, fam, d = self.est, self.family, self.design
        free = np.array([], dtype=int) if self.factor is None else np.flatnonzero(self.factor == 0)
        exact = intercept_is_exact(fam, offset) or not d.fit_intercept
        if free.size == 0 and self.theta_method is None and exact:
            return None, None
        design = SharedDesign(d.X[:, free], d.fit_intercept, self.options)
        solver = BatchedNewtonCD(
            fam, design, e.alpha, None, max_iter=NULL_MAX_ITER, tol=NULL_TOL,
            options=self.options, workspace=self.workspaces.get(),
        )  # fmt: skip
        lam = np.zeros(Y.shape[1])
        w = as_column(self.weights)
        if self.theta_method is None:
            res = solver.solve(Y, lam, None, None, w, keep_terms=True, offset=offset)
            return res.terms.Z.T, None
        fit = batched_theta(
            solver, Y, lam, self.theta_method, weights=w, offset=offset,
            gram=lambda W: d.hessians(W, np.ones(W.shape[0])),
        )  # fmt: skip
        return fit.result.terms.Z.T, fit.theta

    def _theta_out(self, theta, n_genes: int, theta_status=None) -> dict:
        """The per-gene θ entries of a chunk's results (θ's status where θ is given)."""
        if theta is not None:
            return {"theta": theta, "theta_status": theta_status}
        fixed = self.family.name == "neg-binomial"
        return {
            "theta": np.full(n_genes, float(self.family.theta) if fixed else np.nan),
            "theta_status": np.full(n_genes, "fixed" if fixed else "", dtype=object),
        }

    def _lambdas(self, Y: np.ndarray, offset) -> tuple[np.ndarray, np.ndarray | None]:
        """(λ (G, K), θ0 (G,) or None): each gene's path, and its λ = ∞ model's θ."""
        e, d = self.est, self.design
        lmax, theta0 = None, None
        if e.reg_lambda is None:  # each gene's λ_max, at its λ = ∞ model (and θ)
            Z0, theta0 = self._null_model(Y, offset)
            fam0 = self.family if theta0 is None else self.family.with_theta(theta0)
            w = as_column(self.weights)
            grad = null_gradients(fam0, d.X, Y, d.fit_intercept, w, offset, Z0)
            lmax = lambda_max_from_gradient(grad, e.alpha, self.factor)
        lams = lambda_grid(e.reg_lambda, e.n_lambdas, e._min_ratio(d.X), lmax)
        return np.broadcast_to(lams, (Y.shape[1], lams.shape[-1])), theta0

    def _fit_cv(self, Y: np.ndarray, offset) -> dict:
        """Cross-validate every gene's path, choose its λ and refit it on all samples.

        The refit at each gene's chosen λ starts from the folds' mean solution there (no
        full-data path needed: from there Newton takes a few steps). With the "auto"
        path, the genes whose choice is their path's end, still improving, are
        cross-validated again along their path extended (:func:`stglm._cv.extended_grid`).
        """
        lams, theta0 = self._lambdas(Y, offset)
        choice = self._choose(Y, lams, offset, theta0)
        more = choice["at_boundary"] & self._extends()
        if more.any():
            cols = np.flatnonzero(more)
            again = self._choose(
                Y[:, cols], extended_grid(lams[cols]), _columns(offset, cols),
                None if theta0 is None else theta0[cols],
            )  # fmt: skip
            again["n_iter"] = again["n_iter"] + choice["n_iter"][cols]  # both passes' work
            for key, values in again.items():
                if values is not None:  # θ's start: None without θ to estimate
                    choice[key][cols] = values
        res, theta, theta_status, separated = self._solve(
            self._solver(self.design), Y, choice["lambda"], choice["start"], offset,
            choice["theta_start"],
        )  # fmt: skip
        return {
            "intercept": res.intercepts,
            "coef": self._clip(res.coefs),
            "lambda": choice["lambda"],
            "score": choice["score"],
            "converged": res.converged,
            "kkt": res.kkt,
            "n_iter": choice["n_iter"] + res.n_iter,
            "at_boundary": choice["at_boundary"],
            "nan_scores": choice["nan_scores"],
            "separated": self._separated(Y, choice["lambda"], separated),
            **self._theta_out(theta, Y.shape[1], theta_status),
            **self._wald(res, Y, theta),
        }

    def _extends(self) -> bool:
        """Whether paths still improving at their end are extended (the "auto" path only)."""
        e = self.est
        return e.reg_lambda is None and isinstance(e.lambda_min_ratio, str)

    def _choose(self, Y: np.ndarray, lams: np.ndarray, offset, theta0) -> dict:
        """Each gene's CV choice along ``lams`` (G, K): λ, score, refit start, flags."""
        e = self.est
        solvers = (self._solver(design) for design in self.fold_designs)
        paths = gene_fold_paths(
            solvers, self.folds, Y, lams, self.weights, offset, theta0, self.theta_method
        )
        cv = cross_validate(
            paths, self.folds, self.test_X, Y, self.weights, offset, self.scoring, e.select
        )
        start, theta_start = cv.refit_start(self.design.fit_intercept)
        return {
            "lambda": cv.chosen(lams),
            "score": cv.chosen(cv.scores),
            "start": start,
            "theta_start": theta_start,
            "n_iter": cv.n_iter,
            "at_boundary": cv.at_boundary,
            "nan_scores": cv.nan_scores,
        }


def _columns(offset, cols: np.ndarray):
    """The offset of the genes ``cols`` of a block: a per-gene (n, G) offset's columns."""
    return offset[:, cols] if offset is not None and np.ndim(offset) == 2 else offset


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
    theta: float | str | None = None,
    clip_coeffs: float | None = None,
    score_metric: str = "deviance",
    fit_intercept: bool = True,
    random_seed: int = 888,
    max_iter: int = 1000,
    tol: float = 1e-6,
    select: str = "best",
    lambda_min_ratio: float | str = AUTO,
    layer: str | None = None,
    key_added: str = "stglm",
    store_fitted: bool = False,
    chunk_size: int | None = None,
    n_jobs: int | None = None,
    progress: bool = True,
    copy: bool = False,
    link: str | None = AUTO,
    offset: Any = None,
    size_factors: Any = AUTO,
    sample_weight: Any = None,
    penalty_factor: Any = None,
    inference: bool = False,
    overwrite: bool = False,
) -> AnnData | None:
    """Fit a penalised GLM of every requested gene on one design of predictors.

    By default the model is the one count analysts fit (as ``stglm fit`` does, decided in
    one place, :mod:`stglm._defaults`): a log link for poisson, neg-binomial and gamma,
    size factors from the total counts as the offset, θ per gene by Cox–Reid for the
    negative binomial, and no clipping of small coefficients. ``link=None`` gives the
    seed's (spateo's) model with its defaults, as ``GLM`` fits it.

    Every gene is modelled as ``GLM`` (one ``reg_lambda``) or ``GLMCV`` (a list of λ,
    or None for each gene's data-driven path) would model it on its own — with the
    same parameters and results to solver tolerance — but the genes are solved
    together: the design's pair products, the folds and each training fold's design
    are built once, and each Newton iteration forms all genes' Hessians with one
    matrix product. With cross-validation, the refit at each gene's chosen λ starts
    from the folds' mean solution there (GLMCV's full-data path is not needed).
    Counts are read chunk by chunk of genes; sparse matrices are never densified whole.
    Counts held in a dask array (:func:`stglm.read_dask`) are fitted block by block as Dask
    tasks, on the active ``dask.distributed`` client or Dask's default scheduler, with the
    same results (``docs/dask.md``).

    Parameters
    ----------
    adata : AnnData
        Counts (or other responses) in ``adata.X`` or ``adata.layers[layer]``: dense,
        scipy-sparse, or a dask array (of dense, scipy-sparse or pydata-sparse chunks).
    genes : str or list of str, optional
        Genes to fit (default: all of ``adata.var_names``).
    design : DataFrame or array of shape (n_obs, n_predictors)
        Predictors, for example from :func:`stglm.spatial.niche_composition` or
        :func:`stglm.spatial.spatial_lag`. A DataFrame's index must be
        ``adata.obs_names`` (any order) or a RangeIndex; its columns name the predictors.
    distr, alpha, reg_lambda, Tau, n_lambdas, cv, eta, score_metric, fit_intercept, \
random_seed, max_iter, tol, select, penalty_factor
        As in :class:`stglm.GLM` and :class:`stglm.GLMCV` (``cv`` must be an integer
        here: the folds are shuffled from ``random_seed``, identical for every gene).
        ``eta`` matters only with ``link=None`` (the seed's Poisson mean).
    link : "auto", str or None, default="auto"
        The mean function, as in :class:`stglm.GLM`. "auto": "log" for poisson,
        neg-binomial and gamma — the coefficients are then natural-log fold changes of
        the gene's mean per unit of each predictor (given the offset) —, the family's
        own mean for gaussian and softplus. None: the seed's mean functions (Poisson
        linear above ``eta``, softplus for neg-binomial and gamma), with the seed's
        defaults of ``theta``, ``size_factors`` and ``clip_coeffs``.
    theta : float > 0, {"ml", "cox-reid"} or None, default=None
        Negative-binomial size: fixed for all genes, or estimated per gene with its β
        (maximum likelihood as ``MASS::glm.nb``, or the Cox–Reid adjusted profile
        likelihood as glmGamPoi), at every λ of the CV paths; in
        ``var[f"{key_added}_theta"]``. None: "cox-reid" with the log link, 1 (the
        seed's) with ``link=None``.
    clip_coeffs : float >= 0 or None, default=None
        Coefficients with a smaller absolute value are set to 0 (the seed's
        ``clip_coeffs``). None: 0, or the seed's 0.01 with ``link=None``.
    lambda_min_ratio : float in (0, 1) or "auto", default="auto"
        End of each gene's data-driven path as a fraction of its λ_max; "auto" is
        glmnet's default, 1e-4 with at least as many observations as predictors, 1e-2
        with fewer (as in :class:`stglm.GLMCV`, which also says when a choice of the
        path's end warns).
    offset : array of shape (n_obs,) or (n_obs, n_genes), or str, optional
        Known term of every linear predictor (an obs column by name), e.g. log exposure.
    size_factors : "auto", {"total", "poscounts"}, array of shape (n_obs,), str or None, \
default="auto"
        Adds the offset log s_i: "total" — s_i = total counts of observation i over all
        genes of the matrix / their geometric mean; "poscounts" — DESeq2's estimator for
        zero-heavy data; or given (an array or obs column). None: no size factors.
        "auto": "total" for poisson and neg-binomial with the log link when no
        ``offset`` is given, None otherwise (a given ``offset`` is the whole offset, as
        glmGamPoi's: a log(total) of one's own is not counted twice). With a log link
        and no offset, counts need size factors: without them the coefficients mix
        sequencing depth with biology.
    sample_weight : array of shape (n_obs,) or str, optional
        Non-negative weights of the observations (an obs column by name), as in
        :meth:`stglm.GLM.fit`; CV folds split them.
    inference : bool, default=False
        Also compute standard errors and Wald p-values of the unpenalised coefficients
        (``reg_lambda=0``, or the predictors with ``penalty_factor`` 0), as
        :meth:`stglm.GLM.coef_table` would per gene, and Benjamini–Hochberg q-values over
        the fitted genes, per predictor.
    layer : str, optional
        Read the responses from this layer instead of ``adata.X``.
    key_added : str, default="stglm"
        Prefix of the result keys.
    store_fitted : bool, default=False
        Also store the fitted means as a dense layer ``f"{key_added}_mu"`` (n_obs × n_vars
        float32; zero for genes not fitted).
    chunk_size : int, optional
        Genes solved together (default: :func:`default_chunk_size` — 32, or up to 128
        while the chunks' arrays stay within 256 MiB, divided among the ``n_jobs``
        threads, and fewer when they would not fit the memory budget beside the design's
        pair products; the budget is the bytes in the environment variable
        ``STGLM_MEMORY_BUDGET``, e.g. ``8G``, else 4 GiB — never the machine's free
        memory, so that the same call decides, and computes, the same everywhere; a
        warning says when the plan exceeds the memory available).
        With a dask array, the genes of one Dask task, by default sized for the threads
        of one worker (they share its budget as ``n_jobs`` threads do in memory): a
        worker's memory is about 8 bytes × n_obs × (11 at one λ, 15 with
        cross-validation) per gene of each block it runs, plus the design it shares
        across blocks (docs/dask.md).
    n_jobs : int, optional
        Chunks solved in parallel threads (opt-in; at most the number of chunks), with
        joblib's meaning: -1 is every core, -2 all but one. Unused with a dask array: the
        Dask scheduler's workers run the blocks, as many at once as they have threads.
    progress : bool, default=True
        Show a tqdm progress bar over genes.
    copy : bool, default=False
        Work on a copy of ``adata`` and return it, leaving ``adata`` untouched.
    overwrite : bool, default=False
        What happens to results already under ``key_added`` (an earlier call's). A fit
        of the same model — the same design (columns and values), parameters, layer,
        offset, sample weights and ``inference`` — adds its genes to them: the earlier
        genes keep their results, genes fitted again get the new ones, ``uns[key_added]
        ["genes"]`` lists both, q-values are recomputed over all of them. A fit of
        another model raises an error naming what differs, before any work, unless
        ``overwrite=True``: then its results replace the earlier ones, and genes it does
        not fit are "not requested".

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
          iterations, over all folds' paths and the refit with cross-validation),
          ``[f"{key_added}_theta"]`` (the NB size used or estimated; NaN for other
          families), ``[f"{key_added}_theta_status"]`` ("fixed", "converged", "theta at
          upper bound" — no overdispersion, Poisson-like —, "theta at lower bound",
          "not converged", or "" where not fitted) and ``[f"{key_added}_status"]``
          ("ok"; "not converged"; "all zeros" for a count gene without counts — not
          fitted —; "fold without counts" for a count gene whose counts all fall in one
          held-out fold — some training fold has none, its fit has no finite optimum (the
          intercept runs to −∞), so the gene's CV scores and chosen λ are unreliable,
          though the refit at that λ is exact —; "separated" for a count gene whose
          maximum-likelihood estimate does not exist — its zeros on some samples (e.g.
          every spot of one tissue section) fit ever better along a direction of the
          unpenalised coefficients (:mod:`stglm._separation`): the coefficients along
          it are where the tolerance stopped, the others and θ those of the model
          without those samples —; or "not requested");
        - with ``inference=True``, ``adata.varm[f"{key_added}_se"]``,
          ``[f"{key_added}_pvalue"]`` and ``[f"{key_added}_qvalue"]`` — DataFrames like
          the coefficients (NaN for penalised predictors and genes not fitted);
        - ``adata.obs[f"{key_added}_offset"]`` — the offset, when one per observation was
          used (``offset`` and/or ``size_factors``);
        - ``adata.uns[key_added]`` — ``{"params": ..., "predictors": [...], "genes": [...],
          "model": {family, link, offset, theta, sample_weight, coefficients},
          "model_record": {...}, "plan": {...}}`` — what was fitted, including the scale
          of the coefficients, the record a later fit must match to add its genes, and
          the latest fit's memory plan (``memory_budget`` in bytes, ``chunk_size``, and
          ``pair_products`` — "float64", "float32" or "float64 tiles" — with
          ``fold_pair_products`` for the training folds' designs);
        - ``adata.layers[f"{key_added}_mu"]`` with ``store_fitted=True``.

    Warns
    -----
    BoundaryWarning
        With cross-validation, once per call, counting (and naming a few of) the genes
        whose chosen λ is the smallest of their path while their held-out score was still
        improving there (see :class:`stglm.GLMCV`'s ``lambda_min_ratio``): it may improve
        beyond it (lower ``lambda_min_ratio``, or give smaller ``reg_lambda``).
    UserWarning
        Once per kind: genes that did not converge, genes with a fold without counts, and
        genes whose mean CV score is NaN at some λ (such a λ is never chosen).
    """
    check_adata(adata)
    model = front_end_model(
        distr, link, theta, size_factors, clip_coeffs, offset_given=offset is not None
    )
    link, theta = model.link, model.theta
    size_factors, clip_coeffs = model.size_factors, model.clip_coeffs
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
        link=link,
        penalty_factor=penalty_factor,
    )
    est = gene_estimator(params)
    check_run_options(chunk_size, n_jobs, key_added)
    check_inference(inference, est, penalty_factor)
    frame = design_frame(design, adata)
    X = frame.to_numpy(dtype=np.float64)
    Tau = check_tau(Tau, X.shape[1])
    factor = check_vector(
        penalty_factor, X.shape[1], "penalty_factor", nonnegative=True, what="n_predictors"
    )
    folds = gene_folds(est, X)
    path_end = lambda_min_ratio
    if folds is not None:  # the path's end ("auto" resolved) and the extension's, warned about
        path_end = path_min_ratio(lambda_min_ratio, *X.shape)
        if isinstance(lambda_min_ratio, str):
            path_end *= 10.0**-EXTENSION_DECADES
    family = est._family(1.0 if est._estimates_theta() else None)
    data = GeneResponses(adata, genes, layer, family, offset, size_factors, sample_weight, folds)
    if store_fitted and data.lazy:
        raise InputError(
            "store_fitted=True stores a dense n_obs × n_genes layer of fitted means; with "
            "counts in a dask array, recompute the means of the genes you need with "
            "stglm.get.fitted_mean instead."
        )
    record = model_record(params, layer, frame, X, data, inference)
    merge = merge_into(adata, key_added, record, overwrite)
    # Merged into results with fitted means, this fit's genes get theirs too (not stale ones).
    store_fitted = store_fitted or (merge and mu_layer(key_added) in adata.layers and not data.lazy)

    if copy:
        adata = adata.copy()
    fitter = _GeneFitter(est, family, X, Tau, folds, data.weights, factor, inference)
    out = new_results(len(data.names), X.shape[1], inference)
    status = np.full(len(data.names), OK, dtype=object)
    fitted_mu = np.zeros((adata.n_obs, len(data.names)), dtype=np.float32) if store_fitted else None

    def fit_block(Y, offset_block, idx):
        return fitter.fit(Y, offset_block)

    n_workers = block_workers(data, n_jobs)
    chunk_size = data.chunk_genes(chunk_size, fitter.memory_plan(), n_workers)
    plan = fitter.decisions(chunk_size, min(n_workers, -(-len(data.names) // chunk_size)))
    blocks = run_blocks(data, fit_block, status, chunk_size, n_jobs, progress, "fitting")
    for idx, result in blocks:
        for key, values in result.items():
            out[key][idx] = values
        if fitted_mu is not None:
            fitted_mu[:, idx] = fitter.fitted_means(result, data.offset_columns(idx))
    status[(status == OK) & out["separated"]] = SEPARATED
    status[(status == OK) & ~out["converged"]] = NOT_CONVERGED
    warn_statuses(status, key_added, max_iter)
    if folds is not None:  # genes with a fold without counts are flagged already
        ranked = np.isin(status, RANKED_STATUSES)
        warn_choice(
            out["at_boundary"] & ranked, out["nan_scores"] & ranked,
            given_lambdas=reg_lambda is not None, lambda_min_ratio=path_end,
            names=data.names,
        )  # fmt: skip
    store_results(
        adata, key_added, data.names, frame.columns, out, status, fitted_mu, params, layer,
        data.model(theta), data.offset, record=record, merge=merge, plan=plan, design=X,
    )  # fmt: skip
    return adata if copy else None


def model_record(
    params: dict, layer: str | None, frame, X: np.ndarray, data: GeneResponses, inference: bool
) -> dict[str, str]:
    """What a fit modelled, as strings (arrays by :func:`~stglm._results.digest`).

    A later fit under the same ``key_added`` adds its genes to these results only when its
    record is the same (:func:`~stglm._results.merge_into`): the parameters, the design's
    columns and values, the layer, the offset (a per-gene offset is each gene's own: only
    its kind is compared), the sample weights and ``inference``.
    """
    record = {}
    for name, value in params.items():
        if value is None or isinstance(value, str | bool | int | float | np.number):
            record[name] = repr(value.item() if isinstance(value, np.generic) else value)
        elif isinstance(value, np.ndarray | list | tuple):
            record[name] = digest(np.asarray(value, dtype=float))
        else:  # a Family instance as distr
            record[name] = repr(value)
    offset = data.offset
    record.update(
        predictors=repr([str(c) for c in frame.columns]),
        design=digest(X),
        layer=str(layer_of_record(layer)),
        offset=f"{data.offset_kind}: "
        + ("per gene" if offset is not None and offset.ndim == 2 else digest(offset)),
        sample_weight=f"{data.weight_kind}: {digest(data.weights)}",
        inference=repr(bool(inference)),
    )
    return record


def check_inference(inference: Any, est: GLM | GLMCV, penalty_factor: Any) -> None:
    """``inference=True`` needs unpenalised coefficients: checked before any work."""
    if not isinstance(inference, bool):
        raise InputTypeError(f"inference must be True or False; got {inference!r}.")
    unpenalised = isinstance(est, GLM) and est.reg_lambda == 0
    some_free = penalty_factor is not None and np.any(np.asarray(penalty_factor) == 0)
    if inference and not unpenalised and not some_free:
        raise InputError(
            "inference=True needs unpenalised coefficients: reg_lambda=0, or penalty_factor "
            "0 for the predictors to test. Penalised (lasso, elastic-net, ridge) estimates "
            "have no valid Wald p-values; to test a penalised selection, select on one half "
            "of the observations and test on the other, or use stglm.test_genes."
        )


def gene_folds(est: GLM | GLMCV, X: np.ndarray) -> list | None:
    """fit_genes' folds, the same for every gene (None for one λ): ``cv`` shuffled folds."""
    if not isinstance(est, GLMCV):
        return None
    cv = est.cv
    if isinstance(cv, bool) or not isinstance(cv, int | np.integer):
        raise InputTypeError(f"cv must be an integer number of folds in fit_genes; got {cv!r}.")
    return make_folds(int(cv), X.shape[0], est.random_seed, X)


def gene_estimator(params: dict) -> GLM | GLMCV:
    """The estimator that models each gene (GLM at one λ, GLMCV otherwise), checked."""
    reg_lambda = params["reg_lambda"]
    if reg_lambda is not None and np.ndim(reg_lambda) == 0:
        est = GLM(**{k: v for k, v in params.items() if k in GLM._get_param_names()}, verbose=False)
    else:
        est = GLMCV(**params, verbose=False)
    est._check_params()
    return est


def check_run_options(chunk_size, n_jobs, key_added) -> None:
    """The options of a whole-transcriptome run that are not the model's."""

    def integer(value) -> bool:
        return isinstance(value, int | np.integer) and not isinstance(value, bool)

    if chunk_size is not None and not (integer(chunk_size) and chunk_size >= 1):
        raise InputError(f"chunk_size must be a positive integer or None; got {chunk_size!r}.")
    JobCount().check("n_jobs", n_jobs)
    check_key(key_added)


class GeneResponses:
    """The requested genes' responses and what goes with them, read block by block.

    Resolves the genes, the matrix (X or a layer), the offset (with size factors) and the
    sample weights once; :meth:`block` reads and checks one block of genes. A matrix held
    in a dask array (``lazy``) is read block by block by Dask tasks
    (:mod:`stglm._distributed`); such a GeneResponses is pickled without it, so that what
    is sent to the workers never carries the matrix's graph.
    """

    def __init__(self, adata, genes, layer, family, offset, size_factors, sample_weight, folds):
        self.names, self.columns, self.matrix = _response_matrix(adata, genes, layer)
        self.lazy = is_lazy(self.matrix)
        self.offset, self.offset_kind = resolve_offset(
            adata, self.matrix, self.names, offset, size_factors
        )
        self.weights, self.weight_kind = resolve_weights(adata, sample_weight)
        self.family, self.folds = family, folds
        self.n_obs = adata.n_obs
        if sp.issparse(self.matrix) and self.matrix.format not in ("csc", "csr"):
            self.matrix = sp.csr_matrix(self.matrix)  # COO, DIA, …: no column access
        # CSR stays as it is (no copy of the counts): each chunk's columns are read into
        # its dense block directly (:func:`stglm._anndata.dense_columns`).
        check_response_values(self.matrix, self.columns, family, layer)
        # In-memory values are checked above, once; a dask array's as each block is read.
        self._check_blocks = self.lazy or not isinstance(self.matrix, Matrix)
        self._canonical = None  # of a CSR matrix: checked once, for every block
        if sp.issparse(self.matrix) and self.matrix.format == "csr":
            self._canonical = is_canonical(self.matrix)
        self._buffers = threading.local()  # each thread's block of CSR columns, reused

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.lazy:
            state["matrix"] = None  # the tasks receive their blocks' columns instead
        del state["_buffers"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._buffers = threading.local()

    def _block_buffer(self, n_genes: int) -> np.ndarray | None:
        """The calling thread's (n, n_genes) column-major buffer for CSR columns, or None.

        None where the matrix is not CSR. Reused from block to block (blocks of one thread
        never overlap: a block's responses are dropped before the thread reads the next).
        """
        if self._canonical is None:
            return None
        flat = getattr(self._buffers, "flat", None)
        size = self.n_obs * n_genes
        if flat is None or flat.size < size:
            flat = self._buffers.flat = np.empty(size)
        return flat[:size].reshape(n_genes, self.n_obs).T

    def chunk_genes(self, chunk_size: int | None, plan=DEFAULT_PLAN, n_jobs: int = 1) -> int:
        """Genes per block: ``chunk_size``, or what the memory ``plan`` allows.

        As many as :func:`stglm._cv.default_chunk_size` allows for ``n_jobs`` blocks at once.
        """
        if chunk_size is not None:
            return chunk_size
        reserved, n_arrays, budget = plan
        return default_chunk_size(
            self.n_obs, budget, reserved=reserved, n_jobs=n_jobs, n_arrays=n_arrays
        )

    def chunks(self, chunk_size: int | None, plan=DEFAULT_PLAN, n_jobs: int = 1):
        """Positions (in ``names``) of each block of genes (sized by :meth:`chunk_genes`)."""
        size = self.chunk_genes(chunk_size, plan, n_jobs)
        n = len(self.names)
        return [np.arange(s, min(s + size, n)) for s in range(0, n, size)]

    def offset_columns(self, idx: np.ndarray):
        """The offset of the genes ``idx`` as (n, len(idx)) or (n, 1) columns, or 0."""
        if self.offset is None:
            return 0.0
        return self.offset[:, idx] if self.offset.ndim == 2 else self.offset[:, None]

    def block(self, chunk: np.ndarray, values=None):
        """(Y, usable, empty_fold, offset) of a block of genes; Y holds the usable ones.

        ``values`` are the block's columns when already read (a Dask task's input; dense
        or sparse), else they are read from the matrix. A count gene without (weighted)
        counts is not usable; ``empty_fold`` marks genes whose counts all fall in one
        held-out fold.
        """
        if values is None:
            Y = dense_columns(
                self.matrix, self.columns[chunk], self._canonical, self._block_buffer(len(chunk))
            )
        else:
            Y = dense_block(values)
        if self._check_blocks or values is not None:
            if not np.all(np.isfinite(Y)):
                raise InputError("the expression matrix contains NaN or infinite values.")
            try:
                self.family.check_y(Y)
            except ValueError as err:  # the family's range check: bad input, not a bug
                raise InputError(str(err)) from None
        usable = np.ones(len(chunk), dtype=bool)
        empty_fold = np.zeros(len(chunk), dtype=bool)
        if self.family.is_count:
            counted = Y if self.weights is None else Y * self.weights[:, None]
            totals = counted.sum(axis=0)
            usable = totals > 0
            if self.folds:  # all counts held out in one fold: its training fold has none
                empty_fold = usable & empty_training_folds(counted, self.folds).any(axis=0)
        offset = self.offset
        if offset is not None and offset.ndim == 2:
            offset = offset[:, chunk[usable]]
        return (Y if usable.all() else Y[:, usable]), usable, empty_fold, offset

    def model(self, theta: Any) -> dict[str, str]:
        """What was fitted, for ``uns[key]['model']``."""
        return {
            "family": self.family.name,
            "link": self.family.link_name,
            "offset": self.offset_kind,
            "theta": _theta_kind(theta, self.family),
            "sample_weight": self.weight_kind,
            "coefficients": _coefficient_scale(self.family),
        }


def run_block(data: GeneResponses, fit_block, chunk: np.ndarray, values=None):
    """(chunk, usable, empty_fold, results or None) of one block of genes (BLAS on one thread).

    ``values``: the block's columns when already read (see :meth:`GeneResponses.block`).
    """
    with single_blas_thread():
        Y, usable, empty_fold, offset = data.block(chunk, values)
        idx = chunk[usable]
        return chunk, usable, empty_fold, (fit_block(Y, offset, idx) if idx.size else None)


def block_workers(data: GeneResponses, n_jobs: int | None) -> int:
    """Blocks that run at once in one process, sharing its memory budget.

    joblib's meaning of ``n_jobs``; with Dask, the threads of a worker
    (:func:`~stglm._distributed.block_threads`).
    """
    if data.lazy:
        return block_threads()
    return 1 if n_jobs is None else max(1, effective_n_jobs(n_jobs))


def run_blocks(
    data: GeneResponses, fit_block, status, chunk_size, n_jobs, progress, verb,
    plan=DEFAULT_PLAN,
):  # fmt: skip
    """Yield (positions, results) of ``fit_block(Y, offset, positions)`` over gene blocks.

    Blocks run in ``n_jobs`` threads (BLAS on one thread each) under a progress bar, or as
    Dask tasks when the matrix is a dask array (:func:`stglm._distributed.run_lazy_blocks`;
    ``n_jobs`` unused: the scheduler's workers run them), in any order; the statuses of
    genes without counts or with a fold without counts are set in ``status``. Without
    ``chunk_size``, blocks are sized from the memory ``plan`` (see
    :meth:`GeneResponses.chunks`; all threads' blocks share the budget).
    """
    n_workers = block_workers(data, n_jobs)
    chunks = data.chunks(chunk_size, plan, n_workers)
    n_workers = min(n_workers, len(chunks))
    n_genes = len(data.names)
    bar = tqdm(
        total=n_genes, desc=f"stglm: {verb} {n_genes} genes", unit="gene", disable=not progress
    )
    with ExitStack() as stack:
        if data.lazy:
            task = partial(run_block, data, fit_block)
            blocks = run_lazy_blocks(task, data.matrix, chunks, data.columns, data.names)
        else:
            # joblib's meaning of n_jobs (-1: every core), at most one thread per block.
            parallel = stack.enter_context(
                Parallel(n_jobs=n_workers, prefer="threads", return_as="generator")
            )
            blocks = parallel(delayed(run_block)(data, fit_block, c) for c in chunks)
        for chunk, usable, empty_fold, result in blocks:
            status[chunk[~usable]] = ALL_ZEROS
            status[chunk[empty_fold]] = FOLD_WITHOUT_COUNTS
            if result is not None:
                yield chunk[usable], result
            bar.update(len(chunk))
    bar.close()


def new_results(n_genes: int, p: int, inference: bool) -> dict[str, np.ndarray]:
    """Per-gene result arrays of fit_genes, filled for genes not fitted."""
    out = {
        "intercept": np.full(n_genes, np.nan),
        "coef": np.full((n_genes, p), np.nan),
        "lambda": np.full(n_genes, np.nan),
        "score": np.full(n_genes, np.nan),
        "converged": np.zeros(n_genes, dtype=bool),
        "kkt": np.full(n_genes, np.nan),
        "n_iter": np.zeros(n_genes, dtype=int),
        "theta": np.full(n_genes, np.nan),
        "theta_status": np.full(n_genes, "", dtype=object),
        # Not stored: the warnings of a cross-validated choice (see warn_choice).
        "at_boundary": np.zeros(n_genes, dtype=bool),
        "nan_scores": np.zeros(n_genes, dtype=bool),
        "separated": np.zeros(n_genes, dtype=bool),
    }
    if inference:
        out["se"] = np.full((n_genes, p), np.nan)
        out["pvalue"] = np.full((n_genes, p), np.nan)
    return out


def warn_statuses(status: np.ndarray, key_added: str, max_iter: int) -> None:
    """One warning per kind of gene that needs a look (not converged, fold without counts)."""
    where = f"adata.var[{var_key(key_added, 'status')!r}]"
    if np.any(status == NOT_CONVERGED):
        warnings.warn(
            f"{int(np.sum(status == NOT_CONVERGED))} genes did not converge in "
            f"max_iter={max_iter}; see {where}.",
            stacklevel=3,
        )
    if np.any(status == FOLD_WITHOUT_COUNTS):
        warnings.warn(
            f"{int(np.sum(status == FOLD_WITHOUT_COUNTS))} genes have a training fold without "
            "counts (all their counts fall in one held-out fold): that fold's fit has no finite "
            f"optimum, so their CV scores and chosen λ are unreliable; see {where}.",
            stacklevel=3,
        )


def _theta_kind(theta: Any, family: Family) -> str:
    """How θ was set, for ``uns``: "ml", "cox-reid", "fixed" or "none" (not NB)."""
    if isinstance(theta, str):
        return theta
    return "fixed" if family.name == "neg-binomial" else "none"


def _coefficient_scale(family: Family) -> str:
    """What one unit of a coefficient means, for ``uns`` and ``coef_df``."""
    link = family.link_name
    if link == "log":
        return "log fold change of the mean per unit of the predictor (natural log)"
    if link == "identity":
        return "change of the mean per unit of the predictor"
    return f"change of the linear predictor per unit of the predictor ({link} mean)"
