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
#: n-vector passes (reads and writes) of one Newton iteration of one gene, counted in
#: batched.py: the gradient R·X̃ (1), W·Z (1), the step's predictors D·X̃ᵀ written (1) and
#: added to Z (3), the trial's −ℓ, R and W from Y and Z (4); Z's own share comes on top.
PASSES = 10


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


def stream_bandwidth(n_threads: int = 1, size: int = 20_000_000) -> float:
    """Bytes/s of a STREAM-like triad a = b + s·c over arrays far beyond the caches.

    Each of ``n_threads`` threads runs the triad on its own share (numpy releases the GIL);
    3 arrays of 8 bytes per element move (2 read, 1 written; write-allocate not counted,
    as STREAM does). Fastest of 5 after a warm-up, wall-clock (a memory rate).
    """
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(1)
    b, c = rng.standard_normal(size), rng.standard_normal(size)
    a = np.empty(size)
    cuts = np.linspace(0, size, n_threads + 1).astype(int)
    parts = list(zip(cuts[:-1], cuts[1:], strict=True))

    def triad(part):
        lo, hi = part
        np.multiply(c[lo:hi], 3.0, out=a[lo:hi])
        np.add(a[lo:hi], b[lo:hi], out=a[lo:hi])

    times = []
    with ThreadPoolExecutor(n_threads) as pool:
        for _ in range(6):
            t = time.perf_counter()
            list(pool.map(triad, parts))
            times.append(time.perf_counter() - t)
    # two numpy passes: a = 3c (read c, write a), a += b (read a and b, write a): 5 arrays
    return 5 * 8 * size / min(times[1:])


def poisson_kkt(X: np.ndarray, y: np.ndarray, b0: float, beta: np.ndarray, lam, alpha) -> float:
    """KKT residual of J = (1/n)Σ[e^z − y·z] + λ[½(1−α)‖β‖² + α‖β‖₁] at (b0, β), in numpy.

    The largest of |∂J/∂b0| and, per coefficient, the distance of its smooth gradient from
    −λα·sign(β_j) (β_j ≠ 0) or from [−λα, λα] (β_j = 0), over the gene's gradient scale
    max(1, |mean(y)|) so that genes of any depth compare.
    """
    mu = np.exp(b0 + X @ beta)
    n = len(y)
    g = X.T @ (mu - y) / n + lam * (1 - alpha) * beta
    l1 = lam * alpha
    coord = np.where(beta != 0, np.abs(g + l1 * np.sign(beta)), np.maximum(np.abs(g) - l1, 0))
    return float(max(abs(np.mean(mu - y)), coord.max()) / max(1.0, abs(y.mean())))


def glum_loop(counts, X: np.ndarray, lam: float, alpha: float) -> dict:
    """glum ``GeneralizedLinearRegressor`` (irls-cd) gene by gene: CPU time and solutions.

    Each gene's column is densified before its clock starts (glum needs a dense y).
    """
    csc = counts.tocsc()
    G = csc.shape[1]
    b0, beta, cpu = np.empty(G), np.empty((G, X.shape[1])), 0.0
    for g in range(G):
        y = csc[:, g].toarray().ravel().astype(np.float64)
        m = C.glum_poisson(lam, alpha)
        c = time.process_time()
        m.fit(X, y)
        cpu += time.process_time() - c
        b0[g], beta[g] = m.intercept_, m.coef_
    return {"cpu": cpu, "b0": b0, "beta": beta}


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
    ap.add_argument("--glum", action="store_true", help="also a glum loop over every gene")
    ap.add_argument(
        "--bandwidth", action="store_true", help="also STREAM-like bandwidth, 1 and 2 threads"
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
        design=design,
        distr="poisson",
        eta=np.inf,
        alpha=0.5,
        reg_lambda=args.reg_lambda,
        clip_coeffs=0.0,
        tol=1e-6,
        progress=False,
        n_jobs=args.n_jobs,
        size_factors=None,
    )  # fmt: skip  (no size factors: the counts' model, and glum's, is y ~ X alone)
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
    end = proc_status()  # before the peer and the bandwidth arrays raise the peak
    with threadpool_limits(limits=1):
        if args.bandwidth:
            bandwidth = {k: stream_bandwidth(k) for k in (1, 2)}
        peer = glum_loop(X, design.to_numpy(), args.reg_lambda, 0.5) if args.glum else None
    if profiler:
        profiler.dump_stats(str(args.profile))
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
        "plan": dict(adata.uns["stglm"].get("plan", {})),
    }
    if args.bandwidth:
        # The bandwidth floor: each Newton iteration of a gene streams ≈ PASSES n-vectors
        # (its share of the chunk's Z too), at the triad's rate measured here.
        chunk = result["plan"].get("chunk_size", FLOOR_GENES)
        moved = its * args.cells * (8 * PASSES + 8 * pairs / max(1, min(chunk, args.genes)))
        result.update(
            bandwidth_1=bandwidth[1], bandwidth_2=bandwidth[2],
            bandwidth_floor=moved / bandwidth[1],
        )  # fmt: skip
    if peer is not None:
        Xd = design.to_numpy()
        csc = X.tocsc()
        ours = np.column_stack([var["stglm_intercept"], adata.varm["stglm_coef"].to_numpy()])
        kkt = {"stglm": [], "glum": []}
        for g in range(args.genes):
            y = csc[:, g].toarray().ravel().astype(np.float64)
            kkt["stglm"].append(poisson_kkt(Xd, y, ours[g, 0], ours[g, 1:], args.reg_lambda, 0.5))
            kkt["glum"].append(
                poisson_kkt(Xd, y, peer["b0"][g], peer["beta"][g], args.reg_lambda, 0.5)
            )
        theirs = np.column_stack([peer["b0"], peer["beta"]])
        result.update(
            glum_cpu=peer["cpu"], glum_ratio=peer["cpu"] / cpu,
            kkt_stglm_max=max(kkt["stglm"]), kkt_glum_max=max(kkt["glum"]),
            coef_max_diff=float(np.abs(ours - theirs).max()),
        )  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
