"""What the step knows of the posterior before any draw: the MAP and the curvature there.

Found once per step, when it is built, on full-data passes
(:class:`~pymc_sgmcmc.gradients.full_data.FullDataLogPosterior`): the chains start near
the MAP, the first preconditioner is the inverse curvature there, and control variates
are centred there. It is chain-independent, so every chain (and every worker process,
which gets the step pickled) shares it.
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass

import numpy as np

from pymc_sgmcmc._warnings import warn
from pymc_sgmcmc.adaptation import curvature_at
from pymc_sgmcmc.gradients.full_data import FullDataLogPosterior, MaximumAPosteriori

__all__ = ["PosteriorGuess"]


@dataclass
class PosteriorGuess:
    """The full-data MAP and ``H = −∇² log π`` there.

    Attributes
    ----------
    full_data : FullDataLogPosterior
        The full-data passes it was found with (shared with the control variate).
    map_result : MaximumAPosteriori or None
        None where the search ended outside the support.
    curvature : numpy.ndarray or None
        ``H`` by central differences of full-data gradients at the MAP (``2d`` passes);
        None without a MAP, or where it is not finite.
    """

    full_data: FullDataLogPosterior
    map_result: MaximumAPosteriori | None
    curvature: np.ndarray | None

    @classmethod
    def find(cls, target, start: np.ndarray, compile_kwargs: dict) -> PosteriorGuess:
        full_data = FullDataLogPosterior(target, compile_kwargs=compile_kwargs)
        try:
            with warnings.catch_warnings():
                # Said below, in this context's words.
                warnings.simplefilter("ignore")
                map_result = full_data.find_map(start)
        except RuntimeError:
            map_result = None
        if map_result is None or not map_result.converged:
            reason = "ended outside the support" if map_result is None else map_result.message
            warn(
                f"The MAP search behind the adaptation did not converge ({reason}). Chains "
                "start from its last point, the first preconditioner is a guess and "
                'control_variate="auto" stays off; the tuning windows adapt from the draws. '
                "Give initvals, or a longer tune, if the chains do not settle."
            )
        curvature = None
        if map_result is not None:
            curvature = curvature_at(map_result.position, full_data.gradient)
            if not np.all(np.isfinite(curvature)):
                curvature = None
        return cls(full_data, map_result, curvature)

    @property
    def position(self) -> np.ndarray | None:
        """The MAP (raveled, unconstrained), or None."""
        return None if self.map_result is None else self.map_result.position

    @property
    def converged(self) -> bool:
        return self.map_result is not None and self.map_result.converged
