"""Separation (``stglm._separation``): which count responses have no finite MLE, and where.

Checked against what needs no faith in the module:

- designs whose separated samples are known by construction (a section without counts, a
  single count at a corner of the samples' hull or inside it, cell-means designs without
  an intercept, weights of 0);
- its two routes against each other on random sparse genes: the convex-hull route (facets
  of the samples' hull, qhull) and the null-space route (a sign test or a linear programme)
  share no code;
- the definition itself: for every separated gene, a direction d (a feasibility LP written
  in the test) has X̃d = 0 on the samples it keeps and X̃d < 0 on the ones it marks, the
  Poisson log-likelihood rises along d, and the model without the marked samples is no
  longer separated (the marked set is the largest).
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from scipy.optimize import linprog

from stglm import _separation as sep
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


def both_routes(X, Y, w=None, fit_intercept=True, monkeypatch=None):
    hull = separated_samples(X, Y, w, fit_intercept=fit_intercept)
    monkeypatch.setattr(sep, "MAX_HULL_DIM", -1)
    null_space = separated_samples(X, Y, w, fit_intercept=fit_intercept)
    monkeypatch.undo()
    return hull, null_space


def as_mask(found, shape):
    return np.zeros(shape, bool) if found is None else found


def test_a_section_without_counts_is_separated(monkeypatch):
    X = grid_design()
    n = X.shape[0]
    rng = np.random.default_rng(1)
    counts = rng.poisson(2.0, n).astype(float)
    Y = np.array([counts * (X[:, 0] == 0), counts * (X[:, 0] == 1), counts])
    for found in both_routes(X, Y, monkeypatch=monkeypatch):
        assert_array_equal(found[0], X[:, 0] == 1)  # zeros of section 1
        assert_array_equal(found[1], X[:, 0] == 0)
        assert not found[2].any()


def test_single_count_at_a_corner_or_inside(monkeypatch):
    # Intercept + x + y on one grid: a count at a corner spot is on a vertex of the hull
    # (every other spot is separated from it); one inside the grid is not separated.
    X = grid_design()[:144, 1:]
    corner = np.argmin(X[:, 0] + X[:, 1])
    inside = np.argmin(np.abs(X[:, 0] - 0.5) + np.abs(X[:, 1] - 0.5))
    edge = np.argmin(np.abs(X[:, 0] - X[:, 0].min()) + np.abs(X[:, 1] - 0.5))
    Y = np.zeros((3, 144))
    Y[0, corner] = Y[1, inside] = Y[2, edge] = 1.0
    x_min = np.isclose(X[:, 0], X[:, 0].min())
    for found in both_routes(X, Y, monkeypatch=monkeypatch):
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


def test_the_designs_own_null_space_separates_nothing(monkeypatch):
    # A duplicated column and an all-zero one: X̃d = 0 everywhere is not separation.
    X = grid_design()
    X = np.c_[X, X[:, 1], np.zeros(X.shape[0])]
    y = np.random.default_rng(2).poisson(1.0, X.shape[0]).astype(float)
    for found in both_routes(X, np.vstack([y, y * (X[:, 0] == 0)]), monkeypatch=monkeypatch):
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


def test_hull_and_null_space_routes_agree(monkeypatch):
    X = grid_design(n_side=8)
    Y = random_sparse_genes(X)
    hull, null_space = both_routes(X, Y, monkeypatch=monkeypatch)
    assert_array_equal(as_mask(hull, Y.shape), as_mask(null_space, Y.shape))
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
