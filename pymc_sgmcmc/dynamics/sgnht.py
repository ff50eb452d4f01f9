"""Stochastic gradient Nosé-Hoover thermostat update (Ding et al. 2014)."""

from typing import NamedTuple

import pytensor.tensor as pt

__all__ = ["SGNHTAuxiliary", "sgnht_update"]


class SGNHTAuxiliary(NamedTuple):
    """SGNHT's state beside the position: the momentum ``p``, shape ``(d,)``, and the
    thermostat ``ξ``, a scalar kept as a vector of length 1 beside it."""

    momentum: object
    thermostat: object


def sgnht_update(
    position, momentum, thermostat, logdensity_grad, step_size, *, diffusion, temperature, noise
):
    """One SGNHT step.

    .. math::

        p_{k+1} &= p_k + h g_k - h ξ_k p_k + N(0,\\, 2 h A) \\\\
        θ_{k+1} &= θ_k + h p_{k+1} \\\\
        ξ_{k+1} &= ξ_k + h \\left( p_{k+1}^\\top p_{k+1} / d - T \\right)

    with step ``h``, diffusion ``A`` and a scalar thermostat ``ξ`` acting as adaptive
    friction: it grows while the kinetic temperature ``pᵀp/d`` exceeds ``T`` and shrinks
    below it. Minibatch noise adds ``h² V`` to the momentum per step, which ``ξ``
    absorbs without being told ``V``: at stationarity ``E[ξ] T = A + h V̄ / 2``, ``pᵀp/d``
    averages ``T`` and ``θ`` follows ``π(θ)^{1/T}`` (for noise of about the same size in
    every coordinate, since one thermostat serves them all).

    Parameters
    ----------
    position, momentum, logdensity_grad : tensor, shape (d,)
    thermostat : scalar tensor
        ``ξ``.
    step_size : scalar tensor
        ``h``, positive.
    diffusion : scalar
        ``A ≥ 0``, the variance rate of the injected noise.
    temperature : scalar
        ``T ≥ 0``.
    noise : tensor, shape (d,)
        Standard normal draw for the momentum.

    Returns
    -------
    (position, momentum, thermostat) : tuple of tensors, shapes (d,), (d,), ()
    """
    momentum = (
        momentum
        + step_size * logdensity_grad
        - step_size * thermostat * momentum
        + pt.sqrt(2.0 * step_size * diffusion) * noise
    )
    position = position + step_size * momentum
    kinetic_temperature = pt.mean(momentum**2)
    thermostat = thermostat + step_size * (kinetic_temperature - temperature)
    return position, momentum, thermostat
