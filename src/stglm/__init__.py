"""stglm: penalised generalized linear models for spatial transcriptomics.

The names below are imported when first used (PEP 562), so ``import stglm`` stays cheap:
matplotlib, anndata and numba load only with the functions that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it (relative to this package).
_LAZY_NAMES = {
    "GLM": "._glm",
    "GLMCV": "._glm_cv",
    "ElasticNet": "._penalties",
    "Family": "._families",
    "batch_grad": ".generalized_lm",
    "calc_1nd_moment": ".spatial",
    "deviance": ".generalized_lm",
    "fit_genes": "._transcriptome",
    "fit_glm": "._fit_glm",
    "get_family": "._families",
    "kkt_residual": "._penalties",
    "log_likelihood": ".generalized_lm",
    "pseudo_r2": ".generalized_lm",
    "read_dask": "._lazy_read",
    "test_genes": "._gene_tests",
    "write_gene_major": "._gene_major",
}
#: Public submodules, also imported on first use.
_SUBMODULES = ("datasets", "generalized_lm", "get", "plotting", "scoring", "spatial")

__all__ = [
    "GLM",
    "GLMCV",
    "ElasticNet",
    "Family",
    "batch_grad",
    "calc_1nd_moment",
    "datasets",
    "deviance",
    "fit_genes",
    "fit_glm",
    "get",
    "get_family",
    "kkt_residual",
    "log_likelihood",
    "plotting",
    "pseudo_r2",
    "read_dask",
    "scoring",
    "spatial",
    "test_genes",
    "write_gene_major",
]

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports these
    from . import datasets, get, plotting, scoring, spatial
    from . import generalized_lm as generalized_lm  # public, though not in __all__
    from ._families import Family, get_family
    from ._fit_glm import fit_glm
    from ._gene_major import write_gene_major
    from ._gene_tests import test_genes
    from ._glm import GLM
    from ._glm_cv import GLMCV
    from ._lazy_read import read_dask
    from ._penalties import ElasticNet, kkt_residual
    from ._transcriptome import fit_genes
    from .generalized_lm import batch_grad, deviance, log_likelihood, pseudo_r2
    from .spatial import calc_1nd_moment


def __getattr__(name: str) -> Any:
    """Import a public name or submodule when it is first used, and keep it."""
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
