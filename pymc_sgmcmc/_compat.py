"""The few places where PyMC 5 and PyMC 6 differ, kept in one module."""

from __future__ import annotations

import inspect
import numbers

from typing import NamedTuple

import arviz
import numpy as np
import pymc
import pymc.pytensorf
import pytensor

from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.replace import clone_replace
from pytensor.graph.traversal import graph_inputs
from pytensor.tensor.type import TensorType

__all__ = [
    "DIVERGING_DTYPE",
    "PYMC_MAJOR",
    "ChainContext",
    "compile_function",
    "runs_on_jax",
    "sampling_chain_context",
    "sample_arguments",
]

PYMC_MAJOR = int(pymc.__version__.split(".")[0])

#: dtype of the ``diverging`` sampler stat. ArviZ 1.x cannot summarise bool stats
#: (``az.summary(idata, group="sample_stats")`` subtracts them), while ArviZ 0.x's
#: ``plot_trace`` indexes draws with ``diverging`` and needs it bool.
DIVERGING_DTYPE = np.float64 if int(arviz.__version__.split(".")[0]) >= 1 else np.bool_


#: PyMC's ``compile`` (``compile_pymc`` before PyMC 5.22): ``pytensor.function`` with
#: PyMC's rewrites, among them the one that turns a parameter check (``sigma > 0``) into a
#: log density of -inf instead of an exception, so a blow-up reads as a divergence.
_pymc_compile = getattr(pymc.pytensorf, "compile", None) or pymc.pytensorf.compile_pymc


def compile_function(inputs, outputs, **kwargs):
    """Compile a graph of the package the way PyMC compiles log densities.

    Under PyTensor's JAX backend (``mode="JAX"``) see :class:`JAXFunction`: the data stay
    on the device and the outputs come back as NumPy arrays.
    """
    if not runs_on_jax(kwargs):
        return _pymc_compile(inputs, outputs, **kwargs)
    outputs, data = _private_data(outputs)
    return JAXFunction(_pymc_compile(inputs, outputs, **kwargs), data)


def runs_on_jax(compile_kwargs: dict) -> bool:
    """Whether functions compiled with ``compile_kwargs`` run on PyTensor's JAX backend
    (``mode="JAX"``, or a mode with its linker, or PyTensor's default mode)."""
    mode = pytensor.compile.mode.get_mode(compile_kwargs.get("mode"))
    return type(mode.linker).__name__ == "JAXLinker"


def _private_data(outputs):
    """``outputs`` with every shared array (the model's data) replaced by a private copy,
    and the ``(original, copy)`` pairs: the copies may hold device arrays, which PyMC's own
    functions on the originals could not take."""
    single = not isinstance(outputs, list | tuple)
    listed = [outputs] if single else list(outputs)
    originals = [
        variable
        for variable in graph_inputs(listed)
        if isinstance(variable, SharedVariable)
        and isinstance(variable.type, TensorType)
        and variable.type.ndim > 0
    ]
    if not originals:
        return outputs, []
    copies = {
        original: pytensor.shared(original.get_value(borrow=True), name=original.name)
        for original in originals
    }
    replaced = clone_replace(listed, replace=copies)
    return (replaced[0] if single else replaced), list(copies.items())


class JAXFunction:
    """A function compiled for PyTensor's JAX backend, made to behave as PyMC needs.

    - The model's data (shared arrays) are put on the device once, not converted and
      copied at every call, which the JAX backend does with a shared NumPy value (16 MB
      of data took 2 ms per call). A new value of the original (``pm.set_data``) is put
      on the device at the next call.
    - The outputs come back as writable NumPy arrays, for PyMC's points and traces.

    Every other attribute is the compiled function's.
    """

    def __init__(self, function, data):
        self.function = function
        self._data = data
        self._on_device = [None] * len(data)

    def __call__(self, *args, **kwargs):
        # JAX only where it runs.
        import jax

        for number, (original, copy) in enumerate(self._data):
            value = original.get_value(borrow=True)
            if value is not self._on_device[number]:
                copy.container.storage[0] = jax.device_put(value)
                self._on_device[number] = value
        # All outputs in one transfer, then writable copies.
        outputs = jax.device_get(self.function(*args, **kwargs))
        if isinstance(outputs, list | tuple):
            return [np.array(output) for output in outputs]
        return np.array(outputs)

    def __getstate__(self):
        # Device arrays do not pickle into a function: back to NumPy, uploaded again later.
        for original, copy in self._data:
            copy.container.storage[0] = original.get_value(borrow=True)
        state = self.__dict__.copy()
        state["_on_device"] = [None] * len(self._data)
        return state

    def __getattr__(self, name):
        if name == "function":
            # Not set yet: an instance being unpickled.
            raise AttributeError(name)
        return getattr(self.function, name)


class ChainContext(NamedTuple):
    """What ``pm.sample`` knows of the chain being set up; None where it cannot be read."""

    chain: int | None
    tune: int | None
    draws: int | None


def sampling_chain_context(tune: int | None = None, draws: int | None = None) -> ChainContext:
    """The chain number and its tuning and sampling draws, read from PyMC's sampling loop.

    PyMC hands a step method a generator per chain (``set_rng`` on PyMC 5,
    ``setup_chain(rng, tune, draws)`` on PyMC 6) but not the chain's number, nor on PyMC 5
    its length; messages name the chain and the divergence summary is given at the
    chain's last draw, so they are read from PyMC's sampling loop (locals of
    ``_iter_sample``, or ``self`` of a worker process) once per chain, never on the hot
    path. ``tune`` and ``draws`` given (PyMC 6) take precedence.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            if frame.f_globals.get("__name__", "").startswith("pymc.sampling"):
                local = frame.f_locals
                worker = local.get("self")
                chain = local.get("chain", getattr(worker, "chain", None))
                if isinstance(chain, numbers.Integral):
                    if tune is None or draws is None:
                        tune, draws = _loop_lengths(local, worker)
                    return ChainContext(int(chain), tune, draws)
            frame = frame.f_back
        return ChainContext(None, tune, draws)
    finally:
        del frame


def _loop_lengths(local, worker) -> tuple[int | None, int | None]:
    # _iter_sample's `draws` counts the tuning draws too; a worker's `_draws` does not.
    tune = local.get("tune")
    total = local.get("draws")
    if isinstance(tune, numbers.Integral) and isinstance(total, numbers.Integral):
        return int(tune), int(total) - int(tune)
    tune, draws = getattr(worker, "_tune", None), getattr(worker, "_draws", None)
    if isinstance(tune, numbers.Integral) and isinstance(draws, numbers.Integral):
        return int(tune), int(draws)
    return None, None


def sample_arguments() -> dict | None:
    """Arguments of the running ``pm.sample`` call (``initvals``, ``idata_kwargs``), or
    None outside ``pm.sample``.

    A step method sees only each chain's start point, not whether the user chose it (it
    jitters the starts it was not given), nor what the trace will hold.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            if frame.f_code.co_name == "sample" and frame.f_globals.get("__name__") == (
                "pymc.sampling.mcmc"
            ):
                local = frame.f_locals
                return {
                    "initvals": local.get("initvals"),
                    "idata_kwargs": local.get("idata_kwargs"),
                }
            frame = frame.f_back
        return None
    finally:
        del frame
