"""One BLAS thread inside the solvers.

The solvers' matrix products are small and many; with OpenBLAS's default of one thread
per core they spend more time synchronising threads than computing, and on a shared or
busy machine a fit can run several times slower. Parallelism is opt-in instead, through
``n_jobs`` (GLMCV's folds, fit_genes' chunks of genes).
"""

from __future__ import annotations

from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None


def single_blas_thread():
    """Context manager limiting BLAS to one thread (the controller is built once)."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
