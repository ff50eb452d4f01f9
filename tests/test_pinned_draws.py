"""Bit-identical draws across refactors: a few draws of each sampler pinned in a file.

The digests cover every posterior draw and every sampler stat of two short chains, so any
change to the random streams (jitter, momentum, noise, minibatch indices, gradient-noise
pairs), to the kernel's arithmetic or to the divergence rollback shows. Regenerate the
file only for a change that is meant to alter the draws:
``python tests/test_pinned_draws.py`` in each environment (PyMC 5 and PyMC 6).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import warnings

import numpy as np
import pymc as pm
import pytest

import pymc_sgmcmc as sgmc

PINNED = pathlib.Path(__file__).parent / "data" / "pinned_draws.json"
#: The two PyMC lines differ in the last bits (PyTensor and NumPy versions), so each has its
#: own pins.
LINE = f"pymc{pm.__version__.split('.')[0]}"
N, BATCH = 300, 30
QUIET = {"progressbar": False, "compute_convergence_checks": False}

SAMPLERS = {
    "SGLD": lambda: sgmc.SGLD(step_size=1e-4),
    "SGLD K=3 interval 5": lambda: sgmc.SGLD(
        step_size=1e-4, steps_per_draw=3, noise_estimate_interval=5
    ),
    # Chain 1 diverges at every draw: the rollback to its last finite state.
    "SGLD diverging": lambda: sgmc.SGLD(step_size=2e-3),
    "SGHMC diverging": lambda: sgmc.SGHMC(step_size=3e-2, friction=5.0, steps_per_draw=2),
    "SGHMC": lambda: sgmc.SGHMC(step_size=1e-2, friction=50.0, steps_per_draw=3),
    "SGHMC estimate": lambda: sgmc.SGHMC(
        step_size=5e-3, friction=150.0, gradient_noise="estimate", steps_per_draw=3
    ),
    "SGNHT": lambda: sgmc.SGNHT(step_size=1e-2, diffusion=5.0, steps_per_draw=3),
    "pSGLD": lambda: sgmc.pSGLD(step_size=1e-3, steps_per_draw=3),
    "SGLD+CV": lambda: sgmc.SGLD(step_size=1e-4, control_variate=True),
    "SGHMC+CV refresh": lambda: sgmc.SGHMC(
        step_size=1e-2,
        friction=50.0,
        steps_per_draw=3,
        control_variate=sgmc.ControlVariate(refresh_interval=7),
    ),
    "cyclical SGLD": lambda: sgmc.SGLD(
        step_size=sgmc.schedules.cyclical(1e-4, cycle_length=30), steps_per_draw=2
    ),
}


def _model():
    rng = np.random.default_rng(20261201)
    X = rng.normal(size=(N, 2))
    y = X @ np.array([1.0, -1.0]) + rng.normal(size=N)
    with pm.Model() as model:
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH)
        w = pm.Normal("w", 0, 1, shape=2)
        sigma = pm.HalfNormal("sigma", 1)
        pm.Normal("y", X_batch @ w, sigma, observed=y_batch, total_size=N)
    return model


def _digest(name: str) -> dict:
    model = _model()
    with model, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = pm.sample(
            draws=30, tune=10, chains=2, cores=1, step=SAMPLERS[name](), random_seed=7, **QUIET
        )
    hasher = hashlib.sha256()
    for group in ("posterior", "sample_stats"):
        dataset = idata[group]
        for variable in sorted(dataset.data_vars):
            values = np.ascontiguousarray(np.asarray(dataset[variable]), dtype=np.float64)
            hasher.update(variable.encode())
            hasher.update(values.tobytes())
    return {
        "sha256": hasher.hexdigest(),
        "w_last": [float(value) for value in np.asarray(idata.posterior["w"])[:, -1].ravel()],
        "stats": sorted(idata.sample_stats.data_vars),
    }


@pytest.mark.parametrize("name", SAMPLERS)
def test_draws_are_bit_identical_to_the_pinned_ones(name):
    pinned = json.loads(PINNED.read_text())[LINE][name]
    got = _digest(name)
    assert got["stats"] == pinned["stats"]
    # The last draws first: a mismatch there is readable; the digest covers the rest.
    assert got["w_last"] == pinned["w_last"]
    assert got["sha256"] == pinned["sha256"]


if __name__ == "__main__":
    pins = json.loads(PINNED.read_text()) if PINNED.exists() else {}
    pins[LINE] = {name: _digest(name) for name in SAMPLERS}
    PINNED.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
