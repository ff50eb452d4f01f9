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
    noise_estimate_interval : int or None, default 20
        Draws between estimates of the minibatch gradient variance ``V`` behind the
        ``noise_ratio`` stat; 0 or None turns them off (``noise_ratio`` is then nan).
        Each estimate costs two extra minibatch gradients, outside the compiled kernel
        (about 1% more gradients at the default with ``steps_per_draw=10``, 10% with
        ``steps_per_draw=1``), plus 20 pairs once per chain when tuning ends. They are
        drawn from a child of the chain's generator, so the draws do not depend on it.
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
    :class:`~pymc_sgmcmc.step_methods.base.SamplerDivergenceError`), ``noise_ratio``
    and ``tune``.

    ``noise_ratio`` is the gradient-noise-to-injected-noise ratio

    .. math::

        \text{noise\_ratio} = \frac{η^2 \bar V}{2 η T} = \frac{η \bar V}{2T},

    the variance a step gets from the minibatch over the variance it injects, with
    ``V̄`` the minibatch gradient variance averaged over coordinates and ``η`` the
    draw's step size. The chain runs at the effective temperature ``T (1 +
    noise_ratio)``: at 1 the minibatch noise equals the injected noise, and as it grows
    the chain turns into SGD and the draws become too wide. ``V`` is estimated from
    pairs of independent minibatch gradients at the chain's position, ``V̂ = ½ (g₁ −
    g₂)²``, one pair every ``noise_estimate_interval`` draws (the latest is carried
    between them) and 20 pairs where tuning ends. It is 0 for a model without
    ``pm.Minibatch`` (exact gradients) and nan at ``T = 0`` (nothing injected). If the
    mean ``V̂`` since tuning ended puts it above 1 (checked when tuning ends and at each
    later estimate), a :class:`~pymc_sgmcmc.step_methods.base.MinibatchNoiseWarning`
    says so, once per chain. :func:`pymc_sgmcmc.diagnostics.noise_summary` summarises
    it per chain.

    References
    ----------
    M. Welling and Y. W. Teh. Bayesian learning via stochastic gradient Langevin
    dynamics. ICML 2011.
    """

    name = "sgld"

    def _noise_ratio(self, step_size: float, gradient_variance: float) -> float:
        return step_size * gradient_variance / (2 * self.temperature)

    def _transition(self, position, auxiliary, gradient, step_size, noise, parameters):
        temperature = parameters["temperature"]
        return sgld_update(position, gradient, step_size, temperature, noise), []
