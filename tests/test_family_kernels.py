"""The solvers' compiled family kernels agree with the reference families (stglm._families)."""

import numpy as np
import pytest

from stglm import get_family
from stglm._solvers._family_kernels import family_code, nll_and_terms

FAMILIES = [
    ("gaussian", {}),
    ("poisson", {"eta": 2.0}),
    ("poisson", {"eta": np.inf}),
    ("softplus", {}),
    ("neg-binomial", {"theta": 2.5}),
    ("gamma", {}),
]


@pytest.mark.parametrize(("distr", "kw"), FAMILIES)
def test_kernel_matches_reference_family(distr, kw):
    rng = np.random.default_rng(0)
    Z = rng.normal(0.5, 1.5, size=(400, 3))
    Z[:5] = [[-40.0], [-5.0], [2.0], [3.5], [40.0]][:5]  # both tails and around eta
    fam = get_family(distr, **kw)
    Y = rng.poisson(2.0, size=Z.shape).astype(float)
    if distr == "gamma":
        Y += 0.25
    if distr == "poisson" and np.isinf(fam.eta):
        Z = np.clip(Z, -30, 30)
    R, W = np.empty_like(Z), np.empty_like(Z)
    nll_and_terms(*family_code(fam), Y, Z, R, W)
    np.testing.assert_allclose(R, fam.residual(Y, Z), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(W, np.maximum(fam.hessian_weights(Y, Z), 0), rtol=1e-10, atol=1e-12)
    if distr == "poisson":
        # The kernel's −ℓ below η is μ − y·z: the seed's y·log(μ + ε) without its ε, a
        # difference of y·ε/μ, visible in this comparison where μ < 1e-7 (z < −15).
        Z = np.maximum(Z, -15.0)
    nll = nll_and_terms(*family_code(fam), Y, Z, np.empty_like(Z), np.empty_like(Z))
    # −ℓ up to terms in y alone: the difference between two means is the same.
    Z2 = Z + 0.1
    nll2 = nll_and_terms(*family_code(fam), Y, Z2, np.empty_like(Z), np.empty_like(Z))
    ref = [-fam.loglik(Y, fam.mean(z)).mean(axis=0) for z in (Z, Z2)]
    np.testing.assert_allclose(nll2 - nll, ref[1] - ref[0], rtol=1e-9, atol=1e-12)
