"""Chains on a Dask cluster: each chain one task, the draws of ``pm.sample(cores=1)``.

Dask distributed (``distributed.Client``) schedules the chains on its workers, on a laptop
(a ``LocalCluster`` of worker processes, the default) or on a cluster (a scheduler's
address). Each task runs ``pm.sample`` for one chain in a worker; the model and the step
method travel pickled, as they do to PyMC's own worker processes, so data held in a zarr
store travel as the store's path or URL and are read by the workers, never shipped from
the client.

Why the draws are those of ``pm.sample(random_seed=seed, cores=1)``: ``pm.sample`` gives
chain ``c`` the ``c``-th child of ``SeedSequence(seed)``. A one-chain ``pm.sample`` given a
generator over ``SeedSequence(seed, n_children_spawned=c)`` spawns exactly that child, so
each task draws what its chain would have drawn among all of them.
"""

from __future__ import annotations

import logging
import numbers
import os
import time
import traceback

import numpy as np
import pymc as pm
import xarray as xr

from pymc_sgmcmc._validation import positive_int
from pymc_sgmcmc._warnings import warn
from pymc_sgmcmc.diagnostics._trace import group_dataset
from pymc_sgmcmc.full_data import model_buffers
from pymc_sgmcmc.streaming import rows_left_behind

__all__ = ["ChainFailure", "sample"]


class ChainFailure(RuntimeError):
    """Every chain of :func:`sample` failed; ``failures`` maps a chain to its error."""

    def __init__(self, failures: dict[int, BaseException]):
        self.failures = failures
        chain, error = next(iter(failures.items()))
        super().__init__(
            f"All {len(failures)} chains failed; chain {chain}: {type(error).__name__}: {error}"
        )


def sample(
    draws: int = 1000,
    *,
    step,
    model=None,
    tune: int = 1000,
    chains: int = 4,
    random_seed: int | None = None,
    client=None,
    progressbar: bool = True,
    **kwargs,
):
    """``pm.sample`` with each chain a task on a Dask cluster.

    Returns what ``pm.sample`` returns (``InferenceData`` on PyMC 5, ``xarray.DataTree`` on
    PyMC 6), with the same draws as ``pm.sample(..., random_seed=random_seed, cores=1)``
    and each chain's adapted settings in ``sample_stats`` (as
    ``step.record_adapted_settings`` writes them; :func:`pymc_sgmcmc.adapted_settings`
    reads them).
    A chain that fails is reported with its error (a warning with its traceback) and the
    other chains are returned; if all fail, :class:`ChainFailure` is raised.

    Parameters
    ----------
    draws, tune, chains, random_seed
        As for ``pm.sample``; ``random_seed`` is an integer (or None, drawn here).
    step : pymc_sgmcmc step method
        Built in the model's context, as for ``pm.sample``.
    model : pymc.Model, optional
        The model of the context by default.
    client : distributed.Client or str, optional
        The cluster: a client, or a scheduler's address (``"tcp://host:8786"``). By
        default a ``LocalCluster`` with one single-threaded worker process per chain (at
        most one per core), closed at the end.
    progressbar : bool, default True
        One line per chain, updated as its draws arrive.
    **kwargs
        Passed to each chain's ``pm.sample`` (``initvals``, ``discard_tuned_samples``,
        ``compute_convergence_checks``, ...), except ``cores`` and ``chains``.

    Examples
    --------
    >>> from distributed import Client, LocalCluster  # doctest: +SKIP
    >>> with model:  # doctest: +SKIP
    ...     idata = pymc_sgmcmc.sample(step=pymc_sgmcmc.SGHMC(), chains=2, random_seed=1)
    """
    import cloudpickle
    import distributed

    chains = positive_int("chains", chains)
    for name in ("cores", "mp_ctx"):
        if name in kwargs:
            raise TypeError(
                f"sample() runs each chain as a task on the cluster; `{name}` does not "
                "apply. The cluster's workers set the parallelism."
            )
    if random_seed is None:
        random_seed = int(np.random.default_rng().integers(2**31))
    if isinstance(random_seed, bool) or not isinstance(random_seed, numbers.Integral):
        raise TypeError(
            f"`random_seed` must be an integer or None, got {type(random_seed).__name__}: the "
            "chains' seeds are derived from it as pm.sample derives them."
        )
    model = pm.modelcontext(model)
    initvals = kwargs.pop("initvals", None)
    # The buffers' rows stay here: a worker reads its own from the sources.
    with rows_left_behind(model_buffers(model)):
        payload = cloudpickle.dumps((model, step))
    own_cluster = None
    if client is None:
        own_cluster = distributed.LocalCluster(
            n_workers=min(chains, os.cpu_count() or 1),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
        client = distributed.Client(own_cluster)
    elif isinstance(client, str):
        client = distributed.Client(client)
    try:
        progress = distributed.Queue(client=client) if progressbar else None
        futures = {
            chain: client.submit(
                _run_chain,
                payload,
                chain,
                int(random_seed),
                draws,
                tune,
                _chain_initvals(initvals, chain),
                kwargs,
                progress,
                pure=False,
                key=f"pymc_sgmcmc-chain-{chain}-{random_seed}-{os.getpid()}-{id(payload)}",
            )
            for chain in range(chains)
        }
        if progressbar:
            _show_progress(progress, futures, draws + tune)
        results, failures = {}, {}
        for chain, future in futures.items():
            try:
                results[chain] = future.result()
            except Exception as error:  # noqa: BLE001 - reported, the other chains kept
                failures[chain] = error
    finally:
        if own_cluster is not None:
            client.close()
            own_cluster.close()
    for chain, error in failures.items():
        text = "".join(traceback.format_exception(error)).rstrip()
        warn(f"Chain {chain} failed and is left out of the result:\n{text}")
    if not results:
        raise ChainFailure(failures)
    return _concatenate_chains(results)


def _chain_initvals(initvals, chain: int):
    if isinstance(initvals, list | tuple):
        return initvals[chain % len(initvals)]
    return initvals


def _run_chain(payload, chain, seed, draws, tune, initvals, kwargs, progress):
    """One chain in a worker: ``pm.sample`` with chain ``chain``'s seed of ``seed``."""
    import cloudpickle

    model, step = cloudpickle.loads(payload)
    # The chain runs in this process: its adapted settings stay with the step here.
    step._adapted_record.adopt()
    for buffer in model_buffers(model):
        buffer.refill()
    callback = None
    if progress is not None:
        every = max(1, (draws + tune) // 50)

        def callback(trace, draw):
            done = draw.draw_idx + 1
            if done % every == 0 or done == draws + tune:
                progress.put((chain, done))

    generator = np.random.default_rng(np.random.SeedSequence(seed, n_children_spawned=chain))
    # The client reports progress; each worker's "Sequential sampling (1 chains...)" would
    # only repeat it in the workers' logs.
    logger = logging.getLogger("pymc")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        result = _sample_one_chain(model, step, generator, draws, tune, initvals, callback, kwargs)
    finally:
        logger.setLevel(level)
    if kwargs.get("return_inferencedata", True):
        step.record_adapted_settings(result)
    return result


def _sample_one_chain(model, step, generator, draws, tune, initvals, callback, kwargs):
    return pm.sample(
        draws=draws,
        tune=tune,
        chains=1,
        cores=1,
        step=step,
        model=model,
        random_seed=generator,
        initvals=initvals,
        progressbar=False,
        callback=callback,
        **kwargs,
    )


def _show_progress(progress, futures, total: int) -> None:
    """One line per chain (rich, as PyMC's own bars), from the draw counts the workers
    put on the queue."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns) as bars:
        tasks = {chain: bars.add_task(f"chain {chain}", total=total) for chain in futures}
        while not all(future.done() for future in futures.values()):
            # Whatever has arrived, without waiting: a waiting get that times out is
            # logged as an error by the scheduler.
            for chain, done in progress.get(batch=True):
                bars.update(tasks[chain], completed=done)
            time.sleep(0.2)
        for chain, future in futures.items():
            if future.status == "finished":
                bars.update(tasks[chain], completed=total)
            else:
                bars.update(tasks[chain], description=f"chain {chain} (failed)")


def _concatenate_chains(results: dict):
    """The one-chain results as one, their chains numbered as in ``pm.sample``."""
    first = results[min(results)]
    names = list(first.children) if isinstance(first, xr.DataTree) else list(first.groups())
    groups = {}
    for name in names:
        datasets = [group_dataset(result, name) for result in results.values()]
        if "chain" in datasets[0].dims:
            datasets = [
                dataset.assign_coords(chain=[chain])
                for chain, dataset in zip(results, datasets, strict=True)
            ]
            combined = xr.concat(datasets, dim="chain")
            combined.attrs = datasets[0].attrs
        else:
            combined = datasets[0]
        groups[name] = combined
    if isinstance(first, xr.DataTree):
        tree = xr.DataTree.from_dict(groups)
        tree.attrs = first.attrs
        return tree
    return type(first)(**groups)
