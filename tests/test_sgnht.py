"""SGNHT: its thermostat absorbs minibatch noise it is not told about."""

import numpy as np
import pymc as pm
import pytest
import scipy.optimize

from helpers import (
    Z_TOLERANCE,
    assert_gaussian_moments,
    batch_means_standard_error,
    seed_for,
    sghmc_stationary_covariance,
)

import pymc_sgmcmc as sgmc

SAMPLE_KWARGS = {"chains": 2, "cores": 1, "progressbar": False, "compute_convergence_checks": False}
N, D, BATCH, PRIOR_SD = 1000, 6, 200, 10.0


@pytest.fixture(scope="module")
def means_model():
    """``y_i ~ N(mu, I)``, ``mu ~ N(0, 10² I)``: the per-row score ``y_i − mu`` has the same
    covariance at every ``mu``, so the minibatch noise ``V`` is known exactly."""
    rng = np.random.default_rng(seed_for("sgnht_means"))
    data = rng.normal(0.5, 1.0, size=(N, D))
    with pm.Model() as model:
        batch = pm.Minibatch(data, batch_size=BATCH)
        mu = pm.Normal("mu", 0, PRIOR_SD, shape=D)
        pm.Normal("y", mu, 1.0, observed=batch, total_size=N)
    precision = N + 1 / PRIOR_SD**2
    mean = data.sum(axis=0) / precision
    gradient_variance = N**2 / BATCH * data.var(axis=0)
    return model, mean, precision, gradient_variance


def settled_sgnht_covariance(precision, gradient_covariance, step_size, diffusion, temperature):
    """``(ξ̄, covariance of (θ, p))`` of SGNHT with its thermostat held at its mean.

    The thermostat stops moving on average when the discretised chain's kinetic
    temperature ``pᵀp/d`` is ``T`` exactly: ``ξ̄`` solves that for the chain written as
    SGHMC with friction ``ξ̄``, injected momentum noise ``2hA`` and minibatch noise
    ``h² V`` (``B̂ = T ξ̄ − A`` in SGHMC's terms).
    """
    d = precision.shape[0]

    def covariance(friction):
        return sghmc_stationary_covariance(
            precision,
            gradient_covariance,
            step_size,
            friction,
            1.0,
            temperature * friction - diffusion,
            temperature,
        )

    def excess(friction):
        return np.mean(np.diag(covariance(friction))[d:]) - temperature

    # Kinetic temperature falls as friction grows, up to momentum decay 1 − hξ = 0.
    friction = scipy.optimize.brentq(excess, 1e-3 / step_size, 1.0 / step_size)
    return friction, covariance(friction)


def test_thermostat_absorbs_unknown_minibatch_noise(means_model):
    model, mean, precision, gradient_variance = means_model
    scale = 1 / np.sqrt(precision)
    step_size, diffusion = 0.1 * scale, 0.5 / scale
    with model:
        step = sgmc.SGNHT(step_size=step_size, diffusion=diffusion, steps_per_draw=20)
        # The thermostat relaxes over about ξ̄ / (hT) ≈ 8000 SG steps: tune 20000.
        idata = pm.sample(
            draws=2000, tune=1000, step=step, random_seed=seed_for("sgnht"), **SAMPLE_KWARGS
        )
    # The minibatch noise puts B = h V̄ / 2 on top of A: the thermostat settles where the
    # friction balances both, ξ̄ = (A + h V̄ / 2) / T, 1.5 A here. A fixed friction A
    # would run the chain at T_eff = 1 + hV̄/(2A) = 1.5.
    absorbed = step_size * np.mean(gradient_variance) / 2
    assert absorbed > 0.4 * diffusion
    friction, expected = settled_sgnht_covariance(
        precision * np.eye(D), np.diag(gradient_variance), step_size, diffusion, 1.0
    )
    # Continuous time: ξ̄ = A + h V̄ / 2; the discretised chain settles nearby.
    np.testing.assert_allclose(friction, diffusion + absorbed, rtol=0.15)
    # The mean-field value ignores how ξ and pᵀp fluctuate together: a few percent.
    thermostat = np.asarray(idata.sample_stats["thermostat"])
    np.testing.assert_allclose(thermostat.mean(), friction, rtol=0.05)
    # The draws have the covariance of that chain (the thermostat's fluctuations move it
    # by less than the Monte Carlo error), and the right temperature.
    draws = np.asarray(idata.posterior["mu"])
    assert_gaussian_moments(draws, mean, np.diag(expected)[:D], label="SGNHT")
    kinetic = np.asarray(idata.sample_stats["kinetic_temperature"])
    error = abs(kinetic.mean() - 1.0)
    assert error < Z_TOLERANCE * batch_means_standard_error(kinetic) + 0.03, kinetic.mean()


def test_thermostat_settles_at_diffusion_over_temperature_with_exact_gradients():
    # No minibatch noise: ξ̄ = A / T, and the draws follow π^(1/T).
    temperature, diffusion, step_size = 0.5, 2.0, 0.05
    with pm.Model():
        pm.Normal("x", 0, 1, shape=D)
        step = sgmc.SGNHT(
            step_size=step_size,
            diffusion=diffusion,
            temperature=temperature,
            initial_thermostat=1.0,
            steps_per_draw=5,
        )
        idata = pm.sample(
            draws=3000, tune=300, step=step, random_seed=seed_for("sgnht_exact"), **SAMPLE_KWARGS
        )
    friction, expected = settled_sgnht_covariance(
        np.eye(D), np.zeros((D, D)), step_size, diffusion, temperature
    )
    np.testing.assert_allclose(friction, diffusion / temperature, rtol=0.15)
    thermostat = np.asarray(idata.sample_stats["thermostat"])
    np.testing.assert_allclose(thermostat.mean(), friction, rtol=0.05)
    assert_gaussian_moments(
        np.asarray(idata.posterior["x"]), np.zeros(D), np.diag(expected)[:D], label="SGNHT T"
    )
    kinetic = np.asarray(idata.sample_stats["kinetic_temperature"])
    np.testing.assert_allclose(kinetic.mean(), temperature, rtol=0.05)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"diffusion": -1.0}, "`diffusion` must be non-negative"),
        ({"diffusion": 1.0, "temperature": 0.0}, "needs diffusion=0"),
        ({"diffusion": 1.0, "initial_thermostat": np.inf}, "finite real number"),
        ({"diffusion": 1.0, "step_size": 0.0}, "must be positive"),
    ],
)
def test_bad_configuration_is_refused(options, match):
    with pm.Model():
        pm.Normal("x", 0, 1)
        with pytest.raises(ValueError, match=match):
            sgmc.SGNHT(**{"step_size": 0.1, **options})
