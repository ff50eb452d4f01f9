"""The ``noise_ratio`` stat: exact values, its warning, its cost to the chain, its summary.

On ``y_i ~ N(mu, 1)`` fed through ``pm.Minibatch`` the per-datum score ``y_i − mu`` has
variance ``var(y)`` over the data set at every ``mu``, so the minibatch gradient
(``N/B`` times a sum of ``B`` rows drawn with replacement) has variance exactly
``V = N²/B · var(y)`` (``ddof=0``), independent of the position. One gradient pair
estimates it by ``V χ²₁`` (mean ``V``, variance ``2V²``): the tolerances follow from the
number of pairs.
"""

import warnings

import numpy as np
import pymc as pm
import pytest

from helpers import (
    Z_TOLERANCE,
    assert_restoring_replays_the_next_draw,
    make_idata,
    minibatch_mean_model,
    saved_and_loaded,
    seed_for,
)

import pymc_sgmcmc as sgmc

from pymc_sgmcmc.diagnostics import NoiseSummary, add_noise_summary_to_idata, noise_summary

N, BATCH, PRIOR_SD = 1000, 50, 10.0
QUIET = {"cores": 1, "progressbar": False, "compute_convergence_checks": False}


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(seed_for("noise data")).normal(0.5, 1.0, size=N)


@pytest.fixture(scope="module")
def gradient_variance(data):
    return N**2 / BATCH * data.var()


@pytest.fixture(scope="module")
def mean_model(data):
    return minibatch_mean_model(data, batch_size=BATCH, prior_sd=PRIOR_SD)


def sample(model, step, *, draws=500, tune=100, chains=2, seed=1):
    with model:
        return pm.sample(
            draws=draws, tune=tune, chains=chains, step=step, random_seed=seed, **QUIET
        )


def noise_ratios(idata):
    return np.asarray(idata.sample_stats["noise_ratio"])


def assert_mean_ratio(recorded, expected):
    """Mean of single-pair ratios ``expected · χ²₁``: standard error ``expected sqrt(2/n)``."""
    standard_error = expected * np.sqrt(2 / recorded.size)
    assert abs(recorded.mean() - expected) < Z_TOLERANCE * standard_error, (
        f"mean noise_ratio {recorded.mean():.4g} vs exact {expected:.4g} "
        f"({(recorded.mean() - expected) / standard_error:.1f} standard errors)"
    )


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sgld_noise_ratio_matches_the_exact_value(mean_model, gradient_variance, temperature):
    step_size = 3e-5
    with mean_model:
        step = sgmc.SGLD(
            step_size=step_size,
            temperature=temperature,
            steps_per_draw=5,
            noise_estimate_interval=1,
        )
    recorded = noise_ratios(sample(mean_model, step, seed=seed_for(f"sgld ratio {temperature}")))
    # Every draw after tuning takes its own pair: 1000 independent V χ²₁ estimates.
    expected = step_size * gradient_variance / (2 * temperature)
    assert_mean_ratio(recorded, expected)
    assert recorded.dtype == np.float64 and np.all(recorded > 0)


def test_sghmc_noise_ratio_matches_the_exact_value(mean_model, gradient_variance):
    step_size, friction, gradient_noise = 1e-3, 50.0, 5.0
    with mean_model:
        step = sgmc.SGHMC(
            step_size=step_size,
            friction=friction,
            gradient_noise=gradient_noise,
            steps_per_draw=5,
            noise_estimate_interval=1,
        )
    recorded = noise_ratios(sample(mean_model, step, seed=seed_for("sghmc ratio")))
    # Minibatch noise h² V over injected 2h (TΓ − B̂) in the momentum: 10 / 45 here.
    expected = step_size * gradient_variance / (2 * (friction - gradient_noise))
    assert_mean_ratio(recorded, expected)


def test_estimate_is_carried_between_intervals(mean_model):
    interval, tune = 7, 70
    with mean_model:
        step = sgmc.SGLD(step_size=3e-5, steps_per_draw=2, noise_estimate_interval=interval)
    recorded = noise_ratios(sample(mean_model, step, draws=140, tune=tune, chains=1))[0]
    # Draw j after tuning is draw tune + j of the chain: a new pair where that is a
    # multiple of the interval, the last one carried otherwise.
    changes = np.flatnonzero(np.diff(recorded) != 0) + 1
    np.testing.assert_array_equal(changes, np.arange(interval, 140, interval))


def test_exact_gradients_give_zero_and_disabled_gives_nan(data):
    with pm.Model() as full_batch:
        mu = pm.Normal("mu", 0, PRIOR_SD)
        pm.Normal("y", mu, 1.0, observed=data)
        exact = sgmc.SGLD(step_size=1e-4)
        optimiser = sgmc.SGLD(step_size=1e-4, temperature=0.0)
    assert np.all(noise_ratios(sample(full_batch, exact, draws=50, tune=10)) == 0.0)
    # No minibatch, no gradient noise at all: 0 even with nothing injected.
    assert np.all(noise_ratios(sample(full_batch, optimiser, draws=50, tune=10)) == 0.0)


def test_nan_when_turned_off_or_nothing_injected(mean_model):
    for interval in (None, 0):
        with mean_model:
            step = sgmc.SGLD(step_size=3e-5, noise_estimate_interval=interval)
        assert step.noise_estimate_interval is None
        assert np.all(np.isnan(noise_ratios(sample(mean_model, step, draws=30, tune=10))))
    with mean_model:
        # T = 0 is SGD: infinite ratio, recorded as nan, and no warning (warnings are errors).
        step = sgmc.SGLD(step_size=3e-4, temperature=0.0)
    assert np.all(np.isnan(noise_ratios(sample(mean_model, step, draws=30, tune=10))))


@pytest.mark.parametrize("interval", [-1, 2.5, True])
def test_interval_must_be_a_non_negative_integer(mean_model, interval):
    with mean_model, pytest.raises(ValueError, match="noise_estimate_interval"):
        sgmc.SGLD(step_size=1e-4, noise_estimate_interval=interval)


def test_warning_fires_once_per_chain_for_a_large_step(mean_model, gradient_variance):
    step_size = 3e-4  # noise_ratio ≈ 2.9
    assert step_size * gradient_variance / 2 > 2
    with mean_model:
        step = sgmc.SGLD(step_size=step_size, steps_per_draw=5)
    with pytest.warns(sgmc.MinibatchNoiseWarning) as record:
        sample(mean_model, step, draws=200, tune=50)
    messages = [str(warning.message) for warning in record]
    # Checked when tuning ends and at every later estimate, reported once per chain.
    assert len(messages) == 2
    assert "chain 0" in messages[0] and "chain 1" in messages[1]
    for message in messages:
        assert "noise_ratio = " in message and "step_size=0.0003" in message
        assert "too wide" in message and "Lower step_size" in message and "batch_size" in message
    assert issubclass(sgmc.MinibatchNoiseWarning, UserWarning)


def test_no_warning_for_a_small_step(mean_model):
    with mean_model:
        step = sgmc.SGLD(step_size=3e-5, steps_per_draw=5)  # noise_ratio ≈ 0.29
    with warnings.catch_warnings():
        warnings.simplefilter("error", sgmc.MinibatchNoiseWarning)
        idata = sample(mean_model, step, draws=200, tune=50)
    assert noise_ratios(idata).mean() < 0.5


def test_sghmc_warns_about_uncorrected_noise_only(mean_model, gradient_variance):
    step_size = 1e-3
    noise = step_size * gradient_variance / 2  # B = h V / 2 ≈ 10
    # Γ < B and nothing subtracted: the chain runs at T (1 + B/Γ) > 2T.
    with mean_model:
        step = sgmc.SGHMC(step_size=step_size, friction=0.8 * noise, steps_per_draw=5)
    with pytest.warns(sgmc.MinibatchNoiseWarning, match="gradient_noise"):
        sample(mean_model, step, draws=100, tune=50)
    # B̂ estimated absorbs it: more minibatch than injected noise, yet no warning.
    with mean_model:
        step = sgmc.SGHMC(
            step_size=step_size, friction=1.5 * noise, gradient_noise="estimate", steps_per_draw=5
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", sgmc.MinibatchNoiseWarning)
        idata = sample(mean_model, step, draws=100, tune=200)
    assert noise_ratios(idata).mean() > 1


@pytest.mark.parametrize("sampler", ["SGLD", "SGHMC"])
def test_measuring_the_noise_leaves_the_draws_unchanged(mean_model, sampler):
    def make(interval):
        if sampler == "SGLD":
            return sgmc.SGLD(step_size=3e-5, steps_per_draw=2, noise_estimate_interval=interval)
        return sgmc.SGHMC(
            step_size=1e-3, friction=50.0, steps_per_draw=2, noise_estimate_interval=interval
        )

    with mean_model:
        measured, unmeasured = make(1), make(None)
    first = sample(mean_model, measured, draws=100, tune=20)
    second = sample(mean_model, unmeasured, draws=100, tune=20)
    np.testing.assert_array_equal(first.posterior["mu"], second.posterior["mu"])
    assert np.all(np.isfinite(noise_ratios(first))) and np.all(np.isnan(noise_ratios(second)))


@pytest.mark.parametrize("sampler", ["SGLD", "SGHMC"])
def test_restored_state_replays_the_noise_estimate(mean_model, sampler):
    with mean_model:
        if sampler == "SGLD":
            step = sgmc.SGLD(step_size=3e-4, noise_estimate_interval=1)
        else:
            step = sgmc.SGHMC(
                step_size=1e-3, friction=12.0, gradient_noise="estimate", noise_estimate_interval=1
            )
    step.setup_chain(np.random.default_rng(4), tune=3, draws=5)
    step.tune = True
    point = mean_model.initial_point()
    for _ in range(3):
        point, _ = step.step(point)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sgmc.MinibatchNoiseWarning)
        step.stop_tuning()
        point, stats = step.step(point)
        # Every draw takes a pair (interval 1), so the replayed draw does too.
        assert_restoring_replays_the_next_draw(step, point)
    assert np.isfinite(stats[0]["noise_ratio"])


def test_noise_summary_and_its_storage(mean_model, tmp_path):
    with mean_model:
        step = sgmc.SGLD(step_size=3e-5, steps_per_draw=2, noise_estimate_interval=5)
    idata = sample(mean_model, step, draws=100, tune=20, chains=3)
    recorded = noise_ratios(idata)
    summary = noise_summary(idata)
    assert isinstance(summary, NoiseSummary)
    np.testing.assert_allclose(summary.per_chain, recorded.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(summary.maximum_per_chain, recorded.max(axis=1))
    assert summary.pooled == pytest.approx(recorded.mean(), rel=1e-12)
    assert summary.draws_per_chain == 100
    assert add_noise_summary_to_idata(idata) is idata
    for trace in (idata, saved_and_loaded(idata, tmp_path)):
        attrs = trace["sample_stats"].attrs
        assert float(attrs["noise_ratio_mean"]) == pytest.approx(summary.pooled)
        np.testing.assert_allclose(np.asarray(attrs["noise_ratio_per_chain"]), summary.per_chain)
        assert int(attrs["noise_ratio_draws_per_chain"]) == 100


def test_noise_summary_skips_nan_and_rejects_other_traces():
    ratio = np.array([[0.5, np.nan, 1.5], [np.nan, np.nan, np.nan]])
    summary = noise_summary(
        make_idata(posterior={"mu": np.zeros((2, 3))}, sample_stats={"noise_ratio": ratio})
    )
    np.testing.assert_array_equal(summary.per_chain, [1.0, np.nan])
    np.testing.assert_array_equal(summary.maximum_per_chain, [1.5, np.nan])
    assert summary.pooled == 1.0
    with pytest.raises(ValueError, match="no `noise_ratio`"):
        noise_summary(
            make_idata(posterior={"mu": np.zeros((2, 3))}, sample_stats={"lp": np.zeros((2, 3))})
        )
    with pytest.raises(ValueError, match="no group"):
        noise_summary(make_idata(posterior={"mu": np.zeros((2, 3))}))
