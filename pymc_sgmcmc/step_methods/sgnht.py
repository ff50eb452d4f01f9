"""SGNHT as a PyMC step method."""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from pymc_sgmcmc._validation import check_non_negative
from pymc_sgmcmc.adaptation import limited_step
from pymc_sgmcmc.dynamics import SGNHTAuxiliary, sgnht_update
from pymc_sgmcmc.schedules import evaluate_schedule
from pymc_sgmcmc.step_methods.base import StochasticGradientStep
from pymc_sgmcmc.step_methods.noise_monitor import NoiseMeasures

__all__ = ["SGNHT"]

#: The momentum decay ``α = h A / T`` per step (as SGHMC's ``hΓ/M``) behind the diffusion
#: :func:`pymc_sgmcmc.select_step_size` gives each candidate.
DEFAULT_MOMENTUM_DECAY = 0.1


class SGNHT(StochasticGradientStep):
    r"""Stochastic gradient Nosé-Hoover thermostat (Ding et al. 2014).

    SGHMC with unit mass whose friction is a dynamic variable, the thermostat ``ξ``:

    .. math::

        p_{k+1} &= p_k + h\, g_k - h ξ_k p_k + N(0,\, 2 h A) \\
        θ_{k+1} &= θ_k + h\, p_{k+1} \\
        ξ_{k+1} &= ξ_k + h \big(p_{k+1}^\top p_{k+1} / d - T\big)

    The thermostat raises the friction while the kinetic temperature ``pᵀp/d`` is above
    ``T`` and lowers it below, so it absorbs minibatch noise of unknown size: no
    gradient-noise estimate is needed. At stationarity ``pᵀp/d`` averages ``T``,
    ``ξ`` averages ``(A + h V̄/2) / T`` and ``θ`` follows ``π(θ)^{1/T}``. One scalar
    thermostat serves all coordinates, so it corrects the minibatch noise exactly only
    when that noise is about equally large in every coordinate (after the momentum's
    unit scaling); otherwise the noisier coordinates run hotter, as in SGHMC without
    ``B̂``. No Metropolis correction is applied.

    Parameters
    ----------
    vars : list of variables, optional
        Must be all free variables of the model (the default), all continuous.
    step_size : "auto", float or callable, default "auto"
        ``h``: ``"auto"`` adapts it, with ``mass`` and ``steps_per_draw``, as for
        :class:`~pymc_sgmcmc.SGHMC`; otherwise a positive number, a schedule from
        :mod:`pymc_sgmcmc.schedules`, or any callable of the SG step count ``k``.
    diffusion : "auto" or float, default "auto"
        ``A ≥ 0``, the injected noise's variance rate; it plays the role of SGHMC's
        ``T Γ``, and the thermostat starts at ``A / T``. As for SGHMC's friction, ``h A``
        around 0.01-0.1 mixes well. ``temperature=0`` needs ``diffusion=0``. ``"auto"``
        is ``T`` (a friction of 1 per whitened unit) with a preconditioning ``mass``,
        and ``0.1 T / h`` otherwise.
    mass : "auto", "dense", "diag", array or None, default "auto"
        As for :class:`~pymc_sgmcmc.SGLD`.
    initial_thermostat : float, optional
        ``ξ₀``; defaults to ``A / T`` (to ``A`` at ``T = 0``), where it would settle
        with exact gradients.
    temperature : float, default 1.0
        ``T ≥ 0``.
    steps_per_draw, initial_jitter, noise_estimate_interval, control_variate, gradient_estimator, on_divergence, model, rng, compile_kwargs
        As for :class:`~pymc_sgmcmc.SGLD`.

    Notes
    -----
    Sampler stats as for :class:`~pymc_sgmcmc.SGLD`, plus ``thermostat`` (``ξ`` after the
    draw) and ``kinetic_temperature`` (``pᵀp/d`` after the draw; its mean is ``T``).
    ``noise_ratio`` is ``h V̄ / (2A)``: the momentum variance minibatch noise adds per
    step over the injected ``2hA`` (nan where ``A = 0``). Since the thermostat absorbs
    minibatch noise, no :class:`~pymc_sgmcmc.MinibatchNoiseWarning` is raised; a
    thermostat far above ``A / T`` says the minibatch noise dominates.

    References
    ----------
    N. Ding, Y. Fang, R. Babbush, C. Chen, R. D. Skeel and H. Neven. Bayesian sampling
    using stochastic gradient thermostats. NeurIPS 2014.
    """

    name = "sgnht"
    stats_dtypes_shapes = {
        **StochasticGradientStep.stats_dtypes_shapes,
        "thermostat": (np.float64, []),
        "kinetic_temperature": (np.float64, []),
    }
    _auxiliary_type = SGNHTAuxiliary
    _kernel_stat_names = ("thermostat", "kinetic_temperature")
    _restart_note = " (its momentum drawn afresh, its thermostat reset)"
    _divergence_advice = "Lower step_size (e.g. by a factor of 10) or raise diffusion"
    _noise_advice = "Lower step_size or raise the batch_size of pm.Minibatch"

    def __init__(
        self,
        vars=None,
        *,
        step_size="auto",
        diffusion="auto",
        initial_thermostat: float | None = None,
        **options,
    ):
        self._diffusion_argument = diffusion
        self._initial_thermostat_argument = initial_thermostat
        super().__init__(vars, step_size=step_size, **options)

    #: ``h √λ`` at the discretisation limit of the adapted step size, with ``A = T`` on
    #: the whitened scale. Smaller than SGHMC's 0.3: the thermostat holds the kinetic
    #: temperature of the kicked momentum at ``T``, which in this discretisation leaves the
    #: position's variance about ``h ξ / 2`` too small (8% of the sd at ``h = 0.3``, 2.5%
    #: at 0.1, measured on a Gaussian).
    adapted_step_limit = 0.1

    def _configure(self) -> None:
        diffusion = self._diffusion_argument
        if isinstance(diffusion, str):
            if diffusion != "auto":
                raise ValueError(f'`diffusion` must be "auto" or non-negative, got {diffusion!r}.')
            if self._preconditioning:
                diffusion = self.temperature
            else:
                step_size = float(evaluate_schedule(self.step_size, np.arange(1))[0])
                diffusion = self.coupled_settings(step_size, {"temperature": self.temperature})[
                    "diffusion"
                ]
        self.diffusion = check_non_negative("diffusion", diffusion)
        if self.temperature == 0 and self.diffusion > 0:
            raise ValueError(
                "temperature=0 (optimisation) injects no noise, so it needs diffusion=0; got "
                f"diffusion={self.diffusion!r}."
            )
        if self._initial_thermostat_argument is None:
            temperature = self.temperature if self.temperature > 0 else 1.0
            self.initial_thermostat = self.diffusion / temperature
        else:
            self.initial_thermostat = check_non_negative(
                "initial_thermostat", self._initial_thermostat_argument
            )

    def _adapted_step_size(self, curvature, gradient_variance) -> float:
        """``h = min(0.3 / √λ, ...)`` with the noise ratio ``h V̄ / 2A`` at most ``ρ``: the
        thermostat absorbs more, but only for noise alike in every coordinate."""
        discretisation = self.adapted_step_limit / np.sqrt(curvature)
        if self.diffusion == 0:
            return discretisation
        return limited_step(discretisation, gradient_variance / (2 * self.diffusion))

    def _parameters(self) -> dict[str, np.ndarray]:
        return {
            **super()._parameters(),
            "diffusion": np.asarray(self.diffusion, dtype=self._dtype),
        }

    def _transition(self, position, auxiliary, gradient, step_size, noise, parameters):
        # The thermostat is a scalar, kept as a length-1 vector beside the other state.
        thermostat = auxiliary.thermostat
        position, momentum, new_thermostat = sgnht_update(
            position,
            auxiliary.momentum,
            thermostat[0],
            gradient,
            step_size,
            diffusion=parameters["diffusion"],
            temperature=parameters["temperature"],
            noise=noise,
        )
        return position, SGNHTAuxiliary(momentum, pt.full_like(thermostat, new_thermostat))

    def _initial_auxiliary(self, position):
        momentum = np.sqrt(self.temperature) * self.rng.standard_normal(self._size)
        thermostat = np.full(1, self.initial_thermostat)
        return SGNHTAuxiliary(momentum.astype(self._dtype), thermostat.astype(self._dtype))

    def _kernel_stats(self, position, auxiliary, parameters) -> dict:
        return {
            "thermostat": auxiliary.thermostat[0],
            "kinetic_temperature": pt.mean(auxiliary.momentum**2),
        }

    def _noise_measures(self, step_size, gradient_variance) -> NoiseMeasures:
        ratio = step_size * np.mean(gradient_variance) / (2 * self.diffusion)
        # The thermostat absorbs the minibatch noise: nothing to warn about.
        return NoiseMeasures(ratio, 0.0, np.zeros(self._size))

    @classmethod
    def default_step_sizes(cls, curvature: float, options: dict, size: int) -> np.ndarray:
        """``h`` is a time with unit mass: the largest is the narrowest posterior sd,
        ``1/sqrt(curvature)``, two decades above the smallest."""
        return np.sqrt(1.0 / curvature) * np.logspace(-2.0, 0.0, size)

    @classmethod
    def coupled_settings(cls, step_size: float, options: dict) -> dict:
        """The diffusion ``A = α T / h`` where the thermostat settles without minibatch
        noise, with SGHMC's momentum decay ``α``."""
        if "diffusion" in options:
            return {}
        temperature = float(options.get("temperature", 1.0))
        return {"diffusion": DEFAULT_MOMENTUM_DECAY * temperature / step_size}

    def reconfigure(self, *, step_size, diffusion=None) -> None:
        """Use another step size (and diffusion) from the next chain on, keeping the kernel."""
        if diffusion is not None:
            self._diffusion_argument = diffusion
        super().reconfigure(step_size=step_size)
