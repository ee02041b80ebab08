"""Cross-validated λ selection: stglm GLMCV against the seed's procedure, cv.glmnet and glum.

Data: (1) synthetic 2,000 × 20 Poisson; (2) the Visium design on all 2,327 spots (15 lagged
genes as X) for each of 5 response genes (times summed over genes).

Peers, all on the same 5 folds (the ones stglm's default call draws: KFold(5, shuffle,
random_state=888)) and, where they take a grid, stglm's 25-λ data-driven path:
  - stglm GLMCV() as a user calls it (distr="poisson", eta=2.0, clip_coeffs=0.01, tol=1e-6);
  - stglm GLMCV(eta=np.inf, clip_coeffs=0): glmnet's and glum's objective;
  - the seed's procedure: spateo's fixed grid (25 λ log-spaced 0.1 → 1e-6), for each λ 5
    fold fits scored on the held-out fold plus a refit on all data, every fit a
    GLM(solver="batch-gradient") with the seed's defaults: 150 fits. stglm's batch-gradient
    stops when the coefficients stop moving (SEMANTICS.md's fix); spateo itself never
    stopped early (1000 steps every fit): the same 150 fits with tol=1e-300, a fit that
    reaches an exact fixed point sooner charged for 1000 steps at its own per-step time;
  - cv.glmnet(lambda = stglm's path, foldid = the same folds, standardize=FALSE), default
    thresh (1e-7) and thresh=1e-14, timed inside R;
  - glum GeneralizedLinearRegressorCV(alphas = stglm's path, l1_ratio=0.5, cv = the folds,
    solver="irls-cd"), BLAS/OpenMP limited to 1 thread.

Run: python benchmarks/bench_cv.py [--json out.json] [--quick]
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

N_SYN, P_SYN, SEED_SYN = 2_000, 20, 7
ALPHA = 0.5
SPATEO_GRID = np.logspace(-1, -6, 25)
#: Seed procedure: beyond this many seconds per data set, stop and extrapolate.
SEED_BUDGET = 40.0
#: spateo's max_iter: its loop ran every one of these steps.
SPATEO_STEPS = 1000


def _quiet(fn):
    def wrapped():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()

    return wrapped


def stglm_cv(X, y, **kw) -> dict:
    from stglm import GLMCV

    out = {}

    def fit():
        out["m"] = GLMCV(verbose=False, **kw).fit(X, y)

    return {"fit": _quiet(fit), "out": out}


def path_kkt(X, y, intercepts, coefs, lams, alpha) -> float:
    return max(
        C.poisson_kkt(X, y, b0, b, lam, alpha)
        for b0, b, lam in zip(intercepts, coefs, lams, strict=True)
    )


def timed(fit, th=1) -> dict:
    with C.threads(th):
        tm = C.median_time(fit)
        mem = C.tracemalloc_peak(fit)
    return {
        "time": tm["median"],
        "cpu": tm["cpu"],
        "time_min": tm["min"],
        "times": tm["times"],
        "mem": mem,
    }


def seed_procedure(X, y, folds, no_early_stop: bool) -> dict:
    """spateo's GLMCV loop with stglm's batch-gradient GLM (seed defaults); timed once.

    Returns the time of the λ done, the extrapolation to the whole grid, the chosen λ.
    ``no_early_stop``: spateo's own loop, SPATEO_STEPS steps every fit. Emulated with
    tol=1e-300, which still stops where a step changes nothing at all (an exact fixed
    point); such a fit is charged for the steps it skipped at the median time per step of
    the fits that ran all of them (of all fits if none did).
    """
    from stglm import GLM

    kw = {"tol": 1e-300} if no_early_stop else {}
    n = len(y)
    all_idx = np.arange(n)
    scores, n_iter, failures = [], [], 0
    fit_times = []  # (wall, cpu, steps) of each fit, to charge the steps skipped at a fixed point
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    with C.threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lam in SPATEO_GRID:
            s = []
            for tr, te in [*folds, (all_idx, None)]:
                m = GLM(solver="batch-gradient", reg_lambda=lam, verbose=False, **kw)
                try:
                    f0, fc0 = time.perf_counter(), time.process_time()
                    m.fit(X[tr], y[tr])
                    n_iter.append(m.n_iter_)
                    fit_times.append(
                        (time.perf_counter() - f0, time.process_time() - fc0, m.n_iter_)
                    )
                    if te is not None:
                        s.append(m.score(X[te], y[te]))
                except (ValueError, OverflowError):
                    failures += 1
                    s.append(np.inf)
            scores.append(np.mean(s[: len(folds)]))
            done += 1
            if not no_early_stop and time.perf_counter() - t0 > SEED_BUDGET:
                break
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    measured = wall
    if no_early_stop:
        times = np.array(fit_times)
        full = times[times[:, 2] >= SPATEO_STEPS]
        rated = full if len(full) else times
        per_step = np.median(rated[:, :2] / rated[:, 2:], axis=0)  # wall, cpu
        skipped = float(np.sum(SPATEO_STEPS - times[:, 2]))
        wall, cpu = wall + skipped * per_step[0], cpu + skipped * per_step[1]
    scale = len(SPATEO_GRID) / done
    best = int(np.nanargmin(scores)) if done == len(SPATEO_GRID) else None
    return {
        "time": wall * scale,
        "cpu": cpu * scale,
        "measured_time": measured,
        "lambdas_done": done,
        "extrapolated": done < len(SPATEO_GRID),
        "fits": done * (len(folds) + 1),
        "n_iter_total": int(np.sum(n_iter)),
        "failures": failures,
        "best_index": best,
        "mem": None,
    }


def glum_cv(X, y, lams, folds) -> dict:
    out = {}

    def fit():
        out["m"] = C.glum_poisson_cv(lams, ALPHA, folds).fit(X, y)

    return {"fit": _quiet(fit), "out": out}


def stglm_row(name: str, config: str, timing: dict, m, kkt) -> dict:
    """A row for a fitted GLMCV ``m`` (25 λ × (5 folds + full data))."""
    return {
        "name": name,
        "config": config,
        **timing,
        "fits": 6 * 25,
        "best_index": m.best_index_,
        "kkt": kkt,
        "n_iter": m.n_iter_,
    }


def one_dataset(X, y, key: str) -> tuple[list[dict], list[dict], dict, np.ndarray]:
    """Python peers for one (X, y); returns rows and the glmnet tasks to run for it."""
    rows = []
    # stglm, the call a user makes
    s = stglm_cv(X, y)
    r = timed(s["fit"])
    rows.append(
        stglm_row(
            "stglm GLMCV() default call",
            "eta=2, clip_coeffs=0.01, tol=1e-6, 25 λ data-driven, 5 folds",
            r,
            s["out"]["m"],
            None,
        )
    )
    # stglm on glmnet's objective
    s = stglm_cv(X, y, eta=np.inf, clip_coeffs=0)
    r = timed(s["fit"])
    m = s["out"]["m"]
    lams, folds = m.reg_lambda_path_, m.folds_
    kkt = path_kkt(X, y, m.intercept_path_, m.coef_path_, lams, ALPHA)
    rows.append(stglm_row("stglm GLMCV(eta=inf, clip_coeffs=0)", "tol=1e-6", r, m, kkt))
    r2 = timed(s["fit"], th=None)
    rows.append(
        stglm_row(
            "stglm GLMCV(eta=inf, clip_coeffs=0), 2 BLAS threads",
            "tol=1e-6, numpy's default threads",
            r2,
            m,
            kkt,
        )
    )
    # glum
    g = glum_cv(X, y, lams, folds)
    r = timed(g["fit"])
    gm = g["out"]["m"]
    best = int(np.argmin(np.abs(lams - gm.alpha_)))
    rows.append(
        {
            "name": "glum GeneralizedLinearRegressorCV",
            "config": "irls-cd, gradient_tol=default, same λ & folds, 1 thread",
            **r,
            "fits": 5 * 25 + 1,
            "best_index": best,
            "kkt": C.poisson_kkt(X, y, gm.intercept_, gm.coef_, gm.alpha_, ALPHA),
            "kkt_scope": "final refit only",
            "n_iter": None,
        }
    )
    # the seed's procedure
    seed = seed_procedure(X, y, folds, no_early_stop=False)
    rows.append(
        {
            "name": "seed procedure (stglm batch-gradient)",
            "config": "spateo grid 0.1→1e-6, eta=2, lr=0.2, max_iter=1000, tol=1e-6",
            **seed,
            "kkt": None,
            "n_iter": seed["n_iter_total"],
        }
    )
    lit = seed_procedure(X, y, folds, no_early_stop=True)
    rows.append(
        {
            "name": "seed procedure as spateo ran it",
            "config": f"no early stop: {SPATEO_STEPS} steps every fit "
            f"({lit['n_iter_total']:,} run, the rest charged)",
            **lit,
            "best_index": None,
            "kkt": None,
            "n_iter": lit["n_iter_total"],
        }
    )
    foldid = np.zeros(len(y))
    for k, (_, te) in enumerate(folds):
        foldid[te] = k + 1
    tasks = [
        {
            "type": "cv",
            "name": f"{key}|cv.glmnet, thresh={th:g}",
            "X": f"X_{key}",
            "y": f"y_{key}",
            "foldid": f"f_{key}",
            "alpha": ALPHA,
            "lambda": lams.tolist(),
            "thresh": th,
            "maxit": 1e8,
            "repeats": C.REPEATS,
            "min_time": C.MIN_REPEAT_TIME,
        }
        for th in (1e-7, 1e-14)
    ]
    arrays = {f"X_{key}": X, f"y_{key}": y, f"f_{key}": foldid}
    return rows, tasks, arrays, lams


def fit_genes_row(X, Y, genes, lams_of: dict) -> dict:
    """stglm.fit_genes: the same GLMCV for every gene, all genes solved together."""
    import anndata as ad
    import pandas as pd

    from stglm import fit_genes

    adata = ad.AnnData(X=np.asarray(Y, dtype=np.float64), var=pd.DataFrame(index=list(genes)))
    out = {}

    def fit():
        out["a"] = fit_genes(
            adata, design=X, reg_lambda=None, eta=np.inf, clip_coeffs=0, size_factors=None,
            lambda_min_ratio=1e-3, progress=False, copy=True,
        )  # fmt: skip

    r = timed(_quiet(fit))
    a = out["a"]
    coef = np.asarray(a.varm["stglm_coef"], dtype=float)
    b0 = a.var["stglm_intercept"].to_numpy(dtype=float)
    lam = a.var["stglm_lambda"].to_numpy(dtype=float)
    kkt = max(C.poisson_kkt(X, Y[:, j], b0[j], coef[j], lam[j], ALPHA) for j in range(len(genes)))
    best = [int(np.argmin(np.abs(lams_of[f"v_{g}"] - lam[j]))) for j, g in enumerate(genes)]
    return {
        "name": "stglm fit_genes (all genes at once)",
        "config": "reg_lambda=None, eta=inf, clip_coeffs=0: GLMCV per gene, batched",
        **r,
        "fits": 150 * len(genes),
        "best_index": None,
        "best_indices": best,
        "kkt": kkt,
        "kkt_scope": "chosen λ only",
    }


def format_rows(rows: list[dict]) -> list[list[str]]:
    st = next(r for r in rows if r["name"].startswith("stglm GLMCV(eta=inf, clip_coeffs=0)"))
    out = []
    for r in rows:
        kkt = C.fmt_num(r.get("kkt")) if r.get("kkt") is not None else "-"
        if r.get("kkt_scope"):
            kkt += f" ({r['kkt_scope']})"
        time_s = C.fmt_time(r["time"]) + (" (extrapolated)" if r.get("extrapolated") else "")
        bi = r.get("best_index")
        out.append(
            [
                r["name"],
                r["config"],
                time_s,
                C.fmt_time(r["cpu"]),
                str(r.get("fits", "-")),
                "-" if bi is None else str(bi),
                kkt,
                C.fmt_mem(r.get("mem")),
                f"{r['time'] / st['time']:.1f}×",
                f"{r['cpu'] / st['cpu']:.1f}×",
            ]
        )
    return out


HEADERS = [
    "procedure",
    "configuration",
    "wall (median)",
    "CPU (median)",
    "fits",
    "chosen λ index",
    "max KKT, full-data path",
    "peak mem",
    "wall / stglm",
    "CPU / stglm",
]


def sum_rows(per_gene: list[list[dict]]) -> list[dict]:
    out = []
    for rs in zip(*per_gene, strict=True):
        first = rs[0]
        out.append(
            {
                "name": first["name"],
                "config": first["config"],
                "time": sum(r["time"] for r in rs),
                "cpu": sum(r["cpu"] for r in rs),
                "extrapolated": any(r.get("extrapolated") for r in rs),
                "fits": sum(r.get("fits") or 0 for r in rs),
                "best_index": None,
                "best_indices": [r.get("best_index") for r in rs],
                "kkt": None if any(r.get("kkt") is None for r in rs) else max(r["kkt"] for r in rs),
                "kkt_scope": first.get("kkt_scope"),
                "mem": None if any(r.get("mem") is None for r in rs) else max(r["mem"] for r in rs),
            }
        )
    return out


def glmnet_row(r: dict, X, y, lams) -> dict:
    """A cv.glmnet result as a row; the KKT residual is recomputed here on its full-data path."""
    return {
        "name": r["name"].split("|", 1)[1],
        "config": "same λ & folds, standardize=FALSE",
        "time": r["time"],
        "cpu": r["cpu"],
        "time_min": r["time_min"],
        "times": r["times"],
        "mem": r["mem_mb"] * 2**20,
        "fits": 6 * 25,
        "best_index": int(r["index_min"]) - 1,
        "kkt": path_kkt(X, y, r["a0"], np.asarray(r["beta"], dtype=float), lams, ALPHA),
    }


def run(quick: bool = False) -> dict:
    t_start = time.time()
    res = {"loadavg_start": C.loadavg()}
    datasets = {"syn": C.synthetic_poisson(N_SYN, P_SYN, SEED_SYN)}
    d = C.visium_design()
    genes = d["y_genes"][:2] if quick else d["y_genes"]
    for j, g in enumerate(genes):
        datasets[f"v_{g}"] = (d["X"], d["Y"][:, j])

    rows, tasks, arrays, lams_of = {}, [], {}, {}
    for key, (X, y) in datasets.items():
        r, t, a, lams = one_dataset(X, y, key)
        rows[key], lams_of[key] = r, lams
        tasks += t
        arrays.update(a)
    if C.r_available():
        for rr in C.run_r("glmnet_bench.R", tasks, arrays):
            key = rr["name"].split("|", 1)[0]
            X, y = datasets[key]
            rows[key].append(glmnet_row(rr, X, y, lams_of[key]))
    res["rows"] = rows
    res["genes"] = list(genes)
    res["visium_sum"] = sum_rows([rows[f"v_{g}"] for g in genes])
    res["visium_sum"].insert(3, fit_genes_row(d["X"], d["Y"][:, : len(genes)], genes, lams_of))
    res["loadavg_end"] = C.loadavg()
    res["seconds"] = time.time() - t_start
    res["table"] = render(res)
    return res


def render(res: dict) -> str:
    parts = [
        "## Cross-validation (bench_cv.py)",
        "",
        f"25 λ × 5 folds + refit; medians of {C.REPEATS} repeats after a warm-up (the seed's "
        "procedure: one run). Ratios against stglm GLMCV(eta=inf, clip_coeffs=0) at 1 BLAS "
        "thread. Chosen λ index: position in stglm's path (0 = λ_max); for the seed's "
        "procedure it indexes spateo's own grid. KKT: max over the 25 full-data solutions of "
        "the residual computed in numpy (glum refits only the chosen λ).",
        "",
        f"### Synthetic {N_SYN:,} × {P_SYN} Poisson, α = {ALPHA}",
        "",
        C.markdown_table(HEADERS, format_rows(res["rows"]["syn"])),
        "",
        f"### Visium, all 2,327 spots, 15 lagged genes; sum over y = {', '.join(res['genes'])}",
        "",
        C.markdown_table(HEADERS, format_rows(res["visium_sum"])),
        "",
        "Chosen λ index per gene: "
        + "; ".join(f"{r['name']}: {r['best_indices']}" for r in res["visium_sum"]),
        "",
        f"Load average at start / end: {res['loadavg_start']} / {res['loadavg_end']}; "
        f"bench_cv took {res['seconds']:.0f} s.",
    ]
    return "\n".join(parts)


def main(argv=None) -> int:
    return C.bench_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
