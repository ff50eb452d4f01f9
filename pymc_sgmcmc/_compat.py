"""The few places where PyMC 5 and PyMC 6 differ, kept in one module."""

from __future__ import annotations

import inspect
import numbers

from typing import NamedTuple

import arviz
import numpy as np
import pymc
import pymc.pytensorf

__all__ = [
    "DIVERGING_DTYPE",
    "PYMC_MAJOR",
    "ChainContext",
    "compile_function",
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
    """Compile a graph of the package the way PyMC compiles log densities."""
    return _pymc_compile(inputs, outputs, **kwargs)


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
