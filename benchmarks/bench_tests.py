"""Per-gene tests: stglm ``test_genes`` against glmGamPoi (NB) and a statsmodels loop (Poisson).

Visium prostate, all 1,255 genes × 2,327 spots (``--quick``: the first 100 genes), design =
intercept + section indicator (``list_ID == "CP"``) + x, y standardised within each section
(``stglm.spatial.coordinates``), offset log(total counts per spot) (stglm ``size_factors=None``;
glm_gp ``size_factors=FALSE``: the same offset), testing the coordinates (reduced = section).

1. NB, Cox–Reid θ per gene: ``test_genes(test="lrt")`` (and ``"ql"`` when
   ``stglm._gene_tests.TESTS`` has it) against ``glmGamPoi::glm_gp(overdispersion=TRUE)`` +
   ``test_de(reduced_design=section)`` (the QL F-test), timed inside R in the same run
   (tests_peers.R). glmGamPoi has no likelihood-ratio test, so R's LR is computed in R from two
   glm_gp fits' log-likelihoods (θ per model, as ``anova.negbin``): stglm's LRT is compared
   with that, its QL with test_de.
2. Poisson: ``test_genes(distr="poisson", test="lrt")`` (x, y) and ``test="wald"`` (reduced =
   section + y, testing x), and ``fit_genes(reg_lambda=0, inference=True)`` (Wald for every
   coefficient; ``link="log"``: fit_genes' default Poisson link is the linearised exponential
   of ``eta=2``), against a loop of ``statsmodels`` ``GLM(y, X, family=Poisson(),
   offset=off).fit()`` over the genes (LR from two fits' ``llf``; Wald from ``tvalues`` /
   ``pvalues``). Every Python peer with BLAS limited to 1 thread (common.threads).
3. Peak memory: each Python tool in its own subprocess (VmHWM − VmRSS after loading the data,
   over a first call; tracemalloc peak of a second call; statsmodels: its first 200 genes
   under tracemalloc), R's gc() "max used" rise and its process's VmHWM.

Agreement (numpy/scipy here): correlation of log10 p, median and max |Δlog10 p|, the
q ≤ 0.05 sets (counts each, Jaccard), relative differences of the statistics, on genes both
tools test (stglm status "ok", R finite). A cProfile of the stglm NB call is written to
results/tests_profile.txt.

Run (see README.md for why the OpenBLAS variables are unset; ≈ 10 min on a quiet machine,
``--quick`` ≈ 1 min):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_tests.py

Writes benchmarks/results/tests.json and tests.md (``--quick``: tests_quick.*) and prints
the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_counts as BC  # noqa: E402
import bench_genes as BG  # noqa: E402
import common as C  # noqa: E402

REDUCED = ["section_CP"]
REDUCED_WALD = ["section_CP", "y"]
Q_LEVEL = 0.05
P_FLOOR = 1e-300  # log10 p of p = 0 (underflow) is taken at this floor
SM_TRACE_GENES = 200

log = BC.log


# -------------------------------------------------------------------------------------------
# the tools
# -------------------------------------------------------------------------------------------


def has_ql() -> bool:
    from stglm import _gene_tests

    return "ql" in _gene_tests.TESTS


def stglm_test(v: dict, kind: str):
    """One stglm call; returns the DataFrame (or, for "inference", a frame of z/p for x)."""
    import pandas as pd

    import stglm

    adata, genes, design, off = v["adata"], v["genes"], v["design"], v["offset"]
    common = dict(design=design, offset=off, size_factors=None, progress=False, copy=True)

    def table(**kw):  # test_genes(copy=True) returns (table, the copy)
        return stglm.test_genes(adata, genes, **common, **kw)[0]

    if kind == "nb_lrt":  # Cox–Reid θ per model, like glm_gp's
        return table(reduced=REDUCED, test="lrt", theta="cox-reid")
    if kind == "nb_lrt_default":  # test_genes' default θ for the LRT (ML since 75fdc6d)
        return table(reduced=REDUCED, test="lrt")
    if kind == "nb_ql":
        return table(reduced=REDUCED, test="ql")
    if kind == "pois_lrt":
        return table(reduced=REDUCED, distr="poisson", test="lrt")
    if kind == "pois_wald":
        return table(reduced=REDUCED_WALD, distr="poisson", test="wald")
    if kind == "pois_inference":
        res = stglm.fit_genes(
            adata, genes, distr="poisson", link="log", reg_lambda=0.0, inference=True,
            clip_coeffs=0.0, **common,
        )  # fmt: skip
        se, p = res.varm["stglm_se"].loc[genes], res.varm["stglm_pvalue"].loc[genes]
        coef = res.varm["stglm_coef"].loc[genes]
        return pd.DataFrame(
            {"coef_x": coef["x"], "se_x": se["x"], "pvalue_x": p["x"], "se_y": se["y"],
             "pvalue_y": p["y"], "coef_y": coef["y"]}, index=genes,
        )  # fmt: skip
    raise ValueError(kind)


def sm_loop(v: dict, kind: str, n_genes: int | None = None) -> dict:
    """statsmodels Poisson GLM per gene: "lrt" (full + reduced fits) or "wald" (full fits)."""
    import statsmodels.api as sm

    Y, X1, off = v["Y"], v["X1"], v["offset"]
    G = Y.shape[1] if n_genes is None else n_genes
    fam = sm.families.Poisson()
    Xr = X1[:, :2]  # intercept, section
    stat, p, se = np.full(G, np.nan), np.full(G, np.nan), np.full((G, 2), np.nan)
    n_warn = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for g in range(G):
            y = Y[:, g]
            full = sm.GLM(y, X1, family=fam, offset=off).fit()
            if kind == "lrt":
                red = sm.GLM(y, Xr, family=fam, offset=off).fit()
                stat[g] = 2.0 * (full.llf - red.llf)
                p[g] = np.nan  # chi2 below (vectorised, outside the loop's work is negligible)
            else:
                stat[g] = full.tvalues[2]
                p[g] = full.pvalues[2]
                se[g] = full.bse[2:4]
        n_warn = len(caught)
    if kind == "lrt":
        from scipy.stats import chi2

        p = chi2.sf(np.maximum(stat, 0.0), X1.shape[1] - Xr.shape[1])
    return {"stat": stat, "pvalue": p, "se": se, "n_warnings": n_warn}


# -------------------------------------------------------------------------------------------
# agreement
# -------------------------------------------------------------------------------------------


def bh(p) -> np.ndarray:
    """Benjamini–Hochberg over the finite p (NaN elsewhere)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    x = p[ok]
    n = x.size
    if n:
        o = np.argsort(x)
        r = np.minimum.accumulate((x[o] * n / np.arange(1, n + 1))[::-1])[::-1]
        q_ok = np.empty(n)
        q_ok[o] = np.minimum(r, 1.0)
        q[ok] = q_ok
    return q


def _agreement(p_s, q_s, p_r, q_r, stat_s=None, stat_r=None, mask=None, genes=None) -> dict:
    """Agreement of two tools' p, q (and statistics) on the genes both test."""
    p_s, p_r = np.asarray(p_s, float), np.asarray(p_r, float)
    ok = np.isfinite(p_s) & np.isfinite(p_r)
    if mask is not None:
        ok &= mask
    ls = np.log10(np.maximum(p_s[ok], P_FLOOR))
    lr = np.log10(np.maximum(p_r[ok], P_FLOOR))
    d = np.abs(ls - lr)
    sig_s = np.asarray(q_s, float)[ok] <= Q_LEVEL
    sig_r = np.asarray(q_r, float)[ok] <= Q_LEVEL
    union = int(np.sum(sig_s | sig_r))
    out = {
        "n_genes": int(ok.sum()),
        "n_only_stglm_finite": int(np.sum(np.isfinite(p_s) & ~np.isfinite(p_r))),
        "n_only_peer_finite": int(np.sum(~np.isfinite(p_s) & np.isfinite(p_r))),
        "corr_log10p": float(np.corrcoef(ls, lr)[0, 1]) if ok.sum() > 2 else None,
        "median_abs_dlog10p": float(np.median(d)) if d.size else None,
        "p95_abs_dlog10p": float(np.quantile(d, 0.95)) if d.size else None,
        "max_abs_dlog10p": float(np.max(d)) if d.size else None,
        "n_q05_stglm": int(sig_s.sum()),
        "n_q05_peer": int(sig_r.sum()),
        "n_q05_both": int(np.sum(sig_s & sig_r)),
        "jaccard_q05": float(np.sum(sig_s & sig_r) / union) if union else None,
        "max_abs_dlog10p_where_p_gt_1e-10": float(np.max(d[(ls > -10) & (lr > -10)], initial=0)),
    }
    if stat_s is not None:
        a, b = np.asarray(stat_s, float)[ok], np.asarray(stat_r, float)[ok]
        r = np.abs(a - b) / np.maximum(np.abs(b), 1e-12)
        big = np.abs(b) > 1e-3
        out["stat_rel_diff"] = BC.summary(r)
        out["stat_rel_diff_stat_gt_1e-3"] = BC.summary(r[big])
        out["stat_abs_diff"] = BC.summary(np.abs(a - b))
        worst = int(np.argmax(np.where(np.isfinite(r), r, -1))) if r.size else None
        if worst is not None:
            out["worst_gene_index"] = int(np.flatnonzero(ok)[worst])
            out["worst_stat_stglm_peer"] = [float(a[worst]), float(b[worst])]
            if genes is not None:
                out["worst_gene"] = str(genes[out["worst_gene_index"]])
    if genes is not None and d.size:
        worst_p = int(np.argmax(d))
        out["worst_dlog10p_gene"] = str(genes[int(np.flatnonzero(ok)[worst_p])])
        out["worst_dlog10p_log10p_stglm_peer"] = [float(ls[worst_p]), float(lr[worst_p])]
    return out


# -------------------------------------------------------------------------------------------
# memory: one subprocess per tool
# -------------------------------------------------------------------------------------------


def vm_status() -> dict:
    return BC.vm_status()


def memory_job(kind: str, n_genes: int | None) -> None:
    """In a fresh process: load, RSS; first call → VmHWM; second call under tracemalloc."""
    v = BC.visium(n_genes)
    loaded = vm_status()
    with C.threads(1):
        if kind.startswith("sm_"):
            w = time.perf_counter()
            sm_loop(v, kind[3:])
            first = time.perf_counter() - w
            hwm = vm_status()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            sm_loop(v, kind[3:], min(SM_TRACE_GENES, len(v["genes"])))
            peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
        else:
            w = time.perf_counter()
            stglm_test(v, kind)
            first = time.perf_counter() - w
            hwm = vm_status()
            peak = C.tracemalloc_peak(lambda: stglm_test(v, kind))
    print(json.dumps({
        "kind": kind, "first_call_s": first, "VmRSS_after_load_kB": loaded["VmRSS_kB"],
        "VmHWM_after_load_kB": loaded["VmHWM_kB"], "VmHWM_kB": hwm["VmHWM_kB"],
        "rss_peak_rise_kB": hwm["VmHWM_kB"] - loaded["VmRSS_kB"], "tracemalloc_peak": peak,
        "tracemalloc_genes": min(SM_TRACE_GENES, len(v["genes"])) if kind.startswith("sm_")
        else len(v["genes"]),
    }))  # fmt: skip


def run_memory_job(kind: str, n_genes: int | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--job-memory", kind]
    if n_genes:
        cmd += ["--genes", str(n_genes)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "?"}
    return json.loads(res.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------
# the run
# -------------------------------------------------------------------------------------------


def src_diff_sha1() -> str:
    """SHA-1 (12 hex) of ``git diff HEAD -- src`` (the uncommitted src/ changes this run used)."""
    import hashlib

    d = subprocess.run(["git", "diff", "HEAD", "--", "src"], cwd=C.ROOT, capture_output=True).stdout
    return hashlib.sha1(d).hexdigest()[:12] if d else "clean"


def profile_stglm(v: dict, kind: str, path: Path) -> list[dict]:
    return BC.profile_call(lambda: stglm_test(v, kind), path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the first 100 Visium genes, 1 repeat")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3, quick 1)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--from-json", type=Path, help="only rewrite the .md from this results JSON")
    ap.add_argument("--job-memory", help=argparse.SUPPRESS)
    ap.add_argument("--genes", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.job_memory:
        memory_job(args.job_memory, args.genes)
        return 0
    if args.from_json:
        res = json.loads(args.from_json.read_text())
        tab = table(res)
        md = args.from_json.with_suffix(".md")
        md.write_text(header(res) + "\n\n" + tab + "\n\n" + notes(res) + "\n")
        print(tab)
        return 0
    if os.environ.get("OPENBLAS_CORETYPE"):
        log("note: OPENBLAS_CORETYPE is set; see README.md for the recommended command.")
    repeats = args.repeats or (1 if args.quick else 3)
    t0 = time.time()
    load_start = C.loadavg()
    info = C.machine_info()
    n_genes = 100 if args.quick else None
    v = BC.visium(n_genes)
    G = len(v["genes"])
    ql = has_ql()
    kinds = ["nb_lrt", "nb_lrt_default", *(["nb_ql"] if ql else []), "pois_lrt", "pois_wald",
             "pois_inference"]  # fmt: skip
    res: dict = {
        "command": " ".join(["env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python",
                             "benchmarks/bench_tests.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "source": BG.git_state(), "src_diff_sha1": src_diff_sha1(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": info,
        "load_start": load_start, "repeats": repeats, "n_genes": G, "n_obs": v["adata"].n_obs,
        "design": ["intercept", *v["design"].columns], "reduced": REDUCED,
        "reduced_wald": REDUCED_WALD, "stglm_has_ql": ql,
    }  # fmt: skip

    # ---- stglm (in process, 1 BLAS thread) and R, interleaved for NB -----------------------
    # Each of ``repeats`` rounds: one call of every stglm NB test, then one R process (its
    # glm_gp fits, test_de and LR, timed inside R); the Poisson tests after, against
    # statsmodels.
    r_ok = C.r_available()  # Rscript present (the check also loads glmnet; glmGamPoi below)
    nb_kinds = [k for k in kinds if k.startswith("nb_")]
    st: dict = {}
    calls: dict = {k: [] for k in nb_kinds}
    r_calls = []
    X1 = v["X1"]
    cols = ["intercept", *v["design"].columns]
    r_task = {"kind": "glm_gp_tests", "repeats": 1, "colnames": cols,
              "colnames_reduced": cols[:2]}  # fmt: skip
    r_arrays = {"Y": v["Y"].T, "X": X1, "Xr": X1[:, :2], "off": v["offset"]}
    with C.threads(1):
        stglm_test(v, "pois_lrt")  # numba kernels loaded once before any clock
        for kind in nb_kinds:
            stglm_test(v, kind)
    for k in range(repeats):
        with C.threads(1):
            for kind in nb_kinds:
                t, df = BC.once(lambda kind=kind: stglm_test(v, kind))
                calls[kind].append(t)
                st[kind] = {"df": df}
                log(f"stglm {kind} run {k + 1}: {C.fmt_time(t['wall'])} wall, "
                    f"{C.fmt_time(t['cpu'])} CPU")  # fmt: skip
        if r_ok:
            w = time.time()
            r_calls.append(C.run_r("tests_peers.R", [r_task], r_arrays))
            log(f"R run {k + 1} (glm_gp + test_de, LR) done in {time.time() - w:.0f} s")
    for kind in nb_kinds:
        st[kind]["timing"] = BC.medians(calls[kind])
    with C.threads(1):
        for kind in kinds[len(nb_kinds) :]:
            log(f"stglm {kind}, {G} genes")
            t, df = BC.timed(lambda kind=kind: stglm_test(v, kind), repeats)
            st[kind] = {"timing": t, "df": df}
            log(f"  {C.fmt_time(t['median'])} wall, {C.fmt_time(t['cpu'])} CPU")
    for d in st.values():
        if "status" in d["df"]:
            d["status"] = BC.status_counts(d["df"]["status"])
    res["stglm"] = {k: {kk: vv for kk, vv in d.items() if kk != "df"} for k, d in st.items()}

    # ---- statsmodels loops ----------------------------------------------------------------
    sm: dict = {}
    with C.threads(1):
        for kind in ("lrt", "wald"):
            log(f"statsmodels loop {kind}, {G} genes")
            t, out = BC.timed(lambda kind=kind: sm_loop(v, kind), repeats)
            sm[kind] = {"timing": t, "out": out}
            log(f"  {C.fmt_time(t['median'])} wall, {C.fmt_time(t['cpu'])} CPU")
    res["statsmodels"] = {k: {"timing": d["timing"], "n_warnings": d["out"]["n_warnings"]}
                          for k, d in sm.items()}  # fmt: skip

    # ---- R ------------------------------------------------------------------------------
    if r_ok:
        r = r_calls[-1]
        gp = r["results"][0]
        each = [c["results"][0] for c in r_calls]
        for key in ("ql_elapsed", "ql_cpu", "lr_elapsed", "lr_cpu"):
            gp[key + "_all"] = [e[key] for e in each]
            gp[key] = float(np.median(gp[key + "_all"]))
        for key in ("elapsed", "cpu"):  # per step: every call's time
            gp[key] = {step: [x for e in each for x in e[key][step]] for step in gp["steps"]}
        gp["gc_max_used_rise_mb"] = {
            step: max(e["gc_max_used_rise_mb"][step] for e in each) for step in gp["steps"]
        }
        gp["repeats"] = len(each)
        for key in ("ql", "lr"):
            for f in ("stat", "pvalue", "qvalue", "df2"):
                if f in gp[key] and isinstance(gp[key][f], list):
                    gp[key][f] = BC.floats(gp[key][f])
        res["r"] = {k: gp[k] for k in ("ql_elapsed", "ql_cpu", "lr_elapsed", "lr_cpu", "elapsed",
                                       "cpu", "gc_max_used_rise_mb", "repeats", "ql_cpu_all",
                                       "lr_cpu_all")}  # fmt: skip
        res["r"]["ql_df1"] = gp["ql"]["df1"]
        res["r"]["process"] = {k: r[k] for k in ("VmHWM_kB", "VmRSS_kB", "VmRSS_after_load_kB")}
        res["r"]["versions"] = r["versions"]
        od_f = BC.floats(gp["overdispersion_full"])
        res["r"]["n_od_zero_full"] = int(np.sum(od_f == 0))
    else:
        gp = None
        log("R not available: glmGamPoi rows skipped")

    # ---- agreement ----------------------------------------------------------------------
    Yc, secm = v["Y"], v["design"]["section_CP"].to_numpy() == 1
    separated = (Yc[secm].sum(axis=0) == 0) | (Yc[~secm].sum(axis=0) == 0)
    res["n_separated"] = int(separated.sum())
    res["separated_genes_example"] = [v["genes"][i] for i in np.flatnonzero(separated)[:8]]
    ag: dict = {}
    ag_all: dict = {}

    def agreement_named(name, *a, **kw):
        """ag[name]: the genes both test, separated genes left out; ag_all[name]: all."""
        ag_all[name] = _agreement(*a, **kw, genes=v["genes"])
        ag[name] = _agreement(*a, **kw, mask=~separated, genes=v["genes"])
        return ag[name]

    nb = st["nb_lrt"]["df"]
    ok_nb = (nb["status"] == "ok").to_numpy()
    res["nb_lrt_not_ok"] = BC.status_counts(nb["status"][~ok_nb])
    if gp is not None:
        p_s = np.where(ok_nb, nb["pvalue"].to_numpy(float), np.nan)
        agreement_named("nb_lrt_vs_r_lr", p_s, nb["qvalue"], gp["lr"]["pvalue"], gp["lr"]["qvalue"],
                                         nb["stat"], gp["lr"]["stat"])  # fmt: skip
        th_s = nb["theta_full"].to_numpy(float)
        with np.errstate(divide="ignore"):
            th_r = np.where(od_f > 0, 1.0 / od_f, np.inf)
        inter = ok_nb & np.isfinite(th_r) & (th_r < BC.THETA_POISSON) & (th_s < BC.THETA_POISSON)
        ag["nb_theta_full_rel_diff"] = BC.summary(BC.rel(th_s, th_r)[inter])
        d = st["nb_lrt_default"]["df"]
        okd = (d["status"] == "ok").to_numpy()
        res["nb_lrt_default_not_ok"] = BC.status_counts(d["status"][~okd])
        agreement_named(
            "nb_lrt_default_vs_r_lr", np.where(okd, d["pvalue"].to_numpy(float), np.nan),
            d["qvalue"], gp["lr"]["pvalue"], gp["lr"]["qvalue"], d["stat"], gp["lr"]["stat"],
        )  # fmt: skip
        agreement_named(
            "nb_lrt_default_vs_nb_lrt", np.where(okd, d["pvalue"].to_numpy(float), np.nan),
            d["qvalue"], p_s, nb["qvalue"], d["stat"], nb["stat"],
        )  # fmt: skip
        agreement_named("nb_lrt_vs_r_ql", p_s, nb["qvalue"], gp["ql"]["pvalue"], gp["ql"]["qvalue"])
        if ql:
            d = st["nb_ql"]["df"]
            okq = (d["status"] == "ok").to_numpy()
            agreement_named("nb_ql_vs_test_de",
                np.where(okq, d["pvalue"].to_numpy(float), np.nan), d["qvalue"],
                gp["ql"]["pvalue"], gp["ql"]["qvalue"], d["stat"], gp["ql"]["stat"],
            )  # fmt: skip
        # R's own two tests against each other (how far apart LR and QL are by design)
        agreement_named("r_lr_vs_r_ql", gp["lr"]["pvalue"], gp["lr"]["qvalue"], gp["ql"]["pvalue"],
                                       gp["ql"]["qvalue"])  # fmt: skip
    pl, pw = st["pois_lrt"]["df"], st["pois_wald"]["df"]
    sl, sw = sm["lrt"]["out"], sm["wald"]["out"]
    agreement_named("pois_lrt_vs_sm", pl["pvalue"], pl["qvalue"], sl["pvalue"], bh(sl["pvalue"]),
                                     pl["stat"], sl["stat"])  # fmt: skip
    agreement_named("pois_wald_vs_sm", pw["pvalue"], pw["qvalue"], sw["pvalue"], bh(sw["pvalue"]),
                                      pw["stat"], sw["stat"])  # fmt: skip
    inf = st["pois_inference"]["df"]
    z_inf = inf["coef_x"].to_numpy(float) / inf["se_x"].to_numpy(float)
    agreement_named("pois_inference_x_vs_sm", inf["pvalue_x"], bh(inf["pvalue_x"]), sw["pvalue"],
                                             bh(sw["pvalue"]), z_inf, sw["stat"])  # fmt: skip
    se_s = inf[["se_x", "se_y"]].to_numpy(float)
    se_rel = np.abs(se_s - sw["se"]) / sw["se"]
    ag["pois_inference_se_rel_diff"] = BC.summary(se_rel[~separated])
    ag_all["pois_inference_se_rel_diff"] = BC.summary(se_rel)
    res["agreement"] = ag
    res["agreement_incl_separated"] = ag_all

    # ---- memory, cProfile ---------------------------------------------------------------
    if not args.no_memory:
        mem = {}
        for kind in [*kinds, "sm_lrt", "sm_wald"]:
            log(f"memory job {kind}")
            mem[kind] = run_memory_job(kind, n_genes)
        res["memory"] = mem
    log("cProfile of stglm nb_lrt")
    prof_name = "tests_profile_quick.txt" if args.quick else "tests_profile.txt"
    args.out.mkdir(parents=True, exist_ok=True)
    res["profile_nb_lrt_top_tottime"] = profile_stglm(v, "nb_lrt", args.out / prof_name)
    if ql:
        res["profile_nb_ql_top_tottime"] = profile_stglm(
            v, "nb_ql", args.out / prof_name.replace("profile", "profile_ql")
        )

    res["load_end"] = C.loadavg()
    res["elapsed_s"] = time.time() - t0
    tab = table(res)
    print(tab)
    name = "tests_quick" if args.quick else "tests"
    clean = json.loads(json.dumps(res, default=C.jsonable))
    (args.out / f"{name}.json").write_text(json.dumps(clean, indent=1))
    (args.out / f"{name}.md").write_text(header(res) + "\n\n" + tab + "\n\n" + notes(res) + "\n")
    print(f"\nwrote {args.out / (name + '.json')} ({res['elapsed_s']:.0f} s)")
    return 0


# -------------------------------------------------------------------------------------------
# tables
# -------------------------------------------------------------------------------------------


def _ratio(peer, ours) -> str:
    return BC.fmt_ratio(peer / ours) if peer is not None and ours else "-"


def _agree(a: dict | None, stat: bool) -> str:
    if not a:
        return "-"
    s = (f"r(log10 p) {a['corr_log10p']:.4f}; median / max \\|Δlog10 p\\| "
         f"{a['median_abs_dlog10p']:.1e} / {a['max_abs_dlog10p']:.1e}; q ≤ 0.05: "
         f"{a['n_q05_stglm']} vs {a['n_q05_peer']}, both {a['n_q05_both']}, Jaccard "
         f"{a['jaccard_q05']:.3f} ({a['n_genes']} genes)")  # fmt: skip
    if stat and "stat_rel_diff" in a:
        r = a["stat_rel_diff_stat_gt_1e-3"]
        s += f"; statistic rel. diff median / max {BC.s3(r)} / {BC.s3(r, 'max')} (stat > 1e-3)"
    return s


def _mem(res: dict, kind: str) -> str:
    m = res.get("memory", {}).get(kind)
    if not m or "error" in m:
        return "-"
    tm = C.fmt_mem(m["tracemalloc_peak"])
    if kind.startswith("sm_"):
        tm += f" ({m['tracemalloc_genes']} genes)"
    return f"RSS +{m['rss_peak_rise_kB'] / 1024:.0f} MiB; tracemalloc {tm}"


def table(res: dict) -> str:
    G = res["n_genes"]
    st, sm, r, ag = res["stglm"], res["statsmodels"], res.get("r"), res["agreement"]
    rows = []

    def srow(case, kind, label):
        t = st[kind]["timing"]
        rows.append([case, label, C.fmt_time(t["median"]), C.fmt_time(t["cpu"]), "1.0×", "",
                     _mem(res, kind)])  # fmt: skip
        return t

    t = srow(f"1. NB Cox–Reid, LR test of x, y (df 2), {G} genes", "nb_lrt",
             "stglm test_genes(test='lrt', theta='cox-reid')")  # fmt: skip
    if r:
        gc = r["gc_max_used_rise_mb"]
        rows.append(["", "R: glm_gp full + glm_gp reduced + LR from ℓ (θ per model)",
                     C.fmt_time(r["lr_elapsed"]), C.fmt_time(r["lr_cpu"]),
                     f"{_ratio(r['lr_elapsed'], t['median'])}, {_ratio(r['lr_cpu'], t['cpu'])}",
                     _agree(ag.get("nb_lrt_vs_r_lr"), True),
                     f"gc max used +{max(gc['glm_gp_full'], gc['glm_gp_reduced']):.0f} MB; "
                     f"VmHWM {r['process']['VmHWM_kB'] / 1024:.0f} MiB"])  # fmt: skip
        rows.append(["", "R: glm_gp + test_de (QL F-test; a different test)",
                     C.fmt_time(r["ql_elapsed"]), C.fmt_time(r["ql_cpu"]),
                     f"{_ratio(r['ql_elapsed'], t['median'])}, {_ratio(r['ql_cpu'], t['cpu'])}",
                     "stglm LRT vs test_de: " + _agree(ag.get("nb_lrt_vs_r_ql"), False),
                     f"gc max used +{max(gc['glm_gp_full'], gc['test_de']):.0f} MB"])  # fmt: skip
    t = srow(
        f"1a. NB, LR test with test_genes' default θ, {G} genes",
        "nb_lrt_default",
        "stglm test_genes(test='lrt'), theta=None (ML θ per model since 75fdc6d)",
    )
    if r:
        rows.append(["", "R's LR as above (Cox–Reid θ: a different θ)", C.fmt_time(r["lr_elapsed"]),
                     C.fmt_time(r["lr_cpu"]),
                     f"{_ratio(r['lr_elapsed'], t['median'])}, {_ratio(r['lr_cpu'], t['cpu'])}",
                     _agree(ag.get("nb_lrt_default_vs_r_lr"), True), "(above)"])  # fmt: skip
    if "nb_ql" in st:
        t = srow(f"1b. NB Cox–Reid, QL F-test, {G} genes", "nb_ql", "stglm test_genes(test='ql')")
        if r:
            rows.append(["", "R: glm_gp + test_de", C.fmt_time(r["ql_elapsed"]),
                         C.fmt_time(r["ql_cpu"]),
                         f"{_ratio(r['ql_elapsed'], t['median'])}, {_ratio(r['ql_cpu'], t['cpu'])}",
                         _agree(ag.get("nb_ql_vs_test_de"), True), "(above)"])  # fmt: skip
    t = srow(f"2. Poisson, LR test of x, y (df 2), {G} genes", "pois_lrt",
             "stglm test_genes(distr='poisson', test='lrt')")  # fmt: skip
    s = sm["lrt"]["timing"]
    rows.append(["", "statsmodels loop: GLM full + reduced fit, LR from llf",
                 C.fmt_time(s["median"]),
                 C.fmt_time(s["cpu"]),
                 f"{_ratio(s['median'], t['median'])}, {_ratio(s['cpu'], t['cpu'])}",
                 _agree(ag["pois_lrt_vs_sm"], True), _mem(res, "sm_lrt")])  # fmt: skip
    t = srow(f"2b. Poisson, Wald test of x (reduced section + y), {G} genes", "pois_wald",
             "stglm test_genes(distr='poisson', test='wald')")  # fmt: skip
    s = sm["wald"]["timing"]
    rows.append(["", "statsmodels loop: GLM full fit, tvalues / pvalues", C.fmt_time(s["median"]),
                 C.fmt_time(s["cpu"]),
                 f"{_ratio(s['median'], t['median'])}, {_ratio(s['cpu'], t['cpu'])}",
                 _agree(ag["pois_wald_vs_sm"], True), _mem(res, "sm_wald")])  # fmt: skip
    t = srow(
        "",
        "pois_inference",
        "stglm fit_genes(distr='poisson', link='log', reg_lambda=0, inference=True) "
        "(Wald, all coefficients)",
    )
    se = ag["pois_inference_se_rel_diff"]
    rows.append(["", "statsmodels loop (Wald, as 2b)", C.fmt_time(s["median"]),
                 C.fmt_time(s["cpu"]),
                 f"{_ratio(s['median'], t['median'])}, {_ratio(s['cpu'], t['cpu'])}",
                 "x: " + _agree(ag["pois_inference_x_vs_sm"], True)
                 + f"; SE(x, y) rel. diff median / max {BC.s3(se)} / {BC.s3(se, 'max')}",
                 "-"])  # fmt: skip
    return C.markdown_table(
        ["case", "tool", f"wall (median of {res['repeats']})", "CPU (median)",
         "peer / stglm (wall, CPU)", "agreement with stglm (genes both test)", "peak memory"],
        rows,
    )  # fmt: skip


def header(res: dict) -> str:
    info = res["machine"]
    r = res.get("r")
    return (
        f"Command: `{res['command']}` ({res['elapsed_s']:.0f} s). Source: {res['source']} "
        f"(src diff sha1 {res['src_diff_sha1']}). "
        f"Run at {res['date']}; load average (1, 5, 15 min) {res['load_start']} at the start, "
        f"{res['load_end']} at the end; CPU {info['cpu']}, {info['cores']} cores; Python "
        f"{info['python']}, numpy {info['numpy']}, BLAS limited to 1 thread for stglm and "
        f"statsmodels; {r['versions'] if r else 'no R'} (R's reference BLAS, single-threaded). "
        f"Design {', '.join(res['design'])}; offset log(total counts); reduced "
        f"{', '.join(res['reduced'])} (Wald: {', '.join(res['reduced_wald'])})."
    )


def notes(res: dict) -> str:
    ag = res["agreement"]
    out = [
        f"stglm NB LRT status of the untested genes: {res['nb_lrt_not_ok'] or 'none'}.",
        f"Agreement columns leave out the {res['n_separated']} genes whose counts all lie in "
        f"one section (e.g. {', '.join(res['separated_genes_example'][:5])}): the section "
        "coefficient's MLE is infinite there, every tool stops somewhere along the ray, and "
        'stglm reports them with status "ok". With them: '
        + "; ".join(
            f"{k}: r(log10 p) {a['corr_log10p']:.4f}, max |Δlog10 p| "
            f"{a['max_abs_dlog10p']:.1e}, Jaccard {a['jaccard_q05']:.3f}"
            for k, a in res["agreement_incl_separated"].items()
            if "corr_log10p" in a
        )
        + ".",
    ]
    for k, a in ag.items():
        if "worst_dlog10p_gene" in a:
            out.append(
                f"{k}: largest |Δlog10 p| at {a['worst_dlog10p_gene']} (log10 p stglm "
                f"{a['worst_dlog10p_log10p_stglm_peer'][0]:.2f}, peer "
                f"{a['worst_dlog10p_log10p_stglm_peer'][1]:.2f})"
                + (
                    f"; largest statistic rel. diff at {a['worst_gene']} "
                    f"({a['worst_stat_stglm_peer'][0]:.4g} vs "
                    f"{a['worst_stat_stglm_peer'][1]:.4g})"
                    if "worst_gene" in a
                    else ""
                )
                + "."
            )
    if "nb_theta_full_rel_diff" in ag:
        th = ag["nb_theta_full_rel_diff"]
        out.append(f"θ (full model), stglm Cox–Reid vs glm_gp (factor 0.99 on its Cox–Reid term): "
                   f"rel. diff median {BC.s3(th)}, max {BC.s3(th, 'max')} ({th.get('n', 0)} genes "
                   f"with both θ < 1e6).")  # fmt: skip
    if "r_lr_vs_r_ql" in ag:
        out.append("R's own LR vs its QL F-test (how far apart the two tests are by design): "
                   + _agree(ag["r_lr_vs_r_ql"], False) + ".")  # fmt: skip
    if res.get("r"):
        r = res["r"]
        steps = ", ".join(f"{k} {np.median(r['cpu'][k]):.2f} s" for k in r["cpu"])
        out.append(f"R CPU per step (median): {steps}.")
    for k in ("profile_nb_lrt_top_tottime", "profile_nb_ql_top_tottime"):
        if k in res:
            top = "; ".join(f"{d['function']} {d['tottime']:.2f} s ({d['ncalls']} calls)"
                            for d in res[k][:6])  # fmt: skip
            out.append(f"cProfile ({k.split('_')[1]}_{k.split('_')[2]}, tottime): {top}.")
    return "\n\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
