"""The ``stglm`` command line: fit and test every gene of an h5ad file on spatial predictors.

``stglm fit data.h5ad --section-key list_ID --lag KRT15,CNN1 --coords --out results.h5ad``
builds a design from the requested predictors (:func:`stglm.spatial.build_design`), runs
:func:`stglm.fit_genes`, writes the AnnData with its results (atomically: a temporary file
in the same directory, renamed at the end) and, with ``--figures``, a coefficient heatmap
and a few genes' fits as PNGs. ``stglm test ... --reduced list_ID,x,y`` builds the same
design, runs :func:`stglm.test_genes` on the predictors the reduced model leaves out and
writes the table (CSV) and the h5ad the same way.

The front end's model defaults are the model count analysts fit (log link, size factors
from the total counts, θ per gene by Cox–Reid for the negative binomial, no clipping of
small coefficients); ``--link seed`` gives the seed's (spateo's) model and defaults. They
are resolved in one place, :class:`Model`.

Both commands read .h5ad files or .zarr directories. With ``--workers N`` (a local Dask
cluster of N processes) or ``--scheduler ADDRESS`` (a running one) the counts stay on disk,
read lazily (:func:`stglm.read_dask`), and the genes are fitted block by block as Dask tasks
(:mod:`stglm._distributed`); ``--out`` then holds the annotations and results without the
count matrices, which stay in the input.

Bad input (missing or non-h5ad file, unknown gene or column, no predictors, anything the
library rejects with its own input errors) ends with one line on stderr, ``Error: ...``, and
exit status 2; any other exception is a bug and shows as one, with its traceback.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._defaults import SEED_CLIP
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
#: Gene-fit figures draw a row per section (--section-key) up to this many sections.
MAX_FIGURE_SECTIONS = 8


class BadInput(click.ClickException):
    """Bad input (file, gene, column, option combination): one line on stderr, status 2.

    Raised by the command's own checks, and for the library's
    :class:`~stglm._errors.StglmInputError`; any other exception is a bug and propagates.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always a single line

    def show(self, file: Any = None) -> None:
        """Print ``Error: ...`` on a line of its own, after any progress bar's."""
        _end_progress_bars()
        super().show(file)


def _end_progress_bars() -> None:
    """Close the progress bars still drawn (an error stopped them): each ends its line.

    tqdm draws a bar with carriage returns and no newline until it is closed; a bar left
    open by an exception would otherwise have the error message written onto its line.
    """
    std = sys.modules.get("tqdm.std")  # only where a bar can have been drawn
    if std is None:
        return
    for bar in list(getattr(std.tqdm, "_instances", ())):
        bar.close()


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

    Run `stglm fit --help` or `stglm test --help` for the options of each command.
    """


# ---------------------------------------------------------------------------------------------
# helpers: names, files, atomic writes
# ---------------------------------------------------------------------------------------------
#: A name in double quotes (which may hold commas, spaces and '#'), a comment to the end of
#: the line, or a run of other characters.
_TOKEN = re.compile(r'"([^"]*)"|(#.*)|([^,\s"#]+)')


def _split_names(text: str) -> list[str]:
    """Names separated by commas and/or whitespace; '#' starts a comment in a file.

    A name in double quotes is taken whole, so gene names with commas or spaces can be given.
    """
    names: list[str] = []
    for quoted, comment, bare in _TOKEN.findall(text):
        if not comment and (quoted or bare):
            names.append(quoted or bare)
    return list(dict.fromkeys(names))  # drop repeats, keep order


def _gene_list(value: str | None, option: str) -> list[str] | None:
    """Parse a comma-separated list, or read the genes of an existing file."""
    if value is None:
        return None
    if os.path.isfile(value):
        try:
            # utf-8-sig: a byte-order mark (spreadsheet programs write one) is not a name
            names = _split_names(Path(value).read_text(encoding="utf-8-sig"))
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


def _read_input(path: Path, lazy: bool = False, chunk_size: int | None = None) -> Any:
    """Read the AnnData in ``path`` (.h5ad, or a .zarr directory).

    ``lazy``: with the matrices as dask arrays (:func:`stglm.read_dask`). Raises a BadInput
    naming what is wrong with the file.
    """
    import anndata as ad
    import h5py

    if not path.exists():
        raise BadInput(f"input file '{path}' does not exist.")
    if path.is_dir() and path.suffix != ".zarr":
        raise BadInput(f"input '{path}' is a directory, not an .h5ad file or a .zarr store.")
    if lazy or path.is_dir():
        return _read_other(path, lazy, chunk_size)
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


def _read_other(path: Path, lazy: bool, chunk_size: int | None) -> Any:
    """A .zarr store, or any input read lazily."""
    import anndata as ad

    from ._lazy_read import read_dask

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_dask(path, chunk_size) if lazy else ad.read_zarr(path)
    except StglmInputError as err:
        raise BadInput(f"cannot read '{path}': {err}") from None
    except Exception as err:  # noqa: BLE001 - any failure to parse is a bad input file
        raise BadInput(f"cannot read '{path}' as AnnData: {type(err).__name__}: {err}") from None


@contextmanager
def _dask_cluster(options: dict[str, Any]) -> Iterator[Any]:
    """The Dask client of --workers / --scheduler for the run (none without them)."""
    from ._distributed import cluster_client

    workers, scheduler = options["workers"], options["scheduler"]
    stack = ExitStack()
    try:
        client = stack.enter_context(cluster_client(workers, scheduler))
    except StglmInputError as err:
        raise BadInput(f"{'--workers' if workers else '--scheduler'}: {err}") from None
    with stack:
        yield client


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
    removed and the exception re-raised. SIGINT and SIGTERM before the rename end the program
    with status 128 + the signal's number and no new file (:class:`_Interrupts`), even when
    the exception their handler raises is swallowed (a finaliser that runs while h5py writes
    ignores it, and the write would go on to the end).

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
    tmp: Path | None = None
    with _Interrupts() as interrupts:
        try:
            with interrupts.deferred():  # the file exists only once ``tmp`` names it
                fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
                os.close(fd)
                tmp = Path(name)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
            write(tmp)
            interrupts.check()  # one whose exception was swallowed during the write
            with interrupts.deferred(then_raise=False):
                os.replace(tmp, path)
                tmp = None  # renamed: the new file is complete
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            if interrupts.received:
                signame = signal.Signals(interrupts.received[0]).name
                click.echo(f"stglm: interrupted ({signame}): '{path}' was not written.", err=True)
            raise
    interrupts.check()  # a signal during the rename: the file is complete, the run stops
    return path


class _Interrupts:
    """SIGINT and SIGTERM, while a file is written: remembered, and raised as SystemExit.

    Inside :meth:`deferred` a signal is only remembered, and raised when the block ends (a
    Python signal handler runs in the main thread between two bytecodes, whichever thread
    the operating system gave the signal to, so masking the signal would not hold it back).
    Exceptions that the handler raises inside a finaliser are ignored by Python; they are
    dropped from the "Exception ignored" report (the interrupt is handled here) and
    :meth:`check` raises them again. Outside the main thread (where Python delivers no
    signals) nothing is installed.
    """

    #: The signals that interrupt a write (Ctrl-C, and what `kill` and job schedulers send).
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: list[int] = []
        self._defer = False
        self._previous: dict[int, Any] = {}
        self._unraisable = sys.unraisablehook

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
            sys.unraisablehook = self._quiet
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = self._unraisable

    def _handle(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        if not self._defer:
            raise SystemExit(128 + signum)

    def _quiet(self, unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, SystemExit):
            self._unraisable(unraisable)

    def check(self) -> None:
        """Raise the SystemExit of a signal received so far."""
        if self.received:
            raise SystemExit(128 + self.received[0])

    @contextmanager
    def deferred(self, then_raise: bool = True) -> Iterator[None]:
        """Run a block that a signal must not cut in two; raise its signal afterwards."""
        self._defer = True
        try:
            yield
        finally:
            self._defer = False
        if then_raise:
            self.check()


#: Kernels that every fit runs: without a usable on-disk cache of them, numba compiles the
#: solvers' kernels for about 20 s before the first gene is fitted.
_SENTINEL_KERNELS = (
    ("._solvers._batched_kernels", "pair_products"),
    ("._solvers._batched_kernels", "newton_directions"),
    ("._solvers._family_kernels", "_nll_and_terms"),
    ("._solvers._cd_kernels", "_cd_gram"),
)


def kernels_cold() -> bool:
    """Whether numba has no usable on-disk cache of the solvers' kernels.

    True on the first run after an install or upgrade (or with an empty ``NUMBA_CACHE_DIR``):
    numba's index of each sentinel kernel is missing or was written for another version of
    its source. Reads a few small index files; False when it cannot tell (numba's cache
    internals are not public API: a change there silences the message, nothing else).
    """
    import importlib

    try:
        for module, name in _SENTINEL_KERNELS:
            kernel = getattr(importlib.import_module(module, __package__), name)
            if not kernel._cache._cache_file._load_index():  # {} when absent or stale
                return True
    except Exception:  # noqa: BLE001 - numba's private cache API may change: say nothing then
        return False
    return False


def _say_if_compiling(quiet: bool) -> None:
    """Say why the first run waits at 0 % (numba compiling), when it will."""
    if not quiet and kernels_cold():
        click.echo("stglm: compiling kernels (first run only; about 20 s)…", err=True)


def _warn(message: str) -> None:
    click.echo(f"stglm: warning: {' '.join(str(message).split())}", err=True)


def _safe_name(gene: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", gene)


# ---------------------------------------------------------------------------------------------
# checks of the options and the input, the design and the fit
# ---------------------------------------------------------------------------------------------
# the model: family, link, θ, size factors (the front end's defaults, resolved in one place)
# ---------------------------------------------------------------------------------------------
#: --link's values: "log" (μ = e^z) or "seed" (the seed's mean function of each family).
LINK_CHOICES = ("log", "seed")
#: --size-factors' values.
SIZE_FACTOR_CHOICES = ("total", "poscounts", "none")
#: --theta's words (a positive number fixes θ).
THETA_METHODS = ("ml", "cox-reid")
#: q-value threshold of the summaries.
FDR = 0.05


class _Theta(click.ParamType):
    """--theta: a positive number, or "ml" / "cox-reid"."""

    name = "theta"

    def convert(self, value: Any, param: Any, ctx: Any) -> float | str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            text = str(value).strip().lower()
            if text in THETA_METHODS:
                return text
            try:
                number = float(text)
            except ValueError:
                self.fail(f"{value!r} is not a positive number, 'ml' or 'cox-reid'.", param, ctx)
        if not (number > 0 and number < float("inf")):
            self.fail(
                f"{value!r} must be a positive, finite number, 'ml' or 'cox-reid'.", param, ctx
            )
        return number


class Model:
    """The model a command fits, with the front end's defaults filled in.

    The defaults are the library front ends' (:func:`stglm._defaults.front_end_model`, the
    one place that decides them for ``fit_genes``, ``test_genes`` and both commands):
    ``--link seed`` is ``link=None``. ``link`` None is the family's seed mean function;
    ``theta`` None for families without one, or (``theta_method`` None, for ``stglm
    test``) the library's choice for the test; ``size_factors`` None for none.
    """

    def __init__(
        self,
        distr: str,
        link: str | None,
        theta: float | str | None,
        size_factors: str | None,
        clip_coeffs: float | None = None,
        theta_method: str | None = "cox-reid",
        offset_given: bool = False,
    ) -> None:
        from ._defaults import AUTO, front_end_model
        from ._families import LINKS

        if link == "log" and "log" not in LINKS[distr]:
            raise BadInput(
                f"--link log: --distr {distr} has no log link (its mean function is "
                f"{'the identity' if distr == 'gaussian' else 'softplus'}); use --link seed, "
                "or --distr poisson, neg-binomial or gamma."
            )
        if distr != "neg-binomial" and theta is not None:
            raise BadInput(f"--theta applies to --distr neg-binomial only (not {distr}).")
        #: What the user asked for ("log", "seed"), or None (the default).
        self.link_option = link
        self.distr = distr
        resolved = front_end_model(
            distr,
            AUTO if link is None else (None if link == "seed" else link),
            theta,
            AUTO if size_factors is None else (None if size_factors == "none" else size_factors),
            clip_coeffs,
            offset_given=offset_given,
            theta_method=theta_method,
        )
        self.link = resolved.link
        self.theta = resolved.theta if distr == "neg-binomial" else None
        self.size_factors = resolved.size_factors
        self.clip_coeffs = resolved.clip_coeffs

    def library_options(self) -> dict[str, Any]:
        """The keywords of :func:`stglm.fit_genes` / :func:`stglm.test_genes` it sets."""
        return {
            "distr": self.distr,
            "link": self.link,
            "theta": 1.0 if self.theta is None else self.theta,
            "size_factors": self.size_factors,
        }

    def record(self) -> dict[str, Any]:
        """The command line's choices, for ``uns[key]['cli']``."""
        return {
            "link": self.link_option or "default",
            "size_factors": self.size_factors or "none",
        }


def _describe_model(model: Model, recorded: dict, theta: Any = None) -> str:
    """One line naming the family, link, offset, weights and θ of a fit or test.

    ``recorded`` is ``uns[key]['model']``; ``theta`` the genes' estimated θ (for a median).
    """
    import numpy as np

    parts = [recorded.get("family", model.distr), f"{recorded.get('link', '?')} link"]
    parts.append(f"offset: {recorded.get('offset', 'none')}")
    if recorded.get("sample_weight", "none") != "none":
        parts.append(f"sample weights: {recorded['sample_weight']}")
    method = recorded.get("theta") if model.theta is None else model.theta
    if model.distr == "neg-binomial":
        if method in THETA_METHODS:
            text = f"θ per gene by {'Cox–Reid' if method == 'cox-reid' else 'maximum likelihood'}"
            values = np.asarray([] if theta is None else theta, dtype=float)
            if np.isfinite(values).any():
                text += f" (median {np.nanmedian(values):.3g})"
            parts.append(text)
        else:
            parts.append(f"θ = {model.theta:g} (fixed)")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# checks of the options and the input, the design and the fit
# ---------------------------------------------------------------------------------------------
def _check_output(path: Path | None, option: str, suffix: str, source: Path, force: bool) -> None:
    """An output file's name: its suffix, writable, and not the input (unless --force)."""
    if path is None:
        return
    if path.suffix != suffix:
        raise BadInput(f"{option}: '{path}' must end in {suffix}.")
    if path.is_dir():
        raise BadInput(f"{option}: '{path}' is a directory; give a file name ending in {suffix}.")
    _check_writable(path, option)
    if force:
        return
    same = path.exists() and source.exists() and os.path.samefile(path, source)
    if same or path.resolve() == source.resolve():
        raise BadInput(
            f"{option}: '{path}' is the input file; give another name, or --force to replace it."
        )
    if path.exists():
        raise BadInput(f"{option}: '{path}' exists; give another name, or --force to replace it.")


def _check_options(
    *,
    input_path: Path,
    out: Path | None,
    force: bool,
    genes: str | None,
    niche: str | None,
    lag: tuple[str, ...],
    coords: bool,
    section_key: str | None,
    key_added: str,
    plot_genes: str | None = None,
    figures: Path | None = None,
) -> tuple[list[str], list[str] | None, list[str] | None]:
    """Check what can be checked before reading the input: (lag, fit and plot genes)."""
    _check_output(out, "--out", ".h5ad", input_path, force)
    lag_genes = _split_names(",".join(lag)) if lag else []
    if not (niche or lag_genes or coords or section_key):
        raise BadInput(
            "no predictors requested: give at least one of --niche, --lag, "
            "--coords or --section-key."
        )
    from ._results import check_key

    try:
        check_key(key_added, "--key-added")
    except StglmInputError as err:
        raise BadInput(str(err)) from None
    fit_genes_list = _gene_list(genes, "--genes")
    plot_gene_list = _gene_list(plot_genes, "--plot-genes")
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
    section = columns.get("--section-key")
    if section is not None:
        from ._anndata import get_section_labels

        try:
            get_section_labels(adata, section, "--section-key")
        except StglmInputError as err:
            raise BadInput(f"{err} ({source.name})") from None
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


def _check_numeric_column(
    adata: Any, column: str | None, option: str, source: Path, weights: bool = False
) -> None:
    """An obs column used as numbers (--offset, --sample-weight): present, numeric, finite."""
    import numpy as np
    import pandas as pd

    if column is None:
        return
    _check_obs_column(adata, column, option, source)
    values = adata.obs[column]
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise BadInput(f"{option}: adata.obs[{column!r}] must be numeric; it is {values.dtype}.")
    numbers = values.to_numpy(dtype=float, na_value=np.nan)
    if not np.all(np.isfinite(numbers)):
        raise BadInput(f"{option}: adata.obs[{column!r}] has NaN or infinite values.")
    if weights and (np.any(numbers < 0) or not numbers.sum() > 0):
        raise BadInput(
            f"{option}: adata.obs[{column!r}] must be non-negative with a positive sum "
            f"(min {numbers.min():g}, sum {numbers.sum():g})."
        )


def _check_model_input(
    adata: Any, source: Path, model: Model, *, layer: str | None, offset: str | None,
    sample_weight: str | None,
) -> None:  # fmt: skip
    """The obs columns and the counts that the model's offset and weights need."""
    import numpy as np
    import scipy.sparse as sp

    from ._anndata import is_lazy, layer_label, layer_matrix

    _check_numeric_column(adata, offset, "--offset", source)
    _check_numeric_column(adata, sample_weight, "--sample-weight", source, weights=True)
    matrix = layer_matrix(adata, layer)
    if model.size_factors is None or is_lazy(matrix):
        return  # lazy counts: each block checks its own, the size factors the totals
    where = f"cannot fit {source.name} ({layer_label(layer)})"
    what = f"size factors (--size-factors {model.size_factors})"
    smallest = float(matrix.min()) if matrix.size else 0.0
    if smallest < 0:
        raise BadInput(
            f"{where}: {what} need non-negative counts; the matrix has negative values "
            f"(min {smallest:g}). Use raw counts (--layer), or --size-factors none."
        )
    totals = np.asarray(matrix.sum(axis=1) if sp.issparse(matrix) else matrix.sum(axis=1))
    empty = int(np.sum(totals.reshape(-1) <= 0))
    if empty:
        raise BadInput(
            f"{where}: {what} need counts in every cell/spot; {empty} of {adata.n_obs} have "
            "none (filter them first, or give --size-factors none)."
        )


def _design(adata: Any, **options: Any) -> pd.DataFrame:
    """:func:`stglm.spatial.build_design` with the library's input errors as bad input."""
    from . import spatial

    try:
        return spatial.build_design(adata, **options)
    except StglmInputError as err:
        raise BadInput(f"cannot build the predictors: {err}") from None


def _design_columns(names: list[str], design: pd.DataFrame, option: str) -> list[str]:
    """Design columns named by ``names``; a name that is not a column stands for ``name_*``."""
    columns = [str(c) for c in design.columns]
    chosen: list[str] = []
    for name in names:
        group = [name] if name in columns else [c for c in columns if c.startswith(f"{name}_")]
        if not group:
            raise BadInput(
                f"{option}: {name!r} is not a predictor of the design (its columns: "
                f"{', '.join(columns)}; a prefix such as 'lag' or the --section-key column "
                "names all its columns)."
            )
        chosen.extend(group)
    return list(dict.fromkeys(chosen))


def _run(function: Callable[..., Any], what: str, *args: Any, **options: Any) -> tuple[Any, float]:
    """Call a library function; its input errors become bad input. (result, seconds)."""
    started = time.perf_counter()
    try:
        result = function(*args, **options)
    except StglmInputError as err:
        raise BadInput(f"{what}: {err}") from None
    return result, time.perf_counter() - started


def _fit(adata: Any, source: Path, genes: list[str] | None, **options: Any) -> float:
    """Run :func:`stglm.fit_genes` on ``adata``; return its time in seconds."""
    from ._anndata import layer_label
    from ._transcriptome import fit_genes

    where = f"cannot fit {source.name} ({layer_label(options.get('layer'))})"
    return _run_into_key(fit_genes, where, adata, genes, **options)[1]


def _run_into_key(function: Callable[..., Any], what: str, *args: Any, **options: Any):
    """:func:`_run` of a function writing under ``key_added``, its errors in the CLI's names."""
    try:
        return _run(function, what, *args, **options)
    except BadInput as err:  # the library's names of the options, as the command's
        message = err.message.replace("Pass overwrite=True", "Give --overwrite")
        message = message.replace("pass overwrite=True", "give --overwrite")
        message = message.replace("another key_added", "another --key-added")
        raise BadInput(message.replace("key_added=", "--key-added ")) from None


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------
def _count_line(status: pd.Series) -> str:
    from ._results import NOT_REQUESTED

    counts = status[status != NOT_REQUESTED].value_counts()
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _inference_line(adata: Any, key: str) -> str | None:
    """Genes at q ≤ FDR per unpenalised predictor, after ``--inference``."""
    import numpy as np

    from ._results import stat_key

    table = stat_key(key, "qvalue")
    if table not in adata.varm:
        return None
    q = np.asarray(adata.varm[table], dtype=float)
    predictors = [str(p) for p in adata.uns[key]["predictors"]]
    tested = [
        f"{p} {int(np.sum(q[:, j] <= FDR))}"
        for j, p in enumerate(predictors)
        if np.isfinite(q[:, j]).any()
    ]
    return f"  genes at q ≤ {FDR:g} (Wald, BH per predictor): {', '.join(tested)}"


def _summary(
    adata: Any,
    key: str,
    *,
    n_genes: int,
    design: pd.DataFrame,
    model: Model,
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
    theta = adata.var[r.var_key(key, "theta")][fitted]
    lam = (
        f"λ = {reg_lambda:g}"
        if reg_lambda is not None
        else f"λ by {cv}-fold CV (median {np.nanmedian(adata.var[r.var_key(key, 'lambda')]):.3g})"
    )
    mu = f", layers[{r.mu_layer(key)!r}]" if r.mu_layer(key) in adata.layers else ""
    inference = ", varm[" + "/".join(repr(r.stat_key(key, n)) for n in r.INFERENCE_FIELDS) + "]"
    lines = [
        f"stglm: fitted {n_genes} genes on {adata.n_obs} cells/spots with "
        f"{design.shape[1]} predictors ({model.distr}, α = {alpha:g}, {lam}) in {seconds:.1f} s",
        f"  model: {_describe_model(model, adata.uns[key].get('model', {}), theta)}",
        f"  converged: {int(adata.var[r.var_key(key, 'converged')][fitted].sum())} of "
        f"{int(fitted.sum())} fitted genes (status: {_count_line(status)})",
        f"  predictors: {', '.join(design.columns)}",
        f"  results: {out} (varm[{r.coef_key(key)!r}], var['{key}_*'], uns[{key!r}], "
        f"obsm[{r.design_key(key)!r}]{mu}"
        f"{inference if r.stat_key(key, 'se') in adata.varm else ''})",
    ]
    inference_counts = _inference_line(adata, key)
    if inference_counts:
        lines.append(inference_counts)
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
    section_key: str | None = None,
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
    # a row of panels per section, unless there are so many that each would be a thumbnail
    groupby = section_key
    if groupby is not None and adata.obs[groupby].nunique() > MAX_FIGURE_SECTIONS:
        groupby = None
    groups = None if groupby is None else adata.obs[groupby].to_numpy()
    shape, figsize = gene_fit_layout(np.asarray(adata.obsm["spatial"], dtype=float), groups=groups)
    for gene in genes:
        if status[gene] not in FITTED_STATUSES:
            if not quiet:
                _warn(f"no figure for {gene}: it has no fit (status {status[gene]!r}).")
            continue
        fig = Figure(figsize=figsize, layout="constrained")
        axes = fig.subplots(*shape)
        plot_gene_fit(adata, gene, key_added=key, axes=axes, design=design, groupby=groupby)
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
# options shared by the commands
# ---------------------------------------------------------------------------------------------
def _apply(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """One decorator applying ``decorators`` in the order listed (top to bottom in --help)."""

    def apply(function: Any) -> Any:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def _out_option(what: str, required: bool) -> Callable[[Any], Any]:
    return click.option(
        "-o",
        "--out",
        "out",
        required=required,
        metavar="FILE.h5ad",
        type=click.Path(path_type=Path),
        help=f"Results file (.h5ad): the input AnnData plus {what}. Written atomically "
        "(temporary file, then renamed), so a failed run leaves no partial file. Refused "
        "when the file exists (the input file included), unless --force.",
    )


def _value_option(
    name: str,
    metavar: str,
    help: str,
    kind: Any = None,
    default: Any = None,
    dest: str | None = None,
    **extra: Any,
) -> Callable[[Any], Any]:
    """An option taking a value (a number when ``kind`` is a click range).

    --help shows its default when it has one.
    """
    names = (name,) if dest is None else (name, dest)
    return click.option(
        *names, metavar=metavar, type=kind, default=default,
        show_default=default is not None, help=help, **extra,
    )  # fmt: skip


def _flag(*names: str, help: str) -> Callable[[Any], Any]:
    """An on/off switch, off by default."""
    return click.option(*names, is_flag=True, default=False, help=help)


def _switch(names: str, help: str) -> Callable[[Any], Any]:
    """A --name/--no-name pair, off by default (--help says so)."""
    return click.option(names, default=False, show_default=True, help=help)


_FORCE = _flag(
    "--force",
    help="Allow --out to replace an existing file, the input file included (the input is "
    "read completely first).",
)

_DESIGN_OPTIONS = _apply(
    _value_option(
        "--genes",
        "GENES|FILE",
        "Genes to model: comma-separated names, or a file with one name per line "
        "(commas/whitespace also separate; '#' starts a comment; a name in double quotes "
        "may hold commas or spaces, e.g. '\"HLA-A,B\",KRT15'). Default: all genes.",
    ),
    _value_option(
        "--niche",
        "OBS_COLUMN",
        "Predictors: share of each category of this categorical adata.obs column "
        "(e.g. cell type) among each cell's spatial neighbours (niche_<category>).",
    ),
    click.option(
        "--lag",
        "lag",
        metavar="GENES",
        multiple=True,
        help="Predictors: spatial lag of these genes, the neighbour mean of their "
        "log1p-normalised expression (lag_<gene>). Comma-separated; repeatable.",
    ),
    _switch(
        "--coords/--no-coords",
        "Predictors: standardised coordinates x, y from obsm['spatial'] "
        "(standardised within each section with --section-key).",
    ),
    _value_option(
        "--section-key",
        "OBS_COLUMN",
        "adata.obs column of the tissue section: neighbours are searched within a "
        "section, and a 0/1 predictor <column>_<section> is added for every section "
        "but the first.",
    ),
    _value_option(
        "--n-neighbors",
        "K",
        "Neighbours per cell in the spatial kNN graph used by --niche and --lag "
        "(6 = the ring around a Visium spot).",
        click.IntRange(min=1),
        6,
    ),
    _value_option(
        "--layer",
        "LAYER",
        "Model adata.layers[LAYER] instead of adata.X (raw counts for count families).",
    ),
)


#: --overwrite of the commands that write results under --key-added into the input.
_OVERWRITE = _flag(
    "--overwrite",
    help="Replace results that INPUT already holds under --key-added from another model "
    "or test. Without it, the same model (fit) or test (test: the same test, design, "
    "--reduced and options) adds its genes to them, and anything else is refused.",
)


def _model_options(default_distr: str) -> Callable[[Any], Any]:
    return _apply(
        click.option(
            "--distr",
            type=_LazyChoice(_distributions),
            default=default_distr,
            show_default=True,
            help="Response family.",
        ),
        click.option(
            "--link",
            type=click.Choice(LINK_CHOICES),
            default=None,
            help="Mean function. log: μ = exp(z), the model of R's glm, MASS::glm.nb, "
            "glmGamPoi and DESeq2 (coefficients are natural-log fold changes per unit of a "
            "predictor). seed: spateo's mean functions (Poisson linear above exp(2), "
            "softplus for neg-binomial and gamma) with its defaults (θ = 1, no size factors, "
            "coefficients below 0.01 clipped to 0). Default: log for poisson, neg-binomial "
            "and gamma; gaussian and softplus have only their own mean.",
        ),
        click.option(
            "--theta",
            type=_Theta(),
            metavar="FLOAT|ml|cox-reid",
            default=None,
            help="Size θ of the neg-binomial family: a number fixes it for every gene; ml "
            "(as MASS::glm.nb) or cox-reid (the Cox–Reid adjusted profile likelihood, as "
            "glmGamPoi, edgeR, DESeq2) estimate one θ per gene with its coefficients. "
            "Default: with the log link, cox-reid (stglm fit) or test_genes' choice for "
            "the test (stglm test: a true likelihood ratio needs ml); 1 with --link seed.",
        ),
        click.option(
            "--size-factors",
            type=click.Choice(SIZE_FACTOR_CHOICES),
            default=None,
            help="Offset log(s) for sequencing depth: total (s = a spot's total counts over "
            "their geometric mean, as edgeR and scanpy), poscounts (DESeq2's estimator for "
            "zero-heavy data) or none. Default: total for poisson and neg-binomial with the "
            "log link (without it coefficients mix depth with biology) unless --offset is "
            "given (it is then the whole offset); none otherwise.",
        ),
        _value_option(
            "--offset",
            "OBS_COLUMN",
            "A numeric adata.obs column added to every linear predictor (e.g. a log "
            "exposure). It is the whole offset unless --size-factors is given too (then "
            "the two are added).",
        ),
        _value_option(
            "--sample-weight",
            "OBS_COLUMN",
            "A numeric, non-negative adata.obs column of observation weights "
            "(weight 2 counts a spot twice).",
        ),
    )


_DASK_OPTIONS = _apply(
    _value_option(
        "--workers",
        "N",
        kind=click.IntRange(min=1),
        help="Fit the genes as Dask tasks on a local cluster of N worker processes, reading "
        "the counts lazily (needs stglm[dask]); --out then holds annotations and results "
        "without the count matrices.",
    ),
    _value_option(
        "--scheduler",
        "ADDRESS",
        help="As --workers, on the running Dask cluster whose scheduler is at ADDRESS (e.g. "
        "tcp://scheduler-host:8786); its workers must be able to read INPUT at the same path.",
    ),
    _value_option(
        "--chunk-size",
        "GENES",
        kind=click.IntRange(min=1),
        help="Genes per block (one Dask task): a worker's memory grows with it, about "
        "13 × 8 bytes × cells per gene. Default: 32 to 128, fewer where the memory budget "
        "(STGLM_MEMORY_BUDGET, else 4 GiB) is short.",
    ),
)

_QUIET = _flag(
    "-q", "--quiet", help="No progress bar, warnings or summary (errors are still shown)."
)

#: What every command that fits genes ends its options with.
_RUN_OPTIONS = _apply(_DASK_OPTIONS, _FORCE, _QUIET)


def _read_checked(
    options: dict[str, Any], model: Model, genes: dict[str, list[str] | None], figures: bool
) -> Any:
    """Read INPUT and check it against the design, model and gene options."""
    source = options["input_path"]
    lazy = options["workers"] is not None or options["scheduler"] is not None
    adata = _read_input(source, lazy, options["chunk_size"])
    _check_input(
        adata,
        source,
        layer=options["layer"],
        columns={"--section-key": options["section_key"], "--niche": options["niche"]},
        needs_coords=bool(options["niche"] or genes["--lag"] or options["coords"] or figures),
        gene_options=genes,
    )
    _check_model_input(
        adata, source, model, layer=options["layer"], offset=options["offset"],
        sample_weight=options["sample_weight"],
    )  # fmt: skip
    return adata


def _build_design(adata: Any, options: dict[str, Any], lag_genes: list[str]) -> pd.DataFrame:
    return _design(
        adata,
        section_key=options["section_key"],
        niche=options["niche"],
        lag=lag_genes,
        coords=options["coords"],
        layer=options["layer"],
        n_neighbors=options["n_neighbors"],
    )


def _cli_record(options: dict[str, Any], lag_genes: list[str], model: Model) -> dict[str, Any]:
    """The command line's choices, stored in ``uns[key]['cli']``."""
    return {
        "section_key": options["section_key"] or "",
        "niche": options["niche"] or "",
        "lag": lag_genes,
        "coords": options["coords"],
        "n_neighbors": options["n_neighbors"],
        "offset": options["offset"] or "",
        "sample_weight": options["sample_weight"] or "",
        **model.record(),
    }


def _write_h5ad(adata: Any, out: Path) -> None:
    """Write ``adata``; counts read lazily stay in the input: annotations and results only."""
    import anndata as ad

    from ._anndata import is_lazy

    if is_lazy(adata.X) or any(is_lazy(layer) for layer in adata.layers.values()):
        adata = ad.AnnData(
            obs=adata.obs, var=adata.var, obsm=adata.obsm, varm=adata.varm, obsp=adata.obsp,
            uns=adata.uns,
        )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atomic_write(out, adata.write_h5ad)


# ---------------------------------------------------------------------------------------------
# stglm fit
# ---------------------------------------------------------------------------------------------
@main.command("fit", short_help="Fit every gene of an .h5ad file on spatial predictors.")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@_out_option("the fit's results", required=True)
@_DESIGN_OPTIONS
@_model_options("poisson")
@_value_option(
    "--alpha", "FLOAT", "Elastic-net mixing: 1 lasso, 0 ridge.", click.FloatRange(0, 1), 0.5
)
@_value_option(
    "--lambda",
    "FLOAT",
    kind=click.FloatRange(min=0),
    dest="reg_lambda",
    help="Penalty strength λ (one value for all genes; 0: unpenalised). Omit it to choose "
    "each gene's λ by cross-validation along a path (slower).",
)
@_value_option(
    "--unpenalized",
    "NAMES",
    help="Predictors left unpenalised (penalty factor 0, glmnet's penalty.factor), e.g. "
    "the section dummies: design columns, comma-separated; a name that is not a column "
    "stands for all columns NAME_* (the --section-key column for its dummies, 'lag', "
    "'niche').",
)
@_switch(
    "--inference/--no-inference",
    help="Also store standard errors, Wald p-values and BH q-values (varm['<key>_se', "
    "'_pvalue', '_qvalue']) of the unpenalised coefficients: needs --lambda 0 or "
    "--unpenalized (penalised estimates have no valid p-values; see `stglm test`).",
)
@_value_option(
    "--clip-coeffs",
    "FLOAT",
    kind=click.FloatRange(min=0),
    help="Set coefficients with |coef| below this to 0 (the seed's clip_coeffs). "
    f"Default: 0, or {SEED_CLIP:g} with --link seed.",
)
@_value_option(
    "--cv", "K", "Folds of the cross-validation (without --lambda).", click.IntRange(min=2), 5
)
@_value_option(
    "--n-lambdas",
    "N",
    "Values on each gene's λ path (without --lambda).",
    click.IntRange(min=1),
    25,
)
@_value_option(
    "--lambda-min-ratio",
    "R",
    kind=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    help="Smallest λ of each gene's path as a fraction of its λ_max (without --lambda). "
    "Default: glmnet's, 1e-4 (1e-2 with fewer cells than predictors), and a gene whose "
    "CV choice is its path's end while its held-out score still improves there is "
    "cross-validated again on its path extended by two decades. A number is used as "
    "given; lower it when genes are reported choosing the path's end.",
)
@_OVERWRITE
@_value_option(
    "--seed",
    "INT",
    "Random seed of the cross-validation folds.",
    click.IntRange(0, 2**32 - 1),
    888,
)
@_value_option(
    "--key-added",
    "KEY",
    "Prefix of the result keys in the output (varm['<key>_coef'], ...).",
    default="stglm",
)
@_switch(
    "--store-fitted/--no-store-fitted", "Also store the fitted means as the dense layer '<key>_mu'."
)
@_value_option(
    "--figures",
    "DIR",
    kind=click.Path(file_okay=False, path_type=Path),
    help="Folder for PNG figures: coef_heatmap.png and gene_fit_<gene>.png (observed "
    "counts and fitted means; the means of all genes are held in memory for them).",
)
@_value_option(
    "--top-genes",
    "N",
    "Genes in the coefficient heatmap (largest max |coef|).",
    click.IntRange(min=1),
    40,
)
@_value_option(
    "--plot-genes",
    "GENES",
    help="Genes drawn as gene_fit_<gene>.png (comma-separated). Default: the "
    f"strongest gene of each predictor, {N_GENE_FIT_FIGURES} at most.",
)
@_value_option(
    "--top-effects", "N", "Genes listed per predictor in the summary.", click.IntRange(min=1), 5
)
@_RUN_OPTIONS
def fit(**options: Any) -> None:
    """Fit a penalised GLM of every gene in INPUT (.h5ad) on spatial predictors.

    Predictors come from --section-key, --niche, --lag and --coords (at least one). The
    model is, by default, the one count analysts fit: a log link, size factors from the
    total counts and (neg-binomial) θ per gene by Cox–Reid; --link seed gives spateo's.
    Results go to --out: varm['<key>_coef'] (genes × predictors), var['<key>_intercept',
    '_lambda', '_score', '_converged', '_kkt', '_n_iter', '_theta', '_theta_status',
    '_status'], uns['<key>'] (with 'model': what was fitted) and the design in
    obsm['<key>_design'].

    \b
    Example:
      stglm fit data.h5ad --section-key list_ID --lag KRT15,CNN1 --coords \\
          --lambda 0.01 --out results.h5ad --figures figs
    """  # noqa: D301 - click's \b (no rewrapping) must stay a real backspace
    started = time.perf_counter()
    o = options
    model = Model(
        o["distr"], o["link"], o["theta"], o["size_factors"], o["clip_coeffs"],
        offset_given=o["offset"] is not None,
    )  # fmt: skip
    unpenalized = _split_names(o["unpenalized"]) if o["unpenalized"] else []
    if o["inference"] and o["reg_lambda"] != 0 and not unpenalized:
        raise BadInput(
            "--inference needs unpenalised coefficients: --lambda 0, or --unpenalized NAMES "
            "for the predictors to test (penalised estimates have no valid p-values; "
            "`stglm test` tests spatial terms of unpenalised models)."
        )
    lag_genes, fit_genes_list, plot_gene_list = _check_options(
        input_path=o["input_path"], out=o["out"], force=o["force"], genes=o["genes"],
        niche=o["niche"], lag=o["lag"], coords=o["coords"], section_key=o["section_key"],
        key_added=o["key_added"], plot_genes=o["plot_genes"], figures=o["figures"],
    )  # fmt: skip
    genes = {"--genes": fit_genes_list, "--lag": lag_genes, "--plot-genes": plot_gene_list}
    _check_dask_options(o)
    with _dask_cluster(o):
        _fit_command(o, model, unpenalized, genes, started)


def _check_dask_options(o: dict[str, Any]) -> None:
    """--workers, --scheduler and what they exclude."""
    if o["workers"] is not None and o["scheduler"] is not None:
        raise BadInput("give --workers N (a local cluster) or --scheduler ADDRESS, not both.")
    lazy = o["workers"] is not None or o["scheduler"] is not None
    for option in ("figures", "store_fitted"):
        if lazy and o.get(option):
            raise BadInput(
                f"--{option.replace('_', '-')} stores the fitted means of every gene (a dense "
                "cells × genes matrix): not with --workers or --scheduler."
            )


def _fit_command(o, model, unpenalized, genes, started) -> None:
    """`stglm fit` after the options' checks (inside the Dask cluster, if any)."""
    lag_genes, fit_genes_list = genes["--lag"], genes["--genes"]
    plot_gene_list = genes["--plot-genes"]
    adata = _read_checked(o, model, genes, o["figures"] is not None)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        design = _build_design(adata, o, lag_genes)
        _say_if_compiling(o["quiet"])
        factor = None
        if unpenalized:
            free = _design_columns(unpenalized, design, "--unpenalized")
            factor = [0.0 if str(c) in free else 1.0 for c in design.columns]
        ratio = o["lambda_min_ratio"]
        path_end = {} if ratio is None else {"lambda_min_ratio": ratio}
        fit_seconds = _fit(
            adata, o["input_path"], fit_genes_list, design=design, alpha=o["alpha"],
            reg_lambda=o["reg_lambda"], n_lambdas=o["n_lambdas"], cv=o["cv"],
            **path_end,
            random_seed=o["seed"], layer=o["layer"], key_added=o["key_added"],
            store_fitted=o["store_fitted"] or o["figures"] is not None,
            progress=not o["quiet"], chunk_size=o["chunk_size"],
            clip_coeffs=model.clip_coeffs, offset=o["offset"],
            sample_weight=o["sample_weight"], penalty_factor=factor,
            inference=o["inference"], overwrite=o["overwrite"], **model.library_options(),
        )  # fmt: skip
        caught = [str(r.message) for r in records]
    _finish_fit(adata, o, model, design, lag_genes, plot_gene_list, fit_seconds, caught, started)


def _finish_fit(adata, o, model, design, lag_genes, plot_genes, seconds, caught, started) -> None:
    """Store the design and the CLI's choices, write the output and figures, summarise.

    With --figures the fit stored its fitted means (offset, link and each gene's θ
    included) for the gene-fit maps; they are written only with --store-fitted.
    """
    from ._results import design_key, mu_layer

    key = o["key_added"]
    n_genes = len(adata.uns[key]["genes"])
    adata.obsm[design_key(key)] = design
    record = _cli_record(o, lag_genes, model)
    record["unpenalized"] = _split_names(o["unpenalized"]) if o["unpenalized"] else []
    adata.uns[key]["cli"] = record
    mu = None if o["store_fitted"] else adata.layers.pop(mu_layer(key), None)
    _write_h5ad(adata, o["out"])

    written: list[Path] = []
    if o["figures"] is not None:
        if plot_genes is None:
            plot_genes = _default_plot_genes(adata, key, N_GENE_FIT_FIGURES)
        if mu is not None:
            adata.layers[mu_layer(key)] = mu
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            written = _write_figures(
                adata, key, design, o["figures"], o["top_genes"], plot_genes, o["quiet"],
                o["section_key"],
            )  # fmt: skip
        if mu is not None:
            del adata.layers[mu_layer(key)]
    if o["quiet"]:
        return
    for message in dict.fromkeys(caught):
        _warn(message)
    click.echo(
        _summary(
            adata,
            key,
            n_genes=n_genes,
            design=design,
            model=model,
            alpha=o["alpha"],
            reg_lambda=o["reg_lambda"],
            cv=o["cv"],
            seconds=seconds,
            out=o["out"],
            figures=written,
            top=o["top_effects"],
        )  # fmt: skip
    )
    click.echo(f"  total time: {time.perf_counter() - started:.1f} s")


# ---------------------------------------------------------------------------------------------
# stglm test
# ---------------------------------------------------------------------------------------------
@main.command("test", short_help="Test spatial terms of every gene (LRT or Wald, BH q-values).")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@_value_option(
    "--reduced",
    "NAMES",
    required=True,
    help="Predictors the reduced model keeps; the design's other predictors are tested. "
    "Design columns, comma-separated; a name that is not a column stands for all columns "
    "NAME_* (the --section-key column for its dummies). '' keeps only the intercept.",
)
@_value_option(
    "--test",
    "lrt|wald|ql",
    default="lrt",
    dest="test_name",
    help="lrt: likelihood-ratio test of the full against the reduced model (χ², "
    "θ re-estimated under each, as MASS's anova.negbin); wald: z (or t) test of the one "
    "predictor --reduced leaves out; ql: glmGamPoi's quasi-likelihood F test "
    "(neg-binomial; where stglm.test_genes offers it).",
)
@_out_option("the test's results (var['<key>_stat', '_df', '_pvalue', '_qvalue', ...])", False)
@_value_option(
    "--table",
    "FILE.csv",
    kind=click.Path(path_type=Path),
    help="Results table (CSV, one row per gene: stat, df, pvalue, qvalue, θ, status), "
    "written atomically.",
)
@_DESIGN_OPTIONS
@_model_options("neg-binomial")
@_value_option(
    "--key-added",
    "KEY",
    "Prefix of the result columns in the output's var ('<key>_pvalue', ...).",
    default="stglm_test",
)
@_OVERWRITE
@_value_option(
    "--top-genes",
    "N",
    "Genes listed in the summary, smallest q-value first.",
    click.IntRange(min=0),
    10,
)
@_RUN_OPTIONS
def test(**options: Any) -> None:
    """Test, for every gene in INPUT (.h5ad), the spatial predictors a reduced model leaves out.

    The design is built from --section-key, --niche, --lag and --coords exactly as by
    `stglm fit`; both models are fitted unpenalised (stglm.test_genes), by default as count
    analysts fit them: neg-binomial, log link, θ per gene by Cox–Reid, size factors from the
    total counts. p-values are adjusted by Benjamini–Hochberg over the testable genes. Give
    --out (the input plus the results), --table (CSV) or both.

    \b
    Example: do lags of KRT15 and CNN1 explain expression beyond section and position?
      stglm test data.h5ad --section-key list_ID --lag KRT15,CNN1 --coords \\
          --reduced list_ID,x,y --out tests.h5ad --table tests.csv
    """  # noqa: D301 - click's \b (no rewrapping) must stay a real backspace
    started = time.perf_counter()
    o = options
    if o["out"] is None and o["table"] is None:
        raise BadInput("give --out FILE.h5ad, --table FILE.csv or both.")
    model = Model(
        o["distr"], o["link"], o["theta"], o["size_factors"], theta_method=None,
        offset_given=o["offset"] is not None,
    )  # fmt: skip
    _check_output(o["table"], "--table", ".csv", o["input_path"], o["force"])
    lag_genes, genes, _ = _check_options(
        input_path=o["input_path"], out=o["out"], force=o["force"], genes=o["genes"],
        niche=o["niche"], lag=o["lag"], coords=o["coords"], section_key=o["section_key"],
        key_added=o["key_added"],
    )  # fmt: skip
    _check_dask_options(o)
    with _dask_cluster(o):
        _test_command(o, model, genes, lag_genes, started)


def _test_command(o, model, genes, lag_genes, started) -> None:
    """`stglm test` after the options' checks (inside the Dask cluster, if any)."""
    from ._anndata import layer_label
    from ._gene_tests import test_genes

    adata = _read_checked(o, model, {"--genes": genes, "--lag": lag_genes}, False)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        design = _build_design(adata, o, lag_genes)
        _say_if_compiling(o["quiet"])
        reduced = _design_columns(_split_names(o["reduced"]), design, "--reduced")
        table, seconds = _run_into_key(
            test_genes,
            f"cannot test {o['input_path'].name} ({layer_label(o['layer'])})",
            adata, genes, design=design, reduced=reduced, test=o["test_name"],
            offset=o["offset"], sample_weight=o["sample_weight"], layer=o["layer"],
            key_added=o["key_added"], progress=not o["quiet"], chunk_size=o["chunk_size"],
            overwrite=o["overwrite"], **{**model.library_options(), "theta": model.theta},
        )  # fmt: skip
        caught = [str(r.message) for r in records]
    _finish_test(adata, o, model, design, lag_genes, table, seconds, caught, started)


def _finish_test(adata, o, model, design, lag_genes, table, seconds, caught, started) -> None:
    """Store the design and the CLI's choices, write the outputs, summarise."""
    from ._results import design_key

    key = o["key_added"]
    adata.obsm[design_key(key)] = design
    adata.uns[key]["cli"] = {**_cli_record(o, lag_genes, model), "reduced": o["reduced"]}
    written = []
    if o["table"] is not None:
        atomic_write(o["table"], lambda p: table.to_csv(p, index_label="gene"))
        written.append(f"table: {o['table']}")
    if o["out"] is not None:
        _write_h5ad(adata, o["out"])
        written.append(f"{o['out']} (var['{key}_*'], uns[{key!r}], obsm[{design_key(key)!r}])")
    if o["quiet"]:
        return
    for message in dict.fromkeys(caught):
        _warn(message)
    click.echo(_test_summary(adata, key, model, design, table, seconds, written, o["top_genes"]))
    click.echo(f"  total time: {time.perf_counter() - started:.1f} s")


#: A test's name in the summary.
_TEST_NAMES = {"lrt": "likelihood-ratio test", "wald": "Wald test", "ql": "quasi-likelihood F-test"}


def _test_summary(adata, key, model, design, table, seconds, written, top) -> str:
    import numpy as np

    info = adata.uns[key]
    tested, kept = [str(c) for c in info["tested"]], [str(c) for c in info["reduced"]]
    name = _TEST_NAMES.get(str(info["test"]), f"{info['test']} test")
    status = table["status"].astype(str)
    q = table["qvalue"].to_numpy(dtype=float)
    n_testable = int(np.isfinite(q).sum())
    lines = [
        f"stglm: tested {len(table)} genes on {adata.n_obs} cells/spots in {seconds:.1f} s: "
        f"{name} of {', '.join(tested)} ({len(tested)} df) against a reduced model of "
        f"{', '.join(kept) or 'the intercept only'}",
        f"  model: {_describe_model(model, info.get('model', {}), table.get('theta_full'))}",
        f"  status: {_count_line(status)}",
        f"  results: {'; '.join(written)}",
        f"  {int(np.sum(q <= FDR))} of {n_testable} testable genes at q ≤ {FDR:g} "
        "(Benjamini–Hochberg)",
    ]
    if top and n_testable:
        lines.append(f"Top {min(top, n_testable)} genes by q-value:")
        lines.extend(_top_table(table, top))
    return "\n".join(lines)


#: Per-gene columns of a test shown after the q-value (when present), with their headers.
_TOP_COLUMNS = (
    ("theta_full", "θ full"),
    ("theta_reduced", "θ reduced"),
    ("theta_trended", "θ trended"),
    ("ql_dispersion", "QL disp."),
)


def _top_table(table: pd.DataFrame, top: int) -> list[str]:
    """The ``top`` genes with the smallest q-values, as aligned text lines."""
    import numpy as np

    best = table[np.isfinite(table["qvalue"].to_numpy(dtype=float))]
    best = best.iloc[np.argsort(best["qvalue"].to_numpy(), kind="stable")[:top]]
    width = max(4, *(len(str(g)) for g in best.index))
    extra = [
        (column, header)
        for column, header in _TOP_COLUMNS
        if column in best.columns and np.isfinite(best[column].to_numpy(dtype=float)).any()
    ]
    header = f"  {'gene':<{width}}  {'stat':>9}  {'df':>3}  {'p-value':>9}  {'q-value':>9}"
    header += "".join(f"  {name:>9}" for _, name in extra)
    lines = [header]
    for gene, row in best.iterrows():
        line = (
            f"  {gene:<{width}}  {row['stat']:>9.2f}  {row['df']:>3g}  "
            f"{row['pvalue']:>9.2e}  {row['qvalue']:>9.2e}"
        )
        line += "".join(f"  {row[column]:>9.3g}" for column, _ in extra)
        lines.append(line)
    return lines


# ---------------------------------------------------------------------------------------------
# stglm convert: counts rewritten gene-major for the Dask path (docs/dask.md)
# ---------------------------------------------------------------------------------------------
@main.command("convert")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=None,
    help="Genes per chunk of a dense matrix (default: fit_genes' block size for all genes); "
    "CSC matrices are chunked when read.",
)
@click.option(
    "--max-memory",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="MiB of one group of columns while converting a cell-major matrix (each group is "
    "one pass over SOURCE).",
)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def convert(source: Path, out: Path, chunk_size: int | None, max_memory: int, force: bool):
    """Rewrite SOURCE (.h5ad or .zarr) as the .zarr store OUT with gene-major counts.

    X and every layer become CSC (dense ones: chunked by genes), so that `stglm fit` and
    `stglm test` with --workers or --scheduler read each block's columns only; a cell-major
    (CSR) SOURCE is read lazily and never held whole. Needs stglm[dask].
    """
    from ._gene_major import write_gene_major

    if out.suffix != ".zarr":
        raise BadInput(f"OUT: '{out}' must end in .zarr.")
    if out.exists() and (not force or out.resolve() == source.resolve()):
        raise BadInput(f"OUT: '{out}' exists; give another name, or --force to replace it.")
    adata = _read_input(source, lazy=True)
    try:
        write_gene_major(
            adata, out, chunk_size=chunk_size, max_memory=max_memory * 2**20, overwrite=force
        )
    except StglmInputError as err:
        raise BadInput(str(err)) from None
    layers = f" and {len(adata.layers)} layer(s)" if adata.layers else ""
    click.echo(f"{out}: X{layers} gene-major, {adata.n_obs:,} cells × {adata.n_vars:,} genes")
