"""Posterior predictive draws of a minibatch model on its full data, for big N.

``pm.sample_posterior_predictive(idata)`` on a model fed through ``pm.Minibatch`` draws
the B rows of a random minibatch; on :func:`pymc_sgmcmc.full_data_model` it draws every
row. At large N a draw holds N values per observed variable, so this module draws the
full-data posterior predictive for a subset of the posterior draws (``thin``,
``max_draws``), in chunks of draws, so that the result fits in memory and
``az.plot_ppc`` can draw it.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import xarray as xr

from pymc.model import modelcontext
from pytensor.graph.replace import clone_replace
from pytensor.graph.traversal import graph_inputs
from pytensor.tensor.random.type import RandomGeneratorType

from pymc_sgmcmc._blocks import (
    MAX_TASK_ROWS,
    BlockFunction,
    block_model,
    block_seeds,
    lazy_over_rows,
    rows_per_task,
)
from pymc_sgmcmc._compat import PYMC_MAJOR
from pymc_sgmcmc._validation import optional_positive_int, positive_int
from pymc_sgmcmc.diagnostics._trace import group_dataset, stacked_draws
from pymc_sgmcmc.full_data import full_data_model

__all__ = ["sample_posterior_predictive"]


def sample_posterior_predictive(
    idata,
    model=None,
    *,
    var_names=None,
    thin: int | None = None,
    max_draws: int | None = None,
    draws_per_chunk: int = 100,
    predictions: bool = False,
    random_seed=None,
):
    """Posterior predictive draws of every data row, for some or all posterior draws.

    ``pm.sample_posterior_predictive`` on the full-data copy of ``model``
    (:func:`pymc_sgmcmc.full_data_model`), for every ``thin``-th draw of each chain and at
    most ``max_draws`` of them (evenly spaced), computed ``draws_per_chunk`` draws at a
    time.

    On a model that streams its data from a store (:func:`pymc_sgmcmc.Minibatch`) the
    observed variables' draws are lazy Dask arrays instead: one task per block of whole
    chunks reads its rows from the store (on a cluster's workers when a
    ``distributed.Client`` is active) and draws them for all kept draws, seeded by a
    child of ``random_seed`` per block, so the result does not depend on which worker
    runs which task. ``draws_per_chunk`` does not apply; ``var_names`` must name observed
    variables. For predictions, build the model over a store of the new rows.

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.DataTree
        A trace with a ``posterior`` group, e.g. from ``pm.sample`` with an SG-MCMC step.
    model : pymc.Model, optional
        The minibatch model the trace came from, or its full-data copy (from the context
        if omitted). For predictions on new rows, pass the full-data copy after
        ``pm.set_data`` on it, with ``predictions=True``.
    var_names : list of str, optional
        Observed (or other) variables to draw; by default the observed variables.
    thin : int, optional
        Keep every ``thin``-th draw of each chain.
    max_draws : int, optional
        Keep at most this many draws per chain (after thinning), evenly spaced.
    draws_per_chunk : int, default 100
        Posterior draws per call of ``pm.sample_posterior_predictive``.
    predictions : bool, default False
        As for ``pm.sample_posterior_predictive``: the draws go to a ``predictions``
        group (new data set with ``pm.set_data``) instead of ``posterior_predictive``.
    random_seed : int, optional
        Seeds every chunk (one child seed each): the same seed gives the same draws.

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        What ``pm.sample_posterior_predictive`` returns (with ``observed_data``), its
        predictive group holding the kept draws, ``(chain, draw, *rows)`` per variable.
        The memory it needs is about ``chains × draws × N × 8`` bytes per variable (for a
        streamed model, one task's block per thread until the result is computed).
    """
    model = modelcontext(model)
    thin = optional_positive_int("thin", thin)
    max_draws = optional_positive_int("max_draws", max_draws)
    draws_per_chunk = positive_int("draws_per_chunk", draws_per_chunk)
    if "posterior" not in idata:
        raise ValueError("`idata` has no posterior group to draw from.")
    posterior = group_dataset(idata, "posterior")
    draws = np.arange(posterior.sizes["draw"])[:: thin or 1]
    if max_draws is not None and draws.size > max_draws:
        draws = draws[np.round(np.linspace(0, draws.size - 1, max_draws)).astype(int)]
    blocks = block_model(model)
    if blocks is not None:
        return _streamed(blocks, posterior.isel(draw=draws), var_names, predictions, random_seed)
    full = full_data_model(model)
    group = "predictions" if predictions else "posterior_predictive"
    chunks = [
        draws[start : start + draws_per_chunk] for start in range(0, draws.size, draws_per_chunk)
    ]
    seeds = np.random.SeedSequence(random_seed).generate_state(len(chunks))
    results = [
        pm.sample_posterior_predictive(
            posterior.isel(draw=chunk),
            model=full,
            var_names=var_names,
            predictions=predictions,
            random_seed=int(seed),
            progressbar=False,
        )
        for chunk, seed in zip(chunks, seeds, strict=True)
    ]
    combined = xr.concat([group_dataset(result, group) for result in results], dim="draw")
    return _replace_group(results[0], group, combined)


def _streamed(blocks, posterior, var_names, predictions, random_seed):
    """The posterior predictive of a streamed model, as Dask arrays over the store's rows."""
    model = blocks.model
    names = [rv.name for rv in model.observed_RVs] if var_names is None else list(var_names)
    observed = {rv.name: rv for rv in model.observed_RVs}
    unknown = [name for name in names if name not in observed]
    if unknown:
        raise ValueError(
            f"{unknown} are not observed variables of the model ({sorted(observed)}): on a "
            "model streamed from a store, the posterior predictive draws observed variables "
            "(their rows come from the store's blocks)."
        )
    free = list(model.free_RVs)
    missing = [rv.name for rv in free if rv.name not in posterior]
    if missing:
        raise ValueError(f"The posterior lacks the model's free variable(s) {missing}.")
    shapes = model.eval_rv_shapes()
    draws = [stacked_draws(posterior, rv.name, shapes[rv.name]) for rv in free]
    leading = (posterior.sizes["chain"], posterior.sizes["draw"])
    coords = {name: posterior[name].values for name in ("chain", "draw")}
    seeds = np.random.SeedSequence(random_seed).spawn(len(names))

    predictive, data = {}, {}
    for name, seed in zip(names, seeds, strict=True):
        rv = observed[name]
        placeholders = [free_rv.type(name=free_rv.name) for free_rv in free]
        graph, rngs = _forward_graph(model, rv, dict(zip(free, placeholders, strict=True)))
        graph, block_inputs = blocks.block_inputs(graph)
        function = BlockFunction(placeholders, block_inputs, graph, rngs)
        draws_cast = function.cast(draws)
        first = function([values[:1] for values in draws_cast], blocks.reader.read(0, 1), 0)[0]
        _check_rows(name, first)
        block_rows = rows_per_task(draws[0].shape[0], int(np.prod(first.shape[1:])))
        values = lazy_over_rows(
            function,
            blocks.reader,
            draws_cast,
            leading,
            first.shape[1:],
            block_rows=block_rows,
            seeds=block_seeds(seed, blocks.reader, block_rows),
        )
        dims = [f"{name}_dim_{axis}" for axis in range(first.ndim)]
        predictive[name] = xr.DataArray(values, dims=("chain", "draw", *dims), coords=coords)
        if not predictions:
            value, value_inputs = blocks.block_inputs(model.rvs_to_values[rv])
            rows = BlockFunction([], value_inputs, value)
            data[name] = xr.DataArray(
                lazy_over_rows(
                    rows, blocks.reader, [], (), first.shape[1:], block_rows=MAX_TASK_ROWS
                ),
                dims=dims,
            )
    groups = {"predictions" if predictions else "posterior_predictive": xr.Dataset(predictive)}
    if not predictions:
        groups["observed_data"] = xr.Dataset(data)
    if PYMC_MAJOR >= 6:
        return xr.DataTree.from_dict(groups)
    import arviz as az

    return az.InferenceData(**groups)


def _forward_graph(model, rv, placeholders):
    """The draw of ``rv`` given the free variables' ``placeholders`` (the other observed
    variables at their data, as PyMC's posterior predictive takes them), with the
    generators it draws with as inputs."""
    others = {other: model.rvs_to_values[other] for other in model.observed_RVs if other is not rv}
    graph = clone_replace(rv, {**placeholders, **others})
    shared_rngs = [
        var for var in graph_inputs([graph]) if isinstance(var.type, RandomGeneratorType)
    ]
    rngs = [var.type() for var in shared_rngs]
    return clone_replace(graph, dict(zip(shared_rngs, rngs, strict=True))), rngs


def _check_rows(name, first):
    if first.ndim == 0 or first.shape[0] != 1:
        raise ValueError(
            f"The observed variable {name!r} does not have the rows of the streamed data on "
            f"its first axis (drawn on one row it has shape {first.shape}), so its posterior "
            "predictive cannot be drawn block by block."
        )


def _replace_group(idata, name: str, dataset: xr.Dataset):
    if isinstance(idata, xr.DataTree):
        idata[name] = xr.DataTree(dataset)
        return idata
    groups = {group: idata[group] for group in idata.groups()}
    groups[name] = dataset
    return type(idata)(**groups)
