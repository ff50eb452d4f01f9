"""What a new sampler takes (an update rule and a short step class, nothing else), and a
new gradient estimator (a subclass of the protocol, passed to any sampler).

The sampler here, SGLD with a fixed diagonal preconditioner (a "mass"), is defined in this
file only; it gets minibatches, the compiled multi-step kernel, chain starts, divergence
handling, the noise monitor and ``pm.sample`` integration from the parts it is composed of.
"""

from typing import NamedTuple

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest

from helpers import assert_gaussian_moments, minibatch_mean_model, seed_for

import pymc_sgmcmc as sgmc

from pymc_sgmcmc.gradients import MinibatchGradient, NamedInput
from pymc_sgmcmc.step_methods import StochasticGradientStep
from pymc_sgmcmc.step_methods.noise_monitor import NoiseMeasures


class NoAuxiliary(NamedTuple):
    """Nothing beside the position."""


def scaled_langevin_update(position, gradient, step_size, temperature, noise, scale):
    """``θ + η S g + sqrt(2 η T S) ξ``: SGLD on the coordinates ``S^{-1/2} θ``."""
    return (
        position
        + step_size * scale * gradient
        + pt.sqrt(2 * step_size * temperature * scale) * noise
    )


class ScaledSGLD(StochasticGradientStep):
    name = "scaled_sgld"
    _auxiliary_type = NoAuxiliary

    def __init__(self, vars=None, *, step_size, scale, **options):
        self.scale = np.asarray(scale, dtype=float)
        super().__init__(vars, step_size=step_size, **options)

    def _parameters(self):
        return {**super()._parameters(), "scale": self.scale}

    def _transition(self, position, auxiliary, gradient, step_size, noise, parameters):
        new_position = scaled_langevin_update(
            position, gradient, step_size, parameters["temperature"], noise, parameters["scale"]
        )
        return new_position, auxiliary

    def _noise_measures(self, step_size, gradient_variance):
        per_coordinate = step_size * self.scale * gradient_variance / (2 * self.temperature)
        ratio = np.mean(per_coordinate)
        return NoiseMeasures(ratio, ratio, per_coordinate)


QUIET = {"progressbar": False, "compute_convergence_checks": False}


def test_a_sampler_defined_outside_the_package_samples_a_badly_scaled_gaussian():
    # Exact gradients on N(0, diag(σ²)), σ four decades apart: with S = σ² every coordinate
    # is whitened, and the stationary variance is σ² / (1 − η/2) in each.
    sd = np.array([0.01, 100.0])
    step_size = 0.1
    with pm.Model():
        pm.Normal("x", 0.0, sd, shape=2)
        step = ScaledSGLD(step_size=step_size, scale=sd**2, steps_per_draw=5)
        idata = pm.sample(
            draws=2000, tune=200, chains=2, cores=1, step=step, random_seed=3, **QUIET
        )
    draws = idata.posterior["x"].values
    assert_gaussian_moments(draws, np.zeros(2), sd**2 / (1 - step_size / 2), label="ScaledSGLD")
    assert {"step_size", "minibatch_logp", "diverging", "noise_ratio"} <= set(
        idata.sample_stats.data_vars
    )
    # Exact gradients: no minibatch noise.
    assert np.all(idata.sample_stats["noise_ratio"].values == 0)


def test_a_new_sampler_gets_minibatches_and_the_noise_monitor():
    data = np.random.default_rng(seed_for("new sampler")).normal(2.0, 1.0, size=1000)
    with minibatch_mean_model(data, batch_size=100, prior_sd=10.0):
        step = ScaledSGLD(step_size=1e-5, scale=1.0, steps_per_draw=10)
        idata = pm.sample(draws=300, tune=100, chains=1, step=step, random_seed=4, **QUIET)
    monitor = step.noise_monitor
    # The phase's mean estimate of V (one pair alone is a chi-square(1) draw times V).
    ratio = monitor.measures(1e-5, monitor.mean_variance).ratio
    # V = N² var(y) / B for this model: the ratio η V / (2T).
    expected = 1e-5 * 1000**2 * data.var() / 100 / 2
    assert monitor.pair_count >= 30
    assert 0.5 * expected < ratio < 2 * expected
    assert np.all(idata.sample_stats["noise_ratio"].values > 0)
    # Four posterior sds (1/sqrt(N)).
    assert abs(idata.posterior["mu"].values.mean() - data.mean()) < 4 / np.sqrt(data.size)


class ClippedGradient(MinibatchGradient):
    """Minibatch gradients clipped to a maximum norm: a new estimator, defined here only."""

    def __init__(self, target, *, max_norm):
        super().__init__(target)
        self.max_norm = max_norm
        self.inputs = (NamedInput("max_norm", target.dtype, 0),)

    def gradient(self, position, indices, inputs, minibatch_gradient=None):
        gradient = super().gradient(position, indices, inputs, minibatch_gradient)
        norm = pt.linalg.norm(gradient)
        return gradient * pt.minimum(1.0, inputs["max_norm"] / norm)

    def input_values(self):
        return {"max_norm": np.asarray(self.max_norm)}


def test_a_new_gradient_estimator_plugs_into_every_sampler():
    data = np.random.default_rng(seed_for("new estimator")).normal(2.0, 1.0, size=1000)
    for make_step in (
        lambda estimator: sgmc.SGLD(step_size=1e-5, gradient_estimator=estimator),
        lambda estimator: sgmc.SGHMC(step_size=1e-3, friction=50.0, gradient_estimator=estimator),
        lambda estimator: ScaledSGLD(step_size=1e-5, scale=1.0, gradient_estimator=estimator),
    ):
        with minibatch_mean_model(data, batch_size=100, prior_sd=10.0):
            step = make_step(lambda target: ClippedGradient(target, max_norm=50.0))
            idata = pm.sample(draws=50, tune=10, chains=1, step=step, random_seed=5, **QUIET)
        # The chain starts about 2 from the mode (gradient about 2000): clipped to 50.
        assert np.max(idata.sample_stats["grad_norm"].values) <= 50.0 * (1 + 1e-9)


def test_a_bad_gradient_estimator_is_refused_clearly():
    data = np.zeros(10)
    with minibatch_mean_model(data, batch_size=5, prior_sd=1.0):
        with pytest.raises(ValueError, match="either control_variate or gradient_estimator"):
            sgmc.SGLD(step_size=1e-3, control_variate=True, gradient_estimator=MinibatchGradient)
        with pytest.raises(TypeError, match="must be a callable"):
            sgmc.SGLD(step_size=1e-3, gradient_estimator="clipped")
        with pytest.raises(TypeError, match="must return a pymc_sgmcmc.gradients"):
            sgmc.SGLD(step_size=1e-3, gradient_estimator=lambda target: target)
