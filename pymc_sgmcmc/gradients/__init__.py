"""Gradient estimators of the log posterior: plain minibatches, control variates, and the
full-data passes (in chunks) that control variates need."""

from pymc_sgmcmc.gradients.control_variate import (
    BoundControlVariate,
    ControlVariate,
    control_variate_gradient,
)
from pymc_sgmcmc.gradients.full_data import FullDataLogPosterior, MaximumAPosteriori
from pymc_sgmcmc.gradients.minibatch import MinibatchLogPosterior, MinibatchStream

__all__ = [
    "BoundControlVariate",
    "ControlVariate",
    "FullDataLogPosterior",
    "MaximumAPosteriori",
    "MinibatchLogPosterior",
    "MinibatchStream",
    "control_variate_gradient",
]
