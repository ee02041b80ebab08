"""Tests of stglm.spatial: graphs against brute force, smoothing, predictors, errors.

Every expected value is computed here independently (full pairwise distance matrices with
numpy, explicit Python loops over neighbours), never by stglm's own helpers.
"""

import time
import tracemalloc
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import stglm.spatial as S
from stglm.datasets import visium_prostate


# ---------------------------------------------------------------------------------------------
# independent references
# ---------------------------------------------------------------------------------------------
def pairwise(coords):
    diff = coords[:, None, :] - coords[None, :, :]
    return np.sqrt((diff**2).sum(-1))


def brute_graph(coords, *, k=None, radius=None, labels=None, weight=None):
    """Dense n×n graph by brute force; ``weight`` maps a distance array to weights."""
    D = pairwise(coords)
    np.fill_diagonal(D, np.inf)
    if labels is not None:
        D[labels[:, None] != labels[None, :]] = np.inf
    A = np.zeros_like(D)
    for i in range(len(D)):
        nb = np.argsort(D[i])[:k] if radius is None else np.flatnonzero(D[i] <= radius)
        A[i, nb] = 1.0 if weight is None else weight(D[i, nb])
    return A, D


def log_norm(counts):
    counts = np.asarray(counts, dtype=float)
    return np.log1p(1e4 * counts / counts.sum(axis=1, keepdims=True))


def make_adata(n=60, p=12, seed=0, sparse=True):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(2.0, size=(n, p)) + (np.arange(p) == 0)  # no all-zero cell
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["B", "T", "Mac"], n)),
            "section": rng.choice(["s1", "s2"], n),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    var = pd.DataFrame(index=[f"g{j}" for j in range(p)])
    X = sp.csr_matrix(counts) if sparse else counts
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm["spatial"] = rng.uniform(0, 100, size=(n, 2))
    return adata


@pytest.fixture(scope="module")
def visium():
    return visium_prostate()


@pytest.fixture
def coords():
    return np.random.default_rng(1).uniform(0, 10, size=(60, 2))


# ---------------------------------------------------------------------------------------------
# spatial graphs vs brute force
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 4, 10])
def test_knn_matches_brute_force(coords, k):
    W = S.spatial_neighbors(coords, n_neighbors=k)
    expected, _ = brute_graph(coords, k=k)
    assert sp.isspmatrix_csr(W) and W.shape == (60, 60)
    assert W.nnz == 60 * k
    np.testing.assert_array_equal(W.toarray(), expected)


@pytest.mark.parametrize("radius", [0.5, 1.5, 3.0])
def test_radius_matches_brute_force(coords, radius):
    W = S.spatial_neighbors(coords, radius=radius)
    expected, _ = brute_graph(coords, radius=radius)
    np.testing.assert_array_equal(W.toarray(), expected)


def test_within_section_matches_brute_force(coords):
    labels = np.random.default_rng(2).choice(["a", "b", "c"], 60)
    for kwargs in ({"k": 5}, {"radius": 2.0}):
        expected, _ = brute_graph(coords, labels=labels, **kwargs)
        W = S.spatial_neighbors(
            coords, n_neighbors=kwargs.get("k", 6), radius=kwargs.get("radius"), batch_key=labels
        )
        np.testing.assert_array_equal(W.toarray(), expected)


def test_within_section_from_obs_column():
    adata = make_adata()
    labels = adata.obs["section"].to_numpy()
    expected, _ = brute_graph(adata.obsm["spatial"], k=4, labels=labels)
    W = S.spatial_neighbors(adata, n_neighbors=4, batch_key="section")
    np.testing.assert_array_equal(W.toarray(), expected)


def test_gaussian_weights_given_and_default_bandwidth(coords):
    h = 1.3
    expected, _ = brute_graph(coords, k=6, weight=lambda d: np.exp(-(d**2) / (2 * h**2)))
    W = S.spatial_neighbors(coords, n_neighbors=6, kernel="gaussian", bandwidth=h)
    np.testing.assert_allclose(W.toarray(), expected, rtol=1e-12, atol=0)

    # default: the median distance over all edges
    binary, D = brute_graph(coords, k=6)
    m = np.median(D[binary > 0])
    expected = np.where(binary > 0, np.exp(-(D**2) / (2 * m**2)), 0.0)
    W = S.spatial_neighbors(coords, n_neighbors=6, kernel="gaussian")
    np.testing.assert_allclose(W.toarray(), expected, rtol=1e-12, atol=0)


def test_bisquare_weights_drop_edges_beyond_bandwidth(coords):
    h = 1.2
    expected, _ = brute_graph(
        coords, radius=2.0, weight=lambda d: np.where(d < h, (1 - (d / h) ** 2) ** 2, 0.0)
    )
    W = S.spatial_neighbors(coords, radius=2.0, kernel="bisquare", bandwidth=h)
    np.testing.assert_allclose(W.toarray(), expected, rtol=1e-12, atol=0)
    assert W.nnz == np.count_nonzero(expected)  # zero-weight edges are not stored
    assert W.data.min() > 0

    # default: twice the median edge distance
    binary, D = brute_graph(coords, k=6)
    h = 2 * np.median(D[binary > 0])
    expected = np.where((binary > 0) & (D < h), (1 - (D / h) ** 2) ** 2, 0.0)
    W = S.spatial_neighbors(coords, n_neighbors=6, kernel="bisquare")
    np.testing.assert_allclose(W.toarray(), expected, rtol=1e-12, atol=0)


def test_include_self(coords):
    W = S.spatial_neighbors(coords, n_neighbors=3, include_self=True, kernel="gaussian")
    np.testing.assert_array_equal(W.diagonal(), np.ones(60))
    assert W.nnz == 60 * 4


def test_duplicate_positions_keep_k_other_neighbours():
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 10, size=(30, 2))
    coords = np.vstack([base, base])  # every cell has a twin at distance 0 (seqFISH z-planes)
    W = S.spatial_neighbors(coords, n_neighbors=3)
    assert W.nnz == 60 * 3
    assert W.diagonal().sum() == 0
    np.testing.assert_array_equal(np.diff(W.indptr), 3)
    twins = np.r_[np.arange(30, 60), np.arange(30)]
    assert np.all(W[np.arange(60), twins] == 1)

    # three copies and k=1: the tree may list two copies before the cell itself
    W = S.spatial_neighbors(np.vstack([base, base, base]), n_neighbors=1)
    assert W.nnz == 90 and W.diagonal().sum() == 0
    rows, cols = W.nonzero()
    np.testing.assert_array_equal(rows % 30, cols % 30)  # the neighbour is a copy


def test_anndata_and_array_give_the_same_graph():
    adata = make_adata()
    a = S.spatial_neighbors(adata, n_neighbors=5)
    b = S.spatial_neighbors(adata.obsm["spatial"], n_neighbors=5)
    assert (a != b).nnz == 0


# ---------------------------------------------------------------------------------------------
# bundled Visium data
# ---------------------------------------------------------------------------------------------
def test_visium_sections_are_not_linked(visium):
    k = 6
    W = S.spatial_neighbors(visium, n_neighbors=k, batch_key="list_ID")
    n = visium.n_obs
    assert W.shape == (n, n) and W.nnz == n * k
    np.testing.assert_array_equal(np.diff(W.indptr), k)
    assert W.diagonal().sum() == 0
    section = visium.obs["list_ID"].to_numpy()
    rows, cols = W.nonzero()
    assert np.all(section[rows] == section[cols])

    W = S.spatial_neighbors(visium, radius=600, batch_key="list_ID")
    rows, cols = W.nonzero()
    assert np.all(section[rows] == section[cols])


def test_visium_expression_neighbors(visium):
    W = S.expression_neighbors(visium, n_neighbors=5)
    n = visium.n_obs
    assert W.nnz == n * 5 and W.diagonal().sum() == 0
    np.testing.assert_array_equal(W.data, 1.0)


# ---------------------------------------------------------------------------------------------
# expression graph vs an independent PCA (numpy SVD) and brute-force kNN
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [True, False])
def test_expression_neighbors_matches_numpy_pca(sparse):
    adata = make_adata(n=80, p=40, seed=4, sparse=sparse)
    counts = adata.X.toarray() if sparse else adata.X
    Z = log_norm(counts)
    Z = Z - Z.mean(axis=0)
    U, s, _ = np.linalg.svd(Z, full_matrices=False)
    scores = U[:, :6] * s[:6]
    expected, _ = brute_graph(scores, k=5)
    W = S.expression_neighbors(adata, n_neighbors=5, n_pcs=6)
    np.testing.assert_array_equal(W.toarray(), expected)


# ---------------------------------------------------------------------------------------------
# graph resolver
# ---------------------------------------------------------------------------------------------
def test_get_graph_builds_reads_obsp_and_copies():
    adata = make_adata()
    stored = S.spatial_neighbors(adata, n_neighbors=3)
    adata.obsp["spatial_connectivities"] = stored
    got = S.get_graph(adata, "spatial_connectivities")
    assert (got != stored).nnz == 0
    got.data[:] = 7.0
    assert np.all(adata.obsp["spatial_connectivities"].data == 1.0)  # a copy, not a view
    assert (S.get_graph(adata, "spatial", n_neighbors=3) != stored).nnz == 0
    assert (S.get_graph(adata, stored.toarray()) != stored).nnz == 0
    E = S.get_graph(adata, "expression", n_neighbors=4, n_pcs=5)
    assert E.nnz == adata.n_obs * 4
    with pytest.raises(ValueError, match="adata.obsp"):
        S.get_graph(adata, "no_such_graph")
    with pytest.raises(TypeError, match="only apply when building"):
        S.get_graph(adata, "spatial_connectivities", n_neighbors=3)


# ---------------------------------------------------------------------------------------------
# predictors
# ---------------------------------------------------------------------------------------------
def test_niche_composition_matches_loop():
    adata = make_adata()
    W = S.spatial_neighbors(adata, n_neighbors=5, kernel="gaussian")
    df = S.niche_composition(adata, "cell_type", graph=W)
    cats = list(adata.obs["cell_type"].cat.categories)
    assert list(df.columns) == [f"niche_{c}" for c in cats]
    assert df.index.equals(adata.obs_names)
    np.testing.assert_allclose(df.sum(axis=1), 1.0, rtol=1e-12)
    labels = adata.obs["cell_type"].to_numpy()
    Wd = W.toarray()
    for i in range(adata.n_obs):
        nb = np.flatnonzero(Wd[i])
        for c in cats:
            share = Wd[i, nb][labels[nb] == c].sum() / Wd[i, nb].sum()
            assert df.loc[adata.obs_names[i], f"niche_{c}"] == pytest.approx(share, rel=1e-12)


def test_niche_composition_builds_graph_and_handles_isolated_cells():
    adata = make_adata()
    df = S.niche_composition(adata, "section", n_neighbors=4)
    assert list(df.columns) == ["niche_s1", "niche_s2"]  # sorted values of a plain column
    np.testing.assert_allclose(df.sum(axis=1), 1.0)
    with pytest.warns(UserWarning, match=r"rows of W have no neighbours"):
        df = S.niche_composition(adata, "cell_type", radius=1.0)
    W = S.spatial_neighbors(adata, radius=1.0)
    isolated = np.diff(W.indptr) == 0
    assert isolated.any()
    np.testing.assert_array_equal(df.to_numpy()[isolated], 0.0)
    np.testing.assert_allclose(df.to_numpy()[~isolated].sum(axis=1), 1.0)


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("kernel", [None, "gaussian"])
def test_spatial_lag_matches_loop(sparse, kernel):
    adata = make_adata(sparse=sparse)
    genes = ["g3", "g0", "g7"]
    W = S.spatial_neighbors(adata, n_neighbors=6, kernel=kernel)
    df = S.spatial_lag(adata, genes, graph=W)
    assert list(df.columns) == ["lag_g3", "lag_g0", "lag_g7"]
    assert df.index.equals(adata.obs_names)
    counts = adata.X.toarray() if sparse else adata.X
    logx = log_norm(counts)
    Wd = W.toarray()
    for i in range(adata.n_obs):
        nb = np.flatnonzero(Wd[i])
        w = Wd[i, nb]
        for g in genes:
            j = int(g[1:])
            expected = (w * logx[nb, j]).sum() / w.sum()
            assert df.iloc[i][f"lag_{g}"] == pytest.approx(expected, rel=1e-12)


def test_spatial_lag_without_normalisation_and_layer():
    adata = make_adata()
    adata.layers["lognorm"] = log_norm(adata.X.toarray())
    W = S.spatial_neighbors(adata, n_neighbors=4)
    a = S.spatial_lag(adata, "g2", graph=W)
    b = S.spatial_lag(adata, "g2", graph=W, layer="lognorm", normalize=False)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-12)


def test_coordinates():
    adata = make_adata()
    df = S.coordinates(adata)
    assert list(df.columns) == ["x", "y"] and df.index.equals(adata.obs_names)
    np.testing.assert_allclose(df.mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(df.std(ddof=0), 1.0, rtol=1e-12)
    raw = S.coordinates(adata, standardize=False)
    np.testing.assert_array_equal(raw.to_numpy(), adata.obsm["spatial"])


def test_build_design_columns_match_references():
    """Section dummies, niche shares, lags and within-section coordinates, in that order."""
    adata = make_adata()
    design = S.build_design(
        adata,
        section_key="section",
        niche="cell_type",
        lag=["g3", "g1"],
        coords=True,
        n_neighbors=4,
    )
    cats = list(adata.obs["cell_type"].cat.categories)
    assert list(design.columns) == [
        "section_s2",  # s1, the first section, is the reference
        *[f"niche_{c}" for c in cats],
        "lag_g3",
        "lag_g1",
        "x",
        "y",
    ]
    assert design.index.equals(adata.obs_names)
    section = adata.obs["section"].to_numpy()
    np.testing.assert_array_equal(design["section_s2"], (section == "s2").astype(float))
    # the graph is the kNN graph within sections, computed here by brute force
    A, _ = brute_graph(adata.obsm["spatial"], k=4, labels=section)
    labels = adata.obs["cell_type"].to_numpy()
    for c in cats:
        np.testing.assert_allclose(design[f"niche_{c}"], A @ (labels == c) / 4, rtol=1e-12)
    logx = log_norm(adata.X.toarray())
    np.testing.assert_allclose(design[["lag_g3", "lag_g1"]], A @ logx[:, [3, 1]] / 4, rtol=1e-12)
    xy = adata.obsm["spatial"]
    for s in ("s1", "s2"):
        m = section == s
        expected = (xy[m] - xy[m].mean(axis=0)) / xy[m].std(axis=0)
        np.testing.assert_allclose(design.loc[m, ["x", "y"]], expected, rtol=1e-12)


def test_build_design_without_sections_and_errors():
    adata = make_adata()
    design = S.build_design(adata, lag="g2", coords=True)
    pd.testing.assert_frame_equal(
        design, pd.concat([S.spatial_lag(adata, "g2"), S.coordinates(adata)], axis=1)
    )
    with pytest.raises(ValueError, match="no predictors"):
        S.build_design(adata)
    one = adata[adata.obs["section"] == "s1"].copy()
    with pytest.raises(ValueError, match="no predictors"):
        S.build_design(one, section_key="section")  # a single section: no dummy
    with pytest.raises(ValueError, match="'nope' is not a column"):
        S.build_design(adata, niche="nope", coords=True)
    with pytest.raises(ValueError, match="NOT_A_GENE"):
        S.build_design(adata, lag=["g1", "NOT_A_GENE"])
    adata.obs["niche"] = adata.obs["section"]  # dummy niche_s2 = niche share niche_s2
    with pytest.raises(ValueError, match=r"duplicate predictor names \['niche_s2'\]"):
        S.build_design(adata, section_key="niche", niche="section")
    adata.obs.loc[adata.obs_names[0], "section"] = None
    with pytest.raises(ValueError, match="missing values"):
        S.build_design(adata, section_key="section", coords=True)


def test_nothing_writes_into_adata():
    adata = make_adata()
    before = adata.copy()
    S.spatial_neighbors(adata, batch_key="section", kernel="gaussian")
    S.expression_neighbors(adata, n_pcs=5)
    S.niche_composition(adata, "cell_type")
    S.spatial_lag(adata, ["g1", "g2"])
    S.coordinates(adata)
    S.build_design(adata, section_key="section", niche="cell_type", lag="g1", coords=True)
    for attr in ("obsm", "obsp", "layers", "uns", "varm"):
        assert list(getattr(adata, attr).keys()) == list(getattr(before, attr).keys())
    assert adata.obs.equals(before.obs) and adata.var.equals(before.var)
    assert (adata.X != before.X).nnz == 0 and adata.X.dtype == before.X.dtype
    np.testing.assert_array_equal(adata.obsm["spatial"], before.obsm["spatial"])


# ---------------------------------------------------------------------------------------------
# calc_1nd_moment
# ---------------------------------------------------------------------------------------------
def random_graph(n=40, seed=5, empty_rows=()):
    rng = np.random.default_rng(seed)
    W = rng.uniform(0.1, 2.0, size=(n, n)) * (rng.random((n, n)) < 0.2)
    W[list(empty_rows)] = 0.0
    return W


W_KINDS = {
    "dense": lambda W: W,
    "csr_matrix": sp.csr_matrix,
    "csr_array": sp.csr_array,
    "coo_array": sp.coo_array,
}


@pytest.mark.parametrize("kind", list(W_KINDS))
@pytest.mark.parametrize("x_sparse", [False, True])
def test_calc_1nd_moment_kinds_agree_with_loop(kind, x_sparse):
    Wd = random_graph()
    X = np.random.default_rng(6).normal(size=(40, 3))
    expected = np.array([(Wd[i] @ X) / Wd[i].sum() for i in range(40)])
    W = W_KINDS[kind](Wd.copy())
    W_before = W.copy()
    Xin = sp.csr_matrix(X) if x_sparse else X

    smoothed, W_norm = S.calc_1nd_moment(Xin, W)
    dense = smoothed.toarray() if sp.issparse(smoothed) else smoothed
    np.testing.assert_allclose(dense, expected, rtol=1e-12)
    assert sp.issparse(smoothed) == (x_sparse and kind != "dense")
    if kind == "dense":
        assert isinstance(W_norm, np.ndarray)
    elif kind == "csr_matrix":
        assert sp.isspmatrix_csr(W_norm)
    else:
        assert isinstance(W_norm, sp.csr_array)
    Wn = W_norm.toarray() if sp.issparse(W_norm) else W_norm
    np.testing.assert_allclose(Wn.sum(axis=1), 1.0, rtol=1e-12)
    W_after = W.toarray() if sp.issparse(W) else W
    np.testing.assert_array_equal(W_after, W_before.toarray() if sp.issparse(W) else W_before)

    product = S.calc_1nd_moment(Xin, W, normalize_W=False)
    assert not isinstance(product, tuple)
    product = product.toarray() if sp.issparse(product) else product
    np.testing.assert_allclose(product, Wd @ X, rtol=1e-12)


@pytest.mark.parametrize("kind", list(W_KINDS))
def test_calc_1nd_moment_empty_rows_warn_and_stay_zero(kind):
    Wd = random_graph(empty_rows=(3, 17))
    X = np.random.default_rng(7).normal(size=40)  # 1-D X is accepted too
    with pytest.warns(UserWarning, match=r"^2 of 40 rows of W have no neighbours"):
        smoothed, W_norm = S.calc_1nd_moment(X, W_KINDS[kind](Wd))
    assert smoothed.shape == (40,)
    assert np.all(np.isfinite(smoothed))
    np.testing.assert_array_equal(smoothed[[3, 17]], 0.0)
    Wn = W_norm.toarray() if sp.issparse(W_norm) else W_norm
    np.testing.assert_array_equal(Wn[[3, 17]], 0.0)
    with warnings.catch_warnings():  # the unnormalised product needs no warning
        warnings.simplefilter("error")
        S.calc_1nd_moment(X, W_KINDS[kind](Wd), normalize_W=False)


def test_calc_1nd_moment_100k_cells_stays_sparse():
    n, per_row = 100_000, 10  # dense W would take 80 GB
    rng = np.random.default_rng(8)
    W = sp.csr_array(
        (
            rng.uniform(0.5, 1.5, n * per_row),
            rng.integers(0, n, n * per_row),
            np.arange(0, n * per_row + 1, per_row),
        ),
        shape=(n, n),
    )
    X = rng.normal(size=(n, 3))
    tracemalloc.start()
    start = time.perf_counter()
    smoothed, W_norm = S.calc_1nd_moment(X, W)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 5.0
    assert peak < 200e6, f"peak allocation {peak / 1e6:.0f} MB"
    assert isinstance(W_norm, sp.csr_array) and W_norm.shape == (n, n)
    assert smoothed.shape == (n, 3) and isinstance(smoothed, np.ndarray)
    np.testing.assert_allclose(W_norm.sum(axis=1), 1.0, rtol=1e-12)
    rows = rng.integers(0, n, 20)  # spot checks against an explicit neighbour mean
    for i in rows:
        lo, hi = W.indptr[i], W.indptr[i + 1]
        w, nb = W.data[lo:hi], W.indices[lo:hi]
        np.testing.assert_allclose(smoothed[i], w @ X[nb] / w.sum(), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# bad input: clear errors, raised before any work
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("X", "W", "error", "match"),
    [
        (np.ones((3, 2)), np.ones((3, 2)), ValueError, "W must be a square"),
        (np.ones((4, 2)), np.ones((3, 3)), ValueError, "X has 4 rows but W is 3×3"),
        (np.ones((3, 2)), np.array([[0, 1, np.nan]] * 3), ValueError, "W contains NaN"),
        (np.ones((3, 2)), sp.csr_matrix([[0, 1, np.nan]] * 3), ValueError, "W contains NaN"),
        (np.ones((3, 2)), sp.csr_array([[0, 1, np.inf]] * 3), ValueError, "W contains NaN"),
        (np.ones((3, 2)), [[0, -1, 1]] * 3, ValueError, "negative weights"),
        (np.full((3, 2), np.nan), np.ones((3, 3)), ValueError, "X contains NaN"),
        (np.ones((3, 2)), "graph", TypeError, "W must be a numeric"),
        (np.array([["a"]] * 3), np.ones((3, 3)), TypeError, "X must be numeric"),
    ],
)
def test_calc_1nd_moment_errors(X, W, error, match):
    with pytest.raises(error, match=match):
        S.calc_1nd_moment(X, W)


def test_calc_1nd_moment_rejects_non_bool_normalize():
    with pytest.raises(TypeError, match="normalize_W"):
        S.calc_1nd_moment(np.ones(3), np.ones((3, 3)), normalize_W="yes")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kernel": "gauss"}, ValueError, "kernel must be one of"),
        ({"radius": -1.0}, ValueError, "radius must be in"),
        ({"radius": 0.0}, ValueError, "radius must be in"),
        ({"n_neighbors": 0}, ValueError, "n_neighbors must be in"),
        ({"n_neighbors": 2.5}, TypeError, "n_neighbors must be an integer"),
        ({"n_neighbors": 60}, ValueError, "n_neighbors=60 but there are only 60 cells"),
        ({"bandwidth": 1.0}, ValueError, "bandwidth is only used with a kernel"),
        ({"kernel": "gaussian", "bandwidth": 0.0}, ValueError, "bandwidth must be in"),
        ({"batch_key": "list_ID"}, TypeError, "batch_key names an adata.obs column"),
        ({"batch_key": ["a", "b"]}, ValueError, "one label per cell"),
    ],
)
def test_spatial_neighbors_errors(coords, kwargs, error, match):
    with pytest.raises(error, match=match):
        S.spatial_neighbors(coords, **kwargs)


def test_spatial_neighbors_errors_on_adata():
    adata = make_adata()
    with pytest.raises(ValueError, match="'list_ID' is not a column of adata.obs"):
        S.spatial_neighbors(adata, batch_key="list_ID")
    with pytest.raises(ValueError, match="n_neighbors=40 but there are only .* in one section"):
        S.spatial_neighbors(adata, n_neighbors=40, batch_key="section")
    del adata.obsm["spatial"]
    with pytest.raises(ValueError, match=r"adata.obsm has no 'spatial' entry"):
        S.spatial_neighbors(adata)
    with pytest.raises(ValueError, match=r"adata.obsm has no 'spatial' entry"):
        S.coordinates(adata)
    with pytest.raises(ValueError, match="contains NaN"):
        S.spatial_neighbors(np.array([[0.0, 1.0], [np.nan, 2.0], [3.0, 1.0]]), n_neighbors=1)


def test_expression_neighbors_errors():
    adata = make_adata()
    with pytest.raises(ValueError, match="layer='counts' is not in adata.layers"):
        S.expression_neighbors(adata, layer="counts")
    with pytest.raises(ValueError, match="n_neighbors must be in"):
        S.expression_neighbors(adata, n_neighbors=0)
    adata.X = -adata.X
    with pytest.raises(ValueError, match="negative values"):
        S.expression_neighbors(adata)


def test_predictor_errors_come_before_any_work(monkeypatch):
    adata = make_adata()

    def no_graph(*args, **kwargs):
        raise AssertionError("the graph was built before the input was checked")

    monkeypatch.setattr(S, "get_graph", no_graph)
    with pytest.raises(ValueError, match=r"genes not in adata.var_names: \['NOT_A_GENE'\]"):
        S.spatial_lag(adata, ["g1", "NOT_A_GENE"])
    with pytest.raises(ValueError, match="duplicates"):
        S.spatial_lag(adata, ["g1", "g1"])
    with pytest.raises(ValueError, match="obs_key='celltype' is not a column of adata.obs"):
        S.niche_composition(adata, "celltype")
    with pytest.raises(TypeError, match="adata must be an AnnData"):
        S.niche_composition(adata.obs, "cell_type")
    adata.obs.loc["cell3", "section"] = np.nan
    with pytest.raises(ValueError, match="1 missing values"):
        S.niche_composition(adata, "section")
