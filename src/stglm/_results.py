"""The results schema of :func:`stglm.fit_genes`: every key it writes, and how they are read.

For a prefix ``key`` (fit_genes' ``key_added``):

- ``adata.varm[coef_key(key)]`` — DataFrame (n_vars × n_predictors) of coefficients;
- ``adata.varm[stat_key(key, name)]`` for each name of ``INFERENCE_FIELDS`` (with
  ``inference=True``) — standard errors, Wald p-values and BH q-values like the coefficients;
- ``adata.var[var_key(key, field)]`` for each field of ``VAR_FIELDS``;
- ``adata.uns[key]`` — ``{"params": ..., "predictors": [...], "genes": [...], "model": {...},
  "model_record": {...}}`` (the CLI adds ``"cli"``); ``"model_record"`` is what a later fit
  under the same key must match to merge its genes into these results
  (:func:`merge_into`), and ``"plan"`` (``PLAN``) the latest fit's memory plan: its budget,
  genes per chunk and the pair products' precision (not compared when merging: they
  change how the optimum is reached, not the model);
- ``adata.layers[mu_layer(key)]`` — fitted means, with ``store_fitted=True``;
- ``adata.obs[offset_key(key)]`` — the offset (log size factors and/or a given offset) when
  one (n_obs,) offset was used, so the fitted means can be recomputed;
- ``adata.obsm[design_key(key)]`` — the design that was fitted (``fit_genes`` and the CLI).

Writers and readers (fit_genes, :mod:`stglm.get`, the plots, the CLI) build the key names
with these functions only, so the schema is spelled once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ._anndata import check_adata, layer_of_record
from ._errors import InputError, InputTypeError

__all__ = [
    "ALL_ZEROS",
    "FITTED_STATUSES",
    "FOLD_WITHOUT_COUNTS",
    "NOT_CONVERGED",
    "NOT_REQUESTED",
    "OK",
    "RANKED_STATUSES",
    "SEPARATED",
    "VAR_FIELDS",
    "check_gene",
    "check_key",
    "coef_frame",
    "coef_key",
    "design_key",
    "fitted_layer",
    "INFERENCE_FIELDS",
    "MODEL_RECORD",
    "TEST_FIELDS",
    "digest",
    "drop_results",
    "merge_into",
    "offset_key",
    "stat_key",
    "store_test_results",
    "test_key",
    "mu_layer",
    "results_info",
    "statuses",
    "store_results",
    "var_key",
]

#: Gene statuses (``var[var_key(key, "status")]``; see :func:`stglm.fit_genes`).
OK, NOT_CONVERGED, ALL_ZEROS = "ok", "not converged", "all zeros"
FOLD_WITHOUT_COUNTS, NOT_REQUESTED = "fold without counts", "not requested"
#: A count gene whose maximum-likelihood estimate does not exist: its zeros on a set of
#: samples (e.g. a whole tissue section) are fitted ever better along a direction of the
#: unpenalised coefficients (:mod:`stglm._separation`); the coefficients along it are where
#: the tolerance stopped, the rest (and θ) those of the model without those samples.
SEPARATED = "separated"
#: Statuses of genes that have coefficients.
FITTED_STATUSES = (OK, NOT_CONVERGED, FOLD_WITHOUT_COUNTS, SEPARATED)
#: Those whose coefficients rank among other genes' (a degenerate CV can pick a tiny λ).
RANKED_STATUSES = (OK, NOT_CONVERGED)
#: Per-gene columns of ``adata.var``, in the order they are written.
VAR_FIELDS = (
    "intercept", "lambda", "score", "converged", "kkt", "n_iter", "theta", "theta_status",
    "status",
)  # fmt: skip
#: Per-gene × predictor tables of ``inference=True`` in ``adata.varm``.
INFERENCE_FIELDS = ("se", "pvalue", "qvalue")
#: Value of a gene that was not fitted, per field (the coefficients are NaN).
_FILL = {
    "intercept": np.nan,
    "lambda": np.nan,
    "score": np.nan,
    "converged": False,
    "kkt": np.nan,
    "n_iter": 0,
    "theta": np.nan,
    "theta_status": "",
    "status": NOT_REQUESTED,
}
#: Fields stored as categories.
_CATEGORICAL = ("status", "theta_status")
#: ``uns[key]``'s entry of what a fit modelled (str → str), compared by :func:`merge_into`.
MODEL_RECORD = "model_record"
#: Key of ``uns[key]`` with the latest fit's memory plan (:func:`store_results`' ``plan``).
PLAN = "plan"


def check_key(key: Any, name: str = "key_added") -> None:
    """A results prefix that every key built from it can be written to h5ad and zarr and read back.

    HDF5 and zarr read "/" as a group separator: anndata writes ``uns["a/b"]`` but cannot read
    the file back.
    """
    if not isinstance(key, str) or not key.strip():
        raise InputError(f"{name} must be a non-empty string; got {key!r}.")
    if "/" in key:
        raise InputError(
            f"{name} must not contain '/' (h5ad and zarr read it as a group separator, so the "
            f"results could not be read back); got {key!r}."
        )


def coef_key(key: str) -> str:
    """The ``adata.varm`` key of the coefficients."""
    return f"{key}_coef"


def var_key(key: str, field: str) -> str:
    """The ``adata.var`` column of a per-gene ``field`` (one of ``VAR_FIELDS``)."""
    if field not in VAR_FIELDS:
        raise KeyError(f"unknown results field {field!r}; fields are {VAR_FIELDS}.")
    return f"{key}_{field}"


def stat_key(key: str, name: str) -> str:
    """The ``adata.varm`` key of an inference table (one of ``INFERENCE_FIELDS``)."""
    if name not in INFERENCE_FIELDS:
        raise KeyError(f"unknown inference table {name!r}; tables are {INFERENCE_FIELDS}.")
    return f"{key}_{name}"


def offset_key(key: str) -> str:
    """The ``adata.obs`` column of the fit's offset (one per observation)."""
    return f"{key}_offset"


def mu_layer(key: str) -> str:
    """The ``adata.layers`` key of the stored fitted means."""
    return f"{key}_mu"


def design_key(key: str) -> str:
    """The ``adata.obsm`` key of the design a fit was given (``fit_genes`` and the CLI store it)."""
    return f"{key}_design"


# ---------------------------------------------------------------------------------------------
# a second fit under the same key: merge, or refuse
# ---------------------------------------------------------------------------------------------
def digest(values: Any) -> str:
    """A short fingerprint of an array's shape, dtype and values ("none" for None)."""
    if values is None:
        return "none"
    array = np.ascontiguousarray(np.asarray(values))
    if array.dtype == object:
        array = np.ascontiguousarray(array.astype(str))
    h = hashlib.sha256(f"{array.shape}{array.dtype.str}".encode())
    h.update(array.tobytes())
    return h.hexdigest()[:16]


def merge_into(
    adata: AnnData, key: str, record: Mapping[str, str], overwrite: bool, kind: str = "fit"
) -> bool:
    """Whether a fit described by ``record`` merges into the results already under ``key``.

    ``kind`` is "fit" (:func:`stglm.fit_genes`) or "test" (:func:`stglm.test_genes`: the
    same test — test, design, reduced model, family… — on other genes merges).

    No results under ``key`` (or ``overwrite=True``): False, the fit replaces them. Results
    of the same model — every entry of ``record`` equal to the one stored with them: the
    design, family, link, θ, λ rule, offset, weights, layer… — : True, the fit's genes are
    written into them and the earlier genes' results are kept. Otherwise an InputError
    naming ``overwrite``, raised before any work: a second fit never silently discards the
    first.
    """
    if not isinstance(overwrite, bool):
        raise InputTypeError(f"overwrite must be True or False; got {overwrite!r}.")
    present = coef_key(key) in adata.varm or key in adata.uns
    if overwrite or not present:
        return False
    info = adata.uns.get(key)
    earlier = info.get(MODEL_RECORD) if isinstance(info, Mapping) else None
    complete = _complete(adata, key, info, kind)
    remedy = (
        "Pass overwrite=True to replace them (the earlier genes' results are dropped), or "
        "another key_added."
    )
    if not isinstance(earlier, Mapping) or not complete:
        raise InputError(
            f"key_added={key!r} already holds results in adata (uns/varm) without the record "
            f"of their model that a fit needs to add genes to them. {remedy}"
        )
    differ = [
        k if max(len(str(earlier.get(k, ""))), len(str(record[k]))) > 40
        else f"{k}: {earlier.get(k, '—')} before, {record[k]} now"
        for k in record
        if str(earlier.get(k, "")) != str(record[k])
    ]  # fmt: skip
    differ += [k for k in earlier if k not in record]
    if differ:
        raise InputError(
            f"key_added={key!r} holds results of another model (it differs in "
            f"{'; '.join(differ)}): a fit adds its genes to earlier results only when it fits "
            f"the same model on the same design. {remedy}"
        )
    return True


def _complete(adata: AnnData, key: str, info: Any, kind: str) -> bool:
    """Whether every key of a ``kind`` ("fit" or "test") result under ``key`` is present."""
    if kind == "fit":
        return coef_key(key) in adata.varm and all(
            var_key(key, field) in adata.var for field in VAR_FIELDS
        )
    columns = info.get("columns", ()) if isinstance(info, Mapping) else ()  # as the test listed
    return (
        coef_key(key) not in adata.varm
        and {"pvalue", "qvalue", "status"} <= set(columns)
        and all(test_key(key, c) in adata.var for c in columns)
    )


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def annotations_in_memory(adata: AnnData) -> None:
    """Read ``adata.obs`` and ``adata.var`` into memory where they are lazy, before writing.

    anndata's ``experimental.read_lazy`` holds them as xarray-backed frames; results are
    written into, and read from, pandas DataFrames with the same contents.
    """
    for name in ("obs", "var"):
        frame = getattr(adata, name)
        if not isinstance(frame, pd.DataFrame):
            setattr(adata, name, frame.to_memory())


def store_results(
    adata: AnnData,
    key: str,
    names: pd.Index,
    predictors: Any,
    out: dict[str, np.ndarray],
    status: np.ndarray,
    fitted_mu: np.ndarray | None,
    params: dict[str, Any],
    layer: str | None,
    model: dict[str, str] | None = None,
    offset: np.ndarray | None = None,
    *,
    record: Mapping[str, str] | None = None,
    merge: bool = False,
    plan: Mapping[str, Any] | None = None,
    design: np.ndarray | None = None,
) -> None:
    """Write the documented result keys (only these) into ``adata``.

    Parameters
    ----------
    adata : AnnData
        Written into.
    key : str
        The prefix (``key_added``).
    names : Index
        The fitted genes, in fitting order.
    predictors : sequence of str
        The design's columns.
    out : dict
        ``"coef"`` (n_genes, n_predictors) and one vector per field of ``VAR_FIELDS`` but
        ``"status"``, in the order of ``names``.
    status : ndarray of str
        Each gene's status.
    fitted_mu : ndarray of shape (n_obs, n_genes), optional
        Fitted means, stored as a dense float32 layer when given.
    params : dict
        The fit's parameters (None values are left out; arrays become lists).
    layer : str, optional
        The layer that was fitted.
    model : dict, optional
        What was fitted (family, link, offset, θ, weights, the coefficients' scale).
    offset : ndarray of shape (n_obs,), optional
        The offset every gene shared (stored in ``obs``; a per-gene offset is not stored).
    record : dict of str, optional
        The fit's model record (:func:`merge_into`), stored in ``uns[key]``.
    merge : bool, default=False
        Keep the results of the genes already under ``key`` (:func:`merge_into` said the
        model is the same) and write these genes' over theirs. Otherwise every other gene is
        "not requested". With ``out["pvalue"]`` the q-values (BH per predictor over the
        fitted genes under ``key``, the earlier ones included) are computed here.
    plan : dict, optional
        The fit's memory plan (budget, genes per chunk, pair products), stored in
        ``uns[key][PLAN]``.
    design : ndarray of shape (n_obs, n_predictors), optional
        The design, aligned with ``adata.obs_names``, stored as a DataFrame of the
        ``predictors`` in ``obsm[design_key(key)]`` (so that fitted means and their plots
        need no ``design=``).
    """
    annotations_in_memory(adata)
    pos = adata.var_names.get_indexer(names)
    earlier = list(adata.uns[key]["genes"]) if merge else []
    if not merge:
        drop_results(adata, key)

    def table(name: str, values: np.ndarray, fill: Any, dtype: Any = float) -> np.ndarray:
        return _full_table(adata, key, name, values, pos, fill, dtype, merge)

    def frame(values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=adata.var_names, columns=list(predictors))

    adata.varm[coef_key(key)] = frame(table("coef", out["coef"], np.nan))
    values = {**out, "status": status}
    tables = _inference_tables(out, status, table)
    for name in INFERENCE_FIELDS:
        if name in tables:
            adata.varm[stat_key(key, name)] = frame(tables[name])
        elif stat_key(key, name) in adata.varm:  # an earlier fit's: it would be stale
            del adata.varm[stat_key(key, name)]
    if offset is not None and np.ndim(offset) == 1:
        adata.obs[offset_key(key)] = np.asarray(offset, dtype=float)
    elif offset_key(key) in adata.obs:
        del adata.obs[offset_key(key)]
    for field in VAR_FIELDS:
        given = values[field]
        dtype = object if field in _CATEGORICAL else np.asarray(given).dtype
        full = table(field, given, _FILL[field], dtype)
        adata.var[var_key(key, field)] = pd.Categorical(full) if field in _CATEGORICAL else full
    stored = {
        k: (v.tolist() if isinstance(v, np.ndarray) else v)
        for k, v in params.items()
        if v is not None
    }
    stored["layer"] = layer_of_record(layer)
    genes = list(dict.fromkeys([*earlier, *map(str, names)]))
    adata.uns[key] = {"params": stored, "predictors": list(predictors), "genes": genes}
    if model is not None:
        adata.uns[key]["model"] = dict(model)
    if record is not None:
        adata.uns[key][MODEL_RECORD] = dict(record)
    if plan is not None:
        adata.uns[key][PLAN] = dict(plan)
    if design is not None:
        adata.obsm[design_key(key)] = pd.DataFrame(
            design, index=adata.obs_names, columns=[str(c) for c in predictors]
        )
    _store_means(adata, key, fitted_mu, pos, merge)


def _inference_tables(out: dict, status: np.ndarray, table: Any) -> dict[str, np.ndarray]:
    """The fit's standard errors and p-values for all genes (``table``), and their q-values.

    The q-values are BH per predictor over every fitted gene under the key — the earlier
    fit's too when merging — so they are computed here, not by the fit.
    """
    fitted = [name for name in INFERENCE_FIELDS if name != "qvalue" and name in out]
    tables = {name: table(name, out[name], np.nan) for name in fitted}
    if "pvalue" in out:
        from ._inference import benjamini_hochberg

        full_status = table("status", status, NOT_REQUESTED, object).astype(str)
        testable = np.isin(full_status, FITTED_STATUSES)[:, None]
        tables["qvalue"] = benjamini_hochberg(np.where(testable, tables["pvalue"], np.nan), axis=0)
    return tables


def _full_table(adata, key, name, values, pos, fill, dtype, merge) -> np.ndarray:
    """A results field for all of ``var_names``, with ``values`` at the rows ``pos``.

    The other rows hold the earlier results (``merge``) or ``fill``.
    """
    if name == "coef":
        store, field = adata.varm, coef_key(key)
    elif name in INFERENCE_FIELDS:
        store, field = adata.varm, stat_key(key, name)
    else:
        store, field = adata.var, var_key(key, name)
    shape = (adata.n_vars, *np.shape(values)[1:])
    if merge and field in store:
        full = np.asarray(store[field], dtype=dtype).reshape(shape).copy()
    else:
        full = np.full(shape, fill, dtype=dtype)
    full[pos] = values
    return full


def _store_means(adata, key, fitted_mu, pos, merge) -> None:
    """The fitted-means layer: these genes' columns (into the earlier layer when merging).

    Without means, an earlier fit's layer is removed: it would be stale for these genes.
    """
    if fitted_mu is None:
        if mu_layer(key) in adata.layers:
            del adata.layers[mu_layer(key)]
        return
    if merge and mu_layer(key) in adata.layers:
        mu = np.array(adata.layers[mu_layer(key)], dtype=np.float32)
    else:
        mu = np.zeros((adata.n_obs, adata.n_vars), dtype=np.float32)
    mu[:, pos] = fitted_mu
    adata.layers[mu_layer(key)] = mu


def test_key(key: str, column: str) -> str:
    """The ``adata.var`` column of a :func:`stglm.test_genes` result column."""
    return f"{key}_{column}"


#: Every per-gene column a :func:`stglm.test_genes` result may have (``test_key``).
TEST_FIELDS = (
    "stat", "df", "pvalue", "qvalue", "theta_full", "theta_reduced", "theta_trended",
    "ql_dispersion", "status",
)  # fmt: skip


def drop_results(adata: AnnData, key: str) -> None:
    """Remove every key the schema builds from the prefix ``key`` (a fit's or a test's).

    Results replaced with ``overwrite=True`` leave nothing of the earlier ones behind — not
    a fit's coefficients beside a test's columns, nor the design the CLI stored.
    """
    for name in (coef_key(key), *(stat_key(key, n) for n in INFERENCE_FIELDS)):
        if name in adata.varm:
            del adata.varm[name]
    columns = {var_key(key, f) for f in VAR_FIELDS} | {test_key(key, c) for c in TEST_FIELDS}
    adata.var = adata.var.drop(columns=[c for c in adata.var.columns if c in columns])
    if offset_key(key) in adata.obs:
        del adata.obs[offset_key(key)]
    for store, name in ((adata.layers, mu_layer(key)), (adata.obsm, design_key(key))):
        if name in store:
            del store[name]
    adata.uns.pop(key, None)


def store_test_results(
    adata: AnnData,
    key: str,
    table: pd.DataFrame,
    info: dict,
    *,
    record: Mapping[str, str] | None = None,
    merge: bool = False,
) -> np.ndarray:
    """Write :func:`stglm.test_genes`' table into ``adata.var`` and what was tested into uns.

    Genes not tested get NaN (status "not requested"), or keep an earlier call's results
    with ``merge`` (:func:`merge_into` said the test is the same; these genes' results
    replace theirs). The q-values are computed here, Benjamini–Hochberg over every tested
    gene under ``key`` with a p-value (the earlier ones too when merging); the table's
    ``"qvalue"`` column is ignored. Returns the q-values of the table's genes.
    """
    from ._inference import benjamini_hochberg

    annotations_in_memory(adata)
    earlier = list(adata.uns[key]["genes"]) if merge else []
    if not merge:
        drop_results(adata, key)
    pos = adata.var_names.get_indexer(table.index)
    for column in table.columns:
        values = table[column].to_numpy()
        name = test_key(key, column)
        kept = merge and name in adata.var
        if column == "status":
            full = (
                adata.var[name].astype(str).to_numpy(dtype=object)
                if kept
                else np.full(adata.n_vars, NOT_REQUESTED, dtype=object)
            )
            full[pos] = values.astype(object)
            adata.var[name] = pd.Categorical(full)
        else:
            full = (
                adata.var[name].to_numpy(dtype=float, copy=True)
                if kept
                else np.full(adata.n_vars, np.nan)
            )
            full[pos] = values
            adata.var[name] = full
    q = benjamini_hochberg(adata.var[test_key(key, "pvalue")].to_numpy(dtype=float))
    adata.var[test_key(key, "qvalue")] = q
    genes = list(dict.fromkeys([*earlier, *map(str, table.index)]))
    adata.uns[key] = {**info, "columns": list(table.columns), "genes": genes}
    if record is not None:
        adata.uns[key][MODEL_RECORD] = dict(record)
    return q[pos]


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
def results_info(adata: Any, key: str) -> dict:
    """``adata.uns[key]`` after checking that fit_genes results are there.

    Raises
    ------
    TypeError
        If ``adata`` is not an AnnData.
    ValueError
        If there are no results under ``key``.
    """
    check_adata(adata)
    if coef_key(key) not in adata.varm or key not in adata.uns:
        raise InputError(
            f"no fit_genes results under key_added={key!r} "
            f"(adata.varm has {list(adata.varm.keys())})."
        )
    return adata.uns[key]


def statuses(adata: AnnData, key: str) -> pd.Series:
    """Each gene's status as strings, indexed by ``var_names``."""
    return adata.var[var_key(key, "status")].astype(str)


def fitted_layer(info: dict) -> str | None:
    """The layer a fit read (None for ``adata.X``), from ``results_info``'s answer."""
    layer = info["params"].get("layer", layer_of_record(None))
    return None if layer == layer_of_record(None) else layer


def coef_frame(adata: AnnData, key: str) -> pd.DataFrame:
    """Coefficients of the genes to compare (rows, in ``uns[key]['genes']`` order) × predictors.

    Genes with an unreliable cross-validation ("fold without counts") are left out: their
    λ, and so the size of their coefficients, does not compare with the others'; so are
    "separated" genes, whose diverging coefficients are wherever the tolerance stopped.
    """
    info = results_info(adata, key)
    predictors = [str(p) for p in info["predictors"]]
    coef = pd.DataFrame(
        np.asarray(adata.varm[coef_key(key)], dtype=float),
        index=adata.var_names,
        columns=predictors,
    )
    status = statuses(adata, key)
    ranked = [g for g in info["genes"] if status[g] in RANKED_STATUSES]
    return coef.loc[ranked]


def check_gene(adata: AnnData, gene: Any, key: str) -> int:
    """Position in ``var_names`` of a gene that has a fit under ``key``."""
    if not isinstance(gene, str):
        raise InputTypeError(f"gene must be a gene name (str); got {type(gene).__name__}.")
    if gene not in adata.var_names:
        raise InputError(f"gene {gene!r} is not in adata.var_names.")
    status = str(adata.var[var_key(key, "status")][gene])
    if status not in FITTED_STATUSES:
        raise InputError(f"gene {gene!r} has no fit under key_added={key!r} (status {status!r}).")
    return int(adata.var_names.get_loc(gene))
