"""What the step knows of the posterior before any draw: the MAP and the curvature there.

Found once per step, when it is built, on full-data passes
(:class:`~pymc_sgmcmc.gradients.full_data.FullDataLogPosterior`): the chains start near
the MAP, the first preconditioner is the inverse curvature there, and control variates
are centred there. It is chain-independent, so every chain (and every worker process,
which gets the step pickled) shares it.
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass, replace

import numpy as np

from pymc_sgmcmc._warnings import warn
from pymc_sgmcmc.adaptation import Preconditioner, curvature_at
from pymc_sgmcmc.gradients.full_data import FullDataLogPosterior, MaximumAPosteriori

__all__ = ["PosteriorGuess"]

#: A converged MAP search counts as a mode where both its gradient, in the posterior sds
#: of the curvature there (``‖Lᵀ g‖``, a Newton step on the whitened scale), and its
#: slope along any direction of no positive curvature (nats per unit of the unconstrained
#: scale) are at most this. A search that runs down a funnel (a centred hierarchical
#: model, its group scale towards 0) stops on a slope that never levels off.
MODE_TOLERANCE = 1.0
#: Newton steps, with the curvature at the search's end, that a converged search which is
#: not yet within ``MODE_TOLERANCE`` of a mode may take to get there (see ``_polished``).
NEWTON_STEPS = 5


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
        ``H`` by central differences of full-data gradients at the MAP (``2d`` passes),
        or at the start where the MAP is no mode; None without a MAP, or where it is not
        finite.
    is_mode : bool
        False where the search converged on a slope that does not level off (see
        ``MODE_TOLERANCE``): chains then start around the model's initial point.
    """

    full_data: FullDataLogPosterior
    map_result: MaximumAPosteriori | None
    curvature: np.ndarray | None
    is_mode: bool = True

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
        if map_result is None:
            warn(
                "The MAP search behind the adaptation ended outside the support. Chains "
                "start around the model's initial point, the first preconditioner is a "
                'guess and control_variate="auto" stays off; the tuning windows adapt from '
                "the draws. Give initvals, or a longer tune, if the chains do not settle."
            )
            return cls(full_data, None, None)
        curvature = _finite_or_none(_curvature(full_data, map_result.position))
        if not map_result.converged:
            warn(
                f"The MAP search behind the adaptation did not converge "
                f"({map_result.message}). Chains start from its last point, "
                'control_variate="auto" stays off, and the tuning windows adapt from '
                "the draws. Give initvals, or a longer tune, if the chains do not settle."
            )
            return cls(full_data, map_result, curvature)
        distance, slope = _distance_to_mode(map_result.gradient, curvature)
        if max(distance, slope) > MODE_TOLERANCE and slope <= MODE_TOLERANCE:
            polished = _polished(full_data, map_result, curvature)
            polished_distance, _ = _distance_to_mode(polished.gradient, curvature)
            if polished_distance <= MODE_TOLERANCE:
                map_result, distance = polished, polished_distance
        if max(distance, slope) <= MODE_TOLERANCE:
            return cls(full_data, map_result, curvature)
        where = (
            f"{distance:.3g} posterior sds from a mode by the curvature there"
            if distance > MODE_TOLERANCE
            else f"a slope of {slope:.3g} along a direction of no curvature"
        )
        warn(
            "The MAP search behind the adaptation converged on a slope, not a mode "
            f"({where}). The posterior has no interior mode to start from, as in a centred "
            "hierarchical model whose group scale runs to 0 (a funnel). Chains start "
            "around the model's initial point, the first preconditioner is the curvature "
            'there, control_variate="auto" stays off, and the tuning windows adapt from the '
            "draws. A non-centred parametrisation (mu + sigma * z, z ~ Normal(0, 1)) "
            "removes the funnel."
        )
        start = np.asarray(start, dtype=float)
        curvature = _finite_or_none(_curvature(full_data, start))
        return cls(full_data, map_result, curvature, is_mode=False)

    @property
    def position(self) -> np.ndarray | None:
        """The MAP (raveled, unconstrained), or None; None also where it is no mode."""
        if self.map_result is None or not self.is_mode:
            return None
        return self.map_result.position

    @property
    def converged(self) -> bool:
        """Whether the search converged to a mode (what control variates are centred on)."""
        return self.map_result is not None and self.map_result.converged and self.is_mode


def _polished(full_data, map_result: MaximumAPosteriori, curvature) -> MaximumAPosteriori:
    """Up to ``NEWTON_STEPS`` Newton steps ``θ + H⁻¹ ∇ log π(θ)`` from the search's end,
    each halved until the full-data ``log π`` does not fall.

    L-BFGS stops on a relative decrease of ``−log π`` of about 2e-9: with a large N the
    log density is large and the posterior may be badly conditioned, and the search then
    stops more than a posterior sd short of the mode along its narrowest directions
    (1.1 sds on a regression with condition number 2.6e5). Near a mode the posterior is
    close to Gaussian, so a Newton step with the curvature already found gets there in one
    or two full-data passes. Down a funnel no step levels off, and the caller keeps the
    search's own result.
    """
    covariance = Preconditioner.from_curvature(curvature, map_result.position.size, True).covariance
    position, logp, gradient = map_result.position, map_result.logp, map_result.gradient
    evaluations = 0
    for _ in range(NEWTON_STEPS):
        newton = covariance @ gradient
        # ‖Lᵀ g‖ of _distance_to_mode, with L Lᵀ = Σ: √(gᵀ Σ g).
        if np.sqrt(max(float(gradient @ newton), 0.0)) <= 0.01 * MODE_TOLERANCE:
            break
        for halving in range(6):
            candidate = position + 0.5**halving * newton
            candidate_logp, candidate_gradient = full_data.logp_and_gradient(candidate)
            evaluations += 1
            if np.isfinite(candidate_logp) and candidate_logp >= logp:
                break
        else:
            break
        position, logp, gradient = candidate, candidate_logp, candidate_gradient
    return replace(
        map_result,
        position=np.asarray(position, dtype=float),
        logp=float(logp),
        gradient=np.asarray(gradient, dtype=float),
        evaluations=map_result.evaluations + evaluations,
    )


def _finite_or_none(curvature: np.ndarray) -> np.ndarray | None:
    return curvature if np.all(np.isfinite(curvature)) else None


def _distance_to_mode(gradient: np.ndarray, curvature: np.ndarray | None) -> tuple[float, float]:
    """``‖Lᵀ g‖`` with ``L Lᵀ = H⁻¹``, and the largest slope of ``g`` along a coordinate
    or eigenvector (of ``H`` scaled to unit diagonal) whose curvature is not positive."""
    if curvature is None:
        return 0.0, 0.0
    gradient = np.asarray(gradient, dtype=float)
    preconditioner = Preconditioner.from_curvature(curvature, gradient.size, dense=True)
    distance = float(np.linalg.norm(preconditioner.whiten(gradient)))
    diagonal = np.diag(curvature)
    slopes = list(np.abs(gradient[diagonal <= 0]))
    positive = diagonal > 0
    if positive.any():
        scale = 1.0 / np.sqrt(diagonal[positive])
        scaled = scale[:, None] * curvature[np.ix_(positive, positive)] * scale[None, :]
        values, vectors = np.linalg.eigh(0.5 * (scaled + scaled.T))
        flat = values <= 1e-10 * max(values.max(), 0.0)
        for vector in vectors[:, flat].T:
            # Per unit of distance in θ along the direction D v.
            step = scale * vector
            slopes.append(abs(float(step @ gradient[positive])) / float(np.linalg.norm(step)))
    return distance, float(max(slopes, default=0.0))


def _curvature(full_data, position) -> np.ndarray:
    # From a store, the 2d gradients in one pass over the data, not 2d passes; in memory,
    # one position at a time, which needs no vectorised function compiled.
    batched = full_data.gradients if full_data.streamed else None
    return curvature_at(position, full_data.gradient, gradients=batched)
