"""Where a stochastic-gradient chain starts: the start checked, then jittered.

``pm.sample`` starts every chain at the model's initial point for a custom step; chains
are dispersed as PyMC does for NUTS, unless the user chose the start (``initvals``). Like
PyMC, a jittered start with a non-finite log density is drawn again,
``JITTER_ATTEMPTS`` times at most. Before that, the data and every term of the log
density are checked on all rows.
"""

from __future__ import annotations

import numpy as np

from pymc.blocking import DictToArrayBijection, RaveledVars
from pymc.exceptions import SamplingError

from pymc_sgmcmc._compat import sample_arguments
from pymc_sgmcmc._warnings import warn

__all__ = ["JITTER_ATTEMPTS", "ChainStart", "InitialEvaluationError"]

#: Jittered starts tried before a chain whose jittered start has a non-finite log density
#: is refused (as PyMC's ``jitter_max_retries``).
JITTER_ATTEMPTS = 10


class InitialEvaluationError(SamplingError):
    """The log density is not finite where a chain starts."""


class ChainStart:
    """A step's chain starts: checks, jitter, and what ``pm.sample`` was given.

    Parameters
    ----------
    estimator : GradientEstimator
        Its target is checked (data, terms of the log density); so is the estimator.
    initial_jitter : float
        Half-width of the uniform jitter on the unconstrained space; 0 disables it.
    default_start : numpy.ndarray
        The model's initial point, raveled.
    point_map_info : tuple
        PyMC's raveling of the value variables.
    value_names : dict
        Names of the value variables by free-variable or value-variable name.
    full_data : FullDataLogPosterior, optional
        The full-data passes of the MAP search, where the step made one: a start is then
        checked with one chunked pass, and term by term only where that is not finite.
    """

    def __init__(
        self,
        estimator,
        *,
        initial_jitter,
        default_start,
        point_map_info,
        value_names,
        full_data=None,
    ):
        self.estimator = estimator
        self.full_data = full_data
        self.initial_jitter = initial_jitter
        self.default_start = default_start
        self.point_map_info = point_map_info
        self.value_names = value_names
        # Per chain, the value variables whose start pm.sample(initvals=...) gave; None
        # outside pm.sample.
        self.given_start: list[set[str]] | None = None
        self._warned_log_likelihood = False

    def read_sample_arguments(self) -> None:
        """Note which value variables ``pm.sample(initvals=...)`` gave, per chain, and warn
        about a log-likelihood group that would be computed on minibatches."""
        arguments = sample_arguments()
        if arguments is None:
            # In a worker process: what was noted when pm.sample pickled the step.
            return
        initvals = arguments["initvals"]
        per_chain = initvals if isinstance(initvals, list | tuple) else [initvals]
        self.given_start = [
            {
                self.value_names[getattr(key, "name", key)]
                for key in (chain_values or {})
                if getattr(key, "name", key) in self.value_names
            }
            for chain_values in per_chain
        ]
        idata_kwargs = arguments["idata_kwargs"] or {}
        if (
            idata_kwargs.get("log_likelihood")
            and self.estimator.target.streams
            and not self._warned_log_likelihood
        ):
            self._warned_log_likelihood = True
            warn(
                "pm.sample(idata_kwargs={'log_likelihood': True}) on a model fed through "
                "pm.Minibatch stores the log-likelihood of one random minibatch, scaled by "
                "total_size, not of each data row: az.loo on it is wrong. Use "
                "pymc_sgmcmc.loo(idata, model), or pm.compute_log_likelihood(idata, "
                "model=pymc_sgmcmc.full_data_model(model))."
            )

    def first_position(
        self,
        position: np.ndarray,
        rng: np.random.Generator,
        chain: int | None,
        *,
        centre: np.ndarray | None = None,
        factor: np.ndarray | None = None,
    ) -> np.ndarray:
        """The chain's start: ``position`` checked, then jittered with ``rng``.

        With a ``centre`` (the MAP, under adaptation) the coordinates the user did not
        give start there instead, at ``centre + L u`` with ``u ~ U(−j, j)`` per
        coordinate and ``L`` the posterior's ``factor`` (a Cholesky factor of its
        covariance, or its sds), the spread halved at each retry. Jittered on the
        whitened scale, a start on a strongly correlated posterior stays about
        ``j √(d/3)`` sds from the MAP; each coordinate jittered by its own marginal sd
        would land up to ``√(condition number)`` sds off the narrow directions.
        """
        target = self.estimator.target
        target.check_data()
        self.estimator.check_data()
        position = position.astype(target.dtype)
        free = self._jittered_coordinates(position, chain)
        if centre is not None:
            position = np.where(free, centre, position).astype(target.dtype)
        bad = self._non_finite_terms(position)
        if bad:
            raise self._error(position, bad, chain=chain, jittered=False)
        if self.initial_jitter == 0 or not free.any():
            return position
        spread = 1.0
        for _ in range(JITTER_ATTEMPTS):
            jitter = spread * rng.uniform(-self.initial_jitter, self.initial_jitter, position.shape)
            if factor is not None:
                jitter = factor @ jitter if np.ndim(factor) == 2 else factor * jitter
                # Around the MAP a failed start is too far out along some wide direction
                # (a prior-only scale): each retry halves the spread, ending near the MAP.
                spread = 0.5 * spread
            jittered = position + np.where(free, jitter, 0.0).astype(target.dtype)
            bad = self._non_finite_terms(jittered)
            if not bad:
                return jittered
        raise self._error(jittered, bad, chain=chain, jittered=True)

    def _non_finite_terms(self, position: np.ndarray) -> dict[str, float]:
        """The terms of the log density that are not finite at ``position`` on some rows."""
        if self.full_data is not None:
            # The sum over all rows is finite only where every term is: one pass in large
            # chunks instead of a compiled call per minibatch of rows (N/B calls).
            logp, _ = self.full_data.logp_and_gradient(position)
            if np.isfinite(logp):
                return {}
        return self.estimator.target.non_finite_terms(position)

    def _jittered_coordinates(self, position: np.ndarray, chain: int | None) -> np.ndarray:
        """Which coordinates to jitter: those of variables whose start the user did not give.

        Outside ``pm.sample``, where what the user gave is unknown, a start other than the
        model's initial point counts as given.
        """
        if self.given_start is None:
            default = np.array_equal(position, self.default_start.astype(position.dtype))
            return np.full(position.size, default)
        given = self.given_start[(chain or 0) % len(self.given_start)]
        return np.concatenate(
            [np.full(size, name not in given) for name, _, size, _ in self.point_map_info]
        )

    def _error(
        self, position: np.ndarray, bad: dict, *, chain: int | None, jittered: bool
    ) -> InitialEvaluationError:
        """The refusal of a start where some term of the log density is not finite."""
        point = DictToArrayBijection.rmap(RaveledVars(np.array(position), self.point_map_info))
        chain_name = "" if chain is None else f" of chain {chain}"
        where = (
            f"at {JITTER_ATTEMPTS} starting points jittered by U(-{self.initial_jitter:g}, "
            f"{self.initial_jitter:g}) around the initial point (the last is shown)"
            if jittered
            else "at the starting point"
        )
        terms = "\n".join(f"  {name}: {value}" for name, value in bad.items())
        values = "\n".join(f"  {name}: {np.round(value, 4)}" for name, value in point.items())
        advice = (
            "Lower initial_jitter, or give initvals inside the support."
            if jittered
            else "Give initvals inside the support (pm.sample(initvals=...)), or check the "
            "data against the likelihood's support."
        )
        return InitialEvaluationError(
            f"Initial evaluation of the model{chain_name} failed: the log density is not "
            f"finite {where}, on all data rows.\nLog density of the terms that are not "
            f"finite:\n{terms}\nStarting values (unconstrained):\n{values}\n{advice}"
        )
