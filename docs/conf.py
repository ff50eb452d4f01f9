"""Sphinx configuration of the pymc-sgmcmc documentation (MyST markdown + myst-nb).

Build with ``bash scripts/docs.sh`` (warnings are errors). Two folders are written here at
build time and ignored by git:

- ``docs/notebooks/``: copies of ``notebooks/*.ipynb``. The notebooks live at the
  repository root, where the test suite executes them; they are stored with their
  outputs, so they are rendered as they are, never executed.
- ``docs/api/``: one page per public module of ``pymc_sgmcmc``, found by walking the
  package, so that a new module (and, through ``automodule``'s ``:members:``, a new class
  or function in a module's ``__all__``) appears without editing the docs.
"""

from __future__ import annotations

import inspect
import pkgutil
import shutil

from pathlib import Path

import pymc_sgmcmc

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# -- Project -------------------------------------------------------------------------------
project = "pymc-sgmcmc"
author = "the pymc-sgmcmc developers"
copyright = "the pymc-sgmcmc developers"
release = pymc_sgmcmc.__version__
version = ".".join(release.split(".")[:2])

# -- General -------------------------------------------------------------------------------
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
# Missing cross-reference targets (e.g. to PyTensor or NumPy objects, without network
# access for intersphinx) are not errors; broken links to documents and sections are.
nitpicky = False

# -- MyST and myst-nb ----------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# The notebooks are executed by tests/test_notebooks.py and stored with their outputs.
nb_execution_mode = "off"
nb_merge_streams = True

# -- autodoc and numpydoc ------------------------------------------------------------------
# stats_dtypes_shapes: PyMC's docstring and a dtype repr that depends on the ArviZ line; the
# samplers' docstrings describe their stats in words.
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "exclude-members": "stats_dtypes_shapes",
}
autodoc_typehints = "none"  # the numpydoc "Parameters" sections say it in words
autodoc_preserve_defaults = False  # show values, not the names of private constants
numpydoc_show_class_members = False  # autodoc's :members: lists them
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- HTML ----------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"pymc-sgmcmc {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
# ``\text{noise\_ratio}`` in docstrings: MathJax reads ``\_`` in text mode with textmacros.
mathjax3_config = {
    "loader": {"load": ["[tex]/textmacros"]},
    "tex": {"packages": {"[+]": ["textmacros"]}},
}
html_static_path: list[str] = []


# -- Notebooks -----------------------------------------------------------------------------
def copy_notebooks() -> None:
    """Mirror ``notebooks/*.ipynb`` into ``docs/notebooks/`` (rewriting only changed files,
    so that incremental builds stay incremental, and removing notebooks deleted upstream)."""
    source, target = ROOT / "notebooks", DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    notebooks = {path.name: path for path in source.glob("*.ipynb")}
    for stale in target.glob("*.ipynb"):
        if stale.name not in notebooks:
            stale.unlink()
    for name, path in notebooks.items():
        copy = target / name
        if not copy.exists() or copy.read_bytes() != path.read_bytes():
            shutil.copy2(path, copy)


copy_notebooks()


# -- API pages -----------------------------------------------------------------------------
API_PAGE = "# `{module}`\n\n{intro}```{{eval-rst}}\n.. automodule:: {module}\n   :members:\n```\n"
TOP_LEVEL_INTRO = (
    "What `import pymc_sgmcmc` provides, re-exported from the submodules documented on the "
    "following pages.\n\n"
)


def write_api_pages() -> None:
    """Write ``docs/api/<module>.md`` for the package and each public submodule."""
    target = DOCS / "api"
    target.mkdir(exist_ok=True)
    modules = ["pymc_sgmcmc"] + [
        f"pymc_sgmcmc.{module.name}"
        for module in pkgutil.iter_modules(pymc_sgmcmc.__path__)
        if not module.name.startswith("_")
    ]
    pages = {
        f"{module}.md": API_PAGE.format(
            module=module, intro=TOP_LEVEL_INTRO if module == "pymc_sgmcmc" else ""
        )
        for module in modules
    }
    for stale in target.glob("*.md"):
        if stale.name not in pages:
            stale.unlink()
    for name, text in pages.items():
        page = target / name
        if not page.exists() or page.read_text() != text:
            page.write_text(text)


write_api_pages()


# -- Re-exported objects -------------------------------------------------------------------
def _allow_repeated_canonical_aliases() -> None:
    """Let one object be documented under several public names without a warning.

    ``SGLD`` is documented as ``pymc_sgmcmc.SGLD`` and ``pymc_sgmcmc.step_methods.SGLD``;
    autodoc gives both the alias ``:canonical: pymc_sgmcmc.step_methods.sgld.SGLD``, and
    Sphinx warns about the second alias of one canonical name although both point at
    the same object (sphinx-doc/sphinx#10348). The first alias is kept; two primary
    descriptions of one name still warn.
    """
    from sphinx.domains.python import PythonDomain

    note_object = PythonDomain.note_object

    def note_object_once(self, name, objtype, node_id, aliased=False, location=None):
        other = self.objects.get(name)
        if aliased and other is not None and other.aliased:
            return
        note_object(self, name, objtype, node_id, aliased=aliased, location=location)

    PythonDomain.note_object = note_object_once


def _signature_from_init(app, what, name, obj, options, signature, return_annotation):
    """Show a step method's ``__init__`` arguments, not PyMC's ``__new__(*args, **kwargs)``.

    autodoc prefers ``__new__`` to ``__init__`` for a class's signature, and PyMC's
    ``BlockedStep`` defines a catch-all ``__new__``.
    """
    if what not in {"class", "exception"} or signature != "(*args, **kwargs)":
        return None
    init = inspect.signature(obj.__init__)
    parameters = [
        parameter.replace(annotation=inspect.Parameter.empty)
        for parameter in list(init.parameters.values())[1:]
    ]
    return str(init.replace(parameters=parameters)), return_annotation


def setup(app) -> dict:
    _allow_repeated_canonical_aliases()
    app.connect("autodoc-process-signature", _signature_from_init)
    return {"parallel_read_safe": True}
