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

Geometrically, with an intercept, such a d is a supporting hyperplane of the samples'
point cloud Q (their predictor values) that contains every sample with counts: the
separated samples are those off the smallest face of conv(Q) that contains the centroid of
the samples with counts. :func:`separated_samples` finds that face from the facets of
conv(Q) (qhull, once per set of samples, shared by all genes): exact, whatever the number
of separating directions. In many dimensions (more than :data:`MAX_HULL_DIM` predictors) or
without an intercept it works in the null space of the samples with counts instead: a sign
test when that null space has one dimension (a categorical column), a small linear
programme otherwise.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = [
    "MAX_HULL_DIM",
    "can_separate",
    "fit_separation",
    "separated_genes",
    "separated_samples",
]

#: Largest number of free predictors for which the convex hull of the samples is used.
MAX_HULL_DIM = 6
#: Relative size of a singular value (or eigenvalue) that counts as zero.
_RANK_RTOL = 1e-10
#: Relative size of an eigenvalue of a Gram matrix that counts as zero (its rounding is ~1e-16).
_EIG_RTOL = 1e-12
#: Distance to a hyperplane (whitened coordinates) that counts as on it.
_ON_ATOL = 1e-9
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


def separated_samples(X, Y, sample_weight=None, *, fit_intercept: bool = True):
    """Each response's separated samples (see the module docstring), or None if none.

    Parameters
    ----------
    X : array-like of shape (n, p)
        The predictors whose coefficients are free to diverge (the unpenalised ones), dense.
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
    X = np.asarray(X, dtype=np.float64).reshape(n, -1)
    if X.shape[1] == 0:  # at most X̃d = d₀, which is 0 on the counts, so 0 everywhere
        return None
    inside = np.ones((1, n), bool)
    positive = np.sign(Y)  # 1.0 where y > 0 (counts are ≥ 0): one pass, as floats
    if sample_weight is not None:
        inside = np.atleast_2d(np.asarray(sample_weight) > 0)
        positive *= inside
    counted = positive.sum(axis=1) > 0
    out = np.zeros((G, n), bool)
    use_hull = fit_intercept and X.shape[1] <= MAX_HULL_DIM
    # One point cloud per distinct set of samples (CV folds share theirs across genes).
    masks, which = inside, np.zeros(G, int)
    if inside.shape[0] > 1:
        masks, which = np.unique(inside, axis=0, return_inverse=True)
    for a, mask in enumerate(masks):
        genes = np.flatnonzero((which.ravel() == a) & counted)
        if genes.size == 0:
            continue
        if use_hull:
            out[genes] = _off_the_face(X, mask, positive[genes])
        else:
            X1 = np.column_stack([np.ones(n), X]) if fit_intercept else X
            out[genes] = _off_the_null_space(X1, mask, positive[genes] > 0)
    return out if out.any() else None


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

    ``positive`` (k, n) is 1.0 on each gene's samples with counts, 0.0 elsewhere.
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


def _off_the_null_space(X1: np.ndarray, mask: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """The same set from the null space of each gene's samples with counts (any dimension)."""
    out = np.zeros(positive.shape, bool)
    Xs = X1 / np.maximum(np.sqrt((X1[mask] ** 2).mean(axis=0)), np.finfo(float).tiny)
    _, s_all, Vt_all = np.linalg.svd(Xs[mask], full_matrices=False)
    design_rank = int(np.sum(s_all > _RANK_RTOL * s_all.max(initial=0.0)))
    for k in range(positive.shape[0]):
        Xp = Xs[positive[k]]
        lam, V = np.linalg.eigh(Xp.T @ Xp)  # ascending: the null directions come first
        rank = int(np.sum(lam > _EIG_RTOL * lam.max(initial=0.0)))
        if rank >= design_rank:
            continue
        # Null directions of the counts' samples, less the design's own null space.
        N = V[:, : V.shape[1] - rank]
        N = N - Vt_all[design_rank:].T @ (Vt_all[design_rank:] @ N)
        U, sv, _ = np.linalg.svd(N, full_matrices=False)
        N = U[:, sv > 1e-6]
        zeros = mask & ~positive[k]
        if N.shape[1] and zeros.any():
            out[k, zeros] = _negative_rows(Xs[zeros] @ N)
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

    # max Σ s subject to Au + s ≤ 0, 0 ≤ s ≤ 1 (u free): {Au ≤ 0} is a convex cone, so one
    # u makes every row negative that some u does, and s = 1 exactly on those rows.
    n0, k = A.shape
    res = linprog(
        np.r_[np.zeros(k), -np.ones(n0)],
        A_ub=sp.hstack([sp.csr_matrix(A), sp.identity(n0, format="csr")], format="csr"),
        b_ub=np.zeros(n0),
        bounds=[(None, None)] * k + [(0.0, 1.0)] * n0,
        method="highs",
    )
    return res.x[k:] > 0.5 if res.status == 0 else np.zeros(n0, bool)
