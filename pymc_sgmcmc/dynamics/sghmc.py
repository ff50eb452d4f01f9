"""Underdamped Langevin update of SGHMC (Chen, Fox & Guestrin 2014)."""

from typing import NamedTuple

import pytensor.tensor as pt

__all__ = ["SGHMCAuxiliary", "sghmc_update"]


class SGHMCAuxiliary(NamedTuple):
    """SGHMC's state beside the position: the momentum ``p``, shape ``(d,)``."""

    momentum: object


def sghmc_update(
    position,
    momentum,
    logdensity_grad,
    step_size,
    *,
    friction,
    mass,
    gradient_noise,
    temperature,
    noise,
):
    """One SGHMC step in the momentum form.

    .. math::

        p_{k+1} &= p_k + h g_k - h Γ M^{-1} p_k + N\\big(0,\\, 2h\\,(TΓ - \\hat B)\\big) \\\\
        θ_{k+1} &= θ_k + h M^{-1} p_{k+1}

    with step ``h``, mass ``M``, friction ``Γ`` and gradient-noise estimate ``B̂``
    (the minibatch gradient adds ``h² V = 2 h B`` of variance to ``p`` per step, with
    ``B = h V / 2``; the injected noise makes up the rest of ``2 h T Γ``). The stationary
    distribution is ``π(θ)^{1/T} N(p; 0, T M)``. Where ``TΓ < B̂`` no noise is injected
    (callers check and report this). In Chen et al.'s practical form, ``v = h p / M``,
    learning rate ``η = h²/M``, momentum decay ``α = hΓ/M`` and ``β̂ = hB̂/M``.

    Limits: ``T = 0, B̂ = 0`` is heavy-ball SGD with momentum ``1 − hΓ/M`` and learning
    rate ``h²/M``; ``M = 1, Γ = 1/h`` is one SGLD step with ``η = h²``.

    Parameters
    ----------
    position, momentum, logdensity_grad : tensor, shape (d,)
    step_size : scalar tensor
        ``h``, positive.
    friction, mass, gradient_noise : scalar or tensor of shape (d,)
        ``Γ > 0``, ``M > 0`` and ``B̂ ≥ 0``, per coordinate or shared.
    temperature : scalar
        ``T ≥ 0``.
    noise : tensor, shape (d,)
        Standard normal draw for the momentum.

    Returns
    -------
    (position, momentum) : tuple of tensors, shape (d,)
    """
    noise_scale = pt.sqrt(
        2.0 * step_size * pt.maximum(temperature * friction - gradient_noise, 0.0)
    )
    momentum = (
        momentum
        + step_size * logdensity_grad
        - step_size * friction / mass * momentum
        + noise_scale * noise
    )
    position = position + step_size * momentum / mass
    return position, momentum
