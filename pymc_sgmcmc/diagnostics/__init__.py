"""Sample-quality diagnostics for (stochastic-gradient) MCMC traces.

``ksd`` is the kernel Stein discrepancy (Gorham & Mackey 2017) of a PyMC posterior: it
measures the bias of approximate samplers, which ESS and R-hat cannot see.
"""

from pymc_sgmcmc.diagnostics.ksd import (
    KSDResult,
    add_ksd_to_idata,
    imq_stein_kernel_matrix,
    kernel_stein_discrepancy,
    ksd,
)

__all__ = [
    "KSDResult",
    "add_ksd_to_idata",
    "imq_stein_kernel_matrix",
    "kernel_stein_discrepancy",
    "ksd",
]
