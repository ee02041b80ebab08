"""Count-model data from the Visium prostate set, for count_glm.R, glmnet_offset.R, glm_gp.R
and tests/test_count_models_r.py.

Steps
 1. read /work/shared/data/visium_prostate.h5ad (2327 spots x 1255 genes, raw integer counts
    in CSR X, obsm['spatial'], obs['list_ID'] = section 'NP' / 'CP'). All spots, all genes.
 2. total = sum of the raw counts of all 1255 genes per spot; log_total = log(total).
 3. section_CP = 1 for section CP, 0 for NP.
 4. x_std, y_std: obsm['spatial'][:, 0] and [:, 1], standardised WITHIN each section:
    (c - mean_s(c)) / sd_s(c), with the mean and the population standard deviation
    (ddof=0, numpy's np.std default) over the spots of that section.
 5. lag_TMEFF2: spatial lag of log1p(counts / total * 1e4) of TMEFF2, the mean over the 6
    nearest neighbours within the section (make_visium_design.knn_lag, all spots).
 6. weight: integer prior weights 1..3, default_rng(20261201).integers(1, 4, n).
Writes
    count_design.csv     spot, section, section_CP, x_std, y_std, lag_TMEFF2, total,
                         log_total, weight   (floats with %.17g)
    count_matrix.csv.gz  spot x gene raw counts (header: spot, then the 1255 gene names in
                         adata.var_names order), gzip with mtime 0 so reruns are byte-identical.
Run: /work/main/.venv/bin/python make_count_data.py   (from this directory)
"""

import gzip
import io

import anndata as ad
import numpy as np
import pandas as pd
from make_visium_design import H5AD, knn_lag

LAG_GENE = "TMEFF2"
WEIGHT_SEED = 20261201


def standardise_within(c: np.ndarray, section: np.ndarray) -> np.ndarray:
    out = np.empty_like(c, dtype=np.float64)
    for s in np.unique(section):
        m = section == s
        out[m] = (c[m] - c[m].mean()) / c[m].std()  # ddof=0
    return out


def main() -> None:
    a = ad.read_h5ad(H5AD)
    lag, counts, section = knn_lag(a, [LAG_GENE])
    n = a.n_obs
    coords = np.asarray(a.obsm["spatial"], dtype=np.float64)
    total = np.asarray(counts.sum(axis=1)).ravel()
    df = pd.DataFrame(
        {
            "spot": a.obs_names.to_numpy(),
            "section": section,
            "section_CP": (section == "CP").astype(np.int64),
            "x_std": standardise_within(coords[:, 0], section),
            "y_std": standardise_within(coords[:, 1], section),
            f"lag_{LAG_GENE}": lag[:, 0],
            "total": total.astype(np.int64),
            "log_total": np.log(total),
            "weight": np.random.default_rng(WEIGHT_SEED).integers(1, 4, n),
        }
    )
    df.to_csv("count_design.csv", index=False, float_format="%.17g")

    dense = np.asarray(counts.todense()).astype(np.int64)
    cm = pd.DataFrame(dense, columns=a.var_names.to_numpy())
    cm.insert(0, "spot", a.obs_names.to_numpy())
    buf = io.StringIO()
    cm.to_csv(buf, index=False)
    with open("count_matrix.csv.gz", "wb") as fh:
        with gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=9, mtime=0) as gz:
            gz.write(buf.getvalue().encode())
    print(df.describe().T)
    print("counts:", dense.shape, "total counts", dense.sum())


if __name__ == "__main__":
    main()
