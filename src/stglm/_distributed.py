"""Gene blocks as Dask tasks: whole-transcriptome fits and tests on counts in a dask array.

:func:`stglm.fit_genes` and :func:`stglm.test_genes` fit genes block by block
(:func:`stglm._transcriptome.run_blocks`). When the responses (``adata.X`` or the layer) are
a dask array — from :func:`stglm.read_dask` (anndata's ``read_elem_lazy`` on .h5ad or .zarr), or
any dask array with dense, scipy-sparse or pydata-sparse chunks — each block is a Dask task
on the active ``dask.distributed`` client, or on Dask's default scheduler when there is none:

- what every block shares (the design and its pair products, the folds and their designs,
  the offset and weights: one pickled callable) is sent to each worker once (scattered to
  all, so a worker lost mid-run leaves copies on the others);
- each task's input is only its genes' columns of the dask array, computed by Dask from
  the chunks that hold them;
- at most ``IN_FLIGHT_PER_THREAD`` blocks per worker thread are submitted at a time, so a
  worker's memory is set by the block size (``chunk_size`` genes × n_obs), not by the
  number of genes, and the client holds results only, never the count matrix;
- results come back in any order and are stored by gene position, so they equal the
  in-memory path's (at the same ``chunk_size`` each block is the same computation on the same
  numbers: bit for bit on numpy 2.4's OpenBLAS, to the last bits where a BLAS rounds
  differently in another process);
- a worker lost mid-run is Dask's to recover: its tasks run again elsewhere, with the same
  results; a block that raises, or whose worker dies again and again, stops the run with
  one error naming its genes, before anything is written to the AnnData (the callers
  store results only after the last block).

Dask is optional (``pip install 'stglm[dask]'``): this module imports it only when a dask
array or a cluster is used, and says which extra to install when it is missing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from itertools import islice
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._anndata import MAX_NAMES_SHOWN, is_lazy
from ._errors import InputError, MissingDependencyError, StglmInputError

__all__ = [
    "EXTRA",
    "IN_FLIGHT_PER_THREAD",
    "GeneBlockError",
    "active_client",
    "block_threads",
    "cluster_client",
    "require_dask",
    "run_lazy_blocks",
]

#: The optional extra that installs what this module needs.
EXTRA = "stglm[dask]"
#: Blocks submitted per worker thread at a time: one running, one read ahead.
IN_FLIGHT_PER_THREAD = 2


class GeneBlockError(RuntimeError):
    """A block of genes that failed on a Dask worker for a reason other than bad input."""


def require_dask(feature: str, distributed: bool = False) -> Any:
    """The ``dask`` module (and ``distributed`` imported); a clear error naming the extra.

    Raises
    ------
    MissingDependencyError
        (an ``ImportError``) if Dask — or, with ``distributed``, dask.distributed — is not
        installed.
    """
    try:
        import dask
        import dask.array  # noqa: F401 - the array collection used by the blocks

        if distributed:
            import distributed as _  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(
            f"{feature} needs Dask{' and dask.distributed' if distributed else ''}, which "
            f"is not installed ({err}); install stglm with its extra: pip install '{EXTRA}'."
        ) from None
    return dask


# ---------------------------------------------------------------------------------------------
# running the blocks
# ---------------------------------------------------------------------------------------------
def active_client() -> Any:
    """The current ``dask.distributed`` client, or None (then Dask's default scheduler)."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:  # no client
        return None


def block_threads() -> int:
    """Blocks one process runs at once (the threads of one worker).

    The threads of the largest worker of the active client, else those of Dask's default
    scheduler (``num_workers``, else every core). The blocks running in one process share
    its memory budget, so blocks are sized for this many
    (:func:`stglm._cv.default_chunk_size`).
    """
    client = active_client()
    if client is not None:
        return max(1, max(client.nthreads().values(), default=1))
    return _default_scheduler_threads()


def _default_scheduler_threads() -> int:
    """Threads of Dask's default (threaded) scheduler."""
    import dask

    return max(1, int(dask.config.get("num_workers", None) or os.cpu_count() or 1))


def _block_columns(matrix: Any, columns: np.ndarray) -> Any:
    """The dask array of some columns: a slice where they are contiguous (a smaller graph).

    Chunks held as scipy sparse *arrays* become sparse matrices of the same format (the
    same numbers): Dask before 2024 cannot concatenate the former.
    """
    if columns.size and np.all(np.diff(columns) == 1):
        block = matrix[:, int(columns[0]) : int(columns[-1]) + 1]
    else:
        block = matrix[:, columns]
    if sp.issparse(block._meta) and not sp.isspmatrix(block._meta):
        block = block.map_blocks(_as_sparse_matrix, dtype=block.dtype)
    return block


def _as_sparse_matrix(chunk: Any) -> Any:
    """A scipy sparse array as the sparse matrix of its format (others unchanged)."""
    if sp.issparse(chunk) and not sp.isspmatrix(chunk):
        return {"csr": sp.csr_matrix, "csc": sp.csc_matrix}.get(chunk.format, sp.csr_matrix)(chunk)
    return chunk


def _describe(genes: Sequence[str], index: int, n_blocks: int) -> str:
    """How an error names a block: its genes (the first few) and its place."""
    shown = ", ".join(map(str, genes[:MAX_NAMES_SHOWN]))
    more = f" and {len(genes) - MAX_NAMES_SHOWN} more" if len(genes) > MAX_NAMES_SHOWN else ""
    return f"gene block {index + 1} of {n_blocks} (genes {shown}{more})"


def _run_task(task: Callable, chunk: np.ndarray, values: Any, where: str) -> Any:
    """``task(chunk, values)``, reading ``values`` first if still lazy; failures name the block.

    On a distributed worker ``values`` arrive computed; on the default scheduler the task
    reads them itself (synchronously: it already runs in one of the scheduler's threads).
    """
    try:
        if is_lazy(values):
            values = values.compute(scheduler="sync")
        return task(chunk, values)
    except StglmInputError as err:  # bad input in this block: the same kind of error
        raise type(err)(f"{where}: {err}") from err
    except Exception as err:
        raise GeneBlockError(f"{where} failed: {type(err).__name__}: {err}") from err


def run_lazy_blocks(
    task: Callable,
    matrix: Any,
    chunks: Sequence[np.ndarray],
    columns: np.ndarray,
    names: Sequence[str],
) -> Iterator[Any]:
    """Yield ``task(chunk, matrix[:, columns[chunk]])`` for every chunk, as they finish.

    Parameters
    ----------
    task : callable
        ``task(chunk, values)`` with ``values`` the block's columns (dense or sparse);
        pickled once and sent to every worker.
    matrix : dask array of shape (n_obs, n_vars)
        The responses.
    chunks : list of int arrays
        Positions (in ``names`` and ``columns``) of each block's genes.
    columns : int array
        Column of ``matrix`` of each gene.
    names : sequence of str
        Gene names, for errors.

    Raises
    ------
    InputError, InputTypeError
        A block's input was bad (named in the message: its place and genes).
    GeneBlockError
        A block failed otherwise (its columns could not be read, say), or its worker died
        more often than Dask retries a task.
    """
    require_dask("Counts in a dask array")
    names = list(map(str, names))
    jobs = [
        (
            chunk,
            _block_columns(matrix, columns[chunk]),
            _describe([names[i] for i in chunk], k, len(chunks)),
        )
        for k, chunk in enumerate(chunks)
    ]
    client = active_client()
    if client is None:
        yield from _run_default_scheduler(task, jobs)
    else:
        yield from _run_on_client(client, task, jobs)


def _run_default_scheduler(task: Callable, jobs: list) -> Iterator[Any]:
    """The blocks in as many threads as Dask's default scheduler has, a window at a time."""
    n_threads = _default_scheduler_threads()
    with ThreadPoolExecutor(n_threads, thread_name_prefix="stglm-block") as pool:
        pending = iter(jobs)
        running = {
            pool.submit(_run_task, task, *job)
            for job in islice(pending, IN_FLIGHT_PER_THREAD * n_threads)
        }
        try:
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    following = next(pending, None)
                    if following is not None:
                        running.add(pool.submit(_run_task, task, *following))
                    yield result
        finally:
            for future in running:
                future.cancel()


def _run_on_client(client: Any, task: Callable, jobs: list) -> Iterator[Any]:
    """The blocks on a distributed client, a sliding window of them in flight.

    Each block is two futures: its columns, computed by the cluster from the chunks that
    hold them, and the task fitting them (on the worker that holds the columns).
    """
    from distributed import as_completed

    n_threads = max(1, sum(client.nthreads().values()))
    shared = client.scatter(task, broadcast=True, hash=False)
    run_id = uuid.uuid4().hex[:12]
    pending = iter(enumerate(jobs))
    live: dict[Any, tuple[str, Any]] = {}

    def submit(k: int, job: tuple) -> Any:
        chunk, values, where = job
        block = client.compute(values)
        future = client.submit(
            _run_task, shared, chunk, block, where, key=f"stglm-block-{run_id}-{k}", pure=False
        )
        live[future] = (where, block)
        return future

    window = as_completed(
        [submit(k, job) for k, job in islice(pending, IN_FLIGHT_PER_THREAD * n_threads)]
    )
    try:
        for future in window:
            where, block = live.pop(future)
            try:
                result = future.result()
            except (StglmInputError, GeneBlockError):
                raise  # raised by the task, naming its block
            except Exception as err:  # the columns could not be read, or the worker died
                raise GeneBlockError(_cluster_failure(where, err)) from err
            del block
            following = next(pending, None)
            if following is not None:
                window.add(submit(*following))
            yield result
    finally:
        client.cancel([*live, *(block for _, block in live.values()), shared])


def _cluster_failure(where: str, err: Exception) -> str:
    """The message of a block that failed outside its task."""
    message = f"{where} failed on the Dask cluster: {type(err).__name__}: {err}"
    if type(err).__name__ == "KilledWorker":
        message += (
            " (its workers died each time they ran it: often out of memory; lower chunk_size "
            "or give the workers more memory)"
        )
    return message


# ---------------------------------------------------------------------------------------------
# clusters
# ---------------------------------------------------------------------------------------------
@contextmanager
def cluster_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A ``dask.distributed`` client for one run, closed afterwards.

    A LocalCluster of ``workers`` processes, or the scheduler at the address ``scheduler``;
    neither: no client (yields None: Dask's default scheduler runs the blocks). A
    LocalCluster's workers have one thread each (each block's BLAS runs on one thread) and
    share the machine's memory; a scheduler's workers are as it was started.
    """
    if workers is not None and scheduler is not None:
        raise InputError("give workers (a local cluster) or scheduler (an address), not both.")
    if workers is None and scheduler is None:
        yield None
        return
    require_dask("A Dask cluster", distributed=True)
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as err:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler!r}: {err}") from None
        with client:
            yield client
        return
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise InputError(f"workers must be a positive integer; got {workers!r}.")
    with (
        LocalCluster(
            n_workers=int(workers), threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
