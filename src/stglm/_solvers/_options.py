"""The Newton solvers' routes and memory budgets: one frozen set of options, passed in.

Which inner solver minimises a Newton model, whether a smooth problem starts with L-BFGS,
how the batched path takes its first step and how much memory the pair products may use
change how fast a fit is reached, never which optimum (to the KKT tolerance). The defaults
are what was measured best on this project's benchmarks; a caller (a test that must take
a route, a benchmark) passes other values instead of changing module constants.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .._errors import InputError

__all__ = [
    "DEFAULT_OPTIONS",
    "MEMORY_BUDGET_ENV",
    "NewtonOptions",
    "available_memory",
    "memory_budget",
    "newton_options",
]

#: Environment variable that sets the working-memory budget of batched fits, in bytes (a
#: suffix K, M or G multiplies by 2¹⁰, 2²⁰, 2³⁰): it overrides the share of the machine's
#: available memory that :func:`memory_budget` takes otherwise.
MEMORY_BUDGET_ENV = "STGLM_MEMORY_BUDGET"
#: Share of the memory available at the start of a fit that its working arrays may take.
MEMORY_SHARE = 0.25
#: Least and most working memory of one batched fit by default (an explicit budget is kept).
MEMORY_BUDGET_MIN, MEMORY_BUDGET_MAX = 256 * 2**20, 16 * 2**30
#: The pair products' precisions (see ``NewtonOptions.pair_dtype``).
PAIR_DTYPES = ("auto", "float64", "float32")
#: Assumed available memory where /proc/meminfo and sysconf cannot say.
MEMORY_FALLBACK = 4 * 2**30


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
        chunk's arrays, over all its threads); None: :func:`memory_budget`'s default.
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


def available_memory() -> int:
    """Bytes of memory available to a new allocation now: Linux's MemAvailable.

    Elsewhere the free physical pages (``os.sysconf``), or ``MEMORY_FALLBACK``.
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
        return MEMORY_FALLBACK


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

    ``STGLM_MEMORY_BUDGET`` when set; else a quarter of the memory available when the fit
    starts (:func:`available_memory`), within 256 MiB–16 GiB: the rest stays for the
    input, the results and other processes.
    """
    env = os.environ.get(MEMORY_BUDGET_ENV)
    if env:
        return _parse_bytes(env)
    share = int(MEMORY_SHARE * available_memory())
    return min(max(share, MEMORY_BUDGET_MIN), MEMORY_BUDGET_MAX)
