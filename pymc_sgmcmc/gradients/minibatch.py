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

        self._value_replacements = dict(replacements)
        logp = model.logp(jacobian=True)
        self._replace_minibatches(logp, replacements)
        _warn_missing_total_size(model)
        _warn_unpaired_minibatches(model)
        # Kept for graphs of other pieces of the log density (full-data passes in chunks).
        self.model = model

        self.logp = clone_replace(logp, replacements).astype(self.dtype)
        leftover = [var for var in ancestors([self.logp]) if isinstance(var.type, RandomType)]
        if leftover:
            raise NotImplementedError(
                "The model's log density draws random numbers outside pm.Minibatch "
                f"({leftover}); stochastic-gradient samplers support randomness only "
                "through pm.Minibatch(...)."
            )
        self.gradient = pt.grad(self.logp, self.position)

    def _replace_minibatches(self, logp, replacements) -> None:
        """Create one stream per Minibatch generator and map its outputs to indexed data."""
        self._stream_rngs: list = []
        self._shared_data: dict = {}
        streams = []
        for node in io_toposort([], [logp]):
            if isinstance(node.op, MinibatchOp) and node.inputs[-1] not in self._stream_rngs:
                # Outputs drawn with one generator are one joint minibatch (e.g. X and y).
                data_size, batch_size = pytensor.function(
                    [],
                    [node.inputs[0].shape[0], node.outputs[0].shape[0]],
                    on_unused_input="ignore",
                )()
                # 32-bit indices are drawn faster and move less memory; 64 only when needed.
                index_dtype = "int32" if data_size < 2**31 else "int64"
                index = pt.vector(f"minibatch_index_{len(streams)}", dtype=index_dtype)
                streams.append(MinibatchStream(index, int(data_size), int(batch_size)))
                self._stream_rngs.append(node.inputs[-1])
        self.streams = tuple(streams)
        replacements.update(self._indexed_data([logp]))

    def _indexed_data(self, graphs) -> dict:
        """Replacements of the Minibatch outputs in ``graphs`` by their data at the index.

        PyMC may rebuild Minibatch nodes when it builds another log-density graph; they
        are matched to their stream by their random generator, which is kept.
        """
        replacements = {}
        for node in io_toposort([], graphs):
            if not isinstance(node.op, MinibatchOp):
                continue
            index = self.streams[self._stream_rngs.index(node.inputs[-1])].index
            *data, _rng = node.inputs
            for output, tensor in zip(node.outputs[:-1], data, strict=True):
                if isinstance(tensor, TensorConstant):
                    # pm.Minibatch(numpy_array) embeds the data set as a constant; as a
                    # shared input it is passed by reference, so the compiled kernel does
                    # not carry (or hash) the data, and Numba can cache it.
                    if tensor not in self._shared_data:
                        self._shared_data[tensor] = pytensor.shared(tensor.data, borrow=True)
                    tensor = self._shared_data[tensor]
                replacements[output] = tensor[index]
        return replacements

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

    def split_by_stream(self):
        """The log density split into a part without minibatches and per-row likelihoods.

        Returns
        -------
        fixed : TensorVariable
            Scalar graph of ``position``: the prior, the log-Jacobians and every term that
            does not use ``pm.Minibatch``.
        rows : list of TensorVariable
            One per stream: a vector graph of ``position`` and the stream's index, the
            ``total_size``-scaled log likelihood of each drawn row, so that
            ``log π̂ = fixed + Σ_streams rows.sum()``.
        """
        model = self.model
        stream_of_rng = {rng: number for number, rng in enumerate(self._stream_rngs)}
        fixed_terms = list(model.free_RVs) + list(model.potentials)
        stream_terms: list[list] = [[] for _ in self.streams]
        for rv in model.observed_RVs:
            rngs = _minibatch_rngs([rv, model.rvs_to_values[rv]])
            if not rngs:
                fixed_terms.append(rv)
            elif len(rngs) == 1:
                stream_terms[stream_of_rng[rngs.pop()]].append(rv)
            else:
                raise NotImplementedError(
                    f"Observed variable {rv.name!r} depends on several pm.Minibatch calls; "
                    "full-data passes (control variates) need each observed variable to "
                    "draw its rows from one call: pm.Minibatch(X, y, batch_size=B)."
                )
        for potential in model.potentials:
            if _minibatch_rngs([potential]):
                raise NotImplementedError(
                    f"Potential {potential.name!r} uses pm.Minibatch; full-data passes "
                    "(control variates) support minibatch data only in observed variables."
                )
        fixed = model.logp(vars=fixed_terms, jacobian=True)
        fixed = clone_replace(fixed, self._value_replacements).astype(self.dtype)
        rows = []
        for stream, terms in zip(self.streams, stream_terms, strict=True):
            per_row = pt.zeros((stream.batch_size,), dtype=self.dtype)
            for rv, term in zip(
                terms, model.logp(vars=terms, sum=False) if terms else [], strict=True
            ):
                if term.ndim == 0 or term.type.shape[0] not in (None, stream.batch_size):
                    raise NotImplementedError(
                        f"The log likelihood of {rv.name!r} does not have the minibatch rows "
                        "on its first axis; full-data passes (control variates) need it."
                    )
                per_row = per_row + term.reshape((term.shape[0], -1)).sum(axis=1)
            replace = {**self._value_replacements, **self._indexed_data([per_row])}
            rows.append(clone_replace(per_row, replace).astype(self.dtype))
        return fixed, rows


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
