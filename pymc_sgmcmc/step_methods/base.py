"""The shared PyMC adapter of the stochastic-gradient samplers.

A step method here holds no algorithm of its own. As PyMC's ``BaseHMC`` composes a
potential and a step-size adapter, it composes parts that each own their state, nested in
the step's ``sampling_state``:

- a gradient estimator (:mod:`pymc_sgmcmc.gradients`: plain minibatch, control variate),
- the compiled kernel of ``steps_per_draw`` applications of an update rule
  (:mod:`pymc_sgmcmc.step_methods.kernel`, over :mod:`pymc_sgmcmc.dynamics`),
- the chain start (:mod:`~pymc_sgmcmc.step_methods.chain_start`: checks and jitter),
- the gradient-noise monitor (:mod:`~pymc_sgmcmc.step_methods.noise_monitor`),
- the divergence monitor (:mod:`~pymc_sgmcmc.step_methods.divergence`).

On each ``pm.sample`` draw the step feeds the kernel step sizes from the schedule,
standard normal noise and minibatch indices from the chain's own generator. A sampler is
a subclass that names its update rule, its auxiliary state and parameters, and how
minibatch noise compares with the noise it injects.
"""

from __future__ import annotations

import numbers
import os

from typing import NamedTuple

import numpy as np
import pytensor.tensor as pt
import scipy.linalg

from pymc.blocking import DictToArrayBijection, RaveledVars
from pymc.model import modelcontext
from pymc.step_methods.compound import BlockedStep, Competence, StepMethodState
from pymc.step_methods.state import DataClassState, dataclass_state
from pymc.util import get_random_generator, get_value_vars_from_user_vars
from pytensor.tensor.type import discrete_dtypes

from pymc_sgmcmc._compat import DIVERGING_DTYPE, runs_on_jax, sampling_chain_context
from pymc_sgmcmc._named_function import NamedFunction, NamedInput
from pymc_sgmcmc._validation import check_noise_estimate_interval, check_non_negative
from pymc_sgmcmc._warnings import warn
from pymc_sgmcmc.adaptation import DENSE_LIMIT, Preconditioner
from pymc_sgmcmc.dynamics import SGLDAuxiliary
from pymc_sgmcmc.gradients import ControlVariate, GradientEstimator, MinibatchGradient
from pymc_sgmcmc.gradients.minibatch import MinibatchLogPosterior
from pymc_sgmcmc.schedules import as_schedule, evaluate_schedule
from pymc_sgmcmc.step_methods.adapted_settings import (
    AdaptedSettingsRecord,
    record_in_trace,
    run_of,
    settings_of,
    spawn_key,
)
from pymc_sgmcmc.step_methods.adapter import TuningAdapter
from pymc_sgmcmc.step_methods.chain_start import ChainStart
from pymc_sgmcmc.step_methods.divergence import DivergenceMonitor
from pymc_sgmcmc.step_methods.kernel import build_kernel, build_start_function
from pymc_sgmcmc.step_methods.noise_monitor import (
    END_OF_TUNING_NOISE_PAIRS,
    GradientNoiseMonitor,
    NoiseMeasures,
)
from pymc_sgmcmc.step_methods.posterior_guess import PosteriorGuess

__all__ = ["StochasticGradientState", "StochasticGradientStep"]

#: ``steps_per_draw="auto"`` (the default with ``step_size="auto"``) takes enough SG steps
#: per draw to cover one unit of the dynamics' time on the whitened scale (``K η`` for
#: SGLD, ``K h`` for SGHMC and SGNHT), about the relaxation time of a unit-variance
#: posterior, so that successive draws are far from copies; at least ``AUTO_MIN_STEPS``
#: and at most ``AUTO_MAX_STEPS`` (NUTS's own limit, 2¹⁰ leapfrog steps at its maximal
#: tree depth). A draw has a fixed cost besides its SG steps (PyMC's loop and trace, the
#: state's checks, the noise and minibatches drawn: 100-300 µs of Python), which at 10
#: steps of ~10 µs is most of it; from 100 steps on it is a small part, and the draws
#: (10-30 units of time apart on easy posteriors) are nearly independent.
AUTO_MIN_STEPS, AUTO_MAX_STEPS = 100, 1024
#: The fewest SG steps per draw of ``steps_per_draw="auto"`` where an automatic control
#: variate lowers the floor on a small data set (see ``_resolve_control_variate``).
AUTO_MIN_FLOOR = 10

#: Placeholder until the adaptation sets the step size where a chain starts.
AUTO_INITIAL_STEP_SIZE = 0.1

#: ``control_variate="auto"`` turns them on from this ``N / B`` on: without them the
#: whitened gradient variance is about ``N / B`` near the mode, which limits the step to
#: ``2 T ρ B / N`` (``ρ`` the noise-ratio target, 0.1); at ``N / B = 4`` that is 0.05,
#: a third of the discretisation limit, so control variates, at twice the gradient cost
#: per step, pay from there on.
CONTROL_VARIATE_MIN_RATIO = 4.0

#: The largest share of the SG steps' cost the automatic control variate spends on moving
#: its centre (one full pass over the data each time).
REFRESH_COST = 0.25


def check_covers_model(name: str, model, value_vars) -> None:
    """Refuse a step that leaves free variables for PyMC to assign to other samplers."""
    discrete = [var.name for var in model.value_vars if var.dtype in discrete_dtypes]
    if discrete:
        raise ValueError(
            f"{name} samples continuous variables only, but the model has discrete free "
            f"variable(s) {discrete}. Marginalise them out of the model (e.g. with "
            "pymc_extras.marginalize) before sampling with stochastic gradients."
        )
    missing = [var.name for var in model.value_vars if var not in value_vars]
    if missing:
        raise ValueError(
            f"{name} must cover every free variable of the model; {missing} are left out. "
            "PyMC would assign NUTS or Metropolis to them, whose acceptance steps are "
            "invalid on minibatch log densities. Pass vars=None (the default) to sample "
            "all of them with stochastic gradients."
        )


@dataclass_state
class StochasticGradientState(StepMethodState):
    """Per-chain state: with ``step.sampling_state`` it can be saved and restored exactly.

    The parts' states nest in it, as ``BaseHMCState`` nests its potential's.
    """

    tune: bool
    _draw: int
    _sg_step: int
    _chain: int | None
    _tune_draws: int | None
    _total_draws: int | None
    # The chain's current position (after its last finite draw), its auxiliary state, the
    # gradient estimate there (the next step's, computed with the draw) and the log
    # density on its minibatch.
    _last_position: np.ndarray | None
    _auxiliary: tuple
    _current_gradient: np.ndarray | None
    _logp: float
    _grad_norm: float
    _pending_end_of_tuning: bool
    gradient_estimator: DataClassState
    noise_monitor: DataClassState
    divergence_monitor: DataClassState
    adapter: DataClassState


class StochasticGradientStep(BlockedStep):
    """Base class: a thin step composed of a gradient estimator, a compiled kernel, the
    chain start, and the noise and divergence monitors.

    A sampler subclass gives:

    - ``_auxiliary_type``, a NamedTuple of its state beside the position (from
      :mod:`pymc_sgmcmc.dynamics`), ``_initial_auxiliary`` and ``_restart_auxiliary``;
    - ``_transition``, its update rule as a graph, and ``_parameters``, its numeric
      parameters (checked in ``_configure``);
    - ``_noise_measures``: how a minibatch noise ``V`` compares with what it injects;
    - optionally stats (``_kernel_stat_names`` with ``_kernel_stats``, ``_draw_stats``),
      ``_end_of_tuning`` and ``_without_tuning_warning``;
    - for :func:`pymc_sgmcmc.select_step_size`, ``default_step_sizes`` and
      ``coupled_settings``.
    """

    name = "stochastic_gradient"
    default_blocked = True
    default_tune_steps = 1000
    stats_dtypes_shapes = {
        "step_size": (np.float64, []),
        "minibatch_logp": (np.float64, []),
        "grad_norm": (np.float64, []),
        "diverging": (DIVERGING_DTYPE, []),
        "noise_ratio": (np.float64, []),
        "tune": (bool, []),
        # NUTS's name: the number of SG steps (gradient evaluations) behind this draw.
        "n_steps": (np.float64, []),
    }
    _state_class = StochasticGradientState
    _auxiliary_type: type[NamedTuple] = SGLDAuxiliary
    #: Stats the kernel computes from a draw's final state (see ``_kernel_stats``).
    _kernel_stat_names: tuple[str, ...] = ()
    #: Whether the noise monitor takes a pair after every tuning draw (SGHMC's estimate).
    _pairs_every_tuning_draw = False
    _divergence_advice = "Lower step_size (e.g. by a factor of 10)"
    #: What a divergence does to the auxiliary state, for the divergence warning.
    _restart_note = ""
    _noise_advice = "Lower step_size, or raise the batch_size of pm.Minibatch"

    def __init__(
        self,
        vars=None,
        *,
        step_size="auto",
        mass="auto",
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
        # Every chain starts in its tuning phase, as PyMC's own steps do: PyMC's parallel
        # workers never set `tune` and only call stop_tuning() when tuning ends.
        self.tune = True
        if blocked is not True:
            raise ValueError(
                f"{type(self).__name__} moves all parameters together with one gradient, so "
                f"it supports only blocked=True, got blocked={blocked!r}."
            )
        self.divergence_monitor = DivergenceMonitor(
            type(self).__name__,
            on_divergence,
            advice=self._divergence_advice,
            restart_note=self._restart_note,
            adapting=isinstance(step_size, str),
        )
        model = modelcontext(model)
        value_vars = (
            model.value_vars if vars is None else get_value_vars_from_user_vars(vars, model)
        )
        check_covers_model(type(self).__name__, model, value_vars)
        self.vars = value_vars
        self.blocked = True

        self.adapt_step_size = isinstance(step_size, str)
        if self.adapt_step_size and step_size != "auto":
            raise ValueError(
                f'`step_size` must be "auto", a positive number or a schedule, got {step_size!r}.'
            )
        # Until the adaptation sets it where a chain starts.
        self.step_size = as_schedule(AUTO_INITIAL_STEP_SIZE if self.adapt_step_size else step_size)
        self.temperature = check_non_negative("temperature", temperature)
        if steps_per_draw is None:
            steps_per_draw = "auto" if self.adapt_step_size else 1
        self.adapt_steps_per_draw = isinstance(steps_per_draw, str)
        if self.adapt_steps_per_draw:
            if steps_per_draw != "auto" or not self.adapt_step_size:
                raise ValueError(
                    '`steps_per_draw` must be an integer >= 1, or "auto" with step_size="auto"; '
                    f"got {steps_per_draw!r}."
                )
            steps_per_draw = AUTO_MIN_STEPS
        # Lowered by an automatic control variate on a small data set (see there).
        self._min_steps_per_draw = AUTO_MIN_STEPS
        if (
            isinstance(steps_per_draw, bool)
            or not isinstance(steps_per_draw, numbers.Integral)
            or steps_per_draw < 1
        ):
            raise ValueError(f"`steps_per_draw` must be an integer >= 1, got {steps_per_draw!r}.")
        self.steps_per_draw = int(steps_per_draw)
        self.initial_jitter = check_non_negative("initial_jitter", initial_jitter)
        self.noise_estimate_interval = check_noise_estimate_interval(noise_estimate_interval)

        self._target = MinibatchLogPosterior(model, self.vars)
        for buffer in self._target.buffers:
            # Streamed rows are checked for NaN once, here, before any full-data pass;
            # pm.sample's workers inherit the check.
            buffer.check_rows()
        self._dtype = self._target.dtype
        self._size = self._target.size
        initial_point = model.initial_point()
        mapped = DictToArrayBijection.map({var.name: initial_point[var.name] for var in self.vars})
        self._point_map_info = mapped.point_map_info
        self._compile_kwargs = compile_kwargs or {}
        initial, adapt_preconditioner = self._resolve_mass(mass)
        self._preconditioning = initial is not None
        self.guess = (
            PosteriorGuess.find(self._target, mapped.data, self._compile_kwargs)
            if self.adapt_step_size or self._preconditioning
            else None
        )
        if initial is None:
            initial = Preconditioner.identity(self._size, dense=False)
        elif adapt_preconditioner:
            initial = Preconditioner.from_curvature(
                self.guess.curvature, self._size, dense=initial.dense
            )
        self.control_variate = self._resolve_control_variate(control_variate, gradient_estimator)
        self.gradient_estimator = self._gradient_estimator(gradient_estimator, mapped.data)
        if type(self.gradient_estimator) is MinibatchGradient:
            _warn_streamed_without_control_variate(self._target)
        value_names = {var.name: var.name for var in self.vars}
        value_names.update({model.values_to_rvs[var].name: var.name for var in self.vars})
        self.chain_start = ChainStart(
            self.gradient_estimator,
            initial_jitter=self.initial_jitter,
            default_start=mapped.data,
            point_map_info=self._point_map_info,
            value_names=value_names,
            full_data=None if self.guess is None else self.guess.full_data,
        )
        self._declare_stats()
        self._configure()
        self.noise_monitor = GradientNoiseMonitor(
            self.gradient_estimator,
            interval=self.noise_estimate_interval,
            measures=self._noise_measures,
            describe_coordinate=self._coordinate_name,
            size=self._size,
            dtype=self._dtype,
            minibatch_part=self._minibatch_part,
            whiten=self._whiten if self._preconditioning else None,
        )
        self.adapter = TuningAdapter(
            initial,
            adapt_preconditioner=adapt_preconditioner,
            adapt_step_size=self.adapt_step_size,
            curvature=None if self.guess is None else self.guess.curvature,
            step_size_rule=self._adapted_step_size,
            time_per_step=self._time_per_step,
            whitened_variance=self._whitened_variance,
        )
        self._set_factor(initial.factor)
        self._factor_covariance = None
        parameters = {
            name: NamedInput.like(name, value, self._dtype)
            for name, value in self._parameters().items()
        }
        self._kernel_parameters = parameters
        # Under JAX the noise and minibatches are drawn on the device, by kernels of a
        # fixed length: one per steps_per_draw, compiled when first needed.
        self._device_random = runs_on_jax(self._compile_kwargs)
        if self._device_random and self._target.buffers:
            raise NotImplementedError(
                "Minibatches streamed from a chunked store (pymc_sgmcmc.Minibatch over zarr "
                "or Dask) are drawn on the host, and the JAX backend draws them on the "
                "device from data it holds there. Sample streamed data with the default "
                "backend (no compile_kwargs mode), or load the data with pm.Minibatch."
            )
        self._device_kernels: dict[int, NamedFunction] = {}
        self._process = os.getpid()
        self._adapted_record = AdaptedSettingsRecord()
        self._kernel = (
            None
            if self._device_random
            else self._build_kernel(self.steps_per_draw, variable=self.adapt_steps_per_draw)
        )
        self._start_function = build_start_function(
            estimator=self.gradient_estimator,
            parameters=parameters,
            compile_kwargs=self._compile_kwargs,
        )
        self._start_chain(rng)

    def _build_kernel(self, steps: int, *, variable: bool = False) -> NamedFunction:
        return build_kernel(
            estimator=self.gradient_estimator,
            transition=(
                self._preconditioned_transition if self._preconditioning else self._transition
            ),
            auxiliary_type=self._auxiliary_type,
            parameters=self._kernel_parameters,
            steps=steps,
            variable_steps=variable,
            kernel_stats=self._kernel_stats,
            stat_names=self._kernel_stat_names,
            device_random=self._device_random,
            compile_kwargs=self._compile_kwargs,
        )

    def _kernel_for(self, steps: int) -> NamedFunction:
        """The kernel of ``steps`` SG steps; under JAX compiled at its first use and
        seeded from the chain's generator."""
        if not self._device_random:
            return self._kernel
        kernel = self._device_kernels.get(steps)
        if kernel is None:
            kernel = self._device_kernels[steps] = self._build_kernel(steps)
            kernel.set_fixed(self._fixed_values)
            kernel.reseed(int(self._device_seeds.integers(2**63)))
        return kernel

    def _resolve_mass(self, mass) -> tuple[Preconditioner | None, bool]:
        """The first preconditioner (None for none) and whether tuning adapts it."""
        if isinstance(mass, str):
            if mass == "auto":
                if not self.adapt_step_size:
                    # A given step size keeps its meaning: no preconditioner, as before.
                    return None, False
                mass = "dense" if self._size <= DENSE_LIMIT else "diag"
            if mass not in ("dense", "diag"):
                raise ValueError(
                    f'`mass` must be "auto", "dense", "diag", None, or a positive vector or '
                    f"positive definite matrix over the raveled parameters; got {mass!r}."
                )
            return Preconditioner.identity(self._size, dense=mass == "dense"), True
        if mass is None:
            return None, False
        array = np.asarray(mass, dtype=float)
        if array.ndim == 0:
            array = np.full(self._size, float(array))
        shapes = {1: (self._size,), 2: (self._size, self._size)}
        if array.ndim not in shapes or array.shape != shapes[array.ndim]:
            raise ValueError(
                f"`mass` must be a scalar, a vector of {self._size} (one per raveled "
                f"parameter) or a {self._size} x {self._size} matrix; got shape {array.shape}."
            )
        valid = np.all(np.isfinite(array)) and (
            np.all(array > 0)
            if array.ndim == 1
            else np.allclose(array, array.T) and np.all(np.linalg.eigvalsh(array) > 0)
        )
        if not valid:
            raise ValueError(
                "`mass` must be positive (a vector) or symmetric positive definite (a matrix), "
                "and finite."
            )
        return Preconditioner.from_mass(array), False

    def _resolve_control_variate(self, value, gradient_estimator) -> ControlVariate | None:
        """``"auto"``: on under adaptation (or a given ``mass``) where ``N/B`` is large and
        the MAP search converged; otherwise as given."""
        if not (isinstance(value, str) and value == "auto"):
            return ControlVariate.from_argument(value)
        if (
            gradient_estimator is not None
            or self.guess is None
            or not self.guess.converged
            or not self._target.streams
        ):
            return None
        ratio = min(stream.data_size / stream.batch_size for stream in self._target.streams)
        if ratio < CONTROL_VARIATE_MIN_RATIO:
            return None
        # Their noise grows with the distance from the centre, which heats the chain in
        # the tails: move the centre to the chain every few draws, as long as the full
        # pass that costs (N/B minibatch gradients) adds at most a quarter to the steps.
        # Where that allows a move more often than every AUTO_MIN_STEPS steps (N/B < 25),
        # a draw takes fewer steps, down to N/(B REFRESH_COST), so that the centre does
        # move that often: a draw of 100 large steps (up to 20 units of time) carries the
        # chain far into a heavy tail from its centre, and the noise met there heated the
        # Student-t degrees of freedom of an autoregression (sd 1.3-1.4 times NUTS's).
        if self.adapt_steps_per_draw:
            self._min_steps_per_draw = int(
                np.clip(np.ceil(ratio / REFRESH_COST), AUTO_MIN_FLOOR, AUTO_MIN_STEPS)
            )
        refresh = int(np.ceil(ratio / (REFRESH_COST * self._min_steps_per_draw)))
        return ControlVariate(refresh_interval=refresh)

    def _gradient_estimator(self, make_estimator, start: np.ndarray):
        """The user's estimator, plain minibatch gradients, or control variates (their
        centre found here)."""
        if make_estimator is not None:
            if self.control_variate is not None:
                raise ValueError(
                    "Pass either control_variate or gradient_estimator, not both: "
                    "control_variate=... builds a control-variate gradient estimator."
                )
            if not callable(make_estimator):
                raise TypeError(
                    "`gradient_estimator` must be a callable that takes the model's "
                    "MinibatchLogPosterior and returns a pymc_sgmcmc.gradients."
                    f"GradientEstimator (e.g. a subclass of it), got {make_estimator!r}."
                )
            estimator = make_estimator(self._target)
            if not isinstance(estimator, GradientEstimator):
                raise TypeError(
                    "`gradient_estimator` must return a pymc_sgmcmc.gradients."
                    f"GradientEstimator, got {type(estimator).__name__}."
                )
            return estimator
        if self.control_variate is None:
            return MinibatchGradient(self._target)
        if not self._target.streams:
            raise ValueError(
                "control_variate needs a model fed through pm.Minibatch: this model's "
                "gradients are exact already."
            )
        guess = self.guess if isinstance(self.control_variate.centre, str) else None
        return self.control_variate.build(
            self._target, self.vars, start, self._compile_kwargs, guess=guess
        )

    # ---- the preconditioner -----------------------------------------------------------
    def _preconditioned_transition(
        self, position, auxiliary, gradient, step_size, noise, parameters
    ):
        """The sampler's rule on the whitened scale ``z = L⁻¹ θ``: gradient ``Lᵀ g``, move
        ``L Δz``. Every rule here moves the position by an increment that does not depend
        on the position itself, so it is applied at ``z = 0``."""
        factor = parameters["preconditioner_factor"]
        dense = factor.ndim == 2
        whitened_gradient = factor.T @ gradient if dense else factor * gradient
        increment, auxiliary = self._transition(
            pt.zeros_like(position), auxiliary, whitened_gradient, step_size, noise, parameters
        )
        return position + (factor @ increment if dense else factor * increment), auxiliary

    def _set_factor(self, factor: np.ndarray) -> None:
        """The preconditioner's ``L``, and ``L⁻¹`` for the distance of every draw's move."""
        self._factor = factor
        self._inverse_factor = (
            scipy.linalg.solve_triangular(factor, np.eye(len(factor)), lower=True)
            if factor.ndim == 2
            else 1.0 / factor
        )

    def _whitened_distance(self, displacement: np.ndarray) -> float:
        """``‖L⁻¹ Δθ‖``: a move in posterior sds."""
        inverse = self._inverse_factor
        whitened = inverse @ displacement if inverse.ndim == 2 else inverse * displacement
        return float(np.sqrt(whitened @ whitened))

    def _whiten(self, vector: np.ndarray) -> np.ndarray:
        """``Lᵀ v`` with the chain's current preconditioner."""
        return self._factor.T @ vector if self._factor.ndim == 2 else self._factor * vector

    def _adapted_step_size(self, curvature: float, gradient_variance: np.ndarray) -> float:
        """The step size on the whitened scale for a largest whitened curvature
        ``curvature`` and a whitened minibatch gradient variance (see
        :mod:`pymc_sgmcmc.adaptation`)."""
        raise NotImplementedError

    def _whitened_variance(
        self, position: np.ndarray, preconditioner: Preconditioner, pairs: int
    ) -> np.ndarray:
        """The minibatch gradient variance at ``position`` per coordinate of
        ``preconditioner``'s whitened scale (the noise monitor's own generator)."""
        return self.noise_monitor.sample_variance(position, pairs, whiten=preconditioner.whiten)

    def _time_per_step(self, step_size: float) -> float:
        """How far one SG step advances the dynamics' time on the whitened scale (SGLD's
        ``η``; SGHMC's and SGNHT's ``h``)."""
        return step_size

    def _apply_adaptation(self) -> None:
        adapter = self.adapter
        if self.adapt_step_size:
            self.step_size = as_schedule(adapter.step_size)
            if self.adapt_steps_per_draw:
                time = self._time_per_step(adapter.step_size)
                self.steps_per_draw = int(
                    np.clip(np.ceil(1.0 / time), self._min_steps_per_draw, AUTO_MAX_STEPS)
                )
        self._refresh_parameters()

    def adapted_settings(self, chain: int | None = None) -> dict:
        """The adapted settings of the latest ``pm.sample`` run, to reuse without adapting.

        ``type(step)(**step.adapted_settings())`` samples with the same step size, mass
        matrix and SG steps per draw (chains start near the MAP, and
        ``control_variate="auto"`` applies, as here); only what was adapted is returned.
        Chains in PyMC's worker processes (``cores > 1``) hand theirs back when their
        tuning ends.

        Parameters
        ----------
        chain : int, optional
            One chain's settings. By default all chains' pooled: the mass matrix of the
            chains' mean covariance ``Σ = mean_c M_c⁻¹``, the median step size, and the
            most SG steps per draw any chain took.
        """
        if not (self.adapt_step_size or self.adapter.adapt_preconditioner):
            return {}
        per_chain = self._adapted_record.chains()
        if not per_chain:
            raise RuntimeError(
                f"No chain of this {type(self).__name__} has finished tuning yet: its "
                "settings are adapted during pm.sample's tuning draws (tune > 0)."
            )
        return settings_of(per_chain, chain)

    def record_adapted_settings(self, idata):
        """Write each chain's adapted settings into ``idata`` (what ``pm.sample``
        returned), as ``sample_stats`` variables ``adapted_step_size``, ``adapted_mass``
        and ``adapted_steps_per_draw`` with a ``chain`` dimension; returns ``idata``.

        They survive ``to_netcdf`` and ``to_zarr``, and
        :func:`pymc_sgmcmc.adapted_settings` reads them back in a later session.
        """
        return record_in_trace(idata, self._adapted_record.chains(), type(self).__name__)

    def _chain_adapted_settings(self) -> dict:
        """The current chain's adapted settings (only what is adapted)."""
        settings = {}
        if self.adapt_step_size:
            settings["step_size"] = float(self._next_step_size())
        if self.adapter.adapt_preconditioner:
            settings["mass"] = np.array(self.adapter.preconditioner.mass)
        if self.adapt_steps_per_draw:
            settings["steps_per_draw"] = int(self.steps_per_draw)
        return settings

    @property
    def mass_preconditioner(self) -> Preconditioner | None:
        """The current chain's preconditioner (None without one): its ``covariance`` ``Σ``
        and ``mass`` ``M = Σ⁻¹``, which ``mass=`` takes to reuse it."""
        return self.adapter.preconditioner if self._preconditioning else None

    # ---- hooks for the samplers -------------------------------------------------------
    def _configure(self) -> None:
        """Check and store sampler-specific parameters (needs ``self._size``)."""

    def _parameters(self) -> dict[str, np.ndarray]:
        """Numeric parameters of the update rule, passed to the kernel at every call."""
        values = {"temperature": np.asarray(self.temperature, dtype=self._dtype)}
        if self._preconditioning:
            values["preconditioner_factor"] = np.asarray(self._factor, dtype=self._dtype)
        return values

    def _transition(self, position, auxiliary, gradient, step_size, noise, parameters):
        """The update rule as a graph: the next ``(position, auxiliary)``; ``auxiliary`` is
        an ``_auxiliary_type`` and ``parameters`` maps names to symbolic inputs."""
        raise NotImplementedError

    def _initial_auxiliary(self, position: np.ndarray) -> NamedTuple:
        return self._auxiliary_type()

    def _restart_auxiliary(self, auxiliary: NamedTuple) -> NamedTuple:
        """Auxiliary state to go on with after a divergence, from the last finite one.

        By default it is drawn afresh as at a chain's start (momentum from ``N(0, TM)``).
        """
        return self._initial_auxiliary(self._last_position)

    def _kernel_stats(self, position, auxiliary, parameters) -> dict:
        """Symbolic scalar stats of the final state of a draw, named ``_kernel_stat_names``."""
        return {}

    def _draw_stats(self, step_size: float) -> dict:
        """Sampler-specific stats computed outside the kernel."""
        return {}

    def _noise_measures(self, step_size, gradient_variance: np.ndarray) -> NoiseMeasures:
        """How a minibatch noise ``V`` (per coordinate) compares with the injected noise."""
        raise NotImplementedError

    def _noise_state_key(self):
        """Any other state the noise measures depend on (pSGLD's running average)."""
        return None

    def _end_of_tuning(self, position: np.ndarray) -> None:
        """Called when tuning ends, before the noise estimate restarts for the sampling phase
        (SGHMC freezes its ``gradient_noise="estimate"`` here)."""

    def _without_tuning_warning(self) -> str | None:
        """What a chain without tuning draws misses (``tune=0``), if anything."""
        return None

    # ---- what select_step_size asks the sampler ---------------------------------------
    @classmethod
    def default_step_sizes(cls, curvature: float, options: dict, size: int) -> np.ndarray:
        """``size`` step sizes worth trying, log-spaced, on a log posterior whose largest
        curvature is ``curvature``, with the sampler's other ``options``.

        For SGLD's ``η``, a variance, the largest is ``1/curvature``, and they span four
        decades below it (a chain 10⁴ times too slow for a small budget).
        """
        return (1.0 / curvature) * np.logspace(-4.0, 0.0, size)

    @classmethod
    def coupled_settings(cls, step_size: float, options: dict) -> dict:
        """Settings tied to the step size where ``options`` leave them out (SGHMC's
        friction), for each candidate of :func:`pymc_sgmcmc.select_step_size`."""
        return {}

    def reconfigure(self, *, step_size, **settings) -> None:
        """Use another step size (and settings tied to it) from the next chain on, keeping
        the compiled kernel.

        For :func:`pymc_sgmcmc.select_step_size`, which runs one step method over many
        candidate step sizes: the schedule is evaluated outside the kernel. ``settings``
        are those of :meth:`coupled_settings`.
        """
        if settings:
            raise TypeError(f"{type(self).__name__} ties no settings to its step size.")
        self.step_size = as_schedule(step_size)
        self._declare_stats()
        self._configure()
        self._refresh_parameters()

    def _declare_stats(self) -> None:
        """The step's stats: the class's, and ``sampling_phase`` for a schedule with phases
        (cyclical schedules)."""
        stats = dict(type(self).stats_dtypes_shapes)
        if hasattr(self.step_size, "in_sampling_phase"):
            stats["sampling_phase"] = (DIVERGING_DTYPE, [])
        # PyMC copies both from the class when the step is created (BlockedStep.__new__).
        self.stats_dtypes_shapes = stats
        self.stats_dtypes = [{name: dtype for name, (dtype, _) in stats.items()}]

    # ---- per-chain state --------------------------------------------------------------
    def _refresh_parameters(self) -> None:
        self._parameters_tune = bool(self.tune)
        # The adapter's covariance is the chain's state (restored with sampling_state);
        # it is replaced, never changed in place, when it moves. A refreshed control-
        # variate centre comes here every few draws with the same one: no new factor.
        covariance = self.adapter.covariance
        if covariance is not self._factor_covariance:
            self._set_factor(self.adapter.preconditioner.factor)
            self._factor_covariance = covariance
        values = {
            name: np.asarray(value, dtype=self._dtype) for name, value in self._parameters().items()
        }
        values.update(self.gradient_estimator.input_values())
        self._fixed_values = values
        for kernel in [self._kernel, *self._device_kernels.values()]:
            if kernel is not None:
                kernel.set_fixed(values)
        self._start_function.set_fixed(values)
        # The parameters enter the noise ratio: recompute it at the next draw.
        self.noise_monitor.forget_measures()

    def _start_chain(self, rng, tune: int | None = None, draws: int | None = None) -> None:
        self.tune = True
        self.rng = get_random_generator(rng, copy=False)
        self._run = run_of(self.rng)
        # A child of the chain's generator: the same seed gives the same noise estimates,
        # and drawing their minibatches leaves the chain's own stream (its draws) untouched.
        self.noise_monitor.start_chain(self.rng.spawn(1)[0])
        if self._target.buffers:
            # The chunks a chain reads, from another child: the same seed, the same data.
            self._target.start_chain(self.rng.spawn(1)[0])
        context = sampling_chain_context(tune, draws)
        self.chain_start.read_sample_arguments()
        self._chain = context.chain
        self._tune_draws = context.tune
        self._total_draws = (
            None if context.tune is None or context.draws is None else context.tune + context.draws
        )
        self._draw = 0
        self._sg_step = 0
        self._auxiliary = self._auxiliary_type(*([None] * len(self._auxiliary_type._fields)))
        self._last_position = None
        self._current_gradient = None
        self._logp = np.nan
        self._grad_norm = np.nan
        self._pending_end_of_tuning = False
        if self._device_random and os.getpid() != self._process:
            raise RuntimeError(
                f"{type(self).__name__} runs on PyTensor's JAX backend, and pm.sample forked "
                "this worker process from one where JAX had started: JAX deadlocks after a "
                'fork. Pass mp_ctx="spawn" (or "forkserver") to pm.sample, or cores=1.'
            )
        if self._device_random:
            # The kernels' own generators, from a child of the chain's (as the noise
            # monitor's): drawn from in the order the kernels are first used.
            self._device_seeds = np.random.default_rng(self.rng.spawn(1)[0])
            for kernel in self._device_kernels.values():
                kernel.reseed(int(self._device_seeds.integers(2**63)))
        self.divergence_monitor.start_chain()
        self.gradient_estimator.start_chain()
        self.adapter.start_chain(self._tune_draws)
        if self.adapt_step_size:
            self.step_size = as_schedule(AUTO_INITIAL_STEP_SIZE)
        if self.adapt_steps_per_draw:
            self.steps_per_draw = self._min_steps_per_draw
        self._refresh_parameters()

    def __getstate__(self):
        # pm.sample pickles the step for its worker processes: note its arguments first.
        self.chain_start.read_sample_arguments()
        state = self.__dict__.copy()
        # JAX functions do not survive pickling; a worker compiles its own when needed.
        state["_device_kernels"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._process = os.getpid()

    @property
    def sampling_state(self):
        return BlockedStep.sampling_state.fget(self)

    @sampling_state.setter
    def sampling_state(self, state) -> None:
        BlockedStep.sampling_state.fset(self, state)
        self._factor_covariance = None
        self._refresh_parameters()

    def set_rng(self, rng) -> None:
        """PyMC 5 hook at each chain's start: reset the per-chain state."""
        self._start_chain(rng)

    def setup_chain(self, rng, tune: int, draws: int) -> None:
        """PyMC 6 hook at each chain's start: reset the per-chain state."""
        self._start_chain(rng, tune, draws)

    def _begin(self, position: np.ndarray) -> np.ndarray:
        """A chain's first draw: its start, the gradient there, its auxiliary state."""
        near = self.guess is not None and self.guess.position is not None
        position = self.chain_start.first_position(
            position,
            self.rng,
            self._chain,
            centre=self.guess.position if near else None,
            factor=self.adapter.preconditioner.factor if near else None,
        )
        self._last_position = position
        self._auxiliary = self._initial_auxiliary(position)
        self._set_start_gradient(position)
        if self.adapt_step_size:
            self.adapter.begin(position)
            self._apply_adaptation()
        if self._pending_end_of_tuning:
            # tune=0: PyMC ended tuning before the chain had a position to measure at.
            self._pending_end_of_tuning = False
            self._end_tuning(position)
        return position

    def _set_start_gradient(self, position: np.ndarray) -> None:
        indices = {
            f"start_{j}": index[0] for j, index in enumerate(self._target.draw_indices(self.rng, 1))
        }
        result = self._start_function(position=np.asarray(position), **indices)
        self._current_gradient = np.asarray(result["gradient"])
        self._logp = float(result["logp"])
        self._grad_norm = float(np.linalg.norm(result["gradient"]))

    def _minibatch_part(self, position: np.ndarray, indices: list) -> np.ndarray:
        """The estimate's minibatch-dependent part at ``position`` on ``indices`` (one
        vector per stream), from the start function: the noise monitor's pairs."""
        result = self._start_function(
            position=position, **{f"start_{j}": index for j, index in enumerate(indices)}
        )
        # A copy: the next call may reuse the function's output storage.
        return np.array(result["minibatch_part"])

    # ---- the step ---------------------------------------------------------------------
    def step(self, point):
        mapped = DictToArrayBijection.map({var.name: point[var.name] for var in self.vars})
        position = mapped.data
        if self._draw == 0:
            position = self._begin(position)
        if self._parameters_tune != bool(self.tune):
            # Some parameters differ between tuning and sampling (pSGLD's adaptation).
            self._refresh_parameters()
        if self.tune and self._tune_draws is not None and self._draw == self._tune_draws // 2:
            # V depends on θ: estimate it from the second half of tuning, not the burn-in.
            self.noise_monitor.restart()

        steps = self.steps_per_draw
        step_sizes = evaluate_schedule(
            self.step_size, np.arange(self._sg_step, self._sg_step + steps)
        )
        randomness = {}
        if not self._device_random:
            randomness["noise"] = self.rng.standard_normal((steps, self._size), dtype=self._dtype)
            for j, index in enumerate(self._target.draw_indices(self.rng, steps)):
                randomness[f"minibatch_indices_{j}"] = index
        # A diverging chain overflows inside the kernel; the check below reports it.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            result = self._kernel_for(steps)(
                position=position,
                gradient=self._current_gradient,
                **self._auxiliary._asdict(),
                step_sizes=step_sizes.astype(self._dtype),
                **randomness,
            )
        new_position, new_gradient = result["position"], result["gradient"]
        new_auxiliary = self._auxiliary_type(
            *(result[name] for name in self._auxiliary_type._fields)
        )
        logp, grad_norm = result["logp"], result["grad_norm"]
        kernel_stats = {name: float(result[f"stat_{name}"]) for name in self._kernel_stat_names}
        step_size = float(step_sizes[-1])
        diverged = self.divergence_monitor.non_finite(
            {"position": new_position, "gradient": new_gradient, **new_auxiliary._asdict()}, logp
        )
        if not diverged and self._preconditioning:
            diverged = self.divergence_monitor.too_far(
                self._whitened_distance(new_position - position)
            )
        if diverged:
            self.divergence_monitor.record(
                diverged,
                step_size=step_size,
                tune=bool(self.tune),
                chain=self._chain,
                draw=self._draw,
                sg_steps=(self._sg_step, self._sg_step + steps - 1),
                total_draws=self._total_draws,
            )
            # Back to the last finite state; auxiliary state (momentum) drawn afresh.
            new_position, new_gradient = position, self._current_gradient
            new_auxiliary = self._restart_auxiliary(self._auxiliary)
            logp, grad_norm = self._logp, self._grad_norm
            kernel_stats = dict.fromkeys(kernel_stats, np.nan)
        self._auxiliary = new_auxiliary
        self._current_gradient = new_gradient
        self._logp, self._grad_norm = float(logp), float(grad_norm)
        self._sg_step += steps
        self._draw += 1
        # Streamed data: fresh chunks in the buffer, read while the kernel ran.
        self._target.after_draw(steps)
        self._last_position = new_position
        if self.tune and self.adapter.after_tuning_draw(
            self._draw, new_position, bool(diverged), steps
        ):
            changed = not diverged and self.adapter.adapt_preconditioner
            self._apply_adaptation()
            if changed:
                # Momentum and thermostat live on the whitened scale, which just moved.
                self._auxiliary = self._restart_auxiliary(self._auxiliary)
        # Before a control-variate centre moves here: at the centre its noise is zero, but
        # the chain meets it a whole draw away from the centre.
        if self.noise_monitor.pair_due(self._draw) or (self._pairs_every_tuning_draw and self.tune):
            self.noise_monitor.add_pairs(new_position, 1)
            if not self.tune:
                self._warn_if_noisy(step_size)
        if self.gradient_estimator.after_draw(self._draw, new_position):
            # The estimator's inputs moved (a refreshed control-variate centre): the carried
            # gradient used the old ones, so take it afresh.
            self._refresh_parameters()
            self._set_start_gradient(np.asarray(new_position))
        stats = {
            "step_size": step_size,
            "minibatch_logp": float(logp),
            "grad_norm": float(grad_norm),
            "diverging": DIVERGING_DTYPE(bool(diverged)),
            "noise_ratio": self.noise_monitor.recorded_ratio(step_size, self._noise_state_key()),
            "tune": bool(self.tune),
            "n_steps": float(steps),
            **kernel_stats,
        }
        stats.update(self._draw_stats(stats["step_size"]))
        if "sampling_phase" in self.stats_dtypes_shapes:
            in_phase = self.step_size.in_sampling_phase(self._sg_step - 1)
            stats["sampling_phase"] = DIVERGING_DTYPE(in_phase)
        if self._draw == self._total_draws:
            self.divergence_monitor.warn_summary(
                step_size, chain=self._chain, total_draws=self._total_draws
            )
        new_point = DictToArrayBijection.rmap(
            RaveledVars(new_position, mapped.point_map_info), start_point=point
        )
        return new_point, [stats]

    @property
    def divergences(self) -> int:
        """Diverging draws of the current chain so far (tuning included)."""
        return self.divergence_monitor.count

    @property
    def map_result(self):
        """The MAP search behind ``control_variate`` (a
        :class:`~pymc_sgmcmc.gradients.MaximumAPosteriori`), or None."""
        return getattr(self.gradient_estimator, "map_result", None)

    @property
    def centre(self) -> dict | None:
        """The current chain's control-variate centre as a point (None without one)."""
        centre = getattr(self.gradient_estimator, "centre", None)
        return None if centre is None else self._point(centre)

    def _point(self, vector: np.ndarray) -> dict:
        return DictToArrayBijection.rmap(RaveledVars(np.array(vector), self._point_map_info))

    def _coordinate_name(self, index: int) -> str:
        """The raveled coordinate ``index`` as ``name[i, j]`` of its value variable."""
        offset = 0
        for name, shape, size, _ in self._point_map_info:
            if index < offset + size:
                position = np.unravel_index(index - offset, shape) if shape else ()
                inside = ", ".join(str(int(i)) for i in position)
                return f"{name}[{inside}]" if shape else name
            offset += size
        return str(index)

    # ---- the end of tuning ------------------------------------------------------------
    def _chain_number(self) -> int:
        """The chain's number in ``pm.sample``: from its sampling loop, or else (should
        PyMC's loop not say) its generator's place among the run's."""
        if self._chain is not None:
            return self._chain
        key = spawn_key(self.rng)
        return int(key[-1]) if key else 0

    def _next_step_size(self) -> float:
        return float(evaluate_schedule(self.step_size, np.array([self._sg_step]))[0])

    def stop_tuning(self) -> None:
        """PyMC's hook when tuning ends: measure the gradient noise where sampling begins.

        The noise estimate restarts for the sampling phase from
        ``END_OF_TUNING_NOISE_PAIRS`` gradient pairs at the chain's last tuning position,
        and a :class:`~pymc_sgmcmc.MinibatchNoiseWarning` is raised at once if it is too
        large. With no tuning draws (``tune=0``, where PyMC calls this before the first
        draw) it happens at the chain's start, once the start is known.
        """
        super().stop_tuning()
        if self._draw == 0:
            self._pending_end_of_tuning = True
            message = self._without_tuning_warning()
            if message is not None:
                warn(f"{type(self).__name__} with tune=0: {message}")
            return
        self._end_tuning(self._last_position)

    def _end_tuning(self, position: np.ndarray) -> None:
        if self.adapt_steps_per_draw and self.steps_per_draw >= AUTO_MAX_STEPS:
            chain = "" if self._chain is None else f" chain {self._chain}"
            warn(
                f"{type(self).__name__}{chain}: the adapted step size "
                f"{self._next_step_size():.3g} (on the whitened scale) is so small that "
                f"{AUTO_MAX_STEPS} SG steps per draw, the most steps_per_draw='auto' takes, "
                "cover less than the posterior's relaxation time: successive draws are "
                "strongly correlated and the run may not have explored the posterior (check "
                "az.ess and az.rhat). Where the noise_ratio stat is near 0.1 the minibatch noise "
                "sets the step: raise the batch_size of pm.Minibatch; otherwise the "
                "curvature does: reparametrise a posterior with a strongly curved ridge "
                "(e.g. a hierarchical model in its centred form)."
            )
        self._end_of_tuning(position)
        settings = self._chain_adapted_settings()
        if settings:
            self._adapted_record.add(self._run, self._chain_number(), settings)
        self.noise_monitor.restart()
        if self.noise_estimate_interval is not None:
            self.noise_monitor.add_pairs(position, END_OF_TUNING_NOISE_PAIRS)
            self._warn_if_noisy(self._next_step_size())

    def _warn_if_noisy(self, step_size: float) -> None:
        self.noise_monitor.warn_if_noisy(
            step_size, sampler=type(self).__name__, chain=self._chain, advice=self._noise_advice
        )

    @staticmethod
    def competence(var, has_grad):
        # Never PREFERRED: PyMC must not pick a minibatch sampler on its own.
        if has_grad and var.dtype not in discrete_dtypes:
            return Competence.COMPATIBLE
        return Competence.INCOMPATIBLE


def _warn_streamed_without_control_variate(target) -> None:
    """Plain minibatch gradients from a buffer of chunks follow the buffer's posterior."""
    for stream in target.streams:
        buffer = stream.buffer
        if buffer is None:
            continue
        rows = buffer.slots * float(buffer.chunk_sizes.mean())
        widening = np.sqrt(1 + stream.data_size / rows)
        warn(
            f"The minibatches come from a buffer of {buffer.slots} chunks (about {rows:.0f} "
            f"rows) of the {stream.data_size} rows of a chunked store, and this sampler "
            "uses plain minibatch gradients. Each gradient is unbiased, but the buffer "
            "changes more slowly than the chain moves, so the chain follows the posterior "
            "of the rows in the buffer, which wanders about the full posterior: expect "
            f"draws up to {widening:.2g} times too wide (sqrt(1 + N / buffer rows)). Use "
            "control variates (control_variate=True, which the defaults turn on where the "
            "MAP search converges), whose noise from the buffer does not grow with N."
        )
