"""``make demo`` (``python -m stglm.demo``) on a small part of the bundled data, in-process.

The whole demo takes 15–20 s on the full data; here the dataset it loads is replaced by 400
spots × 60 genes (the markers and plotted genes among them), which runs every step — the
penalised fit, the tests, the fit with inference and all figures — in a few seconds.
"""

from __future__ import annotations

import contextlib
import io

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402

from stglm import demo  # noqa: E402
from stglm.datasets import visium_prostate  # noqa: E402


@pytest.fixture(scope="module")
def small_visium():
    full = visium_prostate()
    rng = np.random.default_rng(5)
    keep = [g for g, _ in demo.MARKERS] + list(demo.PLOT_GENES)
    others = [g for g in full.var_names if g not in keep]
    genes = keep + list(rng.choice(others, 60 - len(keep), replace=False))
    spots = np.sort(rng.choice(full.n_obs, 400, replace=False))
    return full[spots, genes].copy()


@pytest.fixture(scope="module")
def ran(small_visium, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_output"
    buffer = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(buffer):
        patch.setattr(demo, "visium_prostate", lambda: small_visium.copy())
        status = demo.demo(out)
    return out, status, buffer.getvalue()


def test_demo_writes_every_output(ran):
    out, status, _ = ran
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "expressed_genes.txt",
        "figures",
        "spatial_lag_tests.csv",
        "visium_prostate.h5ad",
        "visium_prostate_stglm.h5ad",
        "visium_prostate_tests.h5ad",
    ]
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert {"coef_heatmap.png", "volcano_lags.png", "pvalue_histogram.png"} <= set(figures)
    assert any(name.startswith("spatial_effect_") for name in figures)
    for name in figures:
        image = mpimg.imread(out / "figures" / name)
        assert image.ndim == 3 and image[..., :3].std() > 0.01, name  # not blank


def test_demo_tests_the_lags_with_the_count_model(ran):
    out, _, stdout = ran
    table = pd.read_csv(out / "spatial_lag_tests.csv", index_col="gene")
    genes = (out / "expressed_genes.txt").read_text().split()
    assert list(table.index) == genes
    res = ad.read_h5ad(out / "visium_prostate_tests.h5ad")
    info = res.uns["stglm_test"]
    assert list(info["tested"]) == [f"lag_{g}" for g, _ in demo.MARKERS]
    assert list(info["reduced"]) == ["list_ID_NP", "x", "y"]
    model = info["model"]
    assert (model["family"], model["link"]) == ("neg-binomial", "log")
    assert model["theta"] in ("ml", "cox-reid")  # test_genes' choice for the LRT
    assert model["offset"] == "log size factors (total)"
    hits = int((table["qvalue"] <= 0.05).sum())
    assert f"  {hits} of {int(table['qvalue'].notna().sum())} testable genes at q ≤ 0.05" in stdout
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Top ") and "q-value" in line)
    shown = min(demo.TOP_TESTED, int(table["qvalue"].notna().sum()))
    listed = [line.split()[0] for line in lines[start + 2 : start + 2 + shown]]
    assert listed == list(table["qvalue"].dropna().sort_values(kind="stable").index[:shown])
    assert "stglm demo: done in " in stdout
