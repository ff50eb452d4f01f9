"""Checks of integer arguments shared by the modules that take them."""

from __future__ import annotations

import numbers

__all__ = ["optional_positive_int", "positive_int"]


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
