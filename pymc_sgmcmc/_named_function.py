"""Compiled PyTensor functions with named, checked inputs.

The SG kernel is called once per draw with ``trust_input=True``: PyTensor then checks
neither the order nor the dtype nor the number of dimensions of what it is given. Here
every input has a name and a declared type; the inputs that stay fixed between calls
(the sampler's parameters, the control-variate centre) are checked by name when they are
set, and those that change at every call are checked by name and number of dimensions
at the call, which costs a dictionary lookup per input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pytensor.tensor as pt

from pytensor.tensor.random.type import RandomType

from pymc_sgmcmc._compat import compile_function

__all__ = ["NamedFunction", "NamedInput"]


@dataclass(frozen=True)
class NamedInput:
    """One input of a compiled function: its name, dtype and number of dimensions."""

    name: str
    dtype: str
    ndim: int

    @classmethod
    def like(cls, name: str, value, dtype: str) -> NamedInput:
        """An input with the number of dimensions of ``value``."""
        return cls(name, str(dtype), int(np.ndim(value)))

    def variable(self) -> pt.TensorVariable:
        """A symbolic input of this type."""
        return pt.tensor(self.name, dtype=self.dtype, shape=(None,) * self.ndim)

    def check(self, value) -> np.ndarray:
        """``value`` as an array of this dtype; a clear error for the wrong dimensions."""
        array = np.asarray(value, dtype=self.dtype)
        if array.ndim != self.ndim:
            raise TypeError(
                f"Input {self.name!r} of a compiled SG function must have {self.ndim} "
                f"dimension(s), got shape {array.shape}."
            )
        return array


class NamedFunction:
    """A compiled function of named inputs: ``per_call`` ones, then ``fixed`` ones.

    Parameters
    ----------
    per_call : sequence of (NamedInput, TensorVariable)
        Inputs given at every call, by keyword.
    fixed : sequence of (NamedInput, TensorVariable)
        Inputs set by :meth:`set_fixed` and reused until set again.
    outputs : sequence of TensorVariable
    output_names : sequence of str
        One name per output, for :meth:`__call__`'s result.
    **compile_kwargs
        Passed to PyMC's ``compile``.
    """

    def __init__(
        self,
        per_call: Sequence[tuple[NamedInput, pt.TensorVariable]],
        fixed: Sequence[tuple[NamedInput, pt.TensorVariable]],
        outputs: Sequence,
        output_names: Sequence[str],
        **compile_kwargs,
    ):
        self.per_call = tuple(spec for spec, _ in per_call)
        self.fixed = tuple(spec for spec, _ in fixed)
        self.output_names = tuple(output_names)
        if len(set(self.output_names)) != len(outputs):
            raise ValueError(
                f"Every output of a compiled SG function needs its own name, got "
                f"{self.output_names} for {len(outputs)} outputs."
            )
        self._function = compile_function(
            [variable for _, variable in (*per_call, *fixed)],
            list(outputs),
            on_unused_input="ignore",
            **compile_kwargs,
        )
        self._fixed_values: list[np.ndarray] | None = None if self.fixed else []
        updates = compile_kwargs.get("updates") or {}
        self._generators = [variable for variable in updates if _is_generator(variable)]

    def reseed(self, seed: int) -> None:
        """Restart the function's own random generators (those it updates) from ``seed``.

        Under the JAX backend each compiled function holds a copy of its generators in
        JAX's form, which is replaced here.
        """
        for position, generator in enumerate(self._generators):
            value = np.random.default_rng([seed, position])
            function = getattr(self._function, "function", self._function)
            for spec, container in zip(function.maker.inputs, function.input_storage, strict=False):
                if spec.variable is generator:
                    if isinstance(container.storage[0], dict):
                        # JAX's form of a generator; importing JAX only where it runs.
                        from pytensor.link.jax.dispatch import jax_typify

                        container.storage[0] = jax_typify(value)
                    else:
                        container.storage[0] = value

    def set_fixed(self, values: Mapping[str, np.ndarray]) -> None:
        """Check and keep the fixed inputs: exactly the declared names, of their types."""
        _check_names("fixed", [spec.name for spec in self.fixed], values)
        self._fixed_values = [spec.check(values[spec.name]) for spec in self.fixed]

    def __call__(self, **values) -> dict[str, np.ndarray]:
        if self._fixed_values is None:
            raise RuntimeError("set_fixed() must be called before the function is.")
        if len(values) != len(self.per_call):
            _check_names("per-call", [spec.name for spec in self.per_call], values)
        arguments = []
        for spec in self.per_call:
            value = values[spec.name]
            if value.ndim != spec.ndim or value.dtype != spec.dtype:
                value = spec.check(value)
            arguments.append(value)
        results = self._function(*arguments, *self._fixed_values)
        return dict(zip(self.output_names, results, strict=True))

    @property
    def function(self):
        """The compiled ``pytensor`` function (inputs: per-call, then fixed)."""
        return self._function


def _is_generator(variable) -> bool:
    return isinstance(variable.type, RandomType)


def _check_names(kind: str, expected: list[str], values: Mapping) -> None:
    missing = [name for name in expected if name not in values]
    unexpected = [name for name in values if name not in expected]
    if missing or unexpected:
        raise TypeError(
            f"A compiled SG function got the wrong {kind} inputs: missing {missing}, "
            f"unexpected {unexpected} (it takes {expected})."
        )
