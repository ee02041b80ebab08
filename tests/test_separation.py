"""Separation (``stglm._separation``): which count responses have no finite MLE, and where.

Checked against what needs no faith in the module:

- designs whose separated samples are known by construction (a section without counts, a
  single count at a corner of the samples' hull or inside it, cell-means designs without
  an intercept, weights of 0);
- the convex-hull characterisation, written here (qhull): the separated samples are those
  off the smallest face of the samples' hull that holds the centroid of a gene's counts —
  geometry that shares no code with the module's Gram ranks, null spaces and linear
  programmes — on constructed designs, random sparse genes and all 1,255 Visium genes on
  the section, coordinate and spatial-lag designs;
- the definition itself: for every separated gene, a direction d (a feasibility LP written
  in the test) has X̃d = 0 on the samples it keeps and X̃d < 0 on the ones it marks, the
  Poisson log-likelihood rises along d, and the model without the marked samples is no
  longer separated (the marked set is the largest).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_array_equal
from scipy.optimize import linprog
from scipy.spatial import ConvexHull

from stglm import spatial
from stglm._families import get_family
from stglm._separation import can_separate, fit_separation, separated_samples


def grid_design(n_side=12, seed=0):
    """Two 'sections' of n_side² spots on a square grid each, with x, y centred per section."""
    rng = np.random.default_rng(seed)
    g = np.arange(n_side, dtype=float)
    x, y = (a.ravel() for a in np.meshgrid(g, g))
    section = np.r_[np.zeros(x.size), np.ones(x.size)]
    coords = np.r_[np.c_[x, y], np.c_[x, y] + rng.normal(0, 0.01, (x.size, 2))]
    return np.column_stack([section, coords - coords.mean(axis=0)])


# ---------------------------------------------------------------------------------------------
# the reference: faces of the samples' convex hull (qhull), with an intercept
# ---------------------------------------------------------------------------------------------
ON_ATOL = 1e-9  # distance to a facet (whitened coordinates) that counts as on it


def whitened(X, mask):
    """Every sample's coordinates in the affine hull of the samples ``mask``, unit spread."""
    centre = X[mask].mean(axis=0)
    _, s, Vt = np.linalg.svd(X[mask] - centre, full_matrices=False)
    keep = s > 1e-10 * max(s.max(initial=0.0), np.finfo(float).tiny)
    return (X - centre) @ Vt[keep].T / (s[keep] / np.sqrt(mask.sum()))


def facets(U):
    """Hyperplanes (normal, offset) of conv(U), rows of (F, r + 1), U of full dimension r."""
    if U.shape[1] == 1:
        return np.array([[1.0, -U[:, 0].max()], [-1.0, U[:, 0].min()]])
    return ConvexHull(U).equations


def hull_separated(X, Y, w=None):
    """The samples off the smallest face of conv(X[w > 0]) holding each gene's centroid of
    counts (G, n) — the separated ones of a model with an intercept — or None."""
    X = np.asarray(X, dtype=float).reshape(X.shape[0], -1)
    Y = np.atleast_2d(Y)
    W = np.broadcast_to(np.ones(X.shape[0]) if w is None else w, Y.shape)
    out = np.zeros(Y.shape, bool)
    clouds = {}  # one hull per set of samples
    for g in range(Y.shape[0]):
        mask = W[g] > 0
        positive = (Y[g] > 0) & mask
        key = mask.tobytes()
        if key not in clouds:
            U = whitened(X, mask)
            clouds[key] = (U, facets(U[mask]) if U.shape[1] else None)
        U, eq = clouds[key]
        if not positive.any() or eq is None:  # no counts; all samples at one point
            continue
        centroid = U[positive].mean(axis=0)
        through = np.abs(eq[:, :-1] @ centroid + eq[:, -1]) <= ON_ATOL
        if through.any():
            distance = U @ eq[through, :-1].T + eq[through, -1]
            on_face = np.all(np.abs(distance) <= ON_ATOL, axis=1)
            assert on_face[positive].all()  # the smallest face holds every count
            out[g] = mask & ~on_face
    return out if out.any() else None


def both(X, Y, w=None):
    """The module's answer and the hull's, (G, n) each, None for none."""
    return separated_samples(X, Y, w), hull_separated(X, Y, w)


def as_mask(found, shape):
    return np.zeros(shape, bool) if found is None else found


def test_a_section_without_counts_is_separated():
    X = grid_design()
    n = X.shape[0]
    rng = np.random.default_rng(1)
    counts = rng.poisson(2.0, n).astype(float)
    Y = np.array([counts * (X[:, 0] == 0), counts * (X[:, 0] == 1), counts])
    for found in both(X, Y):
        assert_array_equal(found[0], X[:, 0] == 1)  # zeros of section 1
        assert_array_equal(found[1], X[:, 0] == 0)
        assert not found[2].any()


def test_single_count_at_a_corner_or_inside():
    # Intercept + x + y on one grid: a count at a corner spot is on a vertex of the hull
    # (every other spot is separated from it); one inside the grid is not separated.
    X = grid_design()[:144, 1:]
    corner = np.argmin(X[:, 0] + X[:, 1])
    inside = np.argmin(np.abs(X[:, 0] - 0.5) + np.abs(X[:, 1] - 0.5))
    edge = np.argmin(np.abs(X[:, 0] - X[:, 0].min()) + np.abs(X[:, 1] - 0.5))
    Y = np.zeros((3, 144))
    Y[0, corner] = Y[1, inside] = Y[2, edge] = 1.0
    x_min = np.isclose(X[:, 0], X[:, 0].min())
    for found in both(X, Y):
        expected = np.ones(144, bool)
        expected[corner] = False
        assert_array_equal(found[0], expected)
        assert not found[1].any()
        # on an edge of the square (not a corner): only that edge's spots stay
        assert_array_equal(found[2], ~x_min)


def test_no_intercept_cell_means_design(monkeypatch):
    # Two indicator columns (cell means, no intercept): a group without counts separates.
    n = 60
    A = (np.arange(n) < 20).astype(float)
    X = np.c_[A, 1 - A]
    Y = np.array([np.where(A == 1, 0.0, 3.0), np.ones(n)])
    found = separated_samples(X, Y, fit_intercept=False)
    assert_array_equal(found[0], A == 1)
    assert not found[1].any()


def test_weights_of_zero_remove_samples():
    X = grid_design()
    n = X.shape[0]
    y = np.where(X[:, 0] == 0, 2.0, 0.0)
    y[n - 1] = 5.0  # the only count of section 1 ...
    assert separated_samples(X, y[None, :]) is None
    w = np.ones(n)
    w[n - 1] = 0.0  # ... left out: section 1 has none
    found = separated_samples(X, y[None, :], w)
    assert_array_equal(found[0], (X[:, 0] == 1) & (w > 0))
    # per-gene weights (CV folds): each row its own samples
    W = np.vstack([w, np.ones(n)])
    found = separated_samples(X, np.vstack([y, y]), W)
    assert found[0].sum() == (X[:, 0] == 1).sum() - 1 and not found[1].any()


def test_weights_of_zero_on_a_whole_section():
    """A section all of whose samples have weight 0: its indicator is 0 on the samples
    left, which nothing separates (no overflow from scaling a column that is 0 there)."""
    X = grid_design()
    y = np.where(X[:, 0] == 0, 2.0, 0.0)  # counts only off section 1 ...
    w = np.where(X[:, 0] == 1, 0.0, 1.0)  # ... which is left out
    with np.errstate(all="raise"):
        assert separated_samples(X, y[None, :], w) is None
        assert_array_equal(separated_samples(X, y[None, :])[0], X[:, 0] == 1)


def test_the_designs_own_null_space_separates_nothing():
    # A duplicated column and an all-zero one: X̃d = 0 everywhere is not separation.
    X = grid_design()
    X = np.c_[X, X[:, 1], np.zeros(X.shape[0])]
    y = np.random.default_rng(2).poisson(1.0, X.shape[0]).astype(float)
    for found in both(X, np.vstack([y, y * (X[:, 0] == 0)])):
        assert not found[0].any()
        assert_array_equal(found[1], X[:, 0] == 1)


def random_sparse_genes(X, n_genes=60, seed=3):
    """Genes with 1–8 counts at random spots, some confined to one section."""
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    Y = np.zeros((n_genes, n))
    for g in range(n_genes):
        k = rng.integers(1, 9)
        pool = np.flatnonzero(X[:, 0] == (g % 2)) if g % 3 == 0 else np.arange(n)
        Y[g, rng.choice(pool, size=k, replace=False)] = rng.integers(1, 5, size=k)
    return Y


def test_random_sparse_genes_as_the_hull_says():
    X = grid_design(n_side=8)
    Y = random_sparse_genes(X)
    found, hull = both(X, Y)
    assert_array_equal(as_mask(found, Y.shape), as_mask(hull, Y.shape))
    assert hull.any(axis=1).sum() > 10  # the comparison covers many separated genes


def test_separated_samples_satisfy_the_definition():
    X = grid_design(n_side=8)
    Y = random_sparse_genes(X, seed=4)
    X1 = np.c_[np.ones(X.shape[0]), X]
    found = separated_samples(X, Y)
    checked = 0
    for g in np.flatnonzero(found.any(axis=1)):
        S = found[g]
        assert not np.any(Y[g, S])  # only zeros are separated
        # A direction with X̃d = 0 on the kept samples and X̃d ≤ −1 on the separated ones
        # exists (a feasibility LP, written here) ...
        res = linprog(
            np.zeros(X1.shape[1]), A_ub=X1[S], b_ub=-np.ones(S.sum()), A_eq=X1[~S],
            b_eq=np.zeros((~S).sum()), bounds=[(None, None)] * X1.shape[1], method="highs",
        )  # fmt: skip
        assert res.status == 0, g
        d = res.x
        # ... along which the Poisson log-likelihood rises from any β ...
        beta = np.zeros(X1.shape[1])
        ll = [np.sum(Y[g] * (X1 @ (beta + a * d)) - np.exp(X1 @ (beta + a * d))) for a in (0, 1, 2)]
        assert ll[0] < ll[1] < ll[2]
        # ... and without the separated samples the MLE exists: the set is the largest.
        assert separated_samples(X[~S], Y[g : g + 1, ~S]) is None
        checked += 1
    assert checked > 10


@pytest.mark.parametrize("reg_lambda", [0.0, 0.1])
def test_fit_separation_only_along_unpenalised_columns(reg_lambda):
    X = grid_design()
    y = np.where(X[:, 0] == 0, 2.0, 0.0)[None, :]
    fam = get_family("neg-binomial", link="log")
    found = fit_separation(fam, X, y, reg_lambda)
    if reg_lambda == 0:
        assert_array_equal(found[0], X[:, 0] == 1)
    else:  # a penalised section coefficient stays finite
        assert found is None
        factor = np.array([0.0, 1.0, 1.0])  # ... unless its penalty factor is 0
        assert_array_equal(fit_separation(fam, X, y, reg_lambda, factor)[0], X[:, 0] == 1)


def test_which_families_can_separate():
    assert can_separate(get_family("poisson"))
    assert can_separate(get_family("neg-binomial", link="log"))
    assert can_separate(get_family("neg-binomial"))  # softplus mean → 0 as z → −∞
    assert not can_separate(get_family("gaussian"))
    assert not can_separate(get_family("gamma", link="log"))  # y > 0: no zeros to separate


@pytest.fixture(scope="module")
def visium_counts():
    from stglm.datasets import visium_prostate

    adata = visium_prostate()
    return adata, adata.X.toarray().T  # all 1,255 genes × 2,327 spots


VISIUM_DESIGNS = {
    "section": dict(section_key="list_ID"),
    "section+coords": dict(section_key="list_ID", coords=True),
    # the demo's 6 predictors: qhull in 6-D takes 1–2 min here, hence slow
    "section+lags+coords": dict(section_key="list_ID", lag=["KRT15", "TGM4", "CNN1"], coords=True),
}


@pytest.mark.parametrize(
    "name",
    [
        "section",
        "section+coords",
        pytest.param("section+lags+coords", marks=pytest.mark.slow),
    ],
)
def test_visium_genes_as_the_hull_says(visium_counts, name):
    adata, Y = visium_counts
    X = spatial.build_design(adata, **VISIUM_DESIGNS[name]).to_numpy(float)
    found, hull = both(X, Y)
    assert_array_equal(found, hull)
    assert 80 <= hull.any(axis=1).sum() <= 90  # the 84 genes without a count in one section


@pytest.mark.parametrize("name", ["section", "section+coords"])
def test_the_null_space_route_agrees_with_the_face_route(visium_counts, name):
    """With ≤ MAX_HULL_DIM free predictors the rank-deficient genes take the hull's faces;
    the null space + LP route (used beyond) gives the same sets on the same genes."""
    from stglm._separation import MAX_HULL_DIM, _separated_rows

    adata, Y = visium_counts
    X = spatial.build_design(adata, **VISIUM_DESIGNS[name]).to_numpy(float)
    assert X.shape[1] <= MAX_HULL_DIM
    X1 = np.column_stack([np.ones(X.shape[0]), X])
    mask = np.ones(X.shape[0], bool)
    positive = np.sign(Y[Y.sum(axis=1) > 0])
    faces = _separated_rows(X1, mask, positive, X)
    lp = _separated_rows(X1, mask, positive)
    assert_array_equal(faces, lp)
    assert faces.any(axis=1).sum() >= 80


def test_quasi_complete_separation_by_a_continuous_predictor():
    # Counts only where x takes its largest value (ties, spread along z): the zeros below
    # it are separated (d = x − max x), the zeros at it are not; one count below: none.
    rng = np.random.default_rng(5)
    n = 300
    x = rng.integers(0, 10, n).astype(float)
    z = rng.normal(size=n)
    X = np.c_[x, z]
    top = x == x.max()
    y = np.where(top, rng.poisson(3.0, n) + 1.0, 0.0)
    y[np.flatnonzero(top)[:3]] = 0.0  # zeros at the top stay
    y2 = y.copy()
    y2[np.flatnonzero(~top)[0]] = 1.0
    for found in both(X, np.vstack([y, y2])):
        assert_array_equal(found[0], ~top)
        assert not found[1].any()


def test_continuous_counts_separate_nothing_with_or_without_intercept():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(500, 6))
    Y = rng.poisson(np.exp(0.3 + 0.4 * X[:, :3].sum(axis=1)), size=(20, 500)).astype(float)
    assert separated_samples(X, Y) is None
    assert separated_samples(X, Y, fit_intercept=False) is None
    assert hull_separated(X, Y) is None


def test_sparse_predictors_and_genes_of_one_count():
    X = grid_design()
    n = X.shape[0]
    Y = np.zeros((3, n))
    Y[0, 0] = 1.0  # a single count: a corner of section 0
    Y[1, n // 2 + 30] = 4.0  # one count inside section 1
    Y[2] = np.random.default_rng(7).poisson(1.0, n)
    dense = separated_samples(X, Y)
    assert_array_equal(separated_samples(sp.csr_array(X), Y), dense)
    assert_array_equal(dense, hull_separated(X, Y))
    assert dense[0].sum() == n - 1 and dense[1].sum() == n // 2 and not dense[2].any()
