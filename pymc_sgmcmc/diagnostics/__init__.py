"""Sample-quality diagnostics for (stochastic-gradient) MCMC traces.

``ksd`` is the kernel Stein discrepancy (Gorham & Mackey 2017) of a PyMC posterior: it
measures the bias of approximate samplers, which ESS and R-hat cannot see
(``KernelSteinDiscrepancy`` scores many traces of one model, ``kernel_stein_discrepancy``
and ``imq_stein_kernel_matrix`` are its NumPy core).
``noise_summary`` summarises the ``noise_ratio`` sampler stat (minibatch noise over
injected noise), ``weighted_posterior_mean`` weights draws by their step size (Welling &
Teh 2011), ``keep_sampling_phase`` keeps the sampling-phase draws of a cyclical schedule,
and ``plot_ksd_by_step_size`` / ``plot_noise_ratio`` draw them.
"""

from pymc_sgmcmc.diagnostics.estimates import weighted_posterior_mean
from pymc_sgmcmc.diagnostics.ksd import (
    KernelSteinDiscrepancy,
    KSDResult,
    add_ksd_to_idata,
    ksd,
)
from pymc_sgmcmc.diagnostics.noise import NoiseSummary, add_noise_summary_to_idata, noise_summary
from pymc_sgmcmc.diagnostics.phases import keep_sampling_phase
from pymc_sgmcmc.diagnostics.plots import plot_ksd_by_step_size, plot_noise_ratio
from pymc_sgmcmc.diagnostics.stein import imq_stein_kernel_matrix, kernel_stein_discrepancy

__all__ = [
    "KSDResult",
    "KernelSteinDiscrepancy",
    "NoiseSummary",
    "add_ksd_to_idata",
    "add_noise_summary_to_idata",
    "imq_stein_kernel_matrix",
    "keep_sampling_phase",
    "kernel_stein_discrepancy",
    "ksd",
    "noise_summary",
    "plot_ksd_by_step_size",
    "plot_noise_ratio",
    "weighted_posterior_mean",
]
