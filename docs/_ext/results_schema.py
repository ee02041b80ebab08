"""Sphinx directive ``results-schema``: every key fit_genes / test_genes / ``stglm fit`` write.

The table is not typed by hand. At build time the extension runs :func:`stglm.fit_genes`
(negative binomial, Cox–Reid θ, size factors, ``inference=True``, ``store_fitted=True``),
:func:`stglm.test_genes` (LRT and QL) and the ``stglm fit`` command on a small slice of the
bundled Visium data, collects the keys each added to the AnnData, and checks them against the
key names that ``stglm._results`` builds (``coef_key``, ``var_key`` over ``VAR_FIELDS``,
``stat_key`` over ``INFERENCE_FIELDS``, ``offset_key``, ``mu_layer``, ``design_key``,
``test_key``). A key written but unknown to ``_results``, a key ``_results`` names but nothing
wrote, or a field without a description below fails the build, so the page follows the code.

Usage in MyST: ``{results-schema} fit_genes`` or ``{results-schema} test_genes``.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
import warnings
from functools import cache
from pathlib import Path

import numpy as np
from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.errors import ExtensionError

#: What each field means (keys: the field names of stglm._results and of test_genes' table).
VAR_MEANING = {
    "intercept": "the fitted intercept β0",
    "lambda": "the λ used (chosen by CV when `reg_lambda` is None or a list)",
    "score": "the model's score (`score_metric`: held-out CV score at the chosen λ, or in-sample)",
    "converged": "whether the solver met its KKT stopping rule within `max_iter`",
    "kkt": "the KKT residual of J at the solution (before `clip_coeffs`)",
    "n_iter": "solver iterations",
    "theta": "the negative binomial's θ, fixed or estimated per gene (NaN for other families)",
    "theta_status": '"fixed", "converged", "theta at upper bound", "theta at lower bound", '
    '"not converged"',
    "status": '"ok", "not converged", "all zeros", "fold without counts", "not requested"',
}
INFERENCE_MEANING = {
    "se": "Wald standard errors, gene × predictor (NaN for penalised predictors)",
    "pvalue": "Wald p-values, gene × predictor",
    "qvalue": "Benjamini–Hochberg q-values over the fitted genes, per predictor",
}
UNS_FIT_MEANING = {
    "params": "the fit's parameters (None values left out, arrays as lists, `layer`)",
    "predictors": "the design's columns, in order",
    "genes": "the fitted genes, in fitting order (a later call of the same model adds its own)",
    "model": "family, link, offset, theta, sample_weight and what one unit of a coefficient means",
    "model_record": "what a later call under the same key must match to add its genes (strings)",
    "plan": "the latest call's memory plan: `memory_budget` (bytes), `chunk_size`, and how the "
    "pair products were held (`pair_products`, `fold_pair_products` with CV: float64, float32 "
    "or float64 tiles) — decided from the data's sizes and the budget only",
    "cli": "the command line's options (written by `stglm fit` / `stglm test` only)",
}
TEST_MEANING = {
    "stat": "the statistic: LR χ², Wald z (t), or QL F",
    "df": "its degrees of freedom (columns tested)",
    "pvalue": "p-value",
    "qvalue": "Benjamini–Hochberg q-value over the testable genes",
    "theta_full": "θ under the full model (negative binomial)",
    "theta_reduced": "θ under the reduced model (negative binomial; LRT and Wald)",
    "theta_trended": "θ from the trend over the genes' means (QL test)",
    "ql_dispersion": "the shrunken quasi-likelihood dispersion (QL test)",
    "status": '"ok", "not converged", "all zeros", "theta at lower bound", "not requested"',
}

UNS_TEST_MEANING = {
    "test": '"lrt", "wald" or "ql"',
    "tested": "the design columns tested (those `reduced` leaves out)",
    "reduced": "the columns the reduced model keeps",
    "model": "family, link, offset, theta and sample_weight, as in fit_genes' `model`",
    "genes": "the tested genes, in order (a later call of the same test adds its own)",
    "columns": "the per-gene columns the test wrote into `var` (without the key's prefix)",
    "model_record": "what a later call under the same key must match to add its genes (not "
    "for QL: its prior is the call's genes')",
    "ql_df0": "the empirical-Bayes prior degrees of freedom of the QL dispersions (QL test)",
    "df_resid": "the residual degrees of freedom of the full model (QL test)",
}

KEY = "stglm"  # fit_genes' default key_added
TEST_KEY = "stglm_test"  # test_genes' default key_added
SLOTS = ("obs", "var", "obsm", "varm", "layers", "uns")


def _keys(adata) -> dict[str, set[str]]:
    return {
        slot: set(getattr(adata, slot).columns if slot in ("obs", "var") else getattr(adata, slot))
        for slot in SLOTS
    }


def _added(before, after) -> dict[str, set[str]]:
    old, new = _keys(before), _keys(after)
    return {slot: new[slot] - old[slot] for slot in SLOTS}


def _data():
    import stglm

    adata = stglm.datasets.visium_prostate()
    adata = adata[::6].copy()  # both sections, ~390 spots: seconds, not minutes
    genes = ["KRT5", "KRT15", "TGM4", "CNN1", "FOLH1", "AMACR"]
    design = stglm.spatial.build_design(adata, section_key="list_ID", lag=["KRT15"], coords=True)
    return adata, genes, design


def _check(written: dict[str, set[str]], expected: dict[str, set[str]], what: str) -> None:
    for slot in SLOTS:
        if written[slot] != expected.get(slot, set()):
            raise ExtensionError(
                f"results-schema: {what} wrote {sorted(written[slot])} into adata.{slot}, but "
                f"stglm._results names {sorted(expected.get(slot, set()))}: update "
                "_results.py or docs/_ext/results_schema.py."
            )


def _literal_split(text: str) -> list[nodes.Node]:
    """Text with `code` spans as docutils nodes."""
    parts = re.split(r"`([^`]+)`", text)
    return [nodes.literal(p, p) if i % 2 else nodes.Text(p) for i, p in enumerate(parts) if p]


@cache
def fit_rows() -> tuple[tuple[str, str, str, str], ...]:
    """(slot, key, shape, meaning) of every key fit_genes and ``stglm fit`` write."""
    import anndata as ad

    import stglm
    from stglm import _results as R
    from stglm.cli import main

    if set(VAR_MEANING) != set(R.VAR_FIELDS) or set(INFERENCE_MEANING) != set(R.INFERENCE_FIELDS):
        raise ExtensionError(
            "results-schema: the descriptions do not cover stglm._results' fields "
            f"{R.VAR_FIELDS} and {R.INFERENCE_FIELDS}."
        )
    adata, genes, design = _data()
    fitted = adata.copy()
    stglm.fit_genes(
        fitted, genes, design=design, distr="neg-binomial", link="log", theta="cox-reid",
        size_factors="total", reg_lambda=0, clip_coeffs=0, inference=True,
        store_fitted=True, progress=False,
    )  # fmt: skip
    expected = {
        "var": {R.var_key(KEY, f) for f in R.VAR_FIELDS},
        "varm": {R.coef_key(KEY)} | {R.stat_key(KEY, n) for n in R.INFERENCE_FIELDS},
        "obs": {R.offset_key(KEY)},
        "layers": {R.mu_layer(KEY)},
        "obsm": {R.design_key(KEY)},
        "uns": {KEY},
    }
    _check(_added(adata, fitted), expected, "fit_genes")
    uns_fields = set(fitted.uns[KEY])
    with tempfile.TemporaryDirectory() as tmp:  # the command line adds "cli"
        source, out = Path(tmp) / "in.h5ad", Path(tmp) / "out.h5ad"
        adata.write_h5ad(source)
        args = ["fit", str(source), "--section-key", "list_ID", "--lag", "KRT15", "--coords"]
        args += ["--genes", ",".join(genes), "--lambda", "0.01", "--out", str(out)]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main(args, prog_name="stglm", standalone_mode=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cli = ad.read_h5ad(out)
    cli_added = _added(adata, cli)
    if cli_added["obsm"] != {R.design_key(KEY)}:
        raise ExtensionError(f"results-schema: stglm fit wrote obsm {cli_added['obsm']}.")
    uns_fields |= set(cli.uns[KEY])
    if uns_fields != set(UNS_FIT_MEANING):
        raise ExtensionError(f"results-schema: uns['{KEY}'] has fields {sorted(uns_fields)}.")

    rows = [("varm", R.coef_key(KEY), "n_vars × n_predictors (DataFrame)", "coefficients β, "
             "gene × predictor (NaN for genes not fitted)")]  # fmt: skip
    rows += [
        ("varm", R.stat_key(KEY, n), "n_vars × n_predictors", INFERENCE_MEANING[n] + "; with "
         "`inference=True`") for n in R.INFERENCE_FIELDS
    ]  # fmt: skip
    rows += [
        ("var", R.var_key(KEY, f), str(fitted.var[R.var_key(KEY, f)].dtype), VAR_MEANING[f])
        for f in R.VAR_FIELDS
    ]
    rows += [
        ("obs", R.offset_key(KEY), "n_obs", "the offset (log size factors and/or the given "
         "offset) when one (n_obs,) offset was used"),
        ("layers", R.mu_layer(KEY), "n_obs × n_vars float32", "fitted means; with "
         "`store_fitted=True`"),
        ("obsm", R.design_key(KEY), "n_obs × n_predictors (DataFrame)", "the design that was "
         "fitted (the fitted means and their plots read it)"),
    ]  # fmt: skip
    rows += [("uns", f"{KEY}['{k}']", "", v) for k, v in UNS_FIT_MEANING.items()]
    return tuple(rows)


@cache
def test_rows() -> tuple[tuple[str, str, str, str], ...]:
    """(slot, key, shape, meaning) of every key test_genes writes (LRT and QL together)."""
    import stglm
    from stglm import _results as R

    adata, genes, design = _data()
    written: dict[str, set[str]] = {slot: set() for slot in SLOTS}
    columns: list[str] = []
    dtypes: dict[str, str] = {}
    uns: set[str] = set()
    for test in ("lrt", "ql"):
        tested = adata.copy()
        table = stglm.test_genes(
            tested, genes, design=design, reduced=["list_ID_NP", "x", "y"], test=test,
            progress=False,
        )  # fmt: skip
        for slot, keys in _added(adata, tested).items():
            written[slot] |= keys
        columns += [c for c in table.columns if c not in columns]
        dtypes.update({c: str(tested.var[R.test_key(TEST_KEY, c)].dtype) for c in table.columns})
        uns |= set(tested.uns[TEST_KEY])
    expected = {"var": {R.test_key(TEST_KEY, c) for c in columns}, "uns": {TEST_KEY}}
    _check(written, expected, "test_genes")
    if set(columns) != set(TEST_MEANING):
        raise ExtensionError(
            f"results-schema: test_genes' columns {columns} differ from the described "
            f"{sorted(TEST_MEANING)}."
        )
    if uns != set(UNS_TEST_MEANING):
        raise ExtensionError(f"results-schema: uns['{TEST_KEY}'] has fields {sorted(uns)}.")
    rows = [("var", R.test_key(TEST_KEY, c), dtypes[c], m) for c, m in TEST_MEANING.items()]
    rows += [("uns", f"{TEST_KEY}['{k}']", "", m) for k, m in UNS_TEST_MEANING.items()]
    return tuple(rows)


def _table(rows, header=("slot", "key (default key_added)", "shape / dtype", "what")):
    table = nodes.table(classes=["results-schema"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in (8, 28, 18, 46):
        group += nodes.colspec(colwidth=width)
    head, body = nodes.thead(), nodes.tbody()
    group += head
    group += body
    for target, values in ((head, [header]), (body, rows)):
        for values_row in values:
            row = nodes.row()
            for i, value in enumerate(values_row):
                entry = nodes.entry()
                para = nodes.paragraph()
                if target is body and i == 1:
                    para += nodes.literal(value, value)
                else:
                    para += _literal_split(value)
                entry += para
                row += entry
            target += row
    return table


class ResultsSchema(Directive):
    """``results-schema fit_genes|test_genes``: the generated table."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        """The table of the named function's keys."""
        which = self.arguments[0]
        makers = {"fit_genes": fit_rows, "test_genes": test_rows}
        if which not in makers:
            raise self.error(f"results-schema takes one of {sorted(makers)}; got {which!r}.")
        with np.errstate(all="ignore"):
            rows = makers[which]()
        return [_table(rows)]


def setup(app):
    """Register the directive."""
    app.add_directive("results-schema", ResultsSchema)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
