"""Negative-binomial count models: stglm ``fit_genes`` against glmGamPoi and MASS, in one run.

1. Visium prostate, all 1,255 genes, NB with Cox–Reid θ per gene, unpenalised: design =
   intercept + section indicator (CP) + x, y standardised within each section, offset
   log(total counts per spot). stglm ``fit_genes(theta="cox-reid", reg_lambda=0,
   offset=log total)`` against ``glmGamPoi::glm_gp(overdispersion=TRUE, offset=log total,
   size_factors=FALSE)`` timed inside R (default shrinkage, and without it).
2. The same model with ``theta="ml"`` against a loop of ``MASS::glm.nb`` over the genes.
3. Synthetic 10⁵ cells × 1,000 genes NB counts (CSR, seeded), stglm Cox–Reid against
   glm_gp, each in its own process: time and peak RSS (VmHWM).
4. Penalised NB with Cox–Reid θ along a CV path (25 λ × 5 folds) for all Visium genes on the
   demo's spatial design, with its distance to the Hessian-product floor.

Agreement is judged here, in numpy/scipy (never via stglm): the NB log-likelihood ℓ(β, θ)
and the Cox–Reid term −½ log det(X̃ᵀWX̃), W = μ/(1 + μ/θ), at each tool's (β, θ); θ that
maximise the textbook ℓ_CR and glmGamPoi's own objective ℓ − 0.99·½ log det at a given β are
found by a vectorised golden-section search in log θ.

Run (see README.md for why the OpenBLAS variables are unset; ≈ 25 min, ``--quick`` ≈ 3 min):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_counts.py

Writes benchmarks/results/counts.json and counts.md and prints the tables.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_genes as BG  # noqa: E402
import common as C  # noqa: E402

#: glmGamPoi multiplies its Cox–Reid term by this (``cr_correction_factor``).
GP_CR_FACTOR = 0.99
#: θ at or above this counts as "Poisson-like" (stglm's bound is 1e8, glmGamPoi's ∞).
THETA_POISSON = 1e6
LAG_GENES = ("KRT15", "TGM4", "CNN1")  # the demo's markers (src/stglm/demo.py)
SYN_SEED = 20261202
#: glm_gp on the synthetic data: all genes if the subset's time projects below this.
GP_FULL_BUDGET = 600.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr)


def timed(fn, repeats: int) -> tuple[dict, object]:
    """Median wall and CPU seconds of ``repeats`` calls after one warm-up; the last result."""
    box = {}

    def call():
        box["out"] = fn()

    t = C.median_time(call, repeats=repeats, min_time=0.0)
    t["load"] = os.getloadavg()[0]
    return t, box["out"]


# -------------------------------------------------------------------------------------------
# data
# -------------------------------------------------------------------------------------------


def visium(n_genes: int | None) -> dict:
    """Counts, the design (section_CP, x, y within section) and the offset log(total)."""
    import pandas as pd

    from stglm.datasets import visium_prostate
    from stglm.spatial import coordinates

    adata = visium_prostate()
    section = adata.obs["list_ID"].astype(str).to_numpy()
    coords = pd.concat([coordinates(adata[section == s]) for s in np.unique(section)])
    design = pd.DataFrame(
        {"section_CP": (section == "CP").astype(float)}, index=adata.obs_names
    ).join(coords.loc[adata.obs_names])
    offset = np.log(np.asarray(adata.X.sum(axis=1), dtype=np.float64).ravel())
    genes = list(adata.var_names[:n_genes]) if n_genes else list(adata.var_names)
    Y = np.asarray(adata[:, genes].X.toarray(), dtype=np.float64)  # (n, G)
    X1 = np.column_stack([np.ones(adata.n_obs), design.to_numpy(dtype=np.float64)])
    return {
        "adata": adata,
        "design": design,
        "genes": genes,
        "Y": Y,
        "X1": X1,
        "offset": offset,
    }


def synthetic(n: int, G: int, seed: int = SYN_SEED) -> dict:
    """NB counts, cells × genes CSR (int32 indices, float64 data), p = 4 incl. intercept.

    Size factors s_i log-normal (sd 0.5 on the log scale), scaled to geometric mean 1;
    gene means e^{b0_g} log-uniform in [0.01, 10]; X = three standard-normal columns with
    β_g ~ N(0, 0.2²); θ_g log-uniform in [0.3, 30]; y ~ Gamma–Poisson with mean
    s_i·exp(b0_g + x_iβ_g) and variance μ + μ²/θ_g. Offset log s (known to both tools).
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    logs = rng.normal(0.0, 0.5, n)
    logs -= logs.mean()
    X = rng.standard_normal((n, 3))
    b0 = rng.uniform(np.log(0.01), np.log(10.0), G)
    beta = rng.normal(0.0, 0.2, (G, 3))
    theta = np.exp(rng.uniform(np.log(0.3), np.log(30.0), G))
    cols = []
    step = 50
    for g0 in range(0, G, step):
        g1 = min(G, g0 + step)
        mu = np.exp(logs[:, None] + b0[g0:g1] + X @ beta[g0:g1].T)  # (n, k)
        lam = rng.gamma(theta[g0:g1], mu / theta[g0:g1])
        cols.append(sp.csc_matrix(rng.poisson(lam).astype(np.float64)))
    Ycsr = sp.hstack(cols, format="csr")
    Ycsr.indices = Ycsr.indices.astype(np.int32)
    Ycsr.indptr = Ycsr.indptr.astype(np.int32)
    return {
        "Y": Ycsr,
        "X": X,
        "offset": logs,
        "b0": b0,
        "beta": beta,
        "theta": theta,
    }


# -------------------------------------------------------------------------------------------
# the judge: NB log-likelihood, Cox–Reid term, θ maximisers (numpy/scipy, not stglm)
# -------------------------------------------------------------------------------------------


def nb_loglik(Y, Mu, theta) -> np.ndarray:
    """Σ_i ℓ_i per gene; Y, Mu (G, n), θ (G,) (∞ or ≥ 1e12: the Poisson limit).

    lnΓ(y+θ) − lnΓ(θ) − lnΓ(y+1) = −log y − B(θ, y) (y > 0) with scipy's betaln, which is
    accurate for large θ, and θ log θ − θ log(μ+θ) = −θ log1p(μ/θ): no O(θ) cancellation.
    """
    from scipy.special import betaln, gammaln, xlogy

    t = np.minimum(np.asarray(theta, dtype=np.float64), 1e12)[:, None]
    gi, ci = np.nonzero(Y)  # the count terms only where y > 0
    y, tt, mu = Y[gi, ci], t[gi, 0], Mu[gi, ci]
    with np.errstate(divide="ignore", invalid="ignore"):
        val = -t * np.log1p(Mu / t)
        val[gi, ci] += -np.log(y) - betaln(tt, y) + y * (np.log(mu) - np.log(mu + tt))
    # the Poisson limit where θ was ∞: y log μ − μ − lnΓ(y+1)
    inf = ~np.isfinite(np.asarray(theta, dtype=np.float64))
    if inf.any():
        val[inf] = xlogy(Y[inf], Mu[inf]) - Mu[inf] - gammaln(Y[inf] + 1)
    return val.sum(axis=1)


def cr_term(X1, Mu, theta) -> np.ndarray:
    """½ log det(X̃ᵀ W X̃) per gene, W = μ/(1 + μ/θ) (log link)."""
    t = np.asarray(theta, dtype=np.float64)[:, None]
    W = Mu / (1.0 + Mu / t)
    H = np.swapaxes(W[:, :, None] * X1[None, :, :], 1, 2) @ X1  # (G, m, m)
    sign, ld = np.linalg.slogdet(H)
    return np.where(sign > 0, 0.5 * ld, np.nan)


def means(X1, offset, coef) -> np.ndarray:
    """μ (G, n) from coefficients (G, m) (intercept first) and the offset."""
    return np.exp(offset[None, :] + coef @ X1.T)


LOG_THETA_MAX = float(np.log(1e8))


def argmax_theta(Y, Mu, X1, cr_factor: float, lo=-12.0, hi=LOG_THETA_MAX, iters=60):
    """θ maximising ℓ(θ) − cr_factor·½ log det at fixed μ, per gene (golden section in log θ).

    Returns θ and whether the maximum lies on the search bracket's edge [e^lo, e^hi].
    """
    G = Y.shape[0]

    def f(t):
        th = np.exp(t)
        val = nb_loglik(Y, Mu, th)
        if cr_factor:
            val = val - cr_factor * cr_term(X1, Mu, th)
        return val

    a, b = np.full(G, lo), np.full(G, hi)
    r = (np.sqrt(5) - 1) / 2
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        left = fc > fd  # maximum in [a, d]
        b = np.where(left, d, b)
        a = np.where(left, a, c)
        c_new = np.where(left, b - r * (b - a), d)
        d_new = np.where(left, c, a + r * (b - a))
        # one new evaluation per gene: where `left`, c moves; else d moves
        t_eval = np.where(left, c_new, d_new)
        f_eval = f(t_eval)
        fc, fd = np.where(left, f_eval, fd), np.where(left, fc, f_eval)
        c, d = c_new, d_new
    t = 0.5 * (a + b)
    edge = (t < lo + 1e-3) | (t > hi - 1e-3)
    return np.exp(t), edge


def floats(x) -> np.ndarray:
    """A JSON list (of lists) with nulls as a float array (NaN)."""
    if x and isinstance(x[0], list):
        return np.array([[np.nan if c is None else c for c in row] for row in x], dtype=float)
    return np.array([np.nan if c is None else c for c in x], dtype=float)


def rel(a, b) -> np.ndarray:
    return np.abs(a - b) / np.abs(b)


def summary(x) -> dict:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0}
    return {
        "n": int(x.size),
        "median": float(np.median(x)),
        "p95": float(np.quantile(x, 0.95)),
        "max": float(np.max(x)),
        "min": float(np.min(x)),
    }


def beta_rel(coef_s, coef_r) -> np.ndarray:
    """‖β_s − β_r‖∞ / ‖β_r‖∞ per gene (intercept included)."""
    return np.max(np.abs(coef_s - coef_r), axis=1) / np.max(np.abs(coef_r), axis=1)


def compare(v: dict, st: dict, peer_coef, peer_theta, *, cr: bool, keep) -> dict:
    """Agreement of θ and β and the objectives each reaches, on the genes in ``keep``."""
    Yt = v["Y"].T
    X1, off = v["X1"], v["offset"]
    ok = keep & np.all(np.isfinite(peer_coef), axis=1) & np.isfinite(peer_theta)
    ok &= np.all(np.isfinite(st["coef"]), axis=1)
    Ys = Yt[ok]
    th_s, th_r = st["theta"][ok], peer_theta[ok]
    Mu_s, Mu_r = means(X1, off, st["coef"][ok]), means(X1, off, peer_coef[ok])
    ll_s, ll_r = nb_loglik(Ys, Mu_s, th_s), nb_loglik(Ys, Mu_r, th_r)
    out = {"n_genes_compared": int(ok.sum()), "n_genes_excluded": int((~ok).sum())}
    both_interior = (th_s < THETA_POISSON) & (th_r < THETA_POISSON)
    both_poisson = (th_s >= THETA_POISSON) & (th_r >= THETA_POISSON)
    out["theta_rel_diff_interior"] = summary(rel(th_s, th_r)[both_interior])
    out["n_both_poisson_like"] = int(both_poisson.sum())
    out["n_one_poisson_like"] = int((~both_interior & ~both_poisson).sum())
    out["log_theta_abs_diff_interior"] = summary(np.abs(np.log(th_s / th_r))[both_interior])
    out["beta_rel_diff"] = summary(beta_rel(st["coef"][ok], peer_coef[ok]))
    out["beta_rel_diff_interior"] = summary(beta_rel(st["coef"][ok], peer_coef[ok])[both_interior])
    out["slope_abs_diff"] = summary(np.max(np.abs(st["coef"][ok, 1:] - peer_coef[ok, 1:]), axis=1))
    if not cr:
        d = ll_s - ll_r
        out["loglik_stglm_minus_peer"] = summary(d)
        out["n_peer_higher_loglik_1e-6"] = int(np.sum(d < -1e-6))
        return out
    cr_s, cr_r = cr_term(X1, Mu_s, th_s), cr_term(X1, Mu_r, np.minimum(th_r, 1e300))
    j_s, j_r = ll_s - cr_s, ll_r - cr_r  # textbook ℓ_CR
    g_s, g_r = ll_s - GP_CR_FACTOR * cr_s, ll_r - GP_CR_FACTOR * cr_r  # glmGamPoi's
    out["cr_objective_stglm_minus_peer"] = summary(j_s - j_r)
    out["n_peer_higher_cr_1e-6"] = int(np.sum(j_s - j_r < -1e-6))
    out["gp099_objective_stglm_minus_peer"] = summary(g_s - g_r)
    out["n_peer_higher_gp099_1e-6"] = int(np.sum(g_s - g_r < -1e-6))
    # θ maximisers at fixed β: does the 0.99 factor explain the θ difference?
    t_cr_s, e1 = argmax_theta(Ys, Mu_s, X1, 1.0)
    t_gp_s, e2 = argmax_theta(Ys, Mu_s, X1, GP_CR_FACTOR)
    t_gp_r, e3 = argmax_theta(Ys, Mu_r, X1, GP_CR_FACTOR)
    inner = both_interior & ~e1 & ~e2 & ~e3
    out["theta_stglm_vs_cr_argmax_at_stglm_beta"] = summary(rel(th_s, t_cr_s)[inner])
    out["theta_peer_vs_gp099_argmax_at_stglm_beta"] = summary(rel(th_r, t_gp_s)[inner])
    out["theta_peer_vs_gp099_argmax_at_peer_beta"] = summary(rel(th_r, t_gp_r)[inner])
    out["theta_cr_vs_gp099_argmax_at_stglm_beta"] = summary(rel(t_cr_s, t_gp_s)[inner])
    out["n_genes_theta_argmax"] = int(inner.sum())
    return out


# -------------------------------------------------------------------------------------------
# stglm
# -------------------------------------------------------------------------------------------


def stglm_nb(adata, genes, design, offset, theta, reg_lambda=0.0, **kw) -> dict:
    from stglm import fit_genes

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit_genes(
            adata,
            genes,
            design=design,
            distr="neg-binomial",
            link="log",
            theta=theta,
            reg_lambda=reg_lambda,
            offset=offset,
            clip_coeffs=0.0,
            progress=False,
            copy=True,
            **kw,
        )
    var = res.var.loc[genes] if genes is not None else res.var
    coef = res.varm["stglm_coef"].loc[var.index].to_numpy()
    return {
        "coef": np.column_stack([var["stglm_intercept"].to_numpy(), coef]),
        "theta": var["stglm_theta"].to_numpy(dtype=np.float64),
        "theta_status": var["stglm_theta_status"].astype(str).to_numpy(),
        "status": var["stglm_status"].astype(str).to_numpy(),
        "n_iter": var["stglm_n_iter"].to_numpy(dtype=np.int64),
        "converged": var["stglm_converged"].to_numpy(dtype=bool),
        "lam": var["stglm_lambda"].to_numpy(dtype=np.float64),
        "n_warnings": len(caught),
        "warnings": sorted({str(w.message)[:120] for w in caught}),
    }


def profile_call(fn, path: Path) -> list[dict]:
    """cProfile of one call of ``fn`` (1 BLAS thread) to ``path``; the top 12 by tottime."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    with C.threads(1):
        prof.enable()
        fn()
        prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(25)
    st.sort_stats("cumulative").print_stats(35)
    path.write_text(buf.getvalue())
    top = []
    for (fn_name, line, name), (_cc, nc, tt, ct, _callers) in sorted(
        st.stats.items(), key=lambda kv: -kv[1][2]
    )[:12]:
        top.append({"function": f"{Path(fn_name).name}:{line}({name})", "ncalls": nc,
                    "tottime": tt, "cumtime": ct})  # fmt: skip
    return top


def status_counts(x) -> dict:
    return dict(collections.Counter(map(str, x)).most_common())


# -------------------------------------------------------------------------------------------
# 1 + 2: Visium unpenalised, against glm_gp and glm.nb
# -------------------------------------------------------------------------------------------


def once(fn) -> tuple[dict, object]:
    """Wall and CPU seconds of one call of ``fn``, and its result."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return {"wall": time.perf_counter() - w, "cpu": time.process_time() - c}, out


def medians(calls: list[dict]) -> dict:
    """A timing dict (``timed``'s keys) from single calls: medians of wall and CPU."""
    return {
        "median": float(np.median([c["wall"] for c in calls])),
        "cpu": float(np.median([c["cpu"] for c in calls])),
        "times": [c["wall"] for c in calls],
        "cpu_times": [c["cpu"] for c in calls],
        "load": os.getloadavg()[0],
    }


def merge_r_calls(calls: list[dict]) -> dict:
    """One peer's results from single-repeat R calls: the last call's fit, median times."""
    out = dict(calls[-1])
    for key in ("elapsed", "cpu"):
        out[key] = float(np.median([c[key] for c in calls]))
    out["elapsed_all"] = [c["elapsed"] for c in calls]
    out["cpu_all"] = [c["cpu"] for c in calls]
    out["gc_max_used_rise_mb"] = max(c["gc_max_used_rise_mb"] for c in calls)
    return out


def bench_visium(v: dict, repeats: int, r_ok: bool) -> dict:
    """stglm Cox–Reid and ML against glm_gp, interleaved: in each of ``repeats`` rounds one
    call of each stglm fit, then one glm_gp call (an R process that times itself)."""
    adata, genes, design, off = v["adata"], v["genes"], v["design"], v["offset"]
    out = {"n_genes": len(genes), "n_obs": adata.n_obs, "design": ["intercept", *design.columns]}
    arrays = {"Y": v["Y"].T, "X": v["X1"], "off": v["offset"]}
    gp_task = {"kind": "glm_gp", "label": "glm_gp default", "Y": "Y", "X": "X", "offset": "off",
               "shrinkage": True, "repeats": 1, "return_fit": True}  # fmt: skip
    calls: dict = {"cox-reid": [], "ml": []}
    results: dict = {}
    gp_calls = []
    with C.threads(1):
        for th in calls:  # warm-up (numba's kernels loaded)
            stglm_nb(adata, genes, design, off, th)
    for k in range(repeats):
        with C.threads(1):
            for th in calls:
                t, results[th] = once(lambda th=th: stglm_nb(adata, genes, design, off, th))
                calls[th].append(t)
                log(f"stglm theta={th} run {k + 1}: {C.fmt_time(t['wall'])} wall, "
                    f"{C.fmt_time(t['cpu'])} CPU")  # fmt: skip
        if r_ok:
            r = C.run_r("counts_peers.R", [gp_task], arrays)
            gp_calls.append(r["results"][0])
            log(f"glm_gp default run {k + 1}: {gp_calls[-1]['elapsed']:.1f} s wall, "
                f"{gp_calls[-1]['cpu']:.1f} s CPU")  # fmt: skip
    st = {}
    for th, res in results.items():
        with C.threads(1):
            res["peak_tracemalloc"] = C.tracemalloc_peak(
                lambda th=th: stglm_nb(adata, genes, design, off, th)
            )
        st[th] = {"timing": medians(calls[th]), "res": res}
        st[th]["status_counts"] = status_counts(res["status"])
        st[th]["theta_status_counts"] = status_counts(res["theta_status"])
    out["stglm"] = st
    if not r_ok:
        return out
    tasks = [
        {"kind": "glm_gp", "label": "glm_gp no shrinkage", "Y": "Y", "X": "X", "offset": "off",
         "shrinkage": False, "repeats": 1, "return_fit": True},
        {"kind": "glm_nb", "label": "glm.nb loop", "Y": "Y", "X": "X", "offset": "off",
         "repeats": 1},
    ]  # fmt: skip
    log("R: glm_gp without shrinkage and the glm.nb loop")
    t0 = time.time()
    r = C.run_r("counts_peers.R", tasks, arrays)
    log(f"  R done in {time.time() - t0:.0f} s")
    peers = {"glm_gp default": merge_r_calls(gp_calls), **{x["label"]: x for x in r["results"]}}
    out["r_process"] = {k: r[k] for k in ("VmHWM_kB", "VmRSS_kB", "VmRSS_after_load_kB")}
    out["r_versions"] = r["versions"]
    nonzero = v["Y"].sum(axis=0) > 0
    # Genes without a count in one section: the section coefficient's MLE is −∞ (complete
    # separation), every tool stops somewhere along the ray, and the Cox–Reid term grows
    # without bound along it. Judged separately.
    sec = v["design"]["section_CP"].to_numpy() == 1
    separated = nonzero & ((v["Y"][sec].sum(axis=0) == 0) | (v["Y"][~sec].sum(axis=0) == 0))
    out["n_all_zero"] = int((~nonzero).sum())
    out["n_separated"] = int(separated.sum())
    keep = nonzero & ~separated
    for label, p in peers.items():
        p = dict(p)
        if p["kind"] == "glm_gp":
            coef = floats(p.pop("Beta")).reshape(len(genes), -1)
            od = floats(p.pop("overdispersions"))
            with np.errstate(divide="ignore"):
                theta = np.where(od > 0, 1.0 / od, np.inf)
            p["agreement"] = compare(v, st["cox-reid"]["res"], coef, theta, cr=True, keep=keep)
            p["agreement_separated"] = compare(
                v, st["cox-reid"]["res"], coef, theta, cr=True, keep=separated
            )
            p["n_od_zero"] = int(np.sum(od == 0))
        else:
            coef = floats(p.pop("coef")).reshape(len(genes), -1)
            theta = floats(p.pop("theta"))
            n_warn = np.asarray(p["n_warn"])
            err = np.asarray(p["error"], dtype=object)
            p["n_errors"] = int(np.sum(err != ""))
            p["n_warned"] = int(np.sum(n_warn > 0))
            p["errors_top"] = collections.Counter(e for e in err if e).most_common(3)
            p["warnings_top"] = collections.Counter(w for w in p["warning"] if w).most_common(4)
            clean = keep & (n_warn == 0) & (err == "")
            p["agreement_all"] = compare(v, st["ml"]["res"], coef, theta, cr=False, keep=keep)
            p["agreement_clean"] = compare(v, st["ml"]["res"], coef, theta, cr=False, keep=clean)
            p["agreement_separated"] = compare(
                v, st["ml"]["res"], coef, theta, cr=False, keep=separated
            )
            p["n_warned_not_separated"] = int(np.sum((n_warn > 0) & keep))
            p["stglm_status_where_nb_failed"] = status_counts(
                st["ml"]["res"]["theta_status"][(n_warn > 0) | (err != "")]
            )
            del p["n_warn"], p["error"], p["warning"]
        out[label] = p
    return out


# -------------------------------------------------------------------------------------------
# 3: synthetic, each tool in its own process
# -------------------------------------------------------------------------------------------


def vm_status() -> dict:
    d = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            k, _, rest = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                d[k + "_kB"] = int(rest.split()[0])
    return d


def stglm_job(folder: str) -> None:
    """In a fresh process: load the CSR, fit all genes (Cox–Reid), print a JSON line."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from stglm import fit_genes

    f = Path(folder)
    n, G = (int(x) for x in (f / "shape.txt").read_text().split())
    Y = sp.csr_matrix(
        (np.fromfile(f / "data.bin"), np.fromfile(f / "indices.bin", np.int32),
         np.fromfile(f / "indptr.bin", np.int32)),
        shape=(n, G),
    )  # fmt: skip
    X = np.fromfile(f / "X.bin").reshape(3, n).T  # written column-major
    off = np.fromfile(f / "off.bin")
    adata = ad.AnnData(Y)
    adata.obs_names = [f"c{i}" for i in range(n)]
    adata.var_names = [f"g{j}" for j in range(G)]
    design = pd.DataFrame(X, index=adata.obs_names, columns=["x1", "x2", "x3"])
    loaded = vm_status()
    kw = dict(distr="neg-binomial", link="log", theta="cox-reid", reg_lambda=0.0,
              clip_coeffs=0.0, progress=False, copy=True)  # fmt: skip
    with C.threads(1):
        small = adata[:2000, :4].copy()
        fit_genes(small, design=design.iloc[:2000], offset=off[:2000], **kw)  # numba warm-up
        t, c = time.perf_counter(), time.process_time()
        res = fit_genes(adata, design=design, offset=off, **kw)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    var = res.var
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": cpu,
                "ru_maxrss_kB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                **vm_status(),
                "VmRSS_after_load_kB": loaded["VmRSS_kB"],
                "VmHWM_after_load_kB": loaded["VmHWM_kB"],
                "n_iter": var["stglm_n_iter"].to_numpy().tolist(),
                "theta": var["stglm_theta"].to_numpy().tolist(),
                "theta_status": var["stglm_theta_status"].astype(str).tolist(),
                "intercept": var["stglm_intercept"].to_numpy().tolist(),
                "coef": res.varm["stglm_coef"].to_numpy().tolist(),
                "converged": var["stglm_converged"].to_numpy(dtype=bool).tolist(),
            }
        )
    )


def bench_synthetic(n: int, G: int, gp_genes: int, r_ok: bool) -> dict:
    log(f"synthetic {n:,} × {G:,}: generating")
    t0 = time.perf_counter()
    s = synthetic(n, G)
    Y = s["Y"]
    out = {
        "n_obs": n,
        "n_genes": G,
        "nnz": int(Y.nnz),
        "density": Y.nnz / (n * G),
        "csr_bytes": int(Y.data.nbytes + Y.indices.nbytes + Y.indptr.nbytes),
        "generate_s": time.perf_counter() - t0,
        "seed": SYN_SEED,
    }
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp)
        Y.data.tofile(f / "data.bin")
        Y.indices.tofile(f / "indices.bin")
        Y.indptr.tofile(f / "indptr.bin")
        (f / "shape.txt").write_text(f"{n} {G}")
        X1 = np.column_stack([np.ones(n), s["X"]])
        s["X"].ravel(order="F").tofile(f / "X.bin")
        X1.ravel(order="F").tofile(f / "X1.bin")
        s["offset"].tofile(f / "off.bin")
        del Y
        log("  stglm job")
        res = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--job-stglm", tmp],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise RuntimeError(f"stglm job failed:\n{res.stderr[-3000:]}")
        job = json.loads(res.stdout.strip().splitlines()[-1])
        log(f"  stglm {C.fmt_time(job['wall'])} wall, VmHWM {job['VmHWM_kB'] / 1024:.0f} MiB")
        coef = np.column_stack([job.pop("intercept"), np.asarray(job.pop("coef"))])
        theta = np.asarray(job.pop("theta"))
        job["theta_status"] = status_counts(job["theta_status"])
        job["n_iter_sum"] = int(np.sum(job["n_iter"]))
        job["converged_frac"] = float(np.mean(job.pop("converged")))
        truth = np.column_stack([s["b0"], s["beta"]])
        job["vs_truth"] = {
            "log_theta_abs_err": summary(np.abs(np.log(theta / s["theta"]))),
            "slope_abs_err": summary(np.max(np.abs(coef[:, 1:] - truth[:, 1:]), axis=1)),
        }
        out["stglm"] = job
        out["stglm_coef"], out["stglm_theta"] = coef, theta
        if not r_ok:
            return out

        def r_job(genes: int, repeats: int = 1) -> dict:
            spec = {
                "arrays": {
                    "X": {"path": str(f / "X1.bin"), "nrow": n, "ncol": 4},
                    "off": {"path": str(f / "off.bin"), "nrow": n, "ncol": 1},
                },
                "csr": {
                    "indptr": str(f / "indptr.bin"),
                    "indices": str(f / "indices.bin"),
                    "data": str(f / "data.bin"),
                    "n_obs": n,
                    "n_genes": G,
                },
                "tasks": [
                    {"kind": "glm_gp", "label": "glm_gp", "X": "X", "offset": "off",
                     "genes": genes, "shrinkage": True, "repeats": repeats,
                     "return_fit": True}
                ],
            }  # fmt: skip
            (f / "spec.json").write_text(json.dumps(spec))
            rr = subprocess.run(
                ["Rscript", str(HERE / "counts_peers.R"), str(f / "spec.json"), str(f / "o.json")],
                capture_output=True,
                text=True,
            )
            if rr.returncode != 0:
                raise RuntimeError(f"R synthetic job failed:\n{rr.stdout}\n{rr.stderr[-3000:]}")
            o = json.loads((f / "o.json").read_text())
            p = o["results"][0]
            p["VmHWM_kB"], p["VmRSS_after_load_kB"] = o["VmHWM_kB"], o["VmRSS_after_load_kB"]
            return p

        log(f"  glm_gp on the first {gp_genes} genes")
        p = r_job(gp_genes)
        projected = p["elapsed"] * G / gp_genes
        log(f"  glm_gp {gp_genes} genes {C.fmt_time(p['elapsed'])}; projected {projected:.0f} s")
        p["projected_all_genes_elapsed"] = projected
        p["projected_all_genes_cpu"] = p["cpu"] * G / gp_genes
        p["extrapolated"] = gp_genes < G
        if gp_genes < G and projected <= GP_FULL_BUDGET:
            log("  glm_gp on all genes")
            p = r_job(G)
            p["extrapolated"] = False
        k = p["n_genes"]
        gcoef = floats(p.pop("Beta")).reshape(k, -1)
        od = floats(p.pop("overdispersions"))
        with np.errstate(divide="ignore"):
            gth = np.where(od > 0, 1.0 / od, np.inf)
        both = (gth < THETA_POISSON) & (theta[:k] < THETA_POISSON)
        p["agreement_first_genes"] = {
            "n_genes": k,
            "theta_rel_diff": summary(rel(theta[:k], gth)[both]),
            "beta_rel_diff": summary(beta_rel(coef[:k], gcoef)),
            "glm_gp_log_theta_abs_err_vs_truth": summary(np.abs(np.log(gth / s["theta"][:k]))),
        }
        out["glm_gp"] = p
    return out


# -------------------------------------------------------------------------------------------
# 4: penalised NB with θ along a CV path, and its Hessian-product floor
# -------------------------------------------------------------------------------------------


def bench_cv(v: dict, n_genes: int | None, repeats: int) -> dict:
    from stglm.spatial import build_design

    adata = v["adata"]
    design = build_design(adata, section_key="list_ID", lag=list(LAG_GENES), coords=True)
    genes = list(adata.var_names[:n_genes]) if n_genes else list(adata.var_names)
    log(
        f"CV: fit_genes(reg_lambda=None, theta='cox-reid'), {len(genes)} genes, "
        f"{design.shape[1]} predictors"
    )
    with C.threads(1):
        if repeats > 1:
            t, res = timed(
                lambda: stglm_nb(adata, genes, design, v["offset"], "cox-reid", reg_lambda=None),
                repeats,
            )
        else:  # one run, no warm-up (numba's kernels are compiled by the fits before)
            w, c = time.perf_counter(), time.process_time()
            res = stglm_nb(adata, genes, design, v["offset"], "cox-reid", reg_lambda=None)
            t = {"median": time.perf_counter() - w, "cpu": time.process_time() - c,
                 "load": os.getloadavg()[0], "times": [time.perf_counter() - w]}  # fmt: skip
    log(f"  {C.fmt_time(t['median'])} wall, {C.fmt_time(t['cpu'])} CPU")
    return {
        "n_genes": len(genes),
        "predictors": list(design.columns),
        "timing": t,
        "per_gene_wall": t["median"] / len(genes),
        "per_gene_cpu": t["cpu"] / len(genes),
        "n_iter": res["n_iter"],
        "n_iter_sum": int(res["n_iter"].sum()),
        "converged_frac": float(res["converged"].mean()),
        "theta_status": status_counts(res["theta_status"]),
        "theta_median": float(np.median(res["theta"])),
        "lambda_median": float(np.median(res["lam"])),
        "n_warnings": res["n_warnings"],
        "warnings": res["warnings"],
        "p": design.shape[1],
    }


def floors(v: dict, vis: dict, cv: dict) -> dict:
    """Hessian products W·Z (+ exponentials) at this machine's rates for the iterations done."""
    n = v["adata"].n_obs
    shapes = {}
    for key, p in (("unpenalised", v["X1"].shape[1] - 1), ("cv", cv["p"])):
        m = p + 1
        shapes[key] = (n, m * (m + 1) // 2, min(128, vis["n_genes"]))
    rates = BG.machine_rates(shapes)
    out = {"rates": rates}
    for th in ("cox-reid", "ml"):
        st = vis["stglm"][th]
        out[f"visium {th}"] = BG.floor(
            n, v["X1"].shape[1] - 1, st["res"]["n_iter"], st["timing"]["cpu"],
            rates["gemm"]["unpenalised"], rates,
        )  # fmt: skip
    # CV: the fold paths' iterations (0.8·n cells) and the refit's (n), all charged at 0.8·n
    out["visium CV cox-reid"] = BG.floor(
        0.8 * n, cv["p"], cv["n_iter"], cv["timing"]["cpu"], rates["gemm"]["cv"], rates
    )
    return out


# -------------------------------------------------------------------------------------------
# tables
# -------------------------------------------------------------------------------------------


def fmt_ratio(x) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.1f}×"


def s3(d: dict, key="median") -> str:
    return "-" if not d or d.get("n", 0) == 0 else f"{d[key]:.1e}"


def agreement_cells(a: dict, cr: bool) -> list[str]:
    th = a["theta_rel_diff_interior"]
    cells = [
        f"{s3(th)} / {s3(th, 'max')} ({th.get('n', 0)} genes; Poisson-like both "
        f"{a['n_both_poisson_like']}, one {a['n_one_poisson_like']})",
        f"{s3(a['beta_rel_diff'])} / {s3(a['beta_rel_diff'], 'max')}",
    ]
    if cr:
        d, g = a["cr_objective_stglm_minus_peer"], a["gp099_objective_stglm_minus_peer"]
        cells.append(
            f"ℓ_CR: {d['median']:+.1e} (min {d['min']:+.1e}, {a['n_peer_higher_cr_1e-6']} genes "
            f"peer higher); 0.99: {g['median']:+.1e} (min {g['min']:+.1e}, "
            f"{a['n_peer_higher_gp099_1e-6']} genes peer higher)"
        )
    else:
        d = a["loglik_stglm_minus_peer"]
        cells.append(
            f"ℓ: {d['median']:+.1e} (min {d['min']:+.1e}, max {d['max']:+.1e}; "
            f"{a['n_peer_higher_loglik_1e-6']} genes peer higher)"
        )
    return cells


def table(res: dict) -> str:
    vis, syn, cv = res["visium"], res.get("synthetic"), res["cv"]
    headers = ["case", "tool", "wall (median)", "CPU (median)", "peer / stglm (wall, CPU)",
               "θ rel. diff median / max", "β rel. diff median / max", "objective, stglm − peer",
               "peak memory"]  # fmt: skip
    rows = []
    G = vis["n_genes"]
    for th, case, peers in (
        (
            "cox-reid",
            f"1. Visium {G} genes, NB Cox–Reid",
            ("glm_gp default", "glm_gp no shrinkage"),
        ),
        ("ml", f"2. Visium {G} genes, NB ML", ("glm.nb loop",)),
    ):
        st = vis["stglm"][th]
        t = st["timing"]
        rows.append([case, f"stglm fit_genes(theta='{th}')", C.fmt_time(t["median"]),
                     C.fmt_time(t["cpu"]), "1.0×", "", "", "",
                     f"{C.fmt_mem(st['res']['peak_tracemalloc'])} (tracemalloc)"])  # fmt: skip
        for label in peers:
            p = vis.get(label)
            if p is None:
                continue
            if label.startswith("glm_gp"):
                ag = agreement_cells(p["agreement"], True)
                note = f" ({len(p['elapsed_all'])} runs)"
            else:
                ag = agreement_cells(p["agreement_all"], False)
                note = f" (1 run; {p['n_errors']} errors, {p['n_warned']} genes warned)"
            rows.append([
                "", label + note, C.fmt_time(p["elapsed"]), C.fmt_time(p["cpu"]),
                f"{fmt_ratio(p['elapsed'] / t['median'])}, {fmt_ratio(p['cpu'] / t['cpu'])}",
                *ag, f"{p['gc_max_used_rise_mb']:.0f} MB (R gc max-used rise)",
            ])  # fmt: skip
    if syn:
        s = syn["stglm"]
        rows.append([
            f"3. synthetic {syn['n_obs']:,} × {syn['n_genes']:,} NB (CSR, density "
            f"{syn['density']:.2f})", "stglm fit_genes(theta='cox-reid')", C.fmt_time(s["wall"]),
            C.fmt_time(s["cpu"]), "1.0×", "", "", "",
            f"VmHWM {s['VmHWM_kB'] / 1024:.0f} MiB (after load "
            f"{s['VmRSS_after_load_kB'] / 1024:.0f})",
        ])  # fmt: skip
        p = syn.get("glm_gp")
        if p:
            k = p["n_genes"]
            if p["extrapolated"]:
                tw, tc = p["projected_all_genes_elapsed"], p["projected_all_genes_cpu"]
                label = f"glm_gp default, {k} genes × {syn['n_genes'] / k:.0f} (extrapolated)"
            else:
                tw, tc = p["elapsed"], p["cpu"]
                label = "glm_gp default"
            a = p["agreement_first_genes"]
            rows.append([
                "", label, C.fmt_time(tw), C.fmt_time(tc),
                f"{fmt_ratio(tw / s['wall'])}, {fmt_ratio(tc / s['cpu'])}",
                f"{s3(a['theta_rel_diff'])} / {s3(a['theta_rel_diff'], 'max')} (first {k} genes)",
                f"{s3(a['beta_rel_diff'])} / {s3(a['beta_rel_diff'], 'max')}", "-",
                f"VmHWM {p['VmHWM_kB'] / 1024:.0f} MiB ({k} genes; after load "
                f"{p['VmRSS_after_load_kB'] / 1024:.0f})",
            ])  # fmt: skip
    t = cv["timing"]
    fl = res["floors"]["visium CV cox-reid"]
    rows.append([
        f"4. Visium {cv['n_genes']} genes, penalised NB Cox–Reid, CV 25 λ × 5 folds",
        "stglm fit_genes(reg_lambda=None)", C.fmt_time(t["median"]), C.fmt_time(t["cpu"]),
        "no peer", f"{C.fmt_time(cv['per_gene_cpu'])} CPU per gene",
        f"{cv['n_iter_sum']:,} Newton iterations", f"floor {C.fmt_time(fl['floor'])} → "
        f"{fl['ratio']:.1f}× the floor", "-",
    ])  # fmt: skip
    return C.markdown_table(headers, rows)


def floor_table(fl: dict) -> str:
    rows = []
    for name, f in fl.items():
        if name == "rates":
            continue
        rows.append([
            name, f"{f['n_iter_sum']:,}", str(f["pairs"]), f"{f['hessian_gflop']:.2f}",
            f"{f['gemm_gflops']:.1f}", C.fmt_time(f["t_hessian_at_shape_rate"]),
            C.fmt_time(f["t_exp"]), C.fmt_time(f["floor"]), C.fmt_time(f["measured"]),
            f"{f['ratio']:.1f}×",
        ])  # fmt: skip
    return C.markdown_table(
        ["fit", "Newton iterations", "pairs m(m+1)/2", "Hessian GFLOP", "W·Z GFLOP/s (1 thread)",
         "Hessian products", "exponentials", "floor", "measured CPU", "measured / floor"],
        rows,
    )  # fmt: skip


# -------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 Visium genes, 10⁴ × 100 synthetic")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3, quick 1)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--job-stglm", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.job_stglm:
        stglm_job(args.job_stglm)
        return 0
    if os.environ.get("OPENBLAS_CORETYPE"):
        print("note: OPENBLAS_CORETYPE is set; see README.md for the recommended command.",
              file=sys.stderr)  # fmt: skip
    repeats = args.repeats or (1 if args.quick else 3)
    t0 = time.time()
    load_start = C.loadavg()
    source_start = BG.git_state()  # the lead may commit during a long run: both ends recorded
    r_ok = C.r_available()
    info = C.machine_info()
    n_vis = 100 if args.quick else None
    v = visium(n_vis)
    vis = bench_visium(v, repeats, r_ok)
    args.out.mkdir(parents=True, exist_ok=True)
    prof_name = "counts_profile_quick.txt" if args.quick else "counts_profile.txt"
    log("cProfile of stglm fit_genes(theta='cox-reid')")
    vis["profile_cox_reid_top_tottime"] = profile_call(
        lambda: stglm_nb(v["adata"], v["genes"], v["design"], v["offset"], "cox-reid"),
        args.out / prof_name,
    )
    syn = None
    if not args.skip_synthetic:
        n, G, gp_genes = (10_000, 100, 20) if args.quick else (100_000, 1_000, 100)
        syn = bench_synthetic(n, G, gp_genes, r_ok)
    cv = bench_cv(v, 50 if args.quick else None, 1)
    fl = floors(v, vis, cv)
    res = {
        "command": " ".join(["env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python",
                             "benchmarks/bench_counts.py", *(argv or sys.argv[1:])]),
        "source": BG.git_state(),
        "source_start": source_start,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": info,
        "load_start": load_start,
        "repeats": repeats,
        "visium": vis,
        "synthetic": syn,
        "cv": cv,
        "floors": fl,
    }  # fmt: skip
    res["load_end"] = C.loadavg()
    res["elapsed_s"] = time.time() - t0
    tab = table(res)
    ftab = floor_table(fl)
    print(tab, "\n\n", ftab)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "counts_quick" if args.quick else "counts"
    clean = json.loads(json.dumps(res, default=C.jsonable))
    if syn:
        clean["synthetic"].pop("stglm_coef", None)
        clean["synthetic"].pop("stglm_theta", None)
    (args.out / f"{name}.json").write_text(json.dumps(clean, indent=1))
    md = "\n\n".join([
        f"Command: `{res['command']}` ({res['elapsed_s']:.0f} s). Source: {source_start} at "
        f"the start, {res['source']} at the end. "
        f"Run at {res['date']}; load average {load_start} at the start, {res['load_end']} "
        f"at the end; CPU {info['cpu']}, {info['cores']} cores; {vis.get('r_versions', 'no R')}.",
        tab, ftab,
    ])  # fmt: skip
    (args.out / f"{name}.md").write_text(md + "\n")
    print(f"\nwrote {args.out / (name + '.json')} ({res['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
