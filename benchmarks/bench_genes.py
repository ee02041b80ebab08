"""Whole-transcriptome fits: stglm ``fit_genes`` (all genes batched) against a glum loop.

1. Visium prostate, all 1,255 genes, Poisson on a 9-column spatial design (section dummy,
   spatial lags of 6 genes within section, coordinates standardised within section):
   (a) one λ (0.01, α = 0.5) — fit_genes vs a loop of glum ``GeneralizedLinearRegressor``
   over genes; (b) cross-validation (25 λ × 5 folds) — fit_genes(reg_lambda=None) vs a loop
   of glum ``GeneralizedLinearRegressorCV`` on the same folds and λ grid. Both peers solve
   J = (1/n)Σ[e^z − y·z] + λ[½(1−α)‖β‖² + α‖β‖₁] (stglm eta=np.inf, glum alpha=λ,
   l1_ratio=α) and are judged by common.poisson_kkt / poisson_objective on every gene.
2. seqFISH mouse embryo (14,185 cells × 351 genes), niche-composition design:
   fit_genes fixed λ and CV in subprocesses under ``/usr/bin/time -v`` (wall, peak RSS).
3. Synthetic 10⁶ cells × 200 genes, CSR counts (~10 % non-zero), 5 predictors: fit_genes
   fixed λ in a subprocess; peak RSS against the input's bytes and a build-only run.
4. Distance from the hardware: Newton iterations × the flops of the Hessian products and
   the exponentials, at rates measured on this machine.

Run (about 8 min; see README.md for why the OpenBLAS variables are unset):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_genes.py

Writes benchmarks/results/genes.json and genes.md and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common as C  # noqa: E402

ALPHA = 0.5
LAMBDA = 0.01
N_LAMBDAS, N_FOLDS, CV_SEED, MIN_RATIO = 25, 5, 888, 1e-3
REPEATS = 3
#: Spatial lags: the best-expressed genes whose lag correlates with the section dummy at most
#: this much (the best-expressed ones are section markers, correlated 0.99 with the dummy).
LAG_GENES, LAG_CANDIDATES, LAG_MAX_SECTION_CORR = 6, 40, 0.6
STGLM_LADDER = [1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
GLUM_LADDER = [None, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
#: glum CV over all genes if the estimate is below this many seconds, else a sample.
GLUM_CV_FULL_BUDGET = 300.0
GLUM_CV_SAMPLE = 50
SYN_LAMBDA = 1e-3
SEQFISH_CANDIDATES = [
    C.ROOT / "shared" / "data" / "seqfish_mouse_embryo.h5ad",
    C.ROOT.parent / "shared" / "data" / "seqfish_mouse_embryo.h5ad",
    Path("/work/shared/data/seqfish_mouse_embryo.h5ad"),
]


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load1():.2f}] {msg}", file=sys.stderr)


def runs(fn):
    """Call ``fn`` REPEATS times; medians of wall and process CPU time, the last result."""
    walls, cpus, loads = [], [], []
    out = None
    for _ in range(REPEATS):
        loads.append(load1())
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return {
        "wall": float(np.median(walls)),
        "cpu": float(np.median(cpus)),
        "walls": walls,
        "cpus": cpus,
        "load": loads,
    }, out


# -------------------------------------------------------------------------------------------
# Visium: the design and the two peers
# -------------------------------------------------------------------------------------------


def visium() -> dict:
    """All 1,255 genes of the bundled Visium data and a 9-column spatial design."""
    import pandas as pd

    from stglm.datasets import visium_prostate
    from stglm.spatial import coordinates, spatial_lag

    adata = visium_prostate()
    section = adata.obs["list_ID"].astype(str).to_numpy()
    dummy = pd.DataFrame({"section_CP": (section == "CP").astype(float)}, index=adata.obs_names)
    totals = np.asarray(adata.X.sum(axis=0)).ravel()
    candidates = list(adata.var_names[np.argsort(-totals, kind="stable")[:LAG_CANDIDATES]])
    lags = spatial_lag(adata, candidates, batch_key="list_ID")  # k = 6 within each section
    corr = lags.apply(lambda col: np.corrcoef(col, dummy["section_CP"])[0, 1])
    chosen = [g for g in candidates if abs(corr[f"lag_{g}"]) <= LAG_MAX_SECTION_CORR]
    lag_genes = chosen[:LAG_GENES]
    # The sections lie side by side along x: standardise coordinates within each section.
    coords = pd.concat([coordinates(adata[section == s]) for s in np.unique(section)])
    design = pd.concat(
        [dummy, lags[[f"lag_{g}" for g in lag_genes]], coords.loc[adata.obs_names]], axis=1
    )
    X = design.to_numpy(dtype=np.float64)
    Y = np.asarray(adata.X.toarray(), dtype=np.float64)
    cc = np.corrcoef(X.T)
    return {
        "adata": adata,
        "design": design,
        "X": X,
        "Y": Y,
        "lag_genes": lag_genes,
        "max_abs_corr": float(np.max(np.abs(cc - np.eye(len(cc))))),
    }


def stglm_fit(adata, design, *, tol: float, reg_lambda):
    """fit_genes on the peers' objective; per-gene arrays."""
    from stglm import fit_genes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit_genes(
            adata,
            design=design,
            distr="poisson",
            eta=np.inf,
            alpha=ALPHA,
            reg_lambda=reg_lambda,
            n_lambdas=N_LAMBDAS,
            cv=N_FOLDS,
            random_seed=CV_SEED,
            lambda_min_ratio=MIN_RATIO,
            clip_coeffs=0.0,
            size_factors=None,  # the peers' objective has no offset
            tol=tol,
            progress=False,
            copy=True,
        )
    var = res.var
    return {
        "b0": var["stglm_intercept"].to_numpy(),
        "beta": res.varm["stglm_coef"].to_numpy(),
        "lam": var["stglm_lambda"].to_numpy(),
        "converged": var["stglm_converged"].to_numpy(dtype=bool),
        "n_iter": var["stglm_n_iter"].to_numpy(dtype=int),
        "kkt_own": var["stglm_kkt"].to_numpy(),
    }


def glum_loop(X, Y, lam: float, gradient_tol):
    """GeneralizedLinearRegressor per gene (irls-cd, the only glum solver for α > 0)."""
    G = Y.shape[1]
    b0, beta = np.empty(G), np.empty((G, X.shape[1]))
    n_iter, converged = np.empty(G, dtype=int), np.ones(G, dtype=bool)
    for g in range(G):
        m = C.glum_poisson(lam, ALPHA, gradient_tol, "irls-cd")
        converged[g] = C.fit_converged(m, X, Y[:, g])
        b0[g], beta[g], n_iter[g] = m.intercept_, m.coef_, m.n_iter_
    return {"b0": b0, "beta": beta, "n_iter": n_iter, "converged": converged}


def gene_paths(X, Y) -> np.ndarray:
    """stglm's data-driven path per gene, from the independent λ_max: (G, N_LAMBDAS)."""
    lmax = np.array([C.poisson_lambda_max(X, Y[:, g], ALPHA) for g in range(Y.shape[1])])
    return np.geomspace(lmax, lmax * MIN_RATIO, N_LAMBDAS, axis=-1)


def glum_cv_gene(X, y, lams, folds, gradient_tol) -> dict:
    m = C.glum_poisson_cv(lams, ALPHA, folds, gradient_tol)
    converged = C.fit_converged(m, X, y)
    return {
        "b0": float(m.intercept_),
        "beta": np.asarray(m.coef_, dtype=float),
        "lam": float(m.alpha_),
        "converged": converged,
    }


def per_gene(judge, X, Y, b0, beta, lams) -> np.ndarray:
    """``judge`` (common.poisson_kkt or poisson_objective) of each gene's solution at ALPHA."""
    lams = np.broadcast_to(lams, (Y.shape[1],))
    return np.array([judge(X, Y[:, g], b0[g], beta[g], lams[g], ALPHA) for g in range(Y.shape[1])])


def kkts(X, Y, b0, beta, lams) -> np.ndarray:
    return per_gene(C.poisson_kkt, X, Y, b0, beta, lams)


def objectives(X, Y, b0, beta, lams) -> np.ndarray:
    return per_gene(C.poisson_objective, X, Y, b0, beta, lams)


def ladder(fit, values, check) -> tuple:
    """First value whose fit passes ``check`` (else the last), with every step's outcome."""
    steps = []
    for v in values:
        t = time.process_time()
        out = fit(v)
        ok, worst = check(out)
        steps.append({"value": v, "ok": bool(ok), "max_kkt": worst, "cpu": time.process_time() - t})
        if ok:
            return v, out, steps
    return values[-1], out, steps


def bench_visium_fixed(v: dict) -> dict:
    X, Y, adata, design = v["X"], v["Y"], v["adata"], v["design"]

    def check(r):
        k = kkts(X, Y, r["b0"], r["beta"], LAMBDA)
        return k.max() <= C.KKT_TARGET, float(k.max())

    rows = {}
    with C.threads(1):
        log("Visium fixed λ: stglm tolerance ladder")
        tol, _, st_steps = ladder(
            lambda t: stglm_fit(adata, design, tol=t, reg_lambda=LAMBDA), STGLM_LADDER, check
        )
        timing, st = runs(lambda: stglm_fit(adata, design, tol=tol, reg_lambda=LAMBDA))
        rows["stglm"] = {"tol": tol, "ladder": st_steps, **timing, "res": st}
        timing, st_def = runs(lambda: stglm_fit(adata, design, tol=1e-6, reg_lambda=LAMBDA))
        rows["stglm_default_tol"] = {"tol": 1e-6, **timing, "res": st_def}
        log("Visium fixed λ: glum gradient_tol ladder (every gene)")
        gt, _, gl_steps = ladder(lambda t: glum_loop(X, Y, LAMBDA, t), GLUM_LADDER, check)
        timing, gl = runs(lambda: glum_loop(X, Y, LAMBDA, gt))
        rows["glum"] = {"gradient_tol": gt, "ladder": gl_steps, **timing, "res": gl}
    for r in rows.values():
        res = r["res"]
        k = kkts(X, Y, res["b0"], res["beta"], LAMBDA)
        r["kkt_max"], r["kkt_ok_fraction"] = float(k.max()), float(np.mean(k <= C.KKT_TARGET))
        r["converged_fraction"] = float(np.mean(res["converged"]))
        r["n_iter_sum"] = int(res["n_iter"].sum())
        r["J"] = objectives(X, Y, res["b0"], res["beta"], LAMBDA)
    ref, other = rows["stglm"]["res"], rows["glum"]["res"]
    jmin = np.minimum(rows["stglm"]["J"], rows["glum"]["J"])
    for r in rows.values():
        r["coef_diff_vs_glum"] = float(np.max(np.abs(r["res"]["beta"] - other["beta"])))
        r["coef_diff_vs_stglm"] = float(np.max(np.abs(r["res"]["beta"] - ref["beta"])))
        r["icpt_diff_vs_glum"] = float(np.max(np.abs(r["res"]["b0"] - other["b0"])))
        r["J_excess_max"] = float(np.max(r["J"] - jmin))
    rows["all_zero_fraction"] = float(np.mean(~ref["beta"].any(axis=1)))
    rows["nonzero_coef_fraction"] = float(np.mean(ref["beta"] != 0))
    return rows


def bench_visium_cv(v: dict, tol: float, glum_tol) -> dict:
    from sklearn.model_selection import KFold

    X, Y, adata, design = v["X"], v["Y"], v["adata"], v["design"]
    G = Y.shape[1]
    lams = gene_paths(X, Y)
    folds = list(KFold(N_FOLDS, shuffle=True, random_state=CV_SEED).split(X))
    out = {}
    with C.threads(1):
        log(f"Visium CV: stglm fit_genes(reg_lambda=None), tol={tol}, {REPEATS} runs")
        timing, st = runs(lambda: stglm_fit(adata, design, tol=tol, reg_lambda=None))
        out["stglm"] = {"tol": tol, **timing, "res": st}
        # glum: time a few genes, then all of them if that fits the budget, else a sample.
        rng = np.random.default_rng(0)
        order = rng.permutation(G)
        res, cpu_per, wall_per, failed = {}, {}, {}, {}
        loads = [load1()]

        def one(g):
            t, c = time.perf_counter(), time.process_time()
            try:
                res[g] = glum_cv_gene(X, Y[:, g], lams[g], folds, glum_tol)
            except ValueError as exc:  # glum refuses a training fold without counts
                failed[g] = str(exc)
            wall_per[g], cpu_per[g] = time.perf_counter() - t, time.process_time() - c

        for g in order[:10]:
            one(g)
        estimate = float(np.mean(list(cpu_per.values())) * G)
        full = estimate <= GLUM_CV_FULL_BUDGET
        todo = order[10:] if full else order[10:GLUM_CV_SAMPLE]
        log(
            f"Visium CV: glum CV loop, estimate {estimate:.0f} s for all genes → "
            f"{'all genes, once' if full else f'{GLUM_CV_SAMPLE} genes, extrapolated'}"
        )
        for g in todo:
            one(g)
        loads.append(load1())
    n_timed = len(cpu_per)
    scale = G / n_timed
    genes = np.array(sorted(res))  # those glum could fit
    out["glum"] = {
        "gradient_tol": glum_tol,
        "genes_timed": n_timed,
        "failed": {str(adata.var_names[g]): msg for g, msg in sorted(failed.items())},
        "failed_fraction": len(failed) / n_timed,
        "n_genes": int(G),
        "extrapolated": not full,
        "wall": float(sum(wall_per.values()) * scale),
        "cpu": float(sum(cpu_per.values()) * scale),
        "load": loads,
        "per_gene_cpu_median": float(np.median(list(cpu_per.values()))),
    }
    gb0 = np.array([res[g]["b0"] for g in genes])
    gbeta = np.array([res[g]["beta"] for g in genes])
    glam = np.array([res[g]["lam"] for g in genes])
    sub = Y[:, genes]
    st_idx = np.array([np.argmin(np.abs(np.log(lams[g] / st["lam"][g]))) for g in range(G)])
    on_grid = np.isclose(lams[np.arange(G), st_idx], st["lam"], rtol=1e-9)
    gl_idx = np.array([np.argmin(np.abs(np.log(lams[g] / glam[i]))) for i, g in enumerate(genes)])
    same = st_idx[genes] == gl_idx
    k_st = kkts(X, Y, st["b0"], st["beta"], st["lam"])
    k_gl = kkts(X, sub, gb0, gbeta, glam)
    out["stglm"].update(
        kkt_max=float(k_st.max()),
        kkt_ok_fraction=float(np.mean(k_st <= C.KKT_TARGET)),
        converged_fraction=float(np.mean(st["converged"])),
        lambda_on_grid_fraction=float(np.mean(on_grid)),
        chosen_index=st_idx.tolist(),
    )
    out["glum"].update(
        kkt_max=float(k_gl.max()),
        kkt_ok_fraction=float(np.mean(k_gl <= C.KKT_TARGET)),
        converged_fraction=float(np.mean([res[g]["converged"] for g in genes])),
        chosen_index=dict(zip(genes.tolist(), gl_idx.tolist(), strict=True)),
    )
    diff = np.abs(st["beta"][genes] - gbeta).max(axis=1)
    j_st = objectives(X, sub, st["b0"][genes], st["beta"][genes], glam)
    j_gl = objectives(X, sub, gb0, gbeta, glam)
    out["agreement"] = {
        "genes_compared": int(len(genes)),
        "same_lambda_fraction": float(np.mean(same)),
        "coef_diff_max_same_lambda": float(diff[same].max(initial=0.0)),
        "coef_diff_max_gene": (
            {
                "gene": str(adata.var_names[genes[same][np.argmax(diff[same])]]),
                "lambda_index": int(gl_idx[same][np.argmax(diff[same])]),
                "total_count": float(sub[:, same][:, np.argmax(diff[same])].sum()),
            }
            if same.any()
            else None
        ),
        "J_diff_max_same_lambda": float(np.abs(j_st - j_gl)[same].max(initial=0.0)),
        "index_gap_max": int(np.abs(st_idx[genes] - gl_idx).max(initial=0)),
        "index_gap_counts": {
            str(k): int(c)
            for k, c in zip(
                *np.unique(np.abs(st_idx[genes] - gl_idx), return_counts=True), strict=True
            )
        },
    }
    return out


# -------------------------------------------------------------------------------------------
# subprocess jobs: seqFISH and synthetic
# -------------------------------------------------------------------------------------------

_TIME_FIELDS = {
    "Maximum resident set size (kbytes)": "maxrss_kb",
    "User time (seconds)": "user",
    "System time (seconds)": "sys",
    "Elapsed (wall clock) time (h:mm:ss or m:ss)": "elapsed",
}


def _parse_time_v(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        key, _, value = line.strip().rpartition(": ")
        if key in _TIME_FIELDS:
            out[_TIME_FIELDS[key]] = value.strip()
    res = {}
    if "maxrss_kb" in out:
        res["peak_rss"] = int(out["maxrss_kb"]) * 1024
    if "elapsed" in out:
        parts = [float(p) for p in out["elapsed"].split(":")]
        res["elapsed"] = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    for k in ("user", "sys"):
        if k in out:
            res[k] = float(out[k])
    return res


def job(args: list[str]) -> dict:
    """One run of run_genes_job.py under /usr/bin/time -v: its JSON plus time's figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "job.json"
        cmd = [sys.executable, str(HERE / "run_genes_job.py"), *args, "--out", str(out)]
        timer = shutil.which("time") or (
            "/usr/bin/time" if Path("/usr/bin/time").exists() else None
        )
        if timer:
            cmd = [timer, "-v", *cmd]
        load = load1()
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not out.exists():
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr[-3000:]}")
        data = json.loads(out.read_text())
    data["time_v"] = _parse_time_v(res.stderr) if timer else {}
    if "peak_rss" not in data["time_v"]:  # no /usr/bin/time: the job's own VmHWM
        data["time_v"]["peak_rss"] = data.get("hwm_end") or data.get("hwm_after_build")
    data["load"] = load
    return data


def job_runs(args: list[str], repeats: int) -> dict:
    """Median over ``repeats`` runs of a job (fit and process figures); the runs kept."""
    rs = [job(args) for _ in range(repeats)]
    med = lambda xs: float(np.median([x for x in xs if x is not None]))  # noqa: E731
    summary = {
        "runs": rs,
        "n": repeats,
        "peak_rss": med([r["time_v"].get("peak_rss") for r in rs]),
        "elapsed": med([r["time_v"].get("elapsed", np.nan) for r in rs]),
        "rss_after_build": med([r["rss_after_build"] for r in rs]),
        "hwm_after_build": med([r["hwm_after_build"] for r in rs]),
        "load": [r["load"] for r in rs],
    }
    if "fit_seconds" in rs[0]:
        summary.update(
            fit_wall=med([r["fit_seconds"] for r in rs]),
            fit_cpu=med([r["fit_cpu_seconds"] for r in rs]),
            hwm_end=med([r["hwm_end"] for r in rs]),
        )
    return summary


def bench_jobs(dataset: str, modes: list[tuple[str, list[str], int]]) -> dict:
    out = {}
    for mode, extra, repeats in modes:
        log(f"{dataset}: {mode} ({repeats} run(s) under /usr/bin/time -v)")
        out[mode] = job_runs([dataset, "--mode", mode.split(":")[0], *extra], repeats)
    return out


# -------------------------------------------------------------------------------------------
# rates of this machine, and the floors
# -------------------------------------------------------------------------------------------


def _best_time(fn, repeats: int = 5) -> float:
    """Fastest of ``repeats`` single calls after a warm-up (seconds)."""
    return C.median_time(fn, repeats, min_time=0.0)["min"]


def machine_rates(shapes: dict[str, tuple[int, int, int]]) -> dict:
    """GFLOP/s of Zᵀ·W for each (n, pairs, genes) shape, of a 2000² matmul, exp and memory."""
    rng = np.random.default_rng(0)
    out = {"gemm": {}}
    with C.threads(1):
        for key, (n, P, G) in shapes.items():
            Z, W = rng.standard_normal((n, P)), rng.standard_normal((n, G))
            t = _best_time(lambda Z=Z, W=W: Z.T @ W)
            out["gemm"][key] = {"shape": [n, P, G], "seconds": t, "gflops": 2 * n * P * G / t / 1e9}
            del Z, W
        A = rng.standard_normal((2000, 2000))
        out["square_2000_gflops_1thread"] = 2 * 2000**3 / _best_time(lambda: A @ A, 3) / 1e9
    out["square_2000_gflops_2threads"] = 2 * 2000**3 / _best_time(lambda: A @ A, 3) / 1e9
    a = rng.standard_normal(10_000_000) * 0.1
    b = np.empty_like(a)
    out["exp_ns_per_element"] = _best_time(lambda: np.exp(a, out=b)) / a.size * 1e9
    c = np.empty_like(a)
    out["triad_GBps"] = 3 * a.nbytes / _best_time(lambda: np.add(a, b, out=c)) / 1e9
    return out


def floor(n: int, p: int, n_iter: np.ndarray, measured: float, gemm: dict, rates: dict) -> dict:
    """The least time the Newton iterations could take on this machine.

    Per gene and iteration: the Hessian's pairs (2·n·m(m+1)/2 flops, m = p + 1), and one
    exponential per cell (the means at the new point). Lower bound, ignoring the rest
    (gradient and update products 2·2·n·m, line search, coordinate descent).
    """
    m = p + 1
    P = m * (m + 1) // 2
    its = int(np.sum(n_iter))
    flops = 2.0 * n * P * its
    t_shape = flops / (gemm["gflops"] * 1e9)
    t_peak = flops / (rates["square_2000_gflops_1thread"] * 1e9)
    n_exp = float(n) * (its + len(n_iter))
    t_exp = n_exp * rates["exp_ns_per_element"] * 1e-9
    return {
        "n_iter_sum": its,
        "pairs": P,
        "hessian_gflop": flops / 1e9,
        "t_hessian_at_shape_rate": t_shape,
        "t_hessian_at_peak": t_peak,
        "n_exp": n_exp,
        "t_exp": t_exp,
        "floor": t_shape + t_exp,
        "measured": measured,
        "ratio": measured / (t_shape + t_exp),
        "gemm_gflops": gemm["gflops"],
    }


# -------------------------------------------------------------------------------------------
# tables
# -------------------------------------------------------------------------------------------


def fmt_ratio(x: float) -> str:
    return f"{x:.1f}×" if np.isfinite(x) else "-"


def fmt_loads(xs) -> str:
    xs = list(np.atleast_1d(xs))
    return f"{min(xs):.1f}–{max(xs):.1f}" if len(xs) > 1 else f"{xs[0]:.1f}"


def table_fixed(r: dict, v: dict) -> str:
    ref = r["stglm"]
    rows = []
    for key, name, config in [
        ("stglm", "stglm fit_genes", f"tol={r['stglm']['tol']:g} (ladder: KKT ≤ 1e-6 on all)"),
        ("stglm_default_tol", "stglm fit_genes, default tol", "tol=1e-06"),
        (
            "glum",
            "glum loop over genes",
            f"GeneralizedLinearRegressor irls-cd, gradient_tol={r['glum']['gradient_tol']:g}",
        ),
    ]:
        x = r[key]
        rows.append(
            [
                name,
                config,
                C.fmt_time(x["wall"]),
                C.fmt_time(x["cpu"]),
                fmt_ratio(x["cpu"] / ref["cpu"]),
                fmt_ratio(x["wall"] / ref["wall"]),
                f"{x['converged_fraction']:.3f}",
                f"{x['kkt_ok_fraction']:.3f}",
                C.fmt_num(x["kkt_max"]),
                C.fmt_num(x["coef_diff_vs_glum"] if key != "glum" else x["coef_diff_vs_stglm"]),
                C.fmt_num(x["J_excess_max"]),
                str(x["n_iter_sum"]),
                fmt_loads(x["load"]),
            ]
        )
    head = [
        "peer",
        "configuration",
        f"wall (median of {REPEATS})",
        "CPU (median)",
        "CPU / stglm",
        "wall / stglm",
        "converged",
        "KKT ≤ 1e-6",
        "max KKT",
        "max |Δβ| vs other peer",
        "max J − min J",
        "Σ iterations",
        "load",
    ]
    return C.markdown_table(head, rows)


def table_cv(r: dict) -> str:
    st, gl, ag = r["stglm"], r["glum"], r["agreement"]
    timed = (
        f"{gl['genes_timed']} genes timed once, ×{gl['n_genes'] / gl['genes_timed']:.1f}"
        if gl["extrapolated"]
        else f"all {gl['genes_timed']} genes, one run"
    )

    def cells(name: str, config: str, timing: str, x: dict, ratio: str) -> list[str]:
        return [
            name,
            config,
            timing,
            C.fmt_time(x["wall"]),
            C.fmt_time(x["cpu"]),
            ratio,
            f"{x['converged_fraction']:.3f}",
            f"{x['kkt_ok_fraction']:.3f}",
            C.fmt_num(x["kkt_max"]),
            fmt_loads(x["load"]),
        ]

    rows = [
        cells(
            "stglm fit_genes(reg_lambda=None)",
            f"tol={st['tol']:g}, 25 λ from λ_max to 1e-3·λ_max per gene, KFold(5, shuffle, 888)",
            f"median of {REPEATS}",
            st,
            "1.0×",
        ),
        cells(
            "glum loop over genes",
            f"GeneralizedLinearRegressorCV irls-cd, gradient_tol={gl['gradient_tol']:g}, "
            "alphas = stglm's path, cv = stglm's folds",
            timed,
            gl,
            fmt_ratio(gl["cpu"] / st["cpu"]),
        ),
    ]
    head = [
        "peer",
        "configuration",
        "timing",
        "wall",
        "CPU",
        "CPU / stglm",
        "converged",
        "KKT ≤ 1e-6 at chosen λ",
        "max KKT",
        "load",
    ]
    gaps = ", ".join(f"{k}: {c}" for k, c in ag["index_gap_counts"].items())
    note = (
        f"\nSame λ chosen for {ag['same_lambda_fraction']:.1%} of {ag['genes_compared']} genes "
        f"(|index gap|: count — {gaps}); on those, max |Δβ| = "
        f"{C.fmt_num(ag['coef_diff_max_same_lambda'])}, max |ΔJ| = "
        f"{C.fmt_num(ag['J_diff_max_same_lambda'])}"
        + (
            f" (largest |Δβ|: {ag['coef_diff_max_gene']['gene']}, λ index "
            f"{ag['coef_diff_max_gene']['lambda_index']}, "
            f"{ag['coef_diff_max_gene']['total_count']:.0f} counts in all)"
            if ag["coef_diff_max_gene"]
            else ""
        )
        + f". stglm's chosen λ lies on the "
        f"independently computed grid for {st['lambda_on_grid_fraction']:.1%} of genes."
    )
    if gl["failed"]:
        names = list(gl["failed"])
        note += (
            f" glum raised ValueError ({next(iter(gl['failed'].values()))!r}) for "
            f"{len(names)} of {gl['genes_timed']} genes (a training fold without counts): "
            + ", ".join(names[:8])
            + (", …" if len(names) > 8 else "")
            + "; they are timed but left out of the comparison."
        )
    return C.markdown_table(head, rows) + "\n" + note


def table_jobs(jobs: dict, title_rows: list[tuple[str, str]], base_key: str = "build") -> str:
    base = jobs[base_key]
    inp = base["runs"][0]["input"]
    in_bytes = inp["counts"] + inp["design"]
    rows = []
    for key, label in title_rows:
        j = jobs[key]
        r0 = j["runs"][0]
        fit = "fit_wall" in j
        own = j["peak_rss"] - j["rss_after_build"]  # same process: the fit's own peak use
        rows.append(
            [
                label,
                str(j["n"]),
                C.fmt_time(j["elapsed"]),
                C.fmt_time(j["fit_wall"]) if fit else "-",
                C.fmt_time(j["fit_cpu"]) if fit else "-",
                C.fmt_mem(j["peak_rss"]),
                C.fmt_mem(j["rss_after_build"]),
                C.fmt_mem(own) if fit else "-",
                f"{own / in_bytes:.1f}×" if fit else "-",
                C.fmt_mem(j["peak_rss"] - base["peak_rss"]) if fit else "-",
                f"{j['peak_rss'] / base['peak_rss']:.2f}×" if fit else "-",
                f"{r0['converged_fraction']:.3f}" if fit else "-",
                C.fmt_num(r0["kkt_max"]) if fit else "-",
                str(r0["n_iter_sum"]) if fit else "-",
                fmt_loads(j["load"]),
            ]
        )
    head = [
        "job",
        "runs",
        "process wall (median)",
        "fit wall",
        "fit CPU",
        "peak RSS (time -v)",
        "RSS after build",
        "fit's own: peak − RSS after build",
        "fit's own / input",
        "peak − build-only run's peak",
        "peak / build-only peak",
        "converged",
        "max KKT (stglm's)",
        "Σ iterations",
        "load",
    ]
    note = (
        f"\nInput: counts {C.fmt_mem(inp['counts'])} ({inp['dtype']} CSR data + indices + "
        f"indptr, {inp['nnz']:,} non-zeros, density {inp['density']:.3f}) + design "
        f"{C.fmt_mem(inp['design'])} (float64) = {C.fmt_mem(in_bytes)}. Process wall: the "
        "whole subprocess (interpreter start, imports, reading or building, fit). Σ iterations: "
        "Newton iterations summed over genes as fit_genes reports them (for CV: the fold "
        "paths and the refit at the chosen λ)."
    )
    return C.markdown_table(head, rows) + "\n" + note


def table_floor(floors: dict) -> str:
    rows = []
    for name, f in floors.items():
        rows.append(
            [
                name,
                str(f["n_iter_sum"]),
                str(f["pairs"]),
                f"{f['hessian_gflop']:.2f}",
                f"{C.fmt_time(f['t_hessian_at_shape_rate'])} ({f['gemm_gflops']:.0f} GFLOP/s)",
                C.fmt_time(f["t_hessian_at_peak"]),
                f"{f['n_exp'] / 1e6:.0f} M",
                C.fmt_time(f["t_exp"]),
                C.fmt_time(f["floor"]),
                C.fmt_time(f["measured"]),
                fmt_ratio(f["ratio"]),
            ]
        )
    head = [
        "fit",
        "Σ Newton iterations (genes)",
        "pairs m(m+1)/2",
        "Hessian GFLOP",
        "Zᵀ·W at its shape's rate",
        "at 1-thread matmul peak",
        "exp evaluations",
        "exp time",
        "floor",
        "measured fit (CPU)",
        "measured / floor",
    ]
    return C.markdown_table(head, rows)


# -------------------------------------------------------------------------------------------


def git_state() -> str:
    state = C.git_src_state()
    if state is None:
        return "unknown"
    head, dirty = state
    return head + (f" + uncommitted changes in src/ ({len(dirty)} files)" if dirty else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--seqfish", type=Path, default=None, help="path of seqfish_mouse_embryo.h5ad")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--no-trace", action="store_true", help="skip the tracemalloc run")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 150 Visium genes, 1 run each, 10⁵ synthetic cells (not for tables)",
    )
    args = ap.parse_args(argv)
    global REPEATS
    if args.quick:
        REPEATS = 1
    if os.environ.get("OPENBLAS_CORETYPE"):
        log("note: OPENBLAS_CORETYPE is set (an older OpenBLAS kernel); see README.md")
    t0 = time.time()
    load_start = os.getloadavg()
    info = C.machine_info()
    results: dict = {"machine": info, "source": git_state(), "load_start": load_start}

    v = visium()
    if args.quick:
        v["adata"] = v["adata"][:, :150].copy()
        v["Y"] = v["Y"][:, :150]
    results["visium_design"] = {
        "columns": list(v["design"].columns),
        "lag_genes": v["lag_genes"],
        "max_abs_corr": v["max_abs_corr"],
    }
    fixed = bench_visium_fixed(v)
    cv = bench_visium_cv(v, fixed["stglm"]["tol"], fixed["glum"]["gradient_tol"])

    seqfish = args.seqfish or next((p for p in SEQFISH_CANDIDATES if p.exists()), None)
    sf = None
    if seqfish is not None and seqfish.exists():
        from run_genes_job import SEQFISH as default_path

        extra = [] if seqfish == default_path else ["--seqfish", str(seqfish)]
        sf = bench_jobs(
            "seqfish",
            [
                ("build", extra, 1),
                ("fixed", [*extra, "--reg-lambda", str(LAMBDA)], REPEATS),
                ("cv", extra, REPEATS),
            ],
        )
    else:
        log("seqFISH data not found: section skipped")
    syn = None
    if not args.skip_synthetic:
        quick = ["--cells", "100000"] if args.quick else []
        syn = bench_jobs(
            "synthetic",
            [
                ("build", quick, 1),
                ("fixed", [*quick, "--reg-lambda", str(SYN_LAMBDA)], REPEATS),
            ],
        )

    if syn and not args.no_trace:
        log("synthetic: one more fit under tracemalloc (where the memory goes; not timed)")
        syn["trace"] = job(
            [
                "synthetic",
                "--mode",
                "fixed",
                *quick,
                "--reg-lambda",
                str(SYN_LAMBDA),
                "--tracemalloc",
            ]
        )

    # hardware floors
    log("machine rates and floors")
    shapes = {"visium": (v["X"].shape[0], 55, v["Y"].shape[1])}
    if sf:
        r0 = sf["fixed"]["runs"][0]
        m = r0["n_predictors"] + 1
        shapes["seqfish"] = (r0["n_obs"], m * (m + 1) // 2, min(r0["chunk_size"], r0["n_genes"]))
    if syn:
        r0 = syn["fixed"]["runs"][0]
        m = r0["n_predictors"] + 1
        shapes["synthetic"] = (r0["n_obs"], m * (m + 1) // 2, r0["chunk_size"])
    rates = machine_rates(shapes)
    floors = {}
    st = fixed["stglm"]
    vlabel = f"Visium fixed λ ({v['Y'].shape[1]:,} genes)"
    floors[vlabel] = floor(
        v["X"].shape[0],
        v["X"].shape[1],
        st["res"]["n_iter"],
        st["cpu"],
        rates["gemm"]["visium"],
        rates,
    )
    # CV: fit_genes counts the iterations of the 5 fold paths (0.8·n cells each) and of the
    # refit (n cells, a few per gene): all are charged at 0.8·n cells, a slight underestimate.
    cst = cv["stglm"]
    clabel = f"Visium CV ({v['Y'].shape[1]:,} genes; ≈, see note)"
    floors[clabel] = floor(
        (N_FOLDS - 1) / N_FOLDS * v["X"].shape[0],
        v["X"].shape[1],
        cst["res"]["n_iter"],
        cst["cpu"],
        rates["gemm"]["visium"],
        rates,
    )
    for key, jobs in (("seqfish", sf), ("synthetic", syn)):
        if jobs:
            r0 = jobs["fixed"]["runs"][0]
            label = f"{key} fixed λ ({r0['n_obs']:,} × {r0['n_genes']} genes)"
            floors[label] = floor(
                r0["n_obs"],
                r0["n_predictors"],
                np.array(r0["n_iter"]),
                jobs["fixed"]["fit_cpu"],
                rates["gemm"][key],
                rates,
            )
    load_end = os.getloadavg()

    # tables
    blas = "; ".join(
        f"{b['internal_api']} {b['version']}, kernel {b['architecture']}" for b in info["blas"]
    )
    lines = [
        "### Whole-transcriptome fits (bench_genes.py)",
        "",
        f"Source: {results['source']}. Run at {time.strftime('%Y-%m-%d %H:%M %Z')}, "
        f"{time.time() - t0:.0f} s. Load average (1, 5, 15 min) at start "
        f"{' '.join(f'{x:.2f}' for x in load_start)}, at end "
        f"{' '.join(f'{x:.2f}' for x in load_end)}.",
        f"Machine: {info['cpu']}, {info['cores']} cores; numpy BLAS {blas}; "
        f"OPENBLAS_CORETYPE {info['OPENBLAS_CORETYPE'] or 'unset'}; BLAS limited to 1 thread "
        f"for every peer; Python {info['python']}, numpy {info['numpy']}, numba "
        f"{info['numba']}, glum {info['glum']}.",
        "",
        f"#### (1a) Visium, all {v['Y'].shape[1]:,} genes × {v['Y'].shape[0]:,} spots, Poisson, "
        f"λ = {LAMBDA}, α = {ALPHA}; design ({v['X'].shape[1]} columns): "
        + ", ".join(results["visium_design"]["columns"])
        + f" (max |corr| between columns {v['max_abs_corr']:.2f})",
        "",
        table_fixed(fixed, v),
        "",
        f"Genes with every coefficient 0 at λ = {LAMBDA}: {fixed['all_zero_fraction']:.1%}; "
        f"non-zero coefficients: {fixed['nonzero_coef_fraction']:.1%}. Ladders (max KKT over "
        "all genes): stglm "
        + ", ".join(f"tol={s['value']:g}: {s['max_kkt']:.1e}" for s in fixed["stglm"]["ladder"])
        + "; glum "
        + ", ".join(
            f"gradient_tol={s['value'] if s['value'] is None else format(s['value'], 'g')}: "
            f"{s['max_kkt']:.1e}"
            for s in fixed["glum"]["ladder"]
        )
        + ".",
        "",
        f"#### (1b) Visium, all genes, cross-validated λ ({N_LAMBDAS} λ × {N_FOLDS} folds)",
        "",
        table_cv(cv),
    ]
    if sf:
        r0 = sf["fixed"]["runs"][0]
        lines += [
            "",
            f"#### (2) seqFISH mouse embryo, {r0['n_obs']:,} cells × {r0['n_genes']} genes, "
            f"niche composition (k = 10 within each optical plane; {r0['n_predictors']} columns: "
            f"the most common type, {r0.get('reference')}, dropped), Poisson, α = {ALPHA}, "
            f"tol = 1e-6 (default), chunk = {r0['chunk_size']} genes",
            "",
            table_jobs(
                sf,
                [
                    ("build", "read + design only"),
                    ("fixed", f"fit_genes λ = {LAMBDA}"),
                    ("cv", "fit_genes CV (25 λ × 5 folds)"),
                ],
            ),
        ]
    if syn:
        r0 = syn["fixed"]["runs"][0]
        lines += [
            "",
            f"#### (3) Synthetic {r0['n_obs']:,} cells × {r0['n_genes']} genes, CSR counts, "
            f"{r0['n_predictors']} standard-normal predictors, Poisson, λ = {SYN_LAMBDA}, "
            f"α = {ALPHA}, tol = 1e-6, chunk = {r0['chunk_size']} genes",
            "",
            table_jobs(
                syn, [("build", "build only"), ("fixed", f"build + fit_genes λ = {SYN_LAMBDA}")]
            ),
        ]
    if syn and "trace" in syn:
        tr = syn["trace"]["tracemalloc"]
        lines += [
            "",
            f"Where the fit's memory goes (one more run under tracemalloc, sampled every 20 ms: "
            f"traced peak {C.fmt_mem(tr['peak'])} above the built input; the largest live "
            f"allocations at the highest sample, {C.fmt_mem(tr['sampled_level'])}):",
            "",
            C.markdown_table(
                ["MiB", "blocks", "allocated at (innermost first)"],
                [
                    [f"{t['bytes'] / 2**20:.1f}", str(t["count"]), t["site"]]
                    for t in tr["top_at_sample"]
                ],
            ),
        ]
    lines += [
        "",
        "#### (4) Distance from the hardware (fixed-λ fits)",
        "",
        table_floor(floors),
        "",
        "Rates measured in this run, 1 BLAS thread: Zᵀ·W "
        + ", ".join(
            f"{k} {g['shape'][0]:,} × {g['shape'][1]} by × {g['shape'][2]}: "
            f"{g['gflops']:.1f} GFLOP/s"
            for k, g in rates["gemm"].items()
        )
        + f"; 2000² matmul {rates['square_2000_gflops_1thread']:.0f} GFLOP/s (1 thread), "
        f"{rates['square_2000_gflops_2threads']:.0f} GFLOP/s (2 threads); np.exp "
        f"{rates['exp_ns_per_element']:.2f} ns per element; a + b → c "
        f"{rates['triad_GBps']:.1f} GB/s. Floor = Σ over genes of Newton iterations × "
        "(the Hessian's pair products, 2·n·m(m+1)/2 flops, at the rate measured for that "
        "product's shape + n exponentials); everything else (gradients, line searches, "
        "coordinate descent, scores) counted as free. The CV row charges every iteration "
        "fit_genes reports (fold paths and refit) at a training fold's 0.8·n cells.",
    ]
    md = "\n".join(lines) + "\n"
    print(md)

    def strip(d):
        if isinstance(d, dict):
            return {k: strip(x) for k, x in d.items() if k not in ("res", "J")}
        if isinstance(d, list):
            return [strip(x) for x in d]
        return d

    results.update(
        visium_fixed=strip(fixed),
        visium_cv=strip(cv),
        seqfish=sf,
        synthetic=syn,
        rates=rates,
        floors=floors,
        load_end=load_end,
        seconds=time.time() - t0,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "genes.json").write_text(json.dumps(results, indent=1, default=C.jsonable))
    (args.out / "genes.md").write_text(md)
    log(f"wrote {args.out / 'genes.md'} and genes.json ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
