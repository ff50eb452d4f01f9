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

import dataclasses

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

from pymc_sgmcmc._compat import compile_function
from pymc_sgmcmc._warnings import warn
from pymc_sgmcmc.streaming import RowBuffer

__all__ = ["MinibatchLogPosterior"]


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

    buffer : RowBuffer or None
        For :func:`pymc_sgmcmc.Minibatch` over a chunked store, the buffer of chunks the
        rows come from (the indices are rows of the buffer); None for ``pm.Minibatch``.
    """

    index: pt.TensorVariable
    data_size: int
    batch_size: int
    buffer: RowBuffer | None = None

    def draw(self, rng: np.random.Generator, steps: int) -> np.ndarray:
        """Row indices for ``steps`` minibatches, shape ``(steps, batch_size)``."""
        shape = (steps, self.batch_size)
        if self.buffer is not None:
            return self.buffer.draw_indices(rng, shape, self.index.dtype)
        return rng.integers(0, self.data_size, size=shape, dtype=self.index.dtype)


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
        # Kept for graphs of other pieces of the log density (full-data passes in chunks).
        self.model = model
        _warn_missing_total_size(model)
        _warn_unpaired_minibatches(model)
        _warn_minibatch_deterministics(model)
        self._warn_total_size()
        self._terms_function = None
        self._data_function = None
        self._computed_data: dict = {}

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
        self._stream_data: list[list] = []
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
                buffer = getattr(node.inputs[0].tag, "row_buffer", None)
                if buffer is not None:
                    # Indices are rows of the buffer; the stream stands for the source's.
                    data_size = buffer.rows
                # 32-bit indices are drawn faster and move less memory; 64 only when needed.
                index_dtype = "int32" if data_size < 2**31 else "int64"
                index = pt.vector(f"minibatch_index_{len(streams)}", dtype=index_dtype)
                streams.append(
                    MinibatchStream(index, int(data_size), int(batch_size), buffer=buffer)
                )
                self._stream_rngs.append(node.inputs[-1])
                self._stream_data.append(list(node.inputs[:-1]))
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

    @property
    def buffers(self) -> list[RowBuffer]:
        """The buffers of the streams read from chunked stores."""
        return [stream.buffer for stream in self.streams if stream.buffer is not None]

    def start_chain(self, rng: np.random.Generator) -> None:
        """Refill the buffers at a chain's start from a schedule drawn with ``rng``."""
        for buffer, child in zip(self.buffers, rng.spawn(len(self.buffers)), strict=True):
            buffer.start_chain(child)

    def after_draw(self, steps: int) -> None:
        """Give the buffers their fresh chunks after a draw of ``steps`` minibatches."""
        for stream in self.streams:
            if stream.buffer is not None:
                stream.buffer.refresh(steps * stream.batch_size)

    # ---- checks before a chain starts ----------------------------------------------------
    def _observed_of_stream(self, number: int) -> list[str]:
        rng = self._stream_rngs[number]
        return [
            rv.name
            for rv in self.model.observed_RVs
            if rng in _minibatch_rngs([rv, self.model.rvs_to_values[rv]])
        ]

    def check_data(self) -> None:
        """Read the data's current size and refuse NaN, before a chain starts.

        ``pm.set_data`` may have changed the data since the step was built: every stream
        follows its data's current number of rows, so no index ever reads past it.
        """
        if not self.streams:
            return
        if self._data_function is None:
            flat = [tensor for data in self._stream_data for tensor in data]
            self._data_function = pytensor.function([], flat, on_unused_input="ignore")
        arrays = iter(self._data_function())
        streams, changed = [], False
        for number, (stream, data) in enumerate(zip(self.streams, self._stream_data, strict=True)):
            values = [np.asarray(next(arrays)) for _ in data]
            if stream.buffer is not None:
                # Its source's size is fixed; its rows are read once for NaN, block by
                # block, so that a NaN never stops a chain midway.
                stream.buffer.check_rows()
                streams.append(stream)
                continue
            users = ", ".join(repr(name) for name in self._observed_of_stream(number)) or "none"
            for position, (tensor, value) in enumerate(zip(data, values, strict=True)):
                if value.dtype.kind in "fc" and np.isnan(value).any():
                    rows = np.flatnonzero(np.isnan(value.reshape(value.shape[0], -1)).any(axis=1))
                    label = f" {tensor.name!r}" if tensor.name else ""
                    raise ValueError(
                        f"The data{label} given to pm.Minibatch (input {position + 1} of "
                        f"{len(data)}, used by observed variable(s) {users}) holds NaN in "
                        f"{rows.size} of its {value.shape[0]} rows (the first: "
                        f"{rows[:5].tolist()}). A minibatch with these rows has a NaN log "
                        "density, which would read as divergences. Drop or impute those rows "
                        "before pm.Minibatch."
                    )
            rows = {value.shape[0] for value in values}
            if len(rows) > 1:
                raise ValueError(
                    f"The data of one pm.Minibatch call (used by {users}) have different "
                    f"numbers of rows {sorted(rows)}; they must match row by row."
                )
            (size,) = rows
            if size != stream.data_size:
                stream = dataclasses.replace(stream, data_size=int(size))
                changed = True
            streams.append(stream)
        if changed:
            self.streams = tuple(streams)
            self._warn_total_size()

    def _warn_total_size(self) -> None:
        """Warn where ``total_size`` differs from the rows its ``pm.Minibatch`` draws from."""
        model = self.model
        stream_of_rng = {rng: number for number, rng in enumerate(self._stream_rngs)}
        for rv in model.observed_RVs:
            if not isinstance(rv.owner.op, MinibatchRandomVariable):
                continue
            first = rv.owner.inputs[1]
            if first.type.ndim != 0 or not hasattr(first, "data"):
                continue
            total = int(first.data)
            rngs = _minibatch_rngs([rv, model.rvs_to_values[rv]])
            if not rngs:
                batch = int(pytensor.function([], model.rvs_to_values[rv].shape[0])())
                if batch == total:
                    # All the data, with total_size = N: no scaling, nothing fixed.
                    continue
                warn(
                    f"Observed variable {rv.name!r} has total_size={total}, but its data "
                    "does not come from pm.Minibatch: the samplers cannot draw fresh "
                    f"batches, so every step sees the same {batch} rows, scaled by "
                    f"total_size/{batch} = {total / batch:.4g}. The gradients are then "
                    "exact for that one batch (noise_ratio 0) and the posterior is that of "
                    "this batch, not of the data set. Feed the data through "
                    "pm.Minibatch(data, batch_size=B), which the samplers redraw at every "
                    "step."
                )
                continue
            if len(rngs) != 1:
                continue
            stream = self.streams[stream_of_rng[rngs.pop()]]
            if total != stream.data_size:
                warn(
                    f"Observed variable {rv.name!r} has total_size={total}, but its "
                    f"pm.Minibatch draws from {stream.data_size} rows: its likelihood is "
                    f"scaled by total_size/batch_size = {total / stream.batch_size:.4g} "
                    f"instead of {stream.data_size / stream.batch_size:.4g}, i.e. weighted "
                    f"{total / stream.data_size:.3g} times the data's, which makes the "
                    f"posterior about {np.sqrt(total / stream.data_size):.3g} times narrower "
                    f"(sd). Pass total_size={stream.data_size} unless you mean it."
                )

    def non_finite_terms(self, position) -> dict[str, float]:
        """The terms of the log density that are not finite at ``position`` on some rows.

        Each term (a free variable's prior with its log-Jacobian, an observed variable's
        likelihood, a potential) is summed over every row of the data, one minibatch-sized
        block of consecutive rows at a time, with the compiled minibatch graph (for a
        source streamed by :func:`pymc_sgmcmc.Minibatch`, the rows in its buffer).
        """
        if self._terms_function is None:
            self._terms_function = self._compile_terms()
        names, function = self._terms_function
        position = np.asarray(position, dtype=self.dtype)
        bad: dict[str, float] = {}
        for indices in self._sweep():
            values = function(position, *indices)
            for name, value in zip(names, values, strict=True):
                if name not in bad and not np.isfinite(value):
                    bad[name] = float(value)
            if len(bad) == len(names):
                break
        return bad

    def _compile_terms(self):
        model = self.model
        terms = [*model.free_RVs, *model.observed_RVs, *model.potentials]
        logps = model.logp(vars=terms, jacobian=True, sum=False)
        sums = [pt.sum(logp) for logp in logps]
        replace = {**self._value_replacements, **self._indexed_data(sums)}
        sums = clone_replace(sums, replace)
        function = compile_function([self.position, *self.indices], sums, on_unused_input="ignore")
        return [term.name for term in terms], function

    def _sweep(self):
        """Index sets that together cover every row of every stream."""
        if not self.streams:
            yield []
            return
        # A streamed source is swept over its buffer (the data of the current chunks).
        sizes = [
            stream.data_size
            if stream.buffer is None
            else stream.buffer.slots * stream.buffer.slot_rows
            for stream in self.streams
        ]
        first = [
            np.arange(stream.batch_size, dtype=stream.index.dtype) % size
            for stream, size in zip(self.streams, sizes, strict=True)
        ]
        for number, (stream, size) in enumerate(zip(self.streams, sizes, strict=True)):
            for start in range(0, size, stream.batch_size):
                rows = np.arange(start, start + stream.batch_size)
                indices = list(first)
                indices[number] = np.minimum(rows, size - 1).astype(stream.index.dtype)
                yield indices

    def split_by_stream(self):
        """The log density split into a part without minibatches and per-row likelihoods.

        Returns
        -------
        fixed : TensorVariable
            Scalar graph of ``position``: the prior, the log-Jacobians and every term that
            does not use ``pm.Minibatch``.
        rows : list of TensorVariable
            One per stream: a vector graph of ``position`` and the stream's row inputs, the
            ``total_size``-scaled log likelihood of each row, so that ``log π̂ = fixed +
            Σ_streams rows.sum()`` on the drawn rows.
        row_inputs : list of list of TensorVariable
            One per stream: stand-ins for the stream's rows of each of its data sets (in
            the order of :meth:`stream_data`), in place of ``data[index]``. A full-data
            pass gives them consecutive rows of the data themselves, without a gather.
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
        rows, row_inputs = [], []
        for number, (stream, terms) in enumerate(zip(self.streams, stream_terms, strict=True)):
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
            data = self._stream_data[number]
            stand_ins = [
                pt.tensor(
                    f"rows_{number}_{k}", dtype=tensor.dtype, shape=(None, *tensor.type.shape[1:])
                )
                for k, tensor in enumerate(data)
            ]
            replace = dict(self._value_replacements)
            for node in io_toposort([], [per_row]):
                if (
                    isinstance(node.op, MinibatchOp)
                    and node.inputs[-1] is self._stream_rngs[number]
                ):
                    # A node PyMC rebuilt has the data in the same order.
                    for output, stand_in in zip(node.outputs[:-1], stand_ins, strict=True):
                        replace[output] = stand_in
            rows.append(clone_replace(per_row, replace).astype(self.dtype))
            row_inputs.append(stand_ins)
        return fixed, rows, row_inputs

    def stream_data(self, number: int) -> list[np.ndarray]:
        """The data sets stream ``number`` draws its rows from, as arrays: for a
        ``pm.Minibatch`` over shared variables their current values (``pm.set_data``
        included), for one over a chunked store its buffer's."""
        values = []
        for tensor in self._stream_data[number]:
            if isinstance(tensor, TensorConstant):
                values.append(tensor.data)
            elif isinstance(tensor, pytensor.compile.SharedVariable):
                values.append(tensor.get_value(borrow=True))
            else:
                # Data computed in the graph, of constants and shared variables only.
                if tensor not in self._computed_data:
                    self._computed_data[tensor] = compile_function([], tensor)
                values.append(np.asarray(self._computed_data[tensor]()))
        return values


def _warn_missing_total_size(model) -> None:
    for rv in model.observed_RVs:
        if isinstance(rv.owner.op, MinibatchRandomVariable):
            continue
        if _minibatch_rngs([model.rvs_to_values[rv]]):
            warn(
                f"Observed variable {rv.name!r} uses pm.Minibatch but has no `total_size`: its "
                "likelihood is not scaled by N/B, so the posterior will be biased (far too "
                f"wide). Pass `total_size=N` (the number of rows) to {rv.name!r}."
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
            warn(
                f"Observed variable {rv.name!r} depends on several pm.Minibatch calls, which "
                "draw their rows independently, so inputs and outputs no longer match. "
                "Draw them together: X_batch, y_batch = pm.Minibatch(X, y, batch_size=B)."
            )


def _warn_minibatch_deterministics(model) -> None:
    for deterministic in model.deterministics:
        if _minibatch_rngs([deterministic]):
            warn(
                f"Deterministic {deterministic.name!r} depends on pm.Minibatch: pm.sample "
                "stores it for each draw's random minibatch rows, not for the data. "
                "Compute it on the full data after sampling: pm.compute_deterministics("
                "idata.posterior, model=pymc_sgmcmc.full_data_model(model))."
            )
