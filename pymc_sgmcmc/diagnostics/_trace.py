"""Reading groups of an ArviZ object on both ArviZ lines (InferenceData and DataTree)."""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["group_dataset", "has_group", "stacked_draws"]


def has_group(idata, group: str) -> bool:
    try:
        idata[group]
    except KeyError:
        return False
    return True


def group_dataset(idata, group: str) -> xr.Dataset:
    """The group as an ``xarray.Dataset``: InferenceData holds Datasets, DataTree nodes."""
    if not has_group(idata, group):
        raise ValueError(f"`idata` has no group {group!r}.")
    node = idata[group]
    return node if isinstance(node, xr.Dataset) else node.to_dataset()


def stacked_draws(posterior: xr.Dataset, name: str, shape, draw_index=None) -> np.ndarray:
    """Draws of one variable as ``(chains × draws, *shape)``, checked against the model's
    shape and for finite values."""
    values = posterior[name].transpose("chain", "draw", ...).values
    if draw_index is not None:
        values = values[:, draw_index]
    expected = tuple(int(size) for size in shape)
    if values.shape[2:] != expected:
        raise ValueError(
            f"Posterior draws of {name!r} have shape {values.shape[2:]} per draw; the "
            f"model's variable has shape {expected}."
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"Posterior draws of {name!r} contain non-finite values.")
    return values.reshape(values.shape[0] * values.shape[1], *expected)
