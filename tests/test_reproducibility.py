"""Seeds, independent chains and dispersed starts."""

import numpy as np
import pymc as pm
import pytest

from helpers import assert_restoring_replays_the_next_draw, seed_for

import pymc_sgmcmc as sgmc

N, BATCH = 500, 50
QUIET = {"progressbar": False, "compute_convergence_checks": False}


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(seed_for("reproducibility"))
    X = rng.normal(size=(N, 2))
    y = X @ np.array([1.0, -1.0]) + rng.normal(size=N)
    with pm.Model() as model:
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH)
        w = pm.Normal("w", 0, 1, shape=2)
        sigma = pm.HalfNormal("sigma", 1)
        pm.Normal("y", X_batch @ w, sigma, observed=y_batch, total_size=N)
    return model


STEPS = {
    "SGLD": lambda **kw: sgmc.SGLD(step_size=1e-4, steps_per_draw=3, **kw),
    "SGHMC": lambda **kw: sgmc.SGHMC(step_size=1e-2, friction=50.0, steps_per_draw=3, **kw),
    "SGHMC estimate": lambda **kw: sgmc.SGHMC(
        step_size=5e-3, friction=150.0, gradient_noise="estimate", steps_per_draw=3, **kw
    ),
    "SGNHT": lambda **kw: sgmc.SGNHT(step_size=1e-2, diffusion=5.0, steps_per_draw=3, **kw),
    "pSGLD": lambda **kw: sgmc.pSGLD(step_size=1e-3, steps_per_draw=3, **kw),
    "SGHMC+CV": lambda **kw: sgmc.SGHMC(
        step_size=1e-2,
        friction=50.0,
        steps_per_draw=3,
        control_variate=sgmc.ControlVariate(refresh_interval=7),
        **kw,
    ),
    "cyclical SGLD": lambda **kw: sgmc.SGLD(
        step_size=sgmc.schedules.cyclical(1e-4, cycle_length=30), steps_per_draw=3, **kw
    ),
}


def sample(model, make_step, seed, **kwargs):
    with model:
        options = {"draws": 50, "tune": 10, "chains": 2, "cores": 1, **QUIET, **kwargs}
        return pm.sample(step=make_step(), random_seed=seed, **options)


def draws(idata, name="w"):
    return np.asarray(idata.posterior[name])


@pytest.mark.parametrize("sampler", STEPS)
def test_same_seed_same_draws_and_chains_differ(model, sampler):
    first = sample(model, STEPS[sampler], seed=11)
    second = sample(model, STEPS[sampler], seed=11)
    other = sample(model, STEPS[sampler], seed=12)
    np.testing.assert_array_equal(draws(first), draws(second))
    np.testing.assert_array_equal(draws(first, "sigma"), draws(second, "sigma"))
    assert not np.allclose(draws(first), draws(other))
    assert not np.allclose(draws(first)[0], draws(first)[1])


@pytest.mark.parametrize("sampler", ["SGHMC", "SGHMC estimate", "SGNHT", "pSGLD", "SGHMC+CV"])
def test_parallel_chains_equal_sequential_chains(model, sampler):
    # Tuning must behave alike: PyMC's workers leave `tune` to the step (pSGLD adapts and
    # SGHMC estimates its gradient noise only while tuning).
    sequential = sample(model, STEPS[sampler], seed=5, cores=1)
    parallel = sample(model, STEPS[sampler], seed=5, cores=2)
    np.testing.assert_array_equal(draws(sequential), draws(parallel))


def test_chains_see_independent_minibatch_streams(model):
    # Same start, no injected noise (T = 0): chains differ only through their minibatches.
    make_step = lambda: sgmc.SGLD(step_size=1e-4, temperature=0.0, initial_jitter=0.0)  # noqa: E731
    idata = sample(model, make_step, seed=3)
    chain_draws = draws(idata)
    assert not np.allclose(chain_draws[0], chain_draws[1])
    # ... and the same stream is replayed by the same seed.
    np.testing.assert_array_equal(chain_draws, draws(sample(model, make_step, seed=3)))


def test_chains_start_dispersed_unless_initvals_are_given():
    # T = 0 and a tiny step barely move the chain: the first draw shows where it started.
    with pm.Model():
        pm.Normal("x", 0, 1, shape=3)
        make_step = lambda: sgmc.SGLD(step_size=1e-12, temperature=0.0)  # noqa: E731
        jittered = pm.sample(draws=2, tune=0, chains=2, step=make_step(), random_seed=1, **QUIET)
        given = pm.sample(
            draws=2,
            tune=0,
            chains=2,
            step=make_step(),
            random_seed=1,
            initvals={"x": np.array([5.0, -5.0, 2.0])},
            **QUIET,
        )
    starts = draws(jittered, "x")[:, 0]
    assert np.all((np.abs(starts) > 0) & (np.abs(starts) <= 1))
    assert not np.allclose(starts[0], starts[1])
    np.testing.assert_allclose(draws(given, "x")[:, 0], [[5.0, -5.0, 2.0]] * 2, atol=1e-9)


@pytest.mark.parametrize("sampler", STEPS)
def test_restoring_the_sampling_state_replays_the_next_draw(model, sampler):
    with model:
        step = STEPS[sampler]()
    step.setup_chain(np.random.default_rng(4), tune=5, draws=5)
    step.tune = True
    point = model.initial_point()
    for _ in range(4):
        point, _ = step.step(point)
    assert_restoring_replays_the_next_draw(step, point)
