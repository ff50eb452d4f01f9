#!/usr/bin/env bash
# Run lint and the test suite in a fresh or reused environment. PYTHON picks the interpreter
# (python3 by default: PyMC 5 on Python 3.11, PyMC 6 on Python >= 3.12).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ruff check .
ruff format --check .
python -m pytest "$@"
