"""The README's speed figures at the defaults a user gets (issue 16).

The other benchmarks time stglm on its peers' objective (``eta=np.inf``, ``clip_coeffs=0``,
tolerances matched to the peers' accuracy); this one times the calls exactly as a user
writes them, with no option but the data and λ:

- ``GLM(reg_lambda=0.01).fit(X, y)`` on the synthetic Poisson 20,000 × 50 of bench_solver
  (the seed's defaults: eta=2, clip_coeffs=0.01, tol=1e-6);
- ``GLMCV().fit(X, y)`` on 2,000 × 20 (25 λ from λ_max, lambda_min_ratio="auto", 5 folds);
- ``fit_genes(adata, design=design, reg_lambda=0.01)`` and ``reg_lambda=None`` (CV) on all
  1,255 Visium genes, design as in the README (section, lags of KRT15 and CNN1, x, y): the
  front end's defaults (log link, total size factors, no clipping);
- ``stglm fit`` on the same data and design, --lambda 0.01, in a subprocess (wall time,
  numba's cache warm).

Medians over repeats of CPU time (``time.process_time``: the figure to trust on a shared
machine) and wall time, with the load average. Writes results/defaults.json and .md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

RESULTS = C.HERE / "results"


def quiet(fn):
    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()

    return run


def cases() -> dict:
    import stglm
    from stglm import GLM, GLMCV

    X, y = C.synthetic_poisson(20_000, 50, 20240601)
    Xs, ys = C.synthetic_poisson(2_000, 20, 1)
    adata = stglm.datasets.visium_prostate()
    design = stglm.spatial.build_design(
        adata, section_key="list_ID", lag=["KRT15", "CNN1"], coords=True
    )
    kw = {"design": design, "progress": False, "copy": True}
    return {
        "GLM(reg_lambda=0.01).fit, 20,000 × 50": lambda: GLM(reg_lambda=0.01, verbose=False).fit(
            X, y
        ),
        "GLMCV().fit, 2,000 × 20": lambda: GLMCV(verbose=False).fit(Xs, ys),
        "fit_genes(reg_lambda=0.01), Visium 1,255 genes": lambda: stglm.fit_genes(
            adata, reg_lambda=0.01, **kw
        ),
        "fit_genes(reg_lambda=None) (CV), Visium 1,255 genes": lambda: stglm.fit_genes(
            adata, reg_lambda=None, **kw
        ),
    }


def cli_wall(repeats: int) -> dict:
    """`stglm fit` on the bundled Visium data, --lambda 0.01: wall seconds per run."""
    from stglm.datasets import visium_prostate

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "visium.h5ad"
        visium_prostate().write_h5ad(src)
        args = [sys.executable, "-m", "stglm", "fit", str(src), "--section-key", "list_ID"]
        args += ["--lag", "KRT15,CNN1", "--coords", "--lambda", "0.01", "-q", "--force"]
        for i in range(repeats + 1):  # the first run warms the file cache
            t = time.perf_counter()
            subprocess.run([*args, "--out", str(Path(tmp) / f"o{i}.h5ad")], check=True)
            times.append(time.perf_counter() - t)
    return {"median": float(np.median(times[1:])), "times": times[1:]}


def run(repeats: int = 3) -> dict:
    out = {"machine": C.machine_info(), "load_before": C.loadavg(), "rows": {}}
    for name, fn in cases().items():
        r = C.median_time(quiet(fn), repeats=repeats, min_time=0.05)
        out["rows"][name] = {k: r[k] for k in ("median", "cpu", "min", "number")}
        print(f"{name}: CPU {r['cpu']:.4f} s, wall {r['median']:.4f} s", flush=True)
    out["rows"]["stglm fit (CLI), Visium, --lambda 0.01"] = cli_wall(repeats)
    out["load_after"] = C.loadavg()
    return out


def markdown(res: dict) -> str:
    rows = [
        [name, C.fmt_time(r.get("cpu")), C.fmt_time(r["median"])] for name, r in res["rows"].items()
    ]
    return (
        f"Defaults a user gets; load average {res['load_before']} → {res['load_after']}.\n\n"
        + C.markdown_table(["call", "CPU (median)", "wall (median)"], rows)
    )


if __name__ == "__main__":
    res = run(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "defaults.json").write_text(json.dumps(C.jsonable(res), indent=1))
    (RESULTS / "defaults.md").write_text(markdown(res) + "\n")
    print(markdown(res))
