"""stglm's own solver benchmarks on two source trees, interleaved in one run: medians and ratios.

For a change that must not cost speed (a refactoring), time the stglm configurations of
``bench_solver.py``, ``bench_cv.py`` and the whole-transcriptome jobs on two checkouts —
A (the reference, e.g. main) and B (the change) — in fresh interpreters
(``PYTHONPATH=<tree>/src``), alternating A, B, B, A, ... so that the machine's load falls
on both alike. Each worker times every problem (``common.median_time``: one warm-up call,
then 5 repeats of ≥ 50 ms); the table gives, per problem and tree, the median and the
fastest over rounds of those per-round medians (CPU time of the process, the figure to
trust on a shared machine; on a busy one the fastest round is the least disturbed), the
ratios B / A, and the ratio of the wall-time medians.

Only the public API is used, so any checkout of stglm runs it.

    python benchmarks/bench_checkouts.py /tmp/main /work/wt-x --rounds 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common as C  # noqa: E402

#: (a) of bench_solver.py and the synthetic CV of bench_cv.py.
LAM_A, ALPHA_A, N_A, P_A, SEED_A = 0.01, 0.5, 20_000, 50, 20240601
N_CV, P_CV, SEED_CV = 2_000, 20, 7
#: The demo's design for the whole-transcriptome jobs (src/stglm/demo.py).
MARKERS = ["KRT15", "TGM4", "CNN1"]


def _problems() -> dict:
    """name -> a call fitting it once (data built here, outside the timed call)."""
    import scipy.sparse as sp

    import stglm
    from stglm import GLM, GLMCV
    from stglm.datasets import visium_prostate
    from stglm.spatial import build_design

    Xa, ya = C.synthetic_poisson(N_A, P_A, SEED_A)
    Xc, yc = C.synthetic_poisson(N_CV, P_CV, SEED_CV)
    v = C.visium_design()
    Xv, Yv = v["X"], v["Y"]
    lam_v = [C.poisson_lambda_max(Xv, Yv[:, j], ALPHA_A) * 10**-1.5 for j in range(Yv.shape[1])]
    adata = visium_prostate()
    design = build_design(adata, section_key="list_ID", lag=MARKERS, coords=True)
    detected = np.asarray((adata.X > 0).mean(axis=0)).ravel()
    tested = list(adata.var_names[detected >= 0.2])
    exact = dict(eta=np.inf, clip_coeffs=0.0, verbose=False)

    def single(alpha):
        return lambda: GLM(distr="poisson", reg_lambda=LAM_A, alpha=alpha, **exact).fit(Xa, ya)

    def visium_single():
        for j in range(Yv.shape[1]):
            GLM(distr="poisson", reg_lambda=lam_v[j], alpha=ALPHA_A, **exact).fit(Xv, Yv[:, j])

    def visium_cv():
        for j in range(Yv.shape[1]):
            GLMCV(**exact).fit(Xv, Yv[:, j])

    genes = dict(link="log", size_factors="total", progress=False, copy=True)
    return {
        "GLM (a) 20,000 × 50, α = 0.5 (NewtonCD, Gram CD)": single(ALPHA_A),
        "GLM (a-ridge) α = 0 (L-BFGS start)": single(0.0),
        "GLM (b) Visium, 5 genes (NewtonCD)": visium_single,
        "GLMCV synthetic 2,000 × 20 (batched folds)": lambda: GLMCV(**exact).fit(Xc, yc),
        "GLMCV Visium, 5 genes (batched folds)": visium_cv,
        "GLMCV sparse 2,000 × 20 (per-fold paths, NewtonCD)": lambda: GLMCV(**exact).fit(
            sp.csr_matrix(Xc), yc
        ),
        "fit_genes Visium 1,255 genes, λ = 0.01 (batched)": lambda: stglm.fit_genes(
            adata, design=design, reg_lambda=0.01, **genes
        ),
        f"fit_genes Visium CV, {len(tested[:100])} genes (batched)": lambda: stglm.fit_genes(
            adata, tested[:100], design=design, reg_lambda=None, **genes
        ),
        f"test_genes LRT, NB θ per gene, {len(tested)} genes (batched)": lambda: stglm.test_genes(
            adata,
            tested,
            design=design,
            reduced=[c for c in design.columns if not c.startswith("lag_")],
            progress=False,
        ),  # fmt: skip
    }


def worker() -> None:
    """Time every problem once in this interpreter; print the JSON of the timings."""
    warnings.simplefilter("ignore")
    out = {}
    with C.threads(1):
        for name, fit in _problems().items():
            r = C.median_time(fit)
            out[name] = {"cpu": r["cpu"], "wall": r["median"]}
    print(json.dumps(out))


def run(trees: list[Path], rounds: int) -> dict:
    """Alternate workers over the trees for ``rounds`` rounds; every worker's timings."""
    times: dict[str, list[dict]] = {str(t): [] for t in trees}
    for r in range(rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            env = {**os.environ, "PYTHONPATH": str(tree / "src")}
            env.pop("OPENBLAS_CORETYPE", None)
            env.pop("OPENBLAS_L2_SIZE", None)
            done = subprocess.run(
                [sys.executable, __file__, "--worker"],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            times[str(tree)].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{rounds}: {tree} done", file=sys.stderr, flush=True)
    return times


def table(times: dict, trees: list[Path]) -> str:
    """Per problem: each tree's median and fastest round (CPU), and the ratios B / A."""
    a, b = (str(t) for t in trees)
    rows = []
    for name in times[a][0]:
        cpu = {t: [w[name]["cpu"] for w in times[t]] for t in (a, b)}
        wall = {t: float(np.median([w[name]["wall"] for w in times[t]])) for t in (a, b)}
        med = {t: float(np.median(cpu[t])) for t in (a, b)}
        low = {t: float(np.min(cpu[t])) for t in (a, b)}
        rows.append(
            [
                name,
                C.fmt_time(med[a]),
                C.fmt_time(med[b]),
                f"{med[b] / med[a]:.3f}",
                C.fmt_time(low[a]),
                C.fmt_time(low[b]),
                f"{low[b] / low[a]:.3f}",
                f"{wall[b] / wall[a]:.3f}",
            ]
        )
    headers = [
        "problem", "A CPU median", "B CPU median", "B/A", "A CPU fastest", "B CPU fastest",
        "B/A fastest", "B/A wall median",
    ]  # fmt: skip
    return C.markdown_table(headers, rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path, help="A (reference) and B checkouts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker()
        return 0
    if len(args.trees) != 2:
        parser.error("give two checkouts: A (reference) and B")
    trees = [t.resolve() for t in args.trees]
    times = run(trees, args.rounds)
    info = C.machine_info()
    text = table(times, trees)
    print(f"A = {trees[0]}\nB = {trees[1]}\nmachine: {info}\n\n{text}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "times": times}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
