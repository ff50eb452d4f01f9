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

__all__ = ["Schedule", "constant", "polynomial", "as_schedule", "evaluate_schedule"]


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


def evaluate_schedule(schedule: Callable, steps: np.ndarray) -> np.ndarray:
    """Step sizes of ``schedule`` at the SG step counts ``steps``, checked positive and finite."""
    if isinstance(schedule, Schedule):
        # Built-in schedules are vectorised and were checked when built.
        return np.asarray(schedule(steps), dtype=float)
    values = np.array([float(schedule(int(k))) for k in steps])
    if not np.all(np.isfinite(values) & (values > 0)):
        bad = int(np.flatnonzero(~(np.isfinite(values) & (values > 0)))[0])
        raise ValueError(
            f"The step-size schedule returned {values[bad]!r} at step {int(steps[bad])}; "
            "step sizes must be positive and finite."
        )
    return values
