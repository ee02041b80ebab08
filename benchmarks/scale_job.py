"""One fit_genes job of bench_scale.py in its own process: build, fit, measure, write JSON.

    python benchmarks/scale_job.py --cells 100000 --genes 200 --predictors 10 --out job.json

Builds synthetic sparse Poisson counts (int32 CSR; gene means log-uniform in 0.01–10 at
x = 0; X standard normal), then runs ``fit_genes`` at one λ with BLAS on one thread, and
measures in the same process: CPU and wall time of the fit, the resident memory after the
build and the peak (VmHWM) after the fit, and the floor — the time the Hessian products
Zᵀ·W of all Newton iterations would take at the rate of one well-shaped product (64 genes)
measured here, in float64. A small fit first loads numba's cached kernels (not timed).
``--profile FILE`` writes cProfile's statistics of the fit.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

#: Gene means at x = 0, log-uniform in this range.
MEAN_RANGE = (0.01, 10.0)
#: Genes per block while drawing counts (no dense n × G array is ever held).
DRAW_BLOCK = 20
#: Genes of the product that sets the floor's rate: a chunk wide enough for BLAS.
FLOOR_GENES = 64


def proc_status() -> dict:
    """VmRSS and VmHWM of this process in bytes (Linux /proc)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def synthetic(n: int, n_genes: int, p: int, seed: int):
    """(AnnData with int32 CSR counts, design DataFrame): y_g ~ Poisson(exp(b0_g + Xβ_g)).

    b0_g = log(m_g), m_g log-uniform in MEAN_RANGE; β_g has entries N(0, 0.1²), a random
    half of them 0 (|Xβ| stays small so that the means stay near m_g).
    """
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    b0 = rng.uniform(*np.log(MEAN_RANGE), size=n_genes)
    B = rng.normal(0.0, 0.1 / np.sqrt(p / 5), size=(p, n_genes)) * (rng.random((p, n_genes)) < 0.5)
    counts = C.poisson_counts_csr(rng, X, b0, B, DRAW_BLOCK)
    counts.indptr = counts.indptr.astype(np.int64)
    names = pd.RangeIndex(n).astype(str)
    adata = ad.AnnData(X=counts, var=pd.DataFrame(index=[f"g{g}" for g in range(n_genes)]))
    adata.obs_names = names
    design = pd.DataFrame(X, index=names, columns=[f"x{j}" for j in range(p)])
    return adata, design


def floor_rate(n: int, pairs: int) -> float:
    """GFLOP/s of Zᵀ·W (n × pairs by n × FLOOR_GENES, float64), fastest of 3 after a warm-up."""
    rng = np.random.default_rng(0)
    rows = min(n, 200_000)  # the rate is the same per row beyond a few cache sizes
    Z = rng.standard_normal((rows, pairs))
    W = rng.standard_normal((FLOOR_GENES, rows))
    times = []
    for _ in range(4):
        t = time.process_time()  # CPU time: other processes' load does not count
        W @ Z
        times.append(time.process_time() - t)
    return 2 * rows * pairs * FLOOR_GENES / min(times[1:]) / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, required=True)
    ap.add_argument("--genes", type=int, required=True)
    ap.add_argument("--predictors", type=int, required=True)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--reg-lambda", type=float, default=1e-3)
    ap.add_argument("--n-jobs", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--profile", type=Path, default=None)
    ap.add_argument("--save-coef", type=Path, default=None, help="coefficients to this .npy")
    ap.add_argument(
        "--pair-dtype", default=None, help="NewtonOptions.pair_dtype for this run (default: auto)"
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import warnings

    from threadpoolctl import threadpool_limits

    import stglm

    if args.pair_dtype:  # the estimators' routes and budgets, for this process only
        from stglm._glm import GLM
        from stglm._solvers import NewtonOptions

        GLM._newton_options = NewtonOptions(pair_dtype=args.pair_dtype)

    t0 = time.perf_counter()
    adata, design = synthetic(args.cells, args.genes, args.predictors, args.seed)
    build_s = time.perf_counter() - t0
    X = adata.X
    counts_bytes = int(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes)
    after_build = proc_status()
    m = args.predictors + 1
    pairs = m * (m + 1) // 2
    kwargs = dict(
        design=design, distr="poisson", eta=np.inf, alpha=0.5, reg_lambda=args.reg_lambda,
        clip_coeffs=0.0, tol=1e-6, progress=False, n_jobs=args.n_jobs,
    )  # fmt: skip
    with threadpool_limits(limits=1):
        gflops = floor_rate(args.cells, pairs)
        with warnings.catch_warnings():  # numba's cached kernels loaded before the clock
            warnings.simplefilter("ignore")
            small = adata[:2000, :4].copy()
            stglm.fit_genes(small, **{**kwargs, "design": design.iloc[:2000]})
            del small
        profiler = cProfile.Profile() if args.profile else None
        t, c = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if profiler:
                profiler.enable()
            stglm.fit_genes(adata, chunk_size=args.chunk_size, **kwargs)
            if profiler:
                profiler.disable()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    if profiler:
        profiler.dump_stats(str(args.profile))
    end = proc_status()
    var = adata.var
    n_iter = var["stglm_n_iter"].to_numpy()
    its = int(n_iter.sum())
    floor_s = 2.0 * args.cells * pairs * its / (gflops * 1e9)
    if args.save_coef:
        coef = np.column_stack([var["stglm_intercept"], adata.varm["stglm_coef"].to_numpy()])
        np.save(args.save_coef, coef)
    result = {
        "n_obs": args.cells,
        "n_genes": args.genes,
        "p": args.predictors,
        "n_jobs": args.n_jobs,
        "nnz": int(X.nnz),
        "density": X.nnz / (args.cells * args.genes),
        "counts_bytes": counts_bytes,
        "build_seconds": build_s,
        "rss_after_build": after_build["VmRSS"],
        "hwm_after_build": after_build["VmHWM"],
        "hwm_end": end["VmHWM"],
        "own_peak": end["VmHWM"] - after_build["VmRSS"],
        "fit_wall": wall,
        "fit_cpu": cpu,
        "n_iter_sum": its,
        "converged": float(var["stglm_converged"].mean()),
        "kkt_max": float(np.nanmax(var["stglm_kkt"])),
        "floor_gflops": gflops,
        "floor_seconds": floor_s,
        "ratio_to_floor": cpu / floor_s,
        "loadavg_end": list(Path("/proc/loadavg").read_text().split()[:3]),
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
