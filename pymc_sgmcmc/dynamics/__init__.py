"""Update rules of stochastic-gradient MCMC, as PyTensor graph builders.

Each rule takes the current state, a log-density gradient and a standard normal draw and
returns the next state. The rules know nothing about data, minibatches or PyMC, so their
algebra can be checked exactly and many steps can run inside one compiled ``scan``. Each
module also names its sampler's auxiliary state (a NamedTuple, as BlackJAX does), which
the step methods carry between draws.
"""

from pymc_sgmcmc.dynamics.psgld import (
    RMSpropAuxiliary,
    preconditioned_sgld_update,
    rmsprop_preconditioner,
)
from pymc_sgmcmc.dynamics.sghmc import SGHMCAuxiliary, sghmc_update
from pymc_sgmcmc.dynamics.sgld import SGLDAuxiliary, sgld_update
from pymc_sgmcmc.dynamics.sgnht import SGNHTAuxiliary, sgnht_update

__all__ = [
    "RMSpropAuxiliary",
    "SGHMCAuxiliary",
    "SGLDAuxiliary",
    "SGNHTAuxiliary",
    "preconditioned_sgld_update",
    "rmsprop_preconditioner",
    "sghmc_update",
    "sgld_update",
    "sgnht_update",
]
