"""Sphinx configuration of stglm's documentation site (``make docs``).

Offline by design: the notebooks run on the bundled Visium data at every build, the
benchmark figures are drawn from ``benchmarks/results/`` and the results schema from a
real ``fit_genes``/``test_genes`` run (``_ext/``); no intersphinx, no remote images.
Warnings are errors (``sphinx-build -W --keep-going``, see the Makefile).
"""

from __future__ import annotations

import sys
from pathlib import Path

import stglm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "stglm"
author = "the stglm developers"
copyright = "the stglm developers, BSD-3-Clause"  # noqa: A001 (Sphinx's name)
version = release = stglm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_nb",
    "sphinx_design",
    "results_schema",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
# SEMANTICS.md is included by user-guide/semantics.md (it stays where the docstrings cite it)
exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints", "SEMANTICS.md"]
templates_path = ["_templates"]
default_role = "py:obj"

# --- API reference ---------------------------------------------------------------------------
autosummary_generate = True  # stubs in api/generated/ (not in git)
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc sections say the types
numpydoc_show_class_members = False  # the class template lists members with autodoc
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False


def _aliases() -> dict[str, str]:
    """spateo-module names that are the very objects documented at the package root.

    Their pages say so and link there, instead of documenting the object twice (autodoc would
    register its defining module's name twice).
    """
    import stglm.generalized_lm as glm_module

    return {
        f"stglm.generalized_lm.{name}": f"stglm.{name}"
        for name in glm_module.__all__
        if getattr(glm_module, name) is getattr(stglm, name, None)
    }


autosummary_context = {"stglm_aliases": _aliases()}

# --- notebooks (myst-nb) ---------------------------------------------------------------------
nb_execution_mode = "force"  # every build runs every notebook on the bundled data
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_output_stderr = "warn"  # anything a cell writes to stderr (a warning) fails the build
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# --- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"stglm {release}"
html_static_path = ["_static"]
html_css_files = ["stglm.css"]
html_show_sourcelink = False
html_copy_source = False
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    # the wide tables get the right-hand column's width
    "secondary_sidebar_items": {
        "**": ["page-toc"],
        "user-guide/conventions": [],
        "user-guide/results": [],
    },
    "icon_links": [],
}
html_sidebars = {"index": [], "changelog": []}


def _skip_sklearn_members(app, what, name, obj, skip, options):
    """Leave out the members scikit-learn generates or defines (metadata routing, params)."""
    module = getattr(obj, "__module__", None) or ""
    return True if module.startswith("sklearn.") else None


def setup(app):
    """Project hooks: skip scikit-learn's own members in the class pages."""
    app.connect("autodoc-skip-member", _skip_sklearn_members)
