"""The ``stglm`` command line, run for real: ``python -m stglm fit ...`` in a subprocess.

Inputs are a small subset of the bundled Visium data (300 spots × 40 genes) written to a
temporary folder; outputs are read back with anndata and checked against values computed
here with numpy (section dummies, within-section standardised coordinates) or against a
direct :func:`stglm.fit_genes` call on the design the command stored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from click.testing import CliRunner as _CliRunner

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402

import stglm  # noqa: E402
from stglm import cli  # noqa: E402
from stglm.datasets import visium_prostate  # noqa: E402

KEYS_VAR = ("intercept", "lambda", "score", "converged", "kkt", "n_iter", "status")
LAG_GENES = ("KRT15", "CNN1")
ENV = {**os.environ, "MPLBACKEND": "Agg"}


def run_cli(*args, **popen):
    """Start ``python -m stglm <args>``; returns the Popen (text mode, pipes)."""
    return subprocess.Popen(
        [sys.executable, "-m", "stglm", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        **popen,
    )


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def stglm_cli(*args):
    return finish(run_cli(*args))


@pytest.fixture(scope="module")
def small_h5ad(tmp_path_factory):
    """300 random spots (both sections) × 40 genes (the lag genes among them), with a
    categorical 'zone' column for niche predictors."""
    full = visium_prostate()
    rng = np.random.default_rng(0)
    spots = np.sort(rng.choice(full.n_obs, 300, replace=False))
    others = [g for g in full.var_names if g not in LAG_GENES]
    genes = list(LAG_GENES) + list(rng.choice(others, 38, replace=False))
    small = full[spots, genes].copy()
    rows = small.obs["array_row"].to_numpy()  # 0..25
    small.obs["zone"] = pd.Categorical(np.where(rows < 9, "top", np.where(rows < 18, "mid", "low")))
    small.obs["weight"] = rng.uniform(0.5, 2.0, small.n_obs)  # for --sample-weight
    small.obs["log_area"] = rng.normal(0.0, 0.1, small.n_obs)  # for --offset
    path = tmp_path_factory.mktemp("data") / "small.h5ad"
    small.write_h5ad(path)
    return path


def CliRunner():  # noqa: N802 - stands in for the class
    """click's test runner with stderr kept apart (a flag before click 8.2, always since)."""
    try:
        return _CliRunner(mix_stderr=False)
    except TypeError:
        return _CliRunner()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------
# a real fit
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(small_h5ad, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit")
    out = folder / "results.h5ad"
    rc, stdout, stderr = stglm_cli(
        "fit",
        small_h5ad,
        "--section-key",
        "list_ID",
        "--niche",
        "zone",
        "--lag",
        ",".join(LAG_GENES),
        "--coords",
        "--distr",
        "poisson",
        "--alpha",
        "0.5",
        "--lambda",
        "0.05",
        "--store-fitted",
        "--out",
        out,
        "--figures",
        folder / "figs",
        "--top-genes",
        "15",
        "--top-effects",
        "3",
    )
    assert rc == 0, stderr
    return folder, out, stdout, stderr


def test_fit_writes_documented_keys(fitted, small_h5ad):
    folder, out, _, _ = fitted
    res, data = ad.read_h5ad(out), ad.read_h5ad(small_h5ad)
    predictors = [
        "list_ID_NP",
        "niche_low",
        "niche_mid",
        "niche_top",
        "lag_KRT15",
        "lag_CNN1",
        "x",
        "y",
    ]
    coef = res.varm["stglm_coef"]
    assert isinstance(coef, pd.DataFrame) and list(coef.columns) == predictors
    assert coef.shape == (40, len(predictors))
    for key in KEYS_VAR:
        assert f"stglm_{key}" in res.var
    assert list(res.uns["stglm"]["predictors"]) == predictors
    assert list(res.uns["stglm"]["genes"]) == list(data.var_names)
    params = res.uns["stglm"]["params"]
    assert params["distr"] == "poisson" and params["alpha"] == 0.5 and params["reg_lambda"] == 0.05
    # the front end's defaults: log link, no clipping, size factors from the total counts
    assert params["link"] == "log" and params["clip_coeffs"] == 0
    model = res.uns["stglm"]["model"]
    assert model["link"] == "log" and model["offset"] == "log size factors (total)"
    assert model["theta"] == "none" and model["sample_weight"] == "none"
    cli_record = res.uns["stglm"]["cli"]
    assert cli_record["link"] == "default" and cli_record["size_factors"] == "total"
    assert res.layers["stglm_mu"].shape == res.shape
    assert list(res.obsm["stglm_design"].columns) == predictors
    # the input is kept: same counts, obs and coordinates
    np.testing.assert_array_equal(res.X.toarray(), data.X.toarray())
    np.testing.assert_array_equal(res.obsm["spatial"], data.obsm["spatial"])
    assert set(res.var["stglm_status"].astype(str)) <= {"ok", "all zeros"}
    # only the results and the figures folder: no temporary file left behind
    assert files_in(folder) == ["figs", "results.h5ad"]


def test_design_is_what_the_options_ask_for(fitted):
    """Section dummy and within-section standardised coordinates, computed here with numpy."""
    _, out, _, _ = fitted
    res = ad.read_h5ad(out)
    design = res.obsm["stglm_design"]
    section = res.obs["list_ID"].astype(str).to_numpy()
    np.testing.assert_array_equal(design["list_ID_NP"], (section == "NP").astype(float))
    xy = np.asarray(res.obsm["spatial"], dtype=float)
    for s in ("NP", "CP"):
        m = section == s
        expected = (xy[m] - xy[m].mean(axis=0)) / xy[m].std(axis=0)
        np.testing.assert_allclose(design.loc[m, ["x", "y"]].to_numpy(), expected, atol=1e-12)
    niche = design[["niche_low", "niche_mid", "niche_top"]].to_numpy()
    np.testing.assert_allclose(niche.sum(axis=1), 1.0)  # shares of the 6 neighbours
    np.testing.assert_allclose(niche * 6, np.round(niche * 6), atol=1e-12)


def test_python_build_design_is_the_commands_design(fitted, small_h5ad):
    """README's Python example and `stglm fit` build the same design from the same options."""
    _, out, _, _ = fitted
    res, data = ad.read_h5ad(out), ad.read_h5ad(small_h5ad)
    design = stglm.spatial.build_design(
        data, section_key="list_ID", niche="zone", lag=list(LAG_GENES), coords=True
    )
    pd.testing.assert_frame_equal(design, res.obsm["stglm_design"])


def test_results_equal_a_direct_fit_genes_call(fitted, small_h5ad):
    """The command passes its options on: the same fit, done here directly, agrees."""
    _, out, _, _ = fitted
    res = ad.read_h5ad(out)
    data = ad.read_h5ad(small_h5ad)
    stglm.fit_genes(
        data,
        design=res.obsm["stglm_design"],
        distr="poisson",
        link="log",
        size_factors="total",
        clip_coeffs=0.0,
        alpha=0.5,
        reg_lambda=0.05,
        progress=False,
    )
    np.testing.assert_allclose(
        np.asarray(res.varm["stglm_coef"]), np.asarray(data.varm["stglm_coef"]), equal_nan=True
    )
    np.testing.assert_allclose(
        res.var["stglm_intercept"], data.var["stglm_intercept"], equal_nan=True
    )


def test_summary_names_the_strongest_genes(fitted):
    _, out, stdout, stderr = fitted
    res = ad.read_h5ad(out)
    assert "Traceback" not in stderr
    assert "stglm: fitted 40 genes on 300 cells/spots with 8 predictors" in stdout
    assert "  model: poisson, log link, offset: log size factors (total)\n" in stdout
    assert str(out) in stdout and "Strongest effects" in stdout
    coef = res.varm["stglm_coef"]
    lines = {line.split()[0]: line for line in stdout.splitlines() if line.startswith("  ")}
    for predictor in coef.columns:
        col = coef[predictor].dropna()
        top = col.abs().idxmax()
        if col[top] != 0:
            assert f"{top} ({col[top]:+.2f})" in lines[predictor]


def test_figures_are_pngs(fitted):
    folder, _, stdout, _ = fitted
    figs = folder / "figs"
    names = files_in(figs)
    assert "coef_heatmap.png" in names
    gene_figs = [n for n in names if n.startswith("gene_fit_")]
    assert 1 <= len(gene_figs) <= 3
    for name in names:
        image = mpimg.imread(figs / name)
        assert image.ndim == 3 and 300 <= image.shape[0] <= 3000 and 300 <= image.shape[1] <= 3000
        assert image[..., :3].std() > 0.01  # not blank
        assert str(figs / name) in stdout


def test_cross_validated_path_and_gene_file(small_h5ad, tmp_path):
    """Without --lambda each gene's λ comes from CV (as fit_genes chooses it); --genes reads
    a file; --quiet is silent. In-process (CliRunner): the subprocess runs are above."""
    genes = ad.read_h5ad(small_h5ad).var_names[:5]
    gene_file = tmp_path / "genes.txt"
    gene_file.write_text("# genes to fit\n" + "\n".join(genes[:3]) + "\n" + ",".join(genes[3:]))
    out = tmp_path / "cv.h5ad"
    args = ["fit", small_h5ad, "--genes", gene_file, "--coords", "--cv", "3", "--n-lambdas", "4"]
    args += ["--key-added", "cvfit", "--out", out, "--quiet"]
    result = CliRunner().invoke(cli.main, list(map(str, args)), prog_name="stglm")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr == ""
    res = ad.read_h5ad(out)
    assert list(res.uns["cvfit"]["genes"]) == list(genes)
    assert "reg_lambda" not in res.uns["cvfit"]["params"]  # None: the CV path
    assert res.uns["cvfit"]["params"]["cv"] == 3
    status = res.var["cvfit_status"].astype(str)
    assert (status[genes] != "not requested").all()
    assert (status.drop(genes) == "not requested").all()
    direct = ad.read_h5ad(small_h5ad)
    stglm.fit_genes(
        direct,
        list(genes),
        design=res.obsm["cvfit_design"],
        reg_lambda=None,
        link="log",
        size_factors="total",
        clip_coeffs=0.0,
        cv=3,
        n_lambdas=4,
        progress=False,
    )
    np.testing.assert_allclose(res.var["cvfit_lambda"], direct.var["stglm_lambda"], equal_nan=True)
    np.testing.assert_allclose(
        np.asarray(res.varm["cvfit_coef"]), np.asarray(direct.varm["stglm_coef"]), equal_nan=True
    )


# ---------------------------------------------------------------------------------------------
# the model options of `stglm fit`
# ---------------------------------------------------------------------------------------------
#: A few genes with counts in most spots (the count-model fits below estimate θ per gene).
MODEL_GENES = ("KRT15", "CNN1")


def invoke(*args):
    """Run the command in-process (click's runner): faster than a subprocess."""
    return CliRunner().invoke(cli.main, list(map(str, args)), prog_name="stglm")


def some_genes(small_h5ad, n=6):
    data = ad.read_h5ad(small_h5ad)
    detected = np.asarray((data.X > 0).mean(axis=0)).ravel()
    others = [g for g in data.var_names[np.argsort(-detected)] if g not in MODEL_GENES]
    return list(MODEL_GENES) + others[: n - len(MODEL_GENES)]


def test_link_seed_is_the_seeds_model(small_h5ad, tmp_path):
    """--link seed: spateo's mean function with the seed's defaults (θ 1, no size factors,
    coefficients clipped at 0.01) — fit_genes(link=None)'s."""
    out = tmp_path / "seed.h5ad"
    genes = some_genes(small_h5ad)
    args = ["fit", small_h5ad, "--genes", ",".join(genes), "--section-key", "list_ID"]
    args += ["--coords", "--distr", "neg-binomial", "--link", "seed", "--lambda", "0.02"]
    result = invoke(*args, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    res = ad.read_h5ad(out)
    params, model = res.uns["stglm"]["params"], res.uns["stglm"]["model"]
    assert "link" not in params and params["clip_coeffs"] == 0.01 and params["theta"] == 1.0
    assert model["link"] == "softplus" and model["offset"] == "none" and model["theta"] == "fixed"
    assert res.uns["stglm"]["cli"]["link"] == "seed"
    direct = ad.read_h5ad(small_h5ad)
    stglm.fit_genes(
        direct,
        genes,
        design=res.obsm["stglm_design"],
        distr="neg-binomial",
        link=None,
        reg_lambda=0.02,
        progress=False,
    )
    np.testing.assert_allclose(
        np.asarray(res.varm["stglm_coef"]), np.asarray(direct.varm["stglm_coef"]), equal_nan=True
    )


def test_count_model_options_reach_fit_genes(small_h5ad, tmp_path):
    """NB with θ by ML, poscounts size factors plus an obs offset, sample weights, the section
    and one lag unpenalised, and inference: the same fit as fit_genes called directly."""
    out = tmp_path / "nb.h5ad"
    genes = some_genes(small_h5ad)
    args = ["fit", small_h5ad, "--genes", ",".join(genes), "--section-key", "list_ID"]
    args += ["--lag", "KRT15", "--coords", "--distr", "neg-binomial", "--theta", "ml"]
    args += ["--size-factors", "poscounts", "--offset", "log_area", "--sample-weight", "weight"]
    args += ["--unpenalized", "list_ID,lag_KRT15", "--lambda", "0.05", "--inference"]
    result = invoke(*args, "--out", out)
    assert result.exit_code == 0, result.output
    stdout = result.stdout
    assert (
        "  model: neg-binomial, log link, offset: log size factors (poscounts) + "
        "obs['log_area'], sample weights: obs['weight'], θ per gene by maximum likelihood "
        "(median "
    ) in stdout
    res = ad.read_h5ad(out)
    design = res.obsm["stglm_design"]
    assert list(design.columns) == ["list_ID_NP", "lag_KRT15", "x", "y"]
    info = res.uns["stglm"]
    assert list(info["params"]["penalty_factor"]) == [0.0, 0.0, 1.0, 1.0]
    assert info["params"]["theta"] == "ml" and info["model"]["theta"] == "ml"
    record = info["cli"]
    assert record["offset"] == "log_area" and record["sample_weight"] == "weight"
    assert list(record["unpenalized"]) == ["list_ID", "lag_KRT15"]
    assert record["size_factors"] == "poscounts"

    direct = ad.read_h5ad(small_h5ad)
    stglm.fit_genes(
        direct, genes, design=design, distr="neg-binomial", link="log", theta="ml",
        size_factors="poscounts", offset="log_area", sample_weight="weight",
        penalty_factor=[0, 0, 1, 1], reg_lambda=0.05, clip_coeffs=0.0, inference=True,
        progress=False,
    )  # fmt: skip
    for key in ("stglm_coef", "stglm_se", "stglm_pvalue", "stglm_qvalue"):
        np.testing.assert_allclose(
            np.asarray(res.varm[key]), np.asarray(direct.varm[key]), equal_nan=True, err_msg=key
        )
    np.testing.assert_allclose(res.var["stglm_theta"], direct.var["stglm_theta"], equal_nan=True)
    # standard errors only for the unpenalised predictors
    se = res.varm["stglm_se"].loc[genes]
    assert se[["list_ID_NP", "lag_KRT15"]].notna().all().all() and se[["x", "y"]].isna().all().all()
    q = res.varm["stglm_qvalue"].loc[genes]
    counts = f"list_ID_NP {int((q['list_ID_NP'] <= 0.05).sum())}, "
    counts += f"lag_KRT15 {int((q['lag_KRT15'] <= 0.05).sum())}\n"
    assert "  genes at q ≤ 0.05 (Wald, BH per predictor): " + counts in stdout


def test_figures_of_a_count_model(small_h5ad, tmp_path):
    """NB with θ per gene and size factors: the gene-fit maps use the fit's own means (offset
    and θ included); they are not written to --out without --store-fitted."""
    out, figs = tmp_path / "nb.h5ad", tmp_path / "figs"
    genes = some_genes(small_h5ad)
    args = ["fit", small_h5ad, "--genes", ",".join(genes), "--section-key", "list_ID"]
    args += ["--coords", "--distr", "neg-binomial", "--lambda", "0.05", "--figures", figs]
    result = invoke(*args, "--plot-genes", "KRT15", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert files_in(figs) == ["coef_heatmap.png", "gene_fit_KRT15.png"]
    assert "stglm_mu" not in ad.read_h5ad(out).layers


def test_out_equal_to_the_input_needs_force(small_h5ad, tmp_path):
    data = tmp_path / "data.h5ad"
    data.write_bytes(small_h5ad.read_bytes())
    before = data.read_bytes()
    commands = (
        ["fit", data, "--coords", "--lambda", "0.1"],
        ["test", data, "--coords", "--reduced", "", "--genes", "KRT15"],
    )
    for args in commands:  # the same file, spelt differently
        result = invoke(*args, "--out", tmp_path / "." / "data.h5ad", "-q")
        assert result.exit_code == 2
        assert "is the input file" in result.stderr and "--force" in result.stderr
        assert data.read_bytes() == before and files_in(tmp_path) == ["data.h5ad"]
    result = invoke("fit", data, "--coords", "--lambda", "0.1", "--out", data, "--force", "-q")
    assert result.exit_code == 0, result.output
    assert "stglm_coef" in ad.read_h5ad(data).varm and files_in(tmp_path) == ["data.h5ad"]


def test_an_existing_out_needs_force(small_h5ad, tmp_path):
    """An existing results file is not replaced silently; --force replaces it."""
    out = tmp_path / "old.h5ad"
    out.write_bytes(b"an earlier run's results")
    args = ["fit", small_h5ad, "--coords", "--lambda", "0.1", "--genes", "KRT15", "--out", out]
    result = invoke(*args, "-q")
    assert result.exit_code == 2
    assert "exists" in result.stderr and "--force" in result.stderr
    assert out.read_bytes() == b"an earlier run's results" and files_in(tmp_path) == ["old.h5ad"]
    result = invoke(*args, "--force", "-q")
    assert result.exit_code == 0, result.output
    assert "stglm_coef" in ad.read_h5ad(out).varm


def test_gene_file_with_byte_order_mark_and_quoted_names(small_h5ad, tmp_path):
    """A gene file saved by a spreadsheet (UTF-8 with BOM) reads as without; a name in double
    quotes is taken whole, commas and all."""
    data = ad.read_h5ad(small_h5ad)
    data.var_names = [("HLA-A,B" if g == "KRT15" else g) for g in data.var_names]
    source = tmp_path / "renamed.h5ad"
    data.write_h5ad(source)
    gene_file = tmp_path / "genes.txt"
    gene_file.write_text('"HLA-A,B"\nCNN1 # a comment\n', encoding="utf-8-sig")
    assert gene_file.read_bytes().startswith(b"\xef\xbb\xbf")
    out = tmp_path / "out.h5ad"
    args = ["fit", source, "--coords", "--lambda", "0.1", "--genes", gene_file, "--out", out]
    result = invoke(*args, "-q")
    assert result.exit_code == 0, result.output
    assert list(ad.read_h5ad(out).uns["stglm"]["genes"]) == ["HLA-A,B", "CNN1"]
    assert cli._split_names('"A,B", C #"D"\n"#E" F') == ["A,B", "C", "#E", "F"]


# ---------------------------------------------------------------------------------------------
# stglm test
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tested(small_h5ad, tmp_path_factory):
    """`stglm test` run for real: the lags against section and coordinates, NB defaults."""
    folder = tmp_path_factory.mktemp("test")
    genes = some_genes(small_h5ad, 8)
    rc, stdout, stderr = stglm_cli(
        "test",
        small_h5ad,
        "--genes",
        ",".join(genes),
        "--section-key",
        "list_ID",
        "--lag",
        ",".join(LAG_GENES),
        "--coords",
        "--reduced",
        "list_ID,x,y",
        "--out",
        folder / "tests.h5ad",
        "--table",
        folder / "tests.csv",
        "--top-genes",
        "5",
    )
    assert rc == 0, stderr
    return folder, genes, stdout, stderr


def test_test_writes_the_table_and_the_h5ad(tested, small_h5ad):
    folder, genes, _, stderr = tested
    assert "Traceback" not in stderr
    assert files_in(folder) == ["tests.csv", "tests.h5ad"]  # no temporary file left
    table = pd.read_csv(folder / "tests.csv", index_col="gene")
    assert list(table.index) == genes
    assert list(table.columns) == [
        "stat", "df", "pvalue", "qvalue", "theta_full", "theta_reduced", "status"
    ]  # fmt: skip
    res, data = ad.read_h5ad(folder / "tests.h5ad"), ad.read_h5ad(small_h5ad)
    # the design is build_design's, from the same options as `stglm fit`
    design = stglm.spatial.build_design(
        data, section_key="list_ID", lag=list(LAG_GENES), coords=True
    )
    pd.testing.assert_frame_equal(res.obsm["stglm_test_design"], design)
    info = res.uns["stglm_test"]
    assert info["test"] == "lrt" and list(info["tested"]) == ["lag_KRT15", "lag_CNN1"]
    assert list(info["reduced"]) == ["list_ID_NP", "x", "y"]
    assert info["cli"]["reduced"] == "list_ID,x,y" and info["cli"]["size_factors"] == "total"
    assert info["model"]["family"] == "neg-binomial"
    assert info["model"]["theta"] in ("ml", "cox-reid")  # test_genes' choice for the LRT
    for column in ("stat", "pvalue", "qvalue", "theta_full"):
        np.testing.assert_allclose(res.var.loc[genes, f"stglm_test_{column}"], table[column])
    # the same test run directly, with test_genes' own defaults (NB, log, Cox–Reid, total)
    direct = stglm.test_genes(
        data, genes, design=design, reduced=["list_ID_NP", "x", "y"], progress=False
    )
    for column in ("stat", "df", "pvalue", "qvalue", "theta_full", "theta_reduced"):
        np.testing.assert_allclose(table[column], direct[column], rtol=1e-12, err_msg=column)
    assert list(table["status"]) == list(direct["status"].astype(str))
    np.testing.assert_array_equal(res.X.toarray(), data.X.toarray())  # the input is kept


def test_test_prints_the_top_genes_by_q_value(tested):
    folder, genes, stdout, _ = tested
    table = pd.read_csv(folder / "tests.csv", index_col="gene")
    testable = table["qvalue"].notna()
    assert (
        f"stglm: tested {len(genes)} genes on 300 cells/spots in " in stdout
        and "likelihood-ratio test of lag_KRT15, lag_CNN1 (2 df) against a reduced model of "
        "list_ID_NP, x, y\n"
        in stdout
    )
    assert "  model: neg-binomial, log link, offset: log size factors (total), θ per gene" in stdout
    n_hits = int((table["qvalue"] <= 0.05).sum())
    assert f"  {n_hits} of {int(testable.sum())} testable genes at q ≤ 0.05" in stdout
    lines = stdout.splitlines()
    start = lines.index("Top 5 genes by q-value:")
    assert lines[start + 1].split()[:5] == ["gene", "stat", "df", "p-value", "q-value"]
    listed = [line.split()[0] for line in lines[start + 2 : start + 7]]
    assert listed == list(table["qvalue"].sort_values(kind="stable").index[:5])
    first = table.loc[listed[0]]
    assert (
        f"{first['qvalue']:.2e}" in lines[start + 2] and f"{first['stat']:.2f}" in lines[start + 2]
    )


def test_wald_test_of_one_column(small_h5ad, tmp_path):
    """--test wald on a Poisson model, CSV only: the table test_genes returns."""
    genes = some_genes(small_h5ad)
    csv = tmp_path / "wald.csv"
    args = ["test", small_h5ad, "--genes", ",".join(genes), "--lag", "KRT15", "--coords"]
    args += ["--reduced", "x,y", "--test", "wald", "--distr", "poisson", "--table", csv]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "Wald test of lag_KRT15 (1 df)" in result.stdout
    assert files_in(tmp_path) == ["wald.csv"]
    table = pd.read_csv(csv, index_col="gene")
    assert "theta_full" not in table.columns and (table["df"] == 1).all()
    data = ad.read_h5ad(small_h5ad)
    design = stglm.spatial.build_design(data, lag=["KRT15"], coords=True)
    direct = stglm.test_genes(
        data, genes, design=design, reduced=["x", "y"], test="wald", distr="poisson",
        progress=False,
    )  # fmt: skip
    np.testing.assert_allclose(table["stat"], direct["stat"], rtol=1e-12)
    np.testing.assert_allclose(table["pvalue"], direct["pvalue"], rtol=1e-12)


def test_quasi_likelihood_test(small_h5ad, tmp_path):
    """--test ql: test_genes' QL F test (θ trended across genes, so all genes together)."""
    csv = tmp_path / "ql.csv"
    args = ["test", small_h5ad, "--section-key", "list_ID", "--lag", ",".join(LAG_GENES)]
    args += ["--coords", "--reduced", "list_ID,x,y", "--test", "ql", "--table", csv]
    result = invoke(*args, "--top-genes", "3")
    assert result.exit_code == 0, result.output
    assert "quasi-likelihood F-test of lag_KRT15, lag_CNN1" in result.stdout
    assert "θ per gene by Cox–Reid" in result.stdout and "θ trended" in result.stdout
    table = pd.read_csv(csv, index_col="gene")
    data = ad.read_h5ad(small_h5ad)
    design = stglm.spatial.build_design(
        data, section_key="list_ID", lag=list(LAG_GENES), coords=True
    )
    direct = stglm.test_genes(
        data, design=design, reduced=["list_ID_NP", "x", "y"], test="ql", progress=False
    )
    for column in ("stat", "pvalue", "qvalue", "theta_trended", "ql_dispersion"):
        np.testing.assert_allclose(table[column], direct[column], rtol=1e-12, err_msg=column)


def test_test_needs_an_output(small_h5ad):
    result = invoke("test", small_h5ad, "--coords", "--reduced", "x")
    assert result.exit_code == 2 and "--table" in result.stderr and "--out" in result.stderr


def test_test_help_lists_every_option_and_test():
    from stglm._gene_tests import TESTS

    result = invoke("test", "--help")
    assert result.exit_code == 0
    params = cli.test.get_params(cli.click.Context(cli.test))
    for param in params:
        if isinstance(param, cli.click.Option):
            assert param.help, param.name
            for opt in param.opts:
                assert opt in result.stdout, opt
    for name in TESTS:  # the help names every test test_genes offers
        assert name in result.stdout, name


# ---------------------------------------------------------------------------------------------
# bad input: one line on stderr, non-zero exit, no output
# ---------------------------------------------------------------------------------------------
#: Each case: arguments, a phrase the error must contain, and whether it runs as a real
#: subprocess (the five cases of the issue) or in-process through click's CliRunner (the same
#: ``main`` with click's standalone error handling, without Python's start-up cost).
BAD_INPUTS = {
    "missing file": (["fit", "{tmp}/nope.h5ad", "--coords"], "does not exist", True),
    "text file": (["fit", "{tmp}/notes.txt", "--coords"], "not an .h5ad", True),
    "unknown gene": (["fit", "{data}", "--coords", "--genes", "KRT15,NOTAGENE"], "NOTAGENE", True),
    "unknown obs column": (["fit", "{data}", "--niche", "celltype"], "'celltype'", True),
    "no predictors": (["fit", "{data}"], "no predictors", True),
    "unknown lag gene": (["fit", "{data}", "--lag", "NOTAGENE"], "NOTAGENE", False),
    "unknown section column": (["fit", "{data}", "--section-key", "slide"], "'slide'", False),
    "continuous section column": (
        ["fit", "{data}", "--section-key", "log_area"],
        "--section-key='log_area' holds non-integer numbers",
        False,
    ),
    "unknown plot gene": (["fit", "{data}", "--coords", "--plot-genes", "NOPE"], "NOPE", False),
    "missing layer": (["fit", "{data}", "--coords", "--layer", "counts"], "'counts'", False),
    "out not h5ad": (["fit", "{data}", "--coords"], ".h5ad", False),
    "too many neighbours": (
        ["fit", "{data}", "--lag", "KRT15", "--n-neighbors", "999"],
        "n_neighbors",
        False,
    ),
    "inference of a penalised fit": (
        ["fit", "{data}", "--coords", "--lambda", "0.1", "--inference"],
        "--inference needs unpenalised",
        False,
    ),
    "log link of gaussian": (
        ["fit", "{data}", "--coords", "--distr", "gaussian", "--link", "log"],
        "no log link",
        False,
    ),
    "theta of poisson": (["fit", "{data}", "--coords", "--theta", "ml"], "--theta", False),
    "offset not a column": (["fit", "{data}", "--coords", "--offset", "area"], "'area'", False),
    "offset not numeric": (["fit", "{data}", "--coords", "--offset", "zone"], "numeric", False),
    "negative weights": (
        ["fit", "{data}", "--coords", "--sample-weight", "log_area"],
        "non-negative",
        False,
    ),
    "unknown unpenalised": (["fit", "{data}", "--coords", "--unpenalized", "lag"], "'lag'", False),
    "spot without counts": (["fit", "{empty}", "--coords"], "every cell/spot", False),
    "unknown reduced column": (["test", "{data}", "--coords", "--reduced", "z"], "'z'", False),
    "unknown test": (
        ["test", "{data}", "--coords", "--reduced", "x", "--test", "anova"],
        "anova",
        False,
    ),
    "wald of two columns": (
        ["test", "{data}", "--coords", "--reduced", "", "--test", "wald"],
        "one column",
        False,
    ),
    "key with a slash": (["fit", "{data}", "--coords", "--key-added", "a/b"], "'/'", False),
    "table not csv": (
        ["test", "{data}", "--coords", "--reduced", "x", "--table", "{tmp}/t.txt"],
        ".csv",
        False,
    ),
}


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory, small_h5ad):
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "notes.txt").write_text("this is not an h5ad file\n")
    data = ad.read_h5ad(small_h5ad)
    X = data.X.toarray()
    X[0] = 0  # a spot without counts: no size factor
    data.X = sp.csr_matrix(X)
    data.write_h5ad(tmp / "empty_spot.h5ad")
    return tmp


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_clear_line(small_h5ad, bad_folder, case):
    args, phrase, real_process = BAD_INPUTS[case]
    folder = bad_folder / case.replace(" ", "_")
    folder.mkdir()
    out = folder / ("out.txt" if case == "out not h5ad" else "out.h5ad")
    empty = bad_folder / "empty_spot.h5ad"
    args = [a.format(tmp=bad_folder, data=small_h5ad, empty=empty) for a in args]
    args += ["--out", str(out)]
    if real_process:
        rc, stdout, stderr = stglm_cli(*args)
    else:
        result = CliRunner().invoke(cli.main, args, prog_name="stglm")
        rc, stdout, stderr = result.exit_code, result.stdout, result.stderr
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit
        ), result.exception
    assert rc == 2
    assert "Traceback" not in stderr
    # The first CLI run of a fresh checkout also says that numba is compiling its kernels.
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("stglm: compiling")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ") and phrase in lines[0], lines[0]
    assert stdout == ""
    assert files_in(folder) == []  # no output, no temporary file


#: Where an error is injected: the library function the command calls, and where it looks it
#: up (the CLI imports fit_genes when the command runs, the design builders from stglm.spatial).
INJECTED = {
    "fit": ("fit", "stglm._transcriptome", "fit_genes"),
    "design": ("fit", "stglm.spatial", "coordinates"),
    "test": ("test", "stglm._gene_tests", "test_genes"),
    "test design": ("test", "stglm.spatial", "coordinates"),
}
#: The arguments of each command run with an error injected (--out follows).
INJECTED_ARGS = {
    "fit": ["--coords", "--lambda", "0.1"],
    "test": ["--coords", "--reduced", "", "--genes", "KRT15"],
}


def fit_raising(error, where, small_h5ad, tmp_path, monkeypatch):
    """Run `stglm fit` or `stglm test` in-process with the library function ``where`` raising
    ``error``."""
    import importlib

    command, module, name = INJECTED[where]

    def raises(*args, **kwargs):
        raise error

    monkeypatch.setattr(importlib.import_module(module), name, raises)
    out = tmp_path / "out.h5ad"
    args = [command, str(small_h5ad), *INJECTED_ARGS[command], "--out", str(out), "-q"]
    return CliRunner().invoke(cli.main, args, prog_name="stglm")


@pytest.mark.parametrize("where", list(INJECTED))
def test_internal_errors_are_not_reported_as_bad_input(small_h5ad, tmp_path, monkeypatch, where):
    """A ValueError the library did not raise on purpose is a bug: it propagates, no 'Error:'."""
    bug = ValueError("an internal bug")
    result = fit_raising(bug, where, small_h5ad, tmp_path, monkeypatch)
    assert result.exception is bug
    assert result.exit_code == 1 and "Error:" not in result.stderr
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("where", list(INJECTED))
def test_library_input_errors_are_reported_as_bad_input(small_h5ad, tmp_path, monkeypatch, where):
    """The same place raising the library's InputError gives the one-line message, status 2."""
    from stglm._errors import InputError

    result = fit_raising(InputError("unusable input"), where, small_h5ad, tmp_path, monkeypatch)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "unusable input" in lines[0]


# ---------------------------------------------------------------------------------------------
# help, version, entry point
# ---------------------------------------------------------------------------------------------
def test_help_lists_every_option():
    rc, stdout, _ = stglm_cli("fit", "--help")
    assert rc == 0
    params = cli.fit.get_params(cli.click.Context(cli.fit))  # --help included
    declared = [opt for p in params for opt in p.opts + p.secondary_opts if opt.startswith("--")]
    expected = [
        "--out",
        "--genes",
        "--niche",
        "--lag",
        "--coords",
        "--no-coords",
        "--section-key",
        "--n-neighbors",
        "--distr",
        "--alpha",
        "--lambda",
        "--cv",
        "--n-lambdas",
        "--layer",
        "--key-added",
        "--store-fitted",
        "--figures",
        "--top-genes",
        "--quiet",
        "--help",
        "--link",
        "--theta",
        "--size-factors",
        "--offset",
        "--sample-weight",
        "--unpenalized",
        "--inference",
        "--clip-coeffs",
        "--force",
    ]
    assert set(expected) <= set(declared)
    for opt in declared:
        assert opt in stdout, opt
    for param in params:  # every option is explained
        if isinstance(param, cli.click.Option):
            assert param.help, param.name


def test_version_and_entry_point():
    result = CliRunner().invoke(cli.main, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"stglm {stglm.__version__}"
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("stglm") == "stglm.cli:main"


# ---------------------------------------------------------------------------------------------
# atomic output
# ---------------------------------------------------------------------------------------------
def partial_then(exc):
    def write(path, *args, **kwargs):
        Path(path).write_bytes(b"\x89HDF\r\n partial")
        raise exc

    return write


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_atomic_write_leaves_no_partial_file(tmp_path, exc):
    target = tmp_path / "out.h5ad"
    with pytest.raises(type(exc)):
        cli.atomic_write(target, partial_then(exc))
    assert files_in(tmp_path) == []
    target.write_text("previous results")
    with pytest.raises(type(exc)):
        cli.atomic_write(target, partial_then(exc))
    assert files_in(tmp_path) == ["out.h5ad"] and target.read_text() == "previous results"


def test_interrupted_command_leaves_no_partial_file(small_h5ad, tmp_path, monkeypatch):
    """The real command, interrupted while writing its output (Ctrl-C): nothing is left."""
    write = partial_then(KeyboardInterrupt())
    monkeypatch.setattr(ad.AnnData, "write_h5ad", lambda self, path, *a, **k: write(path))
    out = tmp_path / "res" / "out.h5ad"
    # click turns Ctrl-C into Abort ("Aborted!", exit status 1 when run as a command)
    with pytest.raises(cli.click.exceptions.Abort):
        cli.main(
            ["fit", str(small_h5ad), "--coords", "--lambda", "0.1", "--out", str(out), "--quiet"],
            standalone_mode=False,
        )
    assert files_in(out.parent) == []


SLOW_WRITE = """
import sys, time
import anndata
from stglm.cli import main

def slow_write(self, path, *args, **kwargs):
    with open(path, "wb") as f:
        f.write(b"partial")
        f.flush()
        time.sleep(60)

anndata.AnnData.write_h5ad = slow_write
main(sys.argv[1:], prog_name="stglm")
"""


def test_killed_while_writing_leaves_no_partial_file(small_h5ad, tmp_path):
    """A real process, killed (SIGTERM) while its output is half written: nothing is left.

    Ctrl-C (KeyboardInterrupt) during the write is checked in-process below.
    """
    out = tmp_path / "out.h5ad"
    args = ["fit", small_h5ad, "--coords", "--lambda", "0.1", "--out", out, "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITE, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".tmp") and p.stat().st_size for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    rc, _, stderr = finish(proc, timeout=30)
    assert rc != 0 and "Traceback" not in stderr
    assert files_in(tmp_path) == []


def test_failed_fit_keeps_previous_output(small_h5ad, tmp_path):
    out = tmp_path / "out.h5ad"
    out.write_text("previous results")
    data = ad.read_h5ad(small_h5ad)
    data.X = sp.csr_matrix(-data.X.toarray())  # negative counts: Poisson refuses them
    bad = tmp_path / "negative.h5ad"
    data.write_h5ad(bad)
    with pytest.raises(
        cli.click.ClickException, match="cannot fit negative.h5ad .adata.X.: .*non-negative"
    ):
        cli.main(
            ["fit", str(bad), "--coords", "--lambda", "0.1", "--out", str(out), "--force", "-q"],
            standalone_mode=False,
        )
    assert files_in(tmp_path) == ["negative.h5ad", "out.h5ad"]
    assert out.read_text() == "previous results"


def test_lambda_min_ratio_reaches_fit_genes(small_h5ad, tmp_path):
    """--lambda-min-ratio sets each gene's path end, as fit_genes(lambda_min_ratio=) does; the
    help's stated default is the library's ("auto", glmnet's 1e-4)."""
    from stglm._cv import AUTO_MIN_RATIO_LONG

    out = tmp_path / "ratio.h5ad"
    args = ["fit", small_h5ad, "--genes", "KRT15,CNN1", "--coords", "--cv", "3"]
    args += ["--n-lambdas", "4", "--lambda-min-ratio", "1e-5", "--out", out, "-q"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    res = ad.read_h5ad(out)
    direct = ad.read_h5ad(small_h5ad)
    stglm.fit_genes(
        direct, ["KRT15", "CNN1"], design=res.obsm["stglm_design"], reg_lambda=None, link="log",
        size_factors="total", clip_coeffs=0.0, cv=3, n_lambdas=4, lambda_min_ratio=1e-5,
        progress=False,
    )  # fmt: skip
    np.testing.assert_array_equal(res.var["stglm_lambda"], direct.var["stglm_lambda"])
    help_text = invoke("fit", "--help").stdout
    assert "Default: glmnet's, 1e-4" in " ".join(help_text.split()) and AUTO_MIN_RATIO_LONG == 1e-4
    bad = invoke("fit", small_h5ad, "--coords", "--lambda-min-ratio", "2", "--out", out)
    assert bad.exit_code == 2 and "--lambda-min-ratio" in bad.stderr
