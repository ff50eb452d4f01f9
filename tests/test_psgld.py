"""pSGLD: RMSprop's diagonal lets one step size serve very different scales."""

import numpy as np
import pymc as pm
import pytest

from helpers import assert_gaussian_moments, seed_for

import pymc_sgmcmc as sgmc

SD = np.array([0.05, 1.0])


def test_frozen_preconditioner_gives_the_exact_discretised_variance():
    # With G frozen after tuning, each coordinate is SGLD with step η G_j on N(0, s_j²):
    # stationary variance s² / (1 − η G / (2 s²)), exactly.
    step_size = 0.01
    with pm.Model():
        pm.Normal("x", 0, SD, shape=2)
        step = sgmc.pSGLD(step_size=step_size, steps_per_draw=10)
        idata = pm.sample(
            draws=4000,
            tune=300,
            chains=1,
            step=step,
            random_seed=seed_for("psgld"),
            progressbar=False,
            compute_convergence_checks=False,
        )
    preconditioner = step.preconditioner_values
    # RMSprop's G ≈ 1 / rms(g) = s for this target: the steps equalise in position. The
    # running average spans about 100 autocorrelated steps, so G scatters by ~15-20%; the
    # variance check below uses the G actually frozen.
    assert np.all((0.5 * SD < preconditioner) & (preconditioner < 2 * SD)), preconditioner
    scaled_step = step_size * preconditioner / SD**2
    expected = SD**2 / (1 - scaled_step / 2)
    assert expected[0] > 1.05 * SD[0] ** 2  # the bias is visible in the narrow coordinate
    assert_gaussian_moments(np.asarray(idata.posterior["x"]), np.zeros(2), expected, label="pSGLD")


def test_plain_sgld_at_that_step_size_diverges():
    with pm.Model():
        pm.Normal("x", 0, SD, shape=2)
        # η / s² = 4 > 2 in the narrow coordinate: it grows threefold per step.
        step = sgmc.SGLD(step_size=0.01, steps_per_draw=10, on_divergence="raise")
        with pytest.raises(sgmc.SamplerDivergenceError, match="diverged"):
            pm.sample(draws=500, tune=0, chains=1, step=step, random_seed=1, progressbar=False)


@pytest.mark.parametrize("adapt", ["tuning", "always"])
def test_preconditioner_adapts_while_tuning_and_then_as_asked(adapt):
    with pm.Model() as model:
        pm.Normal("x", 0, SD, shape=2)
        step = sgmc.pSGLD(step_size=0.01, preconditioner=sgmc.RMSprop(adapt=adapt))
    point = model.initial_point()
    step.tune = True
    point, _ = step.step(point)
    first = step.preconditioner_values
    # v starts at the first gradient's square, not at a tenth of it.
    assert np.all(np.isfinite(first))
    for _ in range(20):
        point, _ = step.step(point)
    tuned = step.preconditioner_values
    assert not np.array_equal(first, tuned)
    step.stop_tuning()
    for _ in range(20):
        point, _ = step.step(point)
    if adapt == "tuning":
        np.testing.assert_array_equal(step.preconditioner_values, tuned)
    else:
        assert not np.array_equal(step.preconditioner_values, tuned)


def test_first_step_uses_the_gradient_scale():
    # v₀ = g₀² makes the first preconditioned step move each coordinate by about η.
    with pm.Model() as model:
        pm.Normal("x", 0, SD, shape=2)
        step = sgmc.pSGLD(step_size=0.01, temperature=0.0, initial_jitter=0.0)
    point = {"x": np.array([0.1, 0.1])}
    new_point, _ = step.step(point)
    moved = np.abs(new_point["x"] - point["x"])
    np.testing.assert_allclose(moved, 0.01, rtol=1e-3)
    assert model is not None


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"decay": 1.0}, r"`decay` must lie in \[0, 1\)"),
        ({"decay": -0.1}, r"`decay` must lie in \[0, 1\)"),
        ({"epsilon": 0.0}, "`epsilon` must be positive"),
        ({"adapt": "never"}, '`adapt` must be "tuning" or "always"'),
    ],
)
def test_bad_preconditioner_is_refused(options, match):
    with pytest.raises(ValueError, match=match):
        sgmc.RMSprop(**options)


def test_preconditioner_must_be_rmsprop():
    with pm.Model():
        pm.Normal("x", 0, 1)
        with pytest.raises(TypeError, match="RMSprop"):
            sgmc.SGLD(step_size=0.1, preconditioner="rmsprop")
