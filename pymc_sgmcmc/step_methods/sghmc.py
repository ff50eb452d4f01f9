"""SGHMC as a PyMC step method."""

from __future__ import annotations

import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt

from pymc.step_methods.state import dataclass_state

from pymc_sgmcmc.dynamics import sghmc_update
from pymc_sgmcmc.schedules import evaluate_schedule
from pymc_sgmcmc.step_methods.base import (
    StochasticGradientState,
    StochasticGradientStep,
    check_non_negative,
    check_positive_array,
)

__all__ = ["SGHMC"]

# Gradient pairs taken at the end of tuning when tuning gave fewer draws than this.
MIN_NOISE_ESTIMATE_PAIRS = 20


@dataclass_state
class SGHMCState(StochasticGradientState):
    """SGHMC's per-chain state adds the running gradient-noise estimate."""

    _gradient_variance: np.ndarray
    _variance_sum: np.ndarray
    _variance_count: int
    _last_position: np.ndarray | None


class SGHMC(StochasticGradientStep):
    r"""Stochastic gradient Hamiltonian Monte Carlo (Chen, Fox & Guestrin 2014).

    State ``(θ, p)`` with mass ``M``, friction ``Γ`` and gradient-noise estimate ``B̂``;
    each SG step draws a fresh minibatch and moves

    .. math::

        p_{k+1} &= p_k + h\, g_k - h Γ M^{-1} p_k + N\big(0,\, 2h(TΓ - \hat B)\big) \\
        θ_{k+1} &= θ_k + h M^{-1} p_{k+1}

    with ``g_k = ∇ log π̂(θ_k)`` the minibatch gradient. The friction balances the
    injected noise plus the minibatch noise (fluctuation-dissipation), so that
    ``π(θ)^{1/T} N(p; 0, T M)`` is stationary; ``TΓ ≥ B̂`` is required. The momentum is
    drawn from ``N(0, T M)`` at each chain's start and kept across steps and draws.
    No Metropolis correction is applied (the dynamics are not reversible).

    Limits: ``M = 1, Γ = 1/h`` is SGLD with ``η = h²`` (infinite friction forgets the
    momentum); ``T = 0, B̂ = 0`` is SGD with momentum ``1 − hΓ/M`` and learning rate
    ``h²/M``. Chen et al.'s practical form (also BlackJAX's) uses ``v = h p / M``,
    learning rate ``η = h²/M``, momentum decay ``α = hΓ/M`` and ``β̂ = hB̂/M``.

    Parameters
    ----------
    vars : list of variables, optional
        Must be all free variables of the model (the default), all continuous.
    step_size : float or callable
        ``h``: a positive number, a schedule from :mod:`pymc_sgmcmc.schedules`, or any
        callable of the SG step count ``k``.
    friction : float or array
        ``Γ > 0``, a scalar or one value per raveled parameter. It sets the momentum
        decay ``α = hΓ/M`` per step: ``α`` around 0.01-0.1 mixes well; ``hΓ/M ≥ 2`` makes
        the momentum overshoot and the chain unstable, so scale ``Γ`` like ``1/h``
        when you change the step size.
    mass : float or array, default 1.0
        ``M > 0``, a scalar or one value per raveled parameter.
    gradient_noise : float, array or "estimate", default 0.0
        ``B̂ ≥ 0``: 0 (small steps), a given value, or ``"estimate"``: the minibatch
        gradient variance ``V̂ = ½ E[(g₁ − g₂)²]`` is estimated from two independent
        minibatches at the chain's position after each tuning draw, then frozen when
        tuning ends; each step then uses ``B̂ = h V̂ / 2`` (0 during tuning).
    temperature : float, default 1.0
        ``T ≥ 0``; ``T = 0`` needs ``gradient_noise=0``.
    steps_per_draw, initial_jitter, model, rng, compile_kwargs
        As for :class:`~pymc_sgmcmc.SGLD`.

    Notes
    -----
    Sampler stats as for :class:`~pymc_sgmcmc.SGLD`, plus ``kinetic_energy``
    ``½ pᵀ M⁻¹ p`` after the draw (its mean is ``d T / 2`` at stationarity) and
    ``gradient_noise``, the mean over coordinates of the ``B̂`` of the last step.

    References
    ----------
    T. Chen, E. B. Fox and C. Guestrin. Stochastic gradient Hamiltonian Monte Carlo.
    ICML 2014.
    """

    name = "sghmc"
    stats_dtypes_shapes = {
        **StochasticGradientStep.stats_dtypes_shapes,
        "kinetic_energy": (np.float64, []),
        "gradient_noise": (np.float64, []),
    }
    _auxiliary_names = ("momentum",)
    _state_class = SGHMCState
    _divergence_advice = "Lower step_size (e.g. by a factor of 10) or raise friction"

    def __init__(
        self,
        vars=None,
        *,
        step_size,
        friction,
        mass=1.0,
        gradient_noise=0.0,
        temperature: float = 1.0,
        steps_per_draw: int = 1,
        initial_jitter: float = 1.0,
        model=None,
        rng=None,
        blocked: bool = True,
        compile_kwargs: dict | None = None,
    ):
        self._friction_argument = friction
        self._mass_argument = mass
        self._gradient_noise_argument = gradient_noise
        super().__init__(
            vars,
            step_size=step_size,
            temperature=temperature,
            steps_per_draw=steps_per_draw,
            initial_jitter=initial_jitter,
            model=model,
            rng=rng,
            blocked=blocked,
            compile_kwargs=compile_kwargs,
        )

    def _configure(self) -> None:
        self.friction = check_positive_array("friction", self._friction_argument, self._size)
        self.mass = check_positive_array("mass", self._mass_argument, self._size)
        gradient_noise = self._gradient_noise_argument
        self.estimate_gradient_noise = isinstance(gradient_noise, str)
        if self.estimate_gradient_noise:
            if gradient_noise != "estimate":
                raise ValueError(
                    f'`gradient_noise` must be a non-negative number, an array or "estimate", '
                    f"got {gradient_noise!r}."
                )
            if self.temperature == 0:
                raise ValueError(
                    'gradient_noise="estimate" needs temperature > 0: at temperature 0 no '
                    "noise is injected, so there is nothing to subtract the estimate from."
                )
            self.gradient_noise = np.zeros(())
            self._noise_pairs = self._compile_noise_pairs()
        else:
            self.gradient_noise = np.asarray(gradient_noise, dtype=float)
            if self.gradient_noise.ndim == 0:
                check_non_negative("gradient_noise", float(self.gradient_noise))
            elif (
                self.gradient_noise.shape != (self._size,)
                or np.any(~np.isfinite(self.gradient_noise))
                or np.any(self.gradient_noise < 0)
            ):
                raise ValueError(
                    "`gradient_noise` must be non-negative and finite, a scalar or one value "
                    f"per raveled parameter ({self._size}); got {gradient_noise!r}."
                )
            self._check_friction(self.gradient_noise, error=True)
        self._gradient_variance = np.zeros(self._size, dtype=self._dtype)

    def _check_friction(self, gradient_noise, *, error: bool, step_size=None) -> None:
        """Fluctuation-dissipation needs ``T Γ ≥ B̂`` in every coordinate."""
        if np.all(self.temperature * self.friction >= gradient_noise):
            return
        if self.temperature == 0:
            raise ValueError(
                "temperature=0 (optimisation) injects no noise, so it needs gradient_noise=0; "
                f"got gradient_noise={gradient_noise!r}."
            )
        smallest = float(np.max(gradient_noise / self.temperature))
        source = "" if step_size is None else f" (B̂ = h V̂ / 2 at step_size={step_size:.4g})"
        message = (
            f"friction is too small for the gradient noise{source}: temperature * friction "
            f"must be >= gradient_noise in every coordinate, but max(gradient_noise) = "
            f"{float(np.max(gradient_noise)):.4g} and temperature * min(friction) = "
            f"{float(self.temperature * np.min(self.friction)):.4g}. Use friction >= "
            f"{smallest:.4g} (gradient_noise / temperature), or lower step_size or "
            "gradient_noise."
        )
        if error:
            raise ValueError(message)
        warnings.warn(
            message + " Until then no noise is injected where the minibatch noise exceeds "
            "it, and the chain runs hotter than the target temperature.",
            UserWarning,
            stacklevel=3,
        )

    # ---- the kernel -------------------------------------------------------------------
    def _parameters(self) -> dict[str, np.ndarray]:
        values = {
            "friction": self.friction,
            "mass": self.mass,
            "gradient_noise": self.gradient_noise,
            # Zero until an estimate is frozen at the end of tuning.
            "gradient_variance": self._gradient_variance,
        }
        cast = {name: np.asarray(value, dtype=self._dtype) for name, value in values.items()}
        return {**super()._parameters(), **cast}

    def _transition(self, position, auxiliary, gradient, step_size, noise, parameters):
        (momentum,) = auxiliary
        # A given B̂ is fixed; an estimated one is h V̂ / 2, so it follows the schedule.
        gradient_noise = (
            parameters["gradient_noise"] + step_size * parameters["gradient_variance"] / 2
        )
        position, momentum = sghmc_update(
            position,
            momentum,
            gradient,
            step_size,
            friction=parameters["friction"],
            mass=parameters["mass"],
            gradient_noise=gradient_noise,
            temperature=parameters["temperature"],
            noise=noise,
        )
        return position, [momentum]

    def _extra_stats(self, position, auxiliary, parameters) -> dict:
        (momentum,) = auxiliary
        return {"kinetic_energy": 0.5 * pt.sum(momentum**2 / parameters["mass"])}

    def _draw_stats(self, step_size: float) -> dict:
        return {"gradient_noise": float(np.mean(self._gradient_noise_at(step_size)))}

    def _gradient_noise_at(self, step_size: float) -> np.ndarray:
        """``B̂`` used at a step of size ``step_size``: given, or ``h V̂ / 2`` once estimated."""
        return self.gradient_noise + step_size * self._gradient_variance / 2

    @property
    def gradient_variance(self) -> np.ndarray:
        """The current chain's estimate ``V̂`` of the minibatch-gradient variance (0 until
        tuning ends, and always 0 unless ``gradient_noise="estimate"``)."""
        return self._gradient_variance.copy()

    def _initial_auxiliary(self, position):
        scale = np.sqrt(self.temperature * self.mass)
        return [(scale * self.rng.standard_normal(self._size)).astype(self._dtype)]

    # ---- gradient-noise estimate --------------------------------------------------------
    def _compile_noise_pairs(self):
        target = self._target
        first = [stream.index.type(f"first_{j}") for j, stream in enumerate(target.streams)]
        second = [stream.index.type(f"second_{j}") for j, stream in enumerate(target.streams)]
        _, gradient_first = target.at(target.position, first)
        _, gradient_second = target.at(target.position, second)
        return pytensor.function(
            [target.position, *first, *second],
            0.5 * (gradient_first - gradient_second) ** 2,
            on_unused_input="ignore",
        )

    def _add_noise_pair(self, position) -> None:
        first = [index[0] for index in self._target.draw_indices(self.rng, 1)]
        second = [index[0] for index in self._target.draw_indices(self.rng, 1)]
        self._variance_sum += self._noise_pairs(position, *first, *second)
        self._variance_count += 1

    def _start_chain(self, rng) -> None:
        self._gradient_variance = np.zeros(self._size, dtype=self._dtype)
        self._variance_sum = np.zeros(self._size)
        self._variance_count = 0
        self._last_position = None
        super()._start_chain(rng)

    def _after_draw(self, position) -> None:
        self._last_position = position
        if self.estimate_gradient_noise and self.tune:
            self._add_noise_pair(position)

    def stop_tuning(self) -> None:
        super().stop_tuning()
        if not self.estimate_gradient_noise:
            return
        position = self._last_position
        if position is None:
            # No tuning draws: estimate at the start point as it will be jittered.
            position = self._default_start.astype(self._dtype)
        while self._variance_count < MIN_NOISE_ESTIMATE_PAIRS:
            self._add_noise_pair(position)
        self._gradient_variance = (self._variance_sum / self._variance_count).astype(self._dtype)
        self._refresh_parameters()
        step_size = float(evaluate_schedule(self.step_size, np.array([self._sg_step]))[0])
        self._check_friction(self._gradient_noise_at(step_size), error=False, step_size=step_size)
