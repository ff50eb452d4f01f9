"""Selecting the draws of the sampling phases of a cyclical schedule."""

from __future__ import annotations

import numpy as np

from pymc_sgmcmc.diagnostics._trace import group_dataset

__all__ = ["keep_sampling_phase"]


def keep_sampling_phase(idata):
    """Keep only the draws made in the sampling phase of each step-size cycle.

    With :class:`pymc_sgmcmc.schedules.cyclical`, the first part of each cycle takes
    large steps to explore and the rest takes small steps to sample (Zhang et al. 2020);
    the step method records which in the ``sampling_phase`` sampler stat. The schedule
    depends only on the SG step count, so every chain is in the same phase at the same
    draw and the selection keeps the ``chain × draw`` layout.

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.DataTree
        From ``pm.sample`` with a cyclical schedule.

    Returns
    -------
    The same kind of object, every group with a ``draw`` dimension restricted to the
    sampling-phase draws (renumbered from 0 by position, keeping their draw labels).
    """
    stats = group_dataset(idata, "sample_stats")
    if "sampling_phase" not in stats:
        raise ValueError(
            "The trace has no `sampling_phase` sampler stat: it is recorded when the step "
            "size is a pymc_sgmcmc.schedules.cyclical schedule."
        )
    phase = np.asarray(stats["sampling_phase"], dtype=bool)
    if not np.all(phase == phase[:1]):
        raise ValueError("Chains disagree on their sampling phases; they must share a schedule.")
    draws = np.flatnonzero(phase[0])
    if draws.size == 0:
        raise ValueError(
            "No draw lies in a sampling phase: draw more, or lower the schedule's "
            "exploration_fraction."
        )
    try:
        # DataTree applies it node by node; nodes without draws are left as they are.
        return idata.isel(draw=draws, missing_dims="ignore")
    except TypeError:
        # InferenceData skips groups without a draw dimension on its own.
        return idata.isel(draw=draws)
