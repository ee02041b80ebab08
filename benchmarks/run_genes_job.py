"""One whole-transcriptome job in its own process, for bench_genes.py's memory measurements.

bench_genes.py runs this script under ``/usr/bin/time -v`` so that the peak resident memory
(VmHWM) of one job is measured alone: the data are read or built here, never in the parent.

    python benchmarks/run_genes_job.py seqfish --mode fixed --out job.json
    python benchmarks/run_genes_job.py synthetic --mode build --out job.json

Modes: ``build`` (read or build the AnnData and the design, then stop: the baseline RSS),
``fixed`` (``fit_genes`` at one λ) and ``cv`` (``fit_genes`` with ``reg_lambda=None``:
the data-driven path, cross-validated). Everything runs with BLAS limited to one thread
(threadpoolctl) unless ``--threads 0``. Writes a JSON summary to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

SEQFISH = Path("/work/shared/data/seqfish_mouse_embryo.h5ad")
SEQFISH_CELLTYPE = "celltype_mapped_refined"
SEQFISH_NEIGHBORS = 10

#: Synthetic data: n cells × G genes, Poisson counts from a design of P predictors.
SYN_CELLS, SYN_GENES, SYN_PREDICTORS, SYN_SEED = 1_000_000, 200, 5, 20240611
#: Gene means (at x = 0) log-uniform in this range: about 10 % non-zero counts overall.
SYN_MEAN_RANGE = (0.01, 0.5)


def proc_status() -> dict:
    """VmRSS and VmHWM (peak RSS so far) of this process, in bytes (Linux /proc)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def seqfish(path: Path = SEQFISH, drop_reference: bool = True):
    """The seqFISH embryo and its niche-composition design.

    Neighbours are searched within each optical plane (the ``_z2``/``_z5`` suffix of the
    cell ids): the two planes image the same section, so without this a cell's nearest
    neighbour is often itself in the other plane. With ``drop_reference`` the most common
    cell type's column is dropped (the shares sum to 1, collinear with the intercept).
    """
    import anndata as ad

    from stglm.spatial import niche_composition

    adata = ad.read_h5ad(path)
    plane = np.array([name.rsplit("_", 1)[-1] for name in adata.obs_names])
    design = niche_composition(
        adata, SEQFISH_CELLTYPE, n_neighbors=SEQFISH_NEIGHBORS, batch_key=plane
    )
    info = {"reference": None}
    if drop_reference:
        reference = adata.obs[SEQFISH_CELLTYPE].value_counts().idxmax()
        design = design.drop(columns=[f"niche_{reference}"])
        info["reference"] = str(reference)
    return adata, design, info


def synthetic(n: int, n_genes: int, p: int, seed: int):
    """CSR int32 counts y_g ~ Poisson(exp(b0_g + Xβ_g)), X standard normal (n × p).

    b0_g = log(m_g), m_g log-uniform in SYN_MEAN_RANGE; β_g has entries N(0, 0.15²), a
    random half of them zero. Genes are drawn a block at a time, so building never holds a
    dense n × n_genes array.
    """
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    b0 = rng.uniform(*np.log(SYN_MEAN_RANGE), size=n_genes)
    B = rng.normal(0.0, 0.15, size=(p, n_genes)) * (rng.random((p, n_genes)) < 0.5)
    counts = C.poisson_counts_csr(rng, X, b0, B, 10)
    names = pd.Index([f"cell{i}" for i in range(n)])
    adata = ad.AnnData(
        X=counts,
        obs=pd.DataFrame(index=names),
        var=pd.DataFrame(index=[f"gene{g}" for g in range(n_genes)]),
    )
    design = pd.DataFrame(X, index=names, columns=[f"x{j}" for j in range(p)])
    return adata, design


def default_chunk_size(n_obs: int, counts_bytes: int) -> int | None:
    """The genes per chunk fit_genes picks by default (its rule, read from stglm if present)."""
    from stglm import _transcriptome

    rule = getattr(_transcriptome, "default_chunk_size", None)
    return None if rule is None else int(rule(n_obs))


def input_bytes(adata, design) -> dict:
    """Bytes of the counts (data + indices + indptr, or the dense array) and of the design."""
    X = adata.X
    if hasattr(X, "indptr"):
        counts = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
        nnz = int(X.nnz)
    else:
        counts, nnz = np.asarray(X).nbytes, int(np.count_nonzero(X))
    return {
        "counts": int(counts),
        "design": int(design.to_numpy().nbytes),
        "nnz": nnz,
        "density": nnz / (adata.n_obs * adata.n_vars),
        "dtype": str(X.dtype),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=["seqfish", "synthetic"])
    ap.add_argument("--mode", choices=["build", "fixed", "cv"], default="fixed")
    ap.add_argument("--reg-lambda", type=float, default=0.01)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--n-lambdas", type=int, default=25)
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (0: numpy's default)")
    ap.add_argument("--seqfish", type=Path, default=SEQFISH, help="the seqFISH h5ad")
    ap.add_argument("--keep-reference", action="store_true", help="seqfish: keep all niches")
    ap.add_argument("--cells", type=int, default=SYN_CELLS)
    ap.add_argument("--genes", type=int, default=SYN_GENES)
    ap.add_argument("--predictors", type=int, default=SYN_PREDICTORS)
    ap.add_argument("--seed", type=int, default=SYN_SEED)
    ap.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace numpy's allocations during the fit: peak and the largest sites at it",
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from threadpoolctl import threadpool_info, threadpool_limits

    import stglm  # noqa: F401  (in every mode, so the build-only baseline holds the libraries)

    t0 = time.perf_counter()
    if args.dataset == "seqfish":
        adata, design, info = seqfish(args.seqfish, drop_reference=not args.keep_reference)
    else:
        adata, design = synthetic(args.cells, args.genes, args.predictors, args.seed)
        info = {}
    build_s = time.perf_counter() - t0
    after_build = proc_status()
    result = {
        "dataset": args.dataset,
        "mode": args.mode,
        "n_obs": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "n_predictors": int(design.shape[1]),
        "input": input_bytes(adata, design),
        "build_seconds": build_s,
        "rss_after_build": after_build.get("VmRSS"),
        "hwm_after_build": after_build.get("VmHWM"),
        "threads": args.threads,
        "blas": [
            {k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for d in threadpool_info()
            if d.get("user_api") == "blas"
        ],
        **info,
    }
    if args.mode != "build":
        import warnings

        from stglm import fit_genes

        kwargs = dict(
            design=design,
            distr="poisson",
            eta=np.inf,
            alpha=args.alpha,
            reg_lambda=args.reg_lambda if args.mode == "fixed" else None,
            n_lambdas=args.n_lambdas,
            cv=args.cv,
            clip_coeffs=0.0,
            size_factors=None,  # the peers' objective has no offset
            tol=args.tol,
            chunk_size=args.chunk_size,
            progress=False,
        )
        limit = threadpool_limits(limits=args.threads) if args.threads > 0 else None
        watcher = _PeakWatcher() if args.tracemalloc else contextlib.nullcontext()
        t, c = time.perf_counter(), time.process_time()
        with watcher, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_genes(adata, **kwargs)
        fit_s, fit_cpu = time.perf_counter() - t, time.process_time() - c
        if args.tracemalloc:
            result["tracemalloc"] = watcher.summary()
        if limit is not None:
            limit.restore_original_limits()
        var = adata.var
        status = var["stglm_status"].astype(str).value_counts().to_dict()
        end = proc_status()
        result.update(
            {
                "fit_seconds": fit_s,
                "fit_cpu_seconds": fit_cpu,
                "tol": args.tol,
                "reg_lambda": args.reg_lambda if args.mode == "fixed" else None,
                "alpha": args.alpha,
                "status": {str(k): int(v) for k, v in status.items()},
                "converged_fraction": float(var["stglm_converged"].mean()),
                "kkt_max": float(np.nanmax(var["stglm_kkt"])),
                "n_iter_sum": int(var["stglm_n_iter"].sum()),
                "n_iter": var["stglm_n_iter"].astype(int).tolist(),
                "chunk_size": args.chunk_size
                or default_chunk_size(adata.n_obs, result["input"]["counts"]),
                "n_iter_max": int(var["stglm_n_iter"].max()),
                "nonzero_coef_fraction": float(np.mean(adata.varm["stglm_coef"].to_numpy() != 0)),
                "rss_end": end.get("VmRSS"),
                "hwm_end": end.get("VmHWM"),
            }
        )
    args.out.write_text(json.dumps(result, indent=1))
    return 0


class _PeakWatcher:
    """Samples tracemalloc every ``interval`` s; keeps a snapshot near the highest level seen.

    tracemalloc cannot snapshot at the exact peak, so this keeps the snapshot taken at the
    highest traced level among the samples (diagnosis only: sampling slows the fit).
    """

    def __init__(self, interval: float = 0.02):
        import threading

        self.interval, self.best, self.snapshot = interval, 0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            current = tracemalloc.get_traced_memory()[0]
            if current > 1.02 * self.best:
                self.best, self.snapshot = current, tracemalloc.take_snapshot()

    def __enter__(self):
        tracemalloc.start(25)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

    def summary(self, top: int = 12) -> dict:
        """The traced peak, and the largest allocation sites (file:line) in the kept snapshot."""
        out = {"peak": int(self.peak), "sampled_level": int(self.best), "top_at_sample": []}
        if self.snapshot is not None:
            for s in self.snapshot.statistics("traceback")[:top]:
                frames = [
                    f"{f.filename.rsplit('/src/', 1)[-1]}:{f.lineno}"
                    for f in s.traceback
                    if "/stglm/" in f.filename
                ][-3:]
                out["top_at_sample"].append(
                    {
                        "site": " <- ".join(reversed(frames)) or str(s.traceback[0]),
                        "bytes": int(s.size),
                        "count": int(s.count),
                    }
                )
        return out


if __name__ == "__main__":
    sys.exit(main())
