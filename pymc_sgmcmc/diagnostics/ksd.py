"""The kernel Stein discrepancy of a PyMC trace against its model's full-data posterior.

:class:`KernelSteinDiscrepancy` maps a trace's draws to PyMC's unconstrained space, takes
their scores from the full-data log posterior
(:class:`pymc_sgmcmc.gradients.full_data.FullDataLogPosterior` of
:func:`pymc_sgmcmc.full_data_model`) and sums the IMQ Stein kernel over them with the
NumPy core of :mod:`pymc_sgmcmc.diagnostics.stein` (Gorham & Mackey 2017).
:func:`ksd` is its one-call form, :class:`KSDResult` its result and
:func:`add_ksd_to_idata` stores that in the trace.
"""

from __future__ import annotations

import warnings

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pytensor
import pytensor.tensor as pt
import xarray as xr

from pymc.model import modelcontext
from pytensor.graph.replace import clone_replace
from pytensor.tensor.type import discrete_dtypes

from pymc_sgmcmc._validation import optional_positive_int
from pymc_sgmcmc._vectorize import vectorized_function
from pymc_sgmcmc._warnings import SGMCMCWarning
from pymc_sgmcmc.diagnostics._trace import has_group, stacked_draws
from pymc_sgmcmc.diagnostics.stein import (
    check_kernel_parameters,
    stein_kernel_sums,
    v_statistic_discrepancy,
)
from pymc_sgmcmc.full_data import full_data_model
from pymc_sgmcmc.gradients.full_data import FullDataLogPosterior
from pymc_sgmcmc.gradients.minibatch import MinibatchLogPosterior

__all__ = ["KSDResult", "KernelSteinDiscrepancy", "add_ksd_to_idata", "ksd"]

_ATTR_PREFIX = "ksd"
#: The IMQ exponent of :func:`ksd`, inside ``(−1, 0)`` where KSD's guarantees hold.
_BETA = -0.5


@dataclass(frozen=True)
class KSDResult:
    """Kernel Stein discrepancy of a trace, per chain and pooled.

    Attributes
    ----------
    pooled : float
        KSD of all chains' draws together.
    per_chain : ndarray, shape (n_chains,)
        KSD of each chain's draws alone (same coordinates and standardisation as ``pooled``).
    draws_per_chain : int
        Draws per chain that entered (after ``thin`` and ``max_draws``).
    c, beta : float
        IMQ kernel parameters.
    standardize : bool
        Whether the KSD was computed on standardised coordinates.
    var_names : tuple of str
        The free variables whose coordinates entered the kernel.
    """

    pooled: float
    per_chain: np.ndarray
    draws_per_chain: int
    c: float
    beta: float
    standardize: bool
    var_names: tuple[str, ...]

    def to_attrs(self) -> dict:
        """Plain ``int``/``float``/``str``/list values, storable as netCDF or zarr attributes."""
        return {
            _ATTR_PREFIX: float(self.pooled),
            f"{_ATTR_PREFIX}_per_chain": [float(v) for v in self.per_chain],
            f"{_ATTR_PREFIX}_draws_per_chain": int(self.draws_per_chain),
            f"{_ATTR_PREFIX}_c": float(self.c),
            f"{_ATTR_PREFIX}_beta": float(self.beta),
            f"{_ATTR_PREFIX}_standardize": int(self.standardize),
            f"{_ATTR_PREFIX}_var_names": list(self.var_names),
        }


def add_ksd_to_idata(idata, result: KSDResult, *, group: str | None = None):
    """Store a :class:`KSDResult` in the attributes of a group of an ArviZ object.

    The values (see :meth:`KSDResult.to_attrs`: ``ksd``, ``ksd_per_chain``,
    ``ksd_draws_per_chain``, ``ksd_c``, ``ksd_beta``, ``ksd_standardize``,
    ``ksd_var_names``) are plain numbers, strings and lists, so they are saved with the
    trace by ``to_netcdf`` / ``to_zarr``.

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.DataTree
        Modified in place.
    result : KSDResult
        From :func:`ksd`.
    group : str, optional
        Group whose ``attrs`` receive the values. By default ``"sample_stats"``, or
        ``"posterior"`` when the object has no sample stats (e.g. built with
        ``arviz.from_dict``).

    Returns
    -------
    The same ``idata``.
    """
    if not isinstance(result, KSDResult):
        raise TypeError(f"`result` must be a KSDResult, got {type(result).__name__}.")
    if group is None:
        group = "sample_stats" if has_group(idata, "sample_stats") else "posterior"
    if not has_group(idata, group):
        raise ValueError(f"`idata` has no group {group!r}.")
    # InferenceData: the group's Dataset; DataTree: the child node, whose attrs are its own.
    idata[group].attrs.update(result.to_attrs())
    return idata


def ksd(
    idata,
    model=None,
    *,
    var_names: Sequence[str] | None = None,
    standardize: bool = True,
    c: float = 1.0,
    thin: int | None = None,
    max_draws: int | None = None,
    chunk_size: int = 16,
    random_seed=None,
) -> KSDResult:
    """Kernel Stein discrepancy of a PyMC posterior trace, per chain and pooled.

    The draws of the model's free variables are mapped to PyMC's unconstrained space (the
    value variables, e.g. ``sigma_log__``) and raveled in the order of
    ``model.value_vars``; the score ``∇ log π(θ)`` there is the gradient of the
    **full-data** ``model.logp()`` (Jacobian included): every ``pm.Minibatch`` is replaced by
    its whole data set, so the ``total_size`` scaling becomes ``N/N = 1``. Then

    .. math::

        \\mathrm{KSD} = \\sqrt{\\frac{1}{n^2} \\sum_{i,j} k_0(z_i, z_j)}

    (V-statistic, see :func:`~pymc_sgmcmc.diagnostics.kernel_stein_discrepancy`) with
    the IMQ Stein kernel ``k_0`` of ``k(x, y) = (c² + ‖x − y‖²)^{-1/2}`` (Gorham &
    Mackey 2017).

    Smaller is better; values are comparable between traces of the same model and
    settings, not across models. For exact draws KSD shrinks like ``1/sqrt(n)`` (``n`` the
    number of draws, more precisely the effective sample size); a biased sampler levels off
    at a positive value.

    ``ksd(idata, model, ...)`` is ``KernelSteinDiscrepancy(model)(idata, ...)``; build a
    :class:`KernelSteinDiscrepancy` once to score many traces of one model without
    compiling its functions again.

    Parameters
    ----------
    idata : arviz.InferenceData, xarray.DataTree or xarray.Dataset
        A trace with a ``posterior`` group (or the posterior Dataset itself) holding every
        free variable of ``model`` with dims ``("chain", "draw", ...)``.
    model : pymc.Model, optional
        The model that produced the trace; from the context if omitted.
    var_names : sequence of str, optional
        Free variables (by their names, e.g. ``"sigma"``) whose coordinates enter the
        kernel; all by default. The score is always that of the full joint density at the
        full draw: restricting the coordinates restricts the Stein functions to those
        variables, which keeps the expectation zero under the target but only sees
        errors in those variables' joint marginal.
    standardize : bool, default True
        Compute KSD on ``z = (θ − m) / s`` with ``m`` and ``s`` each coordinate's mean and
        standard deviation over the pooled draws, with scores ``∂ log π / ∂z = s ·
        ∇ log π(θ)`` (chain rule). The IMQ kernel has one length scale ``c``; posteriors
        at large N are narrow (``s ≪ c``), and on raw coordinates KSD then barely
        reacts to, e.g., 1.5× too-wide draws. Standardising makes ``c = 1`` mean "one
        posterior standard deviation" in every coordinate. (A coordinate with ``s = 0`` is
        only centred.) With ``standardize=False`` KSD is computed on the raw unconstrained
        ``θ`` and raw scores, the form of Gorham & Mackey.
    c : float, default 1.0
        IMQ length scale, in standard deviations when ``standardize=True``.
    thin : int, optional
        Keep every ``thin``-th draw of each chain.
    max_draws : int, optional
        After thinning, keep at most this many draws per chain, chosen at random without
        replacement (the same draw indices in every chain). Time grows as
        ``O((n_chains · draws)² d)`` for the pooled value: use it for long traces.
    chunk_size : int, default 16
        Draws whose scores are evaluated in one compiled call (vectorised over draws);
        peak memory of that evaluation is about ``chunk_size`` times that of one full-data
        gradient.
    random_seed : int, numpy.random.Generator or None
        Seed of the ``max_draws`` subsampling.

    Returns
    -------
    KSDResult
        ``pooled`` (float) and ``per_chain`` (one value per chain), plus the settings;
        :func:`add_ksd_to_idata` stores it in the trace.

    Raises
    ------
    ValueError
        For discrete free variables (no score), missing variables in the posterior,
        non-finite draws or scores, bad arguments, or a ``pm.Potential`` that uses
        ``pm.Minibatch`` (its term has no full-data form: write that likelihood as an
        observed variable with ``total_size``).

    References
    ----------
    J. Gorham and L. Mackey, "Measuring sample quality with kernels", ICML 2017.

    Examples
    --------
    >>> result = ksd(idata, model)  # doctest: +SKIP
    >>> result.pooled, result.per_chain  # doctest: +SKIP
    >>> add_ksd_to_idata(idata, result)  # doctest: +SKIP
    """
    return KernelSteinDiscrepancy(model)(
        idata,
        var_names=var_names,
        standardize=standardize,
        c=c,
        thin=thin,
        max_draws=max_draws,
        chunk_size=chunk_size,
        random_seed=random_seed,
    )


class KernelSteinDiscrepancy:
    """The kernel Stein discrepancy of traces of one PyMC model, its functions compiled once.

    Calling an instance on a trace (with the keyword arguments of :func:`ksd`) computes,
    for the draws ``θ_1 … θ_n`` on PyMC's unconstrained space and their full-data scores
    ``b(θ) = ∇ log π(θ)``, with ``log π`` the full-data log posterior with the
    log-Jacobians of the transforms,

    .. math::

        \\mathrm{KSD} = \\sqrt{\\frac{1}{n^2} \\sum_{i=1}^n \\sum_{j=1}^n k_0(θ_i, θ_j)},

    ``k_0`` the IMQ Stein kernel of :func:`~pymc_sgmcmc.diagnostics.imq_stein_kernel_matrix`.
    Building the instance compiles the model's forward transforms and its full-data
    gradient, most of the cost of :func:`ksd` on a short trace; one instance scores many
    traces of the model (as :func:`pymc_sgmcmc.select_step_size` does).

    Parameters
    ----------
    model : pymc.Model, optional
        From the context if omitted.

    Attributes
    ----------
    model : pymc.Model
    full_model : pymc.Model
        ``model`` on its full data (:func:`pymc_sgmcmc.full_data_model`), whose posterior
        the draws are compared with.
    var_names : tuple of str
        The free variables, in the order of ``model.value_vars``.
    value_names : tuple of str
        Their value variables on the unconstrained space (e.g. ``sigma_log__``).

    Raises
    ------
    ValueError
        For discrete free variables (no score), or a ``pm.Potential`` that uses
        ``pm.Minibatch`` (see :func:`pymc_sgmcmc.full_data_model`).

    Examples
    --------
    >>> discrepancy = KernelSteinDiscrepancy(model)  # doctest: +SKIP
    >>> [discrepancy(idata, max_draws=500).pooled for idata in traces]  # doctest: +SKIP
    """

    def __init__(self, model=None):
        model = modelcontext(model)
        discrete = [var.name for var in model.value_vars if var.dtype in discrete_dtypes]
        if discrete:
            raise ValueError(
                f"KSD needs the score of every free variable, but {discrete} are discrete."
            )
        self.model = model
        self.full_model = full_data_model(model)
        self.value_names = tuple(var.name for var in model.value_vars)
        self.var_names = tuple(model.values_to_rvs[var].name for var in model.value_vars)
        self._shapes = self.full_model.eval_rv_shapes()
        self._sizes = [int(np.prod(self._shapes[name], dtype=int)) for name in self.value_names]
        self._full_data = _full_data_log_posterior(self.full_model, self.value_names)
        self._forward = _forward_transform_function(
            self.full_model, self.var_names, self.value_names
        )

    def unconstrained_positions(self, draws: Mapping[str, np.ndarray]) -> np.ndarray:
        """Raveled positions on the unconstrained space of draws of the free variables.

        .. math::

            θ = \\big(f_1(x_1), …, f_K(x_K)\\big),

        raveled in the order of :attr:`value_names`, with ``f_k`` the forward transform of
        free variable ``k`` (e.g. ``log`` for a positive one; identity without one).

        Parameters
        ----------
        draws : mapping of str to array_like
            Every free variable by name (:attr:`var_names`), shape ``(n, *shape)``.

        Returns
        -------
        ndarray, shape (n, size)
        """
        missing = [name for name in self.var_names if name not in draws]
        if missing:
            raise ValueError(f"The draws lack the model's free variable(s) {missing}.")
        unconstrained = self._forward([draws[name] for name in self.var_names])
        count = unconstrained[0].shape[0]
        return np.concatenate(
            [
                values.reshape(count, size)
                for values, size in zip(unconstrained, self._sizes, strict=True)
            ],
            axis=1,
        ).astype(np.float64)

    def scores(self, positions, *, chunk_size: int = 16) -> np.ndarray:
        """The full-data scores ``∇ log π(θ)`` at raveled unconstrained positions.

        ``log π`` is the full-data log posterior with the log-Jacobians, on the space of
        :attr:`value_names` (from
        :meth:`pymc_sgmcmc.gradients.full_data.FullDataLogPosterior.gradients`).

        Parameters
        ----------
        positions : array_like, shape (n, size)
            E.g. from :meth:`unconstrained_positions`.
        chunk_size : int, default 16
            Positions evaluated in one compiled call.

        Returns
        -------
        ndarray, shape (n, size)
        """
        scores = self._full_data.gradients(
            positions, positions_per_call=_checked_chunk_size(chunk_size)
        )
        if not np.all(np.isfinite(scores)):
            raise ValueError(
                "The full-data log density has a non-finite gradient at some draws (draws "
                "outside the support, or a log density that overflows)."
            )
        return scores

    def __call__(
        self,
        idata,
        *,
        var_names: Sequence[str] | None = None,
        standardize: bool = True,
        c: float = 1.0,
        thin: int | None = None,
        max_draws: int | None = None,
        chunk_size: int = 16,
        random_seed=None,
    ) -> KSDResult:
        """The KSD of a trace of the model; the arguments are those of :func:`ksd`."""
        c, beta = check_kernel_parameters(c, _BETA)
        thin = optional_positive_int("thin", thin)
        max_draws = optional_positive_int("max_draws", max_draws)
        chunk_size = _checked_chunk_size(chunk_size)
        if not isinstance(standardize, bool | np.bool_):
            raise TypeError(f"`standardize` must be a bool, got {standardize!r}.")
        selected = _selected_value_names(var_names, self.var_names, self.value_names)

        posterior = idata if isinstance(idata, xr.Dataset) else idata["posterior"]
        missing = [name for name in self.var_names if name not in posterior]
        if missing:
            raise ValueError(f"The posterior lacks the model's free variable(s) {missing}.")
        draw_index = _draw_index(posterior.sizes["draw"], thin, max_draws, random_seed)
        n_chains, n_draws = posterior.sizes["chain"], len(draw_index)
        draws = {
            name: stacked_draws(posterior, name, self._shapes[name], draw_index)
            for name in self.var_names
        }
        positions = self.unconstrained_positions(draws)
        scores = self.scores(positions, chunk_size=chunk_size)

        columns = self._columns(selected)
        positions, scores = positions[:, columns], scores[:, columns]
        if standardize:
            positions, scores = _standardized(positions, scores)
        total, chain_sums = stein_kernel_sums(
            positions, scores, [n_draws] * n_chains, c=c, beta=beta
        )
        return KSDResult(
            pooled=v_statistic_discrepancy(total, n_chains * n_draws),
            per_chain=np.array([v_statistic_discrepancy(s, n_draws) for s in chain_sums]),
            draws_per_chain=n_draws,
            c=c,
            beta=beta,
            standardize=bool(standardize),
            var_names=tuple(
                name
                for name, value in zip(self.var_names, self.value_names, strict=True)
                if value in selected
            ),
        )

    def _columns(self, selected: set[str]) -> np.ndarray:
        """Columns of the raveled positions that belong to the ``selected`` value names."""
        offsets = np.concatenate([[0], np.cumsum(self._sizes)])
        return np.concatenate(
            [
                np.arange(offsets[k], offsets[k + 1])
                for k, name in enumerate(self.value_names)
                if name in selected
            ]
        )


def _checked_chunk_size(chunk_size) -> int:
    chunk_size = optional_positive_int("chunk_size", chunk_size)
    if chunk_size is None:
        raise TypeError("`chunk_size` must be a positive integer, got None.")
    return chunk_size


def _standardized(positions, scores) -> tuple[np.ndarray, np.ndarray]:
    """``z = (θ − m) / s`` and its scores ``s · ∇ log π(θ)`` (chain rule), per coordinate."""
    standard_deviation = positions.std(axis=0)
    # A constant coordinate is only centred.
    standard_deviation[standard_deviation == 0] = 1.0
    positions = (positions - positions.mean(axis=0)) / standard_deviation
    return positions, scores * standard_deviation


def _selected_value_names(var_names, rv_names, value_names) -> set[str]:
    if var_names is None:
        return set(value_names)
    if isinstance(var_names, str):
        var_names = [var_names]
    to_value = dict(zip(rv_names, value_names, strict=True))
    to_value.update({name: name for name in value_names})
    unknown = [name for name in var_names if name not in to_value]
    if unknown:
        raise ValueError(f"{unknown} are not free variables of the model ({list(rv_names)}).")
    if not var_names:
        raise ValueError("`var_names` is empty.")
    return {to_value[name] for name in var_names}


def _draw_index(n_draws: int, thin, max_draws, random_seed) -> np.ndarray:
    index = np.arange(n_draws)[:: thin or 1]
    if max_draws is not None and index.size > max_draws:
        rng = np.random.default_rng(random_seed)
        index = np.sort(rng.choice(index, size=max_draws, replace=False))
    if index.size == 0:
        raise ValueError("The posterior has no draws.")
    return index


def _full_data_log_posterior(full_model, value_names) -> FullDataLogPosterior:
    """The full-data log posterior of ``full_model`` over the raveled ``value_names``.

    ``full_model`` has no ``pm.Minibatch`` left, so the log posterior is its ``logp()``
    with the log-Jacobians, in one chunk holding every row.
    """
    value_vars = {var.name: var for var in full_model.value_vars}
    with warnings.catch_warnings():
        # Meant for the samplers: an observed variable with total_size but no
        # pm.Minibatch is a fixed batch. Its logp keeps that scaling, as the samplers'
        # target, and the user was told when building the sampler.
        warnings.filterwarnings(
            "ignore",
            message=r"Observed variable .* has total_size=.*, but its data does not come "
            r"from pm\.Minibatch",
            category=SGMCMCWarning,
        )
        target = MinibatchLogPosterior(full_model, [value_vars[name] for name in value_names])
    return FullDataLogPosterior(target)


def _forward_transform_function(model, rv_names, value_names):
    """A function of constrained draws (one array per variable, leading axis the draws)
    returning their values on the unconstrained space, one array per variable."""
    rvs = [model[name] for name in rv_names]
    if all(model.rvs_to_transforms.get(rv) is None for rv in rvs):
        return lambda constrained: [np.asarray(array) for array in constrained]
    # Untransformed value variables share their variable's name: look them up by value.
    value_vars = {var.name: var for var in model.value_vars}
    placeholders = {rv: rv.type() for rv in rvs}
    outputs = []
    for rv, value_name in zip(rvs, value_names, strict=True):
        transform = model.rvs_to_transforms.get(rv)
        value = placeholders[rv]
        if transform is not None:
            # Transform parameters (e.g. Interval bounds) may depend on other free variables.
            value = transform.forward(value, *rv.owner.inputs)
        outputs.append(pt.as_tensor_variable(value).astype(value_vars[value_name].dtype))
    outputs = clone_replace(outputs, replace=placeholders)
    inputs = [placeholders[rv] for rv in rvs]
    function = vectorized_function(
        inputs,
        outputs,
        inputs,
        lambda inputs, outputs: pytensor.function(inputs, outputs, on_unused_input="ignore"),
    )

    def forward(constrained):
        arrays = [
            np.asarray(array, dtype=rv.dtype) for array, rv in zip(constrained, rvs, strict=True)
        ]
        return function(*arrays)

    return forward
