"""Per-chain summaries of the minibatch gradient noise recorded in a trace.

SGLD and SGHMC record a ``noise_ratio`` sampler stat per draw: the variance the minibatch
gradient noise adds to a step over the variance the sampler injects, ``η V / (2T)`` for
SGLD (``V`` the minibatch gradient variance, averaged over coordinates) and
``h V / (2 (TΓ − B̂))`` for SGHMC. Minibatch noise raises SGLD's effective temperature to
``T (1 + noise_ratio)``, and SGHMC's likewise unless ``B̂`` absorbs it (Chen, Fox &
Guestrin 2014): a chain whose ratio is large behaves like SGD and its draws are too
wide, which neither R-hat nor ESS can see. Here the per-draw values become one number
per chain, which :func:`add_noise_summary_to_idata` stores with the trace.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pymc_sgmcmc.diagnostics._trace import group_dataset, has_group

__all__ = ["NoiseSummary", "add_noise_summary_to_idata", "noise_summary"]

_ATTR_PREFIX = "noise_ratio"


@dataclass(frozen=True)
class NoiseSummary:
    """The ``noise_ratio`` sampler stat of a trace, averaged per chain and pooled.

    Attributes
    ----------
    pooled : float
        Mean over every chain's draws (nan when no draw has a finite value, e.g. with
        ``noise_estimate_interval=None`` or at temperature 0).
    per_chain : ndarray, shape (n_chains,)
        Mean over each chain's draws.
    maximum_per_chain : ndarray, shape (n_chains,)
        Largest value of each chain (one gradient pair is a noisy estimate: expect
        single values several times the mean).
    draws_per_chain : int
        Draws per chain in the trace's ``sample_stats`` (tuning draws only if the trace
        kept them).
    """

    pooled: float
    per_chain: np.ndarray
    maximum_per_chain: np.ndarray
    draws_per_chain: int

    def to_attrs(self) -> dict:
        """Plain ``int``/``float``/list values, storable as netCDF or zarr attributes."""
        return {
            f"{_ATTR_PREFIX}_mean": float(self.pooled),
            f"{_ATTR_PREFIX}_per_chain": [float(v) for v in self.per_chain],
            f"{_ATTR_PREFIX}_maximum_per_chain": [float(v) for v in self.maximum_per_chain],
            f"{_ATTR_PREFIX}_draws_per_chain": int(self.draws_per_chain),
        }


def noise_summary(idata) -> NoiseSummary:
    """Summarise the ``noise_ratio`` sampler stat of an SGLD or SGHMC trace.

    Non-finite values (nan where the ratio is undefined: nothing injected, or the
    estimate turned off) are left out of the means.

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.DataTree
        A trace from ``pm.sample`` with :class:`~pymc_sgmcmc.SGLD` or
        :class:`~pymc_sgmcmc.SGHMC`.

    Returns
    -------
    NoiseSummary
        Per-chain and pooled means; the ratio of mean minibatch noise to injected noise.
        Above 1 the chain runs at more than twice its temperature (SGLD, or SGHMC with
        ``gradient_noise=0``).

    Raises
    ------
    ValueError
        If the trace has no ``noise_ratio`` stat.

    Examples
    --------
    >>> summary = noise_summary(idata)  # doctest: +SKIP
    >>> summary.per_chain  # doctest: +SKIP
    >>> add_noise_summary_to_idata(idata, summary)  # doctest: +SKIP
    """
    stats = group_dataset(idata, "sample_stats")
    if "noise_ratio" not in stats:
        raise ValueError(
            "The trace has no `noise_ratio` sampler stat; it is recorded by "
            "pymc_sgmcmc.SGLD and SGHMC."
        )
    values = np.asarray(stats["noise_ratio"].transpose("chain", "draw"), dtype=float)
    finite = np.isfinite(values)
    # Written out rather than np.nanmean, which warns on all-nan chains.
    sums = np.where(finite, values, 0.0)
    counts = finite.sum(axis=1)
    per_chain = _mean_or_nan(sums.sum(axis=1), counts)
    maximum = np.where(finite, values, -np.inf).max(axis=1, initial=-np.inf)
    maximum[counts == 0] = np.nan
    return NoiseSummary(
        pooled=float(_mean_or_nan(sums.sum(), counts.sum())),
        per_chain=per_chain,
        maximum_per_chain=maximum,
        draws_per_chain=int(values.shape[1]),
    )


def _mean_or_nan(total, count):
    total, count = np.asarray(total, dtype=float), np.asarray(count)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def add_noise_summary_to_idata(idata, summary: NoiseSummary | None = None, *, group=None):
    """Store a :class:`NoiseSummary` in the attributes of a group of an ArviZ object.

    The values (``noise_ratio_mean``, ``noise_ratio_per_chain``,
    ``noise_ratio_maximum_per_chain``, ``noise_ratio_draws_per_chain``) are plain
    numbers and lists, so they are saved with the trace by ``to_netcdf`` / ``to_zarr``,
    next to those of :func:`~pymc_sgmcmc.diagnostics.add_ksd_to_idata`.

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.DataTree
        Modified in place.
    summary : NoiseSummary, optional
        From :func:`noise_summary`; computed from ``idata`` if omitted.
    group : str, optional
        Group whose ``attrs`` receive the values; ``"sample_stats"`` by default.

    Returns
    -------
    The same ``idata``.
    """
    if summary is None:
        summary = noise_summary(idata)
    if not isinstance(summary, NoiseSummary):
        raise TypeError(f"`summary` must be a NoiseSummary, got {type(summary).__name__}.")
    group = "sample_stats" if group is None else group
    if not has_group(idata, group):
        raise ValueError(f"`idata` has no group {group!r}.")
    idata[group].attrs.update(summary.to_attrs())
    return idata
