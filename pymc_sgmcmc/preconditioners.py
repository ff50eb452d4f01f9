"""Diagonal preconditioners for SGLD.

A preconditioner rescales each coordinate's step by ``G_i``, so that one step size suits
parameters whose posterior scales differ by orders of magnitude. The rule itself lives
in :mod:`pymc_sgmcmc.dynamics`; the class here holds its settings, checks them, and says
which of them the compiled kernel takes as inputs.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["RMSprop"]


class RMSprop:
    """RMSprop's diagonal preconditioner, as in pSGLD (Li, Chen, Carlson & Carin 2016).

    .. math::

        v_{k+1} = α v_k + (1 - α) g_k^2, \\qquad G = 1 / (λ + \\sqrt{v})

    ``v`` starts at the first minibatch gradient's square. ``G`` depends on the chain's
    path, and Li et al.'s correction term ``Γ(θ)`` (the divergence of ``G``) is **not**
    included: it is small when ``v`` changes slowly, but not zero. With the default
    ``adapt="tuning"`` the preconditioner adapts only while tuning and is frozen for the
    sampling phase: the sampling phase is then SGLD with a constant preconditioner, for
    which ``Γ = 0`` exactly and the only bias is the step size's.

    Parameters
    ----------
    decay : float, default 0.99
        ``α ∈ [0, 1)``: how slowly ``v`` forgets old gradients.
    epsilon : float, default 1e-5
        ``λ > 0``: keeps ``G`` finite where gradients vanish.
    adapt : {"tuning", "always"}, default "tuning"
        ``"always"`` keeps adapting while sampling, as Li et al. do (dropping ``Γ``).

    References
    ----------
    C. Li, C. Chen, D. Carlson and L. Carin. Preconditioned stochastic gradient Langevin
    dynamics for deep neural networks. AAAI 2016.
    """

    def __init__(self, *, decay: float = 0.99, epsilon: float = 1e-5, adapt: str = "tuning"):
        if (
            isinstance(decay, bool)
            or not isinstance(decay, numbers.Real)
            or not (0.0 <= decay < 1.0)
        ):
            raise ValueError(f"`decay` must lie in [0, 1), got {decay!r}.")
        if (
            isinstance(epsilon, bool)
            or not isinstance(epsilon, numbers.Real)
            or not np.isfinite(epsilon)
            or epsilon <= 0
        ):
            raise ValueError(f"`epsilon` must be positive and finite, got {epsilon!r}.")
        if adapt not in ("tuning", "always"):
            raise ValueError(f'`adapt` must be "tuning" or "always", got {adapt!r}.')
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.adapt = adapt

    def __repr__(self):
        return f"RMSprop(decay={self.decay!r}, epsilon={self.epsilon!r}, adapt={self.adapt!r})"

    def parameters(self, tuning: bool) -> dict[str, float]:
        """Kernel inputs: ``adapt`` is 1 while ``v`` may change, 0 once frozen."""
        adapting = tuning or self.adapt == "always"
        return {"decay": self.decay, "epsilon": self.epsilon, "adapt": float(adapting)}

    def values(self, square_average: np.ndarray) -> np.ndarray:
        """``G`` for a running average ``v``."""
        return 1.0 / (self.epsilon + np.sqrt(square_average))
