"""Independent Python checks of the R reference numbers in this directory
(numpy / scipy / pandas only). Prints one line per check and exits non-zero on failure.
Run: /work/main/.venv/bin/python verify_references.py   (from this directory)
"""

import json
import sys

import numpy as np
import pandas as pd
from scipy import optimize, special

FAIL = []


def check(name, value, tol):
    ok = bool(value <= tol)
    print(f"{'OK  ' if ok else 'FAIL'} {name}: {value:.3e} (tol {tol:.0e})")
    if not ok:
        FAIL.append(name)


def softplus(z):
    return np.logaddexp(0.0, z)


# ---------------------------------------------------------------- glm_softplus
G = json.load(open("glm_softplus.json"))
d = pd.read_csv("softplus_data.csv")
Xs = d[["x1", "x2", "x3"]].to_numpy()
theta = G["theta"]


def negloglik(b, Z, y, fam):
    mu = softplus(Z @ b)
    if fam == "poisson":
        return -np.sum(y * np.log(mu) - mu)
    if fam == "negbin":
        return -np.sum(
            special.gammaln(y + theta)
            - special.gammaln(theta)
            - special.gammaln(y + 1)
            + theta * np.log(theta / (theta + mu))
            + y * np.log(mu / (theta + mu))
        )
    return -np.sum(-y / mu - np.log(mu))


def score(b, Z, y, fam):  # gradient of the log-likelihood
    z = Z @ b
    mu, dmu = softplus(z), special.expit(z)
    if fam == "poisson":
        w = y / mu - 1
    elif fam == "negbin":
        w = (y - mu) / (mu + mu**2 / theta)
    else:
        w = (y - mu) / mu**2
    return Z.T @ (w * dmu)


for key, f in G["fits"].items():
    fam = key.split("_")[0]
    y = d[{"poisson": "y_poisson", "negbin": "y_nb", "gamma": "y_gamma"}[fam]].to_numpy(float)
    Z = np.column_stack([np.ones(len(y)), Xs]) if f["intercept"] else Xs
    b = np.array(f["coef"])
    check(f"glm_softplus {key} max|score| at R coef", np.max(np.abs(score(b, Z, y, fam))), 1e-9)
    check(
        f"glm_softplus {key} loglik_objective",
        abs(-negloglik(b, Z, y, fam) - f["loglik_objective"]),
        1e-8,
    )
    res = optimize.minimize(
        negloglik,
        np.zeros(Z.shape[1]),
        args=(Z, y, fam),
        jac=lambda b_, *a: -score(b_, *a),
        method="BFGS",
        options={"gtol": 1e-11, "maxiter": 10000},
    )
    check(f"glm_softplus {key} |coef_R - coef_scipy|", np.max(np.abs(res.x - b)), 1e-6)


# ---------------------------------------------------------------- glmnet_fits
def load(name):
    if name == "synthetic":
        dd = pd.read_csv("synthetic_data.csv")
        return dd.filter(regex="^x").to_numpy(), dd["y"].to_numpy(float)
    dd = pd.read_csv("visium_design.csv")
    return dd.filter(regex="^lag_").to_numpy(), dd["y"].to_numpy(float)


def kkt(X, y, a0, beta, family, lam, alpha, intercept):
    z = a0 + X @ beta
    mu = np.exp(z) if family == "poisson" else z
    r = y - mu
    g = -X.T @ r / len(y) + lam * (1 - alpha) * beta
    viol = np.where(
        beta != 0, np.abs(g + lam * alpha * np.sign(beta)), np.maximum(0, np.abs(g) - lam * alpha)
    )
    return max(abs(r.mean()) if intercept else 0.0, viol.max())


F = json.load(open("glmnet_fits.json"))
for f in F["fits"]:
    X, y = load(f["dataset"])
    worst = max(
        kkt(X, y, f["a0"][k], np.array(f["beta"][k]), f["family"], lam, f["alpha"], f["intercept"])
        for k, lam in enumerate(f["lambda"])
    )
    check(
        f"glmnet_fits {f['dataset']} {f['kind']} alpha={f['alpha']:.3f} int={f['intercept']} KKT",
        worst,
        1e-9,
    )

# ---------------------------------------------------------------- cv_glmnet
C = json.load(open("cv_glmnet.json"))
X, y = load("visium")
foldid = pd.read_csv("visium_foldid.csv")["foldid"].to_numpy()
K = foldid.max()
for c in C["cases"]:
    lam = np.array(c["lambda"])
    L = len(lam)
    eta = np.empty((len(y), L))
    for k in range(K):
        te = foldid == k + 1
        B = np.array(c["fold_beta"][k])  # nlambda x p
        eta[te] = np.array(c["fold_a0"][k])[None, :] + X[te] @ B.T
        tr = ~te
        worst = max(
            kkt(
                X[tr],
                y[tr],
                c["fold_a0"][k][l],
                B[l],
                c["family"],
                c["fold_lambda_objective"][k][l],
                c["fold_alpha_objective"][k],
                True,
            )
            for l in range(L)
        )
        check(f"cv {c['kind']} alpha={c['alpha']} fold {k + 1} KKT", worst, 1e-9)
    if c["family"] == "poisson":
        ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1)), 0.0)
        dev = 2 * (ylogy[:, None] - y[:, None] - (y[:, None] * eta - np.exp(eta)))
        mu = np.exp(eta)
    else:
        dev = (y[:, None] - eta) ** 2
        mu = eta
    fold_dev = np.array([dev[foldid == k + 1].mean(0) for k in range(K)])
    nk = np.array([np.sum(foldid == k + 1) for k in range(K)], float)
    cvm = nk @ fold_dev / nk.sum()
    cvsd = np.sqrt(nk @ (fold_dev - cvm) ** 2 / nk.sum() / (K - 1))
    check(
        f"cv {c['kind']} alpha={c['alpha']} fold_mean_deviance",
        np.max(np.abs(fold_dev - np.array(c["fold_mean_deviance"]))),
        1e-10,
    )
    check(
        f"cv {c['kind']} alpha={c['alpha']} cvm (rel)",
        np.max(np.abs(cvm / np.array(c["cvm"]) - 1)),
        1e-12,
    )
    check(
        f"cv {c['kind']} alpha={c['alpha']} cvsd (rel)",
        np.max(np.abs(cvsd / np.array(c["cvsd"]) - 1)),
        1e-9,
    )
    imin = np.flatnonzero(cvm <= cvm.min())[0]  # lambda decreasing: first = largest
    i1se = np.flatnonzero(cvm <= cvm[imin] + cvsd[imin])[0]
    check(
        f"cv {c['kind']} alpha={c['alpha']} index_min/1se",
        abs(imin + 1 - c["index_min"]) + abs(i1se + 1 - c["index_1se"]),
        0,
    )
    check(
        f"cv {c['kind']} alpha={c['alpha']} preval at min",
        np.max(np.abs(mu[:, imin] - c["fit_preval_response_at_min"])),
        1e-10,
    )

print("FAILED:" if FAIL else "all checks passed", *FAIL)
sys.exit(1 if FAIL else 0)
