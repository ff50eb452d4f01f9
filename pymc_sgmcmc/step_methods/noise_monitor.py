"""The minibatch gradient-noise monitor of a stochastic-gradient step.

For two independent minibatch gradients ``g₁, g₂`` at the same ``θ``,
``E[½ (g₁ − g₂)²] = V(θ)`` per coordinate: the monitor takes such pairs at the chain's
position, keeps the latest estimate (behind the ``noise_ratio`` stat) and the running mean
of the current phase (late tuning, then sampling), and warns once per chain when the
sampling phase's mean heats the chain too much. How the noise compares with what a sampler
injects is the sampler's business: it is given as a function of ``(h, V)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from pymc.step_methods.state import DataClassState, WithSamplingState, dataclass_state
from pymc.util import RandomGeneratorState

from pymc_sgmcmc._warnings import MinibatchNoiseWarning, warn

__all__ = [
    "COORDINATE_WARNING_THRESHOLD",
    "END_OF_TUNING_NOISE_PAIRS",
    "NOISE_RATIO_WARNING_THRESHOLD",
    "GradientNoiseMonitor",
    "NoiseMeasures",
]

#: Gradient pairs averaged at the end of tuning: the first estimate of the sampling phase
#: (and the fewest behind SGHMC's frozen ``gradient_noise="estimate"``). With ``d``
#: coordinates the estimate of the mean ``V`` has relative standard error about
#: ``sqrt(2 / (20 d))``, at most 32%.
END_OF_TUNING_NOISE_PAIRS = 20

#: A chain whose minibatch noise, measured after tuning, raises the effective temperature
#: by more than this fraction of ``T`` gets a :class:`MinibatchNoiseWarning`: at 1 the
#: minibatch noise equals the injected noise and the chain runs at about twice its
#: temperature.
NOISE_RATIO_WARNING_THRESHOLD = 1.0

#: The warning is also raised when one coordinate alone runs this much hotter than ``T``
#: (its sd twice the target's), however cool the others keep the mean. Above the mean's
#: threshold, so that estimates of ``V`` from 20 pairs per coordinate (relative error
#: about 32%) do not flag one of many coordinates by chance.
COORDINATE_WARNING_THRESHOLD = 3.0


class NoiseMeasures(NamedTuple):
    """How a sampler's injected noise compares with a minibatch noise ``V``.

    Attributes
    ----------
    ratio : float
        Variance the minibatch noise adds per step over the variance injected per step,
        summed over coordinates: the ``noise_ratio`` stat.
    excess_temperature : float
        ``(T_eff − T) / T`` over all coordinates, what the warning is about. Where nothing
        corrects for minibatch noise it is the ratio itself.
    coordinate_excess_temperature : numpy.ndarray
        ``(T_eff − T) / T`` per coordinate.
    """

    ratio: float
    excess_temperature: float
    coordinate_excess_temperature: np.ndarray


@dataclass_state
class GradientNoiseState(DataClassState):
    """Its own generator, so that measuring the noise never changes the chain's draws; the
    latest estimate (per coordinate) and the sum of the estimates of the current phase."""

    rng: RandomGeneratorState
    latest_variance: np.ndarray
    variance_sum: np.ndarray
    pair_count: int
    warned: bool


class GradientNoiseMonitor(WithSamplingState):
    """Estimates of the minibatch gradient variance ``V`` along a chain.

    Parameters
    ----------
    estimator : GradientEstimator
        The step's gradient estimator: pairs of its estimates are compared.
    minibatch_part : callable
        ``minibatch_part(position, indices)``: the part of the estimate at ``position`` that
        varies with the minibatch (:meth:`GradientEstimator.minibatch_part`), on one
        index vector per stream; the step's compiled start function gives it, so that
        the monitor compiles nothing of its own.
    interval : int or None
        Draws between pairs; None takes none but where asked (:meth:`add_pairs`).
    measures : callable
        ``measures(step_size, V) -> NoiseMeasures`` for the sampler, with ``V`` one value
        per coordinate.
    describe_coordinate : callable
        ``describe_coordinate(i)``: the raveled coordinate ``i`` by name, for the warning.
    size, dtype
        The raveled parameters' number and dtype.
    compile_kwargs : dict
    whiten : callable, optional
        ``whiten(g₁ − g₂)``: the gradient difference on the scale the sampler moves on
        (``Lᵀ (g₁ − g₂)`` with a preconditioner ``Σ = L Lᵀ``); ``V`` is then that scale's.
    """

    _state_class = GradientNoiseState

    def __init__(
        self,
        estimator,
        *,
        interval: int | None,
        measures: Callable[[float, np.ndarray], NoiseMeasures],
        describe_coordinate: Callable[[int], str],
        size: int,
        dtype: str,
        minibatch_part: Callable[[np.ndarray, list], np.ndarray],
        whiten: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        self.estimator = estimator
        self._whiten = whiten
        self.interval = interval
        self._measures = measures
        self._describe_coordinate = describe_coordinate
        self._size = size
        self._dtype = dtype
        self._minibatch_part = minibatch_part
        self._ratio_cache = None

    # ---- per-chain state ---------------------------------------------------------------
    def start_chain(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.latest_variance = np.full(self._size, np.nan)
        self.warned = False
        self.restart()

    def restart(self) -> None:
        """Start a new phase's running mean (the latest estimate is kept)."""
        self.variance_sum = np.zeros(self._size)
        self.pair_count = 0

    def forget_measures(self) -> None:
        """The sampler's parameters changed: recompute the ratio at the next draw."""
        self._ratio_cache = None

    @property
    def mean_variance(self) -> np.ndarray:
        """The current phase's mean estimate of ``V`` (nan before any pair)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.variance_sum / self.pair_count

    def pair_due(self, draw: int) -> bool:
        """Whether a pair is due after ``draw`` draws."""
        return self.interval is not None and (draw - 1) % self.interval == 0

    # ---- estimating ----------------------------------------------------------------------
    def add_pairs(self, position: np.ndarray, pairs: int) -> None:
        """Estimate ``V`` at ``position`` from ``pairs`` pairs of independent minibatches.

        The estimate becomes the latest one (recorded in ``noise_ratio`` until the next)
        and joins the running sum of the phase.
        """
        variance = self.sample_variance(position, pairs, whiten=self._whiten)
        if not np.all(np.isfinite(variance)):
            # A pair at the edge of the support says nothing about the noise: skip it.
            return
        self.latest_variance = variance
        self.variance_sum += pairs * variance
        self.pair_count += pairs

    def sample_variance(self, position: np.ndarray, pairs: int, *, whiten=None) -> np.ndarray:
        """The mean of ``½ (w(g₁ − g₂))²`` over ``pairs`` pairs at ``position``, ``w`` being
        ``whiten`` (the identity if None); nothing is recorded."""
        target = self.estimator.target
        if not target.streams:
            # Exact gradients: no minibatch noise at all, nothing to compile or draw.
            return np.zeros(self._size)
        indices = target.draw_indices(self.rng, 2 * pairs)
        position = np.asarray(position, dtype=self._dtype)
        variance = np.zeros(self._size)
        for pair in range(pairs):
            first = self._minibatch_part(position, [index[2 * pair] for index in indices])
            second = self._minibatch_part(position, [index[2 * pair + 1] for index in indices])
            difference = first - second
            if whiten is not None:
                difference = whiten(np.asarray(difference, dtype=float))
            variance += 0.5 * difference**2
        return variance / pairs

    # ---- reporting -----------------------------------------------------------------------
    def measures(self, step_size: float, gradient_variance) -> NoiseMeasures:
        """The sampler's measures at ``V``; inf or nan where ``T = 0``."""
        # NumPy scalars divide by zero to inf/nan, where Python floats raise.
        step_size = np.float64(step_size)
        gradient_variance = np.broadcast_to(np.asarray(gradient_variance, float), (self._size,))
        with np.errstate(divide="ignore", invalid="ignore"):
            measured = self._measures(step_size, gradient_variance)
            return NoiseMeasures(
                float(measured.ratio),
                float(measured.excess_temperature),
                np.broadcast_to(
                    np.asarray(measured.coordinate_excess_temperature, float), (self._size,)
                ),
            )

    def recorded_ratio(self, step_size: float, state_key=None) -> float:
        """The ``noise_ratio`` stat: nan when not estimated or when nothing is injected.

        ``state_key`` stands for any other state the ratio depends on (pSGLD's running
        average).
        """
        if self.interval is None:
            return np.nan
        if not self.estimator.target.streams:
            return 0.0
        # It changes only with a new estimate or step size: most draws reuse it, keeping
        # the per-draw cost of the stat to a comparison.
        variance = self.latest_variance
        key = (step_size, variance.tobytes(), state_key)
        if self._ratio_cache is None or self._ratio_cache[0] != key:
            ratio = self.measures(step_size, variance).ratio
            # ArviZ summaries and plots handle nan, not inf.
            self._ratio_cache = (key, ratio if np.isfinite(ratio) else np.nan)
        return self._ratio_cache[1]

    def warn_if_noisy(self, step_size: float, *, sampler: str, chain: int | None, advice: str):
        """Warn once per chain when the sampling phase's mean ``V`` heats the chain, or one
        of its coordinates, too much.

        Uses the running mean of the phase, not the latest (noisy) pair, and waits for
        ``END_OF_TUNING_NOISE_PAIRS`` pairs, so that a chain near the threshold is not
        flagged by chance.
        """
        count = self.pair_count
        if self.warned or count < END_OF_TUNING_NOISE_PAIRS:
            return
        ratio, excess, per_coordinate = self.measures(step_size, self.variance_sum / count)
        # Infinite at T = 0: optimisation injects no noise on purpose, nothing to warn about.
        finite = np.where(np.isfinite(per_coordinate), per_coordinate, -np.inf)
        worst = int(np.argmax(finite))
        worst_excess = float(finite[worst])
        mean_too_hot = np.isfinite(excess) and excess > NOISE_RATIO_WARNING_THRESHOLD
        if not (mean_too_hot or worst_excess > COORDINATE_WARNING_THRESHOLD):
            return
        self.warned = True
        chain_name = "" if chain is None else f" chain {chain}"
        warn(
            f"{sampler}{chain_name}: minibatch gradient noise dominates the injected "
            f"noise (noise_ratio = {ratio:.3g}, from {count} gradient pairs after tuning at "
            f"step_size={step_size:.4g}; it is the variance the minibatch noise adds per step "
            "over the variance the sampler injects). It raises the effective temperature to "
            f"about {1 + excess:.3g} times the target's on average over the coordinates, "
            f"and to {1 + worst_excess:.3g} times in the noisiest, "
            f"{self._describe_coordinate(worst)}, so the draws are too wide and the chain "
            f"behaves more like SGD than a sampler. {advice}. The noise_ratio "
            "sampler stat records it per draw.",
            MinibatchNoiseWarning,
        )
