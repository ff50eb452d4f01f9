"""The step's tuning-time adaptation: preconditioner windows and the step size.

A part of the step, like the noise and divergence monitors, with its own per-chain state.
The maths is in :mod:`pymc_sgmcmc.adaptation`; this part decides when it applies: the
first step size where a chain starts; at the end of the initial buffer and of each slow
window a new step size, from the minibatch noise at positions spread over the segment
just ended, and (in the windows) a new preconditioner; a smaller step after a diverging
tuning draw; nothing once tuning ends.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pymc.step_methods.state import DataClassState, WithSamplingState, dataclass_state

from pymc_sgmcmc.adaptation import Preconditioner, tuning_windows

__all__ = ["TuningAdapter"]

#: Gradient pairs behind the noise estimate where a chain starts.
START_NOISE_PAIRS = 10

#: Positions of a segment the noise is measured at, spread over it, with this many
#: gradient pairs each: the noise varies over the posterior (with control variates it
#: grows with the distance from their centre), so the step is held for its mean over the
#: draws of the segment rather than for its value at the last one.
NOISE_POSITIONS, PAIRS_PER_POSITION = 25, 2

#: What each diverging tuning draw multiplies the step size by.
DIVERGENCE_SHRINK = 0.5

#: Integrated autocorrelation time, in the dynamics' time, of a unit-variance Gaussian
#: under Langevin dynamics (an Ornstein-Uhlenbeck process, correlation ``e^{-t}``).
RELAXATION_TIME = 2.0

#: Tuning draws assumed where PyMC does not tell the chain its length.
DEFAULT_TUNE = 1000


@dataclass_state
class TuningAdapterState(DataClassState):
    covariance: np.ndarray
    step_size: float
    stability: float
    segments: list
    noise_positions: list
    window_count: int
    window_time: float
    window_mean: np.ndarray
    window_moment: np.ndarray


class TuningAdapter(WithSamplingState):
    """Adapts a preconditioner and a step size while a chain tunes.

    Tuning is cut as Stan's: an initial buffer, slow windows, a final buffer
    (:func:`~pymc_sgmcmc.adaptation.tuning_windows`). The step size is set where the
    chain starts and at the end of the initial buffer and of every window; the
    preconditioner at the end of every window, from that window's draws.

    Parameters
    ----------
    initial : Preconditioner
        Every chain's first preconditioner (from the curvature at the MAP, or given).
    adapt_preconditioner : bool
        Whether the windows re-estimate it (False for a given ``mass``).
    adapt_step_size : bool
        Whether the step size is set here (False for a given ``step_size``).
    curvature : numpy.ndarray or None
        ``H`` at the MAP, for the whitened curvature of each new preconditioner.
    step_size_rule : callable
        ``rule(curvature, gradient_variance) -> step size`` on the whitened scale.
    time_per_step : callable
        ``time_per_step(step_size)``: the dynamics' time one SG step advances.
    whitened_variance : callable
        ``whitened_variance(position, preconditioner, pairs)``: the minibatch gradient
        variance per whitened coordinate there, from ``pairs`` gradient pairs.
    """

    _state_class = TuningAdapterState

    def __init__(
        self,
        initial: Preconditioner,
        *,
        adapt_preconditioner: bool,
        adapt_step_size: bool,
        curvature: np.ndarray | None,
        step_size_rule: Callable[[float, np.ndarray], float],
        time_per_step: Callable[[float], float],
        whitened_variance: Callable[[np.ndarray, Preconditioner, int], np.ndarray],
    ):
        self.initial = initial
        self.adapt_preconditioner = adapt_preconditioner
        self.adapt_step_size = adapt_step_size
        self.curvature = curvature
        self._rule = step_size_rule
        self._time_per_step = time_per_step
        self._whitened_variance = whitened_variance
        self.start_chain(None)

    # ---- per-chain state ---------------------------------------------------------------
    def start_chain(self, tune: int | None) -> None:
        self.covariance = self.initial.covariance.copy()
        self.step_size = np.nan
        self.stability = 1.0
        self.segments = []
        if self.adapt_preconditioner or self.adapt_step_size:
            windows = tuning_windows(DEFAULT_TUNE if tune is None else tune)
            # The initial buffer, then the slow windows; the final buffer changes nothing.
            if windows:
                self.segments = [(0, windows[0][0], False)] + [
                    (start, end, True) for start, end in windows
                ]
        self._new_segment()

    def _new_segment(self) -> None:
        """Forget the segment's noise positions and the window's running mean and
        (co)variance (Welford)."""
        size = self.covariance.shape[0]
        self.noise_positions = []
        self.window_count = 0
        self.window_time = 0.0
        self.window_mean = np.zeros(size)
        self.window_moment = np.zeros(self.covariance.shape if self.initial.dense else size)

    @property
    def preconditioner(self) -> Preconditioner:
        return Preconditioner(self.covariance)

    # ---- events ------------------------------------------------------------------------
    def begin(self, position: np.ndarray) -> None:
        """The chain's start: its first step size, from the noise where it starts."""
        if self.adapt_step_size:
            self._set_step_size([np.asarray(position)], START_NOISE_PAIRS)

    def after_tuning_draw(
        self, draw: int, position: np.ndarray, diverged: bool, steps: int
    ) -> bool:
        """Account for tuning draw ``draw`` (1-based) of ``steps`` SG steps; True if the
        preconditioner or the step size changed (the kernel's inputs must be set again)."""
        if diverged:
            if not self.adapt_step_size:
                return False
            self.stability *= DIVERGENCE_SHRINK
            self.step_size *= DIVERGENCE_SHRINK
            return True
        segment = next((s for s in self.segments if s[0] < draw <= s[1]), None)
        if segment is None:
            return False
        start, end, window = segment
        position = np.asarray(position, dtype=float)
        if window and self.adapt_preconditioner:
            self._add_to_window(position, steps)
        if (draw - start) % max(1, (end - start) // NOISE_POSITIONS) == 0:
            self.noise_positions.append(position)
        if draw != end:
            return False
        if window and self.adapt_preconditioner:
            estimate = self.window_moment / max(self.window_count - 1, 1)
            self.covariance = self.preconditioner.updated(
                estimate, self._effective_draws()
            ).covariance
        if self.adapt_step_size:
            self._set_step_size(self.noise_positions or [position], PAIRS_PER_POSITION)
        self._new_segment()
        return True

    def _add_to_window(self, position: np.ndarray, steps: int) -> None:
        self.window_count += 1
        self.window_time += steps * self._time_per_step(self.step_size)
        delta = position - self.window_mean
        self.window_mean += delta / self.window_count
        after = position - self.window_mean
        self.window_moment += np.outer(delta, after) if self.initial.dense else delta * after

    def _effective_draws(self) -> float:
        """About how many independent draws the window holds: a unit-variance posterior's
        draws decorrelate over about ``RELAXATION_TIME`` of the dynamics' time, so a chain
        that moved little (small steps) tells little about the covariance and leaves the
        previous estimate nearly as it was."""
        return min(float(self.window_count), self.window_time / RELAXATION_TIME)

    def _set_step_size(self, positions: list, pairs: int) -> None:
        preconditioner = self.preconditioner
        variance = np.mean(
            [self._whitened_variance(p, preconditioner, pairs) for p in positions], axis=0
        )
        curvature = preconditioner.whitened_curvature(self.curvature)
        self.step_size = float(self._rule(curvature, variance)) * self.stability
