"""The shared PyMC adapter of the stochastic-gradient samplers.

A step method here holds no algorithm of its own: it checks the user's configuration,
builds the minibatch log posterior (:mod:`pymc_sgmcmc.gradients`), compiles
``steps_per_draw`` applications of an update rule (:mod:`pymc_sgmcmc.dynamics`) into one
PyTensor function, and on each ``pm.sample`` draw feeds it step sizes from the schedule,
standard normal noise and minibatch indices from the chain's own generator.
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
from pymc.util import get_random_generator, get_value_vars_from_user_vars
from pytensor.tensor.type import discrete_dtypes

from pymc_sgmcmc._compat import DIVERGING_DTYPE, sampling_chain_index
from pymc_sgmcmc.gradients import MinibatchLogPosterior
from pymc_sgmcmc.schedules import as_schedule, evaluate_schedule

__all__ = ["StochasticGradientStep", "StochasticGradientState", "SamplerDivergenceError"]


class SamplerDivergenceError(SamplingError):
    """A chain's position or momentum became non-finite; the chain was stopped."""


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

    _draw: int
    _sg_step: int
    _chain: int | None
    _auxiliary: list


class StochasticGradientStep(BlockedStep):
    """Base class: minibatch gradients, schedules and the compiled multi-step kernel.

    Subclasses define the update rule through ``_transition``, its numeric
    ``_parameters``, any auxiliary state (``_auxiliary_names``, ``_initial_auxiliary``)
    and extra stats.
    """

    name = "stochastic_gradient"
    default_blocked = True
    default_tune_steps = 1000
    stats_dtypes_shapes = {
        "step_size": (np.float64, []),
        "minibatch_logp": (np.float64, []),
        "grad_norm": (np.float64, []),
        "diverging": (DIVERGING_DTYPE, []),
        "tune": (bool, []),
    }
    _auxiliary_names: tuple[str, ...] = ()
    _state_class = StochasticGradientState
    _divergence_advice = "Lower step_size (e.g. by a factor of 10)"

    def __init__(
        self,
        vars=None,
        *,
        step_size,
        temperature: float = 1.0,
        steps_per_draw: int = 1,
        initial_jitter: float = 1.0,
        model=None,
        rng=None,
        blocked: bool = True,
        compile_kwargs: dict | None = None,
    ):
        model = modelcontext(model)
        value_vars = (
            model.value_vars if vars is None else get_value_vars_from_user_vars(vars, model)
        )
        check_covers_model(type(self).__name__, model, value_vars)
        self.vars = value_vars
        self.blocked = blocked

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

        self._target = MinibatchLogPosterior(model, self.vars)
        self._dtype = self._target.dtype
        self._size = self._target.size
        initial_point = model.initial_point()
        self._default_start = DictToArrayBijection.map(
            {var.name: initial_point[var.name] for var in self.vars}
        ).data
        self._configure()
        self._kernel = self._compile_kernel(compile_kwargs or {})
        self.tune = False
        self._start_chain(rng)

    # ---- hooks for the samplers -------------------------------------------------------
    def _configure(self) -> None:
        """Check and store sampler-specific parameters (needs ``self._size``)."""

    def _parameters(self) -> dict[str, np.ndarray]:
        """Numeric parameters of the update rule, passed to the kernel at every call.

        They are inputs rather than constants of the compiled graph, so one compiled
        kernel (and Numba's on-disk cache of it) serves every value.
        """
        return {"temperature": np.asarray(self.temperature, dtype=self._dtype)}

    def _refresh_parameters(self) -> None:
        self._parameter_values = list(self._parameters().values())

    def _transition(self, position, auxiliary, gradient, step_size, noise, parameters):
        """The update rule as a graph; ``parameters`` maps names to symbolic inputs."""
        raise NotImplementedError

    def _initial_auxiliary(self, position: np.ndarray) -> list[np.ndarray]:
        return []

    def _extra_stats(self, position, auxiliary, parameters) -> dict:
        """Symbolic scalar stats of the final state of a draw."""
        return {}

    def _after_draw(self, position: np.ndarray) -> None:
        """Called after each draw (e.g. to estimate gradient noise while tuning)."""

    def _draw_stats(self, step_size: float) -> dict:
        """Sampler-specific stats computed outside the kernel."""
        return {}

    # ---- compilation ----------------------------------------------------------------
    def _compile_kernel(self, compile_kwargs: dict):
        target = self._target
        steps = self.steps_per_draw
        n_streams = len(target.streams)
        n_auxiliary = len(self._auxiliary_names)

        position = pt.vector("position", dtype=self._dtype)
        auxiliary = [pt.vector(name, dtype=self._dtype) for name in self._auxiliary_names]
        step_sizes = pt.vector("step_sizes", dtype=self._dtype)
        noise = pt.matrix("noise", dtype=self._dtype)
        indices = [
            pt.matrix(f"minibatch_indices_{j}", dtype=stream.index.dtype)
            for j, stream in enumerate(target.streams)
        ]
        parameters = {
            name: pt.tensor(name, dtype=self._dtype, shape=(None,) * value.ndim)
            for name, value in self._parameters().items()
        }
        extra = list(parameters.values())

        def advance(step_size, noise_k, *rest):
            index_k = rest[:n_streams]
            position_k, *auxiliary_k = rest[n_streams : n_streams + 1 + n_auxiliary]
            inner_parameters = dict(
                zip(parameters, rest[n_streams + 1 + n_auxiliary :], strict=True)
            )
            gradient = target.gradient_at(position_k, index_k)
            new_position, new_auxiliary = self._transition(
                position_k, auxiliary_k, gradient, step_size, noise_k, inner_parameters
            )
            return [new_position, *new_auxiliary]

        # The first K - 1 steps need only gradients; the last also yields the stats, so
        # the log density is computed once per draw rather than once per step.
        state = [position, *auxiliary]
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
        last_position, *last_auxiliary = state
        logp, gradient = target.at(last_position, [index[-1] for index in indices])
        final_position, final_auxiliary = self._transition(
            last_position, last_auxiliary, gradient, step_sizes[-1], noise[-1], parameters
        )
        outputs = [final_position, *final_auxiliary, logp, pt.linalg.norm(gradient)]
        final_position, *final_auxiliary = outputs[: 1 + n_auxiliary]
        extra_stats = self._extra_stats(final_position, final_auxiliary, parameters)
        self._stat_names = list(extra_stats)
        stats = list(extra_stats.values())
        return pytensor.function(
            [position, *auxiliary, step_sizes, noise, *indices, *extra],
            [*outputs, *stats],
            trust_input=True,
            on_unused_input="ignore",
            **compile_kwargs,
        )

    # ---- per-chain state --------------------------------------------------------------
    def _start_chain(self, rng) -> None:
        self.rng = get_random_generator(rng, copy=False)
        self._chain = sampling_chain_index()
        self._draw = 0
        self._sg_step = 0
        self._auxiliary: list[np.ndarray] = []
        self._refresh_parameters()

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
        self._start_chain(rng)

    def _first_position(self, position: np.ndarray) -> np.ndarray:
        # pm.sample starts every chain at the model's initial point for a custom step;
        # disperse them as PyMC does for NUTS, unless the user chose the start (initvals).
        if self.initial_jitter > 0 and np.array_equal(position, self._default_start):
            position = position + self.rng.uniform(
                -self.initial_jitter, self.initial_jitter, position.shape
            )
        return position.astype(self._dtype)

    # ---- the step ---------------------------------------------------------------------
    def step(self, point):
        mapped = DictToArrayBijection.map({var.name: point[var.name] for var in self.vars})
        position = mapped.data
        if self._draw == 0:
            position = self._first_position(position)
            self._auxiliary = self._initial_auxiliary(position)

        steps = self.steps_per_draw
        step_sizes = evaluate_schedule(
            self.step_size, np.arange(self._sg_step, self._sg_step + steps)
        )
        noise = self.rng.standard_normal((steps, self._size), dtype=self._dtype)
        indices = self._target.draw_indices(self.rng, steps)
        # A diverging chain overflows inside the kernel; _check_finite reports it clearly.
        with np.errstate(over="ignore", invalid="ignore"):
            new_position, *outputs = self._kernel(
                position,
                *self._auxiliary,
                step_sizes.astype(self._dtype),
                noise,
                *indices,
                *self._parameter_values,
            )
        n_auxiliary = len(self._auxiliary_names)
        new_auxiliary = outputs[:n_auxiliary]
        logp, grad_norm, *extra_stats = outputs[n_auxiliary:]
        self._check_finite(new_position, new_auxiliary, step_sizes[-1])

        self._auxiliary = new_auxiliary
        self._sg_step += steps
        self._draw += 1
        self._after_draw(new_position)
        stats = {
            "step_size": float(step_sizes[-1]),
            "minibatch_logp": float(logp),
            "grad_norm": float(grad_norm),
            "diverging": DIVERGING_DTYPE(False),
            "tune": bool(self.tune),
        }
        stats.update(zip(self._stat_names, map(float, extra_stats), strict=True))
        stats.update(self._draw_stats(stats["step_size"]))
        new_point = DictToArrayBijection.rmap(
            RaveledVars(new_position, mapped.point_map_info), start_point=point
        )
        return new_point, [stats]

    def _check_finite(self, position, auxiliary, step_size) -> None:
        names = [("position", position), *zip(self._auxiliary_names, auxiliary, strict=True)]
        bad = [name for name, value in names if not np.all(np.isfinite(value))]
        if not bad:
            return
        chain = "" if self._chain is None else f" in chain {self._chain}"
        phase = "tuning " if self.tune else ""
        start = (
            " (the first draw: check that the model's log density is finite near the start)"
            if self._draw == 0
            else ""
        )
        first, last = self._sg_step, self._sg_step + self.steps_per_draw - 1
        steps = f"SG step {first}" if first == last else f"SG steps {first}-{last}"
        raise SamplerDivergenceError(
            f"{type(self).__name__} diverged{chain} at {phase}draw {self._draw}{start}: the "
            f"{' and '.join(bad)} became non-finite within {steps} at "
            f"step_size={step_size:.4g}. {self._divergence_advice}. The chain was stopped "
            "before any non-finite value reached the trace."
        )

    @staticmethod
    def competence(var, has_grad):
        # Never PREFERRED: PyMC must not pick a minibatch sampler on its own.
        if has_grad and var.dtype not in discrete_dtypes:
            return Competence.COMPATIBLE
        return Competence.INCOMPATIBLE
