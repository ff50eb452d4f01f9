"""The protocol of gradient estimators, and the plain minibatch estimator.

A step method never builds a gradient itself: it asks its estimator for the graph of the
estimate at a position on given minibatch indices. An estimator declares the inputs its
graph takes beside them (:class:`~pymc_sgmcmc._named_function.NamedInput`; the control
variate's centre, for instance), gives their current values, and owns its per-chain
state, which nests in the step's ``sampling_state`` as PyMC's potentials nest in
``BaseHMCState``. A new estimator (or a new source of minibatches) is a subclass here; no
step method changes.
"""

from __future__ import annotations

import numpy as np

from pymc.step_methods.state import DataClassState, WithSamplingState, dataclass_state

from pymc_sgmcmc._named_function import NamedInput

__all__ = ["GradientEstimator", "MinibatchGradient"]


@dataclass_state
class MinibatchGradientState(DataClassState):
    """The plain minibatch estimator keeps nothing between draws."""


class GradientEstimator(WithSamplingState):
    """An unbiased estimate of ``∇ log π(θ)`` from minibatches of a
    :class:`~pymc_sgmcmc.gradients.minibatch.MinibatchLogPosterior`.

    Attributes
    ----------
    target : MinibatchLogPosterior
        The minibatch log posterior: its graph, streams and index inputs.
    inputs : tuple of NamedInput
        What the estimate's graph takes besides the position and the indices (each a
        :class:`~pymc_sgmcmc.gradients.NamedInput`: name, dtype, number of dimensions).
    """

    _state_class = MinibatchGradientState
    inputs: tuple[NamedInput, ...] = ()

    def __init__(self, target):
        self.target = target

    def gradient(self, position, indices, inputs: dict, minibatch_gradient=None):
        """The estimate's graph at ``position`` on the minibatch ``indices``.

        ``inputs`` maps the names of :attr:`inputs` to symbolic variables;
        ``minibatch_gradient`` is ``∇ log π̂(θ)`` on these indices where the caller has
        built it already (with the log density), to be shared.
        """
        raise NotImplementedError

    def minibatch_part(self, position, indices, inputs: dict):
        """The part of the estimate that varies with the minibatch: the estimate less any
        term that does not depend on the indices. Two of them on independent minibatches
        differ as two estimates do, with fewer rounding errors."""
        return self.gradient(position, indices, inputs)

    def input_values(self) -> dict[str, np.ndarray]:
        """The current values of :attr:`inputs`, by name."""
        return {}

    def start_chain(self) -> None:
        """Reset the per-chain state at a chain's start."""

    def after_draw(self, draw: int, position: np.ndarray) -> bool:
        """Called after each draw (``draw`` of them done); True if :meth:`input_values`
        changed, so that the gradient carried to the next step must be taken again."""
        return False

    def check_data(self) -> None:
        """Refuse to start a chain on data the estimator was not built for."""


class MinibatchGradient(GradientEstimator):
    """``∇ log π̂(θ)``: the prior's gradient plus ``N/B`` times the minibatch likelihood's.

    Unbiased, with a variance of order ``N²/B`` per coordinate (Welling & Teh 2011). On a
    model without ``pm.Minibatch`` it is the exact gradient.
    """

    def gradient(self, position, indices, inputs: dict, minibatch_gradient=None):
        if minibatch_gradient is not None:
            return minibatch_gradient
        return self.target.gradient_at(position, indices)
