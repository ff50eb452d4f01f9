# Sourced by the other scripts: make (once) and activate a virtual environment for
# $PYTHON (default python3) with the package and its test extras installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=".venv-py$version"
if [ ! -x "$venv/bin/python" ]; then
    "$PYTHON" -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
python -m pip install --quiet -e ".[test]"
echo "Using $(python --version), PyMC $(python -c 'import pymc; print(pymc.__version__)') in $venv"
