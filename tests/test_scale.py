"""Whole transcriptomes at scale: memory budget, pair products, workspaces, CSR reading, scores.

Each piece is checked against an independent reference: scipy's own densification, the
Hessians and solutions of the whole-Z route, fresh solvers, and deviances written from the
families' formulas in numpy.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal

from stglm import fit_genes
from stglm._csr_columns import csr_dense_columns, is_canonical
from stglm._cv import default_chunk_size
from stglm._errors import InputError
from stglm._families import get_family
from stglm._solvers import NewtonOptions, _options
from stglm._solvers._options import DEFAULT_MEMORY_BUDGET, MEMORY_BUDGET_ENV, memory_budget
from stglm._solvers.batched import BatchedNewtonCD, SharedDesign, Workspace
from stglm._transcriptome import ThreadWorkspaces


# -- the memory budget -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"), [("1000", 1000), ("512M", 512 * 2**20), ("4G", 4 * 2**30), ("2kb", 2048)]
)
def test_memory_budget_from_the_environment(monkeypatch, text, expected):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, text)
    assert memory_budget() == expected
    assert NewtonOptions().memory() == expected
    assert NewtonOptions().pair_budget() == expected // 2
    assert NewtonOptions(memory_budget=10, pair_bytes_budget=3).pair_budget() == 3


@pytest.mark.parametrize("text", ["lots", "-5G", "0"])
def test_bad_memory_budget_names_the_variable(monkeypatch, text):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, text)
    with pytest.raises(InputError, match=MEMORY_BUDGET_ENV):
        memory_budget()


def _free_memory(monkeypatch, free: int) -> None:
    """Simulate ``free`` bytes of MemAvailable (what the machine has free at the moment)."""
    monkeypatch.setattr(_options, "available_memory", lambda: free)


def test_decisions_follow_the_budget_not_the_free_memory(monkeypatch):
    """1 GiB or 64 GiB free: the same budget, pair-product budget and genes per chunk (on a
    free-memory rule 10⁶ cells would get 2 and 32 genes, and float32 or float64 Z)."""
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    seen = []
    for free in (2**30, 2**36):
        _free_memory(monkeypatch, free)
        options = NewtonOptions()
        seen.append((memory_budget(), options.pair_budget(), default_chunk_size(10**6)))
    assert seen[0] == seen[1] == (DEFAULT_MEMORY_BUDGET, DEFAULT_MEMORY_BUDGET // 2, 32)


def _gene_fit(n=700, p=6, G=40, **kwargs) -> ad.AnnData:
    X, Y = _problem(n=n, p=p, G=G)
    adata = ad.AnnData(sp.csr_matrix(Y))
    design = pd.DataFrame(X, index=adata.obs_names, columns=[f"x{j}" for j in range(p)])
    fit_genes(adata, design=design, **{"reg_lambda": 0.01, "progress": False, **kwargs})
    return adata


def test_same_fit_is_bit_identical_whatever_the_free_memory(monkeypatch):
    """The same call with 1 MiB or 1 TiB free: bit for bit the same results and plan (the
    1 MiB machine is warned that the plan exceeds what it has)."""
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    _free_memory(monkeypatch, 2**20)
    with pytest.warns(UserWarning, match=MEMORY_BUDGET_ENV):
        short = _gene_fit()
    _free_memory(monkeypatch, 2**40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ample = _gene_fit()
    assert short.uns["stglm"]["plan"] == ample.uns["stglm"]["plan"]
    assert_array_equal(short.varm["stglm_coef"].to_numpy(), ample.varm["stglm_coef"].to_numpy())
    for field in ("intercept", "score", "kkt", "n_iter"):
        assert_array_equal(short.var[f"stglm_{field}"], ample.var[f"stglm_{field}"])


@pytest.mark.parametrize(
    ("budget", "chunk", "pairs"),
    # n = 700, m = 7: Z is 156,800 bytes in float64, a gene's chunk arrays 9·8·700 = 50,400
    [(None, 128, "float64"), (200_000, 2, "float32"), (150_000, 2, "float64 tiles")],
)
def test_plan_is_recorded_and_follows_the_budget(monkeypatch, budget, chunk, pairs):
    if budget is None:
        monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    else:
        monkeypatch.setenv(MEMORY_BUDGET_ENV, str(budget))
    adata = _gene_fit()
    expected = {"memory_budget": budget or DEFAULT_MEMORY_BUDGET, "chunk_size": chunk}
    assert adata.uns["stglm"]["plan"] == {**expected, "pair_products": pairs}
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    reference = _gene_fit().varm["stglm_coef"].to_numpy()  # whole float64 Z, one chunk
    assert_allclose(adata.varm["stglm_coef"].to_numpy(), reference, rtol=1e-6, atol=1e-7)


def test_plan_names_the_folds_pair_products():
    adata = _gene_fit(G=20, reg_lambda=None, cv=3, n_lambdas=3)
    plan = adata.uns["stglm"]["plan"]
    assert plan["pair_products"] == plan["fold_pair_products"] == "float64"


# -- CSR columns without a CSC copy -------------------------------------------------------------
def _random_csr(rng, n, G, index_dtype, data_dtype):
    dense = rng.poisson(0.7, (n, G)) * (rng.random((n, G)) < 0.4)
    m = sp.csr_matrix(dense.astype(data_dtype))
    m.indices = m.indices.astype(index_dtype)
    m.indptr = m.indptr.astype(np.int64)  # int64 pointers beside int32 indices, as h5ad
    return m, dense


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("data_dtype", [np.int32, np.float32, np.float64])
def test_csr_columns_equal_scipy(index_dtype, data_dtype):
    rng = np.random.default_rng(3)
    m, dense = _random_csr(rng, 57, 23, index_dtype, data_dtype)
    assert is_canonical(m)
    for cols in ([0, 1, 2], [22], [5, 3, 17, 9], np.arange(23), [4, 4 + 7, 20], []):
        got = csr_dense_columns(m, np.asarray(cols, dtype=int))
        assert got.dtype == np.float64 and got.flags.f_contiguous
        assert_array_equal(got, dense[:, cols])


def test_csr_columns_of_unsorted_and_duplicate_indices():
    rng = np.random.default_rng(4)
    m, dense = _random_csr(rng, 30, 12, np.int32, np.float64)
    # reverse each row's entries: unsorted indices
    unsorted = m.copy()
    for i in range(m.shape[0]):
        a, b = m.indptr[i], m.indptr[i + 1]
        unsorted.indices[a:b] = m.indices[a:b][::-1]
        unsorted.data[a:b] = m.data[a:b][::-1]
    unsorted.has_sorted_indices = False
    assert not is_canonical(unsorted)
    assert_array_equal(csr_dense_columns(unsorted, np.array([1, 7, 3])), dense[:, [1, 7, 3]])
    # a stored entry split in two: summed, as scipy does
    dup = sp.csr_matrix(
        (np.array([1.0, 2.0, 5.0]), np.array([2, 2, 0]), np.array([0, 2, 3])), shape=(2, 3)
    )
    assert not is_canonical(dup)
    assert_array_equal(csr_dense_columns(dup, np.array([0, 2])), [[0.0, 3.0], [5.0, 0.0]])


# -- pair products: kept whole or tiled, the same Hessians and solutions ------------------------
def _problem(n=700, p=6, G=9, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) * rng.uniform(0.5, 2.0, p) + rng.uniform(-1, 1, p)
    b0 = np.log(rng.uniform(0.05, 5.0, G))
    B = rng.normal(0, 0.2, (p, G))
    Y = rng.poisson(np.exp(b0 + X @ B)).astype(float)
    return X, Y


def test_tiled_pair_products_give_the_whole_products_solutions():
    X, Y = _problem()
    fam = get_family("poisson", eta=np.inf)
    lam = np.full(Y.shape[1], 0.01)
    whole = SharedDesign(X, True, NewtonOptions())
    tiled = SharedDesign(X, True, NewtonOptions(pair_bytes_budget=0))
    assert whole.Z is not None and tiled.Z is None
    tiled.block = 64  # 11 tiles, the last one partial
    W = np.random.default_rng(1).uniform(0, 3, (5, X.shape[0]))
    assert_allclose(tiled.hessians(W), whole.hessians(W), rtol=1e-12, atol=1e-13)
    kw = dict(max_iter=100, tol=1e-10)
    a = BatchedNewtonCD(fam, whole, 0.5, None, **kw).solve(Y, lam)
    b = BatchedNewtonCD(fam, tiled, 0.5, None, **kw).solve(Y, lam)
    assert a.converged.all() and b.converged.all()
    assert_allclose(b.coefs, a.coefs, rtol=1e-9, atol=1e-10)
    assert_allclose(b.intercepts, a.intercepts, rtol=1e-9, atol=1e-10)


# -- one workspace for solvers that run one after another ---------------------------------------
def test_workspace_grows_and_is_shared():
    ws = Workspace()
    a = ws.arrays(3, 4, 10)
    assert [x.shape for x in a] == [(4, 10)] * 3 and all(x.flags.c_contiguous for x in a)
    held = ws.nbytes
    b = ws.arrays(2, 2, 20)  # fewer values: the same memory, viewed anew
    assert ws.nbytes == held and np.shares_memory(a[0], b[0])
    ws.arrays(4, 5, 10)
    assert ws.nbytes == 4 * 50 * 8


def test_shared_workspace_gives_the_fresh_solvers_results():
    """Two designs (all samples, a subset) and two batches through one workspace, in turn,
    equal fresh solvers bit for bit; nothing returned points into the workspace."""
    X, Y = _problem()
    fam = get_family("poisson", eta=np.inf)
    full = SharedDesign(X, True)
    fold = full.subset(np.arange(0, X.shape[0], 2))
    ws = Workspace()
    kw = dict(max_iter=100, tol=1e-8)
    jobs = [(full, Y[:, :6]), (fold, Y[::2, 3:]), (full, Y[:, 2:4])]
    shared = [
        BatchedNewtonCD(fam, d, 0.5, None, workspace=ws, **kw).solve(y, 0.02, keep_terms=True)
        for d, y in jobs
    ]
    for (d, y), got in zip(jobs, shared, strict=True):
        ref = BatchedNewtonCD(fam, d, 0.5, None, **kw).solve(y, 0.02, keep_terms=True)
        assert_array_equal(got.coefs, ref.coefs)
        assert_array_equal(got.n_iter, ref.n_iter)
        assert_array_equal(got.terms.Z, ref.terms.Z)
        assert not any(np.shares_memory(got.terms.Z, buf) for buf in ws._buffers)


def test_thread_workspaces_one_per_thread_shared_through_pickle():
    """One workspace per thread; fitters pickled together (a Dask task) still share one."""
    import pickle
    import threading

    pool = ThreadWorkspaces()
    mine = pool.get()
    assert pool.get() is mine
    other = []
    thread = threading.Thread(target=lambda: other.append(pool.get()))
    thread.start()
    thread.join()
    assert other[0] is not mine
    a, b = pickle.loads(pickle.dumps((pool, pool)))
    assert a is b and a.get() is b.get() and a.get() is not mine  # empty when unpickled


@pytest.mark.parametrize("test", ["lrt", "ql"])
def test_test_genes_fits_both_models_in_one_workspace(monkeypatch, test):
    """The full and the reduced model of a block run one after the other: one set of buffers."""
    import stglm._transcriptome as transcriptome
    from stglm import test_genes

    X, Y = _problem(n=300, p=3, G=12)
    adata = ad.AnnData(Y, obs=pd.DataFrame(index=[f"c{i}" for i in range(Y.shape[0])]))
    design = pd.DataFrame(X, columns=["a", "b", "c"], index=adata.obs_names)
    seen = []
    real = transcriptome.BatchedNewtonCD

    def spy(*args, **kwargs):
        seen.append(kwargs["workspace"])
        return real(*args, **kwargs)

    monkeypatch.setattr(transcriptome, "BatchedNewtonCD", spy)
    test_genes(adata, design=design, reduced=["a"], test=test, progress=False, chunk_size=5)
    assert len(seen) > 2 and len({id(w) for w in seen}) == 1


# -- the in-sample deviance from the solver's −ℓ ---------------------------------------------
def _numpy_deviance(distr, y, mu, theta=None, w=None):
    """Unit deviances written from the families' formulas (not stglm's)."""
    w = np.ones_like(y) if w is None else w
    with np.errstate(divide="ignore", invalid="ignore"):
        ylog = np.where(y > 0, y * np.log(y / mu), 0.0)
        if distr == "poisson":
            d = 2 * (ylog - (y - mu))
        elif distr == "neg-binomial":
            d = 2 * (ylog - (y + theta) * np.log((y + theta) / (mu + theta)))
        elif distr == "gaussian":
            d = (y - mu) ** 2
        else:  # gamma
            d = 2 * ((y - mu) / mu - np.log(y / mu))
    return (w * d).sum(axis=0)


@pytest.mark.parametrize(
    ("distr", "extra"),
    [
        ("poisson", {"link": "log"}),
        ("poisson", {}),  # the seed's mean, linear above η = 2
        ("neg-binomial", {"theta": 2.5, "link": "log"}),
        ("gaussian", {}),
        ("gamma", {"link": "log"}),
    ],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_fixed_lambda_score_is_the_deviance_at_the_solution(distr, extra, weighted):
    X, Y = _problem(n=400, p=3, G=5, seed=2)
    if distr == "gamma":
        Y = Y + 0.5
    w = np.random.default_rng(5).uniform(0.5, 2.0, X.shape[0]) if weighted else None
    names = [f"g{j}" for j in range(Y.shape[1])]
    adata = ad.AnnData(
        sp.csr_matrix(Y), obs=pd.DataFrame(index=[f"c{i}" for i in range(X.shape[0])]),
        var=pd.DataFrame(index=names),
    )  # fmt: skip
    design = pd.DataFrame(X, index=adata.obs_names, columns=["a", "b", "c"])
    fit_genes(
        adata, design=design, distr=distr, reg_lambda=0.01, clip_coeffs=0.0, progress=False,
        sample_weight=w, tol=1e-10, size_factors=None, **({"link": None} | extra),
    )  # fmt: skip
    coef = adata.varm["stglm_coef"].to_numpy()
    z = adata.var["stglm_intercept"].to_numpy() + X @ coef.T
    if distr == "gaussian":
        mu = z
    elif "link" in extra:
        mu = np.exp(z)
    else:  # the seed's Poisson mean: e^z, continued along its tangent above η = 2
        mu = np.where(z <= 2.0, np.exp(np.minimum(z, 2.0)), np.exp(2.0) * (z - 1.0))
    expected = _numpy_deviance(distr, Y, mu, extra.get("theta"), None if w is None else w[:, None])
    assert_allclose(adata.var["stglm_score"].to_numpy(), expected, rtol=1e-9)


def test_float32_pair_products_where_only_they_fit():
    """Between 4 and 8 bytes per pair value of budget, Z is kept whole in float32: Hessians
    to ≈ 1e-6, the same optimum (KKT-checked), and float64 Hessians when asked exactly."""
    X, Y = _problem()
    n, m = X.shape[0], X.shape[1] + 1
    values = n * m * (m + 1) // 2
    f32 = SharedDesign(X, True, NewtonOptions(pair_bytes_budget=6 * values))
    f64 = SharedDesign(X, True)
    tiled = SharedDesign(X, True, NewtonOptions(pair_bytes_budget=6 * values, pair_dtype="float64"))
    assert f32.Z.dtype == np.float32 and f32.pair_bytes == 4 * values
    assert f64.Z.dtype == np.float64 and tiled.Z is None
    W = np.random.default_rng(2).uniform(0, 3, (4, n))
    assert_allclose(f32.hessians(W), f64.hessians(W), rtol=1e-5, atol=1e-6)
    assert_allclose(f32.hessians(W, exact=True), f64.hessians(W), rtol=1e-12, atol=1e-13)
    fam = get_family("poisson", eta=np.inf)
    lam = np.full(Y.shape[1], 0.01)
    a = BatchedNewtonCD(fam, f64, 0.5, None, max_iter=100, tol=1e-10).solve(Y, lam)
    b = BatchedNewtonCD(fam, f32, 0.5, None, max_iter=100, tol=1e-10).solve(Y, lam)
    assert b.converged.all() and (b.kkt <= a.kkt.max() * 10 + 1e-12).all()
    assert_allclose(b.coefs, a.coefs, rtol=1e-7, atol=1e-8)
    with pytest.raises(InputError, match="pair_dtype"):
        NewtonOptions(pair_dtype="half")
