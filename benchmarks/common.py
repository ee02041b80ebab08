"""Shared pieces of the stglm benchmarks: data, J and the KKT residual, glum, timing, memory, R.

Everything that judges a solution (objective, KKT residual, λ_max) is written here from the
formulas with plain NumPy, never by calling stglm, so every peer is judged by the same code:

    J(b0, β) = (1/n)·Σ [μ_i − y_i·z_i] + λ·[½(1−α)‖β‖² + α‖β‖₁],  z = b0 + Xβ, μ = e^z

(the canonical Poisson objective of glmnet, glum and stglm with ``eta=np.inf``; the constant
Σ log y_i! is dropped, b0 is not penalised).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: A solution counts as solved when its KKT residual is at most this.
KKT_TARGET = 1e-6
#: Timing: median over this many repeats, after one warm-up call.
REPEATS = 5
#: Each repeat runs the call enough times to last at least this long (seconds).
MIN_REPEAT_TIME = 0.05

# -------------------------------------------------------------------------------------------
# data
# -------------------------------------------------------------------------------------------


def synthetic_poisson(n: int, p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Standard normal X (n×p) and y ~ Poisson(exp(0.5 + Xβ)), half of β non-zero."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    beta = np.zeros(p)
    k = max(1, p // 2)
    beta[:k] = rng.standard_normal(k) * (0.5 / np.sqrt(k))  # sd of Xβ is about 0.5
    y = rng.poisson(np.exp(0.5 + X @ beta)).astype(np.float64)
    return X, y


#: Visium design (all 2,327 spots): responses are raw counts of these genes ...
VISIUM_Y_GENES = ("FOLH1", "CRISP3", "PLA2G7", "ADGRF1", "CNN1")
#: ... and predictors the spatial lags of the log-normalised expression of these genes
#: (the 20 best-expressed genes of the data set minus the 5 responses).
VISIUM_X_GENES = (
    "TMEFF2",
    "OR51E2",
    "AMACR",
    "OR51C1P",
    "IGKC",
    "SYNPO2",
    "GALNT7",
    "RAB3B",
    "FGFRL1",
    "KCNC2",
    "KRT15",
    "SLC30A4",
    "FHL1",
    "SYNM",
    "VEGFA",
)
VISIUM_K = 6


def poisson_counts_csr(rng, X: np.ndarray, b0: np.ndarray, B: np.ndarray, block: int):
    """int32 CSR counts y_g ~ Poisson(exp(b0_g + X·B[:, g])), drawn ``block`` genes at a time.

    The genes are drawn as columns (so building never holds a dense n × genes array) and
    turned to CSR once, as pipelines store counts.
    """
    import scipy.sparse as sp

    n, n_genes = X.shape[0], B.shape[1]
    indptr, indices, data = [0], [], []
    for start in range(0, n_genes, block):
        cols = slice(start, min(start + block, n_genes))
        counts = rng.poisson(np.exp(b0[cols] + X @ B[:, cols])).astype(np.int32)
        for j in range(counts.shape[1]):
            rows = np.flatnonzero(counts[:, j]).astype(np.int32)
            indices.append(rows)
            data.append(counts[rows, j])
            indptr.append(indptr[-1] + rows.size)
        del counts
    csc = sp.csc_matrix(
        (np.concatenate(data), np.concatenate(indices), np.asarray(indptr, dtype=np.int64)),
        shape=(n, n_genes),
    )
    del data, indices
    return csc.tocsr()


def visium_design() -> dict:
    """The real spatial design of tests/references/make_visium_design.py, on all spots.

    k=6 nearest neighbours within each section (self excluded, weights 1/6); X = spatial lag
    of log1p(counts/total·1e4) of ``VISIUM_X_GENES``; Y = raw counts of ``VISIUM_Y_GENES``.
    """
    sys.path.insert(0, str(ROOT / "tests" / "references"))
    from make_visium_design import knn_lag

    from stglm.datasets import visium_prostate

    a = visium_prostate()
    lag, counts, section = knn_lag(a, VISIUM_X_GENES, VISIUM_K)
    X = np.ascontiguousarray(lag)
    yi = [a.var_names.get_loc(g) for g in VISIUM_Y_GENES]
    Y = np.asarray(counts[:, yi].todense())
    return {
        "X": X,
        "Y": Y,
        "x_genes": VISIUM_X_GENES,
        "y_genes": VISIUM_Y_GENES,
        "section": section,
    }


# -------------------------------------------------------------------------------------------
# objective, KKT residual, λ_max (independent of stglm)
# -------------------------------------------------------------------------------------------


def poisson_objective(X, y, b0: float, beta, lam: float, alpha: float) -> float:
    """J(b0, β) for the canonical Poisson family (constant Σ log y! dropped)."""
    beta = np.asarray(beta, dtype=float)
    z = b0 + X @ beta
    loss = float(np.mean(np.exp(z) - y * z))
    return loss + lam * (0.5 * (1 - alpha) * float(beta @ beta) + alpha * float(np.abs(beta).sum()))


def poisson_kkt(X, y, b0: float, beta, lam: float, alpha: float) -> float:
    """Largest violation of the optimality conditions of J (0 exactly at the optimum).

    g = (1/n)Xᵀ(μ − y) + λ(1−α)β;  v_j = |g_j + λα·sign β_j| if β_j ≠ 0, else max(0, |g_j| − λα);
    residual = max(|mean(μ − y)|, max_j v_j).
    """
    beta = np.asarray(beta, dtype=float)
    r = np.exp(b0 + X @ beta) - y
    g = X.T @ r / len(y) + lam * (1 - alpha) * beta
    v = np.where(
        beta != 0, np.abs(g + lam * alpha * np.sign(beta)), np.maximum(np.abs(g) - lam * alpha, 0.0)
    )
    return max(abs(float(r.mean())), float(v.max(initial=0.0)))


def poisson_lambda_max(X, y, alpha: float) -> float:
    """Smallest λ with β = 0 optimal: max_j |X_jᵀ(y − ȳ)|/(n·α)."""
    return float(np.max(np.abs(X.T @ (y - y.mean())))) / (len(y) * max(alpha, 1e-3))


# -------------------------------------------------------------------------------------------
# peers: glum on J (glum minimises deviance/2n + alpha·l1_ratio‖w‖₁ + ½·alpha·(1−l1_ratio)‖w‖²)
# -------------------------------------------------------------------------------------------


def glum_poisson(lam: float, alpha: float, gradient_tol=None, solver: str = "irls-cd"):
    """glum ``GeneralizedLinearRegressor`` solving J at (λ, α)."""
    from glum import GeneralizedLinearRegressor

    return GeneralizedLinearRegressor(
        family="poisson",
        alpha=lam,
        l1_ratio=alpha,
        fit_intercept=True,
        gradient_tol=gradient_tol,
        solver=solver,
        max_iter=1000,
    )


def glum_poisson_cv(lams, alpha: float, folds, gradient_tol=None):
    """glum ``GeneralizedLinearRegressorCV`` (irls-cd) over the λ grid ``lams`` and ``folds``."""
    from glum import GeneralizedLinearRegressorCV

    return GeneralizedLinearRegressorCV(
        family="poisson",
        l1_ratio=alpha,
        alphas=lams,
        cv=folds,
        fit_intercept=True,
        solver="irls-cd",
        gradient_tol=gradient_tol,
        max_iter=1000,
    )


# -------------------------------------------------------------------------------------------
# timing and memory
# -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def threads(n: int | None):
    """Limit BLAS and OpenMP pools to ``n`` threads (None: leave them as they are)."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n):
        yield


def median_time(
    fn: Callable[[], object], repeats: int = REPEATS, min_time: float = MIN_REPEAT_TIME
) -> dict:
    """Median seconds per call of ``fn`` over ``repeats`` repeats, after one warm-up call.

    Each repeat runs ``fn`` ``number`` times in a row (number chosen from the warm-up so a
    repeat lasts ≥ ``min_time``) and records the mean. Returns the median wall-clock time
    (``median``), the fastest repeat (``min``) and the median CPU time of this process
    (``cpu``: all its threads; it does not count time the CPU spent on other programs, so
    it is the figure to trust when the machine is shared).
    """
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    number = max(1, int(np.ceil(min_time / max(first, 1e-9))))
    times, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t) / number)
        cpus.append((time.process_time() - c) / number)
    return {
        "median": float(np.median(times)),
        "min": float(np.min(times)),
        "cpu": float(np.median(cpus)),
        "times": times,
        "number": number,
        "warmup": first,
    }


def tracemalloc_peak(fn: Callable[[], object]) -> int:
    """Peak bytes allocated through Python's allocators (numpy included) during one call.

    Memory that compiled code allocates itself (numba's NRT, C++ inside glum/tabmat,
    OpenBLAS buffers) is not seen; call ``fn`` once beforehand so caches are warm.
    """
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return int(peak - base)


_FIRST_CALL_SNIPPET = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
from stglm import GLM
t1 = time.perf_counter()
rng = np.random.default_rng(0)
X = rng.standard_normal((2000, 20)); y = rng.poisson(np.exp(0.3 + 0.1 * X[:, 0])).astype(float)
m = GLM(distr="poisson", eta=np.inf, reg_lambda=0.01, alpha=0.5, clip_coeffs=0, verbose=False)
t2 = time.perf_counter(); m.fit(X, y)
t3 = time.perf_counter(); m.fit(X, y)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_fit": t3 - t2, "second_fit": t4 - t3}))
"""


def first_call_times() -> dict:
    """stglm's first-call cost in fresh interpreters: numba compiling vs loading its cache.

    ``cold``: NUMBA_CACHE_DIR points at an empty folder, so every kernel is compiled.
    ``cached``: the same folder again, now holding the cache the cold run wrote.
    """
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("cold", "cached"):
            res = subprocess.run(
                [sys.executable, "-c", _FIRST_CALL_SNIPPET],
                env=env,
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                tail = (res.stderr.strip().splitlines() or ["?"])[-1]
                return {"error": f"first-call subprocess failed: {tail}"}
            out[label] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# -------------------------------------------------------------------------------------------
# R
# -------------------------------------------------------------------------------------------


def r_available() -> bool:
    """Whether Rscript and glmnet are installed."""
    if shutil.which("Rscript") is None:
        return False
    res = subprocess.run(
        ["Rscript", "-e", "suppressMessages(library(glmnet))"], capture_output=True, text=True
    )
    return res.returncode == 0


def run_r(script: str, tasks: list[dict], arrays: dict[str, np.ndarray]) -> list[dict]:
    """Run ``benchmarks/<script>`` on ``tasks``; arrays are handed over as raw float64 files.

    Each array is written column-major (what R's ``matrix(readBin(...), n, p)`` reads); a
    task refers to arrays by name. Returns the script's JSON list of results. The R side
    times itself, so writing and reading the files is never part of a timing.
    """
    with tempfile.TemporaryDirectory() as tmp:
        meta = {}
        for name, arr in arrays.items():
            arr = np.asarray(arr, dtype=np.float64)
            path = Path(tmp) / f"{name}.bin"
            arr.ravel(order="F").tofile(path)
            shape = arr.shape if arr.ndim == 2 else (arr.shape[0], 1)
            meta[name] = {"path": str(path), "nrow": int(shape[0]), "ncol": int(shape[1])}
        spec = Path(tmp) / "spec.json"
        out = Path(tmp) / "out.json"
        spec.write_text(json.dumps({"arrays": meta, "tasks": tasks}))
        res = subprocess.run(
            ["Rscript", str(HERE / script), str(spec), str(out)], capture_output=True, text=True
        )
        if res.returncode != 0:
            raise RuntimeError(f"Rscript {script} failed:\n{res.stdout}\n{res.stderr}")
        return json.loads(out.read_text())


# -------------------------------------------------------------------------------------------
# environment and tables
# -------------------------------------------------------------------------------------------


def blas_info() -> list[dict]:
    """BLAS libraries loaded by numpy, with the kernel (architecture) OpenBLAS uses."""
    from threadpoolctl import threadpool_info

    return [
        {
            k: d.get(k)
            for k in ("internal_api", "version", "architecture", "num_threads", "filepath")
        }
        for d in threadpool_info()
        if d.get("user_api") == "blas"
    ]


def fit_converged(model, X, y) -> bool:
    """Fit a scikit-learn style ``model``; True unless it raised a ConvergenceWarning."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y)
    return not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def loadavg() -> str:
    """The 1, 5 and 15 min load averages, as "1.00 0.88 0.89" ("?" where unavailable)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def machine_info() -> dict:
    """CPU model, core count, library versions and the BLAS kernel, for the README."""
    model = platform.processor() or "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import numba
    import scipy
    import sklearn

    info = {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "sklearn": sklearn.__version__,
        "blas": blas_info(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }
    try:
        import glum

        info["glum"] = glum.__version__
    except ImportError:
        info["glum"] = None
    if r_available():
        res = subprocess.run(
            [
                "Rscript",
                "-e",
                "cat(R.version.string, 'glmnet', as.character(packageVersion('glmnet')))",
            ],
            capture_output=True,
            text=True,
        )
        info["R"] = res.stdout.strip()
    return info


def matmul_reference(n: int, p: int) -> dict:
    """Seconds and GFLOP/s of the Gram matrix AᵀA of an n×(p+1) array (what a Newton step forms)."""
    A = np.random.default_rng(0).standard_normal((n, p + 1))
    t = median_time(lambda: A.T @ A, repeats=REPEATS, min_time=0.05)["median"]
    flops = 2.0 * n * (p + 1) ** 2
    big = np.random.default_rng(1).standard_normal((2000, 2000))
    tb = median_time(lambda: big @ big, repeats=3, min_time=0.05)["median"]
    return {
        "gram_seconds": t,
        "gram_gflops": flops / t / 1e9,
        "square_2000_gflops": 2.0 * 2000**3 / tb / 1e9,
    }


def git_src_state() -> tuple[str, list[str]] | None:
    """HEAD (short hash) and the ``git status --short`` lines of src/; None without git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--short", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout
    except OSError:
        return None
    return head, [d.strip() for d in status.splitlines() if d.strip()]


def jsonable(o):
    """``json.dumps`` default: numpy arrays and scalars as Python values, the rest as str."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.integer | np.floating | np.bool_):
        return o.item()
    return str(o)


def bench_main(run: Callable[..., dict], description: str, argv=None) -> int:
    """Command line of bench_solver / bench_cv: ``run(quick)``, print its table, --json."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--json", type=Path, help="write all numbers here")
    ap.add_argument("--quick", action="store_true", help="2 Visium genes only")
    args = ap.parse_args(argv)
    res = run(quick=args.quick)
    print(res["table"])
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=jsonable))
    return 0


def fmt_time(s: float | None) -> str:
    """Seconds as ms (as s from 1 s on)."""
    if s is None or not np.isfinite(s):
        return "-"
    if s >= 10:
        return f"{s:.1f} s"
    return f"{s:.2f} s" if s >= 1 else f"{s * 1e3:.2f} ms"


def fmt_num(x: float | None, spec: str = ".2e") -> str:
    if x is None or not np.isfinite(x):
        return "-"
    return format(x, spec)


def fmt_mem(b: float | None) -> str:
    if b is None or not np.isfinite(b):
        return "-"
    return f"{b / 2**20:.1f} MiB"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        for r in rows
    ]
    return "\n".join([line, sep, *body])
