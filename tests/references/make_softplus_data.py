"""Synthetic data for the softplus-link GLM references (glm_softplus.R).

Writes softplus_data.csv with columns x1,x2,x3,y_poisson,y_nb,y_gamma.
z = 0.5 + 1.0*x1 - 0.7*x2 + 0.3*x3, mu = softplus(z) = log(1+exp(z)).
y_poisson ~ Poisson(mu); y_nb ~ NB2(mean mu, size theta=2); y_gamma ~ Gamma(shape 2, mean mu).
Run: /work/main/.venv/bin/python make_softplus_data.py   (from this directory)
"""

import numpy as np
import pandas as pd

SEED = 20240601
N, P = 500, 3
BETA = np.array([0.5, 1.0, -0.7, 0.3])  # intercept first
THETA = 2.0
GAMMA_SHAPE = 2.0

rng = np.random.default_rng(SEED)
X = rng.standard_normal((N, P))
z = BETA[0] + X @ BETA[1:]
mu = np.logaddexp(0.0, z)
y_pois = rng.poisson(mu)
# NB2: Gamma-Poisson mixture, rate multiplier ~ Gamma(shape=theta, scale=1/theta)
y_nb = rng.poisson(mu * rng.gamma(THETA, 1.0 / THETA, size=N))
y_gamma = rng.gamma(GAMMA_SHAPE, mu / GAMMA_SHAPE)

df = pd.DataFrame(X, columns=[f"x{j + 1}" for j in range(P)])
df["y_poisson"] = y_pois
df["y_nb"] = y_nb
df["y_gamma"] = y_gamma
df.to_csv("softplus_data.csv", index=False, float_format="%.17g")
print(df.describe())
