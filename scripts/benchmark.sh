#!/usr/bin/env bash
# The benchmark suite (see benchmarks/run.py), with its benchmark-only dependencies
# (BlackJAX, JAX, nutpie). The speed targets are for PyMC 6 / PyTensor 3, so pick a
# Python >= 3.12: PYTHON=python3.12 bash scripts/benchmark.sh [--quick]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python -m pip install --quiet -e ".[test,benchmarks]"
python benchmarks/run.py "$@"
