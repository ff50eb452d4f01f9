"""Exact algebra of the update rules, without PyMC."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from pymc_sgmcmc.dynamics import (
    preconditioned_sgld_update,
    rmsprop_preconditioner,
    sghmc_update,
    sgld_update,
    sgnht_update,
)

D = 4


def compile_sgld():
    position, gradient, noise = pt.dvectors("position", "gradient", "noise")
    step_size, temperature = pt.dscalars("step_size", "temperature")
    new = sgld_update(position, gradient, step_size, temperature, noise)
    return pytensor.function([position, gradient, step_size, temperature, noise], new)


def compile_sghmc():
    position, momentum, gradient, noise = pt.dvectors("position", "momentum", "gradient", "noise")
    step_size, friction, mass, gradient_noise, temperature = pt.dscalars(
        "step_size", "friction", "mass", "gradient_noise", "temperature"
    )
    new = sghmc_update(
        position,
        momentum,
        gradient,
        step_size,
        friction=friction,
        mass=mass,
        gradient_noise=gradient_noise,
        temperature=temperature,
        noise=noise,
    )
    inputs = [position, momentum, gradient, step_size, friction, mass, gradient_noise]
    return pytensor.function([*inputs, temperature, noise], new)


@pytest.fixture(scope="module")
def sgld():
    return compile_sgld()


@pytest.fixture(scope="module")
def sghmc():
    return compile_sghmc()


def vectors(seed, count):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=D) for _ in range(count)]


def test_sgld_matches_its_equation(sgld):
    position, gradient, noise = vectors(1, 3)
    expected = position + 0.1 * gradient + np.sqrt(2 * 0.1 * 0.5) * noise
    np.testing.assert_allclose(sgld(position, gradient, 0.1, 0.5, noise), expected)


def test_sgld_zero_gradient_zero_temperature_does_not_move(sgld):
    position, noise = vectors(2, 2)
    np.testing.assert_array_equal(sgld(position, np.zeros(D), 0.3, 0.0, noise), position)


def test_sgld_zero_temperature_is_gradient_ascent(sgld):
    position, gradient, noise = vectors(3, 3)
    np.testing.assert_allclose(sgld(position, gradient, 0.2, 0.0, noise), position + 0.2 * gradient)


def test_sghmc_matches_its_equations(sghmc):
    position, momentum, gradient, noise = vectors(4, 4)
    h, friction, mass, b_hat, temperature = 0.1, 3.0, 2.0, 0.5, 1.5
    new_momentum = (
        momentum
        + h * gradient
        - h * friction / mass * momentum
        + np.sqrt(2 * h * (temperature * friction - b_hat)) * noise
    )
    new_position = position + h * new_momentum / mass
    result = sghmc(position, momentum, gradient, h, friction, mass, b_hat, temperature, noise)
    np.testing.assert_allclose(result[0], new_position)
    np.testing.assert_allclose(result[1], new_momentum)


def test_sghmc_zero_gradient_zero_temperature_zero_momentum_does_not_move(sghmc):
    position, noise = vectors(5, 2)
    new_position, new_momentum = sghmc(
        position, np.zeros(D), np.zeros(D), 0.1, 2.0, 1.0, 0.0, 0.0, noise
    )
    np.testing.assert_array_equal(new_position, position)
    np.testing.assert_array_equal(new_momentum, np.zeros(D))


def test_sghmc_friction_shrinks_momentum(sghmc):
    position, momentum, noise = vectors(6, 3)
    _, new_momentum = sghmc(position, momentum, np.zeros(D), 0.1, 2.0, 1.0, 0.0, 0.0, noise)
    np.testing.assert_allclose(new_momentum, (1 - 0.1 * 2.0) * momentum)


def test_sghmc_high_friction_limit_is_sgld(sgld, sghmc):
    # M = 1, Γ = 1/h forgets the momentum: one SGHMC step is one SGLD step with η = h².
    position, momentum, gradient, noise = vectors(7, 4)
    h, temperature = 0.05, 0.8
    new_position, _ = sghmc(position, momentum, gradient, h, 1 / h, 1.0, 0.0, temperature, noise)
    expected = sgld(position, gradient, h**2, temperature, noise)
    np.testing.assert_allclose(new_position, expected, rtol=1e-12, atol=1e-12)


def test_sghmc_zero_temperature_is_heavy_ball_sgd(sghmc):
    # v = h p / M obeys v' = (1 − hΓ/M) v + (h²/M) g and θ' = θ + v'.
    position, momentum, gradient, noise = vectors(8, 4)
    h, friction, mass = 0.1, 4.0, 2.5
    velocity = h * momentum / mass
    new_velocity = (1 - h * friction / mass) * velocity + h**2 / mass * gradient
    new_position, new_momentum = sghmc(
        position, momentum, gradient, h, friction, mass, 0.0, 0.0, noise
    )
    np.testing.assert_allclose(new_position, position + new_velocity)
    np.testing.assert_allclose(h * new_momentum / mass, new_velocity)


def test_sghmc_injects_no_noise_when_friction_matches_gradient_noise(sghmc):
    position, momentum, gradient, noise = vectors(9, 4)
    with_noise = sghmc(position, momentum, gradient, 0.1, 2.0, 1.0, 1.0, 0.5, noise)
    without_noise = sghmc(position, momentum, gradient, 0.1, 2.0, 1.0, 1.0, 0.5, np.zeros(D))
    np.testing.assert_allclose(with_noise[0], without_noise[0])


def test_sgnht_is_sghmc_with_the_thermostat_as_friction():
    # With unit mass, friction ξ and T Γ − B̂ = A, SGHMC's (θ, p) update is SGNHT's; the
    # thermostat then moves by h (pᵀp/d − T).
    position, momentum, gradient, noise = pt.dvectors("position", "momentum", "gradient", "noise")
    thermostat, step_size, diffusion, temperature = pt.dscalars("xi", "h", "A", "T")
    sgnht = pytensor.function(
        [position, momentum, thermostat, gradient, step_size, diffusion, temperature, noise],
        sgnht_update(
            position,
            momentum,
            thermostat,
            gradient,
            step_size,
            diffusion=diffusion,
            temperature=temperature,
            noise=noise,
        ),
    )
    rng = np.random.default_rng(7)
    theta, p, g, xi = rng.normal(size=D), rng.normal(size=D), rng.normal(size=D), rng.normal(size=D)
    h, thermostat_value, a, t = 0.1, 1.7, 0.6, 0.8
    new_theta, new_p, new_thermostat = sgnht(theta, p, thermostat_value, g, h, a, t, xi)
    expected_theta, expected_p = compile_sghmc()(
        theta, p, g, h, thermostat_value, 1.0, t * thermostat_value - a, t, xi
    )
    np.testing.assert_allclose(new_theta, expected_theta, rtol=1e-12)
    np.testing.assert_allclose(new_p, expected_p, rtol=1e-12)
    np.testing.assert_allclose(new_thermostat, thermostat_value + h * (np.mean(new_p**2) - t))


def compile_rmsprop():
    square_average, gradient = pt.dvectors("square_average", "gradient")
    decay, epsilon, adapt = pt.dscalars("decay", "epsilon", "adapt")
    return pytensor.function(
        [square_average, gradient, decay, epsilon, adapt],
        rmsprop_preconditioner(square_average, gradient, decay=decay, epsilon=epsilon, adapt=adapt),
    )


def test_rmsprop_starts_at_the_first_square_then_averages_or_freezes():
    rmsprop = compile_rmsprop()
    g = np.array([2.0, -0.5, 0.1, 3.0])
    v, preconditioner = rmsprop(np.zeros(D), g, 0.9, 1e-3, 1.0)
    np.testing.assert_allclose(v, g**2)
    np.testing.assert_allclose(preconditioner, 1 / (1e-3 + np.abs(g)))
    g2 = np.array([1.0, 1.0, 1.0, 1.0])
    v2, _ = rmsprop(v, g2, 0.9, 1e-3, 1.0)
    np.testing.assert_allclose(v2, 0.9 * g**2 + 0.1 * g2**2)
    frozen, frozen_preconditioner = rmsprop(v, g2, 0.9, 1e-3, 0.0)
    np.testing.assert_array_equal(frozen, v)
    np.testing.assert_allclose(frozen_preconditioner, 1 / (1e-3 + np.sqrt(v)))


def test_preconditioned_sgld_follows_its_formula_and_is_sgld_at_unit_preconditioner():
    position, gradient, noise, preconditioner = pt.dvectors("position", "gradient", "noise", "G")
    step_size, temperature = pt.dscalars("step_size", "temperature")
    update = pytensor.function(
        [position, gradient, step_size, temperature, noise, preconditioner],
        preconditioned_sgld_update(
            position, gradient, step_size, temperature, noise, preconditioner
        ),
    )
    rng = np.random.default_rng(11)
    theta, g, xi = rng.normal(size=D), rng.normal(size=D), rng.normal(size=D)
    G = np.array([0.5, 2.0, 1.0, 0.1])
    np.testing.assert_allclose(
        update(theta, g, 0.05, 0.7, xi, G),
        theta + 0.05 * G * g + np.sqrt(2 * 0.05 * 0.7 * G) * xi,
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        update(theta, g, 0.05, 0.7, xi, np.ones(D)),
        compile_sgld()(theta, g, 0.05, 0.7, xi),
        rtol=1e-12,
    )
