"""Data larger than memory: streamed (zarr) against in-memory minibatches.

Writes synthetic logistic regressions to zarr stores (rows in random order, chunk by chunk,
so the writer's memory stays bounded), then samples each with a sampler's defaults in a
fresh process, the data either streamed through ``pymc_sgmcmc.Minibatch`` or loaded into
``pm.Minibatch``, and records the start-up (step construction: NaN check, MAP search and
curvature, all full-data passes), the SG steps per second while sampling, the posterior
and the process's peak resident memory (the operating system's page cache, which holds
the store's recently read chunks, is not the process's memory).

    python benchmarks/streaming.py --directory /tmp/sgmcmc_streaming

It also times two chains on a Dask ``LocalCluster`` of two worker processes
(``pymc_sgmcmc.sample``) against ``pm.sample(cores=2)``, and the tools after sampling
(a posterior predictive statistic, PSIS-LOO) on the largest store
(``--only-after-sampling`` runs them alone). Results go to ``benchmarks/results/streaming.json`` and a table on standard output.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np

FEATURES = 56
CHUNK_ROWS = 16_384
RESULTS = pathlib.Path(__file__).parent / "results" / "streaming.json"


def write(*, path: str, rows: int, features: int = FEATURES, chunk_rows: int = CHUNK_ROWS):
    """A logistic regression of ``rows`` i.i.d. rows: X ~ N(0, 1), w ~ N(0, 1/d)."""
    import zarr

    root = zarr.open_group(path, mode="w")
    X = root.create_array("X", shape=(rows, features), chunks=(chunk_rows, features), dtype="f8")
    y = root.create_array("y", shape=(rows,), chunks=(chunk_rows,), dtype="i1")
    true_w = np.random.default_rng(0).normal(0.0, 1.0 / np.sqrt(features), features)
    for number, start in enumerate(range(0, rows, chunk_rows)):
        rng = np.random.default_rng([1, number])
        stop = min(start + chunk_rows, rows)
        block = rng.standard_normal((stop - start, features))
        X[start:stop] = block
        y[start:stop] = rng.random(stop - start) < 1.0 / (1.0 + np.exp(-(block @ true_w)))
    root.attrs["true_w"] = true_w.tolist()
    return {"rows": rows, "bytes_on_disk": _size(path)}


def sample(*, path: str, source: str, sampler: str, batch: int, draws: int, tune: int, **step):
    """One run with ``sampler``'s defaults (plus ``step`` options), one chain."""
    import logging

    import pymc as pm
    import zarr

    import pymc_sgmcmc as sgmc

    logging.getLogger("pymc").setLevel(logging.ERROR)
    options = {key: step.pop(key) for key in ("row_reuse", "buffer_chunks") if key in step}
    store = zarr.open_group(path, mode="r")
    rows = store["y"].shape[0]
    with pm.Model() as model:
        if source == "memory":
            X_batch, y_batch = pm.Minibatch(
                np.asarray(store["X"]), np.asarray(store["y"], dtype=np.int32), batch_size=batch
            )
        else:
            X_batch, y_batch = sgmc.Minibatch(store["X"], store["y"], batch_size=batch, **options)
        w = pm.Normal("w", 0.0, 1.0, shape=store["X"].shape[1])
        pm.Bernoulli("y", logit_p=X_batch @ w, observed=y_batch, total_size=rows)
    start = time.perf_counter()
    with model:
        step_method = getattr(sgmc, sampler)(**step)
    build = time.perf_counter() - start
    marks = {}

    def callback(trace, draw):
        # The sampling phase starts at the first draw after tuning.
        if not draw.tuning and "sampling" not in marks:
            marks["sampling"] = time.perf_counter()

    start = time.perf_counter()
    idata = pm.sample(
        step=step_method,
        model=model,
        draws=draws,
        tune=tune,
        chains=1,
        cores=1,
        random_seed=1,
        progressbar=False,
        compute_convergence_checks=False,
        callback=callback,
    )
    end = time.perf_counter()
    sampling_steps = float(idata.sample_stats["n_steps"].sum())
    posterior = idata.posterior["w"].values.reshape(-1, store["X"].shape[1])
    return {
        "rows": rows,
        "source": source,
        "build_seconds": build,
        "sample_seconds": end - start,
        "sampling_steps_per_second": sampling_steps / (end - marks["sampling"]),
        "steps_per_draw": float(idata.sample_stats["n_steps"].mean()),
        "control_variate": step_method.control_variate is not None,
        "mean": posterior.mean(axis=0).tolist(),
        "sd": posterior.std(axis=0).tolist(),
    }


def cluster(*, path: str, sampler: str, batch: int, draws: int, tune: int, chains: int = 2):
    """Wall time of ``chains`` chains by ``pm.sample(cores=chains)`` and by
    ``pymc_sgmcmc.sample`` on a LocalCluster of ``chains`` worker processes (its start
    timed apart), one step built for both; and whether their draws agree."""
    import logging

    import distributed
    import pymc as pm
    import zarr

    import pymc_sgmcmc as sgmc

    logging.getLogger("pymc").setLevel(logging.ERROR)
    store = zarr.open_group(path, mode="r")
    rows = store["y"].shape[0]
    with pm.Model() as model:
        X_batch, y_batch = sgmc.Minibatch(store["X"], store["y"], batch_size=batch)
        w = pm.Normal("w", 0.0, 1.0, shape=store["X"].shape[1])
        pm.Bernoulli("y", logit_p=X_batch @ w, observed=y_batch, total_size=rows)
        step = getattr(sgmc, sampler)()
    options = {"draws": draws, "tune": tune, "chains": chains, "random_seed": 1}
    options["compute_convergence_checks"] = False
    start = time.perf_counter()
    local = pm.sample(step=step, model=model, cores=chains, progressbar=False, **options)
    local_seconds = time.perf_counter() - start
    start = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=chains, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    start_seconds = time.perf_counter() - start
    start = time.perf_counter()
    remote = sgmc.sample(step=step, model=model, client=client, progressbar=False, **options)
    cluster_seconds = time.perf_counter() - start
    client.close()
    cluster.close()
    return {
        "rows": rows,
        "pm_sample_cores_seconds": local_seconds,
        "cluster_start_seconds": start_seconds,
        "cluster_sample_seconds": cluster_seconds,
        "identical_draws": bool(
            np.array_equal(local.posterior["w"].values, remote.posterior["w"].values)
        ),
    }


def after_sampling(*, path: str, sampler: str, batch: int, draws: int, tune: int, kept: int = 100):
    """The tools after sampling on the streamed model: one chain of ``sampler``'s
    defaults, then a posterior predictive statistic per draw (computed block by block
    from the lazy draws of ``kept`` draws) and PSIS-LOO (subsampled when the
    draws × N matrix exceeds the memory budget), each timed, with the peak memory after
    sampling and after each tool."""
    import logging

    import pymc as pm
    import zarr

    import pymc_sgmcmc as sgmc

    logging.getLogger("pymc").setLevel(logging.ERROR)
    store = zarr.open_group(path, mode="r")
    rows = store["y"].shape[0]
    with pm.Model() as model:
        X_batch, y_batch = sgmc.Minibatch(store["X"], store["y"], batch_size=batch)
        w = pm.Normal("w", 0.0, 1.0, shape=store["X"].shape[1])
        pm.Bernoulli("y", logit_p=X_batch @ w, observed=y_batch, total_size=rows)
        idata = pm.sample(
            step=getattr(sgmc, sampler)(),
            draws=draws,
            tune=tune,
            chains=1,
            random_seed=1,
            progressbar=False,
            compute_convergence_checks=False,
        )
    result = {"rows": rows, "peak_memory_after_sampling_mb": _peak_mb()}
    start = time.perf_counter()
    predictive = sgmc.sample_posterior_predictive(idata, model, max_draws=kept, random_seed=2)
    share = predictive["posterior_predictive"]["y"].mean("y_dim_0").values
    result["predictive_seconds"] = time.perf_counter() - start
    result["predictive_draws"] = int(share.size)
    result["predictive_share_of_ones"] = [float(share.mean()), float(share.std())]
    result["observed_share_of_ones"] = float(predictive["observed_data"]["y"].mean().values)
    result["peak_memory_after_predictive_mb"] = _peak_mb()
    start = time.perf_counter()
    loo = sgmc.loo(idata, model, random_seed=3)
    result["loo_seconds"] = time.perf_counter() - start
    result["loo"] = {
        key: float(getattr(loo, key))
        for key in ("elpd", "se", "subsampling_se", "elpd_loo")
        if hasattr(loo, key) and np.ndim(getattr(loo, key)) == 0
    }
    result["loo_subsampled"] = hasattr(loo, "subsampling_se")
    result["peak_memory_after_loo_mb"] = _peak_mb()
    return result


def _peak_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


TASKS = {"write": write, "sample": sample, "cluster": cluster, "after_sampling": after_sampling}


def _size(path) -> int:
    return sum(file.stat().st_size for file in pathlib.Path(path).rglob("*") if file.is_file())


def run_task(task: str, **arguments) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--task", task, json.dumps(arguments)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def compare(first: dict, second: dict) -> dict:
    """The largest mean difference (in posterior sds) and sd ratio between two runs."""
    mean = np.asarray(first["mean"]) - np.asarray(second["mean"])
    sd = np.asarray(second["sd"])
    ratio = np.asarray(first["sd"]) / sd
    return {
        "max_mean_difference_sd": float(np.max(np.abs(mean) / sd)),
        "sd_ratio_range": [float(ratio.min()), float(ratio.max())],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--task":
        result = TASKS[sys.argv[2]](**json.loads(sys.argv[3]))
        result["peak_memory_mb"] = _peak_mb()
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", required=True, help="where the stores are written")
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--sampler", default="SGLD")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--memory-rows", type=int, default=1_000_000, help="the size run in memory too"
    )
    parser.add_argument(
        "--cluster-rows", type=int, default=1_000_000, help="the size run on a LocalCluster"
    )
    parser.add_argument(
        "--after-sampling-rows",
        type=int,
        default=10_000_000,
        help="the size whose posterior predictive and LOO are timed",
    )
    parser.add_argument(
        "--only-after-sampling",
        action="store_true",
        help="run the tools after sampling alone (on a store written before)",
    )
    arguments = parser.parse_args()
    if arguments.only_after_sampling:
        arguments.rows = []
    directory = pathlib.Path(arguments.directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Runs of other sizes from earlier invocations are kept; a size run again is replaced.
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.setdefault("stores", {})
    results.setdefault("runs", [])
    planned = {
        (rows, source)
        for rows in arguments.rows
        for source in (["zarr", "memory"] if rows == arguments.memory_rows else ["zarr"])
    }
    results["runs"] = [
        run for run in results["runs"] if (run["rows"], run["source"]) not in planned
    ]
    common = {
        "sampler": arguments.sampler,
        "batch": arguments.batch,
        "draws": arguments.draws,
        "tune": arguments.tune,
    }
    for rows in arguments.rows:
        path = str(directory / f"logistic_{rows}.zarr")
        if not pathlib.Path(path).exists():
            start = time.perf_counter()
            results["stores"][str(rows)] = run_task("write", path=path, rows=rows)
            results["stores"][str(rows)]["write_seconds"] = time.perf_counter() - start
        else:
            results["stores"].setdefault(str(rows), {"rows": rows})
            results["stores"][str(rows)]["bytes_on_disk"] = _size(path)
        print(json.dumps(results["stores"][str(rows)]), flush=True)
        sources = ["zarr", "memory"] if rows == arguments.memory_rows else ["zarr"]
        for source in sources:
            run = run_task("sample", path=path, source=source, **common)
            results["runs"].append(run)
            print(json.dumps({k: v for k, v in run.items() if k not in ("mean", "sd")}), flush=True)
    by_key = {(run["rows"], run["source"]): run for run in results["runs"]}
    results["streamed_against_memory"] = {
        str(rows): compare(run, by_key[rows, "memory"])
        for (rows, source), run in by_key.items()
        if source == "zarr" and (rows, "memory") in by_key
    }
    print(json.dumps(results["streamed_against_memory"]))
    if arguments.cluster_rows in arguments.rows:
        path = str(directory / f"logistic_{arguments.cluster_rows}.zarr")
        results["cluster"] = run_task("cluster", path=path, **common)
        print(json.dumps(results["cluster"]), flush=True)
    path = directory / f"logistic_{arguments.after_sampling_rows}.zarr"
    if arguments.only_after_sampling or arguments.after_sampling_rows in arguments.rows:
        if not path.exists():
            run_task("write", path=str(path), rows=arguments.after_sampling_rows)
        results["after_sampling"] = run_task("after_sampling", path=str(path), **common)
        print(json.dumps(results["after_sampling"]), flush=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
