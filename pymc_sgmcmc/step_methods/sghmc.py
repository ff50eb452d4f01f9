"""SGHMC as a PyMC step method."""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from pymc.step_methods.state import dataclass_state

from pymc_sgmcmc._validation import check_non_negative, check_positive_array
from pymc_sgmcmc._warnings import warn
from pymc_sgmcmc.adaptation import limited_step
from pymc_sgmcmc.dynamics import SGHMCAuxiliary, sghmc_update
from pymc_sgmcmc.schedules import evaluate_schedule
from pymc_sgmcmc.step_methods.base import StochasticGradientState, StochasticGradientStep
from pymc_sgmcmc.step_methods.noise_monitor import END_OF_TUNING_NOISE_PAIRS, NoiseMeasures

__all__ = ["SGHMC"]


@dataclass_state
class SGHMCState(StochasticGradientState):
    """SGHMC's per-chain state adds the gradient-noise estimate frozen when tuning ends."""

    _gradient_variance: np.ndarray


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
    ``h²/M``. Chen et al.'s practical form (and older BlackJAX releases) uses
    ``v = h p / M``, learning rate ``η = h²/M``, momentum decay ``α = hΓ/M`` and
    ``β̂ = hB̂/M``. BlackJAX 1.x's ``sghmc`` diffusion keeps the momentum form with unit
    mass: its ``step_size`` is ``h`` and its ``alpha`` is ``Γ`` (it moves ``θ`` with the
    momentum before the kick rather than after).

    Parameters
    ----------
    vars : list of variables, optional
        Must be all free variables of the model (the default), all continuous.
    step_size : "auto", float or callable, default "auto"
        ``h``: ``"auto"`` adapts it while tuning with ``mass`` and ``steps_per_draw``
        (on the whitened scale the smaller of ``0.3 / √λ`` and the step at which the
        noise ratio is 0.1 in every coordinate; see :doc:`/zero_configuration`).
        Otherwise a positive number, a schedule from :mod:`pymc_sgmcmc.schedules`, or
        any callable of the SG step count ``k``.
    friction : "auto", float or array, default "auto"
        ``Γ > 0``, a scalar or one value per raveled parameter. It sets the momentum
        decay ``α = hΓ/M`` per step: ``α`` around 0.01-0.1 mixes well; ``hΓ/M ≥ 2`` makes
        the momentum overshoot and the chain unstable, so scale ``Γ`` like ``1/h``
        when you change the step size. ``"auto"`` is 1 per whitened unit with a
        preconditioning ``mass`` (adapted or given), and ``0.1 M / h`` otherwise.
    mass : "auto", "dense", "diag", float, array or None, default "auto"
        As for :class:`~pymc_sgmcmc.SGLD`: the mass matrix ``M = Σ⁻¹``, adapted
        (``"dense"``, ``"diag"``, and ``"auto"`` with ``step_size="auto"``) or given.
        With a given ``step_size`` and ``friction``, a number or vector is SGHMC's own
        diagonal mass as before (``"auto"`` then means 1).
    gradient_noise : float, array or "estimate", default 0.0
        ``B̂ ≥ 0``: 0 (small steps), a given value, or ``"estimate"``: the minibatch
        gradient variance ``V̂ = ½ E[(g₁ − g₂)²]`` is estimated from two independent
        minibatches at the chain's position after each tuning draw (at least
        20 pairs), averaged over the second half of tuning (``V`` depends on ``θ``, and
        the first half is burn-in), then frozen when tuning ends; each step then uses
        ``B̂ = h V̂ / 2`` (0 during tuning). With ``tune=0`` it is measured where the
        chain starts, with a warning.
    temperature : float, default 1.0
        ``T ≥ 0``; ``T = 0`` needs ``gradient_noise=0``.
    steps_per_draw, initial_jitter, noise_estimate_interval, control_variate, gradient_estimator, on_divergence, model, rng, compile_kwargs
        As for :class:`~pymc_sgmcmc.SGLD` (``steps_per_draw="auto"``: ``K h ≈ 1``).

    Notes
    -----
    Sampler stats as for :class:`~pymc_sgmcmc.SGLD`, plus ``kinetic_energy``
    ``½ pᵀ M⁻¹ p`` after the draw (its mean is ``d T / 2`` at stationarity) and
    ``gradient_noise``, the mean over coordinates of the ``B̂`` of the last step.

    ``noise_ratio`` compares the two sources of momentum noise per step: minibatch
    noise adds ``h² V`` and the sampler injects ``2h (TΓ − B̂)`` (floored at 0), so

    .. math::

        \text{noise\_ratio} = \frac{\sum_j h^2 V_j}{\sum_j 2h\,\max(TΓ_j - \hat B_j, 0)}
                             = \frac{h\, \bar V}{2\, \overline{\max(TΓ - \hat B, 0)}},

    bars denoting means over coordinates (nan where nothing is injected). The minibatch
    noise that ``B̂`` does not account for heats the chain to ``T_eff = T + (hV/2 −
    B̂)/Γ``; with ``B̂ = 0`` that is ``T (1 + noise_ratio)``, as for SGLD. The
    :class:`~pymc_sgmcmc.MinibatchNoiseWarning` is about this excess,
    ``(h V̄/2 − B̂̄) / (T Γ̄) > 1``, so a ``B̂`` that absorbs the noise (e.g.
    ``gradient_noise="estimate"``) silences it while ``noise_ratio`` still shows how
    much of the momentum noise comes from minibatches (which ``B̂`` corrects only if the
    noise is Gaussian with the estimated variance).

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
    _auxiliary_type = SGHMCAuxiliary
    _kernel_stat_names = ("kinetic_energy",)
    _state_class = SGHMCState
    _restart_note = " (its momentum drawn afresh)"
    _divergence_advice = "Lower step_size (e.g. by a factor of 10) or raise friction"
    _noise_advice = (
        "Lower step_size, raise friction or the batch_size of pm.Minibatch, or pass "
        'gradient_noise="estimate" to absorb it'
    )

    def __init__(
        self,
        vars=None,
        *,
        step_size="auto",
        friction="auto",
        mass="auto",
        gradient_noise=0.0,
        temperature: float = 1.0,
        steps_per_draw: int | None = None,
        initial_jitter: float = 1.0,
        noise_estimate_interval: int | None = 20,
        control_variate="auto",
        gradient_estimator=None,
        on_divergence: str = "warn",
        model=None,
        rng=None,
        blocked: bool = True,
        compile_kwargs: dict | None = None,
    ):
        self._friction_argument = friction
        self._gradient_noise_argument = gradient_noise
        # Given step size and friction with a number or vector for the mass keep SGHMC's
        # own diagonal mass, as before; otherwise the mass is a (whitening) preconditioner
        # and the momentum has unit mass on its scale.
        own_mass = (
            not isinstance(step_size, str)
            and not isinstance(friction, str)
            and (mass == "auto" if isinstance(mass, str) else np.ndim(mass) <= 1)
        )
        self._mass_argument = (1.0 if isinstance(mass, str) else mass) if own_mass else 1.0
        super().__init__(
            vars,
            step_size=step_size,
            mass=None if own_mass else mass,
            temperature=temperature,
            steps_per_draw=steps_per_draw,
            initial_jitter=initial_jitter,
            noise_estimate_interval=noise_estimate_interval,
            control_variate=control_variate,
            gradient_estimator=gradient_estimator,
            on_divergence=on_divergence,
            model=model,
            rng=rng,
            blocked=blocked,
            compile_kwargs=compile_kwargs,
        )

    #: ``h √λ`` at the discretisation limit of the adapted step size, with ``Γ = 1`` (a
    #: momentum decay ``hΓ = 0.3`` per step) on the whitened scale.
    adapted_step_limit = 0.3

    def _configure(self) -> None:
        friction = self._friction_argument
        if isinstance(friction, str):
            if friction != "auto":
                raise ValueError(f'`friction` must be "auto" or positive, got {friction!r}.')
            if self._preconditioning:
                # One unit per posterior sd on the whitened scale.
                friction = 1.0
            else:
                step_size = float(evaluate_schedule(self.step_size, np.arange(1))[0])
                friction = self.coupled_settings(step_size, {"mass": self._mass_argument})[
                    "friction"
                ]
        self.friction = check_positive_array("friction", friction, self._size)
        self.mass = check_positive_array("mass", self._mass_argument, self._size)
        gradient_noise = self._gradient_noise_argument
        self.estimate_gradient_noise = isinstance(gradient_noise, str)
        # The estimate averages a pair after every tuning draw.
        self._pairs_every_tuning_draw = self.estimate_gradient_noise
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
        warn(
            message + " Until then no noise is injected where the minibatch noise exceeds "
            "it, and the chain runs hotter than the target temperature."
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
        # A given B̂ is fixed; an estimated one is h V̂ / 2, so it follows the schedule.
        gradient_noise = (
            parameters["gradient_noise"] + step_size * parameters["gradient_variance"] / 2
        )
        position, momentum = sghmc_update(
            position,
            auxiliary.momentum,
            gradient,
            step_size,
            friction=parameters["friction"],
            mass=parameters["mass"],
            gradient_noise=gradient_noise,
            temperature=parameters["temperature"],
            noise=noise,
        )
        return position, SGHMCAuxiliary(momentum)

    def _kernel_stats(self, position, auxiliary, parameters) -> dict:
        return {"kinetic_energy": 0.5 * pt.sum(auxiliary.momentum**2 / parameters["mass"])}

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
        return SGHMCAuxiliary((scale * self.rng.standard_normal(self._size)).astype(self._dtype))

    # ---- minibatch noise ------------------------------------------------------------------
    def _injected_noise(self, step_size: float) -> np.ndarray:
        """``TΓ − B̂`` per coordinate as injected (floored at 0, as in the update)."""
        injected = self.temperature * self.friction - self._gradient_noise_at(step_size)
        return np.broadcast_to(np.maximum(injected, 0.0), (self._size,))

    def _noise_measures(self, step_size, gradient_variance) -> NoiseMeasures:
        # h² Σ_j V_j / (2h Σ_j max(TΓ_j − B̂_j, 0)): minibatch over injected momentum variance.
        ratio = (
            step_size * np.mean(gradient_variance) / (2 * np.mean(self._injected_noise(step_size)))
        )
        # (T_eff − T) Γ = h V / 2 − B̂ per coordinate; sums over coordinates, over T ΣΓ.
        uncorrected = step_size * np.mean(gradient_variance) / 2 - np.mean(
            np.broadcast_to(self._gradient_noise_at(step_size), (self._size,))
        )
        excess = uncorrected / (
            self.temperature * np.mean(np.broadcast_to(self.friction, (self._size,)))
        )
        # (T_eff − T) / T = (h V / 2 − B̂) / (T Γ) per coordinate.
        per_coordinate = (
            step_size * gradient_variance / 2 - self._gradient_noise_at(step_size)
        ) / (self.temperature * self.friction)
        return NoiseMeasures(ratio, excess, per_coordinate)

    def _adapted_step_size(self, curvature, gradient_variance) -> float:
        """``h = min(0.3 / √λ, ...)`` with the noise ratio ``h V̄ / (2 T Γ)`` at most
        ``ρ`` (see :mod:`pymc_sgmcmc.adaptation`)."""
        discretisation = self.adapted_step_limit / np.sqrt(curvature)
        if self.temperature == 0:
            return discretisation
        return limited_step(
            discretisation, gradient_variance / (2 * self.temperature * self.friction)
        )

    def _without_tuning_warning(self) -> str | None:
        if not self.estimate_gradient_noise:
            return None
        return (
            'gradient_noise="estimate" is measured where the chain starts, which may be far '
            "from the posterior, where the minibatch noise differs. Give tune > 0 (it is "
            "then estimated over the second half of tuning)."
        )

    def _start_chain(self, rng, tune=None, draws=None) -> None:
        self._gradient_variance = np.zeros(self._size, dtype=self._dtype)
        super()._start_chain(rng, tune, draws)

    def _end_of_tuning(self, position) -> None:
        if not self.estimate_gradient_noise:
            return
        monitor = self.noise_monitor
        missing = END_OF_TUNING_NOISE_PAIRS - monitor.pair_count
        if missing > 0:
            monitor.add_pairs(position, missing)
        count = max(monitor.pair_count, 1)
        self._gradient_variance = (monitor.variance_sum / count).astype(self._dtype)
        self._refresh_parameters()
        step_size = self._next_step_size()
        self._check_friction(self._gradient_noise_at(step_size), error=False, step_size=step_size)

    #: Momentum decay ``α = hΓ/M`` per step where :func:`pymc_sgmcmc.select_step_size`
    #: sets the friction: ``Γ = α M / h`` at each candidate ``h`` (0.01-0.1 mixes well).
    default_momentum_decay = 0.1

    @classmethod
    def default_step_sizes(cls, curvature: float, options: dict, size: int) -> np.ndarray:
        """``h`` is a time: ``η = h²/M``, so the largest is ``sqrt(M / curvature)`` and they
        span two decades (four in ``η``, as SGLD's)."""
        mass = float(np.min(options.get("mass", 1.0)))
        return np.sqrt(mass / curvature) * np.logspace(-2.0, 0.0, size)

    @classmethod
    def coupled_settings(cls, step_size: float, options: dict) -> dict:
        if "friction" in options:
            return {}
        mass = np.asarray(options.get("mass", 1.0), dtype=float)
        return {"friction": cls.default_momentum_decay * mass / step_size}

    def reconfigure(self, *, step_size, friction=None) -> None:
        """Use another step size (and friction) from the next chain on, keeping the kernel."""
        if friction is not None:
            self._friction_argument = friction
        super().reconfigure(step_size=step_size)
