#!/usr/bin/env bash
# Minibatch Bayesian logistic regression with SGLD; prints az.summary beside the true weights.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python examples/logistic_regression.py "$@"
