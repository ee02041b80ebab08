"""Nested-design tests of every gene: likelihood-ratio and Wald tests with FDR.

For each gene, the full model (every column of ``design``) and the reduced model (the
columns named in ``reduced``) are fitted unpenalised in the batched solver, with the same
family, link, offset and weights; what the reduced model leaves out is tested:

- ``test="lrt"``: 2·(ℓ_full − ℓ_reduced) against χ² with as many df as columns left out
  (R's ``anova(reduced, full, test="Chisq")``; for the negative binomial θ is re-estimated
  under each model, as MASS's ``anova.negbin`` does). For gaussian and gamma the deviance
  difference is divided by the full model's Pearson dispersion, as R does.
- ``test="wald"``: one column left out; its coefficient over its standard error (z, or t on
  the residual df for gaussian and gamma; R's ``summary.glm``), no reduced fit.
- ``test="ql"`` (negative binomial): glmGamPoi's quasi-likelihood F test. θ is estimated
  per gene under the full model (Cox–Reid), its trend over the genes' means gives each gene
  a θ̃; both models are refitted at θ̃, and the deviance difference over df_test times the
  gene's QL dispersion, shrunk across genes by empirical Bayes (:mod:`stglm._quasi`), is
  F on (df_test, d0 + df_resid). Better calibrated than the LRT when θ is estimated from
  few samples.

p-values are adjusted by Benjamini–Hochberg over the genes that could be tested: not
those without counts, with θ at its bound, or whose zeros the tested predictors separate
(their ML estimate does not exist: :func:`stglm._separation.separated_by_tested`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import stats

from ._anndata import design_frame
from ._defaults import AUTO, front_end_model
from ._dispersion import THETA_MAX, THETA_MIN
from ._errors import InputError, InputTypeError
from ._inference import estimated_dispersion
from ._metrics import weighted_column_sum
from ._quasi import overdispersion_shrinkage, ql_f_test
from ._results import NOT_CONVERGED, OK, SEPARATED, merge_into, store_test_results
from ._separation import can_separate, separated_by_tested
from ._transcriptome import (
    GeneResponses,
    ThreadWorkspaces,
    _GeneFitter,
    check_run_options,
    gene_estimator,
    model_record,
    run_blocks,
    warn_statuses,
)

__all__ = ["TESTS", "THETA_AT_LOWER_BOUND", "test_genes"]

#: Status of a gene whose NB size ran to its lower bound (too few counts to test).
THETA_AT_LOWER_BOUND = "theta at lower bound"

#: The tests :func:`test_genes` runs.
TESTS = ("lrt", "wald", "ql")


def test_genes(
    adata: AnnData,
    genes: Any = None,
    *,
    design: Any,
    reduced: Any,
    distr: str = "neg-binomial",
    link: str | None = AUTO,
    theta: float | str | None = None,
    offset: Any = None,
    size_factors: Any = AUTO,
    sample_weight: Any = None,
    test: str = "lrt",
    layer: str | None = None,
    key_added: str = "stglm_test",
    fit_intercept: bool = True,
    max_iter: int = 1000,
    tol: float = 1e-8,
    chunk_size: int | None = None,
    n_jobs: int | None = None,
    progress: bool = True,
    copy: bool = False,
    overwrite: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, AnnData]:
    """Test, for every gene, the design's columns that ``reduced`` leaves out.

    Both models are fitted unpenalised by the batched solver (all genes' Hessians from one
    matrix product per Newton iteration). Defaults are what count analysts fit: a
    negative binomial with a log link, θ per gene by Cox–Reid, and size factors from the
    total counts.

    Parameters
    ----------
    adata : AnnData
        Counts (or other responses) in ``adata.X`` or ``adata.layers[layer]``.
    genes : str or list of str, optional
        Genes to test (default: all).
    design : DataFrame or array of shape (n_obs, n_predictors)
        The full model's predictors (an intercept is added with ``fit_intercept``); see
        :func:`stglm.fit_genes`.
    reduced : list of str
        The columns of ``design`` the reduced model keeps (may be empty: intercept only).
        The others are tested.
    distr, link, offset, sample_weight, layer, fit_intercept, max_iter, tol, chunk_size, \
n_jobs, progress
        As in :func:`stglm.fit_genes`.
    theta : float, {"ml", "cox-reid"} or None, default=None
        Negative-binomial size, fixed or estimated under each model. None is "ml" for the
        LRT and Wald tests (the LR statistic is then a likelihood ratio, as
        ``anova.negbin``'s; with Cox–Reid θ neither model maximises ℓ and 2Δℓ can be
        negative, reported as 0), "cox-reid" for the QL test (glmGamPoi's), unused for
        other families.
    size_factors : "auto", {"total", "poscounts"}, array, str or None, default="auto"
        As in :func:`stglm.fit_genes`: "auto" is "total" for poisson and neg-binomial
        with the log link given no ``offset``, None otherwise (a given offset is taken as
        the whole offset).
    test : {"lrt", "wald", "ql"}, default="lrt"
        The likelihood-ratio test, the Wald test (one column left out), or glmGamPoi's
        quasi-likelihood F test (negative binomial).
    key_added : str, default="stglm_test"
        Prefix of the ``adata.var`` columns written.
    copy : bool, default=False
        Write into a copy of ``adata``, returned with the table as ``(table, copy)``,
        leaving ``adata`` untouched.
    overwrite : bool, default=False
        What happens to results already under ``key_added`` (an earlier call's), as in
        :func:`stglm.fit_genes`: the same test — ``test``, design (columns and values),
        ``reduced``, family, link, θ, offset, weights, layer and solver options — on other
        genes adds its genes to them (genes tested again get the new results,
        ``uns[key_added]["genes"]`` lists both, q-values are recomputed over all of them);
        anything else raises an error naming what differs, before any work, unless
        ``overwrite=True``: then its results replace the earlier ones. The QL test never
        adds genes (its dispersion prior and θ trend are estimated from the genes tested
        together): test them in one call.

    Returns
    -------
    pandas.DataFrame, or (DataFrame, AnnData) with ``copy=True``
        Indexed by gene: ``stat`` (LR χ², z/t, or F), ``df``, ``pvalue``, ``qvalue``
        (Benjamini–Hochberg over the testable genes under ``key_added``, an earlier
        call's merged ones included), ``theta_full`` and
        ``theta_reduced`` (negative binomial), ``status`` ("ok"; "not converged"; "all
        zeros", "theta at lower bound" — θ ran to its lower bound under either model, a
        gene with a handful of counts — and "separated" — the tested predictors separate
        the gene's zeros, e.g. a tested section indicator of a section without its counts,
        so that its ML estimate does not exist and the statistic has no reference
        distribution —, all three NaN and left out of the adjustment). A gene whose
        zeros both models separate alike (a section without counts that both have an
        indicator for) is tested on the samples the limit models keep, and is "ok"
        (:func:`stglm._separation.separated_by_tested`). The
        same columns are written to ``adata.var[f"{key_added}_<column>"]`` and what was
        tested to ``adata.uns[key_added]``.
    """
    model = front_end_model(
        distr, link, theta, size_factors, offset_given=offset is not None, theta_method=None
    )  # the front ends' defaults (as fit_genes' and the CLI's), θ left to the test
    link, size_factors = model.link, model.size_factors
    theta = _check_test(test, distr, theta)
    params = dict(
        distr=distr, reg_lambda=0.0, theta=theta, clip_coeffs=0.0, fit_intercept=fit_intercept,
        max_iter=max_iter, tol=tol, link=link,
    )  # fmt: skip
    est = gene_estimator(params)
    check_run_options(chunk_size, n_jobs, key_added)
    frame = design_frame(design, adata)
    kept, tested = _split_design(frame, reduced)
    if test == "wald" and len(tested) != 1:
        raise InputError(
            f"test='wald' tests one column; reduced leaves out {len(tested)} ({tested}). "
            "Use test='lrt' for several."
        )
    family = est._family(1.0 if est._estimates_theta() else None)
    data = GeneResponses(adata, genes, layer, family, offset, size_factors, sample_weight, None)
    X_full = frame.to_numpy(dtype=np.float64)
    X_red = frame[kept].to_numpy(dtype=np.float64)
    test_params = {**params, "test": test, "reduced": repr(kept)}
    record = model_record(test_params, layer, frame, X_full, data, False)
    merge = merge_into(adata, key_added, record, overwrite, kind="test")
    if merge and test == "ql":
        raise InputError(
            f"key_added={key_added!r} holds results of this QL test on other genes: the QL "
            "test shrinks each gene's dispersion toward a prior estimated from the genes "
            "tested together, so its genes cannot be added to another call's. Test all the "
            "genes in one call, or pass overwrite=True to replace the earlier results."
        )
    # The tests use likelihoods (Wald: the full fit's own standard errors), not scores; the
    # two models of a block are fitted one after the other, in one thread's buffers.
    fitting = dict(with_score=False, with_loglik=test != "wald", workspaces=ThreadWorkspaces())
    full = _GeneFitter(
        est, family, X_full, None, None, data.weights, None, test == "wald", **fitting
    )
    red = _GeneFitter(est, family, X_red, None, None, data.weights, None, **fitting)
    if copy:
        adata = adata.copy()

    n_genes = len(data.names)
    out = {
        "stat": np.full(n_genes, np.nan),
        "df": np.full(n_genes, float(len(tested))),
        "pvalue": np.full(n_genes, np.nan),
        "theta_full": np.full(n_genes, np.nan),
        "theta_reduced": np.full(n_genes, np.nan),
        "converged": np.zeros(n_genes, dtype=bool),
        "separated_by_test": np.zeros(n_genes, dtype=bool),
    }
    status = np.full(n_genes, OK, dtype=object)
    if test == "ql":
        ql = _QuasiLikelihood(family, full, red, X_full, X_red, data, fit_intercept)
        ql.run(status, chunk_size, n_jobs, progress, out)
    else:
        column = list(frame.columns).index(tested[0]) if test == "wald" else None
        models = (family, full, red, X_full, X_red, data, fit_intercept)
        nested = _NestedTest(*models, column=column)
        blocks = run_blocks(data, nested.block, status, chunk_size, n_jobs, progress, "testing")
        for idx, result in blocks:
            for key, values in result.items():
                out[key][idx] = values
    status[(status == OK) & out["separated_by_test"]] = SEPARATED
    status[(status == OK) & ~out["converged"]] = NOT_CONVERGED
    # θ at its lower bound under either model: the NB likelihood has no interior maximum (a
    # handful of counts), and its statistic means nothing: untestable.
    degenerate = (out["theta_full"] <= THETA_MIN) | (out["theta_reduced"] <= THETA_MIN)
    status[(status == OK) & degenerate] = THETA_AT_LOWER_BOUND
    warn_statuses(status, key_added, max_iter)
    table = _results_table(out, status, data.names, family, test)
    info = {"test": test, "tested": list(tested), "reduced": list(kept), "model": data.model(theta)}
    if test == "ql":
        info["ql_df0"], info["df_resid"] = float(out["ql_df0"]), float(out["df_resid"])
    table["qvalue"] = store_test_results(
        adata, key_added, table, info, record=record, merge=merge
    )  # BH over every gene tested under the key (one place: _results)
    return (table, adata) if copy else table


test_genes.__test__ = False  # not a test for pytest, which collects names starting "test"


def _check_test(test: Any, distr: Any, theta: Any):
    """Check ``test`` against ``distr``; the θ to use (None: ML, or Cox–Reid for QL)."""
    if not isinstance(test, str) or test not in TESTS:
        raise InputError(f"test must be one of {', '.join(map(repr, TESTS))}; got {test!r}.")
    if test == "ql" and distr != "neg-binomial":
        raise InputError(f"test='ql' is the negative binomial's; got distr={distr!r}.")
    if theta is None:
        return ("cox-reid" if test == "ql" else "ml") if distr == "neg-binomial" else 1.0
    return theta


def _results_table(out: dict, status, names, family, test: str) -> pd.DataFrame:
    """The per-gene table: statistics of the testable genes, BH q-values over them."""
    testable = np.isin(status, (OK, NOT_CONVERGED)) & np.isfinite(out["pvalue"])
    columns = {
        "stat": np.where(testable, out["stat"], np.nan),
        "df": out["df"],
        "pvalue": np.where(testable, out["pvalue"], np.nan),
        "qvalue": np.nan,  # over every gene under the key: store_test_results
    }
    if family.name == "neg-binomial":
        columns["theta_full"] = out["theta_full"]
        if test == "ql":
            columns["theta_trended"] = out["theta_trended"]
            columns["ql_dispersion"] = out["ql_dispersion"]
        else:
            columns["theta_reduced"] = out["theta_reduced"]
    columns["status"] = pd.Categorical(status)
    return pd.DataFrame(columns, index=pd.Index(names, name="gene"))


class _NestedModels:
    """The full and reduced models of :func:`test_genes` and what their tests share."""

    def __init__(self, family, full, red, X_full, X_red, data, fit_intercept):
        self.family, self.full, self.red = family, full, red
        self.X_full, self.X_red, self.data = X_full, X_red, data
        self.fit_intercept = fit_intercept
        self.df_test = X_full.shape[1] - X_red.shape[1]

    def separated_by_test(self, Y, separated, column=None) -> np.ndarray:
        """Genes (columns of Y) whose zeros the tested predictors separate, (G,) bool.

        See :func:`stglm._separation.separated_by_tested`; looked for only where the full
        fit found separation (``separated``, its flags).
        """
        out = np.zeros(Y.shape[1], dtype=bool)
        genes = np.flatnonzero(separated)
        if genes.size and can_separate(self.family):
            out[genes] = separated_by_tested(
                self.X_full, self.X_red, Y[:, genes].T, self.data.weights,
                fit_intercept=self.fit_intercept, column=column,
            )  # fmt: skip
        return out

    def loglik(self, X, Y, offset, fit):
        """(ℓ per gene at ``fit``, Pearson dispersion or None); see :func:`_loglik`.

        With a fixed dispersion, the fitter's ℓ from the solver's −ℓ where it has one
        (no pass over the fitted means).
        """
        if self.family.fixed_dispersion and fit.get("loglik") is not None:
            return fit["loglik"], None
        return _loglik(self.family, X, Y, offset, fit, self.data.weights, self.fit_intercept)


class _NestedTest(_NestedModels):
    """The LRT or Wald test (``column``: the one tested) of one block of genes."""

    def __init__(self, *models, column):
        super().__init__(*models)
        self.column = column

    def block(self, Y, offset, idx) -> dict:
        fit_full = self.full.fit(Y, offset)
        result = {
            "theta_full": fit_full["theta"],
            "converged": fit_full["converged"],
            "separated_by_test": self.separated_by_test(Y, fit_full["separated"], self.column),
        }
        if self.column is not None:  # Wald: the full fit's own z (or t) and p
            j = self.column
            result["stat"] = fit_full["coef"][:, j] / fit_full["se"][:, j]
            result["pvalue"] = fit_full["pvalue"][:, j]
            return result
        fit_red = self.red.fit(Y, offset)
        ll_full, phi = self.loglik(self.X_full, Y, offset, fit_full)
        ll_red, _ = self.loglik(self.X_red, Y, offset, fit_red)
        # ML θ makes 2Δℓ ≥ 0 up to rounding; a fixed or Cox–Reid θ need not (reported as 0).
        stat = np.maximum(2.0 * (ll_full - ll_red), 0.0)
        if phi is not None:
            stat = stat / phi
        result.update(
            stat=stat,
            pvalue=stats.chi2.sf(stat, self.df_test),
            theta_reduced=fit_red["theta"],
            converged=fit_full["converged"] & fit_red["converged"],
        )
        return result


def _split_design(frame: pd.DataFrame, reduced: Any) -> tuple[list[str], list[str]]:
    """(columns kept, columns tested), checked."""
    if isinstance(reduced, str) or not hasattr(reduced, "__iter__"):
        raise InputTypeError(
            f"reduced must be a list of design column names; got {reduced!r} "
            "(use [] for the intercept-only model)."
        )
    kept = [str(c) for c in reduced]
    unknown = [c for c in kept if c not in frame.columns]
    if unknown:
        raise InputError(
            f"reduced names columns that are not in design: {unknown} "
            f"(design has {list(frame.columns)})."
        )
    if len(set(kept)) != len(kept):
        raise InputError(f"reduced has duplicated columns: {kept}.")
    tested = [c for c in frame.columns if c not in kept]
    if not tested:
        raise InputError("reduced keeps every column of design: there is nothing to test.")
    return kept, tested


def _linear_predictor(X, fit, offset, fit_intercept: bool) -> np.ndarray:
    """Each gene's z = β0 + offset + Xβ at its fit, (n, G)."""
    Z = X @ fit["coef"].T
    if fit_intercept:
        Z = Z + fit["intercept"][None, :]
    if offset is not None:
        Z = Z + (offset if offset.ndim == 2 else offset[:, None])
    return Z


def _loglik(family, X, Y, offset, fit, weights, fit_intercept):
    """Each gene's log-likelihood at its fit (and the Pearson dispersion, if estimated)."""
    Z = _linear_predictor(X, fit, offset, fit_intercept)
    fam = family if family.name != "neg-binomial" else family.with_theta(fit["theta"])
    Mu = fam.mean(Z)
    M = None if weights is None else weights[:, None]
    ll = weighted_column_sum(fam.loglik(Y, Mu), M)
    n_eff = Y.shape[0] if weights is None else np.count_nonzero(weights)
    phi, _ = estimated_dispersion(family, Y, Mu, M, n_eff, X.shape[1] + int(fit_intercept))
    return ll, phi


class _QuasiLikelihood(_NestedModels):
    """glmGamPoi's QL F test for every gene: two passes over the blocks of genes.

    Pass 1 fits the full model with θ estimated (and the fitted means); across genes, the
    trend of θ over the mean gives θ̃ and the QL dispersions are shrunk
    (:func:`stglm._quasi.overdispersion_shrinkage`, without the genes that cannot be
    tested). Pass 2 fits both models at θ̃; F = 2(ℓ_full − ℓ_reduced)/(df_test·φ̃).
    """

    def run(self, status, chunk_size, n_jobs, progress, out) -> None:
        data, n_genes = self.data, len(self.data.names)
        mean = np.full(n_genes, np.nan)

        def first(Y, offset, idx):
            fit = self.full.fit(Y, offset)
            Z = _linear_predictor(self.X_full, fit, offset, self.fit_intercept)
            return {
                **fit,
                "mean": self.family.with_theta(fit["theta"]).mean(Z).mean(axis=0),
                "separated_by_test": self.separated_by_test(Y, fit["separated"]),
            }

        for idx, fit in run_blocks(data, first, status, chunk_size, n_jobs, progress, "fitting"):
            out["theta_full"][idx], mean[idx] = fit["theta"], fit["mean"]
            out["converged"][idx] = fit["converged"]
            out["separated_by_test"][idx] = fit["separated_by_test"]
        testable = (status == OK) & out["converged"] & (out["theta_full"] > THETA_MIN)
        testable &= ~out["separated_by_test"]
        n_eff = data.n_obs if data.weights is None else int(np.count_nonzero(data.weights))
        df_resid = float(n_eff - self.X_full.shape[1] - int(self.fit_intercept))
        alpha = np.where(testable, 1.0 / out["theta_full"], np.nan)
        shrink = overdispersion_shrinkage(alpha, np.where(testable, mean, np.nan), df_resid)
        theta_tilde = np.minimum(1.0 / shrink.dispersion_trend, THETA_MAX)
        theta_tilde = np.where(np.isfinite(theta_tilde), theta_tilde, THETA_MAX)

        def second(Y, offset, idx):
            th = theta_tilde[idx]
            fit_full = self.full.fit(Y, offset, theta=th)
            fit_red = self.red.fit(Y, offset, theta=th)
            ll_full = self.loglik(self.X_full, Y, offset, fit_full)[0]
            ll_red = self.loglik(self.X_red, Y, offset, fit_red)[0]
            return {
                "deviance_change": np.maximum(2.0 * (ll_full - ll_red), 0.0),
                "converged": fit_full["converged"] & fit_red["converged"],
            }

        dev = np.full(n_genes, np.nan)
        for idx, fit in run_blocks(data, second, status, chunk_size, n_jobs, progress, "testing"):
            dev[idx] = fit["deviance_change"]
            out["converged"][idx] &= fit["converged"]
        F, p = ql_f_test(
            np.zeros(n_genes), dev, self.df_test, shrink.ql_disp_shrunken,
            shrink.ql_df0 + df_resid,
        )  # fmt: skip
        out["stat"], out["pvalue"] = np.where(testable, F, np.nan), np.where(testable, p, np.nan)
        out["theta_trended"] = theta_tilde
        out["ql_dispersion"] = shrink.ql_disp_shrunken
        out["ql_df0"], out["df_resid"] = shrink.ql_df0, df_resid
