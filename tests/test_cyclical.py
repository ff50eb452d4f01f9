"""Cyclical step sizes through ``pm.sample``: phases recorded, sampling draws kept, and the
kept draws have the variance the deterministic schedule implies."""

import numpy as np
import pymc as pm
import pytest

from helpers import assert_gaussian_moments, seed_for

import pymc_sgmcmc as sgmc

from pymc_sgmcmc.diagnostics import keep_sampling_phase

SD, STEPS_PER_DRAW, CYCLE = np.array([1.0, 2.0]), 5, 100


def sgld_variance_along(schedule, steps: int, variance: np.ndarray, temperature=1.0):
    """Exact variance after each of ``steps`` SGLD steps on N(0, s²) with exact gradients:
    ``v_{k+1} = (1 − η_k / s²)² v_k + 2 η_k T``."""
    values = np.empty((steps, variance.size))
    for k, step_size in enumerate(schedule(np.arange(steps))):
        variance = (1 - step_size / SD**2) ** 2 * variance + 2 * step_size * temperature
        values[k] = variance
    return values


def test_kept_draws_follow_the_cyclical_schedule():
    schedule = sgmc.schedules.cyclical(0.8, cycle_length=CYCLE, exploration_fraction=0.6)
    tune, draws = 100, 3000
    with pm.Model():
        pm.Normal("x", 0, SD, shape=2)
        step = sgmc.SGLD(step_size=schedule, steps_per_draw=STEPS_PER_DRAW)
        idata = pm.sample(
            draws=draws,
            tune=tune,
            chains=2,
            cores=1,
            step=step,
            random_seed=seed_for("cyclical"),
            progressbar=False,
            compute_convergence_checks=False,
        )
    # The schedule counts SG steps from each chain's start, tuning included; a draw's
    # phase is that of its last step.
    last_steps = STEPS_PER_DRAW * (tune + np.arange(draws) + 1) - 1
    in_phase = schedule.in_sampling_phase(last_steps)
    recorded = np.asarray(idata.sample_stats["sampling_phase"]).astype(bool)
    np.testing.assert_array_equal(recorded, np.broadcast_to(in_phase, recorded.shape))
    kept = keep_sampling_phase(idata)
    assert kept.posterior.sizes["draw"] == in_phase.sum() == 0.4 * draws
    np.testing.assert_array_equal(
        np.asarray(kept.posterior["x"]), np.asarray(idata.posterior["x"])[:, in_phase]
    )
    # Started far from stationarity, the chain's variance follows the recursion; after
    # the first cycles it repeats the same pattern every cycle.
    variance = sgld_variance_along(schedule, int(last_steps[-1]) + 1, SD**2)[last_steps]
    expected_kept = variance[in_phase].mean(axis=0)
    assert_gaussian_moments(
        np.asarray(kept.posterior["x"]), np.zeros(2), expected_kept, label="cyclical kept"
    )
    # The large exploration steps are biased: their draws are wider than the kept ones
    # (visibly so where η₀ is close to the variance, in the first coordinate).
    assert variance[~in_phase, 0].mean() > 1.2 * expected_kept[0]


def test_keep_sampling_phase_needs_a_cyclical_trace():
    with pm.Model():
        pm.Normal("x", 0, 1)
        step = sgmc.SGLD(step_size=0.1)
        idata = pm.sample(draws=20, tune=0, chains=1, step=step, progressbar=False)
    assert "sampling_phase" not in idata.sample_stats
    with pytest.raises(ValueError, match="no `sampling_phase` sampler stat"):
        keep_sampling_phase(idata)


def test_keep_sampling_phase_leaves_warmup_groups_whole():
    schedule = sgmc.schedules.cyclical(0.1, cycle_length=20)
    with pm.Model():
        pm.Normal("x", 0, 1)
        step = sgmc.SGLD(step_size=schedule, steps_per_draw=2)
        idata = pm.sample(
            draws=40,
            tune=15,
            chains=1,
            step=step,
            random_seed=1,
            progressbar=False,
            compute_convergence_checks=False,
            discard_tuned_samples=False,
        )
    kept = keep_sampling_phase(idata)
    assert kept.posterior.sizes["draw"] == kept.sample_stats.sizes["draw"] == 20
    assert np.all(np.asarray(kept.sample_stats["sampling_phase"]).astype(bool))
    assert kept.warmup_posterior.sizes["draw"] == 15
