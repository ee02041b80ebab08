"""The command line as a first-time user meets it: interrupts during the write, error lines
after a progress bar, the message while numba compiles, and results already in the input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from click.testing import CliRunner

import stglm
from stglm import cli
from stglm._errors import InputError
from stglm.datasets import visium_prostate


def invoke(*args):
    return CliRunner().invoke(cli.main, list(map(str, args)), prog_name="stglm")


@pytest.fixture(scope="module")
def small_h5ad(tmp_path_factory):
    """200 Visium spots × 12 genes."""
    full = visium_prostate()
    rng = np.random.default_rng(3)
    spots = np.sort(rng.choice(full.n_obs, 200, replace=False))
    detected = np.asarray((full.X > 0).mean(axis=0)).ravel()
    small = full[spots, np.argsort(-detected)[:12]].copy()
    path = tmp_path_factory.mktemp("data") / "small.h5ad"
    small.write_h5ad(path)
    return path


# ---------------------------------------------------------------------------------------------
# an interrupt during the atomic write
# ---------------------------------------------------------------------------------------------
SWALLOWED = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from stglm.cli import atomic_write

    class Finaliser:  # as h5py's objects, run while the file is written
        def __del__(self):
            os.kill(os.getpid(), signal.{name})
            time.sleep(0.2)  # the handler runs here; its exception is ignored by __del__

    def write(tmp):
        Path(tmp).write_bytes(b"half")
        Finaliser()  # collected at once
        print("the write went on", flush=True)  # the exception was swallowed
        Path(tmp).write_bytes(b"complete")

    atomic_write(Path(sys.argv[1]), write)
    """
)


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_an_interrupt_swallowed_during_the_write_still_fails_the_write(tmp_path, name):
    """The signal's exception dies in a finaliser ("Exception ignored"), the write finishes:
    still exit status 128 + signal, and neither the output nor a temporary file is left."""
    out = tmp_path / "out.h5ad"
    script = SWALLOWED.format(name=name)
    done = subprocess.run(
        [sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=120
    )
    assert "the write went on" in done.stdout  # the swallowing really happened
    assert done.returncode == 128 + getattr(signal, name), done.stderr
    assert f"interrupted ({name})" in done.stderr and "Exception ignored" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_write_restores_the_signal_handlers(tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    cli.atomic_write(tmp_path / "a.txt", lambda p: Path(p).write_text("ok"))
    assert (tmp_path / "a.txt").read_text() == "ok"
    assert {s: signal.getsignal(s) for s in before} == before


# ---------------------------------------------------------------------------------------------
# what is printed
# ---------------------------------------------------------------------------------------------
def test_an_error_after_the_progress_bar_starts_on_its_own_line(small_h5ad, tmp_path, monkeypatch):
    """An input error raised while the bar is drawn: 'Error: ...' begins a line."""
    from stglm import _transcriptome

    def fail(self, Y, offset=None, theta=None):
        raise InputError("the expression matrix contains NaN or infinite values.")

    monkeypatch.setattr(_transcriptome._GeneFitter, "fit", fail)
    out = tmp_path / "out.h5ad"
    result = invoke("fit", small_h5ad, "--coords", "--lambda", "0.1", "--out", out)
    assert result.exit_code == 2
    assert "fitting 12 genes" in result.stderr  # the bar was drawn
    assert "\nError: cannot fit small.h5ad" in result.stderr, result.stderr
    assert not out.exists()


def test_cold_kernels_are_announced(small_h5ad, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "kernels_cold", lambda: True)
    result = invoke("fit", small_h5ad, "--coords", "--lambda", "0.1", "--out", tmp_path / "a.h5ad")
    assert result.exit_code == 0, result.output
    assert "compiling kernels (first run only" in result.stderr
    quiet = invoke("fit", small_h5ad, "--coords", "--lambda", "0.1", "--out", tmp_path / "b.h5ad",
                   "-q")  # fmt: skip
    assert quiet.exit_code == 0 and "compiling" not in quiet.stderr


@pytest.mark.slow  # two fresh interpreters importing numba: ~10 s
def test_kernels_cold_reads_numbas_cache(tmp_path):
    """An empty NUMBA_CACHE_DIR is cold; this suite's cache (it has run fits) is warm."""
    code = "from stglm.cli import kernels_cold; print(kernels_cold())"
    empty = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    empty.pop("NUMBA_DISABLE_JIT", None)
    cold = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=empty)
    assert cold.stdout.strip() == "True", cold.stderr
    warm = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert warm.stdout.strip() == "False", warm.stderr


def test_lambda_min_ratio_help_states_the_auto_rule():
    text = " ".join(invoke("fit", "--help").stdout.split())
    assert "Default: glmnet's, 1e-4 (1e-2 with fewer cells than predictors)" in text


# ---------------------------------------------------------------------------------------------
# results already in the input
# ---------------------------------------------------------------------------------------------
def test_results_in_the_input_are_merged_or_refused(small_h5ad, tmp_path):
    """Input with `stglm fit` results: the same model adds genes; another model is refused
    (naming --overwrite, no output), or replaces them with --overwrite."""
    genes = ad.read_h5ad(small_h5ad).var_names
    first = tmp_path / "first.h5ad"
    base = ["--coords", "--lambda", "0.1", "-q"]
    assert (
        invoke("fit", small_h5ad, "--genes", ",".join(genes[:3]), *base, "--out", first).exit_code
        == 0
    )
    merged = tmp_path / "merged.h5ad"
    result = invoke("fit", first, "--genes", ",".join(genes[3:5]), *base, "--out", merged)
    assert result.exit_code == 0, result.output
    assert list(ad.read_h5ad(merged).uns["stglm"]["genes"]) == list(genes[:5])
    other = tmp_path / "other.h5ad"
    refused = invoke("fit", first, "--genes", genes[5], "--coords", "--lambda", "0.2", "-q",
                     "--out", other)  # fmt: skip
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr
    assert "reg_lambda" in refused.stderr and not other.exists()
    replaced = invoke("fit", first, "--genes", genes[5], "--coords", "--lambda", "0.2", "-q",
                      "--overwrite", "--out", other)  # fmt: skip
    assert replaced.exit_code == 0, replaced.output
    assert list(ad.read_h5ad(other).uns["stglm"]["genes"]) == [genes[5]]


def test_cli_default_model_is_fit_genes_default(small_h5ad, tmp_path):
    """`stglm fit`'s defaults and fit_genes' defaults are one model: equal coefficients."""
    out = tmp_path / "cli.h5ad"
    result = invoke("fit", small_h5ad, "--coords", "--distr", "neg-binomial", "--lambda", "0.05",
                    "-q", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    res = ad.read_h5ad(out)
    direct = ad.read_h5ad(small_h5ad)
    stglm.fit_genes(direct, design=res.obsm["stglm_design"], distr="neg-binomial", reg_lambda=0.05,
                    progress=False)  # fmt: skip
    np.testing.assert_allclose(
        np.asarray(res.varm["stglm_coef"]), np.asarray(direct.varm["stglm_coef"]), equal_nan=True
    )
    assert res.uns["stglm"]["model"] == direct.uns["stglm"]["model"]


def test_test_results_in_the_input_are_merged_or_refused(small_h5ad, tmp_path):
    """`stglm test` into an input with its results: the same test adds genes (q-values over
    all of them), another test is refused naming --overwrite (no output), --overwrite
    replaces. Before, a second call under the key silently replaced the first's genes."""
    genes = ad.read_h5ad(small_h5ad).var_names
    base = ["--coords", "--distr", "poisson", "--reduced", "x", "-q"]
    first = tmp_path / "first.h5ad"
    result = invoke("test", small_h5ad, "--genes", ",".join(genes[:3]), *base, "--out", first)
    assert result.exit_code == 0, result.output
    merged = tmp_path / "merged.h5ad"
    result = invoke("test", first, "--genes", ",".join(genes[3:5]), *base, "--out", merged)
    assert result.exit_code == 0, result.output
    back = ad.read_h5ad(merged)
    assert list(back.uns["stglm_test"]["genes"]) == list(genes[:5])
    assert (back.var.loc[genes[:5], "stglm_test_status"] == "ok").all()
    other = tmp_path / "other.h5ad"
    args = ["--coords", "--distr", "poisson", "--reduced", "y", "-q", "--out", other]
    refused = invoke("test", first, "--genes", genes[5], *args)
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr
    assert "reduced" in refused.stderr and not other.exists()
    replaced = invoke("test", first, "--genes", genes[5], *args, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert list(ad.read_h5ad(other).uns["stglm_test"]["genes"]) == [genes[5]]


def test_figures_with_a_nan_coordinate_are_written_without_a_traceback(small_h5ad, tmp_path):
    """issue 16: `--figures` with a NaN coordinate printed a traceback after the results
    were written. The cell is left out of the maps; the command succeeds."""
    adata = ad.read_h5ad(small_h5ad)
    xy = np.asarray(adata.obsm["spatial"], dtype=float).copy()
    xy[0, 0] = np.nan
    adata.obsm["spatial"] = xy
    source = tmp_path / "nan_xy.h5ad"
    adata.write_h5ad(source)
    figs = tmp_path / "figs"
    result = invoke("fit", source, "--section-key", "list_ID", "--lambda", "0.1",
                    "--size-factors", "none", "--out", tmp_path / "out.h5ad",
                    "--figures", figs, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and result.exception is None
    assert any(p.name.startswith("gene_fit_") for p in figs.iterdir())
