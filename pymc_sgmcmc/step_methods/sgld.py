"""SGLD as a PyMC step method."""

from __future__ import annotations

from pymc_sgmcmc.dynamics import sgld_update
from pymc_sgmcmc.step_methods.base import StochasticGradientStep

__all__ = ["SGLD"]


class SGLD(StochasticGradientStep):
    r"""Stochastic gradient Langevin dynamics (Welling & Teh 2011).

    Each SG step draws a fresh minibatch and moves

    .. math::

        θ_{k+1} = θ_k + η_k \nabla \log \hat π(θ_k) + \sqrt{2 η_k T}\, ξ_k,
        \qquad ξ_k \sim N(0, I),

    where ``log π̂`` is the model's minibatch log posterior (prior plus ``N/B`` times the
    minibatch likelihood, on PyMC's unconstrained space). The target is
    ``π(θ)^{1/T}``. No Metropolis correction is applied: a constant step size biases the
    draws by O(η) (with exact gradients on ``N(0, σ²)`` the stationary variance is
    ``σ² / (1 − η/(2σ²))``), and minibatch noise raises the effective temperature to
    ``T + η V / 2``. Decreasing steps (:func:`pymc_sgmcmc.schedules.polynomial`) remove
    the bias. ``temperature=0`` is stochastic gradient ascent (SGD). Welling & Teh's
    ``ε`` is ``2η``.

    Parameters
    ----------
    vars : list of variables, optional
        Must be all free variables of the model (the default), all continuous.
    step_size : float or callable
        ``η``: a positive number, a schedule from :mod:`pymc_sgmcmc.schedules`, or any
        callable of the SG step count ``k`` (0 at each chain's start).
    temperature : float, default 1.0
        ``T ≥ 0``.
    steps_per_draw : int, default 1
        SG steps per ``pm.sample`` draw, each on a fresh minibatch; the last is recorded.
        They run inside one compiled call.
    initial_jitter : float, default 1.0
        Each chain starts from the model's initial point plus ``U(−j, j)`` noise on the
        unconstrained space, unless ``pm.sample`` was given ``initvals``. 0 disables it.
    model : pymc.Model, optional
    rng : numpy.random.Generator or seed, optional
        Replaced per chain by ``pm.sample``'s generator.
    compile_kwargs : dict, optional
        Passed to :func:`pytensor.function` (e.g. ``mode``).

    Notes
    -----
    Sampler stats per draw: ``step_size`` (of the last SG step), ``minibatch_logp``
    (``log π̂`` before the last step), ``grad_norm`` (of the last gradient),
    ``diverging`` (always 0: a non-finite state stops the chain with
    :class:`~pymc_sgmcmc.step_methods.base.SamplerDivergenceError`) and ``tune``.

    References
    ----------
    M. Welling and Y. W. Teh. Bayesian learning via stochastic gradient Langevin
    dynamics. ICML 2011.
    """

    name = "sgld"

    def _transition(self, position, auxiliary, gradient, step_size, noise, parameters):
        temperature = parameters["temperature"]
        return sgld_update(position, gradient, step_size, temperature, noise), []
