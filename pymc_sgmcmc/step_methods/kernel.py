"""The compiled multi-step kernel: ``steps_per_draw`` SG steps in one PyTensor function.

Each step moves with the gradient estimate at its starting position, then takes the
estimate at the new position on a fresh minibatch for the next step; the last one is
carried to the next draw. So every step costs one estimate, and the draw's log density,
at the position it records, comes with its last gradient.

The kernel knows neither the sampler nor the estimator: it is given the update rule (a
graph builder over a typed auxiliary state, see :mod:`pymc_sgmcmc.dynamics`), the
gradient estimator and the names and types of the sampler's parameters.
"""

from __future__ import annotations

import warnings

from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np
import pytensor
import pytensor.tensor as pt

from pymc_sgmcmc._named_function import NamedFunction, NamedInput

__all__ = ["build_kernel", "build_start_function", "index_inputs"]

#: ``transition(position, auxiliary, gradient, step_size, noise, parameters)`` returns the
#: next ``(position, auxiliary)``; ``auxiliary`` is a NamedTuple of tensors.
Transition = Callable[..., tuple]


def index_inputs(target, prefix: str, ndim: int) -> list[tuple[NamedInput, pt.TensorVariable]]:
    """One integer input per minibatch stream: a vector of rows, or one per step."""
    inputs = []
    for j, stream in enumerate(target.streams):
        spec = NamedInput(f"{prefix}_{j}", stream.index.dtype, ndim)
        # One minibatch keeps the stream's static batch size, as the model's graph has it.
        variable = stream.index.type(spec.name) if ndim == 1 else spec.variable()
        inputs.append((spec, variable))
    return inputs


def build_kernel(
    *,
    estimator,
    transition: Transition,
    auxiliary_type: type[NamedTuple],
    parameters: Mapping[str, NamedInput],
    steps: int,
    variable_steps: bool = False,
    kernel_stats: Callable | None = None,
    stat_names: tuple[str, ...] = (),
    device_random: bool = False,
    compile_kwargs: dict,
) -> NamedFunction:
    """Compile ``steps`` SG steps of ``transition`` with ``estimator``'s gradients.

    Parameters
    ----------
    estimator : GradientEstimator
    transition : callable
        The update rule.
    auxiliary_type : NamedTuple class
        The sampler's auxiliary state (momentum, thermostat, ...); its fields name the
        kernel's auxiliary inputs and outputs.
    parameters : mapping of str to NamedInput
        The sampler's numeric parameters, inputs rather than constants of the graph, so
        one compiled kernel (and Numba's on-disk cache of it) serves every value.
    steps : int
    variable_steps : bool, default False
        Whether calls may give another number of steps (at least 2 where ``steps`` is):
        the inputs' first dimension sets it (``steps_per_draw="auto"``).
    kernel_stats : callable, optional
        ``kernel_stats(position, auxiliary, parameters)``: symbolic scalar stats of the
        draw's final state, by name; the names must be ``stat_names``.
    stat_names : tuple of str
    device_random : bool, default False
        Draw the noise and the minibatch indices inside the function, from its own
        generator (:meth:`~pymc_sgmcmc._named_function.NamedFunction.reseed`), instead of
        taking them as inputs: under the JAX backend they are then drawn on the device
        and nothing but the state crosses to it per draw. ``steps`` is then fixed.
    compile_kwargs : dict

    Returns
    -------
    NamedFunction
        Per-call inputs ``position``, ``gradient``, the auxiliary fields, ``step_sizes``
        (one per step), and unless ``device_random``, ``noise`` (steps x d) and
        ``minibatch_indices_j`` (steps x B per stream); fixed inputs: the parameters,
        then the estimator's inputs. Outputs: the final ``position``, ``gradient`` and
        auxiliary fields, ``logp`` and ``grad_norm`` there, then the stats as
        ``stat_<name>``.
    """
    target = estimator.target
    dtype = target.dtype
    fields = auxiliary_type._fields
    state_inputs = [
        (spec, spec.variable())
        for spec in (
            NamedInput("position", dtype, 1),
            NamedInput("gradient", dtype, 1),
            *(NamedInput(name, dtype, 1) for name in fields),
        )
    ]
    step_sizes = NamedInput("step_sizes", dtype, 1)
    updates = {}
    if device_random:
        if variable_steps:
            raise ValueError("device_random needs a fixed number of steps.")
        # A static length: JAX slices it ([:-1]) only with static bounds.
        step_size_vector = pt.tensor(step_sizes.name, dtype=dtype, shape=(steps,))
        schedule_inputs = [(step_sizes, step_size_vector)]
        indices = []
        generator = pytensor.shared(np.random.default_rng(0), name="kernel_generator")
        next_generator, noise_matrix = pt.random.normal(
            0.0, 1.0, size=(steps, target.size), dtype=dtype, rng=generator
        ).owner.outputs
        index_matrices = []
        for stream in target.streams:
            next_generator, index = pt.random.integers(
                0,
                stream.data_size,
                size=(steps, stream.batch_size),
                dtype=stream.index.dtype,
                rng=next_generator,
            ).owner.outputs
            index_matrices.append(index)
        updates[generator] = next_generator
    else:
        noise = NamedInput("noise", dtype, 2)
        schedule_inputs = [(step_sizes, step_sizes.variable()), (noise, noise.variable())]
        indices = index_inputs(target, "minibatch_indices", 2)
        step_size_vector, noise_matrix = (variable for _, variable in schedule_inputs)
        index_matrices = [variable for _, variable in indices]
    fixed = [(spec, spec.variable()) for spec in (*parameters.values(), *estimator.inputs)]
    symbols = {spec.name: variable for spec, variable in fixed}
    parameter_names = list(parameters)
    estimator_names = [spec.name for spec in estimator.inputs]
    n_streams, n_state = len(target.streams), len(state_inputs)

    def advance(step_size, noise_k, *rest):
        index_k = rest[:n_streams]
        position_k, gradient_k, *auxiliary_k = rest[n_streams : n_streams + n_state]
        inner = dict(zip(symbols, rest[n_streams + n_state :], strict=True))
        new_position, new_auxiliary = transition(
            position_k,
            auxiliary_type(*auxiliary_k),
            gradient_k,
            step_size,
            noise_k,
            {name: inner[name] for name in parameter_names},
        )
        estimator_inputs = {name: inner[name] for name in estimator_names}
        new_gradient = estimator.gradient(new_position, index_k, estimator_inputs)
        return [new_position, new_gradient, *new_auxiliary]

    state = [variable for _, variable in state_inputs]
    if steps > 1:
        sequences = pytensor.scan(
            advance,
            sequences=[
                step_size_vector[:-1],
                noise_matrix[:-1],
                *[index[:-1] for index in index_matrices],
            ],
            outputs_info=state,
            non_sequences=list(symbols.values()),
            # Without a fixed count the sequences' length sets it at each call.
            n_steps=None if variable_steps else steps - 1,
            return_list=True,
            return_updates=False,
        )
        state = [sequence[-1] for sequence in sequences]
    last_position, last_gradient, *last_auxiliary = state
    sampler_parameters = {name: symbols[name] for name in parameter_names}
    final_position, final_auxiliary = transition(
        last_position,
        auxiliary_type(*last_auxiliary),
        last_gradient,
        step_size_vector[-1],
        noise_matrix[-1],
        sampler_parameters,
    )
    last_indices = [index[-1] for index in index_matrices]
    logp, minibatch_gradient = target.at(final_position, last_indices)
    final_gradient = estimator.gradient(
        final_position,
        last_indices,
        {name: symbols[name] for name in estimator_names},
        minibatch_gradient,
    )
    stats = (
        {}
        if kernel_stats is None
        else kernel_stats(final_position, final_auxiliary, sampler_parameters)
    )
    if tuple(stats) != tuple(stat_names):
        raise ValueError(f"The kernel's stats {tuple(stats)} are not the declared {stat_names}.")
    with warnings.catch_warnings():
        # The JAX backend copies the generator into its own form: NamedFunction.reseed
        # sets that copy.
        warnings.filterwarnings("ignore", message="The RandomType SharedVariables")
        return NamedFunction(
            [*state_inputs, *schedule_inputs, *indices],
            fixed,
            [
                final_position,
                final_gradient,
                *final_auxiliary,
                logp,
                pt.linalg.norm(final_gradient),
                *stats.values(),
            ],
            # Stats may share a name with the state (SGNHT's thermostat).
            [
                "position",
                "gradient",
                *fields,
                "logp",
                "grad_norm",
                *(f"stat_{n}" for n in stat_names),
            ],
            trust_input=True,
            **({"updates": updates} if updates else {}),
            **compile_kwargs,
        )


def build_start_function(
    *, estimator, parameters: Mapping[str, NamedInput], compile_kwargs: dict
) -> NamedFunction:
    """``(log π̂, gradient estimate)`` at a position on one minibatch: a chain's first.

    Per-call inputs ``position`` and ``start_j`` (one minibatch per stream); fixed inputs
    as the kernel's, so that both are set from the same values. A third output, the
    estimate's ``minibatch_part`` (:meth:`GradientEstimator.minibatch_part`), serves the
    gradient-noise pairs: the graphs share their gradients, so one compiled function does
    both.
    """
    target = estimator.target
    position = NamedInput("position", target.dtype, 1)
    position_variable = position.variable()
    indices = index_inputs(target, "start", 1)
    fixed = [(spec, spec.variable()) for spec in (*parameters.values(), *estimator.inputs)]
    symbols = {spec.name: variable for spec, variable in fixed}
    index_variables = [variable for _, variable in indices]
    logp, minibatch_gradient = target.at(position_variable, index_variables)
    estimator_inputs = {spec.name: symbols[spec.name] for spec in estimator.inputs}
    gradient = estimator.gradient(
        position_variable, index_variables, estimator_inputs, minibatch_gradient
    )
    minibatch_part = estimator.minibatch_part(position_variable, index_variables, estimator_inputs)
    return NamedFunction(
        [(position, position_variable), *indices],
        fixed,
        [logp, gradient, minibatch_part],
        ["logp", "gradient", "minibatch_part"],
        **compile_kwargs,
    )
