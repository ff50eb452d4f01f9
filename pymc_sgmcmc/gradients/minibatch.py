"""The minibatch log posterior of a PyMC model and its gradient, as PyTensor graphs.

PyMC's ``model.logp()`` already scales the likelihood of an observed variable with
``total_size=N`` by ``N/B``, so on a model fed through ``pm.Minibatch`` it is the unbiased
estimate ``log π̂(θ) = log p(θ) + (N/B) Σ_batch log p(x_i | θ)``. ``pm.Minibatch`` draws its
row indices from a shared random generator inside the graph; here each such draw is replaced
by an explicit index input. The step method then draws the indices itself from the chain's
generator, which gives every chain its own reproducible minibatch stream and lets many
steps run inside one compiled ``scan`` with a fresh minibatch each.
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass

import numpy as np
import pytensor
import pytensor.tensor as pt

from pymc.data import MinibatchOp
from pymc.variational.minibatch_rv import MinibatchRandomVariable
from pytensor.graph.replace import clone_replace
from pytensor.graph.traversal import ancestors, io_toposort
from pytensor.tensor.random.type import RandomType
from pytensor.tensor.variable import TensorConstant

__all__ = ["MinibatchLogPosterior", "MinibatchStream"]


@dataclass(frozen=True)
class MinibatchStream:
    """One ``pm.Minibatch(...)`` call: rows drawn together, with replacement, from N rows.

    Attributes
    ----------
    index : TensorVariable
        Integer vector of shape ``(batch_size,)`` standing for the drawn row indices.
    data_size : int
        Number of rows ``N`` it draws from.
    batch_size : int
        Number of rows ``B`` per minibatch.
    """

    index: pt.TensorVariable
    data_size: int
    batch_size: int

    def draw(self, rng: np.random.Generator, steps: int) -> np.ndarray:
        """Row indices for ``steps`` minibatches, shape ``(steps, batch_size)``."""
        return rng.integers(
            0, self.data_size, size=(steps, self.batch_size), dtype=self.index.dtype
        )


class MinibatchLogPosterior:
    """The minibatch log posterior ``log π̂(θ)`` of a model over a raveled parameter vector.

    Parameters
    ----------
    model : pymc.Model
    value_vars : list of TensorVariable
        The value variables (on the unconstrained space) that make up ``θ``, in the
        order of PyMC's ``DictToArrayBijection`` over them.

    Attributes
    ----------
    position : TensorVariable
        The raveled ``θ``, a vector of length ``size``.
    streams : tuple of MinibatchStream
        One per independent ``pm.Minibatch`` call; empty for a full-batch model.
    logp, gradient : TensorVariable
        ``log π̂(θ)`` and ``∇ log π̂(θ)`` as graphs of ``position`` and the streams' indices.
    """

    def __init__(self, model, value_vars):
        initial_point = model.initial_point()
        self.dtype = pytensor.config.floatX
        self.position = pt.vector("position", dtype=self.dtype)

        replacements = {}
        offset = 0
        for var in value_vars:
            shape = np.shape(initial_point[var.name])
            size = int(np.prod(shape, dtype=int))
            replacements[var] = (
                self.position[offset : offset + size].reshape(shape).astype(var.dtype)
            )
            offset += size
        self.size = offset

        logp = model.logp(jacobian=True)
        self.streams = self._replace_minibatches(logp, replacements)
        _warn_missing_total_size(model)
        _warn_unpaired_minibatches(model)

        self.logp = clone_replace(logp, replacements).astype(self.dtype)
        leftover = [var for var in ancestors([self.logp]) if isinstance(var.type, RandomType)]
        if leftover:
            raise NotImplementedError(
                "The model's log density draws random numbers outside pm.Minibatch "
                f"({leftover}); stochastic-gradient samplers support randomness only "
                "through pm.Minibatch(...)."
            )
        self.gradient = pt.grad(self.logp, self.position)

    @staticmethod
    def _replace_minibatches(logp, replacements) -> tuple[MinibatchStream, ...]:
        """Map each Minibatch output to its data indexed by a fresh index input."""
        nodes_by_rng: dict = {}
        for node in io_toposort([], [logp]):
            if isinstance(node.op, MinibatchOp):
                # Outputs drawn with one generator are one joint minibatch (e.g. X and y).
                nodes_by_rng.setdefault(node.inputs[-1], []).append(node)

        shared_data: dict = {}
        streams = []
        for number, nodes in enumerate(nodes_by_rng.values()):
            first = nodes[0]
            data_size, batch_size = pytensor.function(
                [], [first.inputs[0].shape[0], first.outputs[0].shape[0]], on_unused_input="ignore"
            )()
            # 32-bit indices are drawn faster and move less memory; 64 only when needed.
            index_dtype = "int32" if data_size < 2**31 else "int64"
            index = pt.vector(f"minibatch_index_{number}", dtype=index_dtype)
            for node in nodes:
                *data, _rng = node.inputs
                for output, tensor in zip(node.outputs[:-1], data, strict=True):
                    if isinstance(tensor, TensorConstant):
                        # pm.Minibatch(numpy_array) embeds the data set as a constant; as a
                        # shared input it is passed by reference, so the compiled kernel does
                        # not carry (or hash) the data, and Numba can cache it.
                        if tensor not in shared_data:
                            shared_data[tensor] = pytensor.shared(tensor.data, borrow=True)
                        tensor = shared_data[tensor]
                    replacements[output] = tensor[index]
            streams.append(MinibatchStream(index, int(data_size), int(batch_size)))
        return tuple(streams)

    @property
    def indices(self) -> list:
        """The index inputs of the streams, in order."""
        return [stream.index for stream in self.streams]

    def at(self, position, indices):
        """``(log π̂, ∇ log π̂)`` as graphs of another position and other index inputs."""
        replace = {self.position: position, **dict(zip(self.indices, indices, strict=True))}
        return clone_replace([self.logp, self.gradient], replace)

    def gradient_at(self, position, indices):
        """``∇ log π̂`` alone as a graph of another position and other index inputs."""
        replace = {self.position: position, **dict(zip(self.indices, indices, strict=True))}
        return clone_replace(self.gradient, replace)

    def draw_indices(self, rng: np.random.Generator, steps: int) -> list[np.ndarray]:
        """Indices of every stream for ``steps`` fresh minibatches."""
        return [stream.draw(rng, steps) for stream in self.streams]


def _warn_missing_total_size(model) -> None:
    for rv in model.observed_RVs:
        if isinstance(rv.owner.op, MinibatchRandomVariable):
            continue
        if _minibatch_rngs([model.rvs_to_values[rv]]):
            warnings.warn(
                f"Observed variable {rv.name!r} uses pm.Minibatch but has no `total_size`: its "
                "likelihood is not scaled by N/B, so the posterior will be biased (far too "
                f"wide). Pass `total_size=N` (the number of rows) to {rv.name!r}.",
                UserWarning,
                stacklevel=4,
            )


def _minibatch_rngs(variables) -> set:
    return {
        var.owner.inputs[-1]
        for var in ancestors(variables)
        if var.owner is not None and isinstance(var.owner.op, MinibatchOp)
    }


def _warn_unpaired_minibatches(model) -> None:
    for rv in model.observed_RVs:
        if len(_minibatch_rngs([rv, model.rvs_to_values[rv]])) > 1:
            warnings.warn(
                f"Observed variable {rv.name!r} depends on several pm.Minibatch calls, which "
                "draw their rows independently, so inputs and outputs no longer match. "
                "Draw them together: X_batch, y_batch = pm.Minibatch(X, y, batch_size=B).",
                UserWarning,
                stacklevel=4,
            )
