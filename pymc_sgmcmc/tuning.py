"""Choosing the step size of an SG-MCMC sampler.

Without a Metropolis correction there is no acceptance rate to tune against: a constant
step size trades the bias of the discretisation and of minibatch noise (which grows with
the step) against the Monte Carlo error of a chain that moves too little (which shrinks
with it). Coullon, South & Nemeth (2023) tune SG-MCMC hyperparameters by running short
chains and minimising a Stein discrepancy between the draws and the posterior, which sees
both errors; :func:`select_step_size` does that with the kernel Stein discrepancy of
:func:`pymc_sgmcmc.diagnostics.ksd`, over a grid of step sizes or by successive halving
(the budget allocation of their MAMBA algorithm). :func:`scale_step_size_for_budget`
carries the chosen step size over to a run of another length.
"""

from __future__ import annotations

import inspect
import numbers
import time
import warnings

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import pytensor.tensor as pt

from pymc.model import modelcontext

from pymc_sgmcmc._validation import positive_int
from pymc_sgmcmc._warnings import MinibatchNoiseWarning, SamplerDivergenceWarning
from pymc_sgmcmc.diagnostics.ksd import KernelSteinDiscrepancy, ksd
from pymc_sgmcmc.diagnostics.noise import noise_summary
from pymc_sgmcmc.gradients.minibatch import MinibatchLogPosterior
from pymc_sgmcmc.step_methods import SGHMC, SGLD, SGNHT, pSGLD
from pymc_sgmcmc.step_methods.base import StochasticGradientStep

__all__ = ["StepSizeSelection", "scale_step_size_for_budget", "select_step_size"]

_DEFAULT_GRID_SIZE = 9
_KSD_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(ksd).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
}
_POWER_ITERATIONS = 30


def scale_step_size_for_budget(step_size: float, *, steps_from: int, steps_to: int) -> float:
    """Carry a constant step size tuned for ``steps_from`` steps over to ``steps_to``.

    .. math::

        η_{\\text{to}} = η_{\\text{from}}
            \\left(\\frac{n_{\\text{to}}}{n_{\\text{from}}}\\right)^{-1/3}

    The mean-squared error of a constant-step SG-MCMC average over ``n`` steps is about
    ``a² η² + b / (n η)``: the squared bias grows like ``η²`` (the bias of the
    discretised chain is O(η)), and the variance of the average falls like ``1/(n η)``
    (the chain needs about ``1/η`` steps to forget where it was, so ``n`` steps hold
    about ``n η`` independent draws). Setting the derivative ``2 a² η − b / (n η²)`` to 0
    gives ``η* = (b / (2 a² n))^{1/3} ∝ n^{−1/3}``, and an error of order ``n^{−2/3}``
    instead of the ``n^{−1}`` of exact MCMC (Teh, Thiery & Vollmer 2016; Vollmer,
    Zygalakis & Teh 2016). A step size selected on short runs is therefore too large for
    a long one: 8 times the steps want half the step size.

    Parameters
    ----------
    step_size : float
        The step size found best for runs of ``steps_from`` SG steps, e.g. by
        :func:`select_step_size`.
    steps_from, steps_to : int
        SG steps per chain that enter the estimate (``draws × steps_per_draw``), in the
        runs it was chosen on and in the run it is for.

    Returns
    -------
    float

    Examples
    --------
    >>> scale_step_size_for_budget(0.01, steps_from=1000, steps_to=8000)
    0.005
    """
    step_size = _positive_float("step_size", step_size)
    steps_from = positive_int("steps_from", steps_from)
    steps_to = positive_int("steps_to", steps_to)
    return float(step_size * (steps_to / steps_from) ** (-1.0 / 3.0))


@dataclass(frozen=True)
class StepSizeSelection:
    """The outcome of :func:`select_step_size`.

    Attributes
    ----------
    step_size : float
        The candidate with the smallest KSD in the last round.
    table : pandas.DataFrame
        One row per run: ``round``, ``step_size``, ``draws`` (per chain), ``ksd``
        (pooled, standardised; inf if the run diverged or failed), ``ksd_worst_chain``,
        ``noise_ratio`` (mean over the draws), ``diverged`` (any diverging draw, or an
        error), ``error`` (the error's first line, or empty) and ``seconds`` (wall time
        of sampling and KSD).
    sampler : str
        Name of the step method.
    steps_per_chain : int
        SG steps per chain behind the KSD of the last round (``draws ×
        steps_per_draw``): the budget ``step_size`` was chosen for.
    """

    step_size: float
    table: pd.DataFrame
    sampler: str
    steps_per_chain: int

    def for_budget(self, steps: int) -> float:
        """The chosen step size carried over to ``steps`` SG steps per chain, with
        :func:`scale_step_size_for_budget` (``η ∝ n^(−1/3)``)."""
        return scale_step_size_for_budget(
            self.step_size, steps_from=self.steps_per_chain, steps_to=steps
        )


def select_step_size(
    model=None,
    *,
    sampler: str | type[StochasticGradientStep] = "SGLD",
    step_sizes: Sequence[float] | None = None,
    draws: int = 500,
    tune: int = 200,
    steps_per_draw: int = 1,
    chains: int = 2,
    rounds: int = 1,
    random_seed: int | None = None,
    sampler_kwargs: dict | None = None,
    sample_kwargs: dict | None = None,
    ksd_kwargs: dict | None = None,
) -> StepSizeSelection:
    """Choose a constant step size by the kernel Stein discrepancy of short runs.

    Each candidate step size runs ``pm.sample`` with ``tune`` then ``draws`` draws of
    ``steps_per_draw`` SG steps, every candidate from the same seed (so they differ by
    their step size, not by luck), and is scored by the pooled, standardised KSD of its
    draws (:func:`pymc_sgmcmc.diagnostics.ksd`, Gorham & Mackey 2017) against the
    full-data posterior. A step too small leaves the chains near their starts, one too
    large over-disperses them (discretisation and minibatch noise): both score high. The
    candidate with the smallest KSD wins (Coullon, South & Nemeth 2023).

    With ``rounds > 1`` the search is successive halving, as in Coullon et al.'s MAMBA:
    each round keeps the better half of the candidates (by KSD) and doubles their
    ``draws``, so every round costs about the same and the budget goes to the
    promising step sizes. Each round reruns its candidates from the start.

    Parameters
    ----------
    model : pymc.Model, optional
        From the context if omitted. Its data should enter through ``pm.Minibatch``
        with ``total_size`` (or not at all: full-batch gradients work too).
    sampler : {"SGLD", "SGHMC", "SGNHT", "pSGLD"} or step-method class, default "SGLD"
    step_sizes : sequence of float, optional
        The candidates. By default 9 log-spaced values below a guess from the curvature
        of the full-data log posterior at the model's initial point: with ``λ`` the
        largest eigenvalue of its negative Hessian (by power iteration on
        Hessian-vector products), SGLD's exact-gradient chain is unstable beyond
        ``η = 2/λ``; the grid runs from ``1/λ`` down 4 decades. For SGHMC it runs from
        ``sqrt(M/λ)`` down 2 decades (``η = h²/M``), for SGNHT from ``sqrt(1/λ)`` down 2,
        and for pSGLD (whose step is a length) from ``sqrt(1/λ)`` down 3.
    draws, tune : int, default 500 and 200
        Draws per chain scored (first round) and tuning draws before them.
    steps_per_draw : int, default 1
        Passed to the sampler.
    chains : int, default 2
        Chains per run. At least 2 is wise: their dispersed starts let the pooled,
        standardised KSD see chains that have not moved.
    rounds : int, default 1
        1 for a plain grid, more for successive halving.
    random_seed : int, optional
        Seed of every run (and of the KSD's subsampling).
    sampler_kwargs : dict, optional
        Further arguments of the sampler (not ``step_size``). For SGHMC without a
        ``friction`` here, each candidate ``h`` gets ``Γ = 0.1 M / h`` (momentum decay
        ``α = hΓ/M = 0.1``); for SGNHT without a ``diffusion``, ``A = 0.1 T / h``.
    sample_kwargs : dict, optional
        Further arguments of ``pm.sample`` (e.g. ``cores``, ``initvals``). By default
        chains run sequentially, without progress bars or convergence checks.
    ksd_kwargs : dict, optional
        Further arguments of :func:`~pymc_sgmcmc.diagnostics.ksd`; by default at most
        500 draws per chain enter it.

    Returns
    -------
    StepSizeSelection
        ``step_size`` (the winner), ``table`` (every run) and
        :meth:`~StepSizeSelection.for_budget` to carry the winner over to a longer run
        (``η ∝ n^(−1/3)``, see :func:`scale_step_size_for_budget`).

    Notes
    -----
    A run with any diverging draw, or that fails in any other way (an error inside
    sampling, draws with a non-finite full-data score), scores ``inf`` and the search
    goes on; the ``error`` column says what happened. Minibatch-noise warnings of the
    runs are silenced; their ``noise_ratio`` is in the table. KSD compares the draws
    with the posterior at ``temperature=1``: select with ``temperature=1`` even if the
    final run is tempered. The chosen step size is best for the budget it was tried at;
    :meth:`StepSizeSelection.for_budget` scales it for a longer run.

    References
    ----------
    J. Coullon, L. South and C. Nemeth. Efficient and generalizable tuning strategies
    for stochastic gradient MCMC. Statistics and Computing 33, 66 (2023).

    J. Gorham and L. Mackey. Measuring sample quality with kernels. ICML 2017.

    Examples
    --------
    >>> selection = select_step_size(model, step_sizes=[1e-6, 1e-5, 1e-4])  # doctest: +SKIP
    >>> selection.table  # doctest: +SKIP
    >>> step = SGLD(step_size=selection.for_budget(20_000))  # doctest: +SKIP
    """
    model = modelcontext(model)
    sampler_class = _sampler_class(sampler)
    draws = positive_int("draws", draws)
    tune = _non_negative_int("tune", tune)
    chains = positive_int("chains", chains)
    rounds = positive_int("rounds", rounds)
    sampler_kwargs = dict(sampler_kwargs or {})
    if "step_size" in sampler_kwargs:
        raise ValueError("Pass the candidates as `step_sizes`, not in `sampler_kwargs`.")
    if random_seed is None:
        # One seed for every run: candidates differ by their step size only.
        random_seed = int(np.random.default_rng().integers(2**31))
    sample_kwargs = {
        "chains": chains,
        "cores": 1,
        "progressbar": False,
        "compute_convergence_checks": False,
        **(sample_kwargs or {}),
    }
    ksd_kwargs = {
        **_KSD_DEFAULTS,
        "max_draws": 500,
        "random_seed": random_seed,
        **(ksd_kwargs or {}),
    }
    # The full-data model and its score function, compiled once for every run's KSD.
    discrepancy = KernelSteinDiscrepancy(model)
    if step_sizes is None:
        step_sizes = _default_grid(discrepancy.full_model, sampler_class, sampler_kwargs)
    candidates = sorted({_positive_float("step_sizes", value) for value in step_sizes})
    if not candidates:
        raise ValueError("`step_sizes` is empty.")

    def configuration(step_size):
        # The sampler's settings tied to the step size (SGHMC's friction, SGNHT's diffusion).
        return {"step_size": step_size, **sampler_class.coupled_settings(step_size, sampler_kwargs)}

    with model:
        # One step method serves every candidate: its kernel takes the step size as an input.
        step = sampler_class(
            **configuration(candidates[0]), steps_per_draw=steps_per_draw, **sampler_kwargs
        )
    rows = []
    round_draws = draws
    for round_number in range(rounds):
        for step_size in candidates:
            step.reconfigure(**configuration(step_size))
            rows.append(
                _score(
                    model,
                    discrepancy,
                    step,
                    step_size,
                    round_number,
                    round_draws,
                    tune,
                    random_seed,
                    sample_kwargs,
                    ksd_kwargs,
                )
            )
        if round_number < rounds - 1:
            scored = sorted(
                (row for row in rows if row["round"] == round_number), key=lambda r: r["ksd"]
            )
            candidates = sorted(row["step_size"] for row in scored[: max(1, len(scored) // 2)])
            round_draws *= 2
    exceptions = [row.pop("_exception", None) for row in rows]
    table = pd.DataFrame(rows)
    last = table[table["round"] == rounds - 1]
    if not np.isfinite(last["ksd"]).any():
        first = next(error for error in exceptions if error is not None)
        raise RuntimeError(
            "Every candidate step size diverged or failed (see the `error` column); try "
            f"smaller step sizes than {min(candidates):.3g}.\n{table}"
        ) from first
    best = float(last.loc[last["ksd"].idxmin(), "step_size"])
    return StepSizeSelection(
        step_size=best,
        table=table,
        sampler=sampler_class.__name__,
        steps_per_chain=round_draws * steps_per_draw,
    )


def _score(
    model,
    discrepancy,
    step,
    step_size,
    round_number,
    draws,
    tune,
    random_seed,
    sample_kwargs,
    ksd_kwargs,
):
    row = {"round": round_number, "step_size": step_size, "draws": draws}
    start = time.perf_counter()
    try:
        with model, warnings.catch_warnings():
            # Large candidates are meant to be noisy or to diverge; the table records both.
            warnings.simplefilter("ignore", MinibatchNoiseWarning)
            warnings.simplefilter("ignore", SamplerDivergenceWarning)
            idata = pm.sample(
                draws=draws, tune=tune, step=step, random_seed=random_seed, **sample_kwargs
            )
        divergences = int(np.sum(idata["sample_stats"]["diverging"].values))
        if divergences:
            raise _CandidateDiverged(f"{divergences} diverging draws")
        result = discrepancy(idata, **ksd_kwargs)
        noise = noise_summary(idata).pooled
        row.update(
            ksd=result.pooled,
            ksd_worst_chain=float(np.max(result.per_chain)),
            noise_ratio=noise,
            diverged=False,
            error="",
        )
    except Exception as error:
        # Whatever failed inside a run (a divergence, a parameter check, a linear-algebra
        # error on wild draws), the candidate is out and the search goes on.
        row.update(
            ksd=np.inf,
            ksd_worst_chain=np.inf,
            noise_ratio=np.nan,
            diverged=True,
            error=_first_line(error),
        )
        row["_exception"] = error
    row["seconds"] = time.perf_counter() - start
    return row


class _CandidateDiverged(Exception):
    """A candidate's run had diverging draws."""


def _first_line(error: BaseException) -> str:
    # With cores > 1 PyMC re-raises a worker's error as the cause of its own.
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _default_grid(full_model, sampler_class, sampler_kwargs) -> list[float]:
    curvature = _largest_curvature(full_model)
    return list(sampler_class.default_step_sizes(curvature, sampler_kwargs, _DEFAULT_GRID_SIZE))


def _largest_curvature(full) -> float:
    """Largest eigenvalue (in modulus) of the negative log-posterior Hessian of a
    full-data model at its initial point, by power iteration on Hessian-vector products."""
    target = MinibatchLogPosterior(full, full.value_vars)
    direction = pt.vector("direction", dtype=target.dtype)
    hessian_vector = pt.grad(pt.sum(target.gradient * direction), target.position)
    function = pytensor.function([target.position, direction], hessian_vector)
    point = full.initial_point()
    position = np.concatenate([np.ravel(point[var.name]) for var in full.value_vars])
    position = position.astype(target.dtype)
    vector = np.random.default_rng(0).standard_normal(target.size)
    curvature = np.nan
    for _ in range(_POWER_ITERATIONS):
        vector = vector / np.linalg.norm(vector)
        product = np.asarray(function(position, vector.astype(target.dtype)), dtype=float)
        curvature = float(np.linalg.norm(product))
        if not np.isfinite(curvature) or curvature == 0:
            break
        vector = product
    if not (np.isfinite(curvature) and curvature > 0):
        raise ValueError(
            "Could not guess a step size from the curvature of the log posterior at the "
            "initial point; pass `step_sizes`."
        )
    return curvature


def _sampler_class(sampler) -> type[StochasticGradientStep]:
    names = "'SGLD', 'SGHMC', 'SGNHT', 'pSGLD'"
    if isinstance(sampler, str):
        classes = {"SGLD": SGLD, "SGHMC": SGHMC, "SGNHT": SGNHT, "PSGLD": pSGLD}
        if sampler.upper() not in classes:
            raise ValueError(f"`sampler` must be {names} or a step class, got {sampler!r}.")
        return classes[sampler.upper()]
    if isinstance(sampler, type) and issubclass(sampler, StochasticGradientStep):
        return sampler
    raise TypeError(f"`sampler` must be {names} or a step class, got {sampler!r}.")


def _positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be positive and finite, got {value!r}.")
    return float(value)


def _non_negative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")
    return int(value)
