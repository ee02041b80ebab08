"""Same inputs, same outputs across a refactoring: fit a fixed set of problems, write what came out.

Uses the public API only (``stglm.GLM``, ``GLMCV``, ``fit_genes``, ``test_genes``,
``stglm.spatial.build_design``, ``stglm.datasets``), so that it runs unchanged on an older
checkout (``PYTHONPATH=<checkout>/src``). Every problem is seeded; the JSON holds, per
problem, the coefficients, intercepts, CV scores, θ and iteration counts.

    python benchmarks/refactor_identity.py --out after.json
    python benchmarks/refactor_identity.py --compare before.json after.json

``--compare`` prints, per problem and field, the largest absolute difference and the
largest difference relative to the field's largest magnitude (max|a − b| / max|a|, so that
a coefficient that is 0 up to rounding does not make a relative difference of 1); it exits
with status 1 when any relative difference exceeds 1e-12, when an integer field (iteration
counts) differs at all, or when the two files do not hold the same problems and fields.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

#: Largest relative difference (to each field's largest magnitude) accepted by --compare.
REL_TOL = 1e-12
#: Visium genes of the per-gene problems: every STRIDE-th gene with counts in ≥ 20 % of spots.
STRIDE, MIN_DETECTED = 9, 0.2
#: The demo's design and fit (src/stglm/demo.py).
MARKERS = ["KRT15", "TGM4", "CNN1"]
DEMO_LAMBDA = 0.01


# ---------------------------------------------------------------------------------------------
# synthetic problems
# ---------------------------------------------------------------------------------------------
def _design(n: int, p: int, seed: int, sparse: bool = False, collinear: bool = False):
    """Columns of unequal means and spreads (the solvers' scaling at work); 10 % dense if sparse;
    ``collinear``: every column a common one plus 1 % noise (an ill-conditioned design)."""
    rng = np.random.default_rng(seed)
    if collinear:
        common = rng.standard_normal((n, 1))
        return common + 0.01 * rng.standard_normal((n, p)), rng
    if sparse:
        X = sp.random(n, p, density=0.1, random_state=seed, format="csr",
                      data_rvs=lambda k: rng.standard_normal(k))  # fmt: skip
        return X, rng
    X = rng.standard_normal((n, p)) * rng.uniform(0.5, 3.0, p) + rng.uniform(-1.0, 1.0, p)
    return X, rng


def _response(distr: str, X, rng, scale: float) -> np.ndarray:
    """y of the family at z = 0.3 + Xβ (clipped to ±3), β sparse with N(0, scale²) entries."""
    p = X.shape[1]
    beta = rng.standard_normal(p) * scale * (rng.random(p) < 0.4)
    z = 0.3 + np.asarray(X @ beta).ravel()
    z = np.clip(z, -3.0, 3.0)
    if distr == "gaussian":
        return z + rng.standard_normal(z.size)
    if distr == "gamma":
        return rng.gamma(2.0, np.exp(z) / 2.0)
    if distr == "neg-binomial":
        mu = np.exp(z)
        return rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(float)
    return rng.poisson(np.exp(z)).astype(float)


def _glm_out(model) -> dict:
    return {
        "coef": model.beta_,
        "intercept": model.beta0_,
        "theta": model.theta_,
        "n_iter": int(model.n_iter_),
    }


def _glmcv_out(model) -> dict:
    return {
        "coef": model.beta_,
        "intercept": model.beta0_,
        "coef_path": model.coef_path_,
        "intercept_path": model.intercept_path_,
        "cv_scores": model.cv_scores_,
        "lambda_path": model.reg_lambda_path_,
        "theta": model.theta_,
        "n_iter": int(model.n_iter_),
    }


def _synthetic(estimator, out, fixed: dict, n: int, p: int, seed: int, scale: float):
    """``fit(distr, ...)``: a problem fitting ``estimator`` on seeded data, results by ``out``.

    ``data`` names what the fit gets besides X and y: "offset", "weights".
    """

    def fit(distr, n=n, p=p, seed=seed, sparse=False, collinear=False, data=(), **kw):
        def run():
            X, rng = _design(n, p, seed, sparse, collinear)
            y = _response(distr, X, rng, scale)
            fit_kw = {}
            if "offset" in data:
                fit_kw["offset"] = rng.normal(0.0, 0.3, n)
            if "weights" in data:
                fit_kw["sample_weight"] = rng.uniform(0.2, 3.0, n)
            return out(estimator(distr=distr, **fixed, **kw).fit(X, y, **fit_kw))

        return run

    return fit


def glm_problems() -> dict[str, Callable[[], dict]]:
    """Single fits: every family, both link conventions, dense/sparse, offset, weights, p > n."""
    from stglm import GLM

    fixed = {"verbose": False, "clip_coeffs": 0.0}
    fit = _synthetic(GLM, _glm_out, fixed, n=400, p=12, seed=0, scale=0.15)

    return {
        "glm/poisson-seed-link": fit("poisson", reg_lambda=0.02, eta=2.0),
        "glm/poisson-log-link": fit("poisson", reg_lambda=0.02, link="log", tol=1e-10),
        "glm/poisson-offset-weights": fit(
            "poisson", reg_lambda=0.01, link="log", data=("offset", "weights")
        ),
        "glm/poisson-sparse": fit("poisson", sparse=True, reg_lambda=0.01, link="log"),
        "glm/poisson-unpenalised-first": fit(
            "poisson",
            reg_lambda=0.05,
            link="log",
            penalty_factor=[0.0, 0.0] + [1.0] * 10,
            data=("offset",),
        ),
        "glm/neg-binomial-fixed-theta": fit("neg-binomial", reg_lambda=0.02, theta=2.0),
        "glm/neg-binomial-theta-ml": fit(
            "neg-binomial", reg_lambda=0.02, link="log", theta="ml", alpha=1.0
        ),
        "glm/gamma": fit("gamma", reg_lambda=0.02, tol=1e-9),
        "glm/gamma-weights-sparse": fit(
            "gamma", sparse=True, reg_lambda=0.01, link="log", data=("weights",)
        ),
        "glm/gaussian": fit("gaussian", reg_lambda=0.05, alpha=1.0),
        "glm/gaussian-offset": fit("gaussian", reg_lambda=0.05, data=("offset", "weights")),
        "glm/poisson-p-gt-n-gram": fit("poisson", n=80, p=200, reg_lambda=0.05, link="log"),
        "glm/poisson-p-gt-n-wide": fit("poisson", n=120, p=1300, reg_lambda=0.05, link="log"),
        "glm/gaussian-wide-sparse": fit(
            "gaussian", n=150, p=1200, sparse=True, reg_lambda=0.02, alpha=1.0
        ),
        "glm/poisson-wide-ridge-cg": fit(
            "poisson", n=100, p=1100, reg_lambda=0.1, alpha=0.0, link="log", tol=1e-8
        ),
        "glm/poisson-ridge-lbfgs": fit(
            "poisson", n=4000, p=25, reg_lambda=0.02, alpha=0.0, link="log", tol=1e-9
        ),
        "glm/gamma-ridge-lbfgs-weights": fit(
            "gamma", n=3000, p=20, reg_lambda=0.01, alpha=0.0, link="log", data=("weights",)
        ),
        "glm/neg-binomial-ridge-lbfgs-sparse": fit(
            "neg-binomial", n=6000, p=30, sparse=True, reg_lambda=0.01, alpha=0.0, theta=2.0
        ),
        "glm/poisson-lbfgs-then-newton": fit(
            "poisson",
            n=4000,
            p=20,
            collinear=True,
            reg_lambda=1e-4,
            alpha=0.0,
            link="log",
            tol=1e-10,
        ),
        "glm/poisson-max-iter-reached": fit("poisson", reg_lambda=0.001, tol=1e-14, max_iter=2),
        "glm/gamma-tight-tol": fit("gamma", reg_lambda=0.01, alpha=1.0, tol=1e-15),
    }


def glmcv_problems() -> dict[str, Callable[[], dict]]:
    """GLMCV on its two routes: all folds in one batched solve, and each fold's path alone."""
    from stglm import GLMCV

    # lambda_min_ratio pinned at its value before "auto" (the problems must be the same in
    # every checkout compared).
    fixed = {"verbose": False, "n_lambdas": 12, "cv": 4, "lambda_min_ratio": 1e-3}
    fit = _synthetic(GLMCV, _glmcv_out, fixed, n=600, p=10, seed=1, scale=0.25)

    return {
        "glmcv/batched-poisson": fit("poisson"),
        "glmcv/batched-poisson-log-offset-weights": fit(
            "poisson", link="log", data=("offset", "weights")
        ),
        "glmcv/batched-gaussian-ridge": fit("gaussian", alpha=0.0),
        "glmcv/batched-neg-binomial-theta-ml": fit("neg-binomial", link="log", theta="ml"),
        "glmcv/per-fold-sparse-poisson": fit("poisson", sparse=True, p=30),
        "glmcv/per-fold-wide-gamma": fit("gamma", n=200, p=80, link="log", data=("weights",)),
        "glmcv/per-fold-wide-poisson-no-screening": fit(
            "poisson", n=200, p=70, screening=False, data=("offset",)
        ),
    }


# ---------------------------------------------------------------------------------------------
# the bundled Visium data
# ---------------------------------------------------------------------------------------------
def _visium():
    from stglm.datasets import visium_prostate
    from stglm.spatial import build_design

    adata = visium_prostate()
    design = build_design(adata, section_key="list_ID", lag=MARKERS, coords=True)
    detected = np.asarray((adata.X > 0).mean(axis=0)).ravel()
    genes = list(adata.var_names[detected >= MIN_DETECTED][::STRIDE])
    return adata, design, genes


def _gene_results(adata, key: str, genes: list[str]) -> dict:
    """Every numeric per-gene field fit_genes wrote under ``key``, for ``genes``."""
    out = {}
    for name, frame in adata.varm.items():
        if name.startswith(key):
            out[f"varm:{name}"] = np.asarray(frame.loc[genes], dtype=float)
    for column in adata.var.columns:
        if column.startswith(f"{key}_"):
            values = adata.var.loc[genes, column]
            if values.dtype.kind in "biuf":
                out[f"var:{column}"] = values.to_numpy()
    return out


def visium_problems() -> dict[str, Callable[[], dict]]:
    """fit_genes (fixed λ, CV, NB with θ per gene), test_genes (LRT), the demo's fit."""
    import stglm

    cache = {}

    def data():
        if not cache:
            cache["v"] = _visium()
        return cache["v"]

    def fit(key, **kw):
        def run():
            adata, design, genes = data()
            adata = adata.copy()
            stglm.fit_genes(adata, genes, design=design, key_added=key, progress=False, **kw)
            return _gene_results(adata, key, genes)

        return run

    def lrt():
        adata, design, genes = data()
        reduced = [c for c in design.columns if not c.startswith("lag_")]
        table = stglm.test_genes(
            adata.copy(), genes, design=design, reduced=reduced, test="lrt", progress=False
        )
        return {
            f"table:{c}": table[c].to_numpy(dtype=float)
            for c in table.columns
            if table[c].dtype.kind in "biuf"
        }

    def demo_fit():
        # The demo's first step (stglm fit ... --lambda 0.01), through the CLI as it runs it.
        import anndata as ad

        from stglm.cli import main

        adata, _, _ = data()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "visium.h5ad"
            adata.write_h5ad(path)
            out = Path(tmp) / "fit.h5ad"
            args = ["fit", str(path), "--section-key", "list_ID", "--lag", ",".join(MARKERS),
                    "--coords", "--distr", "poisson", "--link", "log", "--size-factors",
                    "total", "--alpha", "0.5", "--lambda", str(DEMO_LAMBDA),
                    "--out", str(out)]  # fmt: skip
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                main(args, prog_name="stglm", standalone_mode=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitted = ad.read_h5ad(out)
        return _gene_results(fitted, "stglm", list(fitted.var_names))

    # fit_genes' defaults before issue 16 pinned, so that every checkout fits the same problems.
    common = dict(link="log", size_factors="total", clip_coeffs=0.01, lambda_min_ratio=1e-3)
    return {
        "fit_genes/poisson-fixed-lambda": fit("fixed", reg_lambda=0.01, **common),
        "fit_genes/poisson-cv": fit("cv", reg_lambda=None, n_lambdas=15, cv=3, **common),
        "fit_genes/neg-binomial-theta-per-gene": fit(
            "nb", distr="neg-binomial", theta="cox-reid", reg_lambda=0.01, **common
        ),
        "fit_genes/poisson-max-iter-unpenalised-section": fit(
            "capped",
            reg_lambda=0.01,
            max_iter=3,
            tol=1e-12,
            penalty_factor=[0.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            **common,
        ),
        "fit_genes/neg-binomial-ml-cv": fit(
            "nbcv", distr="neg-binomial", theta="ml", reg_lambda=None, n_lambdas=8, cv=3, **common
        ),
        "test_genes/lrt": lrt,
        "demo/fit": demo_fit,
    }


def seqfish_problems() -> dict[str, Callable[[], dict]]:
    """fit_genes on the seqFISH embryo (all 351 genes, 22 niche columns): fixed λ and CV.

    None when the data file is absent (bench_genes.py's seqFISH benchmark, its design).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run_genes_job import SEQFISH, seqfish

    if not SEQFISH.exists():
        return {}
    import stglm

    cache = {}

    def fit(key, **kw):
        def run():
            if not cache:
                cache["v"] = seqfish(SEQFISH)
            adata, design, _ = cache["v"]
            adata = adata.copy()
            stglm.fit_genes(adata, design=design, key_added=key, progress=False, **kw)
            return _gene_results(adata, key, list(adata.var_names))

        return run

    poisson = dict(distr="poisson", eta=np.inf, clip_coeffs=0.0, alpha=0.5)
    return {
        "seqfish/poisson-fixed-lambda": fit("fixed", reg_lambda=0.01, **poisson),
        "seqfish/poisson-cv": fit("cv", reg_lambda=None, n_lambdas=10, cv=3, **poisson),
    }


# ---------------------------------------------------------------------------------------------
# run and compare
# ---------------------------------------------------------------------------------------------
def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    a = np.asarray(value)
    if a.dtype.kind in "iub":
        return {"int": a.astype(int).tolist()}
    # repr of a float round-trips exactly; NaN and ±inf as strings.
    return {"float": [repr(float(v)) for v in a.ravel()], "shape": list(a.shape)}


def run(out: Path) -> None:
    problems = {**glm_problems(), **glmcv_problems(), **visium_problems(), **seqfish_problems()}
    results, timings = {}, {}
    started = time.perf_counter()
    for name, problem in problems.items():
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results[name] = _jsonable(problem())
        timings[name] = time.perf_counter() - t
        print(f"{name:48s} {timings[name]:7.2f} s", flush=True)
    print(f"total {time.perf_counter() - started:.1f} s")
    # One line per problem: small diffs in git, and still plain JSON.
    lines = [
        f"  {json.dumps(k)}: {json.dumps(results[k], sort_keys=True)}" for k in sorted(results)
    ]
    out.write_text('{"problems": {\n' + ",\n".join(lines) + "\n}}\n")


def _floats(field: dict) -> np.ndarray:
    return np.array([float(v) for v in field["float"]])


def compare(a_path: Path, b_path: Path) -> int:
    """Print the differences per problem and field; 1 if any is beyond the tolerance."""
    a, b = (json.loads(Path(p).read_text())["problems"] for p in (a_path, b_path))
    failures = []
    if a.keys() != b.keys():
        failures.append(f"problems differ: {sorted(a.keys() ^ b.keys())}")
    print(f"{'problem':48s} {'field':34s} {'max abs':>10s} {'max rel':>10s}")
    for name in sorted(a.keys() & b.keys()):
        if a[name].keys() != b[name].keys():
            failures.append(f"{name}: fields differ: {sorted(a[name].keys() ^ b[name].keys())}")
        for field in sorted(a[name].keys() & b[name].keys()):
            fa, fb = a[name][field], b[name][field]
            if "int" in fa or "int" in fb:
                same = fa == fb
                print(f"{name:48s} {field:34s} {'equal' if same else 'DIFFER':>21s}")
                if not same:
                    failures.append(f"{name} {field}: integers differ")
                continue
            va, vb = _floats(fa), _floats(fb)
            if va.shape != vb.shape:
                failures.append(f"{name} {field}: shapes {va.shape} vs {vb.shape}")
                continue
            both_nan = np.isnan(va) & np.isnan(vb)
            same_inf = np.isinf(va) & (va == vb)
            ok = ~(both_nan | same_inf)
            diff = np.abs(va[ok] - vb[ok])
            abs_diff = float(diff.max(initial=0.0))
            if np.isnan(diff).any() or (np.isnan(va) != np.isnan(vb)).any():
                abs_diff = np.inf
            size = float(np.abs(va[ok]).max(initial=0.0))
            rel = abs_diff / size if size > 0 else (0.0 if abs_diff == 0 else np.inf)
            print(f"{name:48s} {field:34s} {abs_diff:10.2e} {rel:10.2e}")
            if not rel <= REL_TOL:
                failures.append(f"{name} {field}: relative difference {rel:.3g}")
    for failure in failures:
        print("FAIL", failure)
    print("identical within tolerance" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the results to this JSON file")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if args.out is None:
        parser.error("give --out FILE or --compare A B")
    run(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
