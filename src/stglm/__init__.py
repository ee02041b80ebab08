"""stglm: penalised generalized linear models for spatial transcriptomics."""

from ._families import Family, get_family
from ._glm import GLM
from ._glm_cv import GLMCV
from ._penalties import ElasticNet, kkt_residual
from .generalized_lm import batch_grad, deviance, log_likelihood, pseudo_r2

__version__ = "0.1.0"

__all__ = [
    "GLM",
    "GLMCV",
    "ElasticNet",
    "Family",
    "batch_grad",
    "deviance",
    "get_family",
    "kkt_residual",
    "log_likelihood",
    "pseudo_r2",
]
