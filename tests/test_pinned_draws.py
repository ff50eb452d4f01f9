"""Identical draws across refactors: a few draws of each sampler pinned in a file.

The pins hold every posterior draw and every sampler stat of two short chains, so any
change to the random streams (jitter, momentum, noise, minibatch indices, gradient-noise
pairs), to the kernel's arithmetic or to the divergence rollback shows. They are compared
to 1e-9 relative, not bit for bit: machines differ in the last bits (BLAS builds, SIMD
widths, compiler flags), while a change of the random streams changes every draw at
order one. Regenerate the files only for a change that is meant to alter the draws:
``python tests/test_pinned_draws.py`` in each environment (PyMC 5 and PyMC 6).
"""

from __future__ import annotations

import pathlib
import warnings

import numpy as np
import pymc as pm
import pytest

import pymc_sgmcmc as sgmc

#: The two PyMC lines differ (their PyTensor and NumPy versions), so each has its own pins.
LINE = f"pymc{pm.__version__.split('.')[0]}"
PINNED = pathlib.Path(__file__).parent / "data" / f"pinned_draws_{LINE}.npz"
RELATIVE_TOLERANCE = 1e-9
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


def _draws(name: str) -> dict[str, np.ndarray]:
    """Every posterior draw and sampler stat, as ``"<sampler>/<group>/<variable>"``."""
    model = _model()
    with model, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = pm.sample(
            draws=30, tune=10, chains=2, cores=1, step=SAMPLERS[name](), random_seed=7, **QUIET
        )
    return {
        f"{name}/{group}/{variable}": np.asarray(idata[group][variable], dtype=np.float64)
        for group in ("posterior", "sample_stats")
        for variable in sorted(idata[group].data_vars)
    }


@pytest.mark.parametrize("name", SAMPLERS)
def test_draws_equal_the_pinned_ones(name):
    with np.load(PINNED) as pins:
        pinned = {key: pins[key] for key in pins.files if key.startswith(f"{name}/")}
    got = _draws(name)
    assert sorted(got) == sorted(pinned)
    # The posterior first: a mismatch there is the readable one.
    for key in sorted(got, key=lambda key: "/posterior/" not in key):
        np.testing.assert_allclose(
            got[key], pinned[key], rtol=RELATIVE_TOLERANCE, atol=1e-300, err_msg=key
        )


if __name__ == "__main__":
    pins = {}
    for name in SAMPLERS:
        pins.update(_draws(name))
    np.savez_compressed(PINNED, **pins)
