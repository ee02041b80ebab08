"""stglm: penalised generalized linear models for spatial transcriptomics."""

from . import datasets, get, plotting, spatial
from ._families import Family, get_family
from ._fit_glm import fit_glm
from ._glm import GLM
from ._glm_cv import GLMCV
from ._penalties import ElasticNet, kkt_residual
from ._transcriptome import fit_genes
from .generalized_lm import batch_grad, deviance, log_likelihood, pseudo_r2
from .spatial import calc_1nd_moment

__version__ = "0.1.0"

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
    "spatial",
]
