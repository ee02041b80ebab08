"""The separation check (``stglm._separation.separated_samples``) on two source trees.

Times the check, in fresh interpreters (``PYTHONPATH=<tree>/src``, 1 BLAS thread), on
the Visium demo design (all 1,255 genes × 2,327 spots; section, 3 spatial lags, x, y: 6
predictors) and on synthetic designs of 6 standard-normal predictors with Poisson genes
(37,000 spots × 200 genes, 10⁶ cells × 20 genes), alternating the trees (A, B, B, A)
so that the machine's load falls on both alike. A run past ``--timeout`` is reported as
such (qhull in 6-D on 10⁶ cells does not finish). Each worker also writes how many genes
it found separated, so that the trees' answers can be compared.

    python benchmarks/bench_separation.py /tmp/main /work/wt-infra --rounds 1 --timeout 300
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

PROBLEMS = ("visium", "synthetic_37k", "synthetic_1m")


def data(name: str):
    """(X, Y (G, n)) of a problem, seeded."""
    if name == "visium":
        from stglm.datasets import visium_prostate
        from stglm.spatial import build_design

        adata = visium_prostate()
        lags = ["KRT15", "TGM4", "CNN1"]
        X = build_design(adata, section_key="list_ID", lag=lags, coords=True).to_numpy(float)
        return X, adata.X.toarray().T
    n, genes = (37_000, 200) if name == "synthetic_37k" else (1_000_000, 20)
    rng = np.random.default_rng(20261202)
    X = rng.standard_normal((n, 6))
    # Rates from e^-6 to e^1 per cell, a weak effect of the predictors: sparse and dense genes.
    base = rng.uniform(-6.0, 1.0, genes)
    beta = rng.normal(0.0, 0.2, (genes, 6))
    Y = np.empty((genes, n))
    for g in range(genes):
        Y[g] = rng.poisson(np.exp(base[g] + X @ beta[g]))
    return X, Y


def worker(name: str) -> None:
    """Time the check once on ``name`` and print a JSON line."""
    import time

    from stglm._separation import separated_samples

    X, Y = data(name)
    wall, cpu = time.perf_counter(), time.process_time()
    found = separated_samples(X, Y)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n_sep = 0 if found is None else int(found.any(axis=1).sum())
    print(json.dumps({"wall": wall, "cpu": cpu, "separated_genes": n_sep}))


def run(tree: str, name: str, timeout: float) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.join(tree, "src"), OPENBLAS_NUM_THREADS="1")
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--worker", name],
            env=env, capture_output=True, text=True, timeout=timeout, check=True,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"wall": None, "cpu": None, "separated_genes": None}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*")
    parser.add_argument("--worker")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    a, b = args.trees
    for name in args.problems.split(","):
        times = {a: [], b: []}
        for r in range(args.rounds):
            for tree in (a, b) if r % 2 == 0 else (b, a):
                times[tree].append(run(tree, name, args.timeout))
        for tree, runs in times.items():
            cpu = [t["cpu"] for t in runs if t["cpu"] is not None]
            shown = f"{np.median(cpu):.3f} s CPU" if cpu else f"> {args.timeout:.0f} s (timed out)"
            genes = {t["separated_genes"] for t in runs}
            print(f"{name:14s} {tree:24s} {shown:24s} separated genes {sorted(genes, key=str)}")
            print(f"  runs: {runs}", flush=True)


if __name__ == "__main__":
    main()
