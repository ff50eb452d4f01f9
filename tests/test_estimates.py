"""Step-size-weighted posterior means (Welling & Teh 2011)."""

import numpy as np
import pymc as pm
import pytest
import xarray as xr

from helpers import make_idata, seed_for

import pymc_sgmcmc as sgmc

from pymc_sgmcmc import schedules
from pymc_sgmcmc.diagnostics import weighted_posterior_mean


@pytest.fixture
def trace():
    rng = np.random.default_rng(seed_for("weighted"))
    mu = rng.normal(size=(3, 40))
    beta = rng.normal(size=(3, 40, 2))
    step_size = rng.uniform(0.1, 2.0, size=(3, 40))
    idata = make_idata(posterior={"mu": mu, "beta": beta}, sample_stats={"step_size": step_size})
    return idata, mu, beta, step_size


def test_matches_a_hand_computation(trace):
    idata, mu, beta, step_size = trace
    pooled = weighted_posterior_mean(idata)
    assert isinstance(pooled, xr.Dataset)
    expected_mu = (
        sum(step_size[c, t] * mu[c, t] for c in range(3) for t in range(40)) / step_size.sum()
    )
    assert float(pooled["mu"]) == pytest.approx(expected_mu, rel=1e-12)
    for j in range(2):
        expected = np.sum(step_size * beta[..., j]) / np.sum(step_size)
        assert float(pooled["beta"][j]) == pytest.approx(expected, rel=1e-12)
    per_chain = weighted_posterior_mean(idata, var_names=["mu"], per_chain=True)
    assert list(per_chain.data_vars) == ["mu"]
    for c in range(3):
        expected = np.dot(step_size[c], mu[c]) / step_size[c].sum()
        assert float(per_chain["mu"].sel(chain=c)) == pytest.approx(expected, rel=1e-12)


def test_constant_step_size_is_the_plain_mean(trace):
    idata, mu, _, _ = trace
    constant = make_idata(posterior={"mu": mu}, sample_stats={"step_size": np.full(mu.shape, 0.01)})
    assert float(weighted_posterior_mean(constant)["mu"]) == pytest.approx(mu.mean(), rel=1e-12)


def test_on_a_decreasing_schedule_trace():
    with pm.Model():
        pm.Normal("x", 1.0, 1.0, shape=2)
        step = sgmc.SGLD(step_size=schedules.polynomial(0.5, b=10.0, gamma=0.6))
        idata = pm.sample(
            draws=200,
            tune=0,
            chains=2,
            step=step,
            random_seed=seed_for("schedule"),
            progressbar=False,
            compute_convergence_checks=False,
        )
    weights = np.asarray(idata.sample_stats["step_size"])
    assert weights[0, 0] > weights[0, -1]  # the weights really vary
    draws = np.asarray(idata.posterior["x"])
    expected = np.einsum("cd,cdj->j", weights, draws) / weights.sum()
    np.testing.assert_allclose(weighted_posterior_mean(idata)["x"], expected, rtol=1e-12)


def test_errors(trace):
    idata, mu, _, _ = trace
    with pytest.raises(ValueError, match="not variables"):
        weighted_posterior_mean(idata, var_names=["nu"])
    with pytest.raises(ValueError, match="no `step_size`"):
        weighted_posterior_mean(
            make_idata(posterior={"mu": mu}, sample_stats={"lp": np.zeros(mu.shape)})
        )
    with pytest.raises(ValueError, match="positive and finite"):
        weighted_posterior_mean(
            make_idata(posterior={"mu": mu}, sample_stats={"step_size": np.zeros(mu.shape)})
        )
    with pytest.raises(ValueError, match="share chains and draws"):
        weighted_posterior_mean(
            make_idata(posterior={"mu": mu}, sample_stats={"step_size": np.ones((3, 10))})
        )
