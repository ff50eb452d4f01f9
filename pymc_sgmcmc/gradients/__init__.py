"""Gradient estimators of the log posterior on minibatches."""

from pymc_sgmcmc.gradients.minibatch import MinibatchLogPosterior, MinibatchStream

__all__ = ["MinibatchLogPosterior", "MinibatchStream"]
