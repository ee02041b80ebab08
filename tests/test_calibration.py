"""Calibration of stglm.test_genes by simulation from the Visium data (issue 12).

Negative-binomial models (log link, offset log total counts, design section_CP + the
within-section standardised coordinates x, y) are fitted to the real genes with ≥ 30
non-zero spots (θ by ML). Simulated genes resample those genes' parameters (seeded); their
counts are NB with the fitted means, θ from the fit, and

- under the null, the spatial coefficients (x, y) set to 0: the test of x, y
  (``reduced=["section_CP"]``) must give uniform p-values (KS test p > 0.01) and a type-I
  error at 0.05 inside a binomial band;
- under the alternative, the fitted spatial effects (× 1 and × 0.5): the power is reported
  (``-s`` prints it) and must exceed the type-I error.

The ≥ 2,000-gene version (type-I error in [0.04, 0.06], as issue 12 asks) is marked slow; the
default suite runs 400 genes with the band 0.05 ± 3.29·√(0.05·0.95/400) (99.9 % binomial).
Measured when written (seed below; ``pytest -s`` prints them):

- null, 2,000 genes from 1,014 real ones: LRT KS p 0.22 (θ Cox–Reid) and 0.30 (θ ML), type-I
  0.0485 (95 % CI 0.0395–0.0588), at 0.01: 0.0085; 400 genes: KS p 0.39 / 0.38, 0.0475.
- power of the LRT (θ Cox–Reid) at 0.05: 0.660 with the fitted spatial effects, 0.351 at half
  of them (q ≤ 0.05: 0.624, 0.218); 400 genes: 0.718, 0.378.
- the QL F test composed from ``stglm._quasi`` and the batched solver (before test_genes had
  test="ql"): 2,000 null genes KS p 0.68, type-I 0.0505 (0.0413–0.0610); power 0.659 / 0.351.
- time: the default-suite tests ≈ 20 s, the slow ones ≈ 90 s (2 cores).
"""

from __future__ import annotations

import time
import warnings
from functools import cache

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

SEED = 20261202
MIN_NONZERO = 30
THETA_CAP = 1e6  # θ at stglm's upper bound (1e8) is Poisson; simulate it as θ = 1e6
TESTED = ["x", "y"]
REDUCED = ["section_CP"]


@cache
def visium():
    """(adata, design, offset) of the bundled Visium data."""
    from stglm.datasets import visium_prostate

    a = visium_prostate()
    sec = a.obs["list_ID"].astype(str).to_numpy()
    xy = np.asarray(a.obsm["spatial"], dtype=float)
    std = np.empty_like(xy)
    for s in np.unique(sec):
        m = sec == s
        std[m] = (xy[m] - xy[m].mean(axis=0)) / xy[m].std(axis=0)
    X = pd.DataFrame(
        {"section_CP": (sec == "CP").astype(float), "x": std[:, 0], "y": std[:, 1]},
        index=a.obs_names,
    )
    off = np.log(np.asarray(a.X.sum(axis=1)).ravel())
    return a, X, off


@cache
def fitted_parameters(n_genes: int | None) -> dict:
    """NB fits (θ by ML) of real genes with ≥ 30 non-zero spots (a seeded subset of
    ``n_genes`` of them, or all): intercept, coefficients (section_CP, x, y), θ."""
    from stglm import fit_genes

    a, X, off = visium()
    nnz = np.asarray((a.X > 0).sum(axis=0)).ravel()
    pool = np.flatnonzero(nnz >= MIN_NONZERO)
    if n_genes is not None and n_genes < pool.size:
        pool = np.sort(np.random.default_rng(SEED).choice(pool, n_genes, replace=False))
    b = a[:, pool].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_genes(
            b, design=X, distr="neg-binomial", theta="ml", link="log", reg_lambda=0.0,
            offset=off, clip_coeffs=0.0, tol=1e-8, progress=False, key_added="nb",
        )  # fmt: skip
    ok = (b.var["nb_status"] == "ok").to_numpy()
    return {
        "intercept": b.var["nb_intercept"].to_numpy()[ok],
        "coef": np.asarray(b.varm["nb_coef"], dtype=float)[ok],
        "theta": np.minimum(b.var["nb_theta"].to_numpy()[ok], THETA_CAP),
        "n_pool": int(ok.sum()),
    }


def simulate(params: dict, n_genes: int, effect_scale: float, seed: int) -> ad.AnnData:
    """NB counts of ``n_genes`` genes resampled from ``params``; spatial effects × scale."""
    a, X, off = visium()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, params["intercept"].size, n_genes)
    coef = params["coef"][pick].copy()
    coef[:, 1:] *= effect_scale  # columns: section_CP, x, y
    Z = off[:, None] + params["intercept"][pick][None, :] + X.to_numpy() @ coef.T
    Mu = np.exp(Z)
    theta = params["theta"][pick][None, :]
    Y = rng.poisson(rng.gamma(theta, Mu / theta)).astype(float)
    sim = ad.AnnData(sp.csr_matrix(Y), obs=a.obs[["list_ID"]].copy())
    sim.var_names = [f"sim{i}" for i in range(n_genes)]
    return sim


def run_test(sim: ad.AnnData, test: str, theta) -> pd.DataFrame:
    from stglm import test_genes

    _, X, off = visium()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return test_genes(
            sim, design=X, reduced=REDUCED, theta=theta, offset=off, size_factors=None,
            test=test, progress=False,
        )  # fmt: skip


def summary(tab: pd.DataFrame) -> dict:
    p = tab["pvalue"].dropna().to_numpy()
    n = p.size
    rate = float(np.mean(p < 0.05))
    ci = stats.binomtest(int(np.sum(p < 0.05)), n).proportion_ci(0.95)
    return {
        "n": n,
        "ks_p": float(stats.kstest(p, "uniform").pvalue),
        "rate05": rate,
        "ci95": (float(ci.low), float(ci.high)),
        "rate01": float(np.mean(p < 0.01)),
        "statuses": tab["status"].value_counts().to_dict(),
    }


def band(n: int, z: float = 3.29) -> tuple[float, float]:
    """0.05 ± z·√(0.05·0.95/n): where the type-I rate of n uniform p-values falls with
    probability 99.9 % (z = 3.29)."""
    half = z * np.sqrt(0.05 * 0.95 / n)
    return 0.05 - half, 0.05 + half


def check_null(test: str, theta, n_genes: int, pool: int | None, lo_hi=None) -> dict:
    params = fitted_parameters(pool)
    t0 = time.perf_counter()
    tab = run_test(simulate(params, n_genes, 0.0, SEED + 1), test, theta)
    res = summary(tab) | {"seconds": time.perf_counter() - t0, "pool": params["n_pool"]}
    print(f"\nnull {test} theta={theta} G={n_genes}: {res}")
    lo, hi = lo_hi or band(res["n"])
    assert res["n"] >= 0.99 * n_genes, res  # (almost) every simulated gene testable
    assert res["ks_p"] > 0.01, res
    assert lo <= res["rate05"] <= hi, (res, (lo, hi))
    return res


def check_power(test: str, theta, n_genes: int, pool: int | None) -> None:
    params = fitted_parameters(pool)
    for k, scale in enumerate((1.0, 0.5)):
        tab = run_test(simulate(params, n_genes, scale, SEED + 2 + k), test, theta)
        p = tab["pvalue"].to_numpy()
        power = float(np.nanmean(p < 0.05))
        discoveries = float(np.nanmean(tab["qvalue"].to_numpy() <= 0.05))
        print(f"\npower {test} theta={theta} G={n_genes} effects x{scale}: p<0.05 {power:.3f}, "
              f"q<=0.05 {discoveries:.3f}")  # fmt: skip
        assert power > 0.1, power


# ---------------------------------------------------------------------------------------------
# quick versions (default suite)
# ---------------------------------------------------------------------------------------------
QUICK_GENES = 400
QUICK_POOL = 300


@pytest.mark.parametrize("theta", ["cox-reid", "ml"])
def test_lrt_null_calibrated_quick(theta):
    """400 null genes: KS p > 0.01 and the type-I error at 0.05 inside the 99.9 % binomial
    band (0.014, 0.086)."""
    check_null("lrt", theta, QUICK_GENES, QUICK_POOL)


def test_lrt_power_quick():
    check_power("lrt", "cox-reid", QUICK_GENES, QUICK_POOL)


def _has_ql() -> bool:
    from stglm import _gene_tests

    return "ql" in _gene_tests.TESTS


@pytest.mark.skipif(not _has_ql(), reason="test_genes(test='ql') is not wired yet")
def test_ql_null_calibrated_quick():
    check_null("ql", "cox-reid", QUICK_GENES, QUICK_POOL)


# ---------------------------------------------------------------------------------------------
# ≥ 2,000 genes (issue 12's criterion): make test-slow
# ---------------------------------------------------------------------------------------------
SLOW_GENES = 2000


@pytest.mark.slow
@pytest.mark.parametrize("theta", ["cox-reid", "ml"])
def test_lrt_null_calibrated(theta):
    """2,000 null genes resampled from every eligible real gene: KS p > 0.01 and type-I error
    at 0.05 in [0.04, 0.06]."""
    check_null("lrt", theta, SLOW_GENES, None, (0.04, 0.06))


@pytest.mark.slow
def test_lrt_power():
    check_power("lrt", "cox-reid", SLOW_GENES, None)


@pytest.mark.slow
@pytest.mark.skipif(not _has_ql(), reason="test_genes(test='ql') is not wired yet")
def test_ql_null_calibrated():
    check_null("ql", "cox-reid", SLOW_GENES, None, (0.04, 0.06))


@pytest.mark.slow
@pytest.mark.skipif(not _has_ql(), reason="test_genes(test='ql') is not wired yet")
def test_ql_power():
    check_power("ql", "cox-reid", SLOW_GENES, None)
