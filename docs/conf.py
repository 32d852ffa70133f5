"""Sphinx configuration: the Markdown manual (MyST) plus an API reference generated from the
docstrings (autodoc + autosummary, Google-style sections through napoleon).

Build: ``make docs`` (warnings are errors)."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

project = "stn_jax"
author = "stn_jax authors"
copyright = "stn_jax authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3                    # [text](page.md#a-heading) links

autosummary_generate = True
autosummary_ignore_module_all = False       # a module's __all__ is its documented surface
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True                   # "Attributes:" as fields, not second attribute entries

html_theme = "alabaster"
html_title = "stn_jax"
