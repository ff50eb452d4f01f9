"""Posterior estimates from chains run with decreasing step sizes.

With a decreasing schedule (:func:`pymc_sgmcmc.schedules.polynomial`) the early, large
steps cover more of the Langevin diffusion's time than the late, small ones; Welling & Teh
(2011) weight each iterate by its step size, so that the estimate is a time
average of the diffusion:

.. math::

    \\hat{E}[f(θ)] = \\frac{\\sum_t η_t f(θ_t)}{\\sum_t η_t}.

With ``Σ η_t = ∞`` and ``Σ η_t² < ∞`` it converges to the posterior expectation (Teh,
Thiery & Vollmer 2016). With a constant step size it is the plain mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from pymc_sgmcmc.diagnostics._trace import group_dataset

__all__ = ["weighted_posterior_mean"]


def weighted_posterior_mean(
    idata, var_names: Sequence[str] | None = None, *, per_chain: bool = False
) -> xr.Dataset:
    """Posterior mean with each draw weighted by its step size (Welling & Teh 2011).

    .. math::

        \\bar θ = \\frac{\\sum_t η_t θ_t}{\\sum_t η_t},

    over the draws of each chain (``per_chain=True``) or of all chains together, with
    ``η_t`` the ``step_size`` sampler stat of draw ``t``: the step size of the draw's
    last SG step. With ``steps_per_draw = K`` a draw stands for ``K`` steps; weighting it
    by its last step size is proportional to their total when the schedule changes
    little within a draw, as any schedule of many draws does.

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.DataTree
        A trace with ``posterior`` and a ``step_size`` stat in ``sample_stats``, e.g. from
        :class:`~pymc_sgmcmc.SGLD` or :class:`~pymc_sgmcmc.SGHMC`.
    var_names : sequence of str, optional
        Variables of the posterior to average; all by default.
    per_chain : bool, default False
        Return one mean per chain (a ``chain`` dimension) instead of the pooled mean.

    Returns
    -------
    xarray.Dataset
        The weighted means, on the scale of the posterior group (the constrained
        space): ``draw`` (and, unless ``per_chain``, ``chain``) reduced.

    References
    ----------
    M. Welling and Y. W. Teh. Bayesian learning via stochastic gradient Langevin
    dynamics. ICML 2011.
    """
    posterior = group_dataset(idata, "posterior")
    stats = group_dataset(idata, "sample_stats")
    if "step_size" not in stats:
        raise ValueError(
            "The trace has no `step_size` sampler stat to weight the draws with; it is "
            "recorded by pymc_sgmcmc.SGLD and SGHMC."
        )
    if var_names is not None:
        names = [var_names] if isinstance(var_names, str) else list(var_names)
        missing = [name for name in names if name not in posterior]
        if missing:
            raise ValueError(f"{missing} are not variables of the posterior.")
        posterior = posterior[names]
    weights = stats["step_size"].astype(float)
    if weights.sizes != {name: posterior.sizes[name] for name in ("chain", "draw")}:
        raise ValueError(
            f"The step_size stat has sizes {dict(weights.sizes)}, the posterior "
            f"{dict(posterior.sizes)}: they must share chains and draws."
        )
    values = np.asarray(weights)
    if not (np.all(np.isfinite(values)) and np.all(values > 0)):
        raise ValueError("The step_size stat must be positive and finite at every draw.")
    # Coordinates of the posterior, so that xarray aligns the two groups draw by draw.
    weights = weights.assign_coords(chain=posterior["chain"], draw=posterior["draw"])
    dims = ("draw",) if per_chain else ("chain", "draw")
    return (posterior * weights).sum(dims) / weights.sum(dims)
