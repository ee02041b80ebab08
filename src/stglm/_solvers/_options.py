"""The Newton solvers' routes and memory budgets: one frozen set of options, passed in.

Which inner solver minimises a Newton model, whether a smooth problem starts with L-BFGS,
how the batched path takes its first step and how much memory the pair products may use
change how fast a fit is reached, never which optimum (to the KKT tolerance). The defaults
are what was measured best on this project's benchmarks; a caller (a test that must take
a route, a benchmark) passes other values instead of changing module constants.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from .._errors import InputError

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_OPTIONS",
    "MEMORY_BUDGET_ENV",
    "NewtonOptions",
    "available_memory",
    "memory_budget",
    "newton_options",
    "warn_if_short",
]

#: Environment variable that sets the working-memory budget of batched fits, in bytes (a
#: suffix K, M or G multiplies by 2¹⁰, 2²⁰, 2³⁰), in place of ``DEFAULT_MEMORY_BUDGET``.
MEMORY_BUDGET_ENV = "STGLM_MEMORY_BUDGET"
#: Working memory of one batched fit unless told otherwise. A constant, not a share of the
#: memory free at the moment: the budget decides the chunks of genes and the pair products'
#: precision, which change results in the last digits (float32 pair products ≈ 1e-10 in the
#: coefficients, chunking ≈ 1e-15), so the same call on the same data must decide the same
#: on every machine and at every moment. 4 GiB is what a quarter of the benchmark VM's free
#: memory gave (10⁶ cells: 32 genes per chunk, p = 30's pair products whole in float32).
DEFAULT_MEMORY_BUDGET = 4 * 2**30
#: The pair products' precisions (see ``NewtonOptions.pair_dtype``).
PAIR_DTYPES = ("auto", "float64", "float32")


@dataclass(frozen=True)
class NewtonOptions:
    """Routes and budgets of the Newton solvers (:mod:`stglm._solvers.newton_cd`, ``batched``).

    Attributes
    ----------
    gram_max_features : int, default=1000
        Above this many features a single problem's Hessian is never formed: its Newton model
        is minimised by residual-update coordinate descent, or by conjugate gradients for a
        ridge model (no L1 term).
    lbfgs_min_size : float, default=50_000
        Smallest design (n·p) on which a smooth problem (λα = 0, not gaussian) starts with
        L-BFGS: below it each iteration's fixed cost outweighs its passes over X, and
        Newton's fewer iterations win (measured, 1 BLAS thread). ``np.inf``: never; 0: always.
    stale_first : bool, default=True
        The batched path's first Newton step at each λ uses the previous λ's last Hessian:
        a product saved per λ (GLMCV 2,000 × 20: 19.0 → 16.3 ms; Visium fit_genes CV 7.3 →
        5.5 s) for a few more iterations (299 → 305). Any positive definite matrix gives a
        descent direction, and the stopping rule (KKT) does not depend on it.
    pair_bytes_budget : int, optional
        Largest pair-product matrix Z of a shared design kept whole in memory; beyond it
        each Hessian builds Z a cache-sized tile at a time into one buffer, fused with the
        product. None (the default): half of :func:`memory_budget`.
    pair_dtype : {"auto", "float64", "float32"}, default="auto"
        The pair products' precision. "auto": float64 when Z fits the budget, float32 when
        only that fits (half the bytes, and single-precision products ≈ 2.3× faster:
        Hessians to ≈ 1e-6, which changes Newton's path, not its KKT-checked optimum),
        else tiled float64.
    batch_bytes_budget : int, default=256 MiB
        Memory a batch of GLMCV's folds may take (its working arrays and its pair
        products): above it the folds are solved one by one.
    memory_budget : int, optional
        Bytes of working memory a whole-transcriptome fit may take (pair products and each
        chunk's arrays, over all its threads); None: :func:`memory_budget` (the
        environment's ``STGLM_MEMORY_BUDGET``, else :data:`DEFAULT_MEMORY_BUDGET`).
    batched_max_features : int, default=64
        Dense designs with at most this many predictors solve all of GLMCV's folds (and the
        refit) in one batch.
    """

    gram_max_features: int = 1000
    lbfgs_min_size: float = 50_000
    stale_first: bool = True
    pair_bytes_budget: int | None = None
    pair_dtype: str = "auto"
    batched_max_features: int = 64
    batch_bytes_budget: int = 256 * 2**20
    memory_budget: int | None = None

    def __post_init__(self):
        if self.pair_dtype not in PAIR_DTYPES:
            raise InputError(f"pair_dtype must be one of {PAIR_DTYPES}; got {self.pair_dtype!r}.")

    def memory(self) -> int:
        """The working-memory budget in bytes (``memory_budget``, or the machine's default)."""
        return memory_budget() if self.memory_budget is None else int(self.memory_budget)

    def pair_budget(self) -> int:
        """The largest pair-product matrix kept whole, in bytes."""
        return self.memory() // 2 if self.pair_bytes_budget is None else self.pair_bytes_budget


#: The options every solver uses unless given others.
DEFAULT_OPTIONS = NewtonOptions()


def newton_options(options: dict | None) -> NewtonOptions:
    """The :class:`NewtonOptions` of a solver's options dict (key ``"newton"``), or the defaults."""
    found = None if options is None else options.get("newton")
    return DEFAULT_OPTIONS if found is None else found


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now: Linux's MemAvailable.

    Elsewhere the free physical pages (``os.sysconf``), or None where neither can say. Only
    for warnings: no decision of a fit depends on it (see ``DEFAULT_MEMORY_BUDGET``).
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def _parse_bytes(text: str) -> int:
    """Bytes from "123", "512M", "4G" (binary multiples); ValueError naming the variable."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    value = text.strip().upper().removesuffix("B")
    factor = units.get(value[-1:], 1)
    if value[-1:] in units:
        value = value[:-1]
    try:
        out = int(float(value) * factor)
    except ValueError:
        out = 0
    if out <= 0:
        raise InputError(
            f"{MEMORY_BUDGET_ENV} must be a positive number of bytes (e.g. 2000000000, 512M "
            f"or 4G); got {text!r}."
        )
    return out


def memory_budget() -> int:
    """Working memory a batched fit may take by default, in bytes.

    ``STGLM_MEMORY_BUDGET`` when set, else :data:`DEFAULT_MEMORY_BUDGET` — never the
    machine's free memory, so that the decisions it sizes (chunks, the pair products'
    precision) and with them the results are the same everywhere.
    """
    env = os.environ.get(MEMORY_BUDGET_ENV)
    return _parse_bytes(env) if env else DEFAULT_MEMORY_BUDGET


def warn_if_short(needed: int) -> None:
    """Warn when ``needed`` bytes of planned working memory exceed the memory available now.

    Only a warning: the plan never depends on the free memory (see
    :data:`DEFAULT_MEMORY_BUDGET`); it says how to make the plan smaller.
    """
    available = available_memory()
    if available is not None and needed > available:
        warnings.warn(
            f"this fit plans {needed / 2**30:.1f} GiB of working memory (the memory budget: "
            f"{MEMORY_BUDGET_ENV}, else {DEFAULT_MEMORY_BUDGET / 2**30:.0f} GiB) but "
            f"{available / 2**30:.1f} GiB are available now; set {MEMORY_BUDGET_ENV} lower "
            "(e.g. 1G) or pass a smaller chunk_size.",
            UserWarning,
            stacklevel=3,
        )
