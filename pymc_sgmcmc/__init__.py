"""Stochastic-gradient MCMC for PyMC.

Feed data through ``pm.Minibatch(...)`` with ``total_size=N`` and sample with
``pm.sample(step=pymc_sgmcmc.SGLD(step_size=...))``, ``SGHMC(...)``, ``SGNHT(...)`` or
``pSGLD(...)``, optionally with ``control_variate=True`` for large N; data larger than memory (zarr,
xarray, Dask) come through :func:`pymc_sgmcmc.Minibatch`;
``select_step_size`` chooses the step size by the kernel Stein discrepancy of short runs.
"""

from pymc_sgmcmc import diagnostics, schedules
from pymc_sgmcmc._warnings import MinibatchNoiseWarning, SamplerDivergenceWarning, SGMCMCWarning
from pymc_sgmcmc.cluster import ChainFailure, sample
from pymc_sgmcmc.cross_validation import loo
from pymc_sgmcmc.full_data import full_data_model
from pymc_sgmcmc.gradients import ControlVariate
from pymc_sgmcmc.preconditioners import RMSprop
from pymc_sgmcmc.predictive import sample_posterior_predictive
from pymc_sgmcmc.step_methods import SGHMC, SGLD, SGNHT, pSGLD
from pymc_sgmcmc.step_methods.adapted_settings import adapted_settings
from pymc_sgmcmc.step_methods.chain_start import InitialEvaluationError
from pymc_sgmcmc.step_methods.divergence import SamplerDivergenceError
from pymc_sgmcmc.streaming import Minibatch
from pymc_sgmcmc.tuning import StepSizeSelection, scale_step_size_for_budget, select_step_size

__all__ = [
    "SGLD",
    "SGHMC",
    "SGNHT",
    "pSGLD",
    "ChainFailure",
    "ControlVariate",
    "RMSprop",
    "InitialEvaluationError",
    "Minibatch",
    "MinibatchNoiseWarning",
    "SGMCMCWarning",
    "SamplerDivergenceError",
    "SamplerDivergenceWarning",
    "StepSizeSelection",
    "adapted_settings",
    "diagnostics",
    "full_data_model",
    "loo",
    "sample",
    "sample_posterior_predictive",
    "scale_step_size_for_budget",
    "schedules",
    "select_step_size",
]
__version__ = "0.1.0"
