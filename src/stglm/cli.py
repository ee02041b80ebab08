"""The ``stglm`` command line: fit every gene of an h5ad file on spatial predictors.

``stglm fit data.h5ad --section-key list_ID --lag KRT15,CNN1 --coords --out results.h5ad``
builds a design from the requested predictors, runs :func:`stglm.fit_genes`, writes the
AnnData with its results (atomically: a temporary file in the same directory, renamed at
the end) and, with ``--figures``, a coefficient heatmap and a few genes' fits as PNGs.

Bad input (missing or non-h5ad file, unknown gene or column, no predictors, anything the
library rejects with its own input errors) ends with one line on stderr, ``Error: ...``, and
exit status 2; any other exception is a bug and shows as one, with its traceback.
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._errors import StglmInputError

if TYPE_CHECKING:
    import pandas as pd

# numpy, pandas, anndata and the rest of stglm are imported inside the commands, so that
# `stglm --help` starts in about the time of importing click.

__all__ = ["main"]

#: Most categories accepted for a --niche column (more means a continuous column).
MAX_NICHE_CATEGORIES = 100
#: Genes whose fits are drawn by default with --figures.
N_GENE_FIT_FIGURES = 3


class BadInput(click.ClickException):
    """Bad input (file, gene, column, option combination): one line on stderr, status 2.

    Raised by the command's own checks, and for the library's
    :class:`~stglm._errors.StglmInputError`; any other exception is a bug and propagates.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always a single line


class _LazyChoice(click.Choice):
    """A :class:`click.Choice` whose values are loaded when first needed.

    The families' names live in ``stglm._families``, which imports SciPy; only
    ``stglm fit --help`` and a fit need them, not ``stglm --help``.
    """

    def __init__(self, load: Callable[[], Sequence[str]]) -> None:
        self._load, self._choices = load, None
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._choices is None:
            self._choices = tuple(self._load())
        return self._choices


def _distributions() -> tuple[str, ...]:
    from ._families import DISTRIBUTIONS

    return DISTRIBUTIONS


def _version() -> str:
    from . import __version__

    return __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=_version(), prog_name="stglm", message="%(prog)s %(version)s")
def main() -> None:
    """Penalised GLMs of spatial transcriptomics data (stglm).

    Run `stglm fit --help` for the options of a fit.
    """


# ---------------------------------------------------------------------------------------------
# helpers: names, files, atomic writes
# ---------------------------------------------------------------------------------------------
def _split_names(text: str) -> list[str]:
    """Names separated by commas and/or whitespace; '#' starts a comment in a file."""
    names: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        names.extend(n for n in re.split(r"[,\s]+", line) if n)
    return list(dict.fromkeys(names))  # drop repeats, keep order


def _gene_list(value: str | None, option: str) -> list[str] | None:
    """Parse a comma-separated list, or read the genes of an existing file."""
    if value is None:
        return None
    if os.path.isfile(value):
        try:
            names = _split_names(Path(value).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise BadInput(f"{option}: cannot read gene file {value!r}: {err}") from None
        where = f"gene file {value!r}"
    else:
        names, where = _split_names(value), f"{value!r}"
    if not names:
        raise BadInput(f"{option}: no gene names in {where}.")
    return names


def _check_genes(names: list[str], var_names: pd.Index, option: str, source: Path) -> None:
    unknown = [g for g in names if g not in var_names]
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise BadInput(
            f"{option}: unknown gene{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown[:5]))}{more}: not in the var_names of {source.name} "
            f"({len(var_names)} genes, e.g. {', '.join(var_names[:3])})."
        )


def _check_obs_column(adata: Any, column: str, option: str, source: Path) -> None:
    if column not in adata.obs.columns:
        raise BadInput(
            f"{option}: {column!r} is not a column of adata.obs in {source.name} "
            f"(columns: {', '.join(map(str, adata.obs.columns)) or 'none'})."
        )


def _read_input(path: Path) -> Any:
    """Read the AnnData in ``path``; raise an BadInput naming what is wrong with the file."""
    import anndata as ad
    import h5py

    if not path.exists():
        raise BadInput(f"input file '{path}' does not exist.")
    if path.is_dir():
        raise BadInput(f"input '{path}' is a directory, not an .h5ad file.")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as err:
        raise BadInput(f"cannot read input file '{path}': {err}") from None
    if not is_hdf5:
        raise BadInput(f"input file '{path}' is not an .h5ad (HDF5) file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ad.read_h5ad(path)
    except Exception as err:  # noqa: BLE001 - any failure to parse is a bad input file
        raise BadInput(
            f"cannot read '{path}' as AnnData (.h5ad): {type(err).__name__}: {err}"
        ) from None


def _check_writable(path: Path, option: str) -> None:
    """Fail before fitting when ``path`` (or the folder to create it in) cannot be written."""
    if path.exists() and path.is_dir() and option == "--out":
        raise BadInput(f"{option}: '{path}' is a directory; give a file name ending in .h5ad.")
    existing = path if path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(f"{option}: cannot write under '{existing}' (not a writable directory).")


def atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it to ``path``.

    The rename (:func:`os.replace`) is atomic on one file system, so ``path`` is either left
    as it was or holds the complete new file; on any error or interrupt the temporary file is
    removed and the exception re-raised.

    Parameters
    ----------
    path : Path
        The final file; its directory is created if needed.
    write : callable
        Writes the complete file to the path it is given.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    previous = _exit_on_sigterm()
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return path


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _exit_on_sigterm() -> Any:
    """Make SIGTERM raise SystemExit (so clean-up runs); return the handler to restore.

    Only in the main thread (where Python delivers signals); None elsewhere.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_exit)


def _warn(message: str) -> None:
    click.echo(f"stglm: warning: {' '.join(str(message).split())}", err=True)


def _safe_name(gene: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", gene)


# ---------------------------------------------------------------------------------------------
# checks of the options and the input, the design and the fit
# ---------------------------------------------------------------------------------------------
def _check_options(
    *,
    out: Path,
    genes: str | None,
    niche: str | None,
    lag: tuple[str, ...],
    coords: bool,
    section_key: str | None,
    key_added: str,
    plot_genes: str | None,
    figures: Path | None,
) -> tuple[list[str], list[str] | None, list[str] | None]:
    """Check what can be checked before reading the input: (lag, fit and plot genes)."""
    if out.suffix != ".h5ad":
        raise BadInput(f"--out: '{out}' must end in .h5ad.")
    lag_genes = _split_names(",".join(lag)) if lag else []
    if not (niche or lag_genes or coords or section_key):
        raise BadInput(
            "no predictors requested: give at least one of --niche, --lag, "
            "--coords or --section-key."
        )
    if not key_added.strip():
        raise BadInput("--key-added must not be empty.")
    fit_genes_list = _gene_list(genes, "--genes")
    plot_gene_list = _gene_list(plot_genes, "--plot-genes")
    _check_writable(out, "--out")
    if figures is not None:
        _check_writable(figures, "--figures")
    return lag_genes, fit_genes_list, plot_gene_list


def _check_input(
    adata: Any,
    source: Path,
    *,
    layer: str | None,
    columns: dict[str, str | None],
    needs_coords: bool,
    gene_options: dict[str, list[str] | None],
) -> None:
    """Check the input against the options: layer, obs ``columns`` and genes, by option."""
    from ._anndata import layer_matrix

    try:
        layer_matrix(adata, layer)
    except StglmInputError as err:
        raise BadInput(f"--layer ({source.name}): {err}") from None
    for option, column in columns.items():
        if column is not None:
            _check_obs_column(adata, column, option, source)
    niche = columns.get("--niche")
    if niche is not None and adata.obs[niche].nunique() > MAX_NICHE_CATEGORIES:
        raise BadInput(
            f"--niche: column {niche!r} has {adata.obs[niche].nunique()} distinct "
            f"values; it must be categorical (at most {MAX_NICHE_CATEGORIES})."
        )
    if needs_coords and "spatial" not in adata.obsm:
        raise BadInput(
            f"{source.name} has no coordinates in obsm['spatial'], needed by "
            "--niche, --lag, --coords and --figures."
        )
    for option, names in gene_options.items():
        if names:
            _check_genes(names, adata.var_names, option, source)
    fitted, plotted = gene_options.get("--genes"), gene_options.get("--plot-genes")
    if plotted and fitted and set(plotted) - set(fitted):
        raise BadInput(
            f"--plot-genes: {sorted(set(plotted) - set(fitted))} are not among the fitted --genes."
        )


def _design(adata: Any, **options: Any) -> pd.DataFrame:
    """:func:`stglm.spatial.build_design` with the library's input errors as bad input."""
    from . import spatial

    try:
        return spatial.build_design(adata, **options)
    except StglmInputError as err:
        raise BadInput(f"cannot build the predictors: {err}") from None


def _fit(adata: Any, source: Path, genes: list[str] | None, **options: Any) -> float:
    """Run :func:`stglm.fit_genes` on ``adata``; return its time in seconds."""
    from ._anndata import layer_label
    from ._transcriptome import fit_genes

    started = time.perf_counter()
    try:
        fit_genes(adata, genes, **options)
    except StglmInputError as err:
        where = layer_label(options.get("layer"))
        raise BadInput(f"cannot fit {source.name} ({where}): {err}") from None
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------
def _summary(
    adata: Any,
    key: str,
    *,
    n_genes: int,
    design: pd.DataFrame,
    distr: str,
    alpha: float,
    reg_lambda: float | None,
    cv: int,
    seconds: float,
    out: Path,
    figures: list[Path],
    top: int,
) -> str:
    import numpy as np

    from . import _results as r
    from .get import top_effects

    status = r.statuses(adata, key)
    fitted = status.isin(r.FITTED_STATUSES)
    lam = (
        f"λ = {reg_lambda:g}"
        if reg_lambda is not None
        else f"λ by {cv}-fold CV (median {np.nanmedian(adata.var[r.var_key(key, 'lambda')]):.3g})"
    )
    counts = status[status != r.NOT_REQUESTED].value_counts()
    mu = f", layers[{r.mu_layer(key)!r}]" if r.mu_layer(key) in adata.layers else ""
    lines = [
        f"stglm: fitted {n_genes} genes on {adata.n_obs} cells/spots with "
        f"{design.shape[1]} predictors ({distr}, α = {alpha:g}, {lam}) in {seconds:.1f} s",
        f"  converged: {int(adata.var[r.var_key(key, 'converged')][fitted].sum())} of "
        f"{int(fitted.sum())} fitted genes"
        f" (status: {', '.join(f'{k} {v}' for k, v in counts.items())})",
        f"  predictors: {', '.join(design.columns)}",
        f"  results: {out} (varm[{r.coef_key(key)!r}], var['{key}_*'], uns[{key!r}], "
        f"obsm[{r.design_key(key)!r}]{mu})",
    ]
    if figures:
        lines.append(f"  figures: {', '.join(str(f) for f in figures)}")
    lines.append(f"Strongest effects (top {top} genes by |coef| per predictor):")
    width = max(len(p) for p in design.columns)
    for predictor, effects in top_effects(adata, key_added=key, top=top).items():
        text = ", ".join(f"{g} ({c:+.2f})" for g, c in effects) or "no gene (all coefficients 0)"
        lines.append(f"  {predictor:<{width}}  {text}")
    return "\n".join(lines)


def _default_plot_genes(adata: Any, key: str, n: int) -> list[str]:
    """Pick the strongest gene of each predictor, ordered by |coef|: the first ``n`` distinct."""
    from .get import top_effects

    effects = top_effects(adata, key_added=key, top=1).values()
    best = [(abs(c), g) for pairs in effects for g, c in pairs]
    return list(dict.fromkeys(g for _, g in sorted(best, reverse=True)))[:n]


def _write_figures(
    adata: Any,
    key: str,
    design: pd.DataFrame,
    folder: Path,
    top: int,
    genes: list[str],
    quiet: bool = False,
) -> list[Path]:
    import numpy as np
    from matplotlib.figure import Figure

    from ._plot_results import gene_fit_layout, plot_coef_heatmap, plot_gene_fit
    from ._results import FITTED_STATUSES, statuses

    written: list[Path] = []
    status = statuses(adata, key)
    if not status.isin(FITTED_STATUSES).any():
        if not quiet:
            _warn("no figures: no gene was fitted.")
        return written
    n_show = int(min(top, len(adata.uns[key]["genes"])))
    longest = max(len(str(g)) for g in adata.uns[key]["genes"])
    fig = Figure(
        figsize=(
            3.5 + 0.45 * design.shape[1] + 0.07 * min(longest, 30),
            max(3.5, 1.8 + 0.2 * n_show),
        ),
        layout="constrained",
    )
    plot_coef_heatmap(adata, key_added=key, top=top, ax=fig.add_subplot())
    written.append(
        atomic_write(folder / "coef_heatmap.png", lambda p: fig.savefig(p, dpi=120, format="png"))
    )
    shape, figsize = gene_fit_layout(np.asarray(adata.obsm["spatial"], dtype=float))
    for gene in genes:
        if status[gene] not in FITTED_STATUSES:
            if not quiet:
                _warn(f"no figure for {gene}: it has no fit (status {status[gene]!r}).")
            continue
        fig = Figure(figsize=figsize, layout="constrained")
        axes = fig.subplots(*shape)
        plot_gene_fit(adata, gene, key_added=key, axes=axes, design=design)
        fig.suptitle(
            f"{gene}: observed counts and fitted means ({adata.uns[key]['params']['distr']})"
        )
        written.append(
            atomic_write(
                folder / f"gene_fit_{_safe_name(gene)}.png",
                lambda p, f=fig: f.savefig(p, dpi=120, format="png"),
            )
        )
    return written


# ---------------------------------------------------------------------------------------------
# stglm fit
# ---------------------------------------------------------------------------------------------
@main.command("fit", short_help="Fit every gene of an .h5ad file on spatial predictors.")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    metavar="FILE.h5ad",
    type=click.Path(path_type=Path),
    help="Results file (.h5ad): the input AnnData plus the fit's results. Written "
    "atomically (temporary file, then renamed), so a failed run leaves no "
    "partial file.",
)
@click.option(
    "--genes",
    metavar="GENES|FILE",
    default=None,
    help="Genes to fit: comma-separated names, or a file with one name per line "
    "(commas/whitespace also separate; '#' starts a comment). Default: all genes.",
)
@click.option(
    "--niche",
    metavar="OBS_COLUMN",
    default=None,
    help="Predictors: share of each category of this categorical adata.obs column "
    "(e.g. cell type) among each cell's spatial neighbours (niche_<category>).",
)
@click.option(
    "--lag",
    "lag",
    metavar="GENES",
    multiple=True,
    help="Predictors: spatial lag of these genes, the neighbour mean of their "
    "log1p-normalised expression (lag_<gene>). Comma-separated; repeatable.",
)
@click.option(
    "--coords/--no-coords",
    default=False,
    show_default=True,
    help="Predictors: standardised coordinates x, y from obsm['spatial'] "
    "(standardised within each section with --section-key).",
)
@click.option(
    "--section-key",
    metavar="OBS_COLUMN",
    default=None,
    help="adata.obs column of the tissue section: neighbours are searched within a "
    "section, and a 0/1 predictor <column>_<section> is added for every section "
    "but the first.",
)
@click.option(
    "--n-neighbors",
    metavar="K",
    type=click.IntRange(min=1),
    default=6,
    show_default=True,
    help="Neighbours per cell in the spatial kNN graph used by --niche and --lag "
    "(6 = the ring around a Visium spot).",
)
@click.option(
    "--distr",
    type=_LazyChoice(_distributions),
    default="poisson",
    show_default=True,
    help="Response family.",
)
@click.option(
    "--theta",
    metavar="FLOAT",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Size parameter of the neg-binomial family.",
)
@click.option(
    "--alpha",
    metavar="FLOAT",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Elastic-net mixing: 1 lasso, 0 ridge.",
)
@click.option(
    "--lambda",
    "reg_lambda",
    metavar="FLOAT",
    type=click.FloatRange(min=0),
    default=None,
    help="Penalty strength λ (one value for all genes). Omit it to choose each "
    "gene's λ by cross-validation along a path (slower).",
)
@click.option(
    "--cv",
    metavar="K",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Folds of the cross-validation (without --lambda).",
)
@click.option(
    "--n-lambdas",
    metavar="N",
    type=click.IntRange(min=1),
    default=25,
    show_default=True,
    help="Values on each gene's λ path (without --lambda).",
)
@click.option(
    "--seed",
    metavar="INT",
    type=click.IntRange(0, 2**32 - 1),
    default=888,
    show_default=True,
    help="Random seed of the cross-validation folds.",
)
@click.option(
    "--layer",
    metavar="LAYER",
    default=None,
    help="Fit adata.layers[LAYER] instead of adata.X (raw counts for count families).",
)
@click.option(
    "--key-added",
    metavar="KEY",
    default="stglm",
    show_default=True,
    help="Prefix of the result keys in the output (varm['<key>_coef'], ...).",
)
@click.option(
    "--store-fitted/--no-store-fitted",
    default=False,
    show_default=True,
    help="Also store the fitted means as the dense layer '<key>_mu'.",
)
@click.option(
    "--figures",
    "figures",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    default=None,
    help="Folder for PNG figures: coef_heatmap.png and gene_fit_<gene>.png.",
)
@click.option(
    "--top-genes",
    metavar="N",
    type=click.IntRange(min=1),
    default=40,
    show_default=True,
    help="Genes in the coefficient heatmap (largest max |coef|).",
)
@click.option(
    "--plot-genes",
    metavar="GENES",
    default=None,
    help="Genes drawn as gene_fit_<gene>.png (comma-separated). Default: the "
    f"strongest gene of each predictor, {N_GENE_FIT_FIGURES} at most.",
)
@click.option(
    "--top-effects",
    metavar="N",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Genes listed per predictor in the summary.",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    default=False,
    help="No progress bar, warnings or summary (errors are still shown).",
)
def fit(
    input_path: Path,
    out: Path,
    genes: str | None,
    niche: str | None,
    lag: tuple[str, ...],
    coords: bool,
    section_key: str | None,
    n_neighbors: int,
    distr: str,
    theta: float,
    alpha: float,
    reg_lambda: float | None,
    cv: int,
    n_lambdas: int,
    seed: int,
    layer: str | None,
    key_added: str,
    store_fitted: bool,
    figures: Path | None,
    top_genes: int,
    plot_genes: str | None,
    top_effects: int,
    quiet: bool,
) -> None:
    """Fit a penalised GLM of every gene in INPUT (.h5ad) on spatial predictors.

    Predictors come from --section-key, --niche, --lag and --coords (at least one). Results
    go to --out: varm['<key>_coef'] (genes × predictors), var['<key>_intercept', '_lambda',
    '_score', '_converged', '_kkt', '_n_iter', '_status'], uns['<key>'] and the design in
    obsm['<key>_design'].

    \b
    Example:
      stglm fit data.h5ad --section-key list_ID --lag KRT15,CNN1 --coords \\
          --lambda 0.01 --out results.h5ad --figures figs
    """  # noqa: D301 - click's \b (no rewrapping) must stay a real backspace
    started = time.perf_counter()
    lag_genes, fit_genes_list, plot_gene_list = _check_options(
        out=out,
        genes=genes,
        niche=niche,
        lag=lag,
        coords=coords,
        section_key=section_key,
        key_added=key_added,
        plot_genes=plot_genes,
        figures=figures,
    )
    adata = _read_input(input_path)
    _check_input(
        adata,
        input_path,
        layer=layer,
        columns={"--section-key": section_key, "--niche": niche},
        needs_coords=bool(niche or lag_genes or coords or figures),
        gene_options={
            "--genes": fit_genes_list,
            "--lag": lag_genes,
            "--plot-genes": plot_gene_list,
        },
    )
    from ._results import design_key

    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        design = _design(
            adata,
            section_key=section_key,
            niche=niche,
            lag=lag_genes,
            coords=coords,
            layer=layer,
            n_neighbors=n_neighbors,
        )
        fit_seconds = _fit(
            adata,
            input_path,
            fit_genes_list,
            design=design,
            distr=distr,
            alpha=alpha,
            reg_lambda=reg_lambda,
            n_lambdas=n_lambdas,
            cv=cv,
            theta=theta,
            random_seed=seed,
            layer=layer,
            key_added=key_added,
            store_fitted=store_fitted,
            progress=not quiet,
        )
        caught = [str(r.message) for r in records]
    n_genes = len(fit_genes_list) if fit_genes_list else adata.n_vars
    adata.obsm[design_key(key_added)] = design
    adata.uns[key_added]["cli"] = {
        "section_key": section_key or "",
        "niche": niche or "",
        "lag": lag_genes,
        "coords": coords,
        "n_neighbors": n_neighbors,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atomic_write(out, adata.write_h5ad)

    written: list[Path] = []
    if figures is not None:
        if plot_gene_list is None:
            plot_gene_list = _default_plot_genes(adata, key_added, N_GENE_FIT_FIGURES)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            written = _write_figures(
                adata, key_added, design, figures, top_genes, plot_gene_list, quiet
            )

    if not quiet:
        for message in dict.fromkeys(caught):
            _warn(message)
        click.echo(
            _summary(
                adata,
                key_added,
                n_genes=n_genes,
                design=design,
                distr=distr,
                alpha=alpha,
                reg_lambda=reg_lambda,
                cv=cv,
                seconds=fit_seconds,
                out=out,
                figures=written,
                top=top_effects,
            )
        )
        click.echo(f"  total time: {time.perf_counter() - started:.1f} s")
