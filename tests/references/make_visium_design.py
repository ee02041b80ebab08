"""Real spatial design from the Visium prostate data, for glmnet_fits.R (case "visium")
and cv_glmnet.R.

Steps
 1. read /work/shared/data/visium_prostate.h5ad (raw counts in X, CSR; obsm['spatial'];
    obs['list_ID'] = tissue section 'NP' / 'CP').
 2. k=6 nearest-neighbour graph within each section from obsm['spatial']
    (scipy.spatial.cKDTree, query k+1 and drop self).
 3. log-normalise all spots: log1p(counts / total_counts_per_spot * 1e4).
 4. X columns = spatial lag (mean over the 6 neighbours of the log-normalised expression)
    of X_GENES, computed on ALL spots.
    y = raw counts of Y_GENE.
 5. keep a random subset of N_SUB spots (fixed seed) so reference files stay small.
    The lag is computed on the full data before subsetting, so neighbours may lie outside
    the subset.
 6. 5 CV fold ids (1..5) drawn with a fixed seed: a random permutation of
    np.arange(N_SUB) % 5 + 1.
Writes visium_design.csv (columns: spot, section, lag_<gene> x6, y) and
visium_foldid.csv (columns: spot, foldid).
Run: /work/main/.venv/bin/python make_visium_design.py   (from this directory)
"""

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.spatial import cKDTree

H5AD = "/work/shared/data/visium_prostate.h5ad"
K = 6
X_GENES = ["TMEFF2", "OR51E2", "AMACR", "CRISP3", "CNN1", "KRT15"]
Y_GENE = "FOLH1"
N_SUB = 400
SUB_SEED = 7
FOLD_SEED = 11
NFOLDS = 5


def knn_lag(adata, genes, k: int = K) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    """(spatial lags of ``genes``, raw counts as float CSR, section labels) on all spots.

    k-nearest-neighbour graph within each section (self excluded, weights 1/k); the lag of
    a gene is the mean over a spot's neighbours of log1p(counts / total per spot · 1e4).
    benchmarks/common.py builds its Visium design with this function too.
    """
    counts = sp.csr_matrix(adata.X).astype(np.float64)
    n = adata.n_obs
    coords = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    section = adata.obs["list_ID"].astype(str).to_numpy()
    rows, cols = [], []
    for s in np.unique(section):
        idx = np.flatnonzero(section == s)
        _, nb = cKDTree(coords[idx]).query(coords[idx], k=k + 1)
        for r, i in enumerate(idx):
            nbrs = [idx[j] for j in nb[r] if idx[j] != i][:k]
            assert len(nbrs) == k
            rows.extend([i] * k)
            cols.extend(nbrs)
    W = sp.csr_matrix((np.full(len(rows), 1.0 / k), (rows, cols)), shape=(n, n))
    tot = np.asarray(counts.sum(axis=1)).ravel()
    lognorm = sp.diags(1e4 / tot) @ counts
    lognorm.data = np.log1p(lognorm.data)
    gidx = [adata.var_names.get_loc(g) for g in genes]
    return np.asarray((W @ lognorm[:, gidx]).todense()), counts, section


def main() -> None:
    a = ad.read_h5ad(H5AD)
    lag, counts, section = knn_lag(a, X_GENES)
    n = a.n_obs
    y = np.asarray(counts[:, a.var_names.get_loc(Y_GENE)].todense()).ravel().astype(np.int64)

    rng = np.random.default_rng(SUB_SEED)
    keep = np.sort(rng.choice(n, size=N_SUB, replace=False))

    df = pd.DataFrame(lag[keep], columns=[f"lag_{g}" for g in X_GENES])
    df.insert(0, "section", section[keep])
    df.insert(0, "spot", a.obs_names[keep].to_numpy())
    df["y"] = y[keep]
    df.to_csv("visium_design.csv", index=False, float_format="%.17g")

    frng = np.random.default_rng(FOLD_SEED)
    foldid = frng.permutation(np.arange(N_SUB) % NFOLDS + 1)
    pd.DataFrame({"spot": df["spot"], "foldid": foldid}).to_csv("visium_foldid.csv", index=False)
    print(df.describe().T)
    print("y gene:", Y_GENE, "x genes:", X_GENES)


if __name__ == "__main__":
    main()
