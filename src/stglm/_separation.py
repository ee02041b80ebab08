"""Separation: count responses whose maximum-likelihood estimate does not exist.

For a count model whose mean goes to 0 as z → −∞ (Poisson, negative binomial; log or
softplus mean) with design X̃ (the intercept included), the log-likelihood of a response y
has no maximiser when some direction d has

    X̃d = 0 on every sample with y > 0,   X̃d ≤ 0 on the samples with y = 0,   X̃d ≠ 0

(Santos Silva & Tenreyro 2010; Correia, Guimarães & Zylkin 2021): moving the coefficients
along d sends the means of the zeros with X̃d < 0 — the *separated samples* — to 0 and
raises the likelihood towards a supremum that is never attained. A gene without a count in
one tissue section is the common case (d is minus that section's indicator). The supremum
is the likelihood of the *limit model*: the separated samples removed, their zero counts
fitted exactly. A solver stops somewhere along the ray, where its tolerance no longer sees
the gradient; the other coefficients (and an NB θ) of the limit model are well defined.

Only the samples with counts constrain d: if their Gram matrix X̃ᵀdiag(1[y > 0])X̃ has the
rank of the design's, X̃d = 0 on them forces X̃d = 0 everywhere and nothing is separated —
the common case with continuous predictors. :func:`separated_samples` forms these Gram
matrices for all genes at once, from one product of the indicator matrix 1[y > 0] with the
design's column-pair products (as the batched solver forms its Hessians), and looks
further only at the genes whose Gram is rank-deficient: in the null space of their samples
with counts, a sign test when it has one dimension (a categorical column: no count in one
section), a small linear programme otherwise. With an intercept and at most
:data:`MAX_HULL_DIM` free predictors those genes' sets come instead from the faces of the
samples' convex hull (the same set: the samples off the smallest face of conv(Q) that holds
the centroid of the counts, Q the samples' predictors), built once for all genes — cheap
in ≤ 3 dimensions, where the linear programmes cost 10–50 ms per gene; in more, qhull
takes ≈ 16 s on 37,000 spots in 6 dimensions, and one Hessian product plus a few
programmes is the cheaper way.
"""

from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp

from ._solvers._batched_kernels import unpack_hessians
from ._solvers.batched import tile_rows, tiled_pair_product

__all__ = [
    "MAX_HULL_DIM",
    "can_separate",
    "fit_separation",
    "separated_by_tested",
    "separated_genes",
    "separated_samples",
]

#: Relative size of a singular value (or eigenvalue) that counts as zero.
_RANK_RTOL = 1e-10
#: Relative size of an eigenvalue of a Gram matrix that counts as zero (its rounding is ~1e-16).
_EIG_RTOL = 1e-12
#: Distance to a hyperplane (whitened coordinates) that counts as on it.
_ON_ATOL = 1e-9
#: The last few designs' scaling and null spaces (see :func:`_design_basis`).
_BASES: dict = {}
#: Most free predictors for which a rank-deficient gene's separated samples come from the
#: faces of the samples' convex hull (qhull is O(n log n) in ≤ 3 dimensions: 0.1 s on the
#: Visium spots, once per set of samples for all genes) instead of a linear programme per
#: gene (10–50 ms each: 1.3 s for Visium's 113 genes with one to five counts).
MAX_HULL_DIM = 3
#: The last few point clouds and their facets (see :func:`_cloud`).
_CLOUDS: dict = {}


def can_separate(family) -> bool:
    """Whether ``family`` is a count family whose mean goes to 0 as z → −∞ (exp, softplus)."""
    return bool(family.is_count) and family.mean_function.kind in ("exp", "softplus")


def fit_separation(
    family, X, Y, reg_lambda, penalty_factor=None, sample_weight=None, fit_intercept=True
) -> np.ndarray | None:
    """The separated samples (G, n) of a fit with penalty λ per response, or None.

    A coefficient can run off to infinity only where nothing penalises it: every
    coefficient at λ = 0, those with penalty factor 0 at λ > 0. ``X`` (n, p) dense, ``Y``
    (G, n), ``reg_lambda`` scalar or (G,), ``sample_weight`` None, (n,) or (G, n).
    """
    if not can_separate(family):
        return None
    Y = np.atleast_2d(Y)
    G = Y.shape[0]
    lam = np.broadcast_to(np.asarray(reg_lambda, dtype=float), (G,))
    out = None
    for at_zero in (True, False):
        genes = np.flatnonzero((lam == 0) == at_zero)
        if genes.size == 0:
            continue
        if at_zero:
            free = np.arange(X.shape[1])
        else:
            free = (
                np.flatnonzero(np.asarray(penalty_factor) == 0)
                if penalty_factor is not None
                else []
            )
        w = sample_weight
        if w is not None and np.ndim(w) == 2 and np.shape(w)[0] > 1:
            w = w[genes]
        Y_genes = Y if genes.size == G else Y[genes]  # all genes: no copy
        found = separated_samples(X[:, free], Y_genes, w, fit_intercept=fit_intercept)
        if found is not None:
            out = np.zeros(Y.shape, bool) if out is None else out
            out[genes] = found
    return out


def separated_genes(family, design, Y, reg_lambda, penalty_factor, sample_weight) -> np.ndarray:
    """Whether each gene of a batched fit is separated (:func:`fit_separation`), (G,) bool.

    ``design`` is the batched solver's (its ``X`` and ``fit_intercept``), ``Y`` (n, G)
    and ``sample_weight`` (n,) or None as the solver takes them.
    """
    Yt = np.asarray(Y).T
    found = fit_separation(
        family, design.X, Yt, reg_lambda, penalty_factor, sample_weight, design.fit_intercept
    )
    return np.zeros(Yt.shape[0], bool) if found is None else found.any(axis=1)


def separated_by_tested(
    X_full, X_reduced, Y, sample_weight=None, *, fit_intercept: bool = True, column=None
) -> np.ndarray:
    """Whether the tested predictors separate each response's zeros, (G,) bool.

    A test of the columns of ``X_full`` that ``X_reduced`` leaves out (the likelihood-ratio
    test; with ``column``, the Wald test of that column of ``X_full``) compares, for a
    separated response, the two *limit models*: both fitted on the samples off the
    separated set, where the supremum of each likelihood is attained. That test is the
    usual one when both models separate the same samples (a section without counts
    that both models have an indicator for) and the tested columns keep their degrees of
    freedom on the samples left (the Wald test: the column stays identifiable there). Where
    the full model separates more samples — the tested predictors are what sends their
    means to 0, a tested section indicator of a section without counts, say — the LR
    statistic has no χ² reference and the Wald z no meaning (it shrinks to 0 as the
    coefficient runs off, Hauck and Donner 1977): True. ``X_full``, ``X_reduced`` (n, p),
    ``Y`` (G, n) counts, ``sample_weight`` (n,) or None.
    """
    Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
    out = np.zeros(Y.shape[0], bool)
    full = separated_samples(X_full, Y, sample_weight, fit_intercept=fit_intercept)
    if full is None:
        return out
    genes = np.flatnonzero(full.any(axis=1))
    reduced = None
    if column is None:
        reduced = separated_samples(X_reduced, Y[genes], sample_weight, fit_intercept=fit_intercept)
        if reduced is None:
            reduced = np.zeros((genes.size, Y.shape[1]), bool)
    n = Y.shape[1]
    inside = np.ones(n, bool) if sample_weight is None else np.asarray(sample_weight) > 0

    def design(X):
        X = np.asarray(X, dtype=np.float64).reshape(n, -1)
        return np.column_stack([np.ones(n), X]) if fit_intercept else X

    X1 = design(X_full)
    if column is None:
        X1_other = design(X_reduced)
        df = X1.shape[1] - X1_other.shape[1]
    else:
        X1_other = np.delete(X1, int(column) + int(fit_intercept), axis=1)
        df = 1
    lost_df: dict[bytes, bool] = {}  # per set of separated samples (often one section)
    for k, g in enumerate(genes):
        if reduced is not None and not np.array_equal(full[g], reduced[k]):
            out[g] = True
            continue
        key = np.packbits(full[g]).tobytes()
        if key not in lost_df:
            keep = inside & ~full[g]
            lost_df[key] = _design_basis(X1, keep)[1] - _design_basis(X1_other, keep)[1] != df
        out[g] = lost_df[key]
    return out


def separated_samples(X, Y, sample_weight=None, *, fit_intercept: bool = True):
    """Each response's separated samples (see the module docstring), or None if none.

    Parameters
    ----------
    X : array-like of shape (n, p)
        The predictors whose coefficients are free to diverge (the unpenalised ones), dense
        or sparse (made dense: they are few).
    Y : array-like of shape (G, n)
        Counts, one row per response.
    sample_weight : array-like of shape (n,) or (G, n), optional
        Samples of weight 0 are not part of a response's data.
    fit_intercept : bool, default=True
        Whether the model has an intercept (a column of ones before X).

    Returns
    -------
    ndarray of shape (G, n), bool, or None
        True for the samples whose fitted means go to 0 along a separating direction (all
        have y = 0 and positive weight). Responses without counts are never marked: they
        have no optimum at all and get their own status from the callers.
    """
    Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
    G, n = Y.shape
    if sp.issparse(X):  # the free columns only: few, and the LP needs them dense anyway
        X = X.toarray()
    X = np.asarray(X, dtype=np.float64).reshape(n, -1)
    if X.shape[1] == 0:  # at most X̃d = d₀, which is 0 on the counts, so 0 everywhere
        return None
    X1 = np.column_stack([np.ones(n), X]) if fit_intercept else X
    inside = np.ones((1, n), bool)
    positive = np.sign(Y)  # 1.0 where y > 0 (counts are ≥ 0): one pass, as floats
    if sample_weight is not None:
        inside = np.atleast_2d(np.asarray(sample_weight) > 0)
        positive *= inside
    counted = positive.sum(axis=1) > 0
    out = np.zeros((G, n), bool)
    # One design basis per distinct set of samples (CV folds share theirs across genes).
    masks, which = inside, np.zeros(G, int)
    if inside.shape[0] > 1:
        masks, which = np.unique(inside, axis=0, return_inverse=True)
    for a, mask in enumerate(masks):
        genes = np.flatnonzero((which.ravel() == a) & counted)
        if genes.size:
            hull = X if fit_intercept and X.shape[1] <= MAX_HULL_DIM else None
            out[genes] = _separated_rows(X1, mask, positive[genes], hull)
    return out if out.any() else None


def _design_basis(X1: np.ndarray, mask: np.ndarray):
    """(scale, rank, null) of the design on the samples ``mask``, cached.

    The columns' RMS on ``mask`` (1 for a column that is 0 there), the rank of X̃/scale
    there and its null space (rows). A whole-transcriptome fit asks for the same design and
    samples once per block of genes (the SVD of 10⁶ × 7 costs ≈ 0.2 s, its key 0.04 s);
    the key is a digest of both arrays, so a changed array is never served stale.
    """
    key = (X1.shape, hashlib.sha1(np.ascontiguousarray(X1)).hexdigest(),
           hashlib.sha1(np.packbits(mask)).hexdigest())  # fmt: skip
    hit = _BASES.get(key)
    if hit is None:
        scale = np.sqrt((X1[mask] ** 2).mean(axis=0))
        # A column that is 0 on these samples (a section all of whose samples have weight
        # 0) stays as it is: 1/tiny would overflow on the samples outside them.
        scale[scale == 0.0] = 1.0
        # The singular values and vectors of the tall X̃[mask] are those of its QR's R.
        R = np.linalg.qr(X1[mask] / scale, mode="r")
        _, s, Vt = np.linalg.svd(R, full_matrices=False)
        rank = int(np.sum(s > _RANK_RTOL * s.max(initial=0.0)))
        hit = (scale, rank, Vt[rank:])
        if len(_BASES) >= 8:
            _BASES.pop(next(iter(_BASES)))
        _BASES[key] = hit
    return hit


def _positive_grams(Xs: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Each gene's Xsᵀdiag(positive_g)Xs, (k, m, m): one product with the pair products."""
    m = Xs.shape[1]
    rows, cols = np.triu_indices(m)
    packed = tiled_pair_product(np.ascontiguousarray(Xs.T), positive, tile_rows(rows.size))
    return unpack_hessians(packed, np.ones(positive.shape[0]), rows, cols, m)


def _separated_rows(
    X1: np.ndarray, mask: np.ndarray, positive: np.ndarray, hull: np.ndarray | None = None
) -> np.ndarray:
    """Samples of ``mask`` that some d with X̃d = 0 on each gene's counts sends to 0.

    ``positive`` (k, n) is 1.0 on each gene's samples with counts (all in ``mask``), 0.0
    elsewhere. Only genes whose counts' Gram is rank-deficient against the design's can
    have any; theirs come from the faces of conv(``hull``) when given (the predictors
    without the intercept column, few), else from their null space.
    """
    out = np.zeros(positive.shape, bool)
    scale, design_rank, design_null = _design_basis(X1, mask)
    Xs = X1 / scale
    lam, V = np.linalg.eigh(_positive_grams(Xs, positive))  # ascending: null directions first
    rank = np.sum(lam > _EIG_RTOL * np.maximum(lam[:, -1:], 0.0), axis=1)
    deficient = np.flatnonzero(rank < design_rank)
    if hull is not None:
        if deficient.size:
            out[deficient] = _off_the_face(hull, mask, positive[deficient])
        return out
    for k in deficient:
        # Null directions of the counts' samples, less the design's own null space.
        N = V[k, :, : V.shape[2] - rank[k]]
        N = N - design_null.T @ (design_null @ N)
        U, sv, _ = np.linalg.svd(N, full_matrices=False)
        N = U[:, sv > 1e-6]
        zeros = mask & (positive[k] == 0)
        if N.shape[1] and zeros.any():
            out[k, zeros] = _negative_rows(Xs[zeros] @ N)
    return out


def _whitened(X: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Coordinates of every sample in the affine hull of the samples ``mask``, unit spread."""
    centre = X[mask].mean(axis=0)
    _, s, Vt = np.linalg.svd(X[mask] - centre, full_matrices=False)
    keep = s > _RANK_RTOL * max(s.max(initial=0.0), np.finfo(float).tiny)
    scale = s[keep] / np.sqrt(mask.sum())
    return (X - centre) @ Vt[keep].T / scale


def _facets(U: np.ndarray) -> np.ndarray:
    """Hyperplanes (normal, offset) of conv(U), rows of (F, r + 1); U ⊂ R^r, full dimension."""
    r = U.shape[1]
    if r == 1:
        return np.array([[1.0, -U[:, 0].max()], [-1.0, U[:, 0].min()]])
    from scipy.spatial import ConvexHull

    return ConvexHull(U).equations


def _cloud(X: np.ndarray, mask: np.ndarray):
    """(U, normals, offsets): whitened samples and the facets of conv(U[mask]), cached.

    A whole-transcriptome fit asks for the same design and samples once per block of
    genes; the key is a digest of both arrays, so a changed array is never served stale.
    """
    key = (X.shape, hashlib.sha1(np.ascontiguousarray(X)).hexdigest(),
           hashlib.sha1(np.packbits(mask)).hexdigest())  # fmt: skip
    hit = _CLOUDS.get(key)
    if hit is None:
        U = _whitened(X, mask)
        eq = _facets(U[mask]) if U.shape[1] else np.zeros((0, 1))
        hit = (U, eq[:, :-1], eq[:, -1])
        if len(_CLOUDS) >= 8:
            _CLOUDS.pop(next(iter(_CLOUDS)))
        _CLOUDS[key] = hit
    return hit


def _off_the_face(X: np.ndarray, mask: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Samples of ``mask`` off the smallest face of conv(X[mask]) holding each gene's counts.

    The separated samples with an intercept (module docstring): a separating d is a
    supporting hyperplane of the samples that holds every count, so the samples it sends to
    0 are those off the smallest face that holds the counts' centroid. ``positive`` (k, n)
    is 1.0 on each gene's samples with counts, 0.0 elsewhere.
    """
    out = np.zeros(positive.shape, bool)
    U, normals, offsets = _cloud(X, mask)
    if U.shape[1] == 0:  # all samples at one point: X̃d is constant, 0 on the counts
        return out
    centroid = (positive @ U) / positive.sum(axis=1, keepdims=True)
    active = np.abs(centroid @ normals.T + offsets) <= _ON_ATOL  # facets through the centroid
    for k in np.flatnonzero(active.any(axis=1)):
        distance = U @ normals[active[k]].T + offsets[active[k]]
        on_face = np.all(np.abs(distance) <= _ON_ATOL, axis=1)
        if np.all(on_face[positive[k] > 0]):  # (else rounding put a count off its own face)
            out[k] = mask & ~on_face
    return out


def _negative_rows(A: np.ndarray) -> np.ndarray:
    """Rows i of A with (Au)ᵢ < 0 for some u with Au ≤ 0 (the largest such set)."""
    A = np.where(np.abs(A) <= _ON_ATOL * np.abs(A).max(initial=1.0), 0.0, A)
    if A.shape[1] == 1:
        a = A[:, 0]
        if np.all(a <= 0) or np.all(a >= 0):
            return a != 0
        return np.zeros(a.size, bool)
    import scipy.sparse as sp
    from scipy.optimize import linprog

    n0, k = A.shape
    # {u : Au ≤ 0} is a convex cone, so the sum of witnesses is one: find the rows a step at
    # a time with k variables, max −Σ_{rows not yet negative} a_i·u subject to Au ≤ 0,
    # |u| ≤ 1, whose optimum is 0 exactly when no further row can be negative (at once
    # when none can: the usual answer for a few counts among continuous predictors).
    tol = _ON_ATOL * np.abs(A).max()
    negative = np.zeros(n0, bool)
    for _ in range(k + 2):
        c = A[~negative].sum(axis=0)
        res = linprog(c, A_ub=A, b_ub=np.zeros(n0), bounds=[(-1.0, 1.0)] * k, method="highs")
        if res.status != 0:
            break
        if -res.fun <= tol * n0:
            return negative
        more = (A @ res.x < -tol) & ~negative
        if not more.any():
            break
        negative |= more
    # Else the programme with a variable per row: max Σ s subject to Au + s ≤ 0, 0 ≤ s ≤ 1
    # (u free); one u makes every row negative that some u does, and s = 1 exactly there.
    res = linprog(
        np.r_[np.zeros(k), -np.ones(n0)],
        A_ub=sp.hstack([sp.csr_matrix(A), sp.identity(n0, format="csr")], format="csr"),
        b_ub=np.zeros(n0),
        bounds=[(None, None)] * k + [(0.0, 1.0)] * n0,
        method="highs",
    )
    return res.x[k:] > 0.5 if res.status == 0 else np.zeros(n0, bool)
