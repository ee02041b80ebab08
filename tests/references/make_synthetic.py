"""Synthetic Poisson design for glmnet_fits.R (case "synthetic").

n=300, p=8, X standard normal, y ~ Poisson(exp(0.3 + X @ beta)) with sparse beta.
Writes synthetic_data.csv with columns x1..x8,y.
Run: /work/main/.venv/bin/python make_synthetic.py   (from this directory)
"""

import numpy as np
import pandas as pd

SEED = 12345
N, P = 300, 8
B0 = 0.3
BETA = np.array([0.6, -0.4, 0.0, 0.0, 0.25, 0.0, 0.0, 0.0])

rng = np.random.default_rng(SEED)
X = rng.standard_normal((N, P))
y = rng.poisson(np.exp(B0 + X @ BETA))
df = pd.DataFrame(X, columns=[f"x{j + 1}" for j in range(P)])
df["y"] = y
df.to_csv("synthetic_data.csv", index=False, float_format="%.17g")
print(df.describe().T)
