"""PyTensor's JAX backend end to end: ``compile_kwargs={"mode": "JAX"}`` (on the CPU here).

The kernel then draws its noise and minibatch indices on the device from its own
generator, one compiled kernel per ``steps_per_draw``; its outputs come back as NumPy
arrays for PyMC's points and trace. The draws are checked against a closed-form posterior,
for reproducibility, and for the worker processes of ``cores > 1``.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytest

from helpers import Z_TOLERANCE, assert_close, batch_means_standard_error, seed_for

import pymc_sgmcmc as sgmc

pytest.importorskip("jax")

pytestmark = pytest.mark.filterwarnings(
    # PyTensor's JAX backend drops its broadcast checks (the graph's shapes are static).
    "ignore:Skipping Assert:UserWarning"
)

JAX = {"mode": "JAX"}
ROWS, BATCH, NOISE_SD, PRIOR_SD = 2000, 50, 2.0, 10.0


@pytest.fixture(scope="module")
def normal_mean():
    """``x_i ~ N(μ, 2²)``, ``μ ~ N(0, 10²)``: the posterior of μ is Gaussian."""
    rng = np.random.default_rng(seed_for("jax_normal_mean"))
    x = rng.normal(1.5, NOISE_SD, size=ROWS)
    precision = 1 / PRIOR_SD**2 + ROWS / NOISE_SD**2
    mean = x.sum() / NOISE_SD**2 / precision
    with pm.Model() as model:
        batch = pm.Minibatch(x, batch_size=BATCH)
        mu = pm.Normal("mu", 0.0, PRIOR_SD)
        pm.Normal("obs", mu, NOISE_SD, observed=batch, total_size=ROWS)
    return model, np.array([mean]), np.array([precision**-0.5])


def sample(model, step, **options):
    options = {"chains": 2, "cores": 1, "progressbar": False, **options}
    with model:
        return pm.sample(step=step, compute_convergence_checks=False, **options)


@pytest.mark.parametrize("sampler", [sgmc.SGLD, sgmc.SGHMC], ids=lambda cls: cls.__name__)
def test_zero_configuration_on_jax(normal_mean, sampler):
    model, mean, sd = normal_mean
    with model:
        step = sampler(compile_kwargs=JAX)
    idata = sample(model, step, random_seed=seed_for(sampler.__name__ + "_jax"))
    assert_close(idata.posterior["mu"].values[..., None], mean, sd, label=sampler.__name__)
    assert isinstance(idata.posterior["mu"].values, np.ndarray)
    # One kernel per steps_per_draw the adaptation chose, the sampling phase's among them.
    assert step.steps_per_draw in step._device_kernels
    assert step._kernel is None


def test_explicit_settings_on_jax_match_the_closed_form(normal_mean):
    model, mean, sd = normal_mean
    step_size = 0.1 * sd[0] ** 2
    with model:
        step = sgmc.SGLD(
            step_size=step_size, steps_per_draw=20, control_variate=True, compile_kwargs=JAX
        )
    idata = sample(model, step, tune=200, draws=1000, random_seed=seed_for("jax_explicit"))
    draws = idata.posterior["mu"].values
    error = abs(draws.mean() - mean[0]) / batch_means_standard_error(draws)
    assert error < Z_TOLERANCE, f"mean off by {error:.1f} standard errors"
    # SGLD at η = 0.1 σ² widens the sd by 1 / sqrt(1 - η / 2σ²), 2.6%.
    ratio_se = batch_means_standard_error((draws - draws.mean()) ** 2) / (2 * sd[0] ** 2)
    ratio = draws.std() / sd[0]
    assert abs(ratio - 1.026) < Z_TOLERANCE * ratio_se + 0.03, f"sd ratio {ratio:.3f}"


def test_jax_draws_are_reproducible_and_chains_differ(normal_mean):
    model, _, _ = normal_mean

    def draws(seed):
        with model:
            step = sgmc.SGLD(step_size=1e-5, steps_per_draw=5, compile_kwargs=JAX)
        return sample(model, step, tune=10, draws=30, random_seed=seed).posterior["mu"].values

    first, again, other = draws(1), draws(1), draws(2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first[0], first[1])


def test_jax_workers_spawned_give_the_draws_of_one_core_and_forked_ones_a_clear_error(
    normal_mean,
):
    model, _, _ = normal_mean
    with model:
        step = sgmc.SGLD(step_size=1e-5, steps_per_draw=5, compile_kwargs=JAX)
    options = {"tune": 10, "draws": 30, "random_seed": 4}
    one = sample(model, step, **options).posterior["mu"].values
    two = sample(model, step, cores=2, mp_ctx="spawn", **options).posterior["mu"].values
    np.testing.assert_array_equal(one, two)
    with pytest.raises(Exception, match='mp_ctx="spawn"'):
        sample(model, step, cores=2, mp_ctx="fork", **options)


def test_jax_functions_keep_the_data_on_the_device_and_follow_a_new_value():
    import jax
    import pytensor
    import pytensor.tensor as pt

    from pymc_sgmcmc._compat import compile_function

    data = pytensor.shared(np.arange(6.0).reshape(3, 2), name="data")
    row = pt.lscalar("row")
    function = compile_function([row], data[row].sum(), **JAX)
    assert function(1) == 5.0 and isinstance(function(1), np.ndarray)
    # The private copy holds a device array; the model's own variable keeps NumPy.
    [(original, copy)] = function._data
    assert original is data and isinstance(copy.container.storage[0], jax.Array)
    assert isinstance(data.get_value(borrow=True), np.ndarray)
    data.set_value(10 * np.arange(6.0).reshape(3, 2))  # as pm.set_data does
    assert function(1) == 50.0
