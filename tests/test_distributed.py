"""fit_genes and test_genes on counts in dask arrays: gene blocks as Dask tasks.

Every result is compared with the in-memory path on the same counts, to 1e-12 (relative,
or absolute for values below 1): at the same ``chunk_size`` each block is the same
computation on the same numbers, whichever worker runs it and in whatever order the blocks
finish — bit for bit on numpy 2.4 / OpenBLAS 0.3.31, while numpy 1.24's OpenBLAS rounds the
last bit differently in a worker process —, and across block sizes BLAS rounds differently
with a block's shape. A LocalCluster of two worker processes runs them
(module-scoped, made current by each test that uses it); without it, Dask's default
scheduler does. The lazy matrices here are built from chunks whose reading is logged to
files (the reader's process, the chunk), so a test can tell that the client never read the
counts, that each block read only its own columns, and when to kill a worker mid-run.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
import warnings
from contextlib import nullcontext
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import stglm
from stglm import spatial
from stglm._distributed import EXTRA, GeneBlockError, cluster_client
from stglm._errors import InputError, MissingDependencyError

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

# The chunk readers below are this module's functions: the workers get them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_OBS, N_GENES, WIDTH = 400, 24, 3  # WIDTH genes per column chunk, and per block
GENES = [f"g{j:02d}" for j in range(N_GENES)]


# ---------------------------------------------------------------------------------------------
# data and lazy matrices
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    """Negative-binomial counts of 24 genes on 3 predictors (gene g07 without counts)."""
    rng = np.random.default_rng(13)
    X = rng.normal(size=(N_OBS, 3))
    beta = rng.normal(scale=0.4, size=(3, N_GENES))
    mu = np.exp(rng.normal(0.5, 0.8, N_GENES) + X @ beta)
    theta = rng.uniform(1.0, 8.0, N_GENES)
    counts = rng.negative_binomial(theta, theta / (theta + mu)).astype(np.float64)
    counts[:, 7] = 0.0
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(N_OBS)])
    design = pd.DataFrame(X, index=obs.index, columns=["a", "b", "c"])
    return counts, obs, design


def in_memory(data):
    counts, obs, _ = data
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=GENES))


def _read_chunk(values, log: str | None, bad: bool, delay: float, kind: str, where: str):
    """One chunk of a lazy matrix, its reading logged as log/<where>-<pid>-<unique>."""
    if log is not None:
        Path(log, f"{where}-{os.getpid()}-{uuid.uuid4().hex[:6]}").touch()
    time.sleep(delay)
    values = np.array(values, dtype=np.float64)
    if bad:
        values[0, 0] = np.nan
    if kind == "dense":
        return values
    if kind == "pydata":
        import sparse

        return sparse.COO.from_numpy(values)
    return {"csc": sp.csc_matrix, "csr": sp.csr_matrix}[kind](values)


def lazy_matrix(counts, kind="csc", log=None, bad_chunk=None, delay=0.0):
    """A dask array of ``counts``: column chunks of WIDTH genes (row chunks for "csr")."""
    if kind == "csr_array":  # Dask before 2024 concatenates no sparse arrays: convert after
        csc = lazy_matrix(counts, "csc", log, bad_chunk, delay)
        return csc.map_blocks(sp.csr_array, dtype=np.float64, meta=sp.csr_array((0, 0)))
    meta = _read_chunk(np.zeros((0, 0)), None, False, 0.0, kind, "")
    by_rows = kind == "csr"
    step = 100 if by_rows else WIDTH
    pieces = []
    for k, start in enumerate(range(0, counts.shape[int(not by_rows)], step)):
        part = counts[start : start + step] if by_rows else counts[:, start : start + step]
        chunk = dask.delayed(_read_chunk, pure=True)(
            part, None if log is None else str(log), k == bad_chunk, delay, kind, f"chunk{k}"
        )
        pieces.append(da.from_delayed(chunk, shape=part.shape, dtype=np.float64, meta=meta))
    return da.concatenate(pieces, axis=0 if by_rows else 1)


def lazy(data, **kwargs):
    counts, obs, _ = data
    return ad.AnnData(X=lazy_matrix(counts, **kwargs), obs=obs, var=pd.DataFrame(index=GENES))


def reads(log: Path) -> list[tuple[str, int]]:
    """(chunk, pid) of every chunk read so far, oldest first."""
    files = sorted(log.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    return [(f.name.split("-")[0], int(f.name.split("-")[1])) for f in files]


def assert_same_results(got, expected):
    """Every result fit_genes writes, to 1e-12."""
    tolerance = {"rtol": 1e-12, "atol": 1e-12}
    pd.testing.assert_frame_equal(got.var, expected.var, **tolerance)
    pd.testing.assert_frame_equal(got.obs, expected.obs, **tolerance)
    assert sorted(got.varm) == sorted(expected.varm)
    for key in expected.varm:
        pd.testing.assert_frame_equal(got.varm[key], expected.varm[key], **tolerance)
    assert got.uns["stglm"]["model"] == expected.uns["stglm"]["model"]


# ---------------------------------------------------------------------------------------------
# the cluster
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def on_cluster(client):
    client.wait_for_workers(2, timeout=60)
    with client.as_current():
        yield client


def fit(adata, data, **kwargs):
    options = {"reg_lambda": 0.05, "size_factors": "total", "chunk_size": WIDTH, "progress": False}
    return stglm.fit_genes(adata, design=data[2], copy=True, **{**options, **kwargs})


# ---------------------------------------------------------------------------------------------
# same answers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "where"),
    [("csc", "cluster"), ("csr", "cluster"), ("dense", "cluster"), ("csr_array", "cluster"),
     ("pydata", "default")],  # pydata's numba kernels compile once, here, not on each worker
)  # fmt: skip
def test_poisson_fixed_lambda_equals_in_memory(client, data, kind, where, capsys):
    if kind == "pydata":
        pytest.importorskip("sparse")
    expected = fit(in_memory(data), data)
    with client.as_current() if where == "cluster" else nullcontext():
        got = fit(lazy(data, kind=kind), data, progress=kind == "csc")
    assert_same_results(got, expected)
    assert got.var.loc["g07", "stglm_status"] == "all zeros"
    if kind == "csc":  # the progress bar counted every gene, block by block
        assert f"{N_GENES}/{N_GENES}" in capsys.readouterr().err


def test_cross_validation_equals_in_memory(on_cluster, data):
    options = {"reg_lambda": None, "n_lambdas": 6, "cv": 3}
    assert_same_results(fit(lazy(data), data, **options), fit(in_memory(data), data, **options))


def test_negative_binomial_theta_per_gene_equals_in_memory(on_cluster, data):
    options = {"distr": "neg-binomial", "theta": "cox-reid", "reg_lambda": 0.0, "inference": True}
    got = fit(lazy(data), data, **options)
    assert_same_results(got, fit(in_memory(data), data, **options))
    assert np.isfinite(got.var["stglm_theta"].drop("g07")).all()


def test_test_genes_equals_in_memory(on_cluster, data):
    """The quasi-likelihood test: two passes over the blocks, θ trended between them."""
    options = {"design": data[2], "reduced": ["a"], "test": "ql", "chunk_size": WIDTH}
    got = stglm.test_genes(lazy(data), progress=False, **options)
    expected = stglm.test_genes(in_memory(data), progress=False, **options)
    pd.testing.assert_frame_equal(got, expected, rtol=1e-12, atol=1e-12)
    assert np.isfinite(got["pvalue"].drop("g07")).all()


def test_other_block_size_and_the_default_scheduler(client, data):
    """No current client: Dask's default scheduler; blocks of 5 genes against 3."""
    assert stglm._distributed.active_client() is None
    options = {"distr": "neg-binomial", "theta": "ml", "reg_lambda": 0.02}
    got = fit(lazy(data), data, chunk_size=5, **options)
    assert_same_results(got, fit(in_memory(data), data, **options))
    assert_same_results(fit(lazy(data), data, **options), fit(in_memory(data), data, **options))


def test_default_blocks_are_sized_for_the_threads_of_one_worker(client, data):
    """Blocks running in one process share its memory budget: with Dask, a worker's
    threads (1 on this cluster; the default scheduler's num_workers) decide as n_jobs does
    in memory."""

    def plan(adata, **kwargs):
        return fit(adata, data, chunk_size=None, **kwargs).uns["stglm"]["plan"]["chunk_size"]

    with client.as_current():
        assert plan(lazy(data)) == plan(in_memory(data), n_jobs=1)
    with dask.config.set(num_workers=3):
        threads = plan(lazy(data))
    assert threads == plan(in_memory(data), n_jobs=3) < plan(in_memory(data), n_jobs=1)


# ---------------------------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_worker_killed_mid_run_changes_nothing(on_cluster, data, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    adata = lazy(data, log=log, delay=0.2)
    workers = set(on_cluster.run(os.getpid).values())
    n_blocks = N_GENES // WIDTH
    killed = {}

    def kill_a_busy_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            seen = reads(log)
            if len(seen) >= 3:  # three blocks started: kill the worker that read the last
                killed["pid"], killed["blocks_started"] = seen[-1][1], len(seen)
                os.kill(killed["pid"], signal.SIGKILL)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    got = fit(adata, data, size_factors=None)  # no pass over the counts before the blocks
    killer.join()
    assert killed["pid"] in workers and killed["blocks_started"] < n_blocks  # mid-run
    assert not _alive(killed["pid"])
    assert_same_results(got, fit(in_memory(data), data, size_factors=None))
    assert {chunk for chunk, _ in reads(log)} == {f"chunk{k}" for k in range(n_blocks)}


@pytest.mark.parametrize("scheduler", ["cluster", "default"])
def test_a_bad_block_is_one_error_naming_its_genes(client, data, scheduler):
    adata = lazy(data, bad_chunk=2)  # NaN among the genes g06, g07, g08
    var, uns = adata.var.copy(), dict(adata.uns)
    with client.as_current() if scheduler == "cluster" else nullcontext():
        with pytest.raises(InputError, match=r"block 3 of 8 \(genes g06, g07, g08\).*NaN"):
            stglm.fit_genes(adata, design=data[2], reg_lambda=0.05, chunk_size=WIDTH)
    pd.testing.assert_frame_equal(adata.var, var)  # nothing written
    assert dict(adata.uns) == uns and not adata.varm and "stglm_offset" not in adata.obs


def test_a_block_that_cannot_be_read_names_its_genes(on_cluster, data):
    counts, obs, design = data
    broken = lazy_matrix(counts).map_blocks(
        _fail_on_third_block, dtype=np.float64, meta=sp.csc_matrix((0, 0))
    )
    adata = ad.AnnData(X=broken, obs=obs, var=pd.DataFrame(index=GENES))
    with pytest.raises(GeneBlockError, match=r"block 3 of 8 \(genes g06, g07, g08\).*disk"):
        # no size factors: their totals would read the broken block before the gene blocks
        stglm.fit_genes(adata, design=design, reg_lambda=0.05, chunk_size=WIDTH, size_factors=None)


def _fail_on_third_block(values, block_info=None):
    if block_info is not None and block_info[None]["chunk-location"][1] == 2:
        raise OSError("the disk went away")
    return values


# ---------------------------------------------------------------------------------------------
# bounded memory: what is read, and where
# ---------------------------------------------------------------------------------------------
def test_the_client_never_reads_the_counts_and_each_block_only_its_columns(
    on_cluster, data, tmp_path
):
    log = tmp_path / "log"
    log.mkdir()
    fit(lazy(data, log=log), data)
    seen = reads(log)
    assert os.getpid() not in {pid for _, pid in seen}
    assert {pid for _, pid in seen} <= set(on_cluster.run(os.getpid).values())
    # The size factors read every chunk once; then each block its own chunk, once.
    chunks = [chunk for chunk, _ in seen]
    assert sorted(chunks) == sorted(2 * [f"chunk{k}" for k in range(N_GENES // WIDTH)])


def test_options_that_need_the_whole_matrix_are_refused(data):
    with pytest.raises(InputError, match="store_fitted"):
        fit(lazy(data), data, store_fitted=True)
    with pytest.raises(InputError, match="poscounts"):
        fit(lazy(data), data, size_factors="poscounts")


def test_row_totals_and_spatial_lag_of_a_lazy_matrix(data):
    """Read chunk by chunk: the same numbers as from the matrix in memory."""
    counts, obs, _ = data
    rng = np.random.default_rng(1)
    expected = in_memory(data)
    expected.obsm["spatial"] = rng.uniform(0, 10, size=(N_OBS, 2))
    adata = lazy(data, kind="csr")
    adata.obsm["spatial"] = expected.obsm["spatial"]
    got = spatial.spatial_lag(adata, ["g01", "g05"])
    pd.testing.assert_frame_equal(got, spatial.spatial_lag(expected, ["g01", "g05"]))
    from stglm._anndata import row_sums_and_minima

    with_negative = counts.copy()
    with_negative[5, 4] = -1.0
    totals, minima = row_sums_and_minima(lazy_matrix(with_negative))
    np.testing.assert_array_equal(totals, with_negative.sum(axis=1))
    np.testing.assert_array_equal(minima, with_negative.min(axis=1))


# ---------------------------------------------------------------------------------------------
# reading .h5ad and .zarr lazily
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(data, tmp_path_factory):
    """The counts as CSR in X (cell-major) and CSC in layers['counts'], as .h5ad and .zarr."""
    adata = in_memory(data)
    adata.layers["counts"] = sp.csc_matrix(data[0])
    folder = tmp_path_factory.mktemp("files")
    adata.write_h5ad(folder / "counts.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's note on zarr v2 and v3
        adata.write_zarr(folder / "counts.zarr")
    return folder


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_read_dask_keeps_the_counts_on_disk_in_gene_blocks(on_cluster, data, files, suffix):
    adata = stglm.read_dask(files / f"counts{suffix}", chunk_size=WIDTH)
    assert type(adata.X).__module__.startswith("dask")
    assert adata.layers["counts"].chunks[1] == (WIDTH,) * (N_GENES // WIDTH)  # CSC: blocks
    assert adata.X.chunks[1] == (N_GENES,)  # CSR: whole rows
    expected = fit(in_memory(data), data)
    assert_same_results(fit(adata, data, layer="counts"), expected)
    assert_same_results(fit(adata, data), expected)


def _read_lazy():
    """anndata's ``experimental.read_lazy`` (anndata ≥ 0.12, with xarray), or a skip."""
    pytest.importorskip("xarray")
    read_lazy = getattr(ad.experimental, "read_lazy", None)
    if read_lazy is None:
        pytest.skip("anndata.experimental.read_lazy needs anndata >= 0.12")
    return read_lazy


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_anndata_read_lazy_fits_and_tests_as_in_memory(on_cluster, data, spatial_files, suffix):
    """obs and var xarray-backed, X a dask array: the same design, fits and tests."""
    lazy = _read_lazy()(spatial_files / f"in{suffix}")
    expected = ad.read_h5ad(spatial_files / "in.h5ad")
    assert not isinstance(lazy.obs, pd.DataFrame) and type(lazy.X).__module__.startswith("dask")
    options = {"section_key": "section", "coords": True, "lag": ["g01"]}
    design = spatial.build_design(lazy, **options)
    pd.testing.assert_frame_equal(design, spatial.build_design(expected, **options))
    fit_options = {
        "design": design, "reg_lambda": 0.05, "chunk_size": WIDTH, "copy": True,
        "progress": False, "size_factors": "total", "sample_weight": "weight",
    }  # fmt: skip
    got = stglm.fit_genes(lazy, **fit_options)
    assert not isinstance(lazy.obs, pd.DataFrame)  # copy=True: the input is left as it was
    want = stglm.fit_genes(expected, **fit_options)
    assert_same_results(got, want)
    assert stglm.get.coef_df(got).equals(stglm.get.coef_df(want))
    options = {"design": design, "reduced": ["x", "y"], "chunk_size": WIDTH, "progress": False}
    table = stglm.test_genes(lazy, **options)  # written into lazy: its obs and var now in memory
    assert isinstance(lazy.var, pd.DataFrame)
    pd.testing.assert_frame_equal(table, stglm.test_genes(expected, **options), rtol=1e-12)
    if getattr(lazy, "file", None) is not None and hasattr(lazy.file, "close"):
        lazy.file.close()


# ---------------------------------------------------------------------------------------------
# rewriting counts gene-major
# ---------------------------------------------------------------------------------------------
def test_write_gene_major_from_memory_keeps_everything_and_leaves_adata_alone(data, tmp_path):
    counts = data[0]
    adata = in_memory(data)  # CSR
    adata.layers["dense"] = counts.copy()
    adata.obs["section"] = pd.Categorical(np.where(np.arange(N_OBS) % 3, "s1", "s2"))
    adata.obsm["spatial"] = np.arange(2.0 * N_OBS).reshape(N_OBS, 2)
    adata.uns["note"] = {"source": "test"}
    X_before = adata.X
    stglm.write_gene_major(adata, tmp_path / "genes.zarr", chunk_size=WIDTH)
    assert adata.X is X_before and adata.X.format == "csr" and "dense" in adata.layers
    back = stglm.read_dask(tmp_path / "genes.zarr", chunk_size=WIDTH)
    assert back.X.chunks[1] == (WIDTH,) * (N_GENES // WIDTH)  # CSC: one chunk per block
    assert back.layers["dense"].chunks[1] == (WIDTH,) * (N_GENES // WIDTH)
    np.testing.assert_array_equal(back.X.compute().toarray(), counts)
    np.testing.assert_array_equal(back.layers["dense"].compute(), counts)
    pd.testing.assert_frame_equal(back.obs, adata.obs)
    pd.testing.assert_frame_equal(back.var, adata.var)
    np.testing.assert_array_equal(back.obsm["spatial"], adata.obsm["spatial"])
    assert back.uns["note"] == {"source": "test"}
    assert_same_results(fit(back, data), fit(adata, data))


def test_write_gene_major_converts_a_lazy_csr_matrix_group_by_group(data, files, tmp_path):
    from stglm._gene_major import _STORED_BYTES, _column_groups

    counts = data[0]
    lazy = stglm.read_dask(files / "counts.h5ad")  # X cell-major: row chunks
    assert lazy.X.chunks[1] == (N_GENES,)
    budget = int((counts != 0).sum() * _STORED_BYTES / 5)  # about five groups of columns
    groups = _column_groups(lazy.X, budget)
    assert len(groups) >= 5 and groups[0][0] == 0 and groups[-1][1] == N_GENES
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:], strict=False))
    stglm.write_gene_major(lazy, tmp_path / "genes.zarr", max_memory=budget)
    back = stglm.read_dask(tmp_path / "genes.zarr", chunk_size=WIDTH)
    assert back.X.chunks[1] == (WIDTH,) * (N_GENES // WIDTH)
    np.testing.assert_array_equal(back.X.compute().toarray(), counts)
    np.testing.assert_array_equal(back.layers["counts"].compute().toarray(), counts)
    assert type(lazy.X).__module__.startswith("dask")  # the input is still lazy


def test_write_gene_major_refuses_bad_arguments_before_writing(data, tmp_path):
    adata = in_memory(data)
    (tmp_path / "there.zarr").mkdir()
    with pytest.raises(InputError, match="exists; pass overwrite=True"):
        stglm.write_gene_major(adata, tmp_path / "there.zarr")
    for bad in ({"chunk_size": 0}, {"chunk_size": 2.5}, {"max_memory": True}):
        with pytest.raises(InputError, match=next(iter(bad))):
            stglm.write_gene_major(adata, tmp_path / "new.zarr", **bad)
    assert not (tmp_path / "new.zarr").exists()
    with pytest.raises(TypeError, match="AnnData"):
        stglm.write_gene_major(data[0], tmp_path / "new.zarr")
    stglm.write_gene_major(adata, tmp_path / "there.zarr", overwrite=True)
    assert stglm.read_dask(tmp_path / "there.zarr").n_vars == N_GENES


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------
def cli(*args):
    from click.testing import CliRunner

    from stglm import cli as command

    return CliRunner().invoke(command.main, list(map(str, args)), prog_name="stglm")


@pytest.fixture(scope="module")
def spatial_files(data, tmp_path_factory):
    counts, obs, _ = data
    rng = np.random.default_rng(2)
    adata = in_memory(data)
    adata.obs["section"] = pd.Categorical(rng.choice(["s1", "s2"], N_OBS))
    adata.obsm["spatial"] = rng.uniform(0, 20, size=(N_OBS, 2))
    adata.obs["weight"] = rng.uniform(0.5, 2.0, N_OBS)
    folder = tmp_path_factory.mktemp("cli")
    adata.write_h5ad(folder / "in.h5ad")
    adata.X = sp.csc_matrix(adata.X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_zarr(folder / "in.zarr")
    return folder


def test_cli_fit_on_a_scheduler_and_test_on_local_workers(client, spatial_files):
    folder = spatial_files
    common = ["--section-key", "section", "--coords", "--lag", "g01", "--quiet"]
    done = cli("fit", folder / "in.zarr", *common, "--lambda", 0.05, "--out", folder / "m.h5ad")
    assert done.exit_code == 0, done.output
    done = cli(
        "fit", folder / "in.zarr", *common, "--lambda", 0.05, "--out", folder / "d.h5ad",
        "--scheduler", client.scheduler.address, "--chunk-size", 4,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    expected, got = ad.read_h5ad(folder / "m.h5ad"), ad.read_h5ad(folder / "d.h5ad")
    assert got.X is None and not got.layers  # the counts stay in the input
    pd.testing.assert_frame_equal(got.varm["stglm_coef"], expected.varm["stglm_coef"], rtol=1e-12)
    pd.testing.assert_frame_equal(got.obsm["stglm_design"], expected.obsm["stglm_design"])

    test = ["test", folder / "in.h5ad", *common[:3], "--quiet", "--reduced", "section"]
    done = cli(*test, "--table", folder / "m.csv")
    assert done.exit_code == 0, done.output
    done = cli(*test, "--table", folder / "d.csv", "--workers", 1)  # its own LocalCluster
    assert done.exit_code == 0, done.output
    pd.testing.assert_frame_equal(
        pd.read_csv(folder / "d.csv", index_col=0), pd.read_csv(folder / "m.csv", index_col=0)
    )


def test_cli_convert_writes_a_gene_major_store(data, spatial_files, tmp_path):
    out = tmp_path / "genes.zarr"
    done = cli("convert", spatial_files / "in.h5ad", out, "--max-memory", 1)
    assert done.exit_code == 0, done.output
    assert "gene-major" in done.output
    back = stglm.read_dask(out, chunk_size=WIDTH)
    assert back.X.chunks[1] == (WIDTH,) * (N_GENES // WIDTH)
    np.testing.assert_array_equal(back.X.compute().toarray(), data[0])
    done = cli("convert", spatial_files / "in.h5ad", out)
    assert done.exit_code == 2 and "--force" in done.output


def test_cli_refuses_what_needs_the_whole_matrix(spatial_files):
    args = ["fit", spatial_files / "in.h5ad", "--coords", "--out", spatial_files / "x.h5ad"]
    done = cli(*args, "--workers", 1, "--store-fitted")
    assert done.exit_code == 2 and "--store-fitted" in done.output
    done = cli(*args, "--workers", 1, "--scheduler", "tcp://127.0.0.1:1")
    assert done.exit_code == 2 and "not both" in done.output


# ---------------------------------------------------------------------------------------------
# without Dask
# ---------------------------------------------------------------------------------------------
def test_without_dask_the_in_memory_path_works_and_the_dask_path_names_the_extra(
    data, files, spatial_files, monkeypatch
):
    for name in [m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("dask", "dask.array", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)  # `import dask` raises ImportError
    with pytest.raises(ImportError):
        import dask  # noqa: F401, F811
    fitted = fit(in_memory(data), data)
    assert fitted.var["stglm_status"].eq("ok").sum() == N_GENES - 1
    with pytest.raises(MissingDependencyError, match=EXTRA.replace("[", r"\[")) as caught:
        stglm.read_dask(files / "counts.zarr")
    assert isinstance(caught.value, ImportError)
    with pytest.raises(MissingDependencyError, match=EXTRA.replace("[", r"\[")):
        with cluster_client(workers=2):
            pass
    done = cli("fit", spatial_files / "in.h5ad", "--coords", "--out", spatial_files / "y.h5ad",
               "--workers", 2)  # fmt: skip
    assert done.exit_code == 2 and EXTRA in done.output, done.output
