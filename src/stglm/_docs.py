"""Docstring text that several functions share, written once (scanpy's ``_doc_params``).

A docstring line that is only ``{name}`` stands for ``FRAGMENTS[name]``, at that line's
indentation; :func:`shared_docs` fills it in when the function is defined, so ``help()``,
the documentation site and numpydoc see the whole text. Braces anywhere else in a
docstring are left alone.
"""

from __future__ import annotations

import re
from inspect import cleandoc
from typing import TypeVar

_T = TypeVar("_T")

FRAGMENTS = {
    name: cleandoc(text)
    for name, text in {
        "adata_fitted": """
            adata : AnnData
                An AnnData that :func:`stglm.fit_genes` wrote into.
        """,
        "gene_fitted": """
            gene : str
                A fitted gene.
        """,
        "key_added_fitted": """
            key_added : str, default="stglm"
                The ``key_added`` used when fitting.
        """,
        "glmcv_model": """
            model : GLMCV
                A fitted :class:`~stglm.GLMCV`.
            ax : matplotlib.axes.Axes, optional
                Axes to draw on; by default a new figure with one Axes is created.
        """,
        "glmcv_raises": """
            TypeError
                If ``model`` is not a :class:`~stglm.GLMCV`.
            sklearn.exceptions.NotFittedError
                If ``model`` has not been fitted.
        """,
        "scored_data": """
            estimator : GLM or GLMCV
                A fitted estimator.
            X : array-like or sparse matrix of shape (n_samples, n_features)
            y : array-like of shape (n_samples,)
            sample_weight : array-like of shape (n_samples,), default=None
                Weights of the samples' deviances (None: all 1).
            offset : array-like of shape (n_samples,), default=None
                The known part of the linear predictor.
        """,
    }.items()
}

_PLACEHOLDER = re.compile(r"^(\s*)\{(\w+)\}\s*$")


def shared_docs(obj: _T) -> _T:
    """Fill the ``{name}`` lines of ``obj``'s docstring from :data:`FRAGMENTS`.

    Raises
    ------
    KeyError
        If a placeholder names no fragment (a typo, found when the module is imported).
    """
    lines = []
    for line in cleandoc(obj.__doc__ or "").splitlines():
        match = _PLACEHOLDER.match(line)
        if match is None:
            lines.append(line)
            continue
        indent, name = match.groups()
        lines.extend(indent + text if text else text for text in FRAGMENTS[name].splitlines())
    obj.__doc__ = "\n".join(lines)
    return obj
