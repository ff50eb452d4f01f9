"""Step-size schedules: values of the step size as a function of the SG step count.

A schedule maps the number ``k`` of stochastic-gradient steps taken since the start of
the chain (``k = 0, 1, 2, ...``) to a positive step size. Any plain callable of ``k``
works as a schedule; the classes here are vectorised over arrays of ``k`` and check
their parameters when they are built, so a bad value fails before sampling starts.
"""

from __future__ import annotations

import numbers

from collections.abc import Callable

import numpy as np

__all__ = [
    "Schedule",
    "constant",
    "cyclical",
    "polynomial",
]


def _positive_finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be positive and finite, got {value!r}.")
    return value


class Schedule:
    """Base class of the built-in schedules: ``schedule(k)`` returns the step size at step k."""

    def __call__(self, step):
        raise NotImplementedError


class constant(Schedule):
    """Constant step size, ``η_k = value``.

    Fast, and biased by O(value) (Teh, Thiery & Vollmer 2016).

    Examples
    --------
    >>> constant(0.01)(np.arange(3))
    array([0.01, 0.01, 0.01])
    """

    def __init__(self, value: float):
        self.value = _positive_finite("step_size", value)

    def __call__(self, step):
        return np.full(np.shape(step), self.value) if np.ndim(step) else self.value

    def __repr__(self):
        return f"constant({self.value!r})"


class polynomial(Schedule):
    """Polynomially decaying step size, ``η_k = a (b + k)^(−γ)`` (Welling & Teh 2011).

    With ``γ ∈ (0.5, 1]`` the Robbins-Monro conditions ``Σ η_k = ∞`` and ``Σ η_k² < ∞``
    hold, so the bias of a constant step vanishes as the chain runs.

    Parameters
    ----------
    a : float
        Scale, positive.
    b : float, default 1.0
        Offset, positive; it sets how long the early, large steps last.
    gamma : float, default 0.55
        Decay exponent, in ``(0.5, 1]``.

    Examples
    --------
    >>> polynomial(0.1, b=1.0, gamma=1.0)(np.arange(3))
    array([0.1       , 0.05      , 0.03333333])
    """

    def __init__(self, a: float, b: float = 1.0, gamma: float = 0.55):
        self.a = _positive_finite("a", a)
        self.b = _positive_finite("b", b)
        gamma = float(gamma)
        if not (0.5 < gamma <= 1.0):
            raise ValueError(
                f"`gamma` must lie in (0.5, 1] for the Robbins-Monro conditions "
                f"(sum of steps infinite, sum of squared steps finite); got {gamma!r}."
            )
        self.gamma = gamma

    def __call__(self, step):
        return self.a * (self.b + np.asarray(step, dtype=float)) ** (-self.gamma)

    def __repr__(self):
        return f"polynomial(a={self.a!r}, b={self.b!r}, gamma={self.gamma!r})"


class cyclical(Schedule):
    """Cosine cycles of step sizes (Zhang, Li, Zhang, Chen & Wilson 2020).

    .. math::

        η_k = \\frac{η_0}{2} \\left[\\cos\\left(\\frac{π\\, (k \\bmod L)}{L}\\right) + 1\\right]

    with ``k`` the SG step count and ``L`` the cycle length. Each cycle starts with large
    steps that move the chain far (the exploration phase, its first
    ``exploration_fraction`` of steps) and ends with small, nearly unbiased steps (the
    sampling phase). A step method run with a cyclical schedule records a
    ``sampling_phase`` stat per draw; :func:`pymc_sgmcmc.diagnostics.keep_sampling_phase`
    keeps only those draws. Noise is injected in both phases, so every draw comes from a
    valid (if biased, while steps are large) sampler; the paper's variant runs the
    exploration phase as pure optimisation, which ``temperature`` cannot express per
    phase here.

    Parameters
    ----------
    initial_step_size : float
        ``η₀``, the largest step (at the start of each cycle), positive.
    cycle_length : int
        ``L ≥ 1`` SG steps per cycle (with ``steps_per_draw=K``, ``L / K`` draws).
    exploration_fraction : float, default 0.5
        ``β ∈ [0, 1)``: the step ``k`` is in the sampling phase when
        ``(k mod L) / L ≥ β``.

    Examples
    --------
    >>> cyclical(0.1, cycle_length=4)(np.arange(5))
    array([0.1       , 0.08535534, 0.05      , 0.01464466, 0.1       ])
    >>> cyclical(0.1, cycle_length=4).in_sampling_phase(np.arange(5))
    array([False, False,  True,  True, False])
    """

    def __init__(
        self, initial_step_size: float, cycle_length: int, exploration_fraction: float = 0.5
    ):
        self.initial_step_size = _positive_finite("initial_step_size", initial_step_size)
        if (
            isinstance(cycle_length, bool)
            or not isinstance(cycle_length, numbers.Integral)
            or cycle_length < 1
        ):
            raise ValueError(
                f"`cycle_length` must be an integer >= 1 (SG steps per cycle), got "
                f"{cycle_length!r}."
            )
        self.cycle_length = int(cycle_length)
        if (
            isinstance(exploration_fraction, bool)
            or not isinstance(exploration_fraction, numbers.Real)
            or not (0.0 <= exploration_fraction < 1.0)
        ):
            raise ValueError(
                f"`exploration_fraction` must lie in [0, 1), got {exploration_fraction!r}."
            )
        self.exploration_fraction = float(exploration_fraction)

    def _position_in_cycle(self, step):
        return np.mod(np.asarray(step), self.cycle_length) / self.cycle_length

    def __call__(self, step):
        return 0.5 * self.initial_step_size * (np.cos(np.pi * self._position_in_cycle(step)) + 1)

    def in_sampling_phase(self, step):
        """Whether SG step ``step`` lies in a cycle's sampling phase."""
        return self._position_in_cycle(step) >= self.exploration_fraction

    def __repr__(self):
        return (
            f"cyclical(initial_step_size={self.initial_step_size!r}, "
            f"cycle_length={self.cycle_length!r}, "
            f"exploration_fraction={self.exploration_fraction!r})"
        )


def as_schedule(step_size) -> Callable:
    """Turn a user's ``step_size`` into a schedule, checking it before any sampling.

    A number becomes :class:`constant`; a :class:`Schedule` is kept; any other callable
    is kept and checked at ``k = 0``.
    """
    if isinstance(step_size, Schedule):
        return step_size
    if callable(step_size):
        evaluate_schedule(step_size, np.arange(1))
        return step_size
    return constant(step_size)


def _step_size_value(schedule: Callable, step: int) -> float:
    """A user schedule's value at one step, as a float: a number or a one-element array."""
    value = schedule(step)
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "biuf":
        raise ValueError(
            f"The step-size schedule must return one real number per SG step; at step {step} "
            f"it returned {value!r} (shape {array.shape}, dtype {array.dtype})."
        )
    return float(array.reshape(()))


def evaluate_schedule(schedule: Callable, steps: np.ndarray) -> np.ndarray:
    """Step sizes of ``schedule`` at the SG step counts ``steps``, checked positive and finite."""
    if isinstance(schedule, Schedule):
        # Built-in schedules are vectorised and were checked when built.
        return np.asarray(schedule(steps), dtype=float)
    values = np.array([_step_size_value(schedule, int(k)) for k in steps])
    if not np.all(np.isfinite(values) & (values > 0)):
        bad = int(np.flatnonzero(~(np.isfinite(values) & (values > 0)))[0])
        raise ValueError(
            f"The step-size schedule returned {values[bad]!r} at step {int(steps[bad])}; "
            "step sizes must be positive and finite."
        )
    return values
