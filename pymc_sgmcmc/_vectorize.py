"""Compiled functions evaluated at many inputs at once, along a new leading axis."""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from pytensor.graph.replace import vectorize_graph

__all__ = ["vectorized_function"]


def vectorized_function(inputs, outputs, batched, compile_function):
    """Compile ``outputs`` of ``inputs`` with a new leading axis on the ``batched`` inputs.

    For a batch of size :math:`P` along the inputs in ``batched``, the compiled function
    returns every output with a leading axis of size :math:`P`:
    :math:`f(x_1, …, x_P, a) = (f(x_1, a), …, f(x_P, a))`, for the inputs ``a`` not in
    ``batched`` shared by the whole batch. One call evaluates the batch as matrix
    operations where the graph allows, instead of :math:`P` calls of the scalar graph.

    Parameters
    ----------
    inputs : list of TensorVariable
        Inputs of the unbatched graph, in the order of the compiled function's arguments.
    outputs : list of TensorVariable
        Graphs of ``inputs``.
    batched : list of TensorVariable
        The inputs (a non-empty subset of ``inputs``) that get the leading axis.
    compile_function : callable
        ``compile_function(inputs, outputs)`` returns the compiled function, e.g.
        :func:`pytensor.function` or :func:`pymc_sgmcmc._compat.compile_function`.

    Returns
    -------
    callable
        Takes arrays in the order of ``inputs`` (those in ``batched`` with the leading
        axis) and returns a list of arrays, one per output. Where PyTensor cannot
        vectorise the graph, it loops over the batch with the unbatched function.
    """
    replacements = {
        var: pt.tensor(dtype=var.dtype, shape=(None, *var.type.shape)) for var in batched
    }
    batch_size = next(iter(replacements.values())).shape[0]
    try:
        vectorized = vectorize_graph(outputs, replacements)
        # An output that does not depend on the batched inputs keeps its shape: repeat it.
        vectorized = [
            new
            if new.type.ndim == old.type.ndim + 1
            else pt.broadcast_to(new, (batch_size, *new.shape))
            for old, new in zip(outputs, vectorized, strict=True)
        ]
        function = compile_function([replacements.get(var, var) for var in inputs], vectorized)
    except (NotImplementedError, TypeError, ValueError):
        return _looped(inputs, outputs, batched, compile_function)

    def evaluate(*arrays):
        return [np.asarray(output) for output in function(*arrays)]

    return evaluate


def _looped(inputs, outputs, batched, compile_function):
    """The fallback of :func:`vectorized_function`: one unbatched call per batch item."""
    single = compile_function(inputs, outputs)
    batched = set(batched)
    is_batched = [var in batched for var in inputs]

    def evaluate(*arrays):
        count = len(next(array for array, flag in zip(arrays, is_batched, strict=True) if flag))
        results = [
            single(
                *(
                    array[item] if flag else array
                    for array, flag in zip(arrays, is_batched, strict=True)
                )
            )
            for item in range(count)
        ]
        return [
            np.stack([np.asarray(part) for part in parts]) for parts in zip(*results, strict=True)
        ]

    return evaluate
