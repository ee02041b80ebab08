r"""The main job: fit every gene of the bundled Visium prostate data with the ``stglm`` CLI.

Run ``python -m stglm.demo --out DIR`` (``make demo``). It writes the bundled dataset
(2,327 spots × 1,255 genes, a normal 'NP' and a cancer 'CP' section) to
``DIR/visium_prostate.h5ad`` and runs, in this process::

    stglm fit DIR/visium_prostate.h5ad --section-key list_ID \
        --lag KRT15,TGM4,CNN1 --coords --distr poisson --alpha 0.5 --lambda 0.01 \
        --out DIR/visium_prostate_stglm.h5ad --figures DIR/figures --top-genes 40 \
        --plot-genes FOLH1,KRT5,SYNPO2

Each gene's counts are modelled (Poisson, elastic net, λ = 0.01) on a section dummy
(cancer vs normal), the spatial lags (neighbour means of log-normalised expression) of three
markers — KRT15 (basal epithelium), TGM4 (normal luminal epithelium), CNN1 (smooth-muscle
stroma) — and the spots' coordinates (standardised within each section). Outputs: the
results h5ad, ``figures/coef_heatmap.png`` and ``figures/gene_fit_<gene>.png``, and a
printed summary naming the strongest effects.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import click

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
    args = [
        "fit",
        str(data_path),
        "--section-key",
        "list_ID",
        "--lag",
        ",".join(g for g, _ in markers),
        "--coords",
        "--distr",
        "poisson",
        "--alpha",
        "0.5",
        "--lambda",
        str(REG_LAMBDA),
        "--out",
        str(out / "visium_prostate_stglm.h5ad"),
        "--figures",
        str(out / "figures"),
        "--top-genes",
        "40",
        "--plot-genes",
        ",".join(plot_genes),
    ]
    print("  command: stglm " + " ".join(args), flush=True)
    try:
        main(args, prog_name="stglm", standalone_mode=False)
    except click.ClickException as err:
        err.show()
        return err.exit_code
    print(f"stglm demo: done in {time.perf_counter() - started:.1f} s; outputs in {out}/")
    return 0


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
