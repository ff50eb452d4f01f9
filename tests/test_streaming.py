"""Minibatches streamed from zarr, Dask and xarray: unbiased rows, exact full-data passes,
the closed-form posterior, reproducible draws and clear errors."""

import numpy as np
import pymc as pm
import pytest
import scipy.stats
import xarray as xr

from helpers import (
    ARVIZ_1,
    MEAN_BIAS,
    assert_close,
    linear_gaussian_posterior,
    make_idata,
    seed_for,
)

import pymc_sgmcmc as sgmc

from pymc_sgmcmc.adaptation import curvature_at
from pymc_sgmcmc.cross_validation import pointwise_log_likelihood
from pymc_sgmcmc.gradients.full_data import FullDataLogPosterior
from pymc_sgmcmc.gradients.minibatch import MinibatchLogPosterior
from pymc_sgmcmc.streaming import RowBuffer, RowSource

zarr = pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")

QUIET = {"progressbar": False, "compute_convergence_checks": False}
N, D, CHUNK, BATCH, NOISE_SD, PRIOR_SD = 10_050, 3, 500, 100, 1.0, 10.0


def write_store(path, arrays, chunk=CHUNK):
    root = zarr.open_group(str(path), mode="w")
    for name, array in arrays.items():
        root.create_array(name, shape=array.shape, chunks=(chunk, *array.shape[1:]), dtype="f8")[
            :
        ] = array
    return zarr.open_group(str(path), mode="r")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(seed_for("streaming"))
    X = rng.normal(size=(N, D)) * np.array([1.0, 3.0, 0.2])
    y = X @ np.array([0.5, -1.0, 2.0]) + NOISE_SD * rng.normal(size=N)
    return X, y


@pytest.fixture(scope="module")
def store(data, tmp_path_factory):
    X, y = data
    # N is not a multiple of the chunk: the last chunk is short (50 rows).
    return write_store(tmp_path_factory.mktemp("streaming") / "data.zarr", {"X": X, "y": y})


def regression(X_source, y_source, **options):
    with pm.Model() as model:
        X_batch, y_batch = sgmc.Minibatch(X_source, y_source, batch_size=BATCH, **options)
        w = pm.Normal("w", 0, PRIOR_SD, shape=D)
        pm.Normal("y", X_batch @ w, NOISE_SD, observed=y_batch, total_size=N)
    return model


# ---- the reading scheme ----------------------------------------------------------------
def z_scores(counts, probabilities):
    total = counts.sum()
    expected = total * probabilities
    return (counts - expected) / np.sqrt(expected * (1 - probabilities))


def test_chunks_are_drawn_in_proportion_to_their_rows(store):
    buffer = RowBuffer([RowSource(store["y"])])
    assert buffer.chunk_sizes[-1] == N % CHUNK
    buffer._rng = np.random.default_rng(1)
    chunks = buffer._draw_chunks(400_000)
    counts = np.bincount(chunks, minlength=buffer.chunk_sizes.size)
    assert np.all(np.abs(z_scores(counts, buffer.chunk_sizes / N)) < 4.5)


def test_rows_are_uniform_within_the_buffer_and_are_rows_of_the_data(store, data):
    X, _ = data
    buffer = RowBuffer([RowSource(store["X"])], buffer_chunks=4)
    short = buffer.chunk_sizes.size - 1
    buffer._place(2, short, buffer._read_chunk(short))
    rng = np.random.default_rng(2)
    indices = buffer.draw_indices(rng, (400_000,), np.int32)
    slots, rows = np.divmod(indices, buffer.slot_rows)
    assert np.all(np.abs(z_scores(np.bincount(slots, minlength=4), np.full(4, 0.25))) < 4.5)
    # The short slot's rows are its chunk's only, each equally likely.
    in_short = rows[slots == 2]
    assert in_short.max() == N % CHUNK - 1
    halves = np.bincount(in_short // (N % CHUNK // 2), minlength=2)
    assert np.all(np.abs(z_scores(halves, np.full(2, 0.5))) < 4.5)
    # Every buffer row, padding included, holds a row of the data.
    value = buffer.shared[0].get_value()
    start = buffer.starts[short]
    np.testing.assert_array_equal(value[2 * CHUNK : 2 * CHUNK + 50], X[start:])
    np.testing.assert_array_equal(value[2 * CHUNK + 50 : 2 * CHUNK + 100], X[start:])


def test_every_row_is_equally_likely_across_refreshes(tmp_path):
    # Row numbers as the data: the drawn numbers' chunks, over many refreshes of a small
    # buffer that turns over fully at each, are the chunks' shares of the rows.
    rows = np.arange(1_050, dtype=float)
    source = write_store(tmp_path / "rows.zarr", {"rows": rows}, chunk=100)["rows"]
    buffer = RowBuffer([RowSource(source)], buffer_chunks=3, row_reuse=1)
    buffer.start_chain(np.random.default_rng(3))
    rng = np.random.default_rng(4)
    drawn = []
    for _ in range(3_000):
        # Three chunks' worth of rows drawn: the whole buffer turns over.
        buffer.refresh(3 * 1_050 / 11)
        index = buffer.draw_indices(rng, (2,), np.int32)
        drawn.extend(buffer.shared[0].get_value()[index])
    chunk_of = (np.asarray(drawn) // 100).astype(int)
    sizes = np.bincount((rows // 100).astype(int))
    assert np.all(np.abs(z_scores(np.bincount(chunk_of, minlength=11), sizes / 1_050)) < 4.5)


def test_one_chunk_is_read_per_row_reuse_chunks_of_rows_drawn(store):
    buffer = RowBuffer([RowSource(store["y"])], buffer_chunks=4, row_reuse=2)
    buffer.start_chain(np.random.default_rng(6))
    replaced = []
    for _ in range(6):
        before = buffer.shared[0].get_value().copy()
        # A chunk's worth of rows per draw, each row used twice: a chunk every 2 draws.
        buffer.refresh(N / buffer.chunk_sizes.size)
        changed = buffer.shared[0].get_value() != before
        replaced.append(changed.reshape(4, -1).any(axis=1).sum())
    # A fresh chunk may repeat the one it replaces (with probability 1/20 here).
    assert replaced[0::2] == [0, 0, 0] and sum(replaced[1::2]) >= 2


# ---- full-data passes ------------------------------------------------------------------
def full_data(model, chunk_size):
    target = MinibatchLogPosterior(model, model.value_vars)
    return FullDataLogPosterior(target, chunk_size=chunk_size)


def sources(store, tmp_path_factory):
    path = store.store.root if hasattr(store.store, "root") else None
    yield "zarr", store["X"], store["y"]
    yield "dask", da.from_zarr(store["X"]), da.from_zarr(store["y"])
    if path is not None:
        dataset = xr.Dataset(
            {"X": (("row", "column"), np.asarray(store["X"])), "y": ("row", np.asarray(store["y"]))}
        )
        out = tmp_path_factory.mktemp("xarray") / "data.zarr"
        dataset.chunk({"row": CHUNK}).to_zarr(out, mode="w", consolidated=False)
        with_dask = xr.open_zarr(out, consolidated=False)
        yield "xarray with Dask", with_dask["X"], with_dask["y"]
        lazy = xr.open_zarr(out, chunks=None, consolidated=False)
        yield "xarray lazy", lazy["X"], lazy["y"]


def test_streamed_full_data_passes_equal_the_in_memory_ones(store, data, tmp_path_factory):
    X, y = data
    with pm.Model() as in_memory:
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH)
        w = pm.Normal("w", 0, PRIOR_SD, shape=D)
        pm.Normal("y", X_batch @ w, NOISE_SD, observed=y_batch, total_size=N)
    reference = full_data(in_memory, 65536)
    positions = np.random.default_rng(5).normal(size=(3, D))
    logp, gradient = reference.logp_and_gradient(positions[0])
    gradients = reference.gradients(positions)
    names = []
    for name, X_source, y_source in sources(store, tmp_path_factory):
        names.append(name)
        # Blocks of 1,000 rows: several blocks, the last short and padded.
        streamed = full_data(regression(X_source, y_source), 1_000)
        streamed_logp, streamed_gradient = streamed.logp_and_gradient(positions[0])
        np.testing.assert_allclose(streamed_logp, logp, rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(streamed_gradient, gradient, rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(streamed.gradients(positions), gradients, rtol=1e-9)
    assert len(names) == 4
    # The zero-configuration curvature: from a store, its 2d gradients in one pass.
    assert streamed.streamed and not reference.streamed
    np.testing.assert_allclose(
        curvature_at(positions[0], streamed.gradient, gradients=streamed.gradients),
        curvature_at(positions[0], reference.gradient),
        rtol=1e-6,
    )


# ---- sampling ------------------------------------------------------------------------------
LARGE_N, LARGE_CHUNK, LARGE_SLOTS = 100_000, 1_000, 16


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    rng = np.random.default_rng(seed_for("streaming, large"))
    X = rng.normal(size=(LARGE_N, D)) * np.array([1.0, 3.0, 0.2])
    y = X @ np.array([0.5, -1.0, 2.0]) + NOISE_SD * rng.normal(size=LARGE_N)
    path = tmp_path_factory.mktemp("streaming_large") / "data.zarr"
    return X, y, write_store(path, {"X": X, "y": y}, chunk=LARGE_CHUNK)


def test_streamed_defaults_reach_the_closed_form_posterior_from_a_small_buffer(large):
    # The buffer holds 16,000 of the 100,000 rows: plain minibatch gradients from it would
    # follow the buffer's posterior, sqrt(1 + 6.25) = 2.7 times too wide. The defaults'
    # control variates take the buffer's noise on differences only.
    X, y, store = large
    mean, covariance, _ = linear_gaussian_posterior(X, y, NOISE_SD, PRIOR_SD)
    with pm.Model():
        X_batch, y_batch = sgmc.Minibatch(
            store["X"], store["y"], batch_size=BATCH, buffer_chunks=LARGE_SLOTS
        )
        w = pm.Normal("w", 0, PRIOR_SD, shape=D)
        pm.Normal("y", X_batch @ w, NOISE_SD, observed=y_batch, total_size=LARGE_N)
        idata = pm.sample(
            step=sgmc.SGHMC(), draws=600, tune=400, chains=2, random_seed=7, cores=1, **QUIET
        )
    draws = idata.posterior["w"].values
    assert_close(draws, mean, np.sqrt(np.diag(covariance)), label="streamed", mean_bias=MEAN_BIAS)


def explicit_step():
    return sgmc.SGHMC(
        step_size=2e-3,
        friction=20.0,
        steps_per_draw=5,
        control_variate=sgmc.ControlVariate(refresh_interval=7),
    )


# Short chains far from the posterior: only the draws' identity matters here.
@pytest.mark.filterwarnings("ignore::pymc_sgmcmc.MinibatchNoiseWarning")
def test_streamed_draws_are_reproducible_and_parallel_chains_match(store):
    model = regression(store["X"], store["y"], buffer_chunks=4)
    options = {"draws": 30, "tune": 10, "chains": 2, **QUIET}
    with model:
        first = pm.sample(step=explicit_step(), random_seed=11, cores=1, **options)
        second = pm.sample(step=explicit_step(), random_seed=11, cores=1, **options)
        parallel = pm.sample(step=explicit_step(), random_seed=11, cores=2, **options)
        other = pm.sample(step=explicit_step(), random_seed=12, cores=1, **options)
    draws = first.posterior["w"].values
    np.testing.assert_array_equal(draws, second.posterior["w"].values)
    np.testing.assert_array_equal(draws, parallel.posterior["w"].values)
    assert not np.allclose(draws, other.posterior["w"].values)
    assert not np.allclose(draws[0], draws[1])


@pytest.mark.filterwarnings("ignore::pymc_sgmcmc.MinibatchNoiseWarning")
def test_numpy_sources_are_pm_minibatch(data):
    X, y = data
    with pm.Model() as ours:
        X_batch, y_batch = sgmc.Minibatch(X, y, batch_size=BATCH)
        w = pm.Normal("w", 0, PRIOR_SD, shape=D)
        pm.Normal("y", X_batch @ w, NOISE_SD, observed=y_batch, total_size=N)
    with pm.Model() as theirs:
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH)
        w = pm.Normal("w", 0, PRIOR_SD, shape=D)
        pm.Normal("y", X_batch @ w, NOISE_SD, observed=y_batch, total_size=N)
    options = {"draws": 20, "tune": 5, "chains": 1, "random_seed": 3, **QUIET}
    results = []
    for model in (ours, theirs):
        with model:
            step = sgmc.SGLD(step_size=1e-7, steps_per_draw=3)
            results.append(pm.sample(step=step, **options).posterior["w"].values)
    np.testing.assert_array_equal(*results)


# ---- errors ---------------------------------------------------------------------------
def test_nan_in_the_store_is_refused_before_sampling(data, tmp_path):
    X, y = data
    y = y.copy()
    y[7_321] = np.nan
    store = write_store(tmp_path / "nan.zarr", {"X": X, "y": y})
    with regression(store["X"], store["y"]):
        with pytest.raises(ValueError, match=r"source 'y' holds NaN in rows \[7321\]"):
            pm.sample(step=sgmc.SGLD(step_size=1e-5), draws=5, tune=5, chains=1, **QUIET)


def test_bad_sources_and_settings_are_refused(store, data):
    X, _ = data
    with pytest.raises(ValueError, match="same number of rows"):
        sgmc.Minibatch(store["X"], X[:100], batch_size=10)
    with pytest.raises(ValueError, match="`buffer_chunks` must be a positive integer"):
        sgmc.Minibatch(store["X"], batch_size=10, buffer_chunks=0)
    with pytest.raises(ValueError, match="`row_reuse` must be a positive number"):
        sgmc.Minibatch(store["X"], batch_size=10, row_reuse=0)
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        sgmc.Minibatch(store["X"], batch_size=0)
    with pytest.raises(TypeError, match="has no rows"):
        sgmc.Minibatch(3.0, batch_size=10)
    with pytest.raises(TypeError, match="at least one data source"):
        sgmc.Minibatch(batch_size=10)


# ---- after sampling: log-likelihood, LOO, posterior predictive, block by block -------------
@pytest.fixture(scope="module")
def exact_draws(data):
    """Exact posterior draws of the regression's weights (closed form)."""
    X, y = data
    mean, covariance, _ = linear_gaussian_posterior(X, y, NOISE_SD, PRIOR_SD)
    rng = np.random.default_rng(seed_for("streaming, after sampling"))
    draws = rng.multivariate_normal(mean, covariance, size=(2, 200))
    return mean, covariance, make_idata(posterior={"w": draws})


def in_memory_regression(X, y):
    with pm.Model() as model:
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH)
        w = pm.Normal("w", 0, PRIOR_SD, shape=D)
        pm.Normal("y", X_batch @ w, NOISE_SD, observed=y_batch, total_size=N)
    return model


def test_streamed_log_likelihood_and_loo_equal_the_in_memory_ones(store, data, exact_draws):
    X, y = data
    _, _, idata = exact_draws
    streamed, in_memory = regression(store["X"], store["y"]), in_memory_regression(X, y)
    # Blocks of 2,000 rows (4 chunks): a lazy Dask array, one task per block.
    lazy = pointwise_log_likelihood(idata, streamed, chunk_size=2_000)
    assert lazy.chunks is not None and len(lazy.chunks[2]) == 6
    w = np.asarray(idata["posterior"]["w"])
    exact = scipy.stats.norm.logpdf(y, np.einsum("cdk,nk->cdn", w, X), NOISE_SD)
    np.testing.assert_allclose(lazy.values, exact, rtol=1e-10)
    np.testing.assert_allclose(
        lazy.values, pointwise_log_likelihood(idata, in_memory).values, rtol=1e-12
    )
    result, reference = sgmc.loo(idata, streamed), sgmc.loo(idata, in_memory)
    np.testing.assert_allclose(elpd(result), elpd(reference), rtol=1e-12)
    if ARVIZ_1:
        # Subsampled: the subsample's rows read from the store, the same estimate.
        result = sgmc.loo(idata, streamed, subsample=300, random_seed=4)
        reference = sgmc.loo(idata, in_memory, subsample=300, random_seed=4)
        np.testing.assert_allclose(elpd(result), elpd(reference), rtol=1e-12)
        np.testing.assert_allclose(result.subsampling_se, reference.subsampling_se, rtol=1e-9)


def elpd(result):
    return result["elpd"] if ARVIZ_1 else result["elpd_loo"]


def test_streamed_posterior_predictive_follows_the_closed_form(store, data, exact_draws):
    X, y = data
    mean, covariance, idata = exact_draws
    model = regression(store["X"], store["y"])
    result = sgmc.sample_posterior_predictive(idata, model, max_draws=100, random_seed=3)
    lazy = result["posterior_predictive"]["y"]
    assert lazy.chunks is not None
    predictive = lazy.values
    assert predictive.shape == (2, 100, N)
    np.testing.assert_array_equal(result["observed_data"]["y"].values, y)
    again = sgmc.sample_posterior_predictive(idata, model, max_draws=100, random_seed=3)
    np.testing.assert_array_equal(again["posterior_predictive"]["y"].values, predictive)
    other = sgmc.sample_posterior_predictive(idata, model, max_draws=100, random_seed=4)
    assert not np.allclose(other["posterior_predictive"]["y"].values, predictive)
    # Row i: mean x_i·m, variance x_iᵀ Σ x_i + σ². The z-scores of the row means over the
    # N rows have mean 0 (sd 1/sqrt(N)) and sd 1; the variance ratios of 200 draws have
    # relative sd sqrt(2/200) = 10% per row.
    expected_mean = X @ mean
    expected_variance = np.einsum("ij,jk,ik->i", X, covariance, X) + NOISE_SD**2
    z = (predictive.mean(axis=(0, 1)) - expected_mean) / np.sqrt(expected_variance / 200)
    assert abs(z.mean()) < 4 / np.sqrt(N) and 0.95 < z.std() < 1.05
    ratio = predictive.reshape(200, N).var(axis=0, ddof=1) / expected_variance
    assert abs(ratio.mean() - 1) < 4 * 0.1 / np.sqrt(N)


def test_streamed_posterior_predictive_of_integer_data(tmp_path):
    rng = np.random.default_rng(seed_for("streaming, bernoulli"))
    x = rng.normal(size=4_000)
    y = (rng.random(4_000) < 1 / (1 + np.exp(-(0.5 + 2 * x)))).astype(np.int8)
    root = zarr.open_group(str(tmp_path / "data.zarr"), mode="w")
    root.create_array("x", shape=x.shape, chunks=(300,), dtype="f8")[:] = x
    root.create_array("y", shape=y.shape, chunks=(300,), dtype="i1")[:] = y
    with pm.Model() as model:
        x_batch, y_batch = sgmc.Minibatch(root["x"], root["y"], batch_size=BATCH)
        a, b = pm.Normal("a", 0, 5), pm.Normal("b", 0, 5)
        pm.Bernoulli("y", logit_p=a + b * x_batch, observed=y_batch, total_size=4_000)
    idata = make_idata(posterior={"a": np.full((1, 400), 0.5), "b": np.full((1, 400), 2.0)})
    result = sgmc.sample_posterior_predictive(idata, model, random_seed=1)
    predictive = result["posterior_predictive"]["y"].values
    assert set(np.unique(predictive)) == {0, 1}
    probability = 1 / (1 + np.exp(-(0.5 + 2 * x)))
    # 400 draws per row: z-scores of the row means, over 4,000 rows.
    z = (predictive.mean(axis=(0, 1)) - probability) / np.sqrt(
        probability * (1 - probability) / 400
    )
    assert abs(z.mean()) < 4 / np.sqrt(4_000) and 0.9 < z.std() < 1.1
    np.testing.assert_array_equal(result["observed_data"]["y"].values, y)


def test_models_the_tools_after_sampling_cannot_stream_are_refused(store, data):
    X, y = data
    with pytest.raises(NotImplementedError, match="stream its rows block by block"):
        sgmc.full_data_model(regression(store["X"], store["y"]))
    with pm.Model() as mixed:
        X_batch, y_batch = sgmc.Minibatch(store["X"], store["y"], batch_size=BATCH)
        noise = pm.Minibatch(y, batch_size=BATCH)
        w = pm.Normal("w", 0, PRIOR_SD, shape=D)
        pm.Normal("y", X_batch @ w + 0 * noise, NOISE_SD, observed=y_batch, total_size=N)
    idata = make_idata(posterior={"w": np.zeros((1, 5, D))})
    with pytest.raises(NotImplementedError, match="mixes pm.Minibatch"):
        sgmc.loo(idata, mixed)


def test_plain_minibatch_gradients_from_a_small_buffer_warn(store):
    # 4 chunks of 500 rows for 10,050 rows: the buffer's posterior is sqrt(1 + 5.0) wider.
    with regression(store["X"], store["y"], buffer_chunks=4):
        with pytest.warns(sgmc.SGMCMCWarning, match=r"up to 2\.5 times too wide"):
            sgmc.SGLD(step_size=1e-5)


@pytest.mark.filterwarnings("ignore::pymc_sgmcmc.SGMCMCWarning")
def test_the_jax_backend_is_refused_for_streamed_data(store):
    pytest.importorskip("jax")
    with regression(store["X"], store["y"]):
        with pytest.raises(NotImplementedError, match="drawn on the host"):
            sgmc.SGLD(step_size=1e-5, compile_kwargs={"mode": "JAX"})
