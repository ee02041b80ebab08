"""Cross-validation along regularisation paths: the one driver of GLMCV and fit_genes.

What every cross-validation shares is here, once: the λ grid (:func:`lambda_grid`), the
folds (:func:`make_folds`, with :func:`empty_training_folds`), held-out scores
(:class:`Scoring`), their mean and standard error, the choice of λ and its warnings
(:func:`cross_validate`, :func:`choose_lambda`, :func:`warn_choice`), the refit's start
(:meth:`CVResult.refit_start`) and the memory plan of batched solves
(:data:`BATCH_COLUMN_ARRAYS`, :func:`batch_bytes`, :func:`default_chunk_size`).

How the folds' paths are solved is the route, one generator or list of
:class:`~stglm._path.PathResult` in the (K, G) layout per route:

- :func:`separate_fold_paths` — each fold's own path (warm starts, strong rules), for one
  response: GLMCV with a sparse or wide design, or the batch-gradient solver;
- :func:`batched_fold_paths` — every training fold and the full data as sample-weighted
  columns of one batched solve sharing the design: GLMCV with a small dense design;
- :func:`gene_fold_paths` — for each fold, the paths of many genes solved together on the
  fold's own design: fit_genes.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
from joblib import Parallel, delayed
from sklearn.model_selection import KFold, check_cv

from ._errors import BoundaryWarning, InputError, InputTypeError
from ._families import Family
from ._path import PathResult, batched_path, clip, fit_path, geometric_path, score_path
from ._solvers import NewtonOptions, Problem
from ._solvers._null_model import null_intercepts
from ._solvers._options import memory_budget
from ._solvers._threads import single_blas_thread
from ._solvers.batched import BatchedNewtonCD, SharedDesign
from ._solvers.newton_cd import tolerance_scale

__all__ = [
    "BATCH_COLUMN_ARRAYS",
    "CHUNK_MAX_GENES",
    "FIXED_COLUMN_ARRAYS",
    "CVResult",
    "Scoring",
    "as_column",
    "batch_bytes",
    "batched_fold_paths",
    "choose_lambda",
    "cross_validate",
    "DEFAULT_PLAN",
    "MemoryPlan",
    "default_chunk_size",
    "empty_training_folds",
    "extended_grid",
    "gene_fold_paths",
    "lambda_grid",
    "make_folds",
    "path_min_ratio",
    "separate_fold_paths",
    "take_rows",
    "warn_choice",
]

# -- the memory plan ---------------------------------------------------------------------------
#: Working memory of one column of a batched solve (a gene of a fit_genes chunk, a fold of
#: GLMCV's batch), in n-vectors of float64: the solver's gene-major workspace (current and
#: trial Z, r, w, the responses and their weights: 8), the Newton terms kept along a path
#: (3), and the responses with their training-fold / column-major copy (2).
BATCH_COLUMN_ARRAYS = 13
#: The same for a gene of a fixed-λ fit: the solver's workspace (8) and the chunk's dense
#: responses (1); no path, no folds, and the score is computed a block of rows at a time.
FIXED_COLUMN_ARRAYS = 9
#: Most genes per chunk: few enough that small designs' working arrays stay near the caches
#: (Visium CV: 64–128 genes 6.5–7.3 s, all 1,255 at once 7.5 s).
CHUNK_MAX_GENES = 128
#: Genes a chunk gets whenever the budget allows: enough for the Hessian products to run
#: near the BLAS rate (Zᵀ·W, 1 thread, 200,000 rows × 66 pairs: 5 genes 14, 16 genes 31,
#: 32 genes 40, 128 genes 44–50 GFLOP/s).
CHUNK_BLAS_GENES = 32
#: Beyond CHUNK_BLAS_GENES, genes are added while the chunk's arrays stay within this:
#: more buys little speed, and fresh memory is slow to touch the first time (1 GB took
#: 2.3 s of page faults on the benchmark VM, 100 MB 0.03 s).
CHUNK_TARGET_BYTES = 256 * 2**20


def batch_bytes(n_samples: int, n_columns: int, n_arrays: int = BATCH_COLUMN_ARRAYS) -> int:
    """Bytes of working arrays a batched solve of ``n_columns`` columns of ``n_samples`` holds."""
    return 8 * n_arrays * n_samples * n_columns


class MemoryPlan(NamedTuple):
    """What a fit's chunks of genes are sized from (:func:`default_chunk_size`).

    ``reserved``: bytes held already (the designs' pair products); ``n_arrays``: float64
    n-vectors per gene of a chunk; ``budget``: the fit's memory budget in bytes (None:
    :func:`stglm._solvers._options.memory_budget`).
    """

    reserved: int = 0
    n_arrays: int = BATCH_COLUMN_ARRAYS
    budget: int | None = None


#: The plan of a fit that keeps no pair products and has the batched path's arrays.
DEFAULT_PLAN = MemoryPlan()


def default_chunk_size(
    n_obs: int,
    budget: int | None = None,
    *,
    reserved: int = 0,
    n_jobs: int = 1,
    n_arrays: int = BATCH_COLUMN_ARRAYS,
) -> int:
    """Genes per chunk for ``n_obs`` samples, for each of ``n_jobs`` threads.

    :data:`CHUNK_BLAS_GENES`, or more while the chunks' arrays stay within
    :data:`CHUNK_TARGET_BYTES` (at most :data:`CHUNK_MAX_GENES`), shared by the ``n_jobs``
    chunks solved at once (threads add speed, not memory) — and never more than fit the
    memory budget: ``budget`` bytes (None: the default,
    :func:`stglm._solvers._options.memory_budget`, never the machine's free memory) less
    the ``reserved`` ones (the designs' pair products). A chunk holds :func:`batch_bytes`
    (``n_arrays`` n-vectors per gene). At least 1.
    """
    n_jobs = max(1, n_jobs)
    per_gene = batch_bytes(n_obs, 1, n_arrays)
    wanted = min(CHUNK_MAX_GENES, max(CHUNK_BLAS_GENES, CHUNK_TARGET_BYTES // per_gene))
    budget = memory_budget() if budget is None else budget
    fits = max(0, budget - reserved) // n_jobs // per_gene
    return int(max(1, min(wanted // n_jobs, fits)))


# -- rows, folds and the λ grid ---------------------------------------------------------------
def take_rows(values: np.ndarray | None, rows) -> np.ndarray | None:
    """The rows of a per-sample array (None stays None; rows None: all)."""
    return values if values is None or rows is None else values[rows]


def as_column(values: np.ndarray | None) -> np.ndarray | None:
    """A per-sample (n,) array as an (n, 1) column that broadcasts over responses."""
    return None if values is None or values.ndim == 2 else values[:, None]


def make_folds(cv: Any, n_samples: int, random_seed: int, X=None, y=None) -> list:
    """The (train, test) index pairs of ``cv``, validated.

    An integer gives that many shuffled folds drawn from ``random_seed``
    (``KFold(cv, shuffle=True, random_state=random_seed)``; None: 5); a splitter or an
    iterable of (train, test) pairs is used as given (``X`` and ``y`` go to its ``split``).
    """
    cv = 5 if cv is None else cv  # None: scikit-learn's default of 5 folds
    if isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        if cv < 2 or cv > n_samples:
            raise InputError(
                f"cv must be between 2 and the number of samples (n_samples={n_samples}); got {cv}."
            )
        cv = KFold(int(cv), shuffle=True, random_state=random_seed)
    elif isinstance(cv, bool | float | str):
        raise InputTypeError(
            f"cv must be an int, a CV splitter or an iterable of (train, test); got {cv!r}."
        )
    if X is None:
        X = np.empty((n_samples, 0))
    try:
        folds = list(check_cv(cv).split(X, y))
    except (TypeError, ValueError) as err:
        raise InputError(f"cv could not be used to split the data: {err}") from None
    if len(folds) < 2:
        raise InputError(
            f"cv must give at least 2 folds; got {len(folds)} (an exhausted generator? "
            "pass a list of (train, test) pairs or a splitter to refit)."
        )
    for train, test in folds:
        for part in (train, test):
            part = np.asarray(part)
            if part.size == 0 or part.min() < 0 or part.max() >= n_samples:
                raise InputError("cv gave an empty fold or indices outside the data.")
    return [(np.asarray(tr), np.asarray(te)) for tr, te in folds]


def empty_training_folds(counted: np.ndarray, folds: Sequence) -> np.ndarray:
    """(n_folds, G) bool: the training folds in which a count response (column) is all 0.

    ``counted`` (n, G) are the counts times the sample weights. Such a fold's fit has no
    finite optimum (its intercept runs to −∞).
    """
    return np.array([~np.any(counted[train] != 0, axis=0) for train, _ in folds])


#: ``lambda_min_ratio="auto"``: glmnet's default end of the path, 1e-4·λ_max when there are
#: at least as many samples as predictors (the path can approach the unpenalised fit), and
#: 1e-2·λ_max when there are fewer (where the unpenalised fit interpolates the data).
AUTO_MIN_RATIO_LONG, AUTO_MIN_RATIO_WIDE = 1e-4, 1e-2
#: A choice of the path's smallest λ is not a boundary choice when the mean held-out score
#: improved over the path's last step by less than this fraction of what the path improved
#: it in all (glmnet's ``fdev``, the relative change of the deviance explained at which it
#: ends its path): the curve has flattened, and smaller λ cannot change it materially (near
#: λ = 0 the held-out deviance is about linear in λ, so all that remains is about twice the
#: last step's change).
SATURATION = 1e-5


#: A data-driven path of ``lambda_min_ratio="auto"`` whose chosen λ is its end, with the
#: held-out score still improving there (:attr:`CVResult.at_boundary`), is extended once by
#: this many decades at the same spacing (to 1e-6·λ_max when n ≥ p), and cross-validated
#: again: on large tissues (n ≫ p) the optimum often lies just below 1e-4·λ_max.
EXTENSION_DECADES = 2.0


def extended_grid(lams: np.ndarray) -> np.ndarray:
    """A decreasing geometric grid (…, K) continued ``EXTENSION_DECADES`` further down.

    The spacing is the grid's own (its last step); every row gets the same number of
    values, so that rows that share a spacing stay one array.
    """
    lams = np.asarray(lams, dtype=float)
    if lams.shape[-1] < 2:
        return lams
    step = lams[..., -2:-1] / lams[..., -1:]  # > 1
    n_more = int(np.ceil(EXTENSION_DECADES / np.log10(np.max(step))))
    more = lams[..., -1:] / step ** np.arange(1, n_more + 1)
    return np.concatenate([lams, more], axis=-1)


def path_min_ratio(min_ratio: float | str, n_samples: int, n_features: int) -> float:
    """The end of a data-driven path as a fraction of λ_max: ``min_ratio``, or "auto"'s.

    "auto" is glmnet's rule: 1e-4 when ``n_samples`` ≥ ``n_features``, 1e-2 otherwise.
    """
    if isinstance(min_ratio, str):
        return AUTO_MIN_RATIO_WIDE if n_samples < n_features else AUTO_MIN_RATIO_LONG
    return float(min_ratio)


def lambda_grid(reg_lambda, n_lambdas: int, min_ratio: float, lmax=None) -> np.ndarray:
    """The λ values of a path, decreasing along the last axis.

    ``reg_lambda`` given (a list): those values, sorted decreasingly. None: ``n_lambdas``
    values log-spaced from ``lmax`` (a float, or one λ_max per response: then (G, K))
    down to ``min_ratio``·``lmax`` (a number: see :func:`path_min_ratio` for "auto").
    """
    if reg_lambda is None:
        return geometric_path(lmax, n_lambdas, min_ratio)
    return np.sort(np.atleast_1d(np.asarray(reg_lambda, dtype=float)))[::-1]


# -- the routes -----------------------------------------------------------------------------------
def as_columns(path: PathResult) -> PathResult:
    """A one-response path (fields (K,) and (K, p)) in the (K, G = 1) layout."""
    theta = None if path.theta is None else path.theta[:, None]
    return PathResult(
        path.reg_lambdas, path.intercepts[:, None], path.coefs[:, None, :],
        path.n_iter[:, None], path.kkt[:, None], path.converged[:, None], theta,
    )  # fmt: skip


def _single(path: PathResult) -> PathResult:
    """A (K, 1)-layout path as a one-response path: the inverse of :func:`as_columns`."""
    theta = None if path.theta is None else path.theta[:, 0]
    return PathResult(
        path.reg_lambdas, path.intercepts[:, 0], path.coefs[:, 0], path.n_iter[:, 0],
        path.kkt[:, 0], path.converged[:, 0], theta,
    )  # fmt: skip


def _column_of(path: PathResult, j: int) -> PathResult:
    """Column ``j`` of a batched path, kept in the (K, 1) layout."""
    cols = slice(j, j + 1)
    theta = None if path.theta is None else path.theta[:, cols]
    return PathResult(
        path.reg_lambdas[:, j], path.intercepts[:, cols], path.coefs[:, cols],
        path.n_iter[:, cols], path.kkt[:, cols], path.converged[:, cols], theta,
    )  # fmt: skip


def _fold_path(problem: Problem, lams, train, solver, options, screening, theta_method):
    """The path on the training samples ``train`` of a one-response ``problem``."""
    rows = {
        "sample_weight": take_rows(problem.sample_weight, train),
        "offset": take_rows(problem.offset, train),
    }
    sub = replace(problem, X=problem.X[train], y=problem.y[train], **rows, cache={})
    return fit_path(sub, lams, solver, options, screening=screening, theta_method=theta_method)


def separate_fold_paths(
    problem: Problem,
    lams: np.ndarray,
    folds: Sequence,
    solver: str,
    options: dict,
    *,
    screening: bool,
    theta_method: str | None,
    n_jobs: int | None,
) -> tuple[list[PathResult], PathResult]:
    """Each fold's path solved on its own (``n_jobs`` folds in parallel), and the full data's.

    Returns the folds' paths in the (K, 1) layout and the full-data path (K,), solved with
    one tolerance scale for the whole path.
    """
    jobs = (
        delayed(_fold_path)(problem, lams, train, solver, options, screening, theta_method)
        for train, _ in folds
    )
    paths = Parallel(n_jobs=n_jobs)(jobs)
    full_options = {**options, "scale": tolerance_scale(problem)}
    full = fit_path(
        problem, lams, solver, full_options, screening=screening, theta_method=theta_method
    )
    return [as_columns(path) for path in paths], full


def batched_fold_paths(
    problem: Problem,
    lams: np.ndarray,
    folds: Sequence,
    *,
    max_iter: int,
    tol: float,
    theta_method: str | None,
    options: NewtonOptions | None = None,
) -> tuple[list[PathResult], PathResult]:
    """Every fold's path and the full-data path of a one-response problem, in one batched solve.

    Column j < F of the batch is fold j's training set (sample weight = how often a sample
    is in it, so repeated indices count twice, times its sample weight); column F is all
    data. Returns the folds' paths in the (K, 1) layout and the full-data path (K,).
    """
    X, k = problem.X, len(folds)
    weights = np.zeros((X.shape[0], k + 1))
    for j, (train, _) in enumerate(folds):
        np.add.at(weights[:, j], train, 1.0)
    weights[:, k] = 1.0
    if problem.sample_weight is not None:
        weights *= problem.sample_weight[:, None]
    pen = problem.penalty
    solver = BatchedNewtonCD(
        problem.family, SharedDesign(X, problem.fit_intercept, options), pen.alpha, pen.Tau,
        max_iter=max_iter, tol=tol, penalty_factor=pen.penalty_factor, options=options,
    )  # fmt: skip
    Y = np.repeat(problem.y[:, None], k + 1, axis=1)
    with single_blas_thread():
        path = batched_path(
            solver, Y, np.tile(lams, (k + 1, 1)), weights, offset=problem.offset,
            theta_method=theta_method,
        )  # fmt: skip
    return [_column_of(path, j) for j in range(k)], _single(_column_of(path, k))


def gene_fold_paths(
    solvers: Iterable[BatchedNewtonCD],
    folds: Sequence,
    Y: np.ndarray,
    lams: np.ndarray,
    weights: np.ndarray | None,
    offset: np.ndarray | None,
    theta: np.ndarray | None,
    theta_method: str | None,
) -> Iterator[PathResult]:
    """Each fold's paths of the genes in the columns of Y (n, G), solved together.

    ``solvers`` yields each fold's solver on its training design (made as the fold is
    reached, so that one fold's workspace is held at a time); ``lams`` (G, K); ``weights``
    (n,) and ``offset`` ((n,) or (n, G)) are split with the samples; ``theta`` (G,) starts
    each gene's θ at the first λ when ``theta_method`` estimates it.
    """
    for solver, (train, _) in zip(solvers, folds, strict=True):
        yield batched_path(
            solver, Y[train], lams, as_column(take_rows(weights, train)),
            offset=take_rows(offset, train), theta=theta, theta_method=theta_method,
        )  # fmt: skip


# -- scores and the choice ----------------------------------------------------------------------
@dataclass(frozen=True)
class Scoring:
    """How held-out samples score a path: the family, the metric and the clipping."""

    family: Family
    metric: str  # "deviance" or "pseudo_r2"
    clip_coeffs: float
    fit_intercept: bool

    def null_means(self, Y_train, w_train, offset_train, offset_test) -> np.ndarray:
        """The training null model's means for pseudo-R²: (G,), or (n_test, G) with an offset."""
        w = as_column(w_train)
        if offset_train is None:
            return Y_train.mean(axis=0) if w is None else (w * Y_train).sum(axis=0) / w.sum()
        icpt = null_intercepts(self.family, Y_train, self.fit_intercept, w, offset_train)
        o_test = offset_test[:, None] if offset_test.ndim == 1 else offset_test
        return self.family.mean(icpt[None, :] + o_test)

    def scores(self, X, Y, intercepts, coefs, w, offset, y_null, theta=None) -> np.ndarray:
        """Score of every response (column of Y) at every λ of a path on (X, Y): (G, K).

        ``intercepts`` (K, G), ``coefs`` (K, G, p) and ``theta`` (K, G) as in
        :class:`~stglm._path.PathResult`; ``w`` and ``offset`` are the rows' (or None).
        """
        return score_path(
            self.family,
            X,
            Y,
            intercepts,
            clip(coefs, self.clip_coeffs),
            fit_intercept=self.fit_intercept,
            metric=self.metric,
            y_null=y_null,
            sample_weight=w,
            offset=offset,
            theta=theta,
        )


def choose_lambda(scores: np.ndarray, se: np.ndarray, metric: str, select: str) -> np.ndarray:
    """Index of the chosen λ for each row of mean CV ``scores`` (G, K), paths decreasing.

    "best": the lowest mean deviance or highest mean pseudo-R²; "one_se": the largest λ
    whose mean score is within one standard error ``se`` of the best. A NaN score is never
    chosen; a row that is NaN at every λ gets the largest λ (index 0).
    """
    loss = scores if metric == "deviance" else -scores
    loss = np.where(np.isnan(loss), np.inf, loss)  # np.argmin would prefer a NaN
    best = np.argmin(loss, axis=1)
    if select == "best":
        return best
    rows = np.arange(loss.shape[0])
    within = np.isfinite(loss) & (loss <= (loss[rows, best] + se[rows, best])[:, None])
    return np.argmax(within, axis=1)  # the first True: the largest λ (0 when none)


@dataclass
class CVResult:
    """Held-out scores of G responses along K λ's, and the λ chosen for each.

    The fold means are the refit's start: the folds' mean solution at each λ (θ's
    geometric mean), (K, G) and (K, G, p).
    """

    cv_scores: np.ndarray  # (n_folds, G, K): each fold's held-out score
    scores: np.ndarray  # (G, K): their mean
    se: np.ndarray  # (G, K): standard error of the mean, std(ddof=1)/√n_folds
    best: np.ndarray  # (G,): index of the chosen λ
    n_iter: np.ndarray  # (G,): solver iterations over all folds' paths
    mean_intercepts: np.ndarray
    mean_coefs: np.ndarray
    mean_log_theta: np.ndarray | None

    def chosen(self, values: np.ndarray) -> np.ndarray:
        """Each response's entry of ``values`` (G, K) at its chosen λ: (G,)."""
        return values[np.arange(len(self.best)), self.best]

    #: "deviance" (lower is better) or "pseudo_r2"; see :attr:`saturated`.
    metric: str = "deviance"

    @property
    def at_smallest(self) -> np.ndarray:
        """(G,) bool: the chosen λ is the smallest of a path of several."""
        n_lambdas = self.scores.shape[1]
        return (self.best == n_lambdas - 1) & (n_lambdas > 1)

    @property
    def saturated(self) -> np.ndarray:
        """(G,) bool: the mean score's last step changed it by ≤ ``SATURATION`` of its range.

        The range is what the path changed it by, from its first λ to its last (glmnet's
        relative change of the deviance explained).
        """
        if self.scores.shape[1] < 2:
            return np.zeros(self.scores.shape[0], dtype=bool)
        sign = 1.0 if self.metric == "deviance" else -1.0
        with np.errstate(invalid="ignore"):
            last_step = sign * (self.scores[:, -2] - self.scores[:, -1])
            explained = sign * (self.scores[:, 0] - self.scores[:, -1])
            return np.isfinite(last_step) & (last_step <= SATURATION * np.abs(explained))

    @property
    def at_boundary(self) -> np.ndarray:
        """(G,) bool: the choice is the smallest λ and the score was still improving there.

        A choice of the smallest λ on a :attr:`saturated` curve is not one: the path
        reached the flat end that glmnet's would stop at.
        """
        return self.at_smallest & ~self.saturated

    @property
    def nan_scores(self) -> np.ndarray:
        """(G,) bool: the mean CV score is NaN at some λ (such a λ is never chosen)."""
        return np.isnan(self.scores).any(axis=1)

    def refit_start(self, fit_intercept: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(B (G, m), θ (G,) or None): the folds' mean solution at each chosen λ."""
        rows = np.arange(len(self.best))
        start = self.mean_coefs[self.best, rows]
        if fit_intercept:
            start = np.column_stack([self.mean_intercepts[self.best, rows], start])
        if self.mean_log_theta is None:
            return start, None
        return start, np.exp(self.mean_log_theta[self.best, rows])


def cross_validate(
    paths: Iterable[PathResult],
    folds: Sequence,
    test_X: Iterable,
    Y: np.ndarray,
    weights: np.ndarray | None,
    offset: np.ndarray | None,
    scoring: Scoring,
    select: str,
) -> CVResult:
    """Score each fold's ``paths`` (any route's, (K, G) layout) on its held-out samples.

    ``folds`` are the (train, test) pairs, ``test_X`` each fold's held-out predictors;
    ``Y`` (n, G) the responses, ``weights`` (n,) and ``offset`` ((n,) or (n, G)) the
    samples' (None: not given). Returns the scores, their mean and standard error over
    folds, and the λ chosen by ``select`` (:func:`choose_lambda`).
    """
    n_folds = len(folds)
    cv_scores, mean = [], None
    for (train, test), X_test, path in zip(folds, test_X, paths, strict=True):
        o_test = take_rows(offset, test)
        y_null = 0.0
        if scoring.metric != "deviance":
            y_null = scoring.null_means(
                Y[train], take_rows(weights, train), take_rows(offset, train), o_test
            )
        w_test = take_rows(weights, test)
        # A held-out mean outside the family's range scores NaN (or ±inf): never chosen, and
        # said once by warn_choice rather than by numpy at every fold.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            scores = scoring.scores(
                X_test, Y[test], path.intercepts, path.coefs, w_test, o_test, y_null, path.theta
            )
        cv_scores.append(scores)
        if mean is None:
            K, G, p = path.coefs.shape
            has_theta = path.theta is not None
            mean = [np.zeros((K, G)), np.zeros((K, G, p)), np.zeros((K, G)) if has_theta else None]
            n_iter = np.zeros(G, dtype=int)
        mean[0] += path.intercepts / n_folds
        mean[1] += path.coefs / n_folds
        if path.theta is not None:
            mean[2] += np.log(path.theta) / n_folds
        n_iter += path.n_iter.sum(axis=0)
    cv_scores = np.array(cv_scores)  # (n_folds, G, K)
    scores = cv_scores.mean(axis=0)
    se = cv_scores.std(axis=0, ddof=1) / np.sqrt(n_folds)
    best = choose_lambda(scores, se, scoring.metric, select)
    return CVResult(cv_scores, scores, se, best, n_iter, *mean, metric=scoring.metric)


def warn_choice(
    at_boundary: np.ndarray,
    nan_scores: np.ndarray,
    *,
    given_lambdas: bool,
    lambda_min_ratio: float,
    names: Sequence[str] | None = None,
    stacklevel: int = 3,
) -> None:
    """Warn when a choice of λ is doubtful: on the path's boundary, or beside NaN scores.

    ``at_boundary`` and ``nan_scores`` (G,) are :class:`CVResult`'s flags. One warning
    per kind: for one response (``names`` None: GLMCV), or counting the responses (genes
    named by ``names``) it concerns. The boundary warning is a
    :class:`~stglm._errors.BoundaryWarning`.
    """
    if given_lambdas:
        where, remedy = "the smallest reg_lambda given", "add smaller reg_lambda values"
    else:
        where = f"lambda_min_ratio={lambda_min_ratio:g} times lambda_max"
        remedy = "lower lambda_min_ratio"
    at_boundary = np.asarray(at_boundary, dtype=bool)
    if at_boundary.any():
        subject = "cross-validation" if names is None else _count(at_boundary, names)
        path = "the path" if names is None else "their paths"
        warnings.warn(
            f"{subject} chose the smallest λ of {path} ({where}) while the held-out score was "
            f"still improving there: it may keep improving at smaller λ. To extend the path, "
            f"{remedy}.",
            BoundaryWarning,
            stacklevel=stacklevel,
        )
    nan_scores = np.asarray(nan_scores, dtype=bool)
    if nan_scores.any():
        subject = "the fit" if names is None else _count(nan_scores, names)
        warnings.warn(
            f"the mean CV score is NaN at some λ for {subject} (a held-out mean outside the "
            "family's range, or an overflow): such λ are never chosen (where every λ's is "
            "NaN, the largest λ is taken).",
            UserWarning,
            stacklevel=stacklevel,
        )


def _count(flags: np.ndarray, names: Sequence[str]) -> str:
    """The genes ``flags`` marks, as "k of G genes (e.g. A, B, C, …)"."""
    picked = [str(name) for name in np.asarray(names, dtype=object)[flags][:5]]
    more = ", …" if flags.sum() > len(picked) else ""
    return f"{int(flags.sum())} of {len(flags)} genes (e.g. {', '.join(picked)}{more})"
