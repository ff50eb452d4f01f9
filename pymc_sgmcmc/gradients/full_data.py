"""The full-data log posterior of a minibatch model, evaluated in chunks of rows.

Control variates need ``log π(θ) = log p(θ) + Σ_{i=1..N} log p(x_i | θ)`` and its gradient
on all N rows, at a few points (the centre and, for ``centre="map"``, an optimiser's
path); the kernel Stein discrepancy needs the gradient at every draw of a trace
(:meth:`FullDataLogPosterior.gradients`, vectorised over the draws). Building the model
again on the full data would hold graph intermediates of size N; here the same minibatch
graph is evaluated on consecutive chunks of rows and summed, so memory is bounded by the
chunk size whatever N is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import pytensor.tensor as pt

from pytensor.graph.replace import vectorize_graph
from scipy import optimize

from pymc_sgmcmc._blocks import (
    LazyFunction,
    RowReader,
    active_client,
    chunk_inputs,
    distributed_pass,
)
from pymc_sgmcmc._compat import compile_function
from pymc_sgmcmc._validation import positive_int
from pymc_sgmcmc._vectorize import vectorized_function
from pymc_sgmcmc._warnings import warn

__all__ = ["FullDataLogPosterior", "MaximumAPosteriori"]


@dataclass(frozen=True)
class MaximumAPosteriori:
    """The result of :meth:`FullDataLogPosterior.find_map`.

    Attributes
    ----------
    position : numpy.ndarray
        The raveled MAP on the unconstrained space.
    logp : float
        ``log π`` there (full data).
    gradient : numpy.ndarray
        ``∇ log π`` there (full data): near zero at an interior optimum.
    evaluations : int
        Full-data passes the optimiser made.
    converged : bool
        Whether L-BFGS reported convergence.
    message : str
        The optimiser's message.
    """

    position: np.ndarray
    logp: float
    gradient: np.ndarray
    evaluations: int
    converged: bool
    message: str


class FullDataLogPosterior:
    """``log π(θ)`` and ``∇ log π(θ)`` on every row of the data, in chunks.

    The minibatch graph computes ``log π̂ = fixed + (N/B) Σ_batch log p(x_i | θ)``. Its
    per-row terms are vectorised over a ``(rows // B, B)`` matrix of row indices, weighted
    by ``B/N`` (0 for padding) and summed chunk by chunk; the fixed part (prior,
    log-Jacobians, terms without minibatches) is added once. This is the expectation of
    ``log π̂`` over minibatches, i.e. ``log π`` with the model's ``total_size`` scaling.

    Parameters
    ----------
    target : MinibatchLogPosterior
    chunk_size : int, default 65536
        Rows per compiled call (rounded to whole minibatches); peak memory grows with it.
    compile_kwargs : dict, optional
        Passed to :func:`pytensor.function`.
    """

    def __init__(self, target, *, chunk_size: int = 65536, compile_kwargs: dict | None = None):
        self.chunk_size = positive_int("chunk_size", chunk_size)
        self.size = target.size
        self.dtype = target.dtype
        self.streams = target.streams
        self._compile_kwargs = compile_kwargs or {}
        self._position = target.position
        fixed, rows, row_inputs = target.split_by_stream()
        self._target = target
        self._fixed_graph = (fixed, pt.grad(fixed, self._position))
        # Per stream: its chunk's inputs (weights, rows) and (total, gradient). A chunk's
        # rows come as (rows // B, B, ...) blocks of consecutive rows, a view of the data
        # in memory: the pass reads them where they lie instead of gathering a copy.
        self._chunk_graphs = []
        for per_row, stand_ins in zip(rows, row_inputs, strict=True):
            blocks = [
                pt.tensor(f"block_{v.name}", dtype=v.dtype, shape=(None, *v.type.shape))
                for v in stand_ins
            ]
            rows_matrix = vectorize_graph(per_row, dict(zip(stand_ins, blocks, strict=True)))
            weights = pt.matrix("weights", dtype=target.dtype)
            total = pt.sum(weights * rows_matrix)
            self._chunk_graphs.append(([weights, *blocks], (total, pt.grad(total, self._position))))
        # Compiled at their first use: a user of `gradients` alone never compiles the
        # one-position functions, and vice versa.
        self._one_position = None
        self._many_positions = None
        self.evaluations = 0

    def _compile(self, inputs, outputs):
        # Compiled at its first call (in each process: a Dask worker gets the graph).
        return LazyFunction(partial(compile_function, **self._compile_kwargs), inputs, outputs)

    def _one_position_functions(self):
        """``position ↦ (log π, ∇ log π)`` of the fixed part, and per stream of a chunk."""
        if self._one_position is None:
            position = self._position
            fixed = self._compile([position], list(self._fixed_graph))
            chunks = [
                self._compile([position, *inputs], list(outputs))
                for inputs, outputs in self._chunk_graphs
            ]
            self._one_position = (fixed, chunks)
        return self._one_position

    def _many_positions_functions(self):
        """The gradients of :meth:`_one_position_functions`, vectorised over positions."""
        if self._many_positions is None:
            position = self._position
            compile_eagerly = partial(compile_function, **self._compile_kwargs)

            def vectorized(inputs, outputs):
                return LazyFunction(
                    vectorized_function, inputs, outputs, [position], compile_eagerly
                )

            fixed = vectorized([position], [self._fixed_graph[1]])
            chunks = [
                vectorized([position, *inputs], [outputs[1]])
                for inputs, outputs in self._chunk_graphs
            ]
            self._many_positions = (fixed, chunks)
        return self._many_positions

    def _over_chunks(self, stream, function, calls):
        """``function(*call, *chunk)`` for every call's arguments, chunk by chunk over
        the rows: in this process, or, for a streamed source while a
        ``distributed.Client`` is active, as Dask tasks on its workers, each reading its
        rows from the store. Yields, per chunk, the list of the calls' results."""
        if stream.buffer is not None and active_client() is not None:
            yield from distributed_pass(
                function,
                RowReader([stream.buffer]),
                self.chunk_size,
                calls,
                batch=stream.batch_size,
                weight_dtype=self.dtype,
            )
            return
        for chunk in self._stream_chunks(stream):
            yield [function(*call, *chunk) for call in calls]

    def _stream_chunks(self, stream):
        """The inputs of a chunk's function, covering rows ``0..N-1`` once: the
        ``(rows // B, B)`` weights and the rows of each data set in blocks of that shape."""
        batch = stream.batch_size
        for blocks in self._row_blocks(stream):
            yield chunk_inputs(blocks, batch, batch / stream.data_size, self.dtype)

    def _row_blocks(self, stream):
        """Each chunk's consecutive rows of the stream's data sets: views of the data in
        the graph, or a streamed source's blocks (read here)."""
        if stream.buffer is not None:
            yield from stream.buffer.chunks(self.chunk_size)
            return
        data = self._target.stream_data(self.streams.index(stream))
        per_chunk = max(1, self.chunk_size // stream.batch_size) * stream.batch_size
        for start in range(0, stream.data_size, per_chunk):
            yield [values[start : start + per_chunk] for values in data]

    def logp_and_gradient(self, position) -> tuple[float, np.ndarray]:
        """``(log π(θ), ∇ log π(θ))`` at a raveled position, one pass over the data."""
        position = np.asarray(position, dtype=float)
        if position.shape != (self.size,):
            raise ValueError(
                f"`position` must have shape ({self.size},) (the raveled parameters), "
                f"got {position.shape}."
            )
        # Evaluated in floatX (float32 too), summed in float64.
        typed = position.astype(self.dtype)
        fixed, chunks = self._one_position_functions()
        logp, gradient = fixed(typed)
        logp, gradient = float(logp), np.array(gradient, dtype=float)
        for stream, function in zip(self.streams, chunks, strict=True):
            for [(chunk_logp, chunk_gradient)] in self._over_chunks(stream, function, [(typed,)]):
                logp += float(chunk_logp)
                gradient += chunk_gradient
        self.evaluations += 1
        return logp, gradient

    def gradient(self, position) -> np.ndarray:
        """``∇ log π(θ)`` on the full data."""
        return self.logp_and_gradient(position)[1]

    def gradients(self, positions, *, positions_per_call: int = 16) -> np.ndarray:
        """``∇ log π(θ_k)`` on the full data at each row ``θ_k`` of ``positions``.

        .. math::

            ∇ \\log π(θ_k) = ∇ \\log p(θ_k)
                + \\sum_{i=1}^N ∇ \\log p(x_i \\mid θ_k), \\qquad k = 1, …, P,

        the sums of :meth:`gradient` (log-Jacobians and ``total_size`` scaling included),
        with the graph vectorised over ``positions_per_call`` positions per compiled call:
        many positions cost far fewer calls than a loop over :meth:`gradient`, for a peak
        memory ``positions_per_call`` times that of one position's chunk of rows.

        Parameters
        ----------
        positions : array_like, shape (P, size)
            Raveled positions on the unconstrained space, one per row.
        positions_per_call : int, default 16

        Returns
        -------
        numpy.ndarray, shape (P, size)
        """
        positions = np.asarray(positions, dtype=float)
        if positions.ndim != 2 or positions.shape[1] != self.size:
            raise ValueError(
                f"`positions` must have shape (P, {self.size}) (raveled parameters in "
                f"rows), got {positions.shape}."
            )
        per_call = positive_int("positions_per_call", positions_per_call)
        fixed, chunks = self._many_positions_functions()
        # Evaluated in floatX (float32 too), summed in float64.
        groups = [
            positions[start : start + per_call].astype(self.dtype)
            for start in range(0, positions.shape[0], per_call)
        ]
        sums = [np.array(fixed(typed)[0], dtype=float) for typed in groups]
        for stream, function in zip(self.streams, chunks, strict=True):
            # The data outside, the positions inside: a streamed source is read once.
            calls = [(typed,) for typed in groups]
            for results in self._over_chunks(stream, function, calls):
                for result, gradient in zip(results, sums, strict=True):
                    gradient += result[0]
        self.evaluations += positions.shape[0]
        return np.concatenate(sums) if sums else np.empty(positions.shape, dtype=float)

    @property
    def streamed(self) -> bool:
        """Whether a pass reads a chunked store (:func:`pymc_sgmcmc.Minibatch`), so that
        passes, not compiled calls, are what costs."""
        return any(stream.buffer is not None for stream in self.streams)

    def find_map(self, start, *, maxiter: int = 1000) -> MaximumAPosteriori:
        """The maximum a posteriori point by L-BFGS on full-data passes.

        It maximises the full-data ``log π`` on the unconstrained space with the
        log-Jacobians included, the density PyMC's samplers see, with memory bounded by
        ``chunk_size`` rather than N. ``pm.find_MAP`` leaves the Jacobians out, so for
        transformed variables its point differs slightly (for the control variate's
        centre either works). A search that stops before converging warns.
        """
        start = np.asarray(start, dtype=float)
        before = self.evaluations

        def negative(position):
            logp, gradient = self.logp_and_gradient(position)
            if not np.isfinite(logp):
                # Steers the line search back into the support instead of failing.
                return np.inf, np.zeros_like(gradient)
            return -logp, -gradient

        result = optimize.minimize(
            negative, start, jac=True, method="L-BFGS-B", options={"maxiter": maxiter}
        )
        logp, gradient = self.logp_and_gradient(result.x)
        if not (np.isfinite(logp) and np.all(np.isfinite(result.x))):
            raise RuntimeError(
                "The MAP search for the control-variate centre ended at a non-finite log "
                f"density ({result.message}). Pass a centre explicitly, e.g. "
                "ControlVariate(centre=pm.find_MAP(...))."
            )
        if not result.success:
            warn(
                f"The MAP search stopped before converging after {result.nit} iterations "
                f"({result.message}); the control variate stays unbiased, but its noise "
                "grows with the distance from the mode. Raise `maxiter`, or pass a centre."
            )
        return MaximumAPosteriori(
            position=np.asarray(result.x, dtype=float),
            logp=logp,
            gradient=gradient,
            evaluations=self.evaluations - before,
            converged=bool(result.success),
            message=str(result.message),
        )
