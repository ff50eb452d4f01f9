"""Control-variate gradients: exact at the centre, unbiased, far less noisy near it, and
correct through ``pm.sample``; full-data passes in chunks match the full-data model."""

import numpy as np
import pymc as pm
import pytensor
import pytest
import scipy.linalg

from helpers import (
    assert_gaussian_moments,
    linear_gaussian_posterior,
    minibatch_gradient_covariance,
    seed_for,
    sghmc_stationary_covariance,
    sgld_stationary_covariance,
)

import pymc_sgmcmc as sgmc

from pymc_sgmcmc.gradients import ControlVariate
from pymc_sgmcmc.gradients.control_variate import control_variate_gradient
from pymc_sgmcmc.gradients.full_data import FullDataLogPosterior
from pymc_sgmcmc.gradients.minibatch import MinibatchLogPosterior

SAMPLE_KWARGS = {"chains": 2, "cores": 1, "progressbar": False, "compute_convergence_checks": False}
N, D, BATCH, NOISE_SD, PRIOR_SD = 2003, 3, 10, 1.0, 1.0


def regression_data(seed, n=N):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D)) + np.array([0.3, -0.2, 0.0])
    y = X @ np.array([0.8, -0.5, 0.3]) + NOISE_SD * rng.normal(size=n)
    return X, y


def regression_model(X, y, batch_size=BATCH, extra_observed=None):
    with pm.Model() as model:
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=batch_size)
        w = pm.Normal("w", 0, PRIOR_SD, shape=D)
        pm.Normal("y", X_batch @ w, NOISE_SD, observed=y_batch, total_size=len(y))
        if extra_observed is not None:
            pm.Normal("z", w.sum(), 1.0, observed=extra_observed)
    return model


@pytest.fixture(scope="module")
def regression():
    X, y = regression_data(seed_for("cv_regression"))
    mean, covariance, precision = linear_gaussian_posterior(X, y, NOISE_SD, PRIOR_SD)
    return X, y, mean, covariance, precision


def compiled_control_variate(target):
    centre = pytensor.tensor.vector("centre")
    centre_gradient = pytensor.tensor.vector("centre_gradient")
    graph = control_variate_gradient(
        target, target.position, target.indices, centre, centre_gradient
    )
    return pytensor.function([target.position, *target.indices, centre, centre_gradient], graph)


def test_full_data_pass_in_chunks_matches_the_full_data_model():
    # N = 2003 rows in chunks of 5 batches of 10: the last chunk is padded, and a second,
    # non-minibatch observed variable and a transformed variable enter the fixed part.
    X, y = regression_data(seed_for("chunks"))
    with pm.Model() as minibatch_model:
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH)
        w = pm.Normal("w", 0, PRIOR_SD, shape=D)
        sigma = pm.HalfNormal("sigma", 2.0)
        pm.Normal("y", X_batch @ w, sigma, observed=y_batch, total_size=N)
        pm.Normal("z", w.sum(), 1.0, observed=[0.4, 0.1])
    with pm.Model() as full_model:
        w = pm.Normal("w", 0, PRIOR_SD, shape=D)
        sigma = pm.HalfNormal("sigma", 2.0)
        pm.Normal("y", X @ w, sigma, observed=y)
        pm.Normal("z", w.sum(), 1.0, observed=[0.4, 0.1])
    target = MinibatchLogPosterior(minibatch_model, minibatch_model.value_vars)
    full_data = FullDataLogPosterior(target, chunk_size=5 * BATCH)
    point = {"w": np.array([0.3, -0.7, 1.5]), "sigma_log__": np.array(0.2)}
    logp, gradient = full_data.logp_and_gradient(np.array([0.3, -0.7, 1.5, 0.2]))
    np.testing.assert_allclose(logp, full_model.compile_logp()(point), rtol=1e-12)
    np.testing.assert_allclose(gradient, full_model.compile_dlogp()(point), rtol=1e-10)


def test_full_data_pass_pads_inside_the_support_and_reads_the_current_data():
    # A Gamma likelihood is -inf at 0: a padded chunk (2003 rows in chunks of 50) must
    # pad with rows of the data. The rows are read from the data set itself, so a
    # pm.set_data of the same length is what the next pass sees.
    rng = np.random.default_rng(seed_for("gamma_chunks"))
    x, y = rng.uniform(0.5, 2.0, size=N), rng.gamma(3.0, 1.0, size=N)

    def full_model(x_values, y_values):
        with pm.Model() as model:
            slope = pm.Normal("slope", 0, 1)
            pm.Gamma("y", alpha=3.0, beta=pm.math.exp(slope * x_values), observed=y_values)
        return model

    with pm.Model() as minibatch_model:
        x_data, y_data = pm.Data("x", x), pm.Data("y_data", y)
        x_batch, y_batch = pm.Minibatch(x_data, y_data, batch_size=BATCH)
        slope = pm.Normal("slope", 0, 1)
        pm.Gamma("y", alpha=3.0, beta=pm.math.exp(slope * x_batch), observed=y_batch, total_size=N)
    full_data = FullDataLogPosterior(
        MinibatchLogPosterior(minibatch_model, minibatch_model.value_vars), chunk_size=5 * BATCH
    )
    for x_values, y_values in [(x, y), (x[::-1].copy(), 2.0 * y)]:
        with minibatch_model:
            pm.set_data({"x": x_values, "y_data": y_values})
        logp, gradient = full_data.logp_and_gradient(np.array([0.4]))
        exact = full_model(x_values, y_values)
        np.testing.assert_allclose(logp, exact.compile_logp()({"slope": 0.4}), rtol=1e-12)
        np.testing.assert_allclose(gradient, exact.compile_dlogp()({"slope": 0.4}), rtol=1e-10)


def test_map_centre_is_the_posterior_mode(regression):
    X, y, mean, covariance, _ = regression
    with regression_model(X, y):
        step = sgmc.SGLD(step_size=1e-5, control_variate=True)
    sd = np.sqrt(np.diag(covariance))
    np.testing.assert_allclose(step.centre["w"], mean, atol=1e-4 * sd.min())
    assert step.map_result.converged


def test_control_variate_gradient_is_exact_at_the_centre_and_unbiased_elsewhere(regression):
    X, y, mean, covariance, _ = regression
    model = regression_model(X, y)
    target = MinibatchLogPosterior(model, model.value_vars)
    full_data = FullDataLogPosterior(target)
    gradient = compiled_control_variate(target)
    centre = mean + np.array([0.01, -0.02, 0.015])
    centre_gradient = full_data.gradient(centre)
    [stream] = target.streams
    rng = np.random.default_rng(seed_for("cv_exact"))
    for batch in stream.draw(rng, 5):
        np.testing.assert_allclose(
            gradient(centre, batch, centre, centre_gradient), centre_gradient, rtol=1e-12
        )
    # Elsewhere: the average over batches that cover every row once (the first 2000) is
    # the exact expectation over those rows, with the centre's term cancelling exactly.
    position = mean + 2 * np.sqrt(np.diag(covariance))
    rows = np.arange(2000, dtype=stream.index.dtype).reshape(-1, BATCH)
    average = np.mean(
        [gradient(position, batch, centre, centre_gradient) for batch in rows], axis=0
    )
    plain = compiled_plain_gradient(target)
    plain_average = np.mean([plain(position, batch) for batch in rows], axis=0)
    expected = (
        centre_gradient + plain_average - np.mean([plain(centre, batch) for batch in rows], axis=0)
    )
    np.testing.assert_allclose(average, expected, rtol=1e-10)
    # And over random minibatches, within Monte Carlo error of the full-data gradient.
    batches = stream.draw(rng, 3000)
    draws = np.array([gradient(position, batch, centre, centre_gradient) for batch in batches])
    standard_error = draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    error = draws.mean(axis=0) - full_data.gradient(position)
    assert np.all(np.abs(error) < 4 * standard_error), error / standard_error


def compiled_plain_gradient(target):
    return pytensor.function([target.position, *target.indices], target.gradient)


def test_control_variate_variance_near_the_centre_is_far_below_the_plain_one(regression):
    X, y, mean, covariance, _ = regression
    model = regression_model(X, y)
    target = MinibatchLogPosterior(model, model.value_vars)
    full_data = FullDataLogPosterior(target)
    gradient, plain = compiled_control_variate(target), compiled_plain_gradient(target)
    centre_gradient = full_data.gradient(mean)
    position = mean + np.sqrt(np.diag(covariance))  # one posterior sd away
    [batches] = target.draw_indices(np.random.default_rng(seed_for("cv_var")), 2000)
    cv = np.array([gradient(position, batch, mean, centre_gradient) for batch in batches])
    minibatch = np.array([plain(position, batch) for batch in batches])
    ratio = cv.var(axis=0) / minibatch.var(axis=0)
    # Plain noise is O(N²/B), control-variate noise O(N/B) one sd from the mode: the
    # ratio is of order d/N, about 1e-3 here.
    assert np.all(ratio < 0.01), ratio
    assert np.all(ratio > 0), ratio


def control_variate_noise(X, covariance_of_offset):
    """``V`` of the control-variate gradient of a linear regression, averaged over θ.

    ``g_cv − ∇ log π = (N/B) Σ_batch x_i x_iᵀ δ / σ² − (1/N) Σ_all ... `` with
    ``δ = θ − θ̂``: for a with-replacement batch, ``V(δ) = (N²/B) Cov_i[x_i x_iᵀ δ] / σ⁴``,
    whose mean over ``δ ~ (0, S)`` is ``(N²/B) (E_i[x_i x_iᵀ S x_i x_iᵀ] − M S M) / σ⁴``.
    """
    n = X.shape[0]
    quadratic = np.einsum("ni,nj,jk,nk,nl->il", X, X, covariance_of_offset, X, X) / n
    second_moment = X.T @ X / n
    return n**2 / BATCH * (quadratic - second_moment @ covariance_of_offset @ second_moment)


def test_sgld_with_control_variates_recovers_the_posterior(regression):
    # Batches of 10 out of 2003 rows: plain SGLD at this step would be more than 3
    # times too wide in variance; with control variates the noise adds a few percent.
    X, y, mean, covariance, precision = regression
    step_size = 0.2 / np.max(np.linalg.eigvalsh(precision))
    plain = sgld_stationary_covariance(
        precision, minibatch_gradient_covariance(X, y, mean, NOISE_SD, BATCH), step_size, 1.0
    )
    assert np.all(np.diag(plain) > 3 * np.diag(covariance))
    # The control-variate noise depends on θ − θ̂; its stationary covariance is the fixed
    # point of the Lyapunov equation with the noise it implies (θ̂ is the mode = mean).
    expected = sgld_stationary_covariance(precision, np.zeros((D, D)), step_size, 1.0)
    for _ in range(5):
        noise = control_variate_noise(X, expected)
        expected = sgld_stationary_covariance(precision, noise, step_size, 1.0)
    with regression_model(X, y):
        step = sgmc.SGLD(step_size=step_size, steps_per_draw=5, control_variate=True)
        idata = pm.sample(
            draws=3000, tune=100, step=step, random_seed=seed_for("cv_sgld"), **SAMPLE_KWARGS
        )
    draws = np.asarray(idata.posterior["w"])
    assert_gaussian_moments(draws, mean, np.diag(expected), label="CV-SGLD")
    # The noise_ratio stat measures the control-variate noise, η V̄ / 2 on average.
    measured = np.nanmean(np.asarray(idata.sample_stats["noise_ratio"]))
    np.testing.assert_allclose(measured, step_size * np.mean(np.diag(noise)) / 2, rtol=0.35)


def test_sghmc_with_control_variates_recovers_the_posterior(regression):
    X, y, mean, covariance, precision = regression
    scale = 1 / np.sqrt(np.max(np.linalg.eigvalsh(precision)))
    step_size, friction = 0.2 * scale, 2.0 / scale
    expected = sghmc_stationary_covariance(
        precision, np.zeros((D, D)), step_size, friction, 1.0, 0.0, 1.0
    )
    for _ in range(5):
        noise = control_variate_noise(X, expected[:D, :D])
        expected = sghmc_stationary_covariance(precision, noise, step_size, friction, 1.0, 0.0, 1.0)
    with regression_model(X, y):
        step = sgmc.SGHMC(
            step_size=step_size,
            friction=friction,
            steps_per_draw=5,
            control_variate=ControlVariate(centre="map", chunk_size=100),
        )
        idata = pm.sample(
            draws=3000, tune=100, step=step, random_seed=seed_for("cv_sghmc"), **SAMPLE_KWARGS
        )
    draws = np.asarray(idata.posterior["w"])
    assert_gaussian_moments(draws, mean, np.diag(expected[:D, :D]), label="CV-SGHMC")


def test_given_centre_as_point_or_vector(regression):
    X, y, mean, _, _ = regression
    with regression_model(X, y):
        from_point = sgmc.SGLD(step_size=1e-5, control_variate={"w": mean})
        from_vector = sgmc.SGLD(step_size=1e-5, control_variate=ControlVariate(centre=mean))
    np.testing.assert_array_equal(from_point.centre["w"], mean)
    np.testing.assert_array_equal(
        from_point.gradient_estimator.initial_centre_gradient,
        from_vector.gradient_estimator.initial_centre_gradient,
    )


def test_refreshing_moves_the_centre_to_the_chain(regression):
    X, y, mean, _, _ = regression
    with regression_model(X, y) as model:
        step = sgmc.SGLD(
            step_size=1e-5, control_variate=ControlVariate(centre=mean, refresh_interval=3)
        )
    full_data = step.gradient_estimator.full_data
    point = model.initial_point()
    for draw in range(1, 7):
        point, _ = step.step(point)
        if draw % 3 == 0:
            np.testing.assert_array_equal(step.centre["w"], point["w"])
            np.testing.assert_allclose(
                step.gradient_estimator.centre_gradient, full_data.gradient(point["w"]), rtol=1e-12
            )
        else:
            assert not np.array_equal(step.centre["w"], point["w"])
    # A new chain starts again from the initial centre.
    step.set_rng(np.random.default_rng(1))
    np.testing.assert_array_equal(step.centre["w"], mean)


@pytest.mark.parametrize(
    ("control_variate", "match"),
    [
        (np.zeros(D + 1), r"shape \(3,\)"),
        (np.array([0.0, np.nan, 0.0]), "non-finite"),
        ({"w": np.zeros(2)}, "has shape"),
        ({"v": np.zeros(3)}, r"no value for \['w'\]"),
        ("mode", '"map", a dict or an array'),
        (ControlVariate, "must be"),
    ],
)
def test_bad_centre_is_refused(regression, control_variate, match):
    X, y, _, _, _ = regression
    with regression_model(X, y):
        if control_variate is ControlVariate:
            with pytest.raises(ValueError, match="refresh_interval"):
                ControlVariate(refresh_interval=0)
            with pytest.raises(ValueError, match="chunk_size"):
                ControlVariate(chunk_size=-5)
            return
        with pytest.raises(ValueError, match=match):
            sgmc.SGLD(step_size=1e-5, control_variate=control_variate)


def test_control_variate_needs_minibatches():
    with pm.Model():
        pm.Normal("x", 0, 1)
        with pytest.raises(ValueError, match="needs a model fed through pm.Minibatch"):
            sgmc.SGLD(step_size=0.1, control_variate=True)


def test_centre_outside_the_support_is_refused():
    rng = np.random.default_rng(seed_for("support"))
    data = rng.poisson(3.0, size=200).astype("int32")
    with pm.Model():
        batch = pm.Minibatch(data, batch_size=20)
        rate = pm.Gamma("rate", 2.0, 1.0)
        pm.Poisson("y", rate, observed=batch, total_size=len(data))
        with pytest.raises(ValueError, match="not finite at the given control-variate centre"):
            sgmc.SGLD(step_size=0.1, control_variate={"rate_log__": np.array(1e6)})


def test_helper_noise_formula_matches_sampled_variance(regression):
    # The closed form behind the two sampling tests, against draws of the estimator.
    X, y, mean, covariance, _ = regression
    model = regression_model(X, y)
    target = MinibatchLogPosterior(model, model.value_vars)
    gradient = compiled_control_variate(target)
    offset = np.sqrt(np.diag(covariance)) * np.array([1.0, -1.0, 0.5])
    centre_gradient = FullDataLogPosterior(target).gradient(mean)
    [batches] = target.draw_indices(np.random.default_rng(seed_for("cv_formula")), 4000)
    draws = np.array([gradient(mean + offset, batch, mean, centre_gradient) for batch in batches])
    expected = control_variate_noise(X, np.outer(offset, offset))
    # The sample variance of 4000 draws has relative sd sqrt(2/4000) ≈ 2.2% (Gaussian).
    np.testing.assert_allclose(draws.var(axis=0), np.diag(expected), rtol=0.12)
    assert scipy.linalg.norm(expected) > 0


def test_unconverged_map_search_warns(regression):
    X, y, mean, _, _ = regression
    with regression_model(X, y):
        with pytest.warns(UserWarning, match="stopped before converging"):
            step = sgmc.SGLD(step_size=1e-5, control_variate=ControlVariate(maxiter=1))
    assert not step.map_result.converged
    assert step.map_result.evaluations >= 2


def test_minibatch_data_outside_observed_variables_is_refused(regression):
    X, y, _, _, _ = regression
    with pm.Model():
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH)
        w = pm.Normal("w", 0, PRIOR_SD, shape=D)
        pm.Potential("likelihood", pm.logp(pm.Normal.dist(X_batch @ w, NOISE_SD), y_batch))
        with pytest.raises(NotImplementedError, match="Potential 'likelihood' uses pm.Minibatch"):
            sgmc.SGLD(step_size=1e-5, control_variate=True)


def test_observed_variable_with_two_minibatch_calls_is_refused(regression):
    X, y, _, _, _ = regression
    with pm.Model():
        X_batch = pm.Minibatch(X, batch_size=BATCH)
        y_batch = pm.Minibatch(y, batch_size=BATCH)
        w = pm.Normal("w", 0, PRIOR_SD, shape=D)
        with pytest.warns(UserWarning, match="several pm.Minibatch calls"):
            pm.Normal("y", X_batch @ w, NOISE_SD, observed=y_batch, total_size=N)
            with pytest.raises(NotImplementedError, match="depends on several pm.Minibatch"):
                sgmc.SGLD(step_size=1e-5, control_variate=True)
