"""After sampling: posterior predictive, log-likelihood, predictions and deterministics on
the full data of a minibatch model, checked against closed-form answers."""

import warnings

import numpy as np
import pymc as pm
import pytest
import scipy.stats

from helpers import linear_gaussian_posterior, make_idata, seed_for

import pymc_sgmcmc as sgmc

N, BATCH, CHAINS, DRAWS = 300, 30, 2, 400
NOISE_SD = 0.7


@pytest.fixture(scope="module")
def regression():
    """Linear regression with known noise, data through pm.Data and pm.Minibatch, and exact
    posterior draws of its weights."""
    rng = np.random.default_rng(seed_for("after_sampling"))
    X = rng.normal(size=(N, 2))
    y = X @ np.array([1.0, -0.5]) + NOISE_SD * rng.normal(size=N)
    mean, covariance, _ = linear_gaussian_posterior(X, y, NOISE_SD, 1.0)
    with pm.Model() as model:
        X_data = pm.Data("X", X)
        y_data = pm.Data("y", y)
        X_batch, y_batch = pm.Minibatch(X_data, y_data, batch_size=BATCH)
        w = pm.Normal("w", 0, 1, shape=2)
        pm.Normal("obs", X_batch @ w, NOISE_SD, observed=y_batch, total_size=N)
    draws = rng.multivariate_normal(mean, covariance, size=(CHAINS, DRAWS))
    idata = make_idata(posterior={"w": draws})
    return model, X, y, mean, covariance, idata


def test_posterior_predictive_draws_every_row_with_the_right_mean_and_spread(regression):
    model, X, y, mean, covariance, idata = regression
    full = sgmc.full_data_model(model)
    predictive = pm.sample_posterior_predictive(
        idata, model=full, random_seed=1, progressbar=False
    )["posterior_predictive"]["obs"].values
    assert predictive.shape == (CHAINS, DRAWS, N)
    # Row i: mean x_i·m, variance x_iᵀ Σ x_i + σ²; z-scores of the row means over rows.
    expected_mean = X @ mean
    expected_variance = np.einsum("ij,jk,ik->i", X, covariance, X) + NOISE_SD**2
    draws = CHAINS * DRAWS
    z = (predictive.mean(axis=(0, 1)) - expected_mean) / np.sqrt(expected_variance / draws)
    assert abs(z.mean()) < 4 / np.sqrt(N) and 0.8 < z.std() < 1.2
    ratio = predictive.var(axis=(0, 1)) / expected_variance
    # The sample variance of 800 draws has relative sd sqrt(2/800) = 5% per row.
    assert abs(ratio.mean() - 1) < 4 * 0.05 / np.sqrt(N)


def test_the_chunked_posterior_predictive_thins_and_keeps_the_observed_data(regression):
    model, X, y, mean, covariance, idata = regression
    result = sgmc.sample_posterior_predictive(
        idata, model, thin=2, max_draws=50, draws_per_chunk=16, random_seed=3
    )
    predictive = result["posterior_predictive"]["obs"]
    assert predictive.shape == (CHAINS, 50, N)
    np.testing.assert_array_equal(np.asarray(result["observed_data"]["obs"]), y)
    again = sgmc.sample_posterior_predictive(
        idata, model, thin=2, max_draws=50, draws_per_chunk=16, random_seed=3
    )
    np.testing.assert_array_equal(predictive.values, again["posterior_predictive"]["obs"].values)
    # The kept draws' row means follow the same closed form.
    expected_mean = X @ mean
    expected_variance = np.einsum("ij,jk,ik->i", X, covariance, X) + NOISE_SD**2
    z = (predictive.values.mean(axis=(0, 1)) - expected_mean) / np.sqrt(
        expected_variance / (CHAINS * 50)
    )
    assert abs(z.mean()) < 4 / np.sqrt(N) and 0.8 < z.std() < 1.2


def test_pointwise_log_likelihood_is_the_full_models(regression):
    model, X, y, mean, covariance, idata = regression
    full = sgmc.full_data_model(model)
    result = pm.compute_log_likelihood(idata, model=full, progressbar=False)
    log_likelihood = np.asarray(result["log_likelihood"]["obs"])
    assert log_likelihood.shape == (CHAINS, DRAWS, N)
    w = np.asarray(idata["posterior"]["w"])
    exact = scipy.stats.norm.logpdf(y, np.einsum("cdk,nk->cdn", w, X), NOISE_SD)
    np.testing.assert_allclose(log_likelihood, exact, rtol=1e-10, atol=1e-10)


def test_predictions_on_new_rows_follow_their_inputs(regression):
    model, X, y, mean, covariance, idata = regression
    full = sgmc.full_data_model(model)
    X_new = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, -2.0], [-1.0, 3.0]])
    with full:
        pm.set_data({"X": X_new, "y": np.zeros(len(X_new))})
        predictions = pm.sample_posterior_predictive(
            idata, predictions=True, random_seed=2, progressbar=False
        )["predictions"]["obs"].values
    assert predictions.shape == (CHAINS, DRAWS, 5)
    expected_variance = np.einsum("ij,jk,ik->i", X_new, covariance, X_new) + NOISE_SD**2
    z = (predictions.mean(axis=(0, 1)) - X_new @ mean) / np.sqrt(
        expected_variance / (CHAINS * DRAWS)
    )
    assert np.all(np.abs(z) < 4)
    # The minibatch model itself is untouched: still 300 rows.
    assert model["X"].get_value().shape == (N, 2)


def test_deterministics_are_computed_for_every_row():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(N, 2))
    y = X @ np.array([1.0, -0.5]) + rng.normal(size=N)
    with pm.Model() as model:
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH)
        w = pm.Normal("w", 0, 1, shape=2)
        with pytest.warns(sgmc.SGMCMCWarning, match="full_data_model"):
            fit = pm.Deterministic("fit", X_batch @ w)
            pm.Normal("y", fit, 1.0, observed=y_batch, total_size=N)
            sgmc.SGLD(step_size=1e-3)
    draws = rng.normal(size=(CHAINS, 20, 2))
    idata = make_idata(posterior={"w": draws})
    full = sgmc.full_data_model(model)
    deterministics = pm.compute_deterministics(idata["posterior"], model=full, progressbar=False)
    np.testing.assert_allclose(
        np.asarray(deterministics["fit"]), np.einsum("cdk,nk->cdn", draws, X), rtol=1e-12
    )
    del fit


def test_several_streams_two_dimensional_observed_and_initvals():
    rng = np.random.default_rng(5)
    Y = rng.multivariate_normal([-1.0, 1.0], np.eye(2), size=N)
    z = rng.normal(2.0, 1.0, size=2 * N)
    with pm.Model() as model:
        mu = pm.Normal(
            "mu", 0, 10, shape=2, transform=pm.distributions.transforms.ordered, initval=[-1, 1]
        )
        pm.MvNormal(
            "Y", mu, cov=np.eye(2), observed=pm.Minibatch(Y, batch_size=BATCH), total_size=N
        )
        nu = pm.Normal("nu", 0, 10)
        pm.Normal("z", nu, 1.0, observed=pm.Minibatch(z, batch_size=BATCH), total_size=2 * N)
    idata = make_idata(
        posterior={"mu": np.tile([-1.0, 1.0], (CHAINS, 10, 1)), "nu": np.full((CHAINS, 10), 2.0)}
    )
    result = sgmc.sample_posterior_predictive(idata, model, random_seed=1)
    assert result["posterior_predictive"]["Y"].shape == (CHAINS, 10, N, 2)
    assert result["posterior_predictive"]["z"].shape == (CHAINS, 10, 2 * N)
    # PyMC's compute_log_likelihood refuses models with initial values: drop them.
    with pytest.raises(NotImplementedError, match="initial_values"):
        pm.compute_log_likelihood(idata, model=sgmc.full_data_model(model), progressbar=False)
    full = sgmc.full_data_model(model, initvals=False)
    log_likelihood = pm.compute_log_likelihood(idata, model=full, progressbar=False)
    exact = scipy.stats.multivariate_normal([-1.0, 1.0], np.eye(2)).logpdf(Y)
    np.testing.assert_allclose(np.asarray(log_likelihood["log_likelihood"]["Y"])[0, 0], exact)


def test_a_log_likelihood_group_asked_of_pm_sample_warns():
    rng = np.random.default_rng(6)
    x = rng.normal(size=N)
    with pm.Model():
        mu = pm.Normal("mu", 0, 1)
        pm.Normal("x", mu, 1, observed=pm.Minibatch(x, batch_size=BATCH), total_size=N)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sgmc.MinibatchNoiseWarning)
            with pytest.warns(sgmc.SGMCMCWarning, match=r"pymc_sgmcmc.loo\(idata, model\)"):
                pm.sample(
                    draws=10,
                    tune=5,
                    chains=1,
                    step=sgmc.SGLD(step_size=1e-4),
                    progressbar=False,
                    compute_convergence_checks=False,
                    idata_kwargs={"log_likelihood": True},
                )
