"""The few places where PyMC 5 and PyMC 6 differ, kept in one module."""

from __future__ import annotations

import inspect
import numbers

import arviz
import numpy as np
import pymc

__all__ = ["DIVERGING_DTYPE", "PYMC_MAJOR", "sampling_chain_index"]

PYMC_MAJOR = int(pymc.__version__.split(".")[0])

#: dtype of the ``diverging`` sampler stat. ArviZ 1.x cannot summarise bool stats
#: (``az.summary(idata, group="sample_stats")`` subtracts them), while ArviZ 0.x's
#: ``plot_trace`` indexes draws with ``diverging`` and needs it bool.
DIVERGING_DTYPE = np.float64 if int(arviz.__version__.split(".")[0]) >= 1 else np.bool_


def sampling_chain_index() -> int | None:
    """Index of the chain that ``pm.sample`` is setting up, or None outside ``pm.sample``.

    PyMC hands a step method a generator per chain (``set_rng`` on PyMC 5,
    ``setup_chain`` on PyMC 6) but not the chain's number; error messages name the chain,
    so it is read from PyMC's sampling loop (``chain`` there, ``self.chain`` in a worker
    process) once per chain, never on the hot path.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            if frame.f_globals.get("__name__", "").startswith("pymc.sampling"):
                chain = frame.f_locals.get("chain")
                if chain is None:
                    chain = getattr(frame.f_locals.get("self"), "chain", None)
                if isinstance(chain, numbers.Integral):
                    return int(chain)
            frame = frame.f_back
        return None
    finally:
        del frame
