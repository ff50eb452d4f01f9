"""Gradient estimators of the log posterior: plain minibatches, control variates, and the
full-data passes (in chunks) that control variates need.

Every estimator follows :class:`~pymc_sgmcmc.gradients.estimator.GradientEstimator`: a
graph of the estimate at a position on minibatch indices, the inputs it takes, and its
per-chain state.
"""

from pymc_sgmcmc._named_function import NamedInput
from pymc_sgmcmc.gradients.control_variate import ControlVariate, ControlVariateGradient
from pymc_sgmcmc.gradients.estimator import GradientEstimator, MinibatchGradient
from pymc_sgmcmc.gradients.full_data import MaximumAPosteriori

# The estimators, for users and for new ones; the log posterior and the full-data passes
# they are built on are documented in their modules.
__all__ = [
    "ControlVariate",
    "ControlVariateGradient",
    "GradientEstimator",
    "MaximumAPosteriori",
    "MinibatchGradient",
    "NamedInput",
]
