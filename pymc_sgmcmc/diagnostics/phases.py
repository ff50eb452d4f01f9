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
    sampling-phase draws (keeping their draw labels); warmup groups are kept whole.
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
    # Warmup groups (discard_tuned_samples=False) have draws of their own: kept whole.
    groups = [name for name in _group_names(idata) if not name.startswith("warmup")]
    if hasattr(idata, "to_dataset"):
        # A DataTree: replace each node by its selection; nodes without draws stay.
        kept = idata.copy()
        for name in groups:
            dataset = group_dataset(idata, name)
            if "draw" in dataset.dims:
                kept[name] = dataset.isel(draw=draws)
        return kept
    return idata.isel(draw=draws, groups=groups)


def _group_names(idata) -> list[str]:
    if hasattr(idata, "groups") and callable(idata.groups):
        return list(idata.groups())
    return list(idata.children)
