"""The minibatch log posterior: unbiased, correctly scaled, one stream per joint Minibatch."""

import numpy as np
import pymc as pm
import pytensor
import pytest

from helpers import seed_for

from pymc_sgmcmc.gradients.minibatch import MinibatchLogPosterior

N, D, BATCH = 400, 3, 40


def regression_data(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D))
    y = X @ np.array([0.5, -1.0, 2.0]) + rng.normal(size=N)
    return X, y


def regression_model(X, y, minibatch=True, total_size=True):
    with pm.Model() as model:
        if minibatch:
            X_data, y_data = pm.Minibatch(X, y, batch_size=BATCH)
        else:
            X_data, y_data = X, y
        w = pm.Normal("w", 0, 1, shape=D)
        sigma = pm.HalfNormal("sigma", 2)
        pm.Normal("y", X_data @ w, sigma, observed=y_data, total_size=N if total_size else None)
    return model


def compile_gradient(target):
    return pytensor.function([target.position, *target.indices], target.gradient)


def full_data_gradient(X, y, position):
    model = regression_model(X, y, minibatch=False)
    point = model.initial_point()
    point["w"] = position[:D]
    point["sigma_log__"] = position[D]
    dlogp = model.compile_dlogp()
    return dlogp(point)


def test_one_stream_per_joint_minibatch():
    X, y = regression_data(seed_for("stream"))
    model = regression_model(X, y)
    target = MinibatchLogPosterior(model, model.value_vars)
    [stream] = target.streams
    assert (stream.data_size, stream.batch_size) == (N, BATCH)
    assert target.size == D + 1


def test_minibatch_gradients_over_a_partition_average_to_the_full_gradient():
    # Batches that cover every row once average exactly to the full-data gradient,
    # which holds only if the likelihood is scaled by N/B (total_size).
    X, y = regression_data(seed_for("partition"))
    model = regression_model(X, y)
    target = MinibatchLogPosterior(model, model.value_vars)
    gradient = compile_gradient(target)
    position = np.array([0.3, -0.7, 1.5, 0.2])
    [stream] = target.streams
    rows = np.random.default_rng(0).permutation(N).reshape(N // BATCH, BATCH)
    rows = rows.astype(stream.index.dtype)
    average = np.mean([gradient(position, batch) for batch in rows], axis=0)
    np.testing.assert_allclose(average, full_data_gradient(X, y, position), rtol=1e-10)


def test_random_minibatch_gradient_is_unbiased():
    X, y = regression_data(seed_for("unbiased"))
    model = regression_model(X, y)
    target = MinibatchLogPosterior(model, model.value_vars)
    gradient = compile_gradient(target)
    position = np.array([0.1, 0.2, -0.3, 0.0])
    rng = np.random.default_rng(seed_for("unbiased"))
    [batches] = target.draw_indices(rng, 4000)
    draws = np.array([gradient(position, batch) for batch in batches])
    standard_error = draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    error = draws.mean(axis=0) - full_data_gradient(X, y, position)
    assert np.all(np.abs(error) < 4 * standard_error), error / standard_error


def test_model_without_minibatch_has_the_exact_gradient():
    X, y = regression_data(seed_for("full"))
    model = regression_model(X, y, minibatch=False)
    target = MinibatchLogPosterior(model, model.value_vars)
    assert target.streams == ()
    position = np.array([0.3, -0.7, 1.5, 0.2])
    np.testing.assert_allclose(
        compile_gradient(target)(position), full_data_gradient(X, y, position), rtol=1e-12
    )


def test_missing_total_size_warns_that_the_posterior_is_biased():
    X, y = regression_data(seed_for("total_size"))
    with pytest.warns(UserWarning, match="total_size"):
        model = regression_model(X, y, total_size=False)
    with pytest.warns(UserWarning, match="posterior will be biased"):
        MinibatchLogPosterior(model, model.value_vars)


def test_separate_minibatches_of_x_and_y_warn():
    X, y = regression_data(seed_for("separate"))
    with pm.Model() as model:
        X_batch = pm.Minibatch(X, batch_size=BATCH)
        y_batch = pm.Minibatch(y, batch_size=BATCH)
        w = pm.Normal("w", 0, 1, shape=D)
        pm.Normal("y", X_batch @ w, 1.0, observed=y_batch, total_size=N)
    with pytest.warns(UserWarning, match=r"pm.Minibatch\(X, y, batch_size=B\)"):
        target = MinibatchLogPosterior(model, model.value_vars)
    assert len(target.streams) == 2
