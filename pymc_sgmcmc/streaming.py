"""Minibatches from arrays larger than memory: zarr, xarray and Dask sources.

``pm.Minibatch(X, y, batch_size=B)`` holds the whole data set in the graph and draws
``B`` random rows of it at every step. Random rows of a compressed, chunked store cost a
chunk's read each, so here the samplers draw their minibatches from a buffer of whole
chunks, chosen at random, that a background thread refills while the kernel runs.

The scheme, and why every minibatch gradient stays unbiased:

* The buffer has ``K`` slots. Each slot holds one chunk ``c`` of the source drawn at random
  with probability ``n_c / N`` (its share of the ``N`` rows), independently of the other
  slots and of everything drawn before.
* Each minibatch row is drawn by picking a slot uniformly, then a row of its chunk
  uniformly: ``P(row i) = Σ_k (1/K) (n_c / N) (1/n_c) = 1/N`` for every row ``i``, whatever
  the chunks' sizes. So each row of a minibatch is a uniform draw from the ``N`` rows, as
  ``pm.Minibatch``'s are, and ``(N/B) Σ_batch ∇ log p(x_i | θ)`` is unbiased.
* After every draw (``steps_per_draw`` SG steps) the oldest slots get fresh chunks, read
  ahead of time by a background thread: one chunk for every ``row_reuse`` chunks' worth of
  rows the draw's minibatches used. A slot's chunk is a new independent draw, so the
  argument above holds at every step.

What the scheme changes is the independence of successive minibatches: the buffer is a
random subset of ``m`` rows that changes only as chunks are replaced, more slowly than a
chain moves, so with plain minibatch gradients the chain follows the posterior of that
subset (likelihood scaled by ``N/m``) and its draws are about ``sqrt(1 + N/m)`` times too
wide. Control variates take the buffer's noise on the differences
``∇ log p(x_i | θ) − ∇ log p(x_i | θ̂)`` only, which removes the effect; the defaults use
them, and a sampler without them on streamed data warns. The docs page "Data larger than
memory" gives the measurements.

Which library does what: zarr reads the store (compressed chunks, on disk or at a URL),
Dask reads a Dask array (and a zarr or xarray source through ``dask.array``), xarray gives
the named datasets; this module only chooses the chunks and copies them into the buffer.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import numbers
import os

from collections import deque

import numpy as np
import pymc as pm
import pytensor

from pymc_sgmcmc._validation import positive_int

__all__ = ["Minibatch"]

#: The buffer holds at least this many rows (rounded up to whole chunks) ...
DEFAULT_BUFFER_ROWS = 2**16
#: ... and at least this many chunks, so that a minibatch mixes many chunks.
MIN_BUFFER_CHUNKS = 16
#: Rows per block of the NaN check's pass over the data.
CHECK_BLOCK_ROWS = 2**16


def Minibatch(*sources, batch_size: int, buffer_chunks: int | None = None, row_reuse: float = 4.0):
    """Minibatches of rows drawn together from arrays that may not fit in memory.

    A drop-in for ``pm.Minibatch``: it returns the minibatch tensors (one per source, or
    the tensor for one source), and the likelihood that uses them takes
    ``total_size=N``, the rows of the sources. Each row of a minibatch is a uniform draw
    from the ``N`` rows, as ``pm.Minibatch``'s, so the minibatch gradient stays unbiased;
    the rows come from a buffer of random whole chunks, refilled by a background thread
    while the kernel runs (the module's docstring gives the scheme and the correlation it
    adds between successive minibatches).

    Parameters
    ----------
    *sources : zarr.Array, dask.array.Array, xarray.DataArray or numpy.ndarray
        The data, rows on the first axis, all with the same number of rows. The chunks of
        the first chunked source (zarr or Dask) set the buffer's chunks. With NumPy
        arrays only, this is ``pm.Minibatch`` itself.
    batch_size : int
        Rows per minibatch ``B``.
    buffer_chunks : int, optional
        Slots of the buffer ``K``; by default enough chunks for 65,536 rows, and at least
        16. Memory is ``K`` chunks per source.
    row_reuse : float, default 4
        Minibatch rows drawn per row read: after each draw the buffer replaces one chunk
        for every ``row_reuse`` chunks' worth of rows its minibatches used. Reading a row
        from a compressed store costs about as much as a gradient's work on it, so 4 keeps
        the reading to a fifth of the time; 1 reads every row about once. With control
        variates the turnover does not change the posterior (see Notes).

    Notes
    -----
    Sample streamed data with control variates (the samplers' defaults turn them on):
    with plain minibatch gradients the chain follows the posterior of the rows in the
    buffer, about ``sqrt(1 + N / buffer rows)`` times too wide (the module's docstring).

    Returns
    -------
    TensorVariable or list of TensorVariable
        As ``pm.Minibatch``.

    Examples
    --------
    >>> import zarr
    >>> store = zarr.open_group("data.zarr", mode="r")  # doctest: +SKIP
    >>> with pm.Model():  # doctest: +SKIP
    ...     X_batch, y_batch = pymc_sgmcmc.Minibatch(store["X"], store["y"], batch_size=256)
    ...     beta = pm.Normal("beta", 0, 1, shape=store["X"].shape[1])
    ...     pm.Bernoulli("y", logit_p=X_batch @ beta, observed=y_batch,
    ...                  total_size=store["y"].shape[0])
    """
    if not sources:
        raise TypeError("Minibatch needs at least one data source.")
    batch_size = positive_int("batch_size", batch_size)
    wrapped = [RowSource(source, position) for position, source in enumerate(sources)]
    if all(source.chunk_rows is None for source in wrapped):
        return pm.Minibatch(*sources, batch_size=batch_size)
    buffer = RowBuffer(wrapped, buffer_chunks=buffer_chunks, row_reuse=row_reuse)
    return pm.Minibatch(*buffer.shared, batch_size=batch_size)


class RowSource:
    """One data source with rows on its first axis, read by row ranges.

    Parameters
    ----------
    source : zarr.Array, dask.array.Array, xarray.DataArray or numpy.ndarray
    position : int
        Its place among the sources (for messages).
    """

    def __init__(self, source, position: int = 0):
        self.position = position
        name = getattr(source, "name", None)
        # zarr names an array by its path in the store ("/X").
        self.name = str(name).lstrip("/") if name else f"source {position + 1}"
        if _is_xarray(source):
            # A Dask-backed DataArray reads through Dask; a lazily loaded one (zarr without
            # Dask) through xarray's own indexing.
            source = source.data if _is_dask(source.data) else source.variable
        self.array = source
        shape = getattr(source, "shape", None)
        if shape is None or len(shape) == 0:
            raise TypeError(
                f"Minibatch source {self.name!r} has no rows: pass an array (zarr, Dask, "
                f"xarray or NumPy) with rows on its first axis, got {type(source).__name__}."
            )
        self.shape = tuple(int(size) for size in shape)
        self.rows = self.shape[0]
        self.dtype = np.dtype(source.dtype)
        self.chunk_rows = _chunk_rows(source)

    def read(self, start: int, stop: int, *, check: bool = False) -> np.ndarray:
        """Rows ``start..stop-1`` as a NumPy array; with ``check``, NaN is refused."""
        block = self.array[start:stop]
        if _is_dask(block):
            # The reading thread waits anyway: Dask's own thread pool would only add work.
            block = block.compute(scheduler="synchronous")
        elif hasattr(block, "values") and not isinstance(block, np.ndarray):
            block = block.values
        block = np.asarray(block, dtype=self.dtype)
        if check and block.dtype.kind in "fc" and np.isnan(block).any():
            rows = start + np.flatnonzero(np.isnan(block.reshape(block.shape[0], -1)).any(axis=1))
            raise ValueError(
                f"The Minibatch source {self.name!r} holds NaN in rows {rows[:5].tolist()} "
                f"(of {rows.size} in rows {start}..{stop - 1}). A minibatch with these rows "
                "has a NaN log density, which would read as divergences. Drop or impute "
                "those rows in the store."
            )
        return block


class RowBuffer:
    """The buffer of random chunks that streamed minibatches are drawn from.

    It holds one shared variable per source, of ``K x C`` rows (``C`` the largest
    chunk's rows): slot ``k`` is rows ``kC .. kC + n_k - 1``, its chunk, and the rest of the
    slot repeats the chunk's rows, so that any row of the buffer is a row of the data.

    Parameters
    ----------
    sources : list of RowSource
    buffer_chunks : int, optional
    row_reuse : float
    """

    def __init__(self, sources, *, buffer_chunks=None, row_reuse=4.0):
        rows = {source.rows for source in sources}
        if len(rows) > 1:
            raise ValueError(
                "The sources of one Minibatch must have the same number of rows (they are "
                f"read row by row together); got {[source.rows for source in sources]}."
            )
        (self.rows,) = rows
        if self.rows == 0:
            raise ValueError("The Minibatch sources have no rows.")
        self.sources = sources
        chunked = next(source for source in sources if source.chunk_rows is not None)
        self.starts = np.concatenate([[0], np.cumsum(chunked.chunk_rows)]).astype(np.int64)
        self.chunk_sizes = np.diff(self.starts)
        self.chunk_probabilities = self.chunk_sizes / self.rows
        self.slot_rows = int(self.chunk_sizes.max())
        if buffer_chunks is None:
            buffer_chunks = max(MIN_BUFFER_CHUNKS, -(-DEFAULT_BUFFER_ROWS // self.slot_rows))
        self.slots = positive_int("buffer_chunks", buffer_chunks)
        if (
            isinstance(row_reuse, bool)
            or not isinstance(row_reuse, numbers.Real)
            or not 0 < row_reuse < np.inf
        ):
            raise ValueError(
                "`row_reuse` must be a positive number (minibatch rows drawn per row read "
                f"from the store), got {row_reuse!r}."
            )
        self.row_reuse = float(row_reuse)
        self.slot_sizes = np.zeros(self.slots, dtype=np.int64)
        self.shared = []
        # Integer data in PyMC's integer type (intX), as pm.Data makes it: an observed
        # variable then needs no cast of its minibatch, which PyMC would refuse.
        integers = np.dtype("int16" if pytensor.config.floatX == "float32" else "int32")
        self.dtypes = [
            integers if source.dtype.kind in "biu" else source.dtype for source in sources
        ]
        for source, dtype in zip(sources, self.dtypes, strict=True):
            value = np.zeros((self.slots * self.slot_rows, *source.shape[1:]), dtype=dtype)
            variable = pytensor.shared(value, borrow=True, name=f"buffer_of_{source.name}")
            # How MinibatchLogPosterior finds the buffer behind a pm.Minibatch input.
            variable.tag.row_buffer = self
            self.shared.append(variable)
        self._checked = False
        self._executor = None
        self._executor_process = None
        self._pending: deque = deque()
        # A buffer usable before any chain starts (PyMC's initial point, start checks),
        # with no reading thread until one does.
        self.start_chain(np.random.default_rng(0), prefetch=False)

    # ---- the chain's schedule --------------------------------------------------------
    def start_chain(self, rng: np.random.Generator, *, prefetch: bool = True) -> None:
        """Fill every slot from a fresh schedule drawn with ``rng`` (the chain's child).

        The chunks a chain reads depend only on ``rng``, never on the reading thread's
        timing, so the same seed gives the same minibatches.
        """
        self._discard_pending()
        self._rng = rng
        self._next_slot = 0
        self._due = 0.0
        self._ahead = 2
        for slot, chunk in enumerate(self._draw_chunks(self.slots)):
            self._place(slot, chunk, self._read_chunk(chunk))
        if prefetch:
            self._prefetch()

    def refresh(self, rows_drawn: float) -> None:
        """Give the oldest slots their scheduled fresh chunks after a draw whose
        minibatches drew ``rows_drawn`` rows: one per ``row_reuse`` chunks' worth."""
        self._due = min(
            self._due + rows_drawn / (self.row_reuse * self.rows / self.chunk_sizes.size),
            float(self.slots),
        )
        self._ahead = min(self.slots, max(2, 2 * int(np.ceil(self._due))))
        self._prefetch()
        while self._due >= 1:
            self._due -= 1
            chunk, future = self._pending.popleft()
            self._place(self._next_slot, chunk, future.result())
            self._next_slot = (self._next_slot + 1) % self.slots
        self._prefetch()

    def _draw_chunks(self, count: int) -> np.ndarray:
        return self._rng.choice(self.chunk_sizes.size, size=count, p=self.chunk_probabilities)

    def _prefetch(self) -> None:
        """Keep about two draws' fresh chunks read ahead, in the background thread."""
        if self._executor is None or self._executor_process != os.getpid():
            # A forked worker process inherits the executor but not its thread.
            self._pending.clear()
            self._executor_process = os.getpid()
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="pymc_sgmcmc_buffer"
            )
        missing = self._ahead - len(self._pending)
        if missing > 0:
            for chunk in self._draw_chunks(missing):
                self._pending.append((chunk, self._executor.submit(self._read_chunk, chunk)))

    def _discard_pending(self) -> None:
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()

    def _read_chunk(self, chunk: int) -> list[np.ndarray]:
        return self._read_rows(int(self.starts[chunk]), int(self.starts[chunk + 1]))

    def _place(self, slot: int, chunk: int, blocks) -> None:
        size = int(self.chunk_sizes[chunk])
        begin = slot * self.slot_rows
        for variable, block in zip(self.shared, blocks, strict=True):
            value = variable.get_value(borrow=True)
            value[begin : begin + size] = block
            # A short chunk's slot is filled up with its rows again: every buffer row is a
            # row of the data.
            for offset in range(size, self.slot_rows, size):
                count = min(size, self.slot_rows - offset)
                value[begin + offset : begin + offset + count] = block[:count]
            variable.set_value(value, borrow=True)
        self.slot_sizes[slot] = size

    # ---- minibatch rows ----------------------------------------------------------------
    def draw_indices(self, rng: np.random.Generator, shape, dtype) -> np.ndarray:
        """Buffer rows for minibatches: a uniform slot, then a uniform row of its chunk."""
        if np.all(self.slot_sizes == self.slot_rows):
            # Whole chunks everywhere: a uniform buffer row is the same distribution.
            return rng.integers(0, self.slots * self.slot_rows, size=shape, dtype=dtype)
        slots = rng.integers(0, self.slots, size=shape)
        rows = rng.integers(0, self.slot_sizes[slots])
        return (slots * self.slot_rows + rows).astype(dtype)

    def chunks(self, rows_per_chunk: int, *, check: bool = False):
        """The sources' rows in consecutive blocks of about ``rows_per_chunk`` rows (whole
        chunks), each block read while the one before is in use; with ``check``, NaN is
        refused."""
        per_block = max(1, rows_per_chunk // self.slot_rows)
        bounds = sorted({*(int(start) for start in self.starts[::per_block]), self.rows})
        ranges = list(zip(bounds[:-1], bounds[1:], strict=True))
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:

            def read(rows):
                return executor.submit(self._read_rows, *rows, check=check)

            reads = deque(read(rows) for rows in ranges[:2])
            for ahead in ranges[2:]:
                current = reads.popleft()
                reads.append(read(ahead))
                yield current.result()
            while reads:
                yield reads.popleft().result()

    def check_rows(self) -> None:
        """Read every row once (block by block) and refuse NaN, before any chain starts
        or full-data pass runs; the only NaN check the rows need, since the store is
        read-only here. Done once; pickled copies inherit it."""
        if not self._checked:
            for _ in self.chunks(CHECK_BLOCK_ROWS, check=True):
                pass
            self._checked = True

    def _read_rows(self, start: int, stop: int, *, check: bool = False) -> list[np.ndarray]:
        return [
            source.read(start, stop, check=check).astype(dtype, copy=False)
            for source, dtype in zip(self.sources, self.dtypes, strict=True)
        ]

    def refill(self) -> None:
        """Allocate the slots and fill them as when the buffer was built: in a worker
        that received the buffer without its rows (:func:`rows_left_behind`)."""
        for variable, source, dtype in zip(self.shared, self.sources, self.dtypes, strict=True):
            shape = (self.slots * self.slot_rows, *source.shape[1:])
            variable.set_value(np.zeros(shape, dtype=dtype), borrow=True)
        self.start_chain(np.random.default_rng(0), prefetch=False)

    # ---- pickling (pm.sample's worker processes) -----------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_executor"] = state["_executor_process"] = None
        state["_pending"] = deque()
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)


@contextlib.contextmanager
def rows_left_behind(buffers):
    """Within the block, the buffers hold no rows, so that a model pickled there carries
    its sources (a store's path or URL) but not the rows read from them; a worker calls
    :meth:`RowBuffer.refill` after unpickling."""
    values = [(variable, variable.get_value(borrow=True)) for b in buffers for variable in b.shared]
    try:
        for variable, value in values:
            variable.set_value(value[:0], borrow=True)
        yield
    finally:
        for variable, value in values:
            variable.set_value(value, borrow=True)


def _is_dask(array) -> bool:
    return type(array).__module__.startswith("dask.")


def _is_xarray(array) -> bool:
    return type(array).__module__.startswith("xarray.") and hasattr(array, "variable")


def _chunk_rows(source) -> tuple[int, ...] | None:
    """Rows of each chunk along the first axis; None for an in-memory array."""
    rows = int(source.shape[0])
    if _is_dask(source):
        return tuple(int(size) for size in source.chunks[0])
    chunks = getattr(source, "chunks", None)
    if chunks is None and hasattr(source, "encoding"):
        chunks = source.encoding.get("chunks") or source.encoding.get("preferred_chunks")
        if isinstance(chunks, dict):
            chunks = tuple(chunks.values())
    if chunks is None or isinstance(source, np.ndarray):
        return None
    first = chunks[0]
    if isinstance(first, numbers.Integral):
        size = int(first)
        return (size,) * (rows // size) + ((rows % size,) if rows % size else ())
    return tuple(int(size) for size in first)
