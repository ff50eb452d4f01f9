"""Overdamped Langevin update of SGLD (Welling & Teh 2011)."""

from typing import NamedTuple

import pytensor.tensor as pt

__all__ = ["SGLDAuxiliary", "sgld_update"]


class SGLDAuxiliary(NamedTuple):
    """SGLD keeps no state beside the position."""


def sgld_update(position, logdensity_grad, step_size, temperature, noise):
    """One SGLD step.

    .. math::

        θ_{k+1} = θ_k + η_k g_k + \\sqrt{2 η_k T}\\, ξ_k, \\qquad ξ_k \\sim N(0, I)

    where ``g_k`` is an (unbiased, minibatch) estimate of the gradient of the log
    posterior at ``θ_k``. The target is ``π(θ)^{1/T}``; ``T = 0`` is stochastic gradient
    ascent. Welling & Teh write ``Δθ = (ε/2) g + N(0, ε)``, i.e. ``η = ε/2``.

    Parameters
    ----------
    position : tensor, shape (d,)
    logdensity_grad : tensor, shape (d,)
    step_size : scalar tensor
        ``η_k``, positive.
    temperature : scalar
        ``T``, non-negative.
    noise : tensor, shape (d,)
        Standard normal draw ``ξ_k``.

    Returns
    -------
    tensor, shape (d,)
        The next position.
    """
    return position + step_size * logdensity_grad + pt.sqrt(2.0 * step_size * temperature) * noise
