"""Statistical correctness through ``pm.sample`` on targets known in closed form.

Constant-step SG-MCMC is biased: the tests check the exact stationary moments of the
discretised, minibatch-noisy chain (a linear AR(1) process on Gaussian targets), so a
wrong noise scale, a missing ``N/B`` or a lost momentum shows up as a clear miss.
Tolerances are Monte Carlo standard errors from batch means (see ``helpers``).
"""

import numpy as np
import pymc as pm
import pytest
import scipy.stats

from helpers import (
    assert_gaussian_moments,
    linear_gaussian_posterior,
    minibatch_gradient_covariance,
    seed_for,
    sghmc_stationary_covariance,
    sgld_stationary_covariance,
)

import pymc_sgmcmc as sgmc

from pymc_sgmcmc import schedules

SAMPLE_KWARGS = {"chains": 2, "cores": 1, "progressbar": False, "compute_convergence_checks": False}
N, D, BATCH, NOISE_SD, PRIOR_SD = 1000, 2, 100, 1.0, 1.0


def posterior_draws(idata, name):
    draws = np.asarray(idata.posterior[name])
    return draws.reshape(*draws.shape[:2], -1)


@pytest.fixture(scope="module")
def regression():
    """Bayesian linear regression with known noise: Gaussian posterior in closed form."""
    rng = np.random.default_rng(seed_for("regression"))
    X = rng.normal(size=(N, D)) * np.array([1.0, 0.7]) + 0.3
    y = X @ np.array([0.8, -0.5]) + NOISE_SD * rng.normal(size=N)
    mean, covariance, precision = linear_gaussian_posterior(X, y, NOISE_SD, PRIOR_SD)
    gradient_covariance = minibatch_gradient_covariance(X, y, mean, NOISE_SD, BATCH)
    with pm.Model() as model:
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH)
        w = pm.Normal("w", 0, PRIOR_SD, shape=D)
        pm.Normal("y", X_batch @ w, NOISE_SD, observed=y_batch, total_size=N)
    return model, mean, covariance, precision, gradient_covariance


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sgld_full_batch_variance_is_the_discretised_one(temperature):
    # Exact gradients on N(0, σ²): stationary variance T σ² / (1 − η/(2σ²)).
    sd, step_size = np.array([1.0, 1.5]), 0.5
    with pm.Model():
        pm.Normal("x", 0, sd, shape=2)
        step = sgmc.SGLD(step_size=step_size, temperature=temperature)
        idata = pm.sample(
            draws=3000, tune=100, step=step, random_seed=seed_for("full_batch"), **SAMPLE_KWARGS
        )
    expected = temperature * sd**2 / (1 - step_size / (2 * sd**2))
    assert_gaussian_moments(posterior_draws(idata, "x"), np.zeros(2), expected, label="SGLD")
    # A loose "≈ T σ²" would pass a chain that lost the discretisation factor; this cannot.
    assert np.all(np.abs(expected - temperature * sd**2) > 0.1 * expected)


def test_helper_matches_the_guide_formula():
    precision = np.diag([1.0, 1 / 2.25])
    covariance = sgld_stationary_covariance(precision, np.zeros((2, 2)), 0.5, 1.0)
    np.testing.assert_allclose(np.diag(covariance), [1 / (1 - 0.25), 2.25 / (1 - 0.5 / 4.5)])


def test_sgld_minibatch_regression(regression):
    model, mean, covariance, precision, gradient_covariance = regression
    step_size = 5e-5
    with model:
        step = sgmc.SGLD(step_size=step_size, steps_per_draw=10)
        idata = pm.sample(
            draws=2000, tune=200, step=step, random_seed=seed_for("sgld_reg"), **SAMPLE_KWARGS
        )
    expected = sgld_stationary_covariance(precision, gradient_covariance, step_size, 1.0)
    assert_gaussian_moments(posterior_draws(idata, "w"), mean, np.diag(expected), label="SGLD")


def test_sghmc_minibatch_regression(regression):
    model, mean, covariance, precision, gradient_covariance = regression
    step_size, friction, mass, gradient_noise = 0.01, 60.0, 1.0, 20.0
    with model:
        step = sgmc.SGHMC(
            step_size=step_size,
            friction=friction,
            mass=mass,
            gradient_noise=gradient_noise,
            steps_per_draw=10,
        )
        idata = pm.sample(
            draws=5000, tune=200, step=step, random_seed=seed_for("sghmc_reg"), **SAMPLE_KWARGS
        )
    expected = sghmc_stationary_covariance(
        precision, gradient_covariance, step_size, friction, mass, gradient_noise, 1.0
    )
    assert_gaussian_moments(
        posterior_draws(idata, "w"), mean, np.diag(expected[:D, :D]), label="SGHMC"
    )
    # The kinetic-energy stat is ½ pᵀM⁻¹p of a (nearly) Gaussian p with covariance Σ_p:
    # mean ½ tr(Σ_p)/M and variance ½ tr((Σ_p/M)²).
    kinetic = np.asarray(idata.sample_stats["kinetic_energy"])[:, :, None]
    momentum_covariance = expected[D:, D:] / mass
    assert_gaussian_moments(
        kinetic,
        [0.5 * np.trace(momentum_covariance)],
        [0.5 * np.trace(momentum_covariance @ momentum_covariance)],
        label="kinetic energy",
    )
    np.testing.assert_allclose(np.asarray(idata.sample_stats["gradient_noise"]), gradient_noise)


def test_sghmc_estimated_gradient_noise_recovers_the_posterior(regression):
    model, mean, covariance, precision, gradient_covariance = regression
    step_size, friction = 0.01, 80.0
    with model:
        step = sgmc.SGHMC(
            step_size=step_size, friction=friction, gradient_noise="estimate", steps_per_draw=10
        )
        idata = pm.sample(
            draws=2000, tune=1000, step=step, random_seed=seed_for("sghmc_est"), **SAMPLE_KWARGS
        )
    # V̂ from the 500 gradient pairs of the second half of tuning: relative standard error
    # about sqrt(2/500) ≈ 6%.
    np.testing.assert_allclose(step.gradient_variance, np.diag(gradient_covariance), rtol=0.25)
    # With B̂ = h V̂ / 2 the friction absorbs the diagonal minibatch noise: the chain
    # targets the posterior up to discretisation error and off-diagonal noise.
    expected = sghmc_stationary_covariance(
        precision,
        gradient_covariance - np.diag(np.diag(gradient_covariance)),
        step_size,
        friction,
        1.0,
        0.0,
        1.0,
    )
    assert_gaussian_moments(
        posterior_draws(idata, "w"), mean, np.diag(expected[:D, :D]), label="SGHMC estimate"
    )
    stats = idata.sample_stats
    np.testing.assert_allclose(
        np.asarray(stats["gradient_noise"])[0],
        step_size * np.mean(step.gradient_variance) / 2,
        rtol=0.5,
    )


def test_transformed_variable_gamma_poisson():
    # λ ~ Gamma(2, 1), y_i ~ Poisson(λ): posterior Gamma(2 + Σy, 1 + N). SGLD moves log λ,
    # so a missing log-Jacobian would shift the shape by one (≈ 7 standard errors here).
    rng = np.random.default_rng(seed_for("gamma_poisson"))
    counts = rng.poisson(3.0, size=20)
    shape, rate = 2 + counts.sum(), 1 + counts.size
    with pm.Model():
        rate_parameter = pm.Gamma("lam", alpha=2.0, beta=1.0)
        pm.Poisson("y", rate_parameter, observed=counts)
        step = sgmc.SGLD(step_size=0.05 / shape, steps_per_draw=20)
        idata = pm.sample(
            draws=2000, tune=100, step=step, random_seed=seed_for("gp"), **SAMPLE_KWARGS
        )
    assert "lam_log__" not in idata.posterior
    draws = posterior_draws(idata, "lam")
    assert np.all(draws > 0)
    posterior = scipy.stats.gamma(shape, scale=1 / rate)
    assert_gaussian_moments(draws, [posterior.mean()], [posterior.var()], label="Gamma")


def test_zero_temperature_is_optimisation():
    # Full-batch SGD and SGD with momentum converge to the mode of a Gaussian posterior.
    rng = np.random.default_rng(seed_for("sgd"))
    X = rng.normal(size=(200, 2))
    y = X @ np.array([1.0, -1.0]) + rng.normal(size=200)
    mode, _, _ = linear_gaussian_posterior(X, y, 1.0, 1.0)
    for step_factory in (
        lambda: sgmc.SGLD(step_size=2e-3, temperature=0.0),
        lambda: sgmc.SGHMC(step_size=0.03, friction=10.0, temperature=0.0),
    ):
        with pm.Model():
            w = pm.Normal("w", 0, 1, shape=2)
            pm.Normal("y", X @ w, 1.0, observed=y)
            idata = pm.sample(
                draws=300, tune=0, step=step_factory(), random_seed=1, **SAMPLE_KWARGS
            )
        np.testing.assert_allclose(posterior_draws(idata, "w")[:, -1], [mode, mode], atol=1e-6)


def test_schedule_runs_per_chain_and_is_recorded():
    schedule = schedules.polynomial(0.01, b=10.0, gamma=0.8)
    with pm.Model():
        pm.Normal("x", 0, 1)
        step = sgmc.SGLD(step_size=schedule, steps_per_draw=3)
        idata = pm.sample(draws=50, tune=10, step=step, random_seed=2, **SAMPLE_KWARGS)
    # Draw i (counting tuning) ends with SG step k = 3 (i + 1) − 1, counted from each chain's start.
    last_steps = 3 * (np.arange(10, 60) + 1) - 1
    recorded = np.asarray(idata.sample_stats["step_size"])
    np.testing.assert_allclose(recorded, np.tile(schedule(last_steps), (2, 1)))
