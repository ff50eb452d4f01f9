"""SGLD as a PyMC step method."""

from __future__ import annotations

import numpy as np

from pymc_sgmcmc.adaptation import limited_step
from pymc_sgmcmc.dynamics import (
    RMSpropAuxiliary,
    preconditioned_sgld_update,
    rmsprop_preconditioner,
    sgld_update,
)
from pymc_sgmcmc.preconditioners import RMSprop
from pymc_sgmcmc.step_methods.base import StochasticGradientStep
from pymc_sgmcmc.step_methods.noise_monitor import NoiseMeasures

__all__ = ["SGLD", "pSGLD"]


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
    step_size : "auto", float or callable, default "auto"
        ``η``: ``"auto"`` adapts it while tuning, together with ``mass`` and
        ``steps_per_draw`` (see :doc:`/zero_configuration`: on the whitened scale, the
        smaller of ``0.15 / λ`` and the step at which the noise ratio is 0.1 in every
        coordinate, halved after each diverging tuning draw, frozen for sampling).
        Otherwise a positive number, a schedule from :mod:`pymc_sgmcmc.schedules`, or any
        callable of the SG step count ``k`` (0 at each chain's start), and nothing else is
        adapted unless asked for.
    mass : "auto", "dense", "diag", array or None, default "auto"
        The preconditioner ``M = Σ⁻¹``: each step becomes ``θ + η Σ g + sqrt(2ηT) L ξ``
        with ``Σ = L Lᵀ`` (the rule runs on the whitened scale ``z = L⁻¹ θ``). ``"dense"``
        or ``"diag"`` adapt ``Σ`` while tuning, from the inverse curvature at the MAP and
        then in windows of the tuning draws; ``"auto"`` is ``"dense"`` up to 200 raveled
        parameters and ``"diag"`` beyond with ``step_size="auto"``, and no preconditioner
        with a given step size; a vector or a positive definite matrix fixes ``M``
        (e.g. ``adapted_settings()["mass"]`` of an earlier run); None is none.
    temperature : float, default 1.0
        ``T ≥ 0``.
    steps_per_draw : int or "auto", optional
        SG steps per ``pm.sample`` draw, each on a fresh minibatch; the last is recorded.
        They run inside one compiled call. The default is ``"auto"`` with
        ``step_size="auto"`` (enough steps per draw to cover one unit of the dynamics'
        time, ``K η ≈ 1``, between 100 and 1024) and 1 otherwise.
    initial_jitter : float, default 1.0
        Each chain starts from the model's initial point plus ``U(−j, j)`` noise on the
        unconstrained space (with ``step_size="auto"`` or a ``mass``: from the MAP plus
        ``sd · U(−j, j)``, the sds of the inverse curvature there), except for the
        variables whose start ``pm.sample`` was given in ``initvals``, which start
        exactly there. 0 disables it.
    noise_estimate_interval : int or None, default 20
        Draws between estimates of the minibatch gradient variance ``V`` behind the
        ``noise_ratio`` stat; 0 or None turns them off (``noise_ratio`` is then nan).
        Each estimate costs two extra minibatch gradients, outside the compiled kernel
        (0.1% more gradients at ``steps_per_draw=100``, 10% with ``steps_per_draw=1``), plus 20 pairs once per chain when tuning ends. They are
        drawn from a child of the chain's generator, so the draws do not depend on it.
    preconditioner : RMSprop, optional
        A diagonal preconditioner ``G``: each step becomes ``θ + η G g + sqrt(2ηTG) ξ``
        (see :class:`pSGLD`). None (the default) is plain SGLD.
    control_variate : "auto", ControlVariate, True, "map", dict, array or None, default "auto"
        Use control-variate gradients (Baker et al. 2019) instead of plain minibatch
        gradients: ``"auto"`` turns them on, centred at the MAP, with ``step_size="auto"``
        (or a given ``mass``) where the model is fed through ``pm.Minibatch`` with
        ``N/B ≥ 4`` and the MAP search converged, and leaves them off otherwise;
        ``True`` or ``"map"`` centres them at the full-data MAP (found when the
        step is built), a point centres them there, and a
        :class:`~pymc_sgmcmc.gradients.ControlVariate` sets every option (e.g. refreshing
        the centre). Each SG step then costs two minibatch gradients, and the gradient's
        variance shrinks from order ``N²/B`` to order ``(N²/B) ‖θ − θ̂‖²``: about
        ``N/B`` within a posterior sd of the centre.
    gradient_estimator : callable, optional
        Any other gradient estimator: a callable (such as a subclass of
        :class:`~pymc_sgmcmc.gradients.GradientEstimator`) that takes the model's
        :class:`~pymc_sgmcmc.gradients.minibatch.MinibatchLogPosterior` and returns the
        estimator. None (the default) is plain minibatch gradients, or control variates
        with ``control_variate``.
    on_divergence : {"warn", "raise"}, default "warn"
        What a diverging draw does: one whose position, gradient, auxiliary state
        (momentum, thermostat, running average) or log density turns non-finite, the
        log density -inf included (a step out of the support). ``"warn"``, as NUTS
        does, records the draw with ``diverging = 1``, puts the chain back to its last
        finite state (momentum drawn afresh, thermostat reset) and goes on; each chain
        with divergences gets one :class:`~pymc_sgmcmc.SamplerDivergenceWarning` at its
        end with the count. ``"raise"`` stops the run with
        :class:`~pymc_sgmcmc.SamplerDivergenceError`, naming the chain, draw, SG steps
        and step size.
    model : pymc.Model, optional
    rng : numpy.random.Generator or seed, optional
        Replaced per chain by ``pm.sample``'s generator.
    compile_kwargs : dict, optional
        Passed to :func:`pytensor.function` (e.g. ``mode``).

    Notes
    -----
    Sampler stats per draw: ``step_size`` (of the last SG step), ``minibatch_logp``
    (``log π̂`` at the draw's position, on the minibatch of the gradient taken there),
    ``grad_norm`` (of that gradient, the next step's), ``diverging`` (1 for a draw that
    diverged and went back to the last finite state), ``noise_ratio`` and ``tune``.

    Before a chain's first draw its start is checked: data given to ``pm.Minibatch``
    that holds NaN, and a start where some term of the log density is not finite on
    some row of the data, are refused with a message that names them (jittered starts
    are drawn again, as PyMC does, up to 10 times).

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
    later estimate), a :class:`~pymc_sgmcmc.MinibatchNoiseWarning`
    says so, once per chain. :func:`pymc_sgmcmc.diagnostics.noise_summary` summarises
    it per chain.

    References
    ----------
    M. Welling and Y. W. Teh. Bayesian learning via stochastic gradient Langevin
    dynamics. ICML 2011.
    """

    name = "sgld"

    #: ``η λ`` at the discretisation limit of the adapted step size: on ``N(0, 1)`` the
    #: stationary sd is then ``(1 − η/2)^{-1/2}``, 4% too wide.
    adapted_step_limit = 0.15

    def __init__(
        self, vars=None, *, step_size="auto", preconditioner: RMSprop | None = None, **options
    ):
        if preconditioner is not None and not isinstance(preconditioner, RMSprop):
            raise TypeError(
                "`preconditioner` must be a pymc_sgmcmc.preconditioners.RMSprop or None, got "
                f"{preconditioner!r}."
            )
        self.preconditioner = preconditioner
        if preconditioner is not None:
            self._auxiliary_type = RMSpropAuxiliary
        super().__init__(vars, step_size=step_size, **options)

    def _parameters(self) -> dict[str, np.ndarray]:
        values = super()._parameters()
        if self.preconditioner is not None:
            values.update(
                {
                    name: np.asarray(value, dtype=self._dtype)
                    for name, value in self.preconditioner.parameters(bool(self.tune)).items()
                }
            )
        return values

    def _initial_auxiliary(self, position):
        if self.preconditioner is None:
            return self._auxiliary_type()
        # All zeros: the first step sets v to its gradient's square.
        return RMSpropAuxiliary(np.zeros(self._size, dtype=self._dtype))

    @property
    def preconditioner_values(self) -> np.ndarray | None:
        """The current chain's ``G`` per raveled coordinate (None without a preconditioner,
        or before the first draw)."""
        if self.preconditioner is None or self._auxiliary.square_average is None:
            return None
        return self.preconditioner.values(self._auxiliary.square_average)

    def _noise_state_key(self):
        if self.preconditioner is None or self._auxiliary.square_average is None:
            return None
        return self._auxiliary.square_average.tobytes()

    def _noise_measures(self, step_size, gradient_variance) -> NoiseMeasures:
        preconditioner = self.preconditioner_values
        if preconditioner is None:
            ratio = step_size * np.mean(gradient_variance) / (2 * self.temperature)
        else:
            # η² Σ G² V over 2 η T Σ G: minibatch over injected variance per step.
            ratio = (
                step_size
                * np.sum(preconditioner**2 * gradient_variance)
                / (2 * self.temperature * np.sum(preconditioner))
            )
        # η² G² V / (2 η T G) = η G V / (2T) per coordinate; nothing corrects for it, so
        # the excess temperature over all coordinates is the ratio itself.
        scale = 1.0 if preconditioner is None else preconditioner
        per_coordinate = step_size * scale * gradient_variance / (2 * self.temperature)
        return NoiseMeasures(ratio, ratio, per_coordinate)

    @classmethod
    def default_step_sizes(cls, curvature: float, options: dict, size: int) -> np.ndarray:
        """With a preconditioner the step is a length: ``G ≈ 1/rms(g)`` moves each
        coordinate by about ``η``, so the largest is the narrowest posterior sd,
        ``1/sqrt(curvature)``, three decades above the smallest; without, SGLD's."""
        if options.get("preconditioner") is None:
            return super().default_step_sizes(curvature, options, size)
        return np.sqrt(1.0 / curvature) * np.logspace(-3.0, 0.0, size)

    def _adapted_step_size(self, curvature, gradient_variance) -> float:
        """``η = min(0.15 / λ, 2 T ρ / V̄)``: the discretisation limit, and the step at
        which the noise ratio ``η V̄ / 2T`` is ``ρ`` (see :mod:`pymc_sgmcmc.adaptation`).

        With RMSprop ``G ≲ 1`` on the whitened scale (``v ≈ 1 + V``), so the same limit
        holds with room to spare."""
        if self.temperature == 0:
            return self.adapted_step_limit / curvature
        return limited_step(
            self.adapted_step_limit / curvature, gradient_variance / (2 * self.temperature)
        )

    def _restart_auxiliary(self, auxiliary):
        # RMSprop's running average is no random state: keep its last finite value.
        return auxiliary

    def _without_tuning_warning(self) -> str | None:
        if self.preconditioner is None or self.preconditioner.adapt == "always":
            return None
        return (
            "the RMSprop preconditioner adapts only while tuning, so it is set from the "
            "square of the first minibatch gradient alone. Give tune > 0, or "
            'RMSprop(adapt="always").'
        )

    def _transition(self, position, auxiliary, gradient, step_size, noise, parameters):
        temperature = parameters["temperature"]
        if self.preconditioner is None:
            return sgld_update(position, gradient, step_size, temperature, noise), auxiliary
        square_average, preconditioner = rmsprop_preconditioner(
            auxiliary.square_average,
            gradient,
            decay=parameters["decay"],
            epsilon=parameters["epsilon"],
            adapt=parameters["adapt"],
        )
        position = preconditioned_sgld_update(
            position, gradient, step_size, temperature, noise, preconditioner
        )
        return position, RMSpropAuxiliary(square_average)


class pSGLD(SGLD):
    r"""Preconditioned SGLD (Li, Chen, Carlson & Carin 2016): SGLD with RMSprop's diagonal.

    .. math::

        v &\leftarrow α v + (1 - α) g^2, \qquad G = 1 / (λ + \sqrt{v}) \\
        θ &\leftarrow θ + η\, G g + \sqrt{2 η T G}\, ξ

    Each coordinate's step is scaled by the inverse root-mean-square of its gradient, so
    that one ``step_size`` suits parameters on very different scales (a plain SGLD step
    must be small enough for the narrowest). Li et al.'s correction term ``Γ(θ)`` is not
    applied. By default ``v`` adapts during tuning only and ``G`` is frozen for the
    sampling phase, which is then SGLD with a constant preconditioner and needs no
    correction; ``RMSprop(adapt="always")`` keeps adapting, as in the paper.

    With the preconditioner, ``step_size`` is in units of the gradient's scale rather
    than the posterior variance: with ``G ≈ 1/|g|`` a step moves each coordinate by about
    ``η``, so ``η`` around a tenth of the smallest posterior sd is a start.

    Parameters
    ----------
    step_size : "auto", float or callable, default "auto"
        ``η``, as for :class:`~pymc_sgmcmc.SGLD`. With ``"auto"`` RMSprop runs on the
        whitened scale of the adapted ``mass``, where ``G ≲ 1``, and the step is adapted
        as SGLD's.
    preconditioner : RMSprop, optional
        Defaults to ``RMSprop()`` (``decay=0.99``, ``epsilon=1e-5``, ``adapt="tuning"``).
    **options
        Every other option of :class:`~pymc_sgmcmc.SGLD` (``temperature``,
        ``steps_per_draw``, ``control_variate``, ...).

    Notes
    -----
    Sampler stats as for :class:`~pymc_sgmcmc.SGLD`. ``noise_ratio`` uses the
    preconditioned variances: ``η Σ_j G_j² V_j / (2 T Σ_j G_j)``.

    References
    ----------
    C. Li, C. Chen, D. Carlson and L. Carin. Preconditioned stochastic gradient Langevin
    dynamics for deep neural networks. AAAI 2016.
    """

    name = "psgld"

    @classmethod
    def default_step_sizes(cls, curvature: float, options: dict, size: int) -> np.ndarray:
        preconditioner = options.get("preconditioner") or RMSprop()
        return super().default_step_sizes(
            curvature, {**options, "preconditioner": preconditioner}, size
        )

    def __init__(
        self, vars=None, *, step_size="auto", preconditioner: RMSprop | None = None, **options
    ):
        super().__init__(
            vars,
            step_size=step_size,
            preconditioner=RMSprop() if preconditioner is None else preconditioner,
            **options,
        )
