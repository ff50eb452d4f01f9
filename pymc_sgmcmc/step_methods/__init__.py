"""PyMC step methods: thin adapters around the update rules, composed of parts."""

from pymc_sgmcmc.step_methods.base import StochasticGradientStep
from pymc_sgmcmc.step_methods.sghmc import SGHMC
from pymc_sgmcmc.step_methods.sgld import SGLD, pSGLD
from pymc_sgmcmc.step_methods.sgnht import SGNHT

__all__ = ["SGLD", "SGHMC", "SGNHT", "pSGLD", "StochasticGradientStep"]
