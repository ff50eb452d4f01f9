"""Stochastic-gradient MCMC for PyMC.

Feed data through ``pm.Minibatch(...)`` with ``total_size=N`` and sample with
``pm.sample(step=pymc_sgmcmc.SGLD(step_size=...))`` or ``SGHMC(...)``.
"""

from pymc_sgmcmc import schedules
from pymc_sgmcmc.step_methods import SGHMC, SGLD, SamplerDivergenceError

__all__ = ["SGLD", "SGHMC", "SamplerDivergenceError", "schedules"]
__version__ = "0.1.0"
