"""fit_genes on Dask: gene blocks as tasks on a LocalCluster of 1 and 2 workers vs in memory.

Synthetic Poisson counts (n cells × G genes, p = 10 standard-normal predictors, means
exp(b0_g + x·β_g) with b0_g = log U(0.02, 0.5) and β ~ N(0, 0.1²)) are written once to a
gene-major (CSC) .zarr store. Each configuration runs in its own process, interleaved with
the others, ``--repeats`` times:

- ``memory``: anndata reads the store into memory, fit_genes in that process (one thread);
- ``workers=1`` and ``workers=2``: :func:`stglm.read_dask` leaves the counts on disk and
  fit_genes runs the blocks on a LocalCluster of that many one-thread worker processes
  (started and warmed up — stglm imported on every worker — before the clock starts).

Reported: wall time of the fit (medians), speed-up and scaling efficiency T₁/(N·T_N), peak
RSS of the client (with the scheduler, which a LocalCluster runs in it) and of each worker
(``getrusage``), each block's compute time from Dask's task stream and its distance to the
Hessian-product floor (``bench_genes.floor``: Newton iterations × the pair products at the
rate measured here for the block's shape, plus the exponentials), and the extrapolation
to 10⁷ cells × 18,000 genes on N workers from the measured cost per cell·gene. Every
configuration's coefficients are checked bit for bit against the in-memory fit's.

Run (about 8 min at the default size on 2 cores):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_dask.py

Writes benchmarks/results/dask.json and dask.md and prints the tables.

``--storage`` compares how the counts are stored instead: the same fit on one worker from the
gene-major (CSC) store and from a cell-major (CSR) copy of it (``workers=1,csr``: every block
reads every row chunk), and the one-off cost of :func:`stglm.write_gene_major` rewriting the
CSR store gene-major from a lazy read (``convert``), interleaved. Writes
benchmarks/results/dask_storage.json and dask_storage.md.
"""

from __future__ import annotations

import argparse
import json
import resource
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
import bench_genes as BG  # noqa: E402
import common as C  # noqa: E402

P = 10
#: The fit: Poisson (log link) at one λ, log size factors from the totals.
FIT = {"reg_lambda": 0.01, "size_factors": "total", "progress": False}
CONFIGS = ("memory", "workers=1", "workers=2")
#: ``--storage``: one worker on the CSC and the CSR store, and the conversion CSR → CSC.
STORAGE_CONFIGS = ("workers=1", "workers=1,csr", "convert")
#: The extrapolation's target.
TARGET_CELLS, TARGET_GENES = 10_000_000, 18_000
TARGET_WORKERS = (8, 32, 128, 512)


# -------------------------------------------------------------------------------------------
# data
# -------------------------------------------------------------------------------------------
def make_data(folder: Path, n: int, G: int, seed: int = 0) -> dict:
    """The counts (CSC, float32) to ``folder/counts.zarr``, the design to ``design.npy``."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, P))
    b0 = np.log(rng.uniform(0.02, 0.5, G))
    B = rng.normal(0.0, 0.1, (P, G))
    cols = []
    for start in range(0, G, 50):  # 50 genes at a time: n × 50 dense at most
        stop = min(start + 50, G)
        cols.append(sp.csc_matrix(rng.poisson(np.exp(b0[start:stop] + X @ B[:, start:stop]))))
    counts = sp.hstack(cols, format="csc").astype(np.float32)
    adata = ad.AnnData(
        X=counts,
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(G)]),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_zarr(folder / "counts.zarr")
        adata.X = counts.tocsr()  # the same counts cell-major, as pipelines write h5ad
        adata.write_zarr(folder / "counts_csr.zarr")
    np.save(folder / "design.npy", X)
    (folder / "shape.json").write_text(json.dumps([n, G]))
    return {
        "n": n,
        "genes": G,
        "p": P,
        "nnz": int(counts.nnz),
        "density": counts.nnz / (n * G),
        "stored_bytes": int(counts.data.nbytes + counts.indices.nbytes + counts.indptr.nbytes),
    }


# -------------------------------------------------------------------------------------------
# one configuration, in its own process
# -------------------------------------------------------------------------------------------
def _maxrss() -> int:
    """Peak resident memory of this process, bytes.

    Linux's ``VmHWM`` where it exists: ``getrusage``'s ``ru_maxrss`` survives ``exec``, so
    every job process started by the parent that wrote a large data set would report the
    parent's peak (seen: 14.2 GiB for all three configurations at 10⁶ × 2,000).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu() -> float:
    """CPU seconds (user + system) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _warm() -> int:
    """Import stglm and load its compiled kernels (a tiny fit), as a long run has done."""
    import anndata as ad
    import pandas as pd

    import stglm

    rng = np.random.default_rng(0)
    small = ad.AnnData(X=rng.poisson(1.0, (200, 2)).astype(np.float32) + 1)
    design = pd.DataFrame(rng.standard_normal((200, P)), index=small.obs_names)
    stglm.fit_genes(small, design=design, **FIT)
    return _maxrss()


def job(config: str, folder: Path) -> dict:
    """Fit every gene of ``folder/counts.zarr``; times, memory and the task stream."""
    import anndata as ad
    import pandas as pd

    import stglm

    X = np.load(folder / "design.npy")
    block = chunk_genes(*json.loads((folder / "shape.json").read_text()))  # the same for all
    out: dict = {"config": config}
    started = time.perf_counter()
    if config == "convert":
        return _convert_job(folder, out)
    if config == "memory":
        _warm()
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata = ad.read_zarr(folder / "counts.zarr")
        out["read_seconds"] = time.perf_counter() - started
        design = pd.DataFrame(X, index=adata.obs_names)
        t0, c0 = time.perf_counter(), _cpu()
        stglm.fit_genes(adata, design=design, chunk_size=block, **FIT)
        out["fit_seconds"] = time.perf_counter() - t0
        out["client_cpu_seconds"], out["worker_cpu_seconds"] = _cpu() - c0, []
    else:
        from distributed import Client, LocalCluster, get_task_stream

        n_workers = int(config.split("=")[1].split(",")[0])
        store = "counts_csr.zarr" if config.endswith(",csr") else "counts.zarr"
        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        client = Client(cluster)
        client.run(_warm)
        out["cluster_start_seconds"] = time.perf_counter() - started
        adata = stglm.read_dask(folder / store, chunk_size=block)
        out["chunks"] = [list(c) for c in adata.X.chunks]
        design = pd.DataFrame(X, index=adata.obs_names)
        w0 = client.run(_cpu)
        t0, c0 = time.perf_counter(), _cpu()
        with get_task_stream(client) as stream:
            stglm.fit_genes(adata, design=design, chunk_size=block, **FIT)
        out["fit_seconds"] = time.perf_counter() - t0
        out["client_cpu_seconds"] = _cpu() - c0  # the scheduler runs here too
        out["worker_cpu_seconds"] = [v - w0[k] for k, v in client.run(_cpu).items()]
        out["worker_maxrss"] = sorted(client.run(_maxrss).values())
        out["tasks"] = _task_times(stream.data)
        client.close()
        cluster.close()
    out["client_maxrss"] = _maxrss()
    out["n_iter"] = adata.var["stglm_n_iter"].to_numpy().tolist()
    np.save(folder / f"coef-{config}.npy", adata.varm["stglm_coef"].to_numpy())
    return out


def _convert_job(folder: Path, out: dict) -> dict:
    """Rewrite the CSR store gene-major from a lazy read (Dask's default scheduler)."""
    import stglm

    _warm()
    target = folder / "converted.zarr"
    t0, c0 = time.perf_counter(), _cpu()
    stglm.write_gene_major(stglm.read_dask(folder / "counts_csr.zarr"), target, overwrite=True)
    out["fit_seconds"] = time.perf_counter() - t0  # the conversion's, in the tables' column
    out["client_cpu_seconds"], out["worker_cpu_seconds"] = _cpu() - c0, []
    out["client_maxrss"] = _maxrss()  # before the check below, which reads both whole
    converted = stglm.read_dask(target).X.compute()
    original = stglm.read_dask(folder / "counts.zarr").X.compute()
    out["identical_matrix"] = bool((converted != original).nnz == 0)
    return out


def _task_times(records: list[dict]) -> dict:
    """Compute seconds of the block tasks (one per block, in block order) and of the reads."""
    blocks, reads = {}, 0.0
    for record in records:
        key = str(record["key"])
        seconds = sum(
            s["stop"] - s["start"] for s in record["startstops"] if s["action"] == "compute"
        )
        if key.startswith("stglm-block-"):
            blocks[int(key.rsplit("-", 1)[1])] = blocks.get(int(key.rsplit("-", 1)[1]), 0) + seconds
        else:
            reads += seconds
    return {"block_seconds": [blocks[k] for k in sorted(blocks)], "other_seconds": reads}


def run_job(config: str, folder: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--job", config, "--data", str(folder)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{config} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------
# the whole benchmark
# -------------------------------------------------------------------------------------------
def chunk_genes(n: int, G: int) -> int:
    """The block size every configuration is given: fit_genes' own (:func:`block_genes`)."""
    return block_genes(n)


def summarise(data: dict, runs: dict[str, list[dict]], rates: dict) -> dict:
    n, G = data["n"], data["genes"]
    med = {c: float(np.median([r["fit_seconds"] for r in runs[c]])) for c in CONFIGS}
    cpu = {
        c: float(
            np.median([r["client_cpu_seconds"] + sum(r["worker_cpu_seconds"]) for r in runs[c]])
        )
        for c in CONFIGS
    }
    t_mem, t1, t2 = med["memory"], med["workers=1"], med["workers=2"]
    block = chunk_genes(n, G)
    one = runs["workers=1"][-1]
    n_iter = np.asarray(one["n_iter"])
    block_seconds = np.asarray(one["tasks"]["block_seconds"])
    # The Hessian-product floor of every block, at the rate measured for its shape.
    floors = []
    for k, seconds in enumerate(block_seconds):
        genes = n_iter[k * block : (k + 1) * block]
        floors.append(BG.floor(n, P, genes, float(seconds), rates["gemm"]["block"], rates))
    total_block = float(block_seconds.sum())
    per_cell_gene = total_block / (n * G)
    efficiency = t1 / (2 * t2)
    target_seconds = per_cell_gene * TARGET_CELLS * TARGET_GENES
    return {
        "median_fit_seconds": med,
        "median_cpu_seconds": cpu,
        "speedup_2_over_1": t1 / t2,
        "speedup_2_over_memory": t_mem / t2,
        "dask_1_over_memory": t1 / t_mem,
        "efficiency_2": efficiency,
        "block_genes": block,
        "n_blocks": len(block_seconds),
        "block_seconds_median": float(np.median(block_seconds)),
        "block_floor_median": float(np.median([f["floor"] for f in floors])),
        "block_ratio_median": float(np.median([f["ratio"] for f in floors])),
        "read_and_other_seconds": one["tasks"]["other_seconds"],
        "seconds_per_cell_gene": per_cell_gene,
        "floors": floors,
        "target": {
            "cells": TARGET_CELLS,
            "genes": TARGET_GENES,
            "cpu_seconds": target_seconds,
            "hours_on": {
                str(w): target_seconds / (w * min(1.0, efficiency)) / 3600 for w in TARGET_WORKERS
            },
            "block_genes": chunk_genes(TARGET_CELLS, TARGET_GENES),
            "worker_gib": worker_memory_model(TARGET_CELLS, chunk_genes(TARGET_CELLS, TARGET_GENES))
            / 2**30,
        },
        "model_worker_gib_here": worker_memory_model(n, block) / 2**30,
    }


#: The sizing table's rows (cells, genes, label) for docs/dask.md.
SIZING = (
    (1_000_000, 2_000, "10⁶ × 2,000 (the issue's benchmark)"),
    (1_000_000, 18_000, "10⁶ × 18,000"),
    (2_000_000, 18_000, "2·10⁶ × 18,000 (a Visium HD section, 8 µm)"),
    (10_000_000, 18_000, "10⁷ × 18,000 (Visium HD, 2 µm)"),
)
SIZING_WORKERS = (8, 32, 128)


def pair_plan(n: int) -> tuple[str, int]:
    """How fit_genes holds the design's pair products at ``n`` cells under the default
    budget (SharedDesign's rule: whole in float64 within the pair budget, else float32,
    else rebuilt tile by tile) and the bytes it keeps."""
    from stglm._solvers._options import DEFAULT_OPTIONS

    m = P + 1
    values, budget = n * m * (m + 1) // 2, DEFAULT_OPTIONS.pair_budget()
    if 8 * values <= budget:
        return "float64", 8 * values
    if 4 * values <= budget:
        return "float32", 4 * values
    return "float64 tiles", 0


def block_genes(n: int, threads: int = 1) -> int:
    """fit_genes' own block size for a fixed-λ Poisson fit at ``n`` cells, for a worker
    running ``threads`` blocks at once (they share its memory budget)."""
    from stglm._cv import FIXED_COLUMN_ARRAYS, default_chunk_size

    return default_chunk_size(
        n, reserved=pair_plan(n)[1], n_jobs=threads, n_arrays=FIXED_COLUMN_ARRAYS
    )


def worker_memory_model(n: int, block: int, threads: int = 1) -> float:
    """Bytes a worker needs: the shared design once, and per thread a running block and one
    read ahead (see docs/dask.md): 4 copies of the n × p design (X, X̃ᵀ, its scaled copy, |X|),
    its pair products as :func:`pair_plan` keeps them, the working arrays of a fixed-λ block
    (FIXED_COLUMN_ARRAYS n-vectors per gene) and its dense responses, the responses of the
    block read ahead, plus ~300 MiB of imported libraries."""
    from stglm._cv import FIXED_COLUMN_ARRAYS

    m = P + 1
    shared = 4 * 8 * n * m + pair_plan(n)[1]
    per_thread = 8 * (FIXED_COLUMN_ARRAYS + 2) * n * block
    return 300 * 2**20 + shared + threads * per_thread


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def sizing_table(res: dict) -> str:
    """docs/dask.md's sizing table: the measured block cost per cell·gene, fit_genes' own
    block size and pair products at each size, the worker-memory model, and the wall time
    on N one-thread workers if the blocks spread evenly (at the measured 2-worker
    efficiency, at most 1)."""
    s = res["summary"]
    per_cell_gene, efficiency = s["seconds_per_cell_gene"], min(1.0, s["efficiency_2"])
    rows = []
    for n, G, label in SIZING:
        one, two, cpu = block_genes(n), block_genes(n, threads=2), per_cell_gene * n * G
        rows.append(
            [
                label,
                pair_plan(n)[0],
                f"{one}, {worker_memory_model(n, one) / 2**30:.1f} GiB",
                f"{two}, {worker_memory_model(n, two, threads=2) / 2**30:.1f} GiB",
                f"{cpu / 3600:.2f}",
                *(_duration(cpu / (w * efficiency)) for w in SIZING_WORKERS),
            ]
        )
    d = res["data"]
    return (
        C.markdown_table(
            [
                "cells × genes",
                "pair products",
                "1-thread worker: block, memory",
                "2-thread worker: blocks, memory",
                "CPU-hours",
                *(f"{w} workers" for w in SIZING_WORKERS),
            ],
            rows,
        )
        + f"\n\nFrom the run on {d['n']:,} cells × {d['genes']:,} genes: "
        f"{per_cell_gene * 1e9:.0f} ns of block compute per cell·gene, 2-worker efficiency "
        f"{s['efficiency_2']:.0%}; blocks and pair products as fit_genes chooses them under the "
        "default 4 GiB memory budget (benchmarks/bench_dask.py writes this table).\n"
    )


def tables(res: dict) -> str:
    s, d, runs = res["summary"], res["data"], res["runs"]
    rows = []
    for c in CONFIGS:
        fits = [r["fit_seconds"] for r in runs[c]]
        workers = [max(r.get("worker_maxrss", [0])) for r in runs[c]]
        cpus = [r["client_cpu_seconds"] + sum(r["worker_cpu_seconds"]) for r in runs[c]]
        rows.append(
            [
                c,
                " / ".join(C.fmt_time(t) for t in fits),
                " / ".join(C.fmt_time(t) for t in cpus),
                C.fmt_time(s["median_fit_seconds"][c]),
                f"{s['median_fit_seconds']['memory'] / s['median_fit_seconds'][c]:.2f}×",
                C.fmt_mem(float(np.median([r["client_maxrss"] for r in runs[c]]))),
                "-" if c == "memory" else C.fmt_mem(float(np.median(workers))),
            ]
        )
    main = C.markdown_table(
        [
            "configuration",
            "fit wall (each run)",
            "CPU, all processes (each run)",
            "median wall",
            "speed-up vs memory",
            "client peak RSS",
            "worker peak RSS (max)",
        ],
        rows,
    )
    t = s["target"]
    measured_worker = float(np.median([max(r["worker_maxrss"]) for r in runs["workers=1"]]))
    extra = C.markdown_table(
        ["quantity", "value"],
        [
            [
                "data",
                f"{d['n']:,} cells × {d['genes']:,} genes, p = {d['p']}, {d['density']:.1%} "
                f"non-zero, CSC zarr {C.fmt_mem(d['stored_bytes'])}",
            ],
            ["blocks", f"{s['n_blocks']} of {s['block_genes']} genes (fit_genes' default)"],
            [
                "scaling 1 → 2 workers",
                f"{s['speedup_2_over_1']:.2f}× (efficiency {s['efficiency_2']:.0%})",
            ],
            ["Dask 1 worker / in memory", f"{s['dask_1_over_memory']:.2f}×"],
            ["block compute, median", C.fmt_time(s["block_seconds_median"])],
            [
                "its Hessian-product floor, median",
                f"{C.fmt_time(s['block_floor_median'])} → {s['block_ratio_median']:.1f}× the floor",
            ],
            ["reads and other tasks (1 worker, total)", C.fmt_time(s["read_and_other_seconds"])],
            ["cost per cell·gene", f"{s['seconds_per_cell_gene'] * 1e9:.2f} ns"],
            [
                "10⁷ cells × 18,000 genes",
                f"{t['cpu_seconds'] / 3600:.0f} CPU-hours; "
                + ", ".join(f"{h:.1f} h on {w}" for w, h in t["hours_on"].items())
                + " workers",
            ],
            [
                "worker memory at 10⁷ cells (model)",
                f"{t['worker_gib']:.1f} GiB per one-thread worker, blocks of "
                f"{t['block_genes']} gene(s)",
            ],
            [
                "worker memory here (model / measured)",
                f"{s['model_worker_gib_here'] * 1024:.0f} MiB / {C.fmt_mem(measured_worker)}",
            ],
        ],
    )
    return f"{main}\n\n{extra}\n"


def interleaved_runs(configs, folder: Path, repeats: int, loads: list) -> dict[str, list[dict]]:
    """Each configuration's job once per round, ``repeats`` rounds; the load after each job."""
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    for _ in range(repeats):
        for config in configs:
            runs[config].append(run_job(config, folder))
            loads.append(C.loadavg())
            print(f"  {config}: {runs[config][-1]['fit_seconds']:.1f} s", file=sys.stderr)
    return runs


def run(n: int, G: int, repeats: int) -> dict:
    machine = C.machine_info()
    loads = [C.loadavg()]
    folder = Path(tempfile.mkdtemp(prefix="stglm-dask-"))
    try:
        t0 = time.perf_counter()
        data = make_data(folder, n, G)
        data["write_seconds"] = time.perf_counter() - t0
        runs = interleaved_runs(CONFIGS, folder, repeats, loads)
        reference = np.load(folder / "coef-memory.npy")
        identical = {
            c: bool(np.array_equal(np.load(folder / f"coef-{c}.npy"), reference)) for c in CONFIGS
        }
        block = chunk_genes(n, G)
        m = P + 1
        rates = BG.machine_rates({"block": (n, m * (m + 1) // 2, block)})
        summary = summarise(data, runs, rates)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    res = {
        "machine": machine,
        "loadavg": loads,
        "data": data,
        "runs": runs,
        "identical_to_memory": identical,
        "rates": rates,
        "summary": summary,
        "git": C.git_src_state(),
    }
    res["table"] = tables(res)
    return res


def run_storage(n: int, G: int, repeats: int) -> dict:
    """The fit on one worker from the CSC and the CSR store, and the conversion, interleaved."""
    machine = C.machine_info()
    loads = [C.loadavg()]
    folder = Path(tempfile.mkdtemp(prefix="stglm-dask-storage-"))
    try:
        data = make_data(folder, n, G)
        runs = interleaved_runs(STORAGE_CONFIGS, folder, repeats, loads)
        identical = bool(
            np.array_equal(np.load(folder / "coef-workers=1,csr.npy"),
                           np.load(folder / "coef-workers=1.npy"))
        )  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    res = {
        "machine": machine,
        "loadavg": loads,
        "data": data,
        "block_genes": chunk_genes(n, G),
        "runs": runs,
        "csr_identical_to_csc": identical,
        "converted_identical": all(r["identical_matrix"] for r in runs["convert"]),
        "git": C.git_src_state(),
    }
    res["table"] = storage_table(res)
    return res


def storage_table(res: dict) -> str:
    runs = res["runs"]
    labels = {
        "workers=1": "fit, 1 worker, gene-major (CSC) store",
        "workers=1,csr": "fit, 1 worker, cell-major (CSR) store",
        "convert": "write_gene_major: CSR store → CSC (once)",
    }
    rows = []
    for config in STORAGE_CONFIGS:
        wall = [r["fit_seconds"] for r in runs[config]]
        cpu = [r["client_cpu_seconds"] + sum(r["worker_cpu_seconds"]) for r in runs[config]]
        reads = [r["tasks"]["other_seconds"] for r in runs[config] if "tasks" in r]
        worker = [max(r["worker_maxrss"]) for r in runs[config] if r.get("worker_maxrss")]
        rows.append([
            labels[config],
            " / ".join(C.fmt_time(t) for t in wall),
            C.fmt_time(float(np.median(wall))),
            C.fmt_time(float(np.median(cpu))),
            C.fmt_time(float(np.median(reads))) if reads else "-",
            C.fmt_mem(float(np.median(worker))) if worker else "-",
            C.fmt_mem(float(np.median([r["client_maxrss"] for r in runs[config]]))),
        ])  # fmt: skip
    return C.markdown_table(
        ["run", "wall (each run)", "median wall", "median CPU, all processes",
         "read tasks (median)", "worker peak RSS", "client peak RSS"],
        rows,
    ) + "\n"  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=200_000)
    ap.add_argument("--genes", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--storage", action="store_true", help="CSC vs CSR store, and conversion")
    ap.add_argument("--job", choices=CONFIGS + STORAGE_CONFIGS, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=HERE / "results" / "dask.json")
    ap.add_argument(
        "--sizing-only", action="store_true", help="rewrite results/dask_sizing.md from --json"
    )
    args = ap.parse_args(argv)
    if args.job:
        print(json.dumps(job(args.job, args.data), default=C.jsonable))
        return 0
    if args.storage:
        res = run_storage(args.cells, args.genes, args.repeats)
        path = HERE / "results" / "dask_storage.json"
        path.write_text(json.dumps(res, indent=1, default=C.jsonable))
        path.with_suffix(".md").write_text(res["table"])
        print(res["table"])
        print("CSR fit identical to CSC:", res["csr_identical_to_csc"],
              "; converted matrix identical:", res["converted_identical"])  # fmt: skip
        return 0
    if not args.sizing_only:
        res = run(args.cells, args.genes, args.repeats)
        args.json.write_text(json.dumps(res, indent=1, default=C.jsonable))
        args.json.with_suffix(".md").write_text(res["table"])
        print(res["table"])
        print("identical to the in-memory fit:", res["identical_to_memory"])
    else:
        res = json.loads(args.json.read_text())
    sizing = sizing_table(res)
    (args.json.parent / "dask_sizing.md").write_text(sizing)
    print(sizing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
