"""Careless input to the AnnData front ends: a clear error naming what is wrong, raised
before any work, the inputs unchanged — one table (issue 16)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import stglm
import stglm._gene_tests
import stglm._transcriptome
from stglm import spatial

QUIET = {"reg_lambda": 0.1, "progress": False}


@pytest.fixture(scope="module")
def base():
    """40 spots × 5 genes of Poisson counts, two sections, coordinates."""
    rng = np.random.default_rng(0)
    X = sp.csr_matrix(rng.poisson(3.0, size=(40, 5)).astype(float))
    obs = pd.DataFrame(
        {
            "section": pd.Categorical(np.repeat(["A", "B"], 20)),
            "area": rng.uniform(0.5, 2.0, 40),
        },
        index=[f"s{i}" for i in range(40)],
    )
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(5)]))
    adata.obsm["spatial"] = rng.uniform(0, 10, size=(40, 2))
    return adata


def design_of(adata, **extra):
    xy = np.asarray(adata.obsm["spatial"])
    frame = pd.DataFrame({"x": xy[:, 0] / 10, "y": xy[:, 1] / 10}, index=adata.obs_names)
    return frame.assign(**extra)


def with_X(adata, X):
    out = adata.copy()
    out.X = X
    return out


def case_categorical(adata):
    cat = pd.Categorical(np.where(np.arange(adata.n_obs) % 2, "a", "b"))
    return stglm.fit_genes, (adata,), {"design": design_of(adata, ct=cat)}


def case_text(adata):
    return stglm.fit_genes, (adata,), {"design": design_of(adata, ct=["a"] * adata.n_obs)}


def case_nan_counts(adata):
    X = adata.X.toarray()
    X[-1, -1] = np.nan  # in the last block: found before the first one is fitted
    return stglm.fit_genes, (with_X(adata, sp.csr_matrix(X)),), {"chunk_size": 1}


def case_negative_dense(adata):
    X = adata.X.toarray()
    X[3, 4] = -1
    return stglm.fit_genes, (with_X(adata, X),), {"chunk_size": 1}


def case_single_cell(adata):
    one = adata[:1].copy()
    return stglm.fit_genes, (one,), {"design": design_of(one)}


def case_empty(adata):
    none = adata[:0].copy()
    return stglm.fit_genes, (none,), {"design": design_of(none)}


def case_duplicated_genes(adata):
    dup = adata.copy()
    dup.var_names = ["g0", "g0", "g2", "g3", "g4"]
    return stglm.fit_genes, (dup,), {}


def case_key_with_slash(adata):
    return stglm.fit_genes, (adata,), {"key_added": "a/b"}


def case_test_genes_categorical(adata):
    cat = pd.Categorical(np.where(np.arange(adata.n_obs) % 2, "a", "b"))
    kwargs = {"design": design_of(adata, ct=cat), "reduced": ["x"], "progress": False}
    return stglm.test_genes, (adata, ["g0"]), kwargs


def case_section_continuous(adata):
    return spatial.build_design, (adata,), {"section_key": "area", "coords": True}


def case_section_per_cell(adata):
    labelled = adata.copy()
    labelled.obs["spot_id"] = np.arange(adata.n_obs)
    return spatial.build_design, (labelled,), {"section_key": "spot_id"}


def case_lag_duplicated_genes(adata):
    dup = adata.copy()
    dup.var_names = ["g0", "g0", "g2", "g3", "g4"]
    return spatial.spatial_lag, (dup, "g2"), {}


def case_fit_glm_duplicated_genes(adata):
    dup = adata.copy()
    dup.var_names = ["g0", "g0", "g2", "g3", "g4"]
    return stglm.fit_glm, (design_of(adata), dup, "g0"), {}


def case_huge_design(adata):
    return stglm.fit_genes, (adata,), {"design": design_of(adata, big=1e160)}


def case_eta_minus_inf(adata):
    return stglm.fit_genes, (adata,), {"eta": -np.inf}


def case_nan_offset(adata):
    return stglm.fit_genes, (adata,), {"offset": np.r_[np.nan, np.zeros(adata.n_obs - 1)]}


def case_negative_weights(adata):
    return stglm.fit_genes, (adata,), {"sample_weight": -np.ones(adata.n_obs)}


#: case -> (builder, exception type, phrases the message must contain)
CASES = {
    "categorical design column": (case_categorical, TypeError, ["'ct'", "categorical"]),
    "text design column": (case_text, TypeError, ["'ct'", "text"]),
    "NaN counts": (case_nan_counts, ValueError, ["adata.X", "NaN"]),
    "negative counts (dense)": (case_negative_dense, ValueError, ["adata.X", "non-negative"]),
    "single cell": (case_single_cell, ValueError, ["1 cells/spots", "at least 2"]),
    "empty AnnData": (case_empty, ValueError, ["0 cells/spots"]),
    "duplicated var_names": (case_duplicated_genes, ValueError, ["var_names", "'g0'"]),
    "key_added with '/'": (case_key_with_slash, ValueError, ["key_added", "'/'"]),
    "test_genes categorical design": (case_test_genes_categorical, TypeError, ["'ct'"]),
    "continuous section_key": (case_section_continuous, ValueError, ["section_key='area'"]),
    "a section per cell": (case_section_per_cell, ValueError, ["40 distinct values"]),
    # found by property-based fuzzing (tests/test_properties.py has the estimator's table)
    "spatial_lag duplicated var_names": (case_lag_duplicated_genes, ValueError, ["'g0'"]),
    "fit_glm duplicated var_names": (case_fit_glm_duplicated_genes, ValueError, ["'g0'"]),
    "finite but huge design": (case_huge_design, ValueError, ["design", "'big'", "too large"]),
    "eta=-inf": (case_eta_minus_inf, ValueError, ["eta must be in (-inf, inf]"]),
    "NaN offset": (case_nan_offset, ValueError, ["offset", "NaN"]),
    "negative sample_weight": (case_negative_weights, ValueError, ["sample_weight"]),
}


def snapshot(adata):
    X = adata.X.toarray() if sp.issparse(adata.X) else np.array(adata.X)
    return (X.tobytes(), adata.obs.copy(), list(adata.var_names), set(adata.uns), set(adata.varm))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_before_any_work(base, case, monkeypatch):
    build, error, phrases = CASES[case]
    function, args, kwargs = build(base)
    if function in (stglm.fit_genes, stglm.test_genes):
        kwargs = {"design": design_of(args[0]), **QUIET, **kwargs}
        if function is stglm.test_genes:
            kwargs.pop("reg_lambda")

    def no_work(*a, **k):
        raise AssertionError("the fit started before the input was checked")

    monkeypatch.setattr(stglm._transcriptome, "_GeneFitter", no_work)
    monkeypatch.setattr(stglm._transcriptome, "run_blocks", no_work)
    monkeypatch.setattr(stglm._gene_tests, "run_blocks", no_work)
    adata = next(a for a in args if isinstance(a, ad.AnnData))
    before = snapshot(adata)
    with pytest.raises(error) as info:
        function(*args, **kwargs)
    for phrase in phrases:
        assert phrase in str(info.value), (phrase, str(info.value))
    assert type(info.value).__module__ == "stglm._errors"
    after = snapshot(adata)
    assert before[0] == after[0] and before[2:] == after[2:]
    pd.testing.assert_frame_equal(before[1], after[1])


def test_non_integer_counts_warn_naming_the_matrix(base):
    logged = base.copy()
    logged.layers["log1p"] = np.log1p(base.X.toarray())
    with pytest.warns(UserWarning, match=r"adata.layers\['log1p'\] holds values that are not "):
        stglm.fit_genes(logged, design=design_of(base), layer="log1p", copy=True, **QUIET)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the raw counts: no warning
        stglm.fit_genes(base, design=design_of(base), copy=True, **QUIET)
    # a continuous family fits the same values silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stglm.fit_genes(
            logged, design=design_of(base), layer="log1p", distr="gaussian", copy=True, **QUIET
        )


def test_nullable_design_columns_equal_float_ones(base):
    """pandas' nullable Int64/Float64/boolean columns fit as the same numbers in float."""
    n = base.n_obs
    counts = np.arange(n) % 3
    plain = design_of(base, k=counts.astype(float), b=(counts == 1).astype(float))
    nullable = design_of(
        base, k=pd.array(counts, dtype="Int64"), b=pd.array(counts == 1, dtype="boolean")
    )
    nullable["x"] = nullable["x"].astype("Float64")
    a = stglm.fit_genes(base, design=plain, copy=True, **QUIET)
    b = stglm.fit_genes(base, design=nullable, copy=True, **QUIET)
    np.testing.assert_array_equal(
        np.asarray(a.varm["stglm_coef"]), np.asarray(b.varm["stglm_coef"])
    )
    missing = nullable.copy()
    missing.loc[missing.index[0], "k"] = pd.NA
    with pytest.raises(ValueError, match="design"):
        stglm.fit_genes(base, design=missing, copy=True, **QUIET)


def test_design_labels_are_not_changed_in_place(base):
    """A design whose index already equals obs_names keeps its own (integer) column labels."""
    design = design_of(base)
    design.columns = [0, 1]
    fitted = stglm.fit_genes(base, design=design, copy=True, **QUIET)
    assert list(design.columns) == [0, 1]
    assert list(fitted.uns["stglm"]["predictors"]) == ["0", "1"]


def test_rare_niche_categories_are_flagged():
    """A cell type of 5 cells among 200 is named in a warning; common types are not."""
    rng = np.random.default_rng(1)
    labels = np.array(["a"] * 100 + ["b"] * 95 + ["c"] * 5)
    adata = ad.AnnData(
        X=sp.csr_matrix(rng.poisson(2.0, size=(200, 3)).astype(float)),
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical(labels)}, index=[f"c{i}" for i in range(200)]
        ),
    )
    adata.obsm["spatial"] = rng.uniform(0, 10, size=(200, 2))
    with pytest.warns(UserWarning, match=r"cell_type: 1 category has fewer than 30 cells: c \(5\)"):
        shares = spatial.niche_composition(adata, "cell_type", n_neighbors=6)
    assert list(shares.columns) == ["niche_a", "niche_b", "niche_c"]
    adata.obs["cell_type"] = pd.Categorical(np.where(labels == "c", "b", labels))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spatial.niche_composition(adata, "cell_type", n_neighbors=6)


@pytest.mark.parametrize(
    ("n_jobs", "error"), [(0, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_glmcv_n_jobs_follows_joblib(n_jobs, error):
    """GLMCV takes joblib's n_jobs (None, or a non-zero integer) as fit_genes does."""
    X, y = np.random.default_rng(0).normal(size=(20, 2)), np.arange(20.0)
    with pytest.raises(error, match="n_jobs must be a non-zero integer"):
        stglm.GLMCV(distr="gaussian", n_jobs=n_jobs).fit(X, y)


def test_dense_counts_are_checked_a_block_at_a_time(base, monkeypatch):
    """Dense counts are checked in column blocks (never copied whole): a NaN in the last block
    is still found before any work, and non-whole values in one block give one warning."""
    import stglm._anndata

    monkeypatch.setattr(stglm._anndata, "CHECK_BLOCK_VALUES", base.n_obs)  # one gene a block
    X = base.X.toarray()
    X[5, 4] = np.nan
    with pytest.raises(ValueError, match="adata.X contains NaN"):
        stglm.fit_genes(with_X(base, X), design=design_of(base), copy=True, **QUIET)
    X = base.X.toarray()
    X[:, 2] += 0.5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stglm.fit_genes(with_X(base, X), design=design_of(base), copy=True, **QUIET)
    assert sum("not whole numbers" in str(w.message) for w in caught) == 1
