"""Where stglm's time goes: per-component timings of the irls-cd solver, for one fit and GLMCV.

The solver's pieces are wrapped with timers at run time (nothing in src/ is changed):
validation, solver set-up (incl. the tolerance scale), Newton terms (r, w), gradient, KKT
residual, Hessian (Gram) formation, coordinate descent, line search (objective evaluations),
and, for GLMCV, the path's own gradient/KKT checks, sub-problem restriction and scoring.
Each figure is inclusive time summed over all calls; "other" is what is left of the total.

Run: python benchmarks/profile_stglm.py [--threads 1]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402
from bench_cv import N_SYN, P_SYN, SEED_SYN  # noqa: E402
from bench_solver import ALPHA_A, LAM_A, N_A, P_A, SEED_A, VISIUM_LAMBDA_FRACTION  # noqa: E402

TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def _wrap(owner, attr: str, label: str) -> None:
    fn = getattr(owner, attr, None)
    if fn is None or getattr(fn, "_profiled", False):
        return

    def wrapped(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            TIMES[label] += time.perf_counter() - t
            CALLS[label] += 1

    wrapped._profiled = True
    setattr(owner, attr, wrapped)


def instrument() -> None:
    """Wrap the pieces that exist in the current source tree."""
    from importlib import import_module

    # import_module: stglm._solvers re-exports a *function* named newton_cd.
    glm_mod = import_module("stglm._glm")
    cv_mod = import_module("stglm._glm_cv")
    path_mod = import_module("stglm._path")
    ncd = import_module("stglm._solvers.newton_cd")
    inner = import_module("stglm._solvers._inner")
    newton = import_module("stglm._solvers._newton")

    for attr, label in [
        ("solve", "solver: total"),
        ("__init__", "solver: set-up"),
        ("_gradient", "gradient Xᵀr"),
        ("direction", "direction (Gram + CD)"),
        ("_evaluate", "evaluate J, r, w (fused kernel)"),
    ]:
        _wrap(ncd.NewtonCD, attr, label)
    _wrap(inner.GramCD, "hessian", "Hessian (Gram) formation")
    _wrap(newton.ProximalNewton, "line_search", "line search (single and batched)")
    for attr, label in [("kkt_residual", "KKT residual"), ("tolerance_scale", "tolerance_scale")]:
        _wrap(ncd, attr, label)
    for attr in ("_cd_gram", "_cd_csc_residual"):
        _wrap(inner, attr, "CD kernel (numba)")
    _wrap(glm_mod._GLMBase, "_validate", "validation")
    _wrap(glm_mod.GLM, "fit", "GLM.fit: total")
    _wrap(cv_mod.GLMCV, "fit", "GLMCV.fit: total")
    _wrap(cv_mod.GLMCV, "_score_path", "CV scoring")  # before the CV driver (_cv.py)
    try:
        _wrap(import_module("stglm._cv").Scoring, "scores", "CV scoring")
    except ImportError:  # an older source tree
        pass
    batched = import_module("stglm._solvers.batched")
    for attr, label in [
        ("solve", "batched solver: total"),
        ("_evaluate", "batched: evaluate J, r, w (fused kernel)"),
        ("_gradient", "batched: gradients"),
    ]:
        _wrap(batched.BatchedNewtonCD, attr, label)
    _wrap(batched.SharedDesign, "hessians", "batched: Hessians (W·Z)")
    _wrap(inner, "newton_directions", "batched: CD kernels (numba)")
    for attr, label in [
        ("batched_path", "path: batched (all folds + refit)"),
        ("gradient", "path: full gradient check"),
        ("_restrict", "path: restrict to kept columns"),
        ("tolerance_scale", "tolerance_scale"),
        ("lambda_path", "lambda path"),
        ("solve", "path: solve (all)"),
    ]:
        _wrap(path_mod, attr, label)


def report(title: str, fn, reps: int, top_total: str) -> str:
    fn()  # warm-up (numba cache load, imports)
    TIMES.clear()
    CALLS.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(reps):
        fn()
    wall, cpu = (time.perf_counter() - t0) / reps, (time.process_time() - c0) / reps
    total = TIMES[top_total] / reps
    lines = [
        f"### {title}",
        "",
        f"{reps} runs; per run: wall {C.fmt_time(wall)}, CPU {C.fmt_time(cpu)}; "
        f"instrumented total ({top_total}) {C.fmt_time(total)}.",
        "",
        "| piece | calls / run | time / run | share | per call |",
        "|---|---|---|---|---|",
    ]
    for label, t in sorted(TIMES.items(), key=lambda kv: -kv[1]):
        per_run = t / reps
        calls = CALLS[label] / reps
        lines.append(
            f"| {label} | {calls:.0f} | {C.fmt_time(per_run)} | "
            f"{per_run / total:.0%} | {per_run / max(calls, 1) * 1e6:.1f} µs |"
        )
    return "\n".join(lines)


def cprofile_top(fn, n: int = 15) -> str:
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(n)
    return s.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (0: numpy default)")
    ap.add_argument("--cprofile", action="store_true", help="also print cProfile's top lines")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    instrument()
    from stglm import GLM, GLMCV

    th = args.threads or None
    Xa, ya = C.synthetic_poisson(N_A, P_A, SEED_A)
    Xc, yc = C.synthetic_poisson(N_SYN, P_SYN, SEED_SYN)
    d = C.visium_design()
    Xv, yv = d["X"], d["Y"][:, 0]
    lam_v = C.poisson_lambda_max(Xv, yv, ALPHA_A) * VISIUM_LAMBDA_FRACTION
    kw = {"distr": "poisson", "eta": np.inf, "alpha": ALPHA_A, "clip_coeffs": 0, "verbose": False}
    jobs = [
        (
            f"GLM fit, synthetic {N_A:,} × {P_A}, λ={LAM_A}, tol=1e-6",
            lambda: GLM(reg_lambda=LAM_A, **kw).fit(Xa, ya),
            20,
            "GLM.fit: total",
        ),
        (
            "GLM fit, Visium FOLH1 (2,327 × 15), λ mid-path, tol=1e-8",
            lambda: GLM(reg_lambda=lam_v, tol=1e-8, **kw).fit(Xv, yv),
            50,
            "GLM.fit: total",
        ),
        (
            f"GLMCV, synthetic {N_SYN:,} × {P_SYN} (eta=inf, clip 0)",
            lambda: GLMCV(eta=np.inf, clip_coeffs=0, verbose=False).fit(Xc, yc),
            10,
            "GLMCV.fit: total",
        ),
        (
            "GLMCV, Visium FOLH1 (eta=inf, clip 0)",
            lambda: GLMCV(eta=np.inf, clip_coeffs=0, verbose=False).fit(Xv, yv),
            5,
            "GLMCV.fit: total",
        ),
    ]
    out = [
        f"BLAS threads: {th or 'numpy default'}; load average {C.loadavg()}",
        "",
    ]
    with C.threads(th):
        for title, fn, reps, top in jobs:
            out.append(report(title, fn, reps, top))
            out.append("")
            if args.cprofile:
                out.append("```\n" + cprofile_top(fn) + "```\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
