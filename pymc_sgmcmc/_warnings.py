"""The package's warnings: one base class to filter them by, raised at the user's call."""

from __future__ import annotations

import sys
import warnings

__all__ = ["MinibatchNoiseWarning", "SGMCMCWarning", "SamplerDivergenceWarning", "warn"]

# Frames of these packages are skipped, so that a warning raised while ``pm.sample`` runs
# a step method points at the user's ``pm.sample(...)`` line, not inside a library.
_LIBRARY_PREFIXES = ("pymc_sgmcmc", "pymc", "pytensor", "arviz", "arviz_stats", "xarray")


class SGMCMCWarning(UserWarning):
    """Base class of every warning of pymc-sgmcmc.

    Filter them all with ``warnings.filterwarnings("ignore", category=SGMCMCWarning)``,
    or one kind by its subclass.
    """


class MinibatchNoiseWarning(SGMCMCWarning):
    """Minibatch gradient noise dominates the injected noise: the draws are too wide.

    Filter it on its own with
    ``warnings.filterwarnings("ignore", category=MinibatchNoiseWarning)``.
    """


class SamplerDivergenceWarning(SGMCMCWarning):
    """Some draws of a chain diverged; each went back to the chain's last finite state."""


def _outside_libraries_stacklevel() -> int:
    """The ``stacklevel`` of the innermost frame outside the libraries, seen from ``warn``'s
    caller's ``warnings.warn`` call."""
    frame = sys._getframe(2)
    level = 2
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.split(".")[0] not in _LIBRARY_PREFIXES and not module.startswith("_pytest"):
            return level
        frame = frame.f_back
        level += 1
    return 2


def warn(message: str, category: type[Warning] = SGMCMCWarning) -> None:
    """``warnings.warn`` at the first frame outside pymc-sgmcmc, PyMC and PyTensor."""
    warnings.warn(message, category, stacklevel=_outside_libraries_stacklevel())
