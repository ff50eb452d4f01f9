"""The shared PyMC adapter of the stochastic-gradient samplers.

A step method here holds no algorithm of its own: it checks the user's configuration,
builds the minibatch log posterior (:mod:`pymc_sgmcmc.gradients`), compiles
``steps_per_draw`` applications of an update rule (:mod:`pymc_sgmcmc.dynamics`) into one
PyTensor function, and on each ``pm.sample`` draw feeds it step sizes from the schedule,
standard normal noise and minibatch indices from the chain's own generator.

It also measures the minibatch gradient noise: every ``noise_estimate_interval`` draws it
takes two independent minibatch gradients at the chain's position, and records how the
noise they carry compares with the noise the sampler injects (the ``noise_ratio`` stat).

A draw whose state or log density turns non-finite is a divergence: it is recorded with
``diverging = 1`` and the chain goes on from its last finite state (or, with
``on_divergence="raise"``, stops with :class:`SamplerDivergenceError`).
"""

from __future__ import annotations

import numbers

import numpy as np
import pytensor
import pytensor.tensor as pt

from pymc.blocking import DictToArrayBijection, RaveledVars
from pymc.exceptions import SamplingError
from pymc.model import modelcontext
from pymc.step_methods.compound import BlockedStep, Competence, StepMethodState
from pymc.step_methods.state import dataclass_state
from pymc.util import RandomGeneratorState, get_random_generator, get_value_vars_from_user_vars
from pytensor.tensor.type import discrete_dtypes

from pymc_sgmcmc._compat import (
    DIVERGING_DTYPE,
    compile_function,
    sample_arguments,
    sampling_chain_context,
)
from pymc_sgmcmc._warnings import MinibatchNoiseWarning, SamplerDivergenceWarning, warn
from pymc_sgmcmc.gradients import ControlVariate, MinibatchLogPosterior, control_variate_gradient
from pymc_sgmcmc.schedules import as_schedule, evaluate_schedule

__all__ = [
    "MinibatchNoiseWarning",
    "NOISE_RATIO_WARNING_THRESHOLD",
    "SamplerDivergenceError",
    "StochasticGradientState",
    "StochasticGradientStep",
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


#: Jittered starts tried before a chain whose jittered start has a non-finite log density
#: is refused (as PyMC's ``jitter_max_retries``).
JITTER_ATTEMPTS = 10

ON_DIVERGENCE = ("warn", "raise")


class SamplerDivergenceError(SamplingError):
    """A chain diverged with ``on_divergence="raise"``; the chain was stopped."""


class InitialEvaluationError(SamplingError):
    """The log density is not finite where a chain starts."""


def check_non_negative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"`{name}` must be a finite real number, got {value!r}.")
    if value < 0:
        raise ValueError(f"`{name}` must be non-negative, got {value!r}.")
    return float(value)


def check_positive_array(name: str, value, size: int) -> np.ndarray:
    """A positive, finite scalar or per-coordinate vector over the ``size`` raveled parameters."""
    array = np.asarray(value, dtype=float)
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] != size):
        raise ValueError(
            f"`{name}` must be a scalar or a vector with one entry per raveled parameter "
            f"({size}), got shape {array.shape}."
        )
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"`{name}` must be positive and finite, got {value!r}.")
    return array


def check_noise_estimate_interval(value) -> int | None:
    """``None`` (or 0) turns the noise estimate off; otherwise a positive number of draws."""
    if value is None or (isinstance(value, numbers.Integral) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(
            "`noise_estimate_interval` must be a positive integer (draws between gradient-noise "
            f"estimates), or 0 or None to turn the estimate off; got {value!r}."
        )
    return int(value)


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
    """Per-chain state: with ``step.sampling_state`` it can be saved and restored exactly."""

    tune: bool
    _draw: int
    _sg_step: int
    _chain: int | None
    _tune_draws: int | None
    _total_draws: int | None
    _auxiliary: list
    # The chain's current position (after its last finite draw), the minibatch gradient
    # there (the next step's, computed with the draw) and the log density on its batch.
    _last_position: np.ndarray | None
    _current_gradient: np.ndarray | None
    _logp: float
    _grad_norm: float
    _divergences: int
    _tuning_divergences: int
    _pending_end_of_tuning: bool
    # The gradient-noise estimate: its own generator, so that measuring the noise never
    # changes the chain's draws; the latest estimate (per coordinate) and the sum of the
    # per-coordinate estimates of the current phase (late tuning, then sampling).
    _noise_rng: RandomGeneratorState
    _latest_gradient_variance: np.ndarray
    _gradient_variance_sum: np.ndarray
    _gradient_variance_count: int
    _noise_warned: bool
    # The control-variate centre and its full-data gradient (None without control
    # variates): per chain, since refreshing moves it to the chain's position.
    _centre: np.ndarray | None
    _centre_gradient: np.ndarray | None


class StochasticGradientStep(BlockedStep):
    """Base class: minibatch gradients, schedules and the compiled multi-step kernel.

    Subclasses define the update rule through ``_transition``, its numeric
    ``_parameters``, any auxiliary state (``_auxiliary_names``, ``_initial_auxiliary``),
    extra stats, and how minibatch noise compares with their injected noise
    (``_noise_ratio``, ``_excess_temperature``).
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
    }
    _auxiliary_names: tuple[str, ...] = ()
    _state_class = StochasticGradientState
    _divergence_advice = "Lower step_size (e.g. by a factor of 10)"
    #: What a divergence does to the auxiliary state, for the divergence warning.
    _restart_note = ""
    _noise_advice = "Lower step_size, or raise the batch_size of pm.Minibatch"

    def __init__(
        self,
        vars=None,
        *,
        step_size,
        temperature: float = 1.0,
        steps_per_draw: int = 1,
        initial_jitter: float = 1.0,
        noise_estimate_interval: int | None = 20,
        control_variate=None,
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
        if on_divergence not in ON_DIVERGENCE:
            raise ValueError(
                f'`on_divergence` must be "warn" (mark the draw diverging and go on from '
                f'the last finite state) or "raise" (stop the chain), got {on_divergence!r}.'
            )
        self.on_divergence = on_divergence
        model = modelcontext(model)
        value_vars = (
            model.value_vars if vars is None else get_value_vars_from_user_vars(vars, model)
        )
        check_covers_model(type(self).__name__, model, value_vars)
        self.vars = value_vars
        self.blocked = True

        self.step_size = as_schedule(step_size)
        self.temperature = check_non_negative("temperature", temperature)
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
        self._dtype = self._target.dtype
        self._size = self._target.size
        initial_point = model.initial_point()
        mapped = DictToArrayBijection.map({var.name: initial_point[var.name] for var in self.vars})
        self._default_start = mapped.data
        self._point_map_info = mapped.point_map_info
        self._value_names = {var.name: var.name for var in self.vars}
        self._value_names.update({model.values_to_rvs[var].name: var.name for var in self.vars})
        self._given_start = None
        self._warned_log_likelihood = False
        self._compile_kwargs = compile_kwargs or {}
        self.control_variate = ControlVariate.from_argument(control_variate)
        self._control_variate = None
        if self.control_variate is not None:
            if not self._target.streams:
                raise ValueError(
                    "control_variate needs a model fed through pm.Minibatch: this model's "
                    "gradients are exact already."
                )
            self._control_variate = self.control_variate.bind(
                self._target, self.vars, self._default_start, self._compile_kwargs
            )
            self._centre = self._control_variate.centre.copy()
            self._centre_gradient = self._control_variate.centre_gradient.copy()
        self._sampling_phase_stat()
        self._configure()
        self._kernel = self._compile_kernel(self._compile_kwargs)
        self._start_function = self._compile_start_function(self._compile_kwargs)
        # Compiled on first use: many runs never estimate the gradient noise.
        self._gradient_pair_function = None
        self._start_chain(rng)

    # ---- hooks for the samplers -------------------------------------------------------
    def _configure(self) -> None:
        """Check and store sampler-specific parameters (needs ``self._size``)."""

    def _parameters(self) -> dict[str, np.ndarray]:
        """Numeric parameters of the update rule, passed to the kernel at every call.

        They are inputs rather than constants of the compiled graph, so one compiled
        kernel (and Numba's on-disk cache of it) serves every value.
        """
        values = {"temperature": np.asarray(self.temperature, dtype=self._dtype)}
        if self._control_variate is not None:
            values["centre"] = self._centre.astype(self._dtype)
            values["centre_gradient"] = self._centre_gradient.astype(self._dtype)
        return values

    def _refresh_parameters(self) -> None:
        self._parameters_tune = bool(self.tune)
        self._parameter_values = [
            np.asarray(value, dtype=self._dtype) for value in self._parameters().values()
        ]
        # The parameters enter the noise ratio: recompute it at the next draw.
        self._noise_ratio_cache = None

    def _transition(self, position, auxiliary, gradient, step_size, noise, parameters):
        """The update rule as a graph; ``parameters`` maps names to symbolic inputs."""
        raise NotImplementedError

    def _initial_auxiliary(self, position: np.ndarray) -> list[np.ndarray]:
        return []

    def _restart_auxiliary(self, auxiliary: list[np.ndarray]) -> list[np.ndarray]:
        """Auxiliary state to go on with after a divergence, from the last finite one.

        By default it is drawn afresh as at a chain's start (momentum from ``N(0, TM)``).
        """
        return self._initial_auxiliary(self._last_position)

    def _extra_stats(self, position, auxiliary, parameters) -> dict:
        """Symbolic scalar stats of the final state of a draw."""
        return {}

    def _draw_stats(self, step_size: float) -> dict:
        """Sampler-specific stats computed outside the kernel."""
        return {}

    def _noise_ratio(self, step_size: float, gradient_variance: np.ndarray) -> float:
        """Variance the minibatch noise adds per step over the variance injected per step,
        summed over coordinates, given ``V`` per coordinate."""
        raise NotImplementedError

    def _excess_temperature(self, step_size: float, gradient_variance: np.ndarray) -> np.ndarray:
        """``(T_eff − T) / T`` per coordinate: how much the minibatch noise heats it; what
        the :class:`MinibatchNoiseWarning` is about."""
        raise NotImplementedError

    def _relative_excess_temperature(
        self, step_size: float, gradient_variance: np.ndarray
    ) -> float:
        """``(T_eff − T) / T`` over all coordinates. Where nothing corrects for minibatch
        noise it is the noise ratio itself."""
        return self._noise_ratio(step_size, gradient_variance)

    def _noise_ratio_state(self):
        """Any other state the noise ratio depends on (pSGLD's preconditioner)."""
        return None

    def _noise_pair_due(self) -> bool:
        """Whether to take a gradient pair after the current draw (``self._draw`` of them done)."""
        interval = self.noise_estimate_interval
        return interval is not None and (self._draw - 1) % interval == 0

    def _finish_tuning_noise_estimate(self, position: np.ndarray) -> None:
        """Called when tuning ends, before the noise estimate restarts for the sampling phase
        (SGHMC freezes its ``gradient_noise="estimate"`` here)."""

    def _without_tuning_warning(self) -> str | None:
        """What a chain without tuning draws misses (``tune=0``), if anything."""
        return None

    def _sampling_phase_stat(self) -> None:
        """Record ``sampling_phase`` when the schedule has phases (cyclical schedules)."""
        stats = dict(type(self).stats_dtypes_shapes)
        if hasattr(self.step_size, "in_sampling_phase"):
            stats["sampling_phase"] = (DIVERGING_DTYPE, [])
        # PyMC copies both from the class when the step is created (BlockedStep.__new__).
        self.stats_dtypes_shapes = stats
        self.stats_dtypes = [{name: dtype for name, (dtype, _) in stats.items()}]

    # ---- compilation ----------------------------------------------------------------
    def _gradient(self, position, indices, parameters, minibatch_gradient=None):
        """The gradient estimate the update rule sees: plain minibatch or control variate."""
        target = self._target
        if self._control_variate is not None:
            return control_variate_gradient(
                target,
                position,
                indices,
                parameters["centre"],
                parameters["centre_gradient"],
                minibatch_gradient,
            )
        if minibatch_gradient is not None:
            return minibatch_gradient
        return target.gradient_at(position, indices)

    def _symbolic_parameters(self) -> dict:
        return {
            name: pt.tensor(name, dtype=self._dtype, shape=(None,) * np.ndim(value))
            for name, value in self._parameters().items()
        }

    def _compile_kernel(self, compile_kwargs: dict):
        """``steps_per_draw`` SG steps in one function.

        Each step moves with the gradient at its starting position, then takes the
        gradient at the new position on a fresh minibatch for the next step; the last one
        is carried to the next draw, so every step costs one gradient and the draw's log
        density, at the position it records, comes with its last gradient.
        """
        target = self._target
        steps = self.steps_per_draw
        n_streams = len(target.streams)
        n_auxiliary = len(self._auxiliary_names)

        position = pt.vector("position", dtype=self._dtype)
        gradient = pt.vector("gradient", dtype=self._dtype)
        auxiliary = [pt.vector(name, dtype=self._dtype) for name in self._auxiliary_names]
        step_sizes = pt.vector("step_sizes", dtype=self._dtype)
        noise = pt.matrix("noise", dtype=self._dtype)
        indices = [
            pt.matrix(f"minibatch_indices_{j}", dtype=stream.index.dtype)
            for j, stream in enumerate(target.streams)
        ]
        parameters = self._symbolic_parameters()
        extra = list(parameters.values())

        def advance(step_size, noise_k, *rest):
            index_k = rest[:n_streams]
            position_k, gradient_k, *auxiliary_k = rest[n_streams : n_streams + 2 + n_auxiliary]
            inner_parameters = dict(
                zip(parameters, rest[n_streams + 2 + n_auxiliary :], strict=True)
            )
            new_position, new_auxiliary = self._transition(
                position_k, auxiliary_k, gradient_k, step_size, noise_k, inner_parameters
            )
            new_gradient = self._gradient(new_position, index_k, inner_parameters)
            return [new_position, new_gradient, *new_auxiliary]

        state = [position, gradient, *auxiliary]
        if steps > 1:
            sequences = pytensor.scan(
                advance,
                sequences=[step_sizes[:-1], noise[:-1], *[index[:-1] for index in indices]],
                outputs_info=state,
                non_sequences=extra,
                n_steps=steps - 1,
                return_list=True,
                return_updates=False,
            )
            state = [sequence[-1] for sequence in sequences]
        last_position, last_gradient, *last_auxiliary = state
        final_position, final_auxiliary = self._transition(
            last_position, last_auxiliary, last_gradient, step_sizes[-1], noise[-1], parameters
        )
        last_indices = [index[-1] for index in indices]
        logp, minibatch_gradient = target.at(final_position, last_indices)
        final_gradient = self._gradient(
            final_position, last_indices, parameters, minibatch_gradient
        )
        outputs = [final_position, final_gradient, *final_auxiliary]
        stats = [logp, pt.linalg.norm(final_gradient)]
        extra_stats = self._extra_stats(final_position, final_auxiliary, parameters)
        self._stat_names = list(extra_stats)
        return compile_function(
            [position, gradient, *auxiliary, step_sizes, noise, *indices, *extra],
            [*outputs, *stats, *extra_stats.values()],
            trust_input=True,
            on_unused_input="ignore",
            **compile_kwargs,
        )

    def _compile_start_function(self, compile_kwargs: dict):
        """``(log π̂, gradient estimate)`` at a position on one minibatch: a chain's first."""
        target = self._target
        position = pt.vector("position", dtype=self._dtype)
        indices = [stream.index.type(f"start_{j}") for j, stream in enumerate(target.streams)]
        parameters = self._symbolic_parameters()
        logp, minibatch_gradient = target.at(position, indices)
        gradient = self._gradient(position, indices, parameters, minibatch_gradient)
        return compile_function(
            [position, *indices, *parameters.values()],
            [logp, gradient],
            on_unused_input="ignore",
            **compile_kwargs,
        )

    # ---- per-chain state --------------------------------------------------------------
    def _start_chain(self, rng, tune: int | None = None, draws: int | None = None) -> None:
        self.tune = True
        self.rng = get_random_generator(rng, copy=False)
        # A child of the chain's generator: the same seed gives the same noise estimates,
        # and drawing their minibatches leaves the chain's own stream (its draws) untouched.
        self._noise_rng = self.rng.spawn(1)[0]
        context = sampling_chain_context(tune, draws)
        self._read_sample_arguments()
        self._chain = context.chain
        self._tune_draws = context.tune
        self._total_draws = (
            None if context.tune is None or context.draws is None else context.tune + context.draws
        )
        self._draw = 0
        self._sg_step = 0
        self._auxiliary: list[np.ndarray] = []
        self._last_position = None
        self._current_gradient = None
        self._logp = np.nan
        self._grad_norm = np.nan
        self._divergences = 0
        self._tuning_divergences = 0
        self._pending_end_of_tuning = False
        self._latest_gradient_variance = np.full(self._size, np.nan)
        self._restart_noise_estimate()
        self._noise_warned = False
        if self._control_variate is not None:
            self._centre = self._control_variate.centre.copy()
            self._centre_gradient = self._control_variate.centre_gradient.copy()
        else:
            self._centre = self._centre_gradient = None
        self._refresh_parameters()

    def _read_sample_arguments(self) -> None:
        """Note which value variables ``pm.sample(initvals=...)`` gave, per chain, and warn
        about a log-likelihood group that would be computed on minibatches."""
        arguments = sample_arguments()
        if arguments is None:
            # In a worker process: what was noted when pm.sample pickled the step.
            return
        initvals = arguments["initvals"]
        per_chain = initvals if isinstance(initvals, list | tuple) else [initvals]
        self._given_start = [
            {
                self._value_names[getattr(key, "name", key)]
                for key in (chain_values or {})
                if getattr(key, "name", key) in self._value_names
            }
            for chain_values in per_chain
        ]
        idata_kwargs = arguments["idata_kwargs"] or {}
        if (
            idata_kwargs.get("log_likelihood")
            and self._target.streams
            and not self._warned_log_likelihood
        ):
            self._warned_log_likelihood = True
            warn(
                "pm.sample(idata_kwargs={'log_likelihood': True}) on a model fed through "
                "pm.Minibatch stores the log-likelihood of one random minibatch, scaled by "
                "total_size, not of each data row: az.loo on it is wrong. Use "
                "pymc_sgmcmc.loo(idata, model), or pm.compute_log_likelihood(idata, "
                "model=pymc_sgmcmc.full_data_model(model))."
            )

    def __getstate__(self):
        # pm.sample pickles the step for its worker processes: note its arguments first.
        self._read_sample_arguments()
        return self.__dict__.copy()

    @property
    def sampling_state(self):
        return BlockedStep.sampling_state.fget(self)

    @sampling_state.setter
    def sampling_state(self, state) -> None:
        BlockedStep.sampling_state.fset(self, state)
        self._refresh_parameters()

    def set_rng(self, rng) -> None:
        """PyMC 5 hook at each chain's start: reset the per-chain state."""
        self._start_chain(rng)

    def setup_chain(self, rng, tune: int, draws: int) -> None:
        """PyMC 6 hook at each chain's start: reset the per-chain state."""
        self._start_chain(rng, tune, draws)

    def _first_position(self, position: np.ndarray) -> np.ndarray:
        """Where the chain starts: the given point, checked, then jittered.

        ``pm.sample`` starts every chain at the model's initial point for a custom step;
        chains are dispersed as PyMC does for NUTS, unless the user chose the start
        (initvals). Like PyMC, a jittered start with a non-finite log density is drawn
        again, ``JITTER_ATTEMPTS`` times at most.
        """
        self._target.check_data()
        if self._control_variate is not None:
            self._check_control_variate_data()
        position = position.astype(self._dtype)
        bad = self._target.non_finite_terms(position)
        if bad:
            raise self._initial_evaluation_error(position, bad, jittered=False)
        free = self._jittered_coordinates(position)
        if self.initial_jitter == 0 or not free.any():
            return position
        for _ in range(JITTER_ATTEMPTS):
            jitter = self.rng.uniform(-self.initial_jitter, self.initial_jitter, position.shape)
            jittered = position + np.where(free, jitter, 0.0).astype(self._dtype)
            bad = self._target.non_finite_terms(jittered)
            if not bad:
                return jittered
        raise self._initial_evaluation_error(jittered, bad, jittered=True)

    def _check_control_variate_data(self) -> None:
        built = [stream.data_size for stream in self._control_variate.full_data.streams]
        now = [stream.data_size for stream in self._target.streams]
        if built != now:
            raise ValueError(
                f"The data changed size since this {type(self).__name__} step was built "
                f"({built} rows, now {now}; pm.set_data?), but its control variate's "
                "full-data gradient was computed on the old data. Build the step again "
                "after pm.set_data."
            )

    def _jittered_coordinates(self, position: np.ndarray) -> np.ndarray:
        """Which coordinates to jitter: those of variables whose start the user did not give.

        Outside ``pm.sample``, where what the user gave is unknown, a start other than the
        model's initial point counts as given.
        """
        if self._given_start is None:
            default = np.array_equal(position, self._default_start.astype(self._dtype))
            return np.full(self._size, default)
        chain = self._chain or 0
        given = self._given_start[chain % len(self._given_start)]
        return np.concatenate(
            [np.full(size, name not in given) for name, _, size, _ in self._point_map_info]
        )

    def _initial_evaluation_error(
        self, position: np.ndarray, bad: dict, *, jittered: bool
    ) -> InitialEvaluationError:
        """The refusal of a start where some term of the log density is not finite."""
        point = self._point(position)
        chain = "" if self._chain is None else f" of chain {self._chain}"
        where = (
            f"at {JITTER_ATTEMPTS} starting points jittered by U(-{self.initial_jitter:g}, "
            f"{self.initial_jitter:g}) around the initial point (the last is shown)"
            if jittered
            else "at the starting point"
        )
        terms = "\n".join(f"  {name}: {value}" for name, value in bad.items())
        values = "\n".join(f"  {name}: {np.round(value, 4)}" for name, value in point.items())
        advice = (
            "Lower initial_jitter, or give initvals inside the support."
            if jittered
            else "Give initvals inside the support (pm.sample(initvals=...)), or check the "
            "data against the likelihood's support."
        )
        return InitialEvaluationError(
            f"Initial evaluation of the model{chain} failed: the log density is not finite "
            f"{where}, on all data rows.\nLog density of the terms that are not finite:\n"
            f"{terms}\nStarting values (unconstrained):\n{values}\n{advice}"
        )

    def _begin(self, position: np.ndarray) -> np.ndarray:
        """A chain's first draw: its start, the gradient there, its auxiliary state."""
        position = self._first_position(position)
        self._last_position = position
        self._auxiliary = self._initial_auxiliary(position)
        self._set_start_gradient(position)
        if self._pending_end_of_tuning:
            # tune=0: PyMC ended tuning before the chain had a position to measure at.
            self._pending_end_of_tuning = False
            self._end_tuning(position)
        return position

    def _set_start_gradient(self, position: np.ndarray) -> None:
        indices = [index[0] for index in self._target.draw_indices(self.rng, 1)]
        logp, gradient = self._start_function(position, *indices, *self._parameter_values)
        self._current_gradient = np.asarray(gradient)
        self._logp = float(logp)
        self._grad_norm = float(np.linalg.norm(gradient))

    def _reconfigure(self, *, step_size) -> None:
        """Use another step size from the next chain on, keeping the compiled kernel.

        For :func:`pymc_sgmcmc.select_step_size`, which runs one step method over many
        candidate step sizes: the schedule is evaluated outside the kernel.
        """
        self.step_size = as_schedule(step_size)
        self._sampling_phase_stat()
        self._configure()
        self._refresh_parameters()

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
            self._restart_noise_estimate()

        steps = self.steps_per_draw
        step_sizes = evaluate_schedule(
            self.step_size, np.arange(self._sg_step, self._sg_step + steps)
        )
        noise = self.rng.standard_normal((steps, self._size), dtype=self._dtype)
        indices = self._target.draw_indices(self.rng, steps)
        # A diverging chain overflows inside the kernel; the check below reports it.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            new_position, new_gradient, *outputs = self._kernel(
                position,
                self._current_gradient,
                *self._auxiliary,
                step_sizes.astype(self._dtype),
                noise,
                *indices,
                *self._parameter_values,
            )
        n_auxiliary = len(self._auxiliary_names)
        new_auxiliary = outputs[:n_auxiliary]
        logp, grad_norm, *extra_stats = outputs[n_auxiliary:]
        step_size = float(step_sizes[-1])
        diverged = self._diverged(new_position, new_gradient, new_auxiliary, logp)
        if diverged:
            self._on_divergence(diverged, step_size)
            # Back to the last finite state; auxiliary state (momentum) drawn afresh.
            new_position, new_gradient = position, self._current_gradient
            new_auxiliary = self._restart_auxiliary(self._auxiliary)
            logp, grad_norm = self._logp, self._grad_norm
            extra_stats = [np.nan] * len(extra_stats)
        self._auxiliary = new_auxiliary
        self._current_gradient = new_gradient
        self._logp, self._grad_norm = float(logp), float(grad_norm)
        self._sg_step += steps
        self._draw += 1
        self._last_position = new_position
        self._refresh_centre_if_due(new_position)
        if self._noise_pair_due():
            self._add_gradient_pairs(new_position, 1)
            if not self.tune:
                self._warn_if_noisy(step_size)
        stats = {
            "step_size": step_size,
            "minibatch_logp": float(logp),
            "grad_norm": float(grad_norm),
            "diverging": DIVERGING_DTYPE(bool(diverged)),
            "noise_ratio": self._recorded_noise_ratio(step_size),
            "tune": bool(self.tune),
        }
        stats.update(zip(self._stat_names, map(float, extra_stats), strict=True))
        stats.update(self._draw_stats(stats["step_size"]))
        if "sampling_phase" in self.stats_dtypes_shapes:
            in_phase = self.step_size.in_sampling_phase(self._sg_step - 1)
            stats["sampling_phase"] = DIVERGING_DTYPE(in_phase)
        if self._draw == self._total_draws:
            self._warn_divergences(step_size)
        new_point = DictToArrayBijection.rmap(
            RaveledVars(new_position, mapped.point_map_info), start_point=point
        )
        return new_point, [stats]

    def _diverged(self, position, gradient, auxiliary, logp) -> list[str]:
        """What turned non-finite in a draw (empty if nothing did)."""
        names = [
            ("position", position),
            ("gradient", gradient),
            *zip(self._auxiliary_names, auxiliary, strict=True),
        ]
        bad = [name for name, value in names if not np.all(np.isfinite(value))]
        if not np.isfinite(logp):
            # -inf: the chain stepped out of the support (or the density underflowed).
            bad.append(f"log density ({float(logp)})")
        return bad

    def _on_divergence(self, bad: list[str], step_size: float) -> None:
        self._divergences += 1
        if self.tune:
            self._tuning_divergences += 1
        if self.on_divergence == "warn":
            if self._total_draws is None and self._divergences == 1:
                # Outside pm.sample the chain's end is unknown: say it at the first one.
                self._warn_divergences(step_size)
            return
        chain = "" if self._chain is None else f" in chain {self._chain}"
        phase = "tuning " if self.tune else ""
        first, last = self._sg_step, self._sg_step + self.steps_per_draw - 1
        steps = f"SG step {first}" if first == last else f"SG steps {first}-{last}"
        raise SamplerDivergenceError(
            f"{type(self).__name__} diverged{chain} at {phase}draw {self._draw}: the "
            f"{' and '.join(bad)} became non-finite within {steps} at "
            f"step_size={step_size:.4g}. {self._divergence_advice}. The chain was stopped "
            '(on_divergence="raise") before any non-finite value reached the trace.'
        )

    def _warn_divergences(self, step_size: float) -> None:
        if self._divergences == 0:
            return
        chain = "" if self._chain is None else f" chain {self._chain}"
        total = "" if self._total_draws is None else f" of {self._total_draws}"
        tuning = f" ({self._tuning_divergences} while tuning)" if self._tuning_divergences else ""
        warn(
            f"{type(self).__name__}{chain}: {self._divergences}{total} draws diverged"
            f"{tuning} at step_size={step_size:.4g} (the last draw's). Each went back to "
            f"the chain's last finite state{self._restart_note} and is marked diverging = 1 "
            "in sample_stats. Divergences mean that the "
            "step is too large for parts of the posterior, which the draws then under-"
            f"represent. {self._divergence_advice}.",
            SamplerDivergenceWarning,
        )

    @property
    def divergences(self) -> int:
        """Diverging draws of the current chain so far (tuning included)."""
        return self._divergences

    def _refresh_centre_if_due(self, position: np.ndarray) -> None:
        """SVRG-style: move the control-variate centre to the chain's position."""
        bound = self._control_variate
        if bound is None or bound.refresh_interval is None:
            return
        if self._draw % bound.refresh_interval == 0:
            self._centre = np.array(position, dtype=float)
            self._centre_gradient = bound.full_data.gradient(self._centre)
            self._refresh_parameters()
            # The carried gradient used the old centre; take it afresh with the new one.
            self._set_start_gradient(np.asarray(position))

    @property
    def map_result(self):
        """The MAP search behind ``control_variate`` (a
        :class:`~pymc_sgmcmc.gradients.MaximumAPosteriori`), or None."""
        bound = self._control_variate
        return None if bound is None else bound.map_result

    @property
    def centre(self) -> dict | None:
        """The current chain's control-variate centre as a point (None without one)."""
        if self._centre is None:
            return None
        return self._point(self._centre)

    def _point(self, vector: np.ndarray) -> dict:
        return DictToArrayBijection.rmap(RaveledVars(np.array(vector), self._point_map_info))

    # ---- minibatch gradient noise ------------------------------------------------------
    def _compile_gradient_pair(self):
        """``½ (g₁ − g₂)²`` per coordinate, for two gradient estimates at one position."""
        target = self._target
        first = [stream.index.type(f"first_{j}") for j, stream in enumerate(target.streams)]
        second = [stream.index.type(f"second_{j}") for j, stream in enumerate(target.streams)]
        centre = pt.vector("centre", dtype=self._dtype)
        centre_gradient = pt.zeros_like(centre)
        parameters = {"centre": centre, "centre_gradient": centre_gradient}
        # The full-data gradient at the centre is common to both and cancels.
        gradient_first = self._gradient(target.position, first, parameters)
        gradient_second = self._gradient(target.position, second, parameters)
        return compile_function(
            [target.position, *first, *second, centre],
            0.5 * (gradient_first - gradient_second) ** 2,
            on_unused_input="ignore",
            **self._compile_kwargs,
        )

    def _add_gradient_pairs(self, position: np.ndarray, pairs: int) -> None:
        """Estimate ``V`` at ``position`` from ``pairs`` pairs of independent minibatches.

        For two independent minibatch gradients ``g₁, g₂`` at the same ``θ``,
        ``E[½ (g₁ − g₂)²] = V(θ)`` per coordinate. The estimate becomes the latest one
        (recorded in ``noise_ratio`` until the next) and joins the running sum of the phase.
        """
        if not self._target.streams:
            # Exact gradients: no minibatch noise at all, nothing to compile or draw.
            variance = np.zeros(self._size)
        else:
            if self._gradient_pair_function is None:
                self._gradient_pair_function = self._compile_gradient_pair()
            indices = self._target.draw_indices(self._noise_rng, 2 * pairs)
            centre = position if self._centre is None else self._centre
            centre = np.asarray(centre, dtype=self._dtype)
            position = np.asarray(position, dtype=self._dtype)
            variance = np.zeros(self._size)
            for pair in range(pairs):
                first = [index[2 * pair] for index in indices]
                second = [index[2 * pair + 1] for index in indices]
                variance += self._gradient_pair_function(position, *first, *second, centre)
            variance /= pairs
        if not np.all(np.isfinite(variance)):
            # A pair at the edge of the support says nothing about the noise: skip it.
            return
        self._latest_gradient_variance = variance
        self._gradient_variance_sum += pairs * variance
        self._gradient_variance_count += pairs

    def _restart_noise_estimate(self) -> None:
        self._gradient_variance_sum = np.zeros(self._size)
        self._gradient_variance_count = 0

    def _recorded_noise_ratio(self, step_size: float) -> float:
        """The ``noise_ratio`` stat: nan when not estimated or when nothing is injected."""
        if self.noise_estimate_interval is None:
            return np.nan
        if not self._target.streams:
            return 0.0
        # It changes only with a new estimate or step size: most draws reuse it, keeping
        # the per-draw cost of the stat to a comparison.
        variance = self._latest_gradient_variance
        key = (step_size, variance.tobytes(), self._noise_ratio_state())
        if self._noise_ratio_cache is None or self._noise_ratio_cache[0] != key:
            ratio, _, _ = self._noise_measures(step_size, variance)
            # ArviZ summaries and plots handle nan, not inf.
            self._noise_ratio_cache = (key, ratio if np.isfinite(ratio) else np.nan)
        return self._noise_ratio_cache[1]

    def _noise_measures(
        self, step_size: float, gradient_variance
    ) -> tuple[float, float, np.ndarray]:
        """``(noise_ratio, relative excess temperature, its value per coordinate)``; inf or
        nan where ``T = 0``. ``gradient_variance`` is ``V`` per coordinate."""
        # NumPy scalars divide by zero to inf/nan, where Python floats raise.
        step_size = np.float64(step_size)
        gradient_variance = np.broadcast_to(np.asarray(gradient_variance, float), (self._size,))
        with np.errstate(divide="ignore", invalid="ignore"):
            return (
                float(self._noise_ratio(step_size, gradient_variance)),
                float(self._relative_excess_temperature(step_size, gradient_variance)),
                np.broadcast_to(
                    np.asarray(self._excess_temperature(step_size, gradient_variance), float),
                    (self._size,),
                ),
            )

    def _next_step_size(self) -> float:
        return float(evaluate_schedule(self.step_size, np.array([self._sg_step]))[0])

    def stop_tuning(self) -> None:
        """PyMC's hook when tuning ends: measure the gradient noise where sampling begins.

        The noise estimate restarts for the sampling phase from
        ``END_OF_TUNING_NOISE_PAIRS`` gradient pairs at the chain's last tuning position,
        and a :class:`MinibatchNoiseWarning` is raised at once if it is too large. With
        no tuning draws (``tune=0``, where PyMC calls this before the first draw) it
        happens at the chain's start, once the start is known.
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
        self._finish_tuning_noise_estimate(position)
        self._restart_noise_estimate()
        if self.noise_estimate_interval is not None:
            self._add_gradient_pairs(position, END_OF_TUNING_NOISE_PAIRS)
            self._warn_if_noisy(self._next_step_size())

    def _warn_if_noisy(self, step_size: float) -> None:
        """Warn once per chain when the sampling phase's mean ``V`` heats the chain, or one
        of its coordinates, too much.

        Uses the running mean of the phase, not the latest (noisy) pair, and waits for
        ``END_OF_TUNING_NOISE_PAIRS`` pairs, so that a chain near the threshold is not
        flagged by chance.
        """
        count = self._gradient_variance_count
        if self._noise_warned or count < END_OF_TUNING_NOISE_PAIRS:
            return
        gradient_variance = self._gradient_variance_sum / count
        ratio, excess, per_coordinate = self._noise_measures(step_size, gradient_variance)
        # Infinite at T = 0: optimisation injects no noise on purpose, nothing to warn about.
        finite = np.where(np.isfinite(per_coordinate), per_coordinate, -np.inf)
        worst = int(np.argmax(finite))
        worst_excess = float(finite[worst])
        mean_too_hot = np.isfinite(excess) and excess > NOISE_RATIO_WARNING_THRESHOLD
        if not (mean_too_hot or worst_excess > COORDINATE_WARNING_THRESHOLD):
            return
        self._noise_warned = True
        chain = "" if self._chain is None else f" chain {self._chain}"
        warn(
            f"{type(self).__name__}{chain}: minibatch gradient noise dominates the injected "
            f"noise (noise_ratio = {ratio:.3g}, from {count} gradient pairs after tuning at "
            f"step_size={step_size:.4g}; it is the variance the minibatch noise adds per step "
            "over the variance the sampler injects). It raises the effective temperature to "
            f"about {1 + excess:.3g} times the target's on average over the coordinates, "
            f"and to {1 + worst_excess:.3g} times in the noisiest, "
            f"{self._coordinate_name(worst)}, so the draws are too wide and the chain "
            f"behaves more like SGD than a sampler. {self._noise_advice}. The noise_ratio "
            "sampler stat records it per draw.",
            MinibatchNoiseWarning,
        )

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

    @staticmethod
    def competence(var, has_grad):
        # Never PREFERRED: PyMC must not pick a minibatch sampler on its own.
        if has_grad and var.dtype not in discrete_dtypes:
            return Competence.COMPATIBLE
        return Competence.INCOMPATIBLE
