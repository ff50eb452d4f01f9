"""Checks of the arguments shared by the modules that take them."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "check_non_negative",
    "check_noise_estimate_interval",
    "check_positive_array",
    "optional_positive_int",
    "positive_int",
]


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def optional_positive_int(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}.")
    return int(value)


def check_non_negative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"`{name}` must be a finite real number, got {value!r}.")
    if value < 0:
        raise ValueError(f"`{name}` must be non-negative, got {value!r}.")
    return float(value)


def check_positive_array(name: str, value, size: int) -> np.ndarray:
    """A positive, finite scalar or per-coordinate vector over the ``size`` raveled parameters."""
    array = np.asarray(value, dtype=float)
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] != size):
        raise ValueError(
            f"`{name}` must be a scalar or a vector with one entry per raveled parameter "
            f"({size}), got shape {array.shape}."
        )
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"`{name}` must be positive and finite, got {value!r}.")
    return array


def check_noise_estimate_interval(value) -> int | None:
    """``None`` (or 0) turns the noise estimate off; otherwise a positive number of draws."""
    if value is None or (isinstance(value, numbers.Integral) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(
            "`noise_estimate_interval` must be a positive integer (draws between gradient-noise "
            f"estimates), or 0 or None to turn the estimate off; got {value!r}."
        )
    return int(value)
