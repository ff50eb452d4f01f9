"""The tools after sampling on a model whose data are streamed from a chunked store.

A model built on :func:`pymc_sgmcmc.Minibatch` over a zarr, xarray or Dask source has no
full-data copy that fits in memory. Here the model is copied once on a *block* of rows
(every streamed source replaced by a variable of any length), and a per-row quantity
(the pointwise log-likelihood, posterior predictive draws) is compiled as a function of
the posterior draws and of a block's rows. :func:`lazy_over_rows` then lays one Dask
task per block of the store's chunks: each reads its rows from the store and evaluates
them, on the threads of the local scheduler or on the workers of a distributed cluster
(the active ``distributed.Client``), and memory holds a block at a time.
"""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytensor
import pytensor.tensor as pt

from pytensor.graph.replace import clone_replace

from pymc_sgmcmc._compat import compile_function
from pymc_sgmcmc.full_data import _minibatch_outputs, _rebuilt, model_buffers, streamed_buffers

__all__ = [
    "BlockFunction",
    "BlockModel",
    "LazyFunction",
    "RowReader",
    "active_client",
    "block_model",
    "block_seeds",
    "chunk_inputs",
    "distributed_pass",
    "lazy_over_rows",
    "rows_per_task",
]


class BlockModel:
    """A streamed model's copy on one block of rows, with the sources to read blocks from.

    Attributes
    ----------
    model : pymc.Model
        The copy: every streamed source is a shared variable of any length (``data``),
        holding the first row of the store; ``total_size`` scaling is removed.
    data : list of SharedVariable
        One per source of every streamed ``Minibatch``, in the order of ``reader``'s.
    reader : RowReader
        Reads the sources' rows.
    rows : int
        Rows ``N`` of the sources.
    """

    def __init__(self, model):
        outputs = _minibatch_outputs([*model.named_vars.values(), *model.rvs_to_values.values()])
        self.buffers = streamed_buffers(outputs)
        in_memory = [
            tensor
            for node in {output.owner for output in outputs}
            for tensor in node.inputs[:-1]  # the data, then the random generator
            if getattr(tensor.tag, "row_buffer", None) is None
        ]
        if in_memory:
            raise NotImplementedError(
                "The model mixes pm.Minibatch (data in memory) with pymc_sgmcmc.Minibatch "
                "(data streamed from a store): the tools after sampling read a streamed "
                "model's rows block by block, and cannot slice the in-memory ones with them. "
                "Stream every minibatched array through one pymc_sgmcmc.Minibatch call (a "
                "NumPy array can be wrapped with dask.array.from_array)."
            )
        rows = {buffer.rows for buffer in self.buffers}
        if len(rows) > 1:
            raise NotImplementedError(
                "The model streams sources of different lengths "
                f"({sorted(rows)} rows): their rows cannot be evaluated block by block "
                "together."
            )
        (self.rows,) = rows
        self.reader = RowReader(self.buffers)
        first = self.reader.read(0, 1)
        self.data = [
            pytensor.shared(block, shape=(None, *block.shape[1:]), name=f"block_of_{source.name}")
            for block, source in zip(first, self.reader.sources, strict=True)
        ]
        shared = [variable for buffer in self.buffers for variable in buffer.shared]
        self.model = _rebuilt(model, initvals=False, data=dict(zip(shared, self.data, strict=True)))

    def block_inputs(self, graph):
        """``graph`` with the block's shared variables replaced by inputs; the inputs."""
        inputs = [variable.type(variable.name) for variable in self.data]
        return clone_replace(graph, dict(zip(self.data, inputs, strict=True))), inputs


class RowReader:
    """Reads rows of a model's streamed sources: what a Dask task needs of them (the
    sources, which open the store where they run, not a buffer's rows).

    Parameters
    ----------
    buffers : list of RowBuffer
    """

    def __init__(self, buffers):
        self.sources = [source for buffer in buffers for source in buffer.sources]
        self.dtypes = [dtype for buffer in buffers for dtype in buffer.dtypes]
        self.starts = buffers[0].starts
        self.rows = buffers[0].rows

    def read(self, start: int, stop: int) -> list[np.ndarray]:
        """Rows ``start..stop-1`` of every source."""
        return [
            source.read(int(start), int(stop)).astype(dtype, copy=False)
            for source, dtype in zip(self.sources, self.dtypes, strict=True)
        ]

    def take(self, rows) -> list[np.ndarray]:
        """The given rows (sorted indices) of every source, read chunk by chunk."""
        rows = np.asarray(rows, dtype=np.int64)
        chunks = np.searchsorted(self.starts, rows, side="right") - 1
        parts = []
        for chunk in np.unique(chunks):
            start, stop = int(self.starts[chunk]), int(self.starts[chunk + 1])
            wanted = rows[chunks == chunk] - start
            parts.append([block[wanted] for block in self.read(start, stop)])
        return [np.concatenate(blocks) for blocks in zip(*parts, strict=True)]

    def bounds(self, block_rows: int) -> list[tuple[int, int]]:
        """Row ranges of whole chunks, about ``block_rows`` rows each, covering the rows."""
        per_block = max(1, block_rows // int(np.diff(self.starts).max()))
        edges = sorted({*(int(start) for start in self.starts[::per_block]), self.rows})
        return list(zip(edges[:-1], edges[1:], strict=True))


class LazyFunction:
    """A compiled function built at its first call in each process, from a picklable
    ``build(*arguments)``; what a Dask worker receives instead of a compiled function.

    A worker keeps what it compiled (by the function's token), so the passes of an
    optimiser, each shipping the same function, compile it once per worker. Calls are
    serialised by a lock: a compiled PyTensor function keeps its storage.
    """

    def __init__(self, build, *arguments):
        self.build = build
        self.arguments = arguments
        self.token = uuid.uuid4().hex
        self._function = None
        self._received = False
        self._lock = threading.Lock()

    def __call__(self, *arrays):
        with self._lock:
            if self._function is None:
                self._function = self.build(*self.arguments)
                if self._received:
                    _COMPILED[self.token] = self._function
            return self._function(*arrays)

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_function"], state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._function = _COMPILED.get(self.token)
        self._received = True
        self._lock = threading.Lock()


#: What this (worker) process compiled of the LazyFunctions it received, by token.
_COMPILED: dict = {}


def active_client():
    """The active ``distributed.Client``, or None (Dask distributed not installed, or no
    client)."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def chunk_inputs(blocks, batch: int, weight: float, weight_dtype) -> list[np.ndarray]:
    """A full-data pass's inputs for consecutive rows: weights of shape ``(rows // batch,
    batch)`` (``batch / N`` per row, 0 for padding), then each data set's rows in blocks of
    that shape, a view where the rows need no padding. Padding repeats the first row, so
    that it is inside the support whatever the likelihood."""
    count = len(blocks[0])
    padded = -(-count // batch) * batch
    weights = np.zeros(padded, dtype=weight_dtype)
    weights[:count] = weight
    shaped = []
    for rows in blocks:
        if padded != count:
            rows = np.concatenate([rows, np.repeat(rows[:1], padded - count, axis=0)])
        shaped.append(rows.reshape(padded // batch, batch, *rows.shape[1:]))
    return [weights.reshape(-1, batch), *shaped]


def distributed_pass(function, reader, block_rows, calls, *, batch, weight_dtype):
    """Per block of rows, ``function(*call, weights, *rows)`` for every argument tuple in
    ``calls``: one Dask task per block, run on the active client's workers, each reading
    its rows from the store. Returns the results block by block, in row order.

    ``weights`` and ``rows`` are :func:`chunk_inputs` of the block's rows.
    """
    import dask

    token = uuid.uuid4().hex
    shared = [
        dask.delayed(value, name=f"{name}-{token}", traverse=False)
        for name, value in (("function", function), ("sources", reader), ("calls", calls))
    ]
    task = dask.delayed(_block_pass, pure=False)
    weight = batch / reader.rows
    parts = [
        task(*shared, start, stop, batch, weight, weight_dtype)
        for start, stop in reader.bounds(block_rows)
    ]
    return dask.compute(*parts)


def _block_pass(function, reader, calls, start, stop, batch, weight, weight_dtype):
    inputs = chunk_inputs(reader.read(start, stop), batch, weight, weight_dtype)
    # Arrays Dask sent out of band may come unaligned, which PyTensor's C code refuses.
    calls = [[np.require(value, requirements="A") for value in call] for call in calls]
    return [function(*call, *inputs) for call in calls]


def block_model(model) -> BlockModel | None:
    """The :class:`BlockModel` of a model that streams its data; None for any other."""
    return BlockModel(model) if model_buffers(model) else None


class BlockFunction:
    """``(draws, block rows[, generators]) ↦ values`` of a per-row graph, compiled lazily.

    Compiled at its first call in each process (a Dask worker gets the graph, not a
    compiled function), and called under a lock: a compiled PyTensor function keeps its
    storage, so threads of the local scheduler must not share a call.

    Parameters
    ----------
    draw_inputs : list of TensorVariable
        Stand-ins of the free variables (one draw each); the function takes them batched
        over a leading draw axis.
    block_inputs : list of TensorVariable
        The block's rows of each source.
    output : TensorVariable
        Rows on its first axis.
    rng_inputs : list of Variable, optional
        Random generators the graph draws with; a call gets fresh ones from its seed.
    """

    def __init__(self, draw_inputs, block_inputs, output, rng_inputs=()):
        self.draw_inputs = list(draw_inputs)
        self.block_inputs = list(block_inputs)
        self.rng_inputs = list(rng_inputs)
        self.output = output
        self.dtype = np.dtype(output.dtype)
        self._function = None
        self._lock = threading.Lock()

    def _compiled(self):
        if self._function is None:
            extra = [*self.block_inputs, *self.rng_inputs]
            batched = [
                pt.tensor(dtype=var.dtype, shape=(None, *var.type.shape))
                for var in self.draw_inputs
            ]
            try:
                output = pytensor.graph.replace.vectorize_graph(
                    self.output, dict(zip(self.draw_inputs, batched, strict=True))
                )
                function = compile_function([*batched, *extra], output, on_unused_input="ignore")
                self._function = (True, function)
            except (NotImplementedError, TypeError, ValueError):
                function = compile_function(
                    [*self.draw_inputs, *extra], self.output, on_unused_input="ignore"
                )
                self._function = (False, function)
        return self._function

    def cast(self, draws):
        """The draws in the inputs' dtypes (integer draws rounded)."""
        return [
            np.asarray(np.rint(a) if var.dtype.startswith(("int", "uint")) else a, dtype=var.dtype)
            for a, var in zip(draws, self.draw_inputs, strict=True)
        ]

    def __call__(self, draws, blocks, seed=None) -> np.ndarray:
        """Values for every draw (leading axis) and row of ``blocks``; of the rows only
        when there are no draw inputs."""
        n_samples = draws[0].shape[0] if draws else 1
        seeds = np.random.SeedSequence(seed)
        with self._lock:
            batched, function = self._compiled()
            if batched or not self.draw_inputs:
                generators = [np.random.default_rng(s) for s in seeds.spawn(len(self.rng_inputs))]
                values = function(*draws, *blocks, *generators)
            else:
                # One draw per call, each with its own generators: the same seed gives the
                # same values whichever way the graph was compiled.
                values = np.stack(
                    [
                        function(
                            *items,
                            *blocks,
                            *[np.random.default_rng(s) for s in child.spawn(len(self.rng_inputs))],
                        )
                        for items, child in zip(
                            zip(*draws, strict=True), seeds.spawn(n_samples), strict=True
                        )
                    ]
                )
        values = np.asarray(values)
        if values.ndim == self.output.ndim and self.draw_inputs:
            # A graph that reads no free variable (only data) has no draw axis.
            values = np.broadcast_to(values, (n_samples, *values.shape))
        return values

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_function"], state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._function = None
        self._lock = threading.Lock()


def _evaluate_block(function, reader, draws, start, stop, seed, shape):
    # Arrays Dask sent out of band may come unaligned, which PyTensor's C code refuses.
    draws = [np.require(values, requirements="A") for values in draws]
    values = function(draws, reader.read(start, stop), seed)
    return values.reshape(*shape, *values.shape[1:]) if shape else values


def lazy_over_rows(function, reader, draws, leading_shape, row_shape, *, block_rows, seeds=None):
    """A Dask array ``(*leading_shape, N, *row_shape)``: ``function`` on every block.

    One task per block of whole chunks; the draws enter the graph once. ``seeds``, one per
    block (from :func:`block_seeds`), make random outputs reproducible whatever runs them.
    """
    import dask
    import dask.array as da

    dtype = function.dtype
    bounds = reader.bounds(block_rows)
    seeds = [None] * len(bounds) if seeds is None else seeds
    # Named, not hashed: each enters the task graph once (a worker unpickles the function
    # and the sources once), and Dask does not pickle a PyTensor graph to name it.
    token = uuid.uuid4().hex
    function, reader, draws = (
        dask.delayed(value, name=f"{name}-{token}", traverse=False)
        for name, value in (("function", function), ("sources", reader), ("draws", draws))
    )
    evaluate = dask.delayed(_evaluate_block, pure=False)
    parts = [
        da.from_delayed(
            evaluate(function, reader, draws, start, stop, seed, leading_shape),
            shape=(*leading_shape, stop - start, *row_shape),
            dtype=dtype,
        )
        for (start, stop), seed in zip(bounds, seeds, strict=True)
    ]
    return da.concatenate(parts, axis=len(leading_shape))


def block_seeds(seed: np.random.SeedSequence, reader, block_rows: int) -> list[int]:
    """One seed per block of :meth:`RowReader.bounds`, drawn from ``seed``."""
    count = len(reader.bounds(block_rows))
    return [int(value) for value in seed.generate_state(count, np.uint64)]


def rows_per_task(samples: int, row_size: int, elements: int = 2**22) -> int:
    """Rows per task whose output for ``samples`` draws holds about ``elements`` values
    (32 MiB of float64), large enough that a task's overhead is negligible, and at most
    :data:`MAX_TASK_ROWS`, which bounds the rows a task reads (for few draws, e.g. the
    posterior mean, the output alone would allow millions)."""
    return min(MAX_TASK_ROWS, max(1, elements // max(1, samples * row_size)))


#: Rows a task reads at most: 65,536 rows of 56 float64 columns are 29 MiB.
MAX_TASK_ROWS = 2**16
