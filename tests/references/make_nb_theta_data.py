"""Counts of 22 Visium genes for nb_theta.R (NB size θ for fixed means: MASS, glmGamPoi).

Steps
 1. read /work/shared/data/visium_prostate.h5ad (2327 spots × 1255 genes, raw counts in X;
    obs['list_ID'] = tissue section 'NP' / 'CP').
 2. total = counts per spot summed over all 1255 genes (the offset is log(total)).
 3. genes: those with ≥ 30 non-zero spots in each section, ordered by mean count; 20 taken
    at evenly spaced ranks (np.linspace(0, k-1, 20).round()), so the set spans sparse to
    highly expressed genes (θ from ~0.2 to ~200); plus the 2 genes with the largest mean
    among those that look Poisson by moments, Σ(y−μ̂)² ≤ Σy with μ̂ the Poisson fit on
    section + offset (closed form: μ̂ = total·Σ_section y/Σ_section total), for θ → ∞.
 4. weight = integer sample weights in {0, 1, 2, 3} (default_rng(2024)), for
    MASS::theta.ml(..., weights=) — 0 removes a spot, 2 counts it twice.
Writes nb_theta_data.csv: spot, np_section (1 for NP), total, weight, one column per gene.
Run: /work/main/.venv/bin/python make_nb_theta_data.py   (from this directory)
"""

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

H5AD = "/work/shared/data/visium_prostate.h5ad"
N_GENES = 20
N_POISSON = 2
MIN_NONZERO = 30
WEIGHT_SEED = 2024


def main() -> None:
    adata = ad.read_h5ad(H5AD)
    counts = sp.csr_matrix(adata.X).toarray().astype(np.int64)  # spots × genes
    section = adata.obs["list_ID"].astype(str).to_numpy()
    is_np = (section == "NP").astype(np.int64)
    nonzero = counts > 0
    ok = (nonzero[is_np == 1].sum(0) >= MIN_NONZERO) & (nonzero[is_np == 0].sum(0) >= MIN_NONZERO)
    candidates = np.flatnonzero(ok)
    order = candidates[np.argsort(counts[:, candidates].mean(0), kind="stable")]
    picked = order[np.linspace(0, order.size - 1, N_GENES).round().astype(int)]
    total = counts.sum(1)
    mu = np.empty(counts.shape)
    for v in (0, 1):
        idx = is_np == v
        mu[idx] = total[idx, None] * counts[idx].sum(0) / total[idx].sum()
    poisson_like = candidates[((counts - mu) ** 2).sum(0)[candidates] <= counts.sum(0)[candidates]]
    poisson_like = poisson_like[np.argsort(-counts[:, poisson_like].mean(0), kind="stable")]
    picked = np.r_[picked, poisson_like[:N_POISSON]]
    weight = np.random.default_rng(WEIGHT_SEED).integers(0, 4, adata.n_obs)
    df = pd.DataFrame(
        {"spot": adata.obs_names, "np_section": is_np, "total": total, "weight": weight}
    )
    for j in picked:
        df[str(adata.var_names[j])] = counts[:, j]
    df.to_csv("nb_theta_data.csv", index=False)
    print(f"{len(df)} spots, genes: {', '.join(df.columns[4:])}")


if __name__ == "__main__":
    main()
