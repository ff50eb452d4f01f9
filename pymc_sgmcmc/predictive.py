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

from pymc_sgmcmc._validation import optional_positive_int, positive_int
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
        The memory it needs is about ``chains × draws × N × 8`` bytes per variable.
    """
    model = modelcontext(model)
    thin = optional_positive_int("thin", thin)
    max_draws = optional_positive_int("max_draws", max_draws)
    draws_per_chunk = positive_int("draws_per_chunk", draws_per_chunk)
    if "posterior" not in idata:
        raise ValueError("`idata` has no posterior group to draw from.")
    posterior = _dataset(idata["posterior"])
    draws = np.arange(posterior.sizes["draw"])[:: thin or 1]
    if max_draws is not None and draws.size > max_draws:
        draws = draws[np.round(np.linspace(0, draws.size - 1, max_draws)).astype(int)]
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
    combined = xr.concat([_dataset(result[group]) for result in results], dim="draw")
    return _replace_group(results[0], group, combined)


def _dataset(group) -> xr.Dataset:
    # A group is a Dataset in an InferenceData (ArviZ 0.x), a DataTree node in a DataTree.
    return group.to_dataset() if hasattr(group, "to_dataset") else group


def _replace_group(idata, name: str, dataset: xr.Dataset):
    if isinstance(idata, xr.DataTree):
        idata[name] = xr.DataTree(dataset)
        return idata
    groups = {group: idata[group] for group in idata.groups()}
    groups[name] = dataset
    return type(idata)(**groups)
