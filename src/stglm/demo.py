r"""The main job: fit and test every gene of the bundled Visium prostate data with ``stglm``.

Run ``python -m stglm.demo --out DIR`` (``make demo``). It writes the bundled dataset
(2,327 spots × 1,255 genes, a normal 'NP' and a cancer 'CP' section) to
``DIR/visium_prostate.h5ad`` and runs, in this process:

1. A penalised fit of every gene::

       stglm fit DIR/visium_prostate.h5ad --section-key list_ID \
           --lag KRT15,TGM4,CNN1 --coords --distr poisson --link log --size-factors total \
           --alpha 0.5 --lambda 0.01 --out DIR/visium_prostate_stglm.h5ad \
           --figures DIR/figures --top-genes 40 --plot-genes FOLH1,KRT5,SYNPO2

   Each gene's counts are modelled (Poisson, log link, offset log size factor, elastic net,
   λ = 0.01) on a section dummy (cancer vs normal), the spatial lags (neighbour means of
   log-normalised expression) of three markers — KRT15 (basal epithelium), TGM4 (normal
   luminal epithelium), CNN1 (smooth-muscle stroma) — and the spots' coordinates
   (standardised within each section). Outputs: the results h5ad,
   ``figures/coef_heatmap.png`` and ``figures/gene_fit_<gene>.png``, and a printed summary
   naming the strongest effects.

2. Inference: which genes respond to their neighbourhood beyond section and position? On
   the genes detected in at least 5 % of spots (``DIR/expressed_genes.txt``)::

       stglm test DIR/visium_prostate.h5ad --genes DIR/expressed_genes.txt \
           --section-key list_ID --lag KRT15,TGM4,CNN1 --coords --reduced list_ID,x,y \
           --distr neg-binomial --link log --size-factors total \
           --out DIR/visium_prostate_tests.h5ad --table DIR/spatial_lag_tests.csv

   a likelihood-ratio test per gene of the three lags (negative binomial, θ per gene
   re-estimated under each model by test_genes' rule for the test, Benjamini–Hochberg
   q-values), printing the top genes by q-value; then the unpenalised full model with θ by
   Cox–Reid and per-coefficient Wald inference (``fit_genes(..., inference=True)``) for
   ``figures/volcano_lags.png``, the tests' ``figures/pvalue_histogram.png`` and
   ``figures/spatial_effect_<gene>.png`` (the lags' fitted log fold change on the tissue
   for the top gene that is not a marker itself).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from .cli import atomic_write, main
from .datasets import visium_prostate

#: Marker genes whose spatial lags are predictors, one per compartment of the prostate gland:
#: (gene, what it marks). Tumour markers such as AMACR or TMEFF2 are left out: near zero in
#: the normal section and high all over the cancer one, their lags would duplicate the
#: section dummy and blur its coefficients.
MARKERS = (
    ("KRT15", "basal epithelium"),
    ("TGM4", "normal luminal epithelium"),
    ("CNN1", "smooth-muscle stroma"),
)
#: Genes drawn as observed vs fitted: a tumour (PSMA), a basal and a smooth-muscle marker.
PLOT_GENES = ("FOLH1", "KRT5", "SYNPO2")
REG_LAMBDA = 0.01
#: Genes tested: those with counts in at least this share of spots. Rarer genes have too
#: few counts to test (θ runs to its bound) and cost most of the time; filtering before
#: testing is what edgeR's filterByExpr and DESeq2's independent filtering do.
MIN_DETECTED = 0.05
#: The inference step's model: what count analysts fit (glmGamPoi, DESeq2, edgeR). θ is
#: estimated per gene under each model by the test's own rule (test_genes' default for the
#: LRT); the fit with Wald inference below estimates it by Cox–Reid.
COUNT_MODEL = ("--distr", "neg-binomial", "--link", "log", "--size-factors", "total")
#: Top genes printed by q-value, and the key of the unpenalised fit with inference.
TOP_TESTED, INFERENCE_KEY = 10, "stglm_nb"


def _run_cli(args: list[str]) -> int:
    """Print and run one ``stglm`` command in this process; its exit status."""
    print("  command: stglm " + " ".join(args), flush=True)
    try:
        main(args, prog_name="stglm", standalone_mode=False)
    except click.ClickException as err:
        err.show()
        return err.exit_code
    return 0


def _design_args(data_path: Path, markers: list[str]) -> list[str]:
    return [
        str(data_path), "--section-key", "list_ID", "--lag", ",".join(markers), "--coords",
    ]  # fmt: skip


def demo(out: Path) -> int:
    """Run the demo into the folder ``out``; return the exit status (0 on success)."""
    started = time.perf_counter()
    out = Path(out)
    adata = visium_prostate()
    data_path = atomic_write(out / "visium_prostate.h5ad", adata.write_h5ad)
    sections = adata.obs["list_ID"].value_counts().to_dict()
    markers = [(g, role) for g, role in MARKERS if g in adata.var_names]
    plot_genes = [g for g in PLOT_GENES if g in adata.var_names]
    print(
        f"stglm demo: Visium prostate, {adata.n_obs} spots × {adata.n_vars} genes "
        f"(sections: {', '.join(f'{k} {v}' for k, v in sections.items())}) -> {data_path}"
    )
    print(
        "  predictors: section dummy, spatial lags of "
        + ", ".join(f"{g} ({role})" for g, role in markers)
        + ", standardised coordinates"
    )
    marker_names = [g for g, _ in markers]
    status = _run_cli(
        ["fit", *_design_args(data_path, marker_names)]
        + ["--distr", "poisson", "--link", "log", "--size-factors", "total", "--alpha", "0.5"]
        + ["--lambda", str(REG_LAMBDA), "--out", str(out / "visium_prostate_stglm.h5ad")]
        + ["--force"]  # the demo's own folder: a second run replaces the first's results
        + ["--figures", str(out / "figures"), "--top-genes", "40"]
        + ["--plot-genes", ",".join(plot_genes)]
    )
    if status == 0:
        status = _inference(adata, data_path, out, marker_names)
    if status == 0:
        print(f"stglm demo: done in {time.perf_counter() - started:.1f} s; outputs in {out}/")
    return status


def _inference(adata: Any, data_path: Path, out: Path, markers: list[str]) -> int:
    """Test the lags per gene (``stglm test``), then draw the inference figures."""
    detected = np.asarray((adata.X > 0).mean(axis=0)).ravel()
    genes = list(adata.var_names[detected >= MIN_DETECTED])
    gene_file = atomic_write(
        out / "expressed_genes.txt", lambda p: p.write_text("\n".join(genes) + "\n")
    )
    print(
        f"\nstglm demo: inference — do the lags explain expression beyond section and "
        f"position? {len(genes)} of {adata.n_vars} genes have counts in ≥ "
        f"{MIN_DETECTED:.0%} of spots ({gene_file}); the rest are too sparse to test."
    )
    tests_path = out / "visium_prostate_tests.h5ad"
    status = _run_cli(
        ["test", *_design_args(data_path, markers), "--genes", str(gene_file)]
        + ["--reduced", "list_ID,x,y", *COUNT_MODEL]
        + ["--out", str(tests_path), "--table", str(out / "spatial_lag_tests.csv"), "--force"]
        + ["--top-genes", str(TOP_TESTED)]
    )
    if status != 0:
        return status
    figures = _inference_figures(tests_path, genes, markers, out / "figures")
    print(f"  figures: {', '.join(str(f) for f in figures)}")
    return 0


def _inference_figures(tests_path: Path, genes: list[str], markers: list[str], folder: Path):
    """Volcano plots of the lags, the tests' p-values and the top gene's lag effect."""
    import warnings

    import anndata as ad
    from matplotlib.figure import Figure

    from . import plotting
    from ._transcriptome import fit_genes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = ad.read_h5ad(tests_path)
    design = adata.obsm["stglm_test_design"]
    lags = [f"lag_{g}" for g in markers]
    # The unpenalised full model, with Wald standard errors and q-values per coefficient.
    fit_genes(
        adata, genes, design=design, distr="neg-binomial", link="log", theta="cox-reid",
        size_factors="total", reg_lambda=0.0, clip_coeffs=0.0, inference=True,
        key_added=INFERENCE_KEY, progress=False,
    )  # fmt: skip
    written = []

    def save(fig: Figure, name: str) -> None:
        written.append(atomic_write(folder / name, lambda p: fig.savefig(p, dpi=120, format="png")))

    fig = Figure(figsize=(4.6 * len(lags), 4.4), layout="constrained")
    for ax, lag in zip(fig.subplots(1, len(lags), squeeze=False)[0], lags, strict=True):
        plotting.plot_volcano(adata, lag, key_added=INFERENCE_KEY, top=5, ax=ax)
    fig.suptitle("Spatial lags of the markers: Wald tests per gene (NB, Cox–Reid θ)")
    save(fig, "volcano_lags.png")

    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    plotting.plot_pvalue_histogram(adata, key_added="stglm_test", ax=fig.add_subplot())
    save(fig, "pvalue_histogram.png")

    q = adata.var.loc[genes, "stglm_test_qvalue"].drop(markers, errors="ignore").dropna()
    top = str(q.index[np.argsort(q.to_numpy(), kind="stable")[0]])
    fig = Figure(figsize=(12.0, 2.7), layout="constrained")
    plotting.plot_spatial_effect(
        adata, top, predictors=lags, design=design, key_added=INFERENCE_KEY,
        ax=fig.add_subplot(),
    )  # fmt: skip
    save(fig, f"spatial_effect_{top}.png")
    return written


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stglm.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("demo_output"),
        help="folder for the data, results and figures (default: demo_output)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(demo(_parse(None).out))
