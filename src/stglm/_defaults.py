"""The model stglm's own front ends fit unless told otherwise, decided in one place.

:func:`stglm.fit_genes`, :func:`stglm.test_genes` and the command line (``stglm fit``,
``stglm test``) fit, by default, the model count analysts fit with R's ``glm``,
``MASS::glm.nb``, glmGamPoi, edgeR and DESeq2: a log link for the count families (and
gamma), size factors from the total counts as the offset, θ estimated per gene for the
negative binomial and no clipping of small coefficients. The seed's names (``GLM``,
``GLMCV``, ``stglm.generalized_lm``, ``fit_glm``) keep the seed's (spateo's) defaults.

:func:`front_end_model` turns the front ends' "auto" values into the model; an explicit
``link=None`` (the seed's mean function; ``--link seed``) brings the seed's other
defaults with it: θ = 1, no size factors, coefficients below 0.01 clipped to 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AUTO", "SEED_CLIP", "FrontEndModel", "front_end_model"]

#: The value of a front end's model option that leaves the choice to :func:`front_end_model`.
AUTO = "auto"
#: The seed's ``clip_coeffs``, kept with the seed's mean function (``link=None``).
SEED_CLIP = 0.01
#: θ estimated per gene by default: the Cox–Reid adjusted profile likelihood (glmGamPoi's).
DEFAULT_THETA = "cox-reid"


@dataclass(frozen=True)
class FrontEndModel:
    """The resolved model options: what is passed on to the estimators."""

    link: str | None
    theta: Any
    size_factors: Any
    clip_coeffs: Any


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value == AUTO


def front_end_model(
    distr: Any,
    link: Any = AUTO,
    theta: Any = None,
    size_factors: Any = AUTO,
    clip_coeffs: Any = None,
    *,
    offset_given: bool = False,
    theta_method: str | None = DEFAULT_THETA,
) -> FrontEndModel:
    """Fill in the front ends' defaults of the model options.

    Parameters
    ----------
    distr : str
        The family's name (anything else is passed on, for the estimator to reject).
    link : "auto", str or None
        "auto": "log" for the families that have it (poisson, neg-binomial, gamma), the
        family's own mean function otherwise (gaussian, softplus). None: the seed's mean.
    theta : float, str or None
        None: ``theta_method`` with the log link, 1 (the seed's) with another mean
        (negative binomial only; other families ignore θ and get 1).
    size_factors : "auto" or as :func:`stglm.fit_genes`
        "auto": "total" for poisson and neg-binomial with the log link when no
        ``offset`` is given (a given offset is taken as the whole offset, as glmGamPoi
        takes ``offset`` with ``size_factors=FALSE``: a user's log(total) is not added
        twice); None otherwise.
    clip_coeffs : float or None
        None: 0, or the seed's 0.01 with an explicit ``link=None``.
    offset_given : bool
        Whether the caller gives an offset of its own.
    theta_method : str or None
        The estimated θ of the default (None: leave ``theta`` None for the caller to
        choose, as :func:`stglm.test_genes` does per test).

    Returns
    -------
    FrontEndModel
    """
    from ._families import LINKS, get_family

    known = isinstance(distr, str) and distr in LINKS
    seed = link is None
    if _is_auto(link):
        link = "log" if known and "log" in LINKS[distr] else None
    log_link = isinstance(link, str) and link == "log"
    if theta is None and (theta_method is not None or distr != "neg-binomial"):
        theta = (theta_method if log_link else 1.0) if distr == "neg-binomial" else 1.0
    if _is_auto(size_factors):
        count = known and get_family(distr).is_count
        size_factors = "total" if count and log_link and not offset_given else None
    if clip_coeffs is None:
        clip_coeffs = SEED_CLIP if seed else 0.0
    return FrontEndModel(link, theta, size_factors, clip_coeffs)
