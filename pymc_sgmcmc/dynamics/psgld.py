"""Preconditioned SGLD with an RMSprop diagonal (Li, Chen, Carlson & Carin 2016)."""

from typing import NamedTuple

import pytensor.tensor as pt

__all__ = ["RMSpropAuxiliary", "preconditioned_sgld_update", "rmsprop_preconditioner"]


class RMSpropAuxiliary(NamedTuple):
    """pSGLD's state beside the position: RMSprop's running average ``v`` of squared
    gradients, shape ``(d,)``."""

    square_average: object


def rmsprop_preconditioner(square_average, logdensity_grad, *, decay, epsilon, adapt):
    """Update RMSprop's running average of squared gradients and return the preconditioner.

    .. math::

        v_{k+1} = α v_k + (1 - α) g_k^2, \\qquad G_{k+1} = 1 / (λ + \\sqrt{v_{k+1}})

    with decay ``α`` and ``λ = epsilon``. An all-zero ``v`` (a chain's start) is set to
    ``g²`` rather than averaged with zeros, which would make the first steps ``1/sqrt(1 −
    α)`` times too large. ``adapt = 0`` keeps ``v`` fixed (a constant preconditioner).

    Parameters
    ----------
    square_average, logdensity_grad : tensor, shape (d,)
        ``v_k`` and ``g_k``.
    decay : scalar
        ``α ∈ [0, 1)``.
    epsilon : scalar
        ``λ > 0``.
    adapt : scalar
        1 to update ``v``, 0 to keep it.

    Returns
    -------
    (square_average, preconditioner) : tuple of tensors, shape (d,)
    """
    squared = logdensity_grad**2
    averaged = decay * square_average + (1.0 - decay) * squared
    updated = adapt * averaged + (1.0 - adapt) * square_average
    square_average = pt.switch(pt.all(pt.eq(square_average, 0.0)), squared, updated)
    return square_average, 1.0 / (epsilon + pt.sqrt(square_average))


def preconditioned_sgld_update(
    position, logdensity_grad, step_size, temperature, noise, preconditioner
):
    """One preconditioned SGLD step with a diagonal preconditioner ``G``.

    .. math::

        θ_{k+1} = θ_k + η G g_k + \\sqrt{2 η T G}\\, ξ_k, \\qquad ξ_k \\sim N(0, I)

    For a constant ``G`` this is SGLD on the rescaled coordinates ``G^{-1/2} θ`` and
    targets ``π(θ)^{1/T}`` exactly as ``η → 0``. For a ``G`` that depends on ``θ`` the
    exact dynamics add ``η Γ(θ)`` with ``Γ_i = ∂G_ii/∂θ_i``; Li et al. drop it, and so
    does this rule.

    Parameters
    ----------
    position, logdensity_grad, noise, preconditioner : tensor, shape (d,)
    step_size : scalar tensor
        ``η``, positive.
    temperature : scalar
        ``T ≥ 0``.

    Returns
    -------
    tensor, shape (d,)
    """
    return (
        position
        + step_size * preconditioner * logdensity_grad
        + pt.sqrt(2.0 * step_size * temperature * preconditioner) * noise
    )
