"""Reading groups of an ArviZ object on both ArviZ lines (InferenceData and DataTree)."""

from __future__ import annotations

import xarray as xr

__all__ = ["group_dataset", "has_group"]


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
