"""The rows of a batch still being solved: one object for every per-row array of a solve.

A batched solve works on G rows at once (genes sharing a design; a single problem is a
batch of one). Rows leave as they converge, stall or run out of iterations; then their
results are written out and every per-row array is shrunk to the rows that stay — by one
index, here, instead of a dozen arrays reindexed by hand.

Two kinds of per-row arrays are kept:

- small ones (coefficients, λ, tolerances, J, counters, Hessians: shape (k, ...)),
  reindexed when rows leave;
- gene-major work buffers (k, n), one contiguous row per response, compacted in place:
  the rows that leave are overwritten by the last rows that stay, so only those move (in
  the sample-major layout, compaction and fresh temporaries cost more than the arithmetic).
  *Scratch* buffers (the trial point's) are only cut to the rows that stay.
"""

from __future__ import annotations

import numpy as np

from ._batched_kernels import copy_rows

__all__ = ["ActiveSet"]


class ActiveSet:
    """The k rows, of ``n_rows``, still being solved.

    Register arrays with :meth:`add` (small, reindexed), :meth:`add_buffers` (moved in
    place) and :meth:`add_scratch` (cut only); they are then attributes of this object, and
    their first axis is always the active rows. A registered name may be rebound (a new
    array each iteration; double buffers swapped): the object under the name is what counts.
    :meth:`output` and :meth:`output_buffers` say where a leaving row's values go (indexed
    by its original row, ``genes``).

    Parameters
    ----------
    n_rows : int
        The batch's number of rows (genes, or 1 for a single problem).
    """

    def __init__(self, n_rows: int):
        self.n_rows = n_rows
        self.k = n_rows
        #: The original row of each active row.
        self.genes = np.arange(n_rows)
        self._small: list[str] = ["genes"]
        self._moved: list[str] = []
        self._scratch: list[str] = []
        self._outputs: list[tuple[str, np.ndarray]] = []
        self._buffer_outputs: list[tuple[tuple[str, ...], tuple[np.ndarray, ...]]] = []

    # -- registration --------------------------------------------------------------------------
    def add(self, **arrays) -> None:
        """Small per-row arrays (first axis the rows; None for one not kept), reindexed."""
        self._register(self._small, arrays)

    def add_buffers(self, **arrays) -> None:
        """Gene-major (k, n) C-contiguous buffers whose rows move with their genes (None: none)."""
        for name, value in arrays.items():
            setattr(self, name, value)
            if value is not None:
                self._moved.append(name)

    def add_scratch(self, **arrays) -> None:
        """Gene-major buffers rewritten every iteration: cut to the active rows, never moved."""
        self._register(self._scratch, arrays)

    def _register(self, names: list[str], arrays: dict) -> None:
        for name, value in arrays.items():
            setattr(self, name, value)
            names.append(name)

    def output(self, name: str, target: np.ndarray) -> None:
        """On leaving, row values of ``name`` go to ``target[genes]`` (skipped while None).

        ``name`` is a registered array or a keyword of :meth:`retire`.
        """
        self._outputs.append((name, target))

    def output_buffers(self, names: tuple[str, ...], targets: tuple[np.ndarray, ...]) -> None:
        """On leaving, the rows of the buffers ``names`` are copied to the rows of ``targets``."""
        self._buffer_outputs.append((names, targets))

    # -- leaving ---------------------------------------------------------------------------------
    def retire(self, leave: np.ndarray, **values: np.ndarray) -> bool:
        """Write out the rows where ``leave`` is True and drop them; whether any row is left.

        ``values`` are per-row arrays of this iteration that are outputs but not registered
        (e.g. whether each row converged).
        """
        rows = np.flatnonzero(leave)
        k_new = self.k - rows.size
        out = self.genes if k_new == 0 else self.genes[rows]
        for name, target in self._outputs:
            source = values[name] if name in values else getattr(self, name)
            if source is not None:
                target[out] = source if k_new == 0 else source[rows]
        for names, targets in self._buffer_outputs:
            copy_rows(tuple(getattr(self, name) for name in names), targets, rows, out)
        if k_new == 0:
            self.k = 0
            return False
        keep = ~leave
        # Fill the leaving rows among the first k_new with the kept rows beyond.
        dst = np.flatnonzero(leave[:k_new])
        src = k_new + np.flatnonzero(keep[k_new:])
        moved = tuple(getattr(self, name) for name in self._moved)
        if moved:
            copy_rows(moved, moved, src, dst)
        order = np.arange(self.k)
        order[dst] = src
        order = order[:k_new]
        for name in self._small:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[order])
        for name in self._moved + self._scratch:
            setattr(self, name, getattr(self, name)[:k_new])
        self.k = k_new
        return True
