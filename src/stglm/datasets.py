"""Datasets shipped with stglm."""

from __future__ import annotations

from importlib.resources import files

import anndata as ad

__all__ = ["visium_prostate"]


def visium_prostate() -> ad.AnnData:
    """Visium FFPE human prostate, normal and cancer sections (2,327 spots × 1,255 genes).

    Raw counts in ``X`` (CSR), positions in ``obsm['spatial']``, the section in
    ``obs['list_ID']`` ('NP' normal, 'CP' cancer). Provenance and licence (CC BY 4.0,
    10x Genomics; MIT, GiottoData) are in ``stglm/data/README.md``.

    Returns
    -------
    AnnData
        A fresh copy read from the package; changing it does not change the file.
    """
    return ad.read_h5ad(files("stglm") / "data" / "visium_prostate.h5ad")
