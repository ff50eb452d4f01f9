"""Plots of the SG-MCMC diagnostics (matplotlib, imported when a plot is drawn).

Trace, rank and autocorrelation plots are ArviZ's own (``az.plot_trace``); these show what
ArviZ does not know about: the kernel Stein discrepancy of the candidate step sizes of
:func:`pymc_sgmcmc.select_step_size`, and the minibatch noise ratio over a trace.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pymc_sgmcmc.diagnostics._trace import group_dataset

__all__ = ["plot_ksd_by_step_size", "plot_noise_ratio"]


def _axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    return ax


def plot_ksd_by_step_size(selection, *, ax=None):
    """KSD of each candidate step size, one line per round, the chosen one marked.

    Both axes are logarithmic. Diverged runs (KSD ``inf``) are drawn as crosses at the
    top of the axes; the chosen step size is a dashed vertical line.

    Parameters
    ----------
    selection : StepSizeSelection or pandas.DataFrame
        The result of :func:`pymc_sgmcmc.select_step_size`, or its ``table``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure's by default.

    Returns
    -------
    matplotlib.axes.Axes
    """
    if isinstance(selection, pd.DataFrame):
        table, chosen = selection, None
    else:
        table, chosen = selection.table, selection.step_size
    ax = _axes(ax)
    finite_ksd = table["ksd"][np.isfinite(table["ksd"])]
    top = float(finite_ksd.max()) * 2 if len(finite_ksd) else 1.0
    for round_number, rows in table.groupby("round", sort=True):
        rows = rows.sort_values("step_size")
        finite = np.isfinite(rows["ksd"])
        (line,) = ax.plot(
            rows["step_size"][finite],
            rows["ksd"][finite],
            marker="o",
            label=f"round {round_number} ({int(rows['draws'].iloc[0])} draws)",
        )
        if (~finite).any():
            ax.scatter(
                rows["step_size"][~finite],
                np.full(int((~finite).sum()), top),
                marker="x",
                color=line.get_color(),
                label="diverged",
            )
    if chosen is not None:
        ax.axvline(chosen, color="black", linestyle="--", label=f"chosen {chosen:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step size")
    ax.set_ylabel("KSD (standardised)")
    ax.legend()
    return ax


def plot_noise_ratio(idata, *, ax=None):
    """The ``noise_ratio`` sampler stat over the draws, one line per chain.

    A dotted horizontal line marks 1, where the minibatch noise equals the injected
    noise (above it SGLD runs at more than twice its temperature).

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.DataTree
        A trace of :class:`~pymc_sgmcmc.SGLD` or :class:`~pymc_sgmcmc.SGHMC`.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure's by default.

    Returns
    -------
    matplotlib.axes.Axes
    """
    stats = group_dataset(idata, "sample_stats")
    if "noise_ratio" not in stats:
        raise ValueError("The trace has no `noise_ratio` sampler stat.")
    ratio = stats["noise_ratio"].transpose("chain", "draw")
    ax = _axes(ax)
    draws = np.asarray(ratio["draw"])
    for chain, values in zip(np.asarray(ratio["chain"]), np.asarray(ratio), strict=True):
        ax.plot(draws, values, label=f"chain {chain}")
    ax.axhline(1.0, color="black", linestyle=":", linewidth=1)
    ax.set_xlabel("draw")
    ax.set_ylabel("noise ratio (minibatch / injected)")
    ax.legend()
    return ax
