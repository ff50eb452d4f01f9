"""Chains on a Dask cluster: the draws of pm.sample(cores=1), data read by the workers from
the store, a failed chain reported and the others kept."""

import numpy as np
import pymc as pm
import pytest

from helpers import make_idata, seed_for

import pymc_sgmcmc as sgmc

from pymc_sgmcmc.cross_validation import pointwise_log_likelihood
from pymc_sgmcmc.full_data import model_buffers
from pymc_sgmcmc.gradients.full_data import FullDataLogPosterior
from pymc_sgmcmc.gradients.minibatch import MinibatchLogPosterior
from pymc_sgmcmc.streaming import rows_left_behind

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

N, BATCH = 2_000, 50
OPTIONS = {"draws": 30, "tune": 10, "compute_convergence_checks": False}


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(seed_for("cluster"))
    X = rng.normal(size=(N, 2))
    y = X @ np.array([1.0, -1.0]) + rng.normal(size=N)
    root = zarr.open_group(str(tmp_path_factory.mktemp("cluster") / "data.zarr"), mode="w")
    root.create_array("X", shape=X.shape, chunks=(250, 2), dtype="f8")[:] = X
    root.create_array("y", shape=y.shape, chunks=(250,), dtype="f8")[:] = y
    with pm.Model() as model:
        X_batch, y_batch = sgmc.Minibatch(root["X"], root["y"], batch_size=BATCH)
        w = pm.Normal("w", 0, 1, shape=2)
        sigma = pm.HalfNormal("sigma", 1)
        pm.Normal("y", X_batch @ w, sigma, observed=y_batch, total_size=N)
    return model


def make_step():
    return sgmc.SGHMC(
        step_size=1e-3, friction=50.0, steps_per_draw=3, control_variate=sgmc.ControlVariate()
    )


@pytest.mark.filterwarnings("ignore::pymc_sgmcmc.MinibatchNoiseWarning")
def test_chains_on_a_cluster_draw_what_sequential_chains_draw(model, client):
    with model:
        sequential = pm.sample(
            step=make_step(), chains=2, cores=1, random_seed=3, progressbar=False, **OPTIONS
        )
        on_cluster = sgmc.sample(
            step=make_step(), chains=2, random_seed=3, client=client, **OPTIONS
        )
    for name in ("w", "sigma"):
        np.testing.assert_array_equal(
            on_cluster.posterior[name].values, sequential.posterior[name].values
        )
    np.testing.assert_array_equal(
        on_cluster.sample_stats["step_size"].values, sequential.sample_stats["step_size"].values
    )
    assert list(on_cluster.posterior.chain.values) == [0, 1]
    assert not np.allclose(on_cluster.posterior["w"][0], on_cluster.posterior["w"][1])


@pytest.mark.filterwarnings("ignore::pymc_sgmcmc.MinibatchNoiseWarning")
def test_chains_on_a_cluster_record_their_adapted_settings(model, client):
    options = {**OPTIONS, "tune": 40}
    with model:
        sequential_step = sgmc.SGLD()
        pm.sample(
            step=sequential_step, chains=2, cores=1, random_seed=3, progressbar=False, **options
        )
        on_cluster = sgmc.sample(
            step=sgmc.SGLD(), chains=2, random_seed=3, client=client, **options
        )
    for chain in (0, 1):
        stored = sgmc.adapted_settings(on_cluster, chain=chain)
        expected = sequential_step.adapted_settings(chain=chain)
        assert stored["step_size"] == on_cluster.sample_stats["step_size"].values[chain, -1]
        np.testing.assert_allclose(stored["step_size"], expected["step_size"], rtol=1e-8)
        np.testing.assert_allclose(stored["mass"], expected["mass"], rtol=1e-8)
        assert stored["steps_per_draw"] == expected["steps_per_draw"]


def sample_on(client, initvals):
    """Two chains on the cluster from ``initvals``, seed 3, without progress bars."""
    return sgmc.sample(
        step=make_step(),
        chains=2,
        random_seed=3,
        client=client,
        initvals=initvals,
        progressbar=False,
        **OPTIONS,
    )


@pytest.mark.filterwarnings("ignore::pymc_sgmcmc.MinibatchNoiseWarning")
def test_a_failed_chain_is_reported_and_the_others_kept(model, client):
    # Chain 1 starts at a NaN coefficient: it fails at its start.
    initvals = [{}, {"w": np.array([np.nan, 0.0])}]
    with model:
        with pytest.warns(sgmc.SGMCMCWarning, match="Chain 1 failed"):
            idata = sample_on(client, initvals)
        sequential = pm.sample(
            step=make_step(), chains=1, cores=1, random_seed=3, progressbar=False, **OPTIONS
        )
    assert list(idata.posterior.chain.values) == [0]
    # Chain 0 of 2 draws what chain 0 of 1 draws (the first child of the seed).
    np.testing.assert_array_equal(idata.posterior["w"].values, sequential.posterior["w"].values)


def test_all_chains_failing_raise_with_every_error(model, client):
    initvals = {"w": np.array([np.nan, 0.0])}
    with model, pytest.warns(sgmc.SGMCMCWarning, match="failed"):
        with pytest.raises(sgmc.ChainFailure, match="All 2 chains failed") as failure:
            sample_on(client, initvals)
    assert sorted(failure.value.failures) == [0, 1]


def test_arguments_that_do_not_apply_are_refused(model):
    with model:
        step = make_step()
        with pytest.raises(TypeError, match="`cores` does not apply"):
            sgmc.sample(step=step, cores=2)
        with pytest.raises(TypeError, match="`random_seed` must be an integer"):
            sgmc.sample(step=step, random_seed=np.random.default_rng(1))


def test_the_tools_after_sampling_run_on_the_workers(model, client):
    rng = np.random.default_rng(seed_for("cluster, after sampling"))
    idata = make_idata(
        posterior={
            "w": rng.normal([1.0, -1.0], 0.03, size=(2, 20, 2)),
            "sigma": rng.uniform(0.9, 1.1, size=(2, 20)),
        }
    )
    # The local scheduler's result; then the same graph with the client active: 8 tasks
    # of 250 rows, each reading its rows from the store where it runs.
    local = pointwise_log_likelihood(idata, model, chunk_size=250).data.compute(scheduler="sync")
    with distributed.get_task_stream(client) as stream:
        on_cluster = pointwise_log_likelihood(idata, model, chunk_size=250).values
    # Equal to rounding: a worker compiles the graph itself, and with cold compile caches
    # its code may round differently from the client's in the last bit.
    np.testing.assert_allclose(on_cluster, local, rtol=1e-13)
    ran = {str(task["key"]): task["worker"] for task in stream.data}
    blocks = {key for key in ran if "evaluate_block" in key}
    assert len(blocks) == 8
    assert {ran[key] for key in blocks} <= set(client.scheduler_info()["workers"])
    predictive = sgmc.sample_posterior_predictive(idata, model, random_seed=2)
    drawn_locally = predictive["posterior_predictive"]["y"].data.compute(scheduler="sync")
    np.testing.assert_allclose(
        predictive["posterior_predictive"]["y"].values, drawn_locally, rtol=1e-13
    )


def test_full_data_passes_run_on_the_workers_while_a_client_is_active(model, client):
    streamed = FullDataLogPosterior(MinibatchLogPosterior(model, model.value_vars), chunk_size=500)
    source = streamed.streams[0].buffer.sources
    X, y = (np.asarray(part.array) for part in source)
    # The same data in memory: its passes run in this process.
    with pm.Model() as in_memory:
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH)
        w = pm.Normal("w", 0, 1, shape=2)
        sigma = pm.HalfNormal("sigma", 1)
        pm.Normal("y", X_batch @ w, sigma, observed=y_batch, total_size=N)
    reference = FullDataLogPosterior(
        MinibatchLogPosterior(in_memory, in_memory.value_vars), chunk_size=500
    )
    positions = np.random.default_rng(seed_for("cluster, passes")).normal(size=(3, 3))
    with distributed.get_task_stream(client) as stream:
        logp, gradient = streamed.logp_and_gradient(positions[0])
        gradients = streamed.gradients(positions)
    expected_logp, expected_gradient = reference.logp_and_gradient(positions[0])
    np.testing.assert_allclose(logp, expected_logp, rtol=1e-12)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-10)
    np.testing.assert_allclose(gradients, reference.gradients(positions), rtol=1e-10)
    # Two passes of 4 blocks (500 rows of 2,000), each task on a worker.
    passes = [task for task in stream.data if "_block_pass" in str(task["key"])]
    assert len({str(task["key"]) for task in passes}) == 8


def test_the_rows_of_the_buffer_are_not_shipped_to_the_workers(model):
    import cloudpickle

    (buffer,) = model_buffers(model)
    rows = buffer.shared[0].get_value().shape[0]
    with rows_left_behind([buffer]):
        payload = cloudpickle.dumps(model)
    assert buffer.shared[0].get_value().shape[0] == rows  # restored here
    (received,) = model_buffers(cloudpickle.loads(payload))
    assert received.shared[0].get_value().shape[0] == 0
    # Refilled from the store in the worker, as the client's buffer was filled when built.
    received.refill()
    buffer.refill()
    np.testing.assert_array_equal(received.shared[0].get_value(), buffer.shared[0].get_value())
