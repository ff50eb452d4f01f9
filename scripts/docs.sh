#!/usr/bin/env bash
# Build the documentation (Sphinx + myst-nb) into docs/_build/html, warnings as errors.
# PYTHON picks the interpreter, as for the other scripts; extra arguments go to
# sphinx-build (e.g. -j auto).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python -m pip install --quiet -e ".[docs]"
# -E: a fresh environment every time, since autodoc does not notice edited docstrings.
python -m sphinx -E -W --keep-going -b html docs docs/_build/html "$@"
echo "Documentation in docs/_build/html/index.html"
