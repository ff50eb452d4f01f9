"""The full-data version of a model whose data enter through ``pm.Minibatch``.

Stochastic-gradient samplers see the data through ``pm.Minibatch(...)`` with ``total_size``
rescaling the batch's log-likelihood; diagnostics such as :func:`pymc_sgmcmc.diagnostics.ksd`
need the exact (full-data) log density instead. :func:`full_data_model` builds that model.
"""

from __future__ import annotations

import pymc as pm

from pymc.data import MinibatchOp
from pymc.distributions.distribution import SymbolicRandomVariable
from pymc.distributions.shape_utils import rv_size_is_none
from pymc.model.fgraph import ModelObservedRV, fgraph_from_model, model_from_fgraph
from pymc.variational.minibatch_rv import MinibatchRandomVariable
from pytensor.graph.basic import Variable
from pytensor.graph.fg import FunctionGraph
from pytensor.graph.replace import clone_replace
from pytensor.graph.traversal import ancestors, toposort
from pytensor.tensor.basic import get_vector_length
from pytensor.tensor.random.op import RandomVariable

__all__ = ["full_data_model", "rebuilt_random_variable"]


def full_data_model(model: pm.Model, *, initvals: bool = True) -> pm.Model:
    """A copy of ``model`` with every ``pm.Minibatch`` replaced by its full data.

    Every output of ``pm.Minibatch(...)`` becomes the whole array (or ``pm.Data``) it
    slices, and the ``total_size`` scaling of the observed variables that use a minibatch
    is removed, so the copy's ``logp()`` is the exact full-data log density. Observed
    variables whose shape was that of the batch are resized to the full data (also 2-D
    ones, e.g. a ``pm.MvNormal`` or a multi-output regression with ``total_size=N`` or
    ``(N, None)``). Free variables keep their names, transforms, dims and initial values;
    coords, ``pm.Data`` and deterministics are kept too.

    Parameters
    ----------
    model : pymc.Model
        A root model (not a sub-model).
    initvals : bool, default True
        Keep the initial values given with ``initval=``. PyMC's own model transforms
        (``pm.compute_log_likelihood`` uses one) refuse models with initial values, so pass
        False for a copy meant for them; the tools after sampling do not need initial
        values.

    Returns
    -------
    pymc.Model
        The full-data copy; ``model`` itself (the same object) when it uses no
        ``pm.Minibatch``. ``model`` is not modified.

    Raises
    ------
    ValueError
        If a ``pm.Potential`` uses a minibatch: its term would not be rescaled on the full
        data, so the copy's density would be wrong. Write such a likelihood as an observed
        variable with ``total_size`` instead. Also if a free variable depends on a
        minibatch (a per-batch latent variable has no full-data counterpart).

    Notes
    -----
    Unlike ``pymc.model.transform.basic.remove_minibatched_nodes`` (which fails on 2-D
    minibatched observed variables and on models with initial values), the graph is
    rebuilt node by node: the ``total_size`` wrappers are dropped rather than rebuilt, the
    observed distributions are resized to their new data, and initial values are set on
    the copy after conversion.

    Examples
    --------
    >>> import numpy as np, pymc as pm
    >>> Y = np.random.default_rng(0).normal(size=(1000, 2))
    >>> with pm.Model() as model:
    ...     mu = pm.Normal("mu", 0, 10, shape=2)
    ...     y = pm.MvNormal("y", mu, cov=np.eye(2), observed=pm.Minibatch(Y, batch_size=50),
    ...                     total_size=1000)
    >>> full = full_data_model(model)
    >>> full["y"].eval().shape
    (1000, 2)
    """
    if not isinstance(model, pm.Model):
        raise TypeError(f"`model` must be a pymc.Model, got {type(model).__name__}.")
    model_vars = [*model.named_vars.values(), *model.rvs_to_values.values()]
    outputs = _minibatch_outputs(model_vars)
    if not outputs:
        return model
    if streamed_buffers(outputs):
        raise NotImplementedError(
            "The model streams its data from a chunked store (pymc_sgmcmc.Minibatch): a "
            "full-data copy of it would hold every row in memory. The tools after sampling "
            "stream its rows block by block instead: pymc_sgmcmc.sample_posterior_predictive, "
            "pymc_sgmcmc.loo and pymc_sgmcmc.pointwise_log_likelihood (as do the full-data "
            "passes of sampling and the kernel Stein discrepancy)."
        )
    return _rebuilt(model, initvals=initvals)


def _rebuilt(model, *, initvals: bool, data: dict | None = None) -> pm.Model:
    """The full-data copy; ``data`` maps data variables of the graph (a streamed
    source's buffer) to the variables that replace them in the copy."""
    batched_observed = _check_minibatch_use(model)

    fgraph = _fgraph_without_initvals(model)
    # The fgraph holds copies of the model's shared variables (with their tags).
    memo = {
        copy: data[original]
        for copy in fgraph.inputs
        for original in data or {}
        if copy.name == original.name
        and getattr(copy.tag, "row_buffer", None) is getattr(original.tag, "row_buffer", False)
    }
    memo = _rebuild_on_full_data(fgraph, batched_observed, memo)
    outputs = [memo.get(out, out) for out in fgraph.outputs]
    full = FunctionGraph(outputs=outputs, clone=False)
    # model_from_fgraph reads the coords and dim lengths from these private attributes.
    full._coords = fgraph._coords
    full._dim_lengths = fgraph._dim_lengths
    new_model = model_from_fgraph(full, mutate_fgraph=True)
    # model_from_fgraph lists variables in topological order: keep the model's order, which
    # fixes how ``value_vars`` are raveled.
    order = {rv.name: i for i, rv in enumerate([*model.free_RVs, *model.observed_RVs])}
    new_model.free_RVs.sort(key=lambda rv: order[rv.name])
    new_model.observed_RVs.sort(key=lambda rv: order[rv.name])

    for rv, initval in model.rvs_to_initial_values.items():
        if initvals and initval is not None:
            new_model.set_initval(new_model[rv.name], _initval_in(initval, model, new_model))
    return new_model


def streamed_buffers(minibatch_outputs) -> list:
    """The row buffers (of :func:`pymc_sgmcmc.Minibatch`) behind minibatch outputs."""
    buffers = []
    for output in minibatch_outputs:
        for tensor in output.owner.inputs:
            buffer = getattr(tensor.tag, "row_buffer", None)
            if buffer is not None and all(buffer is not known for known in buffers):
                buffers.append(buffer)
    return buffers


def model_buffers(model) -> list:
    """The row buffers of the model's :func:`pymc_sgmcmc.Minibatch` calls."""
    return streamed_buffers(
        _minibatch_outputs([*model.named_vars.values(), *model.rvs_to_values.values()])
    )


def _minibatch_outputs(variables) -> set[Variable]:
    return {
        var
        for var in ancestors(variables)
        if var.owner is not None and isinstance(var.owner.op, MinibatchOp)
    }


def _check_minibatch_use(model) -> set[str]:
    """Names of the observed variables that use a minibatch; raise for unsupported uses."""
    batched_observed = {
        rv.name for rv in model.observed_RVs if _minibatch_outputs([rv, model.rvs_to_values[rv]])
    }
    # In logp a potential reading an observed variable reads its (minibatch) value.
    batched = {model[name] for name in batched_observed}
    for potential in model.potentials:
        if _minibatch_outputs([potential]) or batched & set(ancestors([potential])):
            raise ValueError(
                f"Potential {potential.name!r} uses pm.Minibatch: its term is not rescaled "
                "on the full data, so the full-data log density would be wrong. Write the "
                "likelihood as an observed variable with `total_size`, e.g. "
                "pm.Normal('y', mu, sigma, observed=pm.Minibatch(data, batch_size=B), "
                "total_size=len(data))."
            )
    for rv in model.free_RVs:
        if _minibatch_outputs([rv]):
            raise ValueError(
                f"Free variable {rv.name!r} depends on pm.Minibatch: a per-batch latent "
                "variable has no full-data counterpart."
            )
    return batched_observed


def _fgraph_without_initvals(model) -> FunctionGraph:
    # fgraph_from_model refuses models with initial values (it cannot carry them); hide them
    # for the conversion and set them on the copy afterwards.
    initvals = model.rvs_to_initial_values
    model.rvs_to_initial_values = {rv: None for rv in initvals}
    try:
        fgraph, _ = fgraph_from_model(model)
    finally:
        model.rvs_to_initial_values = initvals
    return fgraph


def _rebuild_on_full_data(fgraph, batched_observed, memo) -> dict[Variable, Variable]:
    """Rebuild the fgraph's nodes on the full data; returns the old-to-new variable map.

    ``clone_replace(..., rebuild_strict=False)`` re-creates every node below a minibatch
    with ``make_node``, which ``MinibatchRandomVariable`` cannot take back when
    ``total_size`` has ``None`` entries, and which leaves a distribution's size (taken from
    the batch shape) at the batch size. Here those wrappers are dropped and the observed
    distributions resized.
    """
    # Map each batched observed's distribution node to its (old) value variable.
    resize, unscaled, values = {}, set(), []
    for node in fgraph.apply_nodes:
        if isinstance(node.op, ModelObservedRV) and node.outputs[0].name in batched_observed:
            rv, value = node.inputs[:2]
            if rv.owner is not None and isinstance(rv.owner.op, MinibatchRandomVariable):
                unscaled.add(rv.owner)
                rv = rv.owner.inputs[0]
            if rv.owner is not None:
                resize[rv.owner] = value
            values.append(value)

    done = set()
    # Values depend on data only: rebuild them first, the distributions are resized to them.
    for node in [*toposort(values), *fgraph.toposort()]:
        if node in done:
            continue
        done.add(node)
        inputs = [memo.get(inp, inp) for inp in node.inputs]
        op = node.op
        if isinstance(op, MinibatchOp):
            # Outputs are the batches then the RNG update; inputs the data then the RNG.
            memo.update(zip(node.outputs, inputs, strict=True))
            continue
        if node in unscaled:
            memo[node.outputs[0]] = inputs[0]  # drop the total_size scaling
            continue
        if node in resize:
            new_value = memo.get(resize[node], resize[node])
            outputs = rebuilt_random_variable(node, inputs, new_value)
        elif all(new is old for new, old in zip(inputs, node.inputs, strict=True)):
            continue
        elif isinstance(op, SymbolicRandomVariable):
            outputs = rebuilt_random_variable(node, inputs, None)
        else:
            outputs = node.clone_with_new_inputs(inputs, strict=False).outputs
        for old, new in zip(node.outputs, outputs, strict=True):
            if new is not None:
                # make_node does not carry names; model_from_fgraph (PyMC 5) needs them.
                new.name = old.name
                memo[old] = new
    return memo


def rebuilt_random_variable(node, inputs, new_value) -> list[Variable | None]:
    """Outputs of a distribution node rebuilt on new inputs, with the batch shape of
    ``new_value`` (if given and the node has an explicit size)."""
    op = node.op
    if isinstance(op, RandomVariable):
        size = op.size_param(node)
        if new_value is not None and not rv_size_is_none(size):
            # size holds the batch dimensions, the leading ones of the value.
            inputs = list(inputs)
            inputs[node.inputs.index(size)] = tuple(new_value.shape)[: get_vector_length(size)]
        return op.make_node(*inputs).outputs
    if isinstance(op, SymbolicRandomVariable):
        # Its OpFromGraph inner inputs fix the batch's static shapes: build it anew.
        position = {old: new for old, new in zip(node.inputs, inputs, strict=True)}
        params = [position[param] for param in op.dist_params(node)]
        size = op.size_param(node)
        if size is None:
            new_rv = op.rebuild_rv(*params)
        else:
            if rv_size_is_none(size):
                new_size = None
            elif new_value is not None:
                new_size = tuple(new_value.shape)[: get_vector_length(size)]
            else:
                new_size = position[size]
            new_rv = op.rebuild_rv(*params, size=new_size)
        outputs: list[Variable | None] = [None] * len(node.outputs)
        if len(new_rv.owner.outputs) == len(node.outputs):
            outputs = list(new_rv.owner.outputs)
        outputs[node.outputs.index(node.default_output())] = new_rv
        return outputs
    return node.clone_with_new_inputs(inputs, strict=False).outputs


def _initval_in(initval, model, new_model):
    """``initval`` of ``model`` for ``new_model``: a symbolic one reads the copy's variables."""
    if not isinstance(initval, Variable):
        return initval
    named = {
        var: new_model[var.name]
        for var in ancestors([initval])
        if var.name is not None and model.named_vars.get(var.name) is var
    }
    return clone_replace(initval, named) if named else initval
