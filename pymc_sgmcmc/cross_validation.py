"""PSIS-LOO cross-validation of a minibatch model, on its full data.

On a model whose data enter through ``pm.Minibatch(..., batch_size=B)`` with
``total_size=N``, ``pm.compute_log_likelihood`` returns the log-likelihood of ``B`` random
rows scaled by ``N/B``, not the pointwise log-likelihood of the ``N`` observations that
PSIS-LOO needs. :func:`loo` evaluates it on the full data
(:func:`pymc_sgmcmc.full_data_model`), a chunk of rows at a time for all draws,
and runs ArviZ's PSIS-LOO on it. When the draws × observations matrix would not fit a
memory budget, it runs subsampled PSIS-LOO (Magnusson et al. 2019) with
``arviz_stats.loo_subsample`` instead (ArviZ ≥ 1), evaluating the log-likelihood of every
draw only at the subsampled rows, and at the posterior mean for the others.

References
----------
A. Vehtari, A. Gelman and J. Gabry, "Practical Bayesian model evaluation using
leave-one-out cross-validation and WAIC", Statistics and Computing 27 (2017).

M. Magnusson, M. Riis Andersen, J. Jonasson and A. Vehtari, "Bayesian leave-one-out
cross-validation for large data", ICML 2019.
"""

from __future__ import annotations

import numbers

import arviz as az
import numpy as np
import pytensor.tensor as pt
import xarray as xr

from pymc.logprob.basic import conditional_logp
from pymc.model import modelcontext
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant
from pytensor.graph.replace import clone_replace, vectorize_graph
from pytensor.graph.traversal import ancestors, graph_inputs
from xarray.backends import BackendArray
from xarray.core import indexing

from pymc_sgmcmc._blocks import BlockFunction, block_model, lazy_over_rows, rows_per_task
from pymc_sgmcmc._compat import compile_function
from pymc_sgmcmc._validation import optional_positive_int
from pymc_sgmcmc._warnings import warn
from pymc_sgmcmc.diagnostics._trace import group_dataset, has_group, stacked_draws
from pymc_sgmcmc.full_data import full_data_model, rebuilt_random_variable

__all__ = ["loo", "pointwise_log_likelihood"]

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1

#: Bytes the draws × observations log-likelihood matrix may take by default (1 GiB).
DEFAULT_MEMORY_BUDGET = 2**30
#: Observations in the subsample when :func:`loo` subsamples because of the budget.
DEFAULT_SUBSAMPLE = 1000
#: Log-likelihood values computed per compiled call when ``chunk_size`` is not given
#: (32 MiB of float64): large enough that the call overhead is negligible.
_CHUNK_ELEMENTS = 2**22


def loo(
    idata,
    model=None,
    *,
    var_name: str | None = None,
    memory_budget: float = DEFAULT_MEMORY_BUDGET,
    chunk_size: int | None = None,
    subsample: int | None = None,
    pointwise: bool = True,
    thin: int | None = None,
    max_draws: int | None = None,
    random_seed=None,
):
    """PSIS-LOO of a trace on the full data of its (minibatch) model.

    The pointwise log-likelihood ``log p(y_i | θ_s)`` of the observed variable is evaluated
    for every posterior draw ``θ_s`` on the **full-data** model (every ``pm.Minibatch``
    replaced by its whole data set, no ``total_size`` scaling), a chunk of rows at a time.
    If the ``draws × observations`` matrix fits ``memory_budget``, PSIS-LOO runs on all of
    it (``az.loo``). Otherwise, or when ``subsample`` is given, subsampled PSIS-LOO
    (Magnusson et al. 2019, ``arviz_stats.loo_subsample`` with the point-estimate
    approximation ``method="plpd"``) runs on ``subsample`` random observations: the
    log-likelihood of every draw is evaluated only at those rows, and at the posterior
    mean for all ``N`` rows (the control variate of the difference estimator).

    On a model that streams its data from a store (:func:`pymc_sgmcmc.Minibatch`), the
    rows are read block by block as Dask tasks (on a cluster's workers when a
    ``distributed.Client`` is active), and the subsample's rows chunk by chunk.

    Parameters
    ----------
    idata : arviz.InferenceData, xarray.DataTree or xarray.Dataset
        A trace with a ``posterior`` group (or the posterior Dataset itself) holding every
        free variable of ``model`` with dims ``("chain", "draw", ...)``. Its
        ``log_likelihood`` group, if any, is not used.
    model : pymc.Model, optional
        The model that produced the trace: the minibatch model, or its full-data version
        (a model without ``pm.Minibatch`` is used as it is); from the context if omitted.
    var_name : str, optional
        The observed variable whose observations are left out; needed when the model has
        several.
    memory_budget : float, default 2**30 (1 GiB)
        Bytes the ``draws × observations`` float64 log-likelihood matrix may take for the
        exact computation; PSIS and ArviZ need a few times that in temporary arrays.
        Past it, PSIS-LOO is subsampled.
    chunk_size : int, optional
        Rows (along the first axis of the observed variable) whose log-likelihood is
        evaluated for all draws in one compiled call; by default about ``2**22 / draws``
        (32 MiB of output per call).
    subsample : int, optional
        Number of observations of subsampled PSIS-LOO. Given, it forces subsampling
        (also within the budget); by default subsampling uses 1000 observations (or all,
        if fewer) and only happens past ``memory_budget``.
    pointwise : bool, default True
        Return the pointwise values (``loo_i`` / ``elpd_i`` and ``pareto_k``, N values
        each), which ``az.compare`` needs.
    thin : int, optional
        Keep every ``thin``-th draw of each chain.
    max_draws : int, optional
        After thinning, keep at most this many draws per chain, chosen at random without
        replacement (the same draw indices in every chain).
    random_seed : int, numpy.random.Generator or None
        Seed of the ``max_draws`` selection and of the subsample. Give the same seed to the
        ``loo`` of models that will be compared: with the same number of observations they
        then share the subsample, which ``az.compare`` needs for the difference estimator.

    Returns
    -------
    ELPDData
        ArviZ's result object: ``arviz.ELPDData`` (ArviZ 0.x, from ``az.loo``); with
        ArviZ ≥ 1, arviz_stats' ``ELPDData`` (exact) or ``ELPDDataLOOSubsample``
        (subsampled; its ``se`` includes the subsampling error, given alone in
        ``subsampling_se``). ``az.compare({"a": loo_a, "b": loo_b})`` takes them (with
        the default ``pointwise=True``).

    Raises
    ------
    ValueError
        If ``idata`` has no posterior or lacks free variables of the model, the model has
        no observed variable (or several and no ``var_name``), the draws are non-finite,
        or the log-likelihood matrix exceeds ``memory_budget`` with ArviZ 0.x (which has
        no subsampled PSIS-LOO; also when ``subsample`` is given there).

    Notes
    -----
    The rows of the data arrays are evaluated separately by slicing, inside the
    log-likelihood graph, every data array (constant or ``pm.Data``) whose first axis has
    the length of the observed variable's first axis; the result is checked against the
    full-data evaluation at the first draw. Where that check fails (data arrays laid out
    otherwise), each compiled call evaluates all rows for a chunk of draws instead, which
    is correct but makes subsampling save memory only, not time.

    A trace of an approximate sampler (SGLD, SGHMC with a constant step) is not an exact
    posterior sample: PSIS-LOO then estimates the predictive accuracy of that
    approximate posterior.

    Examples
    --------
    >>> result = loo(idata, model, pointwise=True)  # doctest: +SKIP
    >>> az.compare({"linear": result, "quadratic": loo(idata_2, model_2, pointwise=True)})
    ... # doctest: +SKIP
    """
    model = modelcontext(model)
    memory_budget = _check_memory_budget(memory_budget)
    chunk_size = optional_positive_int("chunk_size", chunk_size)
    subsample = optional_positive_int("subsample", subsample)
    if not isinstance(pointwise, bool | np.bool_):
        raise TypeError(f"`pointwise` must be a bool, got {pointwise!r}.")
    draws_rng, rows_rng = np.random.default_rng(random_seed).spawn(2)

    posterior = _selected_posterior(idata, thin, max_draws, draws_rng)
    evaluator, draws = _evaluator(model, var_name, posterior)
    observed = evaluator.observed

    n_samples = posterior.sizes["chain"] * posterior.sizes["draw"]
    n_points = evaluator.n_points
    matrix_bytes = 8 * n_samples * n_points
    if subsample is None and matrix_bytes <= memory_budget:
        log_likelihood = evaluator.data_array(
            evaluator.evaluate(draws, None, chunk_size), posterior
        )
        return _exact_loo(posterior, log_likelihood, pointwise)

    if not ARVIZ_1:
        reason = (
            f"`subsample={subsample}` was given"
            if subsample is not None
            else (
                f"the log-likelihood of {observed.name!r} for {n_samples} draws × {n_points} "
                f"observations takes {_gib(matrix_bytes)}, more than "
                f"memory_budget={_gib(memory_budget)}"
            )
        )
        raise ValueError(
            f"Subsampled PSIS-LOO is needed, as {reason}, but it exists only in ArviZ ≥ 1 "
            f"(arviz_stats.loo_subsample), and ArviZ {az.__version__} is installed. Raise "
            "`memory_budget` (PSIS needs a few times the matrix in memory), use fewer draws "
            "(`thin=` or `max_draws=`), or install PyMC ≥ 6 with ArviZ ≥ 1."
        )
    size = min(DEFAULT_SUBSAMPLE, n_points) if subsample is None else subsample
    if size > n_points:
        raise ValueError(
            f"`subsample={subsample}` exceeds the number of observations ({n_points})."
        )
    return _subsampled_loo(
        evaluator, posterior, draws, size, pointwise=pointwise, chunk_size=chunk_size, rng=rows_rng
    )


def pointwise_log_likelihood(
    idata,
    model=None,
    *,
    var_name: str | None = None,
    chunk_size: int | None = None,
    thin: int | None = None,
    max_draws: int | None = None,
    random_seed=None,
) -> xr.DataArray:
    """Pointwise log-likelihood of the full data for every posterior draw.

    What ``pm.compute_log_likelihood`` computes on a model without ``pm.Minibatch``, for a
    minibatch model too (on its full data, without the ``total_size`` scaling), evaluated
    a chunk of rows at a time for all draws. It takes ``8 × draws × observations`` bytes.
    On a model that streams its data from a store (:func:`pymc_sgmcmc.Minibatch`), it is
    a lazy Dask array instead, one task per block of ``chunk_size`` rows (whole chunks of
    the store) that reads its rows where it runs.

    Parameters
    ----------
    idata, model, var_name, chunk_size, thin, max_draws, random_seed
        As for :func:`loo`.

    Returns
    -------
    xarray.DataArray
        Named after the observed variable, with dims ``("chain", "draw", *obs_dims)``; the
        observation dims are the variable's model dims where they fit, else
        ``"{var_name}_dim_{i}"`` as ArviZ names them; Dask-backed for a streamed model
        (``.compute()``, ``.to_zarr()``, or reductions that hold one block at a time).
        Store it as
        ``idata["log_likelihood"] = result.to_dataset()`` (``xr.Dataset`` on ArviZ 0.x:
        ``idata.add_groups(log_likelihood=result.to_dataset())``).
    """
    model = modelcontext(model)
    chunk_size = optional_positive_int("chunk_size", chunk_size)
    posterior = _selected_posterior(idata, thin, max_draws, np.random.default_rng(random_seed))
    evaluator, draws = _evaluator(model, var_name, posterior)
    if isinstance(evaluator, _StreamedLogLikelihood):
        return evaluator.data_array(evaluator.lazy(draws, posterior, chunk_size), posterior)
    return evaluator.data_array(evaluator.evaluate(draws, None, chunk_size), posterior)


def _evaluator(model, var_name, posterior):
    """The pointwise log-likelihood of ``model`` (on its full data, or streamed block by
    block) and the posterior's draws of its free variables."""
    blocks = block_model(model)
    full = full_data_model(model) if blocks is None else blocks.model
    observed = _observed_variable(full, var_name)
    draws = _free_variable_draws(full, posterior)
    reference = [values[:1] for values in draws]
    if blocks is None:
        return _PointwiseLogLikelihood(full, observed, reference), draws
    return _StreamedLogLikelihood(blocks, observed, reference), draws


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def _check_memory_budget(memory_budget) -> float:
    if (
        isinstance(memory_budget, bool)
        or not isinstance(memory_budget, numbers.Real)
        or not memory_budget > 0
    ):
        raise ValueError(
            f"`memory_budget` must be a positive number of bytes, got {memory_budget!r}."
        )
    return float(memory_budget)


def _gib(size: float) -> str:
    return f"{size / 2**30:.3g} GiB"


def _observed_variable(model, var_name):
    observed = list(model.observed_RVs)
    names = [rv.name for rv in observed]
    if not observed:
        raise ValueError("The model has no observed variable: there is nothing to leave out.")
    if var_name is None:
        if len(observed) > 1:
            raise ValueError(
                f"The model has several observed variables {names}: choose one with `var_name`."
            )
        return observed[0]
    if var_name not in names:
        raise ValueError(f"{var_name!r} is not an observed variable of the model ({names}).")
    return observed[names.index(var_name)]


def _selected_posterior(idata, thin, max_draws, rng) -> xr.Dataset:
    """The posterior Dataset, with the draws ``thin`` and ``max_draws`` keep."""
    thin = optional_positive_int("thin", thin)
    max_draws = optional_positive_int("max_draws", max_draws)
    if isinstance(idata, xr.Dataset):
        posterior = idata
    elif has_group(idata, "posterior"):
        posterior = group_dataset(idata, "posterior")
    else:
        raise ValueError("`idata` has no posterior group.")
    if "chain" not in posterior.dims or "draw" not in posterior.dims:
        raise ValueError(
            f"The posterior must have dims 'chain' and 'draw', got {tuple(posterior.dims)}."
        )
    index = np.arange(posterior.sizes["draw"])[:: thin or 1]
    if max_draws is not None and index.size > max_draws:
        index = np.sort(rng.choice(index, size=max_draws, replace=False))
    if index.size == 0 or posterior.sizes["chain"] == 0:
        raise ValueError("The posterior has no draws.")
    return posterior.isel(draw=index)


def _free_variable_draws(model, posterior) -> list[np.ndarray]:
    """Draws of the model's free variables, shape (chains × draws, *variable shape) each."""
    names = [rv.name for rv in model.free_RVs]
    if not names:
        raise ValueError("The model has no free variable: there is no posterior to average over.")
    missing = [name for name in names if name not in posterior]
    if missing:
        raise ValueError(f"The posterior lacks the model's free variable(s) {missing}.")
    shapes = model.eval_rv_shapes()
    return [stacked_draws(posterior, name, shapes[name]) for name in names]


# --------------------------------------------------------------------------------------
# The pointwise log-likelihood, compiled
# --------------------------------------------------------------------------------------


class _PointwiseLogLikelihood:
    """Log-likelihood of one observed variable of a full-data model, per observation.

    Compiled as functions of a batch of draws of the free variables, in their constrained
    space as the posterior stores them: one for all rows, and one for given rows (indices
    along the first axis of the pointwise log-likelihood) where the data can be sliced.
    """

    def __init__(self, model, observed, reference_draw):
        self.model = model
        self.observed = observed
        self.var_name = observed.name
        free_rvs = list(model.free_RVs)
        placeholders = {rv: rv.type(name=rv.name) for rv in free_rvs}
        self._inputs = [placeholders[rv] for rv in free_rvs]
        log_likelihood = _log_likelihood_graph(model, observed, placeholders)
        self._all_rows = _compile_over_draws(self._inputs, log_likelihood)

        reference = self._all_rows(*self._cast(reference_draw))[0]
        if reference.ndim == 0:
            raise ValueError(
                f"The log-likelihood of {observed.name!r} is a single number: there are no "
                "observations to leave out one at a time."
            )
        self.point_shape = reference.shape
        self.n_points = int(reference.size)

        rows = pt.vector("rows", dtype="int64")
        sliced = _row_sliced(log_likelihood, rows, self.point_shape[0], self._inputs)
        self._some_rows = None
        if sliced is not None:
            self._some_rows = _compile_over_draws(self._inputs, sliced, rows)
            # Every data array with N rows was sliced; one laid out otherwise (e.g. (p, N))
            # gives a wrong or failing graph, and so does a length N held in the graph:
            # compare two chunks of rows with the evaluation on all rows.
            try:
                check = self.evaluate(reference_draw, None, -(-self.point_shape[0] // 2))[0]
                separate = check.shape == reference.shape and np.allclose(
                    check, reference, rtol=1e-6, atol=1e-8, equal_nan=True
                )
            except (AssertionError, IndexError, RuntimeError, ValueError):
                separate = False
            if not separate:
                self._some_rows = None

    @property
    def rows_are_separate(self) -> bool:
        """Whether a compiled call evaluates only the rows asked for."""
        return self._some_rows is not None

    def _cast(self, arrays):
        return [
            np.asarray(np.rint(a) if var.dtype.startswith(("int", "uint")) else a, dtype=var.dtype)
            for a, var in zip(arrays, self._inputs, strict=True)
        ]

    def evaluate(self, draws, rows, chunk_size) -> np.ndarray:
        """Log-likelihood, shape (draws, rows, *point_shape[1:]), float64.

        ``draws``: one array per free variable, leading axis the draws; ``rows``: indices
        along the first observation axis (all rows if None).
        """
        n_rows = self.point_shape[0]
        rows = np.arange(n_rows) if rows is None else np.asarray(rows, dtype=np.int64)
        n_samples = draws[0].shape[0]
        row_size = self.n_points // n_rows
        out = np.empty((n_samples, rows.size, *self.point_shape[1:]), dtype=np.float64)
        if self.rows_are_separate:
            draw_step = n_samples
            row_step = chunk_size or max(1, _CHUNK_ELEMENTS // (n_samples * row_size))
        else:
            # Each call computes every row: bound the calls' memory by their draws instead.
            draw_step = max(1, _CHUNK_ELEMENTS // self.n_points)
            row_step = max(rows.size, 1)
        draws = self._cast(draws)
        for draw_start in range(0, n_samples, draw_step):
            batch = [values[draw_start : draw_start + draw_step] for values in draws]
            for row_start in range(0, rows.size, row_step):
                chunk = rows[row_start : row_start + row_step]
                if self.rows_are_separate:
                    values = self._some_rows(*batch, chunk)
                else:
                    values = self._all_rows(*batch)[:, chunk]
                out[draw_start : draw_start + draw_step, row_start : row_start + chunk.size] = (
                    values
                )
        return out

    def dims_and_coords(self, posterior) -> tuple[list[str], dict]:
        """ArviZ's dims and coords of the log-likelihood: the model dims of the observed
        variable while their lengths fit, then ``{var_name}_dim_{i}``."""
        model_dims = self.model.named_vars_to_dims.get(self.var_name) or ()
        dims, coords = [], {name: posterior[name].values for name in ("chain", "draw")}
        fits = True
        for axis, size in enumerate(self.point_shape):
            dim = model_dims[axis] if axis < len(model_dims) else None
            values = self.model.coords.get(dim) if dim is not None else None
            # Like ArviZ, the model dims stop at the first that does not fit (e.g. the
            # event dim of a multivariate variable, reduced in its log-likelihood).
            fits = fits and dim is not None and (values is None or len(values) == size)
            if not fits:
                dims.append(f"{self.var_name}_dim_{axis}")
                continue
            dims.append(dim)
            if values is not None:
                coords[dim] = np.asarray(values)
        return dims, coords

    def data_array(self, values, posterior) -> xr.DataArray:
        """``values`` (draws, *point_shape) as a (chain, draw, *obs dims) DataArray."""
        dims, coords = self.dims_and_coords(posterior)
        shape = (posterior.sizes["chain"], posterior.sizes["draw"], *self.point_shape)
        return xr.DataArray(
            values.reshape(shape), dims=("chain", "draw", *dims), coords=coords, name=self.var_name
        )


class _StreamedLogLikelihood(_PointwiseLogLikelihood):
    """The pointwise log-likelihood of a model whose data are streamed from a store: the
    model on a block of rows (:class:`pymc_sgmcmc._blocks.BlockModel`), evaluated block by
    block as Dask tasks that read their rows from the store."""

    def __init__(self, blocks, observed, reference_draw):
        self.blocks = blocks
        self.model = blocks.model
        self.observed = observed
        self.var_name = observed.name
        placeholders = {rv: rv.type(name=rv.name) for rv in self.model.free_RVs}
        self._inputs = list(placeholders.values())
        graph = _log_likelihood_graph(self.model, observed, placeholders)
        graph, block_inputs = blocks.block_inputs(graph)
        self.function = BlockFunction(self._inputs, block_inputs, graph)
        reference = self.function(self._cast(reference_draw), blocks.reader.read(0, 1))[0]
        if reference.ndim == 0:
            raise ValueError(
                f"The log-likelihood of {observed.name!r} is a single number: there are no "
                "observations to leave out one at a time."
            )
        if reference.shape[0] != 1:
            raise ValueError(
                f"The log-likelihood of {observed.name!r} on one row of the streamed data has "
                f"{reference.shape[0]} rows: it does not have the rows of the data on its "
                "first axis, so it cannot be evaluated block by block."
            )
        self.point_shape = (blocks.rows, *reference.shape[1:])
        self.n_points = int(np.prod(self.point_shape))
        self._some_rows = True

    def lazy(self, draws, posterior, chunk_size=None):
        """The (chain, draw, *point_shape) log-likelihood as a Dask array, one task per
        block of ``chunk_size`` rows (whole chunks of the store)."""
        leading = (posterior.sizes["chain"], posterior.sizes["draw"])
        return lazy_over_rows(
            self.function,
            self.blocks.reader,
            self._cast(draws),
            leading,
            self.point_shape[1:],
            block_rows=self._block_rows(draws, chunk_size),
        )

    def _block_rows(self, draws, chunk_size):
        row_size = self.n_points // self.point_shape[0]
        return chunk_size or rows_per_task(draws[0].shape[0], row_size)

    def evaluate(self, draws, rows, chunk_size) -> np.ndarray:
        draws = self._cast(draws)
        if rows is not None:
            return self.function(draws, self.blocks.reader.take(rows))
        lazy = lazy_over_rows(
            self.function,
            self.blocks.reader,
            draws,
            (draws[0].shape[0],),
            self.point_shape[1:],
            block_rows=self._block_rows(draws, chunk_size),
        )
        return np.asarray(lazy.compute(), dtype=np.float64)


def _log_likelihood_graph(model, observed, placeholders):
    """The elementwise log-likelihood of ``observed`` given the draws in ``placeholders``.

    Derived with every free variable conditioned on its placeholder, which so stands for
    its constrained value, as the posterior stores it (``pm.compute_log_likelihood``
    removes the model's transforms to the same end, which PyMC refuses for models with
    initial values). The observed variable is resized to a symbolic stand-in of its data,
    without static shape, replaced by the data afterwards: derived on the data themselves,
    the graph would hold their length as a constant (e.g. an ``Alloc`` to ``N`` rows),
    and a chunk of rows would not fit it.
    """
    value = pt.tensor(dtype=observed.dtype, shape=(None,) * observed.ndim)
    node = observed.owner
    resized = rebuilt_random_variable(node, list(node.inputs), value)[node.outputs.index(observed)]
    # conditional_logp needs a value for every variable the likelihood reads: the draws,
    # and the data of other observed variables it depends on.
    rv_values = {**placeholders, resized: value}
    upstream = set(ancestors([resized]))
    rv_values.update(
        {
            rv: model.rvs_to_values[rv]
            for rv in model.observed_RVs
            if rv is not observed and rv in upstream
        }
    )
    log_likelihood = conditional_logp(rv_values, warn_rvs=False)[value]
    log_likelihood = clone_replace(log_likelihood, replace={value: model.rvs_to_values[observed]})
    return log_likelihood.astype("float64")


def _row_sliced(log_likelihood, rows, n_rows, inputs):
    """The log-likelihood of the given rows only: every data array (constant or shared)
    with ``n_rows`` rows is indexed by ``rows``. None if no data array has that length."""
    data = [
        var
        for var in graph_inputs([log_likelihood])
        if var not in inputs and _leading_length(var) == n_rows
    ]
    if not data:
        return None
    try:
        # rebuild_strict=False: the sliced arrays lose their static length N, and the
        # nodes above them are rebuilt with the new shapes.
        return clone_replace(
            log_likelihood, replace={var: var[rows] for var in data}, rebuild_strict=False
        )
    except (TypeError, ValueError, NotImplementedError):
        return None


def _leading_length(var) -> int | None:
    if isinstance(var, Constant):
        shape = np.shape(var.data)
    elif isinstance(var, SharedVariable):
        shape = np.shape(var.get_value(borrow=True))
    else:
        return None
    return shape[0] if len(shape) >= 1 else None


def _compile_over_draws(inputs, output, rows=None):
    """Compile ``output`` of ``inputs`` batched over a leading draw axis (and of ``rows``,
    not batched, if given).

    Falls back to a loop over draws of the unbatched function where PyTensor cannot
    vectorise the graph.
    """
    extra = [] if rows is None else [rows]
    batched = [pt.tensor(dtype=var.dtype, shape=(None, *var.type.shape)) for var in inputs]
    try:
        batched_output = vectorize_graph(output, dict(zip(inputs, batched, strict=True)))
        function = compile_function([*batched, *extra], batched_output, on_unused_input="ignore")
    except (NotImplementedError, TypeError, ValueError):
        single = compile_function([*inputs, *extra], output, on_unused_input="ignore")

        def function(*arrays):
            draws, rest = arrays[: len(inputs)], arrays[len(inputs) :]
            return np.stack([single(*items, *rest) for items in zip(*draws, strict=True)])

    def evaluate(*arrays):
        values = np.asarray(function(*arrays), dtype=np.float64)
        if values.ndim == output.ndim:
            # A likelihood that reads no free variable (only data) has no draw axis.
            values = np.broadcast_to(values, (arrays[0].shape[0], *values.shape))
        return values

    return evaluate


# --------------------------------------------------------------------------------------
# PSIS-LOO
# --------------------------------------------------------------------------------------


def _exact_loo(posterior, log_likelihood, pointwise):
    name = log_likelihood.name
    if ARVIZ_1:
        import arviz_stats

        # The posterior enters the relative efficiency (ESS) of the PSIS weights.
        tree = xr.DataTree.from_dict(
            {"posterior": posterior, "log_likelihood": xr.Dataset({name: log_likelihood})}
        )
        return arviz_stats.loo(tree, pointwise=pointwise, var_name=name)
    idata = az.InferenceData(posterior=posterior, log_likelihood=xr.Dataset({name: log_likelihood}))
    return az.loo(idata, pointwise=pointwise, var_name=name)


def _subsampled_loo(evaluator, posterior, draws, size, *, pointwise, chunk_size, rng):
    """``arviz_stats.loo_subsample`` with the log-likelihood of the subsample's rows only.

    ``loo_subsample`` reads the observations' count, dims and the subsample's columns
    from a ``log_likelihood`` group of full size, and the approximation of every
    observation's elpd from ``log_lik_fn`` at the posterior mean (``method="plpd"``). The
    group given here is a lazily indexed array holding the subsample's rows only
    (xarray asks its backend for just the indexed part), so that the full matrix is
    never computed nor stored.
    """
    import arviz_stats

    if not evaluator.rows_are_separate:
        warn(
            f"The log-likelihood of {evaluator.var_name!r} could not be evaluated a few rows "
            "at a time (its data arrays do not all have the observations on their first "
            "axis): every row is computed for every draw, so subsampling saves memory but "
            "not time."
        )
    name = evaluator.var_name
    point_shape = evaluator.point_shape
    observations = np.sort(rng.choice(evaluator.n_points, size=size, replace=False))
    rows = np.unique(np.unravel_index(observations, point_shape)[0])
    n_chains, n_draws = posterior.sizes["chain"], posterior.sizes["draw"]
    block = evaluator.evaluate(draws, rows, chunk_size)
    block = block.reshape(n_chains, n_draws, rows.size, *point_shape[1:])

    dims, coords = evaluator.dims_and_coords(posterior)
    lazy = indexing.LazilyIndexedArray(_RowsOnly(block, rows, (n_chains, n_draws, *point_shape)))
    log_likelihood = xr.DataArray(
        xr.Variable(("chain", "draw", *dims), lazy), coords=coords, name=name
    )
    obs_coords = {dim: values for dim, values in coords.items() if dim in dims}
    # The log_lik_fn below ignores the observed values: it needs their dims and coords.
    observed = xr.DataArray(
        np.arange(evaluator.n_points).reshape(point_shape), dims=dims, coords=obs_coords
    )
    tree = xr.DataTree.from_dict(
        {
            "posterior": posterior,
            "log_likelihood": xr.Dataset({name: log_likelihood}),
            "observed_data": xr.Dataset({name: observed}),
        }
    )
    free_names = [rv.name for rv in evaluator.model.free_RVs]

    def at_posterior_mean(observed, data):
        mean = [np.asarray(data.posterior[var].values)[None] for var in free_names]
        values = evaluator.evaluate(mean, None, chunk_size)[0]
        return xr.DataArray(values, dims=observed.dims, coords=observed.coords)

    return arviz_stats.loo_subsample(
        tree,
        observations=observations.astype(np.int64),
        pointwise=pointwise,
        var_name=name,
        method="plpd",
        log_lik_fn=at_posterior_mean,
        param_names=free_names,
    )


class _RowsOnly(BackendArray):
    """A (chain, draw, *point_shape) array of which only some rows (first observation
    axis) are stored; indexing any other row is an error, never a computation."""

    def __init__(self, block, rows, shape):
        self.block = block
        self.rows = rows
        self.shape = shape
        self.dtype = block.dtype

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._outer_indexed
        )

    def _outer_indexed(self, key):
        key = list(key)
        n_rows = self.shape[2]
        wanted = key[2]
        if isinstance(wanted, slice):
            wanted = np.arange(*wanted.indices(n_rows))
        wanted = np.asarray(wanted, dtype=np.int64) % n_rows
        positions = np.minimum(np.searchsorted(self.rows, wanted), self.rows.size - 1)
        if not np.array_equal(self.rows[positions], wanted):
            raise RuntimeError(
                "arviz_stats.loo_subsample read the log-likelihood of observations outside "
                "the subsample; this version of arviz_stats is not supported by "
                "pymc_sgmcmc.loo's subsampling."
            )
        key[2] = positions
        result = self.block
        # Outer indexing, one axis at a time; from the last so that the axes of an integer
        # index (which drops its axis) keep their numbers.
        for axis in reversed(range(len(key))):
            result = result[(slice(None),) * axis + (key[axis],)]
        return result
