"""Kernel Stein discrepancy (KSD) with the inverse multiquadric (IMQ) kernel.

The KSD of Gorham & Mackey (2017) measures how far a set of draws ``x_1 … x_n`` is from a
target density ``π`` known up to a constant, using only the score ``b(x) = ∇ log π(x)`` at
the draws. It needs no samples from ``π`` and, unlike ESS or R-hat, sees the *bias* of an
approximate sampler such as SGLD or SGHMC with a constant step (too wide or shifted draws),
not only its mixing.

With the IMQ base kernel ``k(x, y) = (c² + ‖x − y‖²)^β``, ``β ∈ (−1, 0)`` (here ``β = −1/2``
by default), the Langevin Stein kernel is, with ``r = x − y`` and ``s = c² + ‖r‖²``,

.. math::

    k_0(x, y) = ⟨b(x), b(y)⟩ s^β + 2β s^{β−1} ⟨b(y) − b(x), r⟩
                − 2βd s^{β−1} − 4β(β−1) s^{β−2} ‖r‖²,

which is ``⟨b(x), b(y)⟩ k + ⟨b(x), ∇_y k⟩ + ⟨b(y), ∇_x k⟩ + ∇_x·∇_y k`` for
``∇_x k = 2β s^{β−1} r = −∇_y k`` and ``∇_x·∇_y k = −2βd s^{β−1} − 4β(β−1) s^{β−2}‖r‖²``.
Every ``k_0`` has mean zero under ``π`` (Stein's identity), and

.. math::

    \\mathrm{KSD} = \\sqrt{\\frac{1}{n^2} \\sum_{i=1}^n \\sum_{j=1}^n k_0(x_i, x_j)}

(the V-statistic, diagonal ``i = j`` included, so always ``≥ 0``) tends to 0 exactly when the
empirical distribution of the draws converges weakly to ``π`` (for distantly dissipative
targets, ``β ∈ (−1, 0)``).

References
----------
J. Gorham and L. Mackey, "Measuring sample quality with kernels", ICML 2017.
"""

from __future__ import annotations

import numbers

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytensor
import pytensor.tensor as pt
import xarray as xr

from pymc.model import modelcontext
from pytensor.graph.replace import clone_replace, vectorize_graph
from pytensor.tensor.type import discrete_dtypes

from pymc_sgmcmc._validation import optional_positive_int
from pymc_sgmcmc.diagnostics._trace import has_group, stacked_draws
from pymc_sgmcmc.full_data import full_data_model

__all__ = [
    "KSDResult",
    "add_ksd_to_idata",
    "imq_stein_kernel_matrix",
    "kernel_stein_discrepancy",
    "ksd",
]

_DEFAULT_BLOCK_SIZE = 256
_ATTR_PREFIX = "ksd"


# --------------------------------------------------------------------------------------
# NumPy core
# --------------------------------------------------------------------------------------


def _check_kernel_parameters(c, beta) -> tuple[float, float]:
    for name, value in (("c", c), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    if not (np.isfinite(c) and c > 0):
        raise ValueError(f"`c` must be positive and finite, got {c!r}.")
    if not (np.isfinite(beta) and beta < 0):
        raise ValueError(f"`beta` must be negative and finite (IMQ kernel), got {beta!r}.")
    return float(c), float(beta)


def _as_points(name: str, value) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"`{name}` must have shape (n, d), got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` contains non-finite values.")
    return array


def imq_stein_kernel_matrix(x, y, score_x, score_y, *, c=1.0, beta=-0.5) -> np.ndarray:
    """Matrix of the IMQ Langevin Stein kernel ``k_0(x_i, y_j)``.

    Parameters
    ----------
    x, y : array_like, shapes (m, d) and (n, d)
        Points.
    score_x, score_y : array_like, shapes (m, d) and (n, d)
        The score ``b = ∇ log π`` of the target at ``x`` and at ``y``.
    c : float, default 1.0
        Length scale of the IMQ kernel ``k(x, y) = (c² + ‖x − y‖²)^β``.
    beta : float, default -0.5
        Exponent of the IMQ kernel, negative; the convergence guarantees of Gorham &
        Mackey (2017) need ``β ∈ (−1, 0)``.

    Returns
    -------
    ndarray, shape (m, n)
        ``k_0(x_i, y_j) = ⟨b_i, b_j⟩ s^β + 2β s^(β−1) ⟨b_j − b_i, r⟩ − 2βd s^(β−1)
        − 4β(β−1) s^(β−2) ‖r‖²`` with ``r = x_i − y_j`` and ``s = c² + ‖r‖²``.

    Notes
    -----
    Uses Gram matrices (``O(m n)`` memory, no ``(m, n, d)`` array). ``k_0`` depends on the
    points only through ``x − y``: centring both sets by the same vector before the call
    improves the accuracy of ``‖r‖²`` for points far from the origin.
    """
    c, beta = _check_kernel_parameters(c, beta)
    x, y = _as_points("x", x), _as_points("y", y)
    score_x, score_y = _as_points("score_x", score_x), _as_points("score_y", score_y)
    if x.shape != score_x.shape or y.shape != score_y.shape or x.shape[1] != y.shape[1]:
        raise ValueError(
            "`x`/`score_x` and `y`/`score_y` must have shapes (m, d) and (n, d), got "
            f"{x.shape}, {score_x.shape}, {y.shape}, {score_y.shape}."
        )
    return _stein_kernel_block(x, y, score_x, score_y, c, beta)


def _stein_kernel_block(x, y, bx, by, c, beta):
    d = x.shape[1]
    squared_distance = (
        np.einsum("ij,ij->i", x, x)[:, None] + np.einsum("ij,ij->i", y, y)[None, :] - 2 * x @ y.T
    )
    np.maximum(squared_distance, 0.0, out=squared_distance)
    s = c**2 + squared_distance
    s_beta = s**beta
    s_beta_1 = s_beta / s
    # ⟨b(y) − b(x), x − y⟩ = ⟨x, b(y)⟩ − ⟨y, b(y)⟩ − ⟨x, b(x)⟩ + ⟨b(x), y⟩
    drift = (
        x @ by.T
        - np.einsum("ij,ij->i", y, by)[None, :]
        - np.einsum("ij,ij->i", x, bx)[:, None]
        + bx @ y.T
    )
    return (
        (bx @ by.T) * s_beta
        + 2 * beta * s_beta_1 * drift
        - 2 * beta * d * s_beta_1
        - 4 * beta * (beta - 1) * (s_beta_1 / s) * squared_distance
    )


def _stein_kernel_sums(samples, scores, group_sizes, c, beta, block_size):
    """Sum of ``k_0`` over all pairs, and over the pairs inside each contiguous group."""
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral):
        raise TypeError(f"`block_size` must be a positive integer, got {block_size!r}.")
    if block_size < 1:
        raise ValueError(f"`block_size` must be a positive integer, got {block_size!r}.")
    # k_0 depends on x − y only: centring keeps ‖x − y‖² accurate far from the origin.
    samples = samples - samples.mean(axis=0)
    n = samples.shape[0]
    bounds = np.concatenate([[0], np.cumsum(group_sizes)])
    total = 0.0
    group_sums = np.zeros(len(group_sizes))
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        block = _stein_kernel_block(
            samples[start:stop], samples, scores[start:stop], scores, c, beta
        )
        total += float(block.sum())
        for g in range(len(group_sizes)):
            lo, hi = max(bounds[g], start), min(bounds[g + 1], stop)
            if lo < hi:
                group_sums[g] += block[lo - start : hi - start, bounds[g] : bounds[g + 1]].sum()
    return total, group_sums


def _discrepancy(kernel_sum: float, n: int) -> float:
    # The V-statistic is ≥ 0 in exact arithmetic; clip rounding below zero.
    return float(np.sqrt(max(kernel_sum / n**2, 0.0)))


def kernel_stein_discrepancy(
    samples, scores, *, c=1.0, beta=-0.5, block_size=_DEFAULT_BLOCK_SIZE
) -> float:
    """Kernel Stein discrepancy of draws from their scores, IMQ kernel (V-statistic).

    .. math::

        \\mathrm{KSD} = \\sqrt{\\frac{1}{n^2} \\sum_{i=1}^n \\sum_{j=1}^n k_0(x_i, x_j)},

    with ``k_0`` the Langevin Stein kernel of ``k(x, y) = (c² + ‖x − y‖²)^β`` (see
    :func:`imq_stein_kernel_matrix`). This is the *V-statistic*: the diagonal ``i = j``
    is included, so the value is always ``≥ 0`` and is biased upwards by
    ``O(1/n)`` in KSD²; for exact draws it shrinks like ``1/sqrt(n)``. (The U-statistic,
    which drops the diagonal, is unbiased for KSD² but can be negative.)

    Parameters
    ----------
    samples : array_like, shape (n, d)
        Draws ``x_i`` (a 1-D array is read as ``d = 1``).
    scores : array_like, shape (n, d)
        ``∇ log π(x_i)``, the gradient of the log target density at each draw.
    c : float, default 1.0
        IMQ length scale. KSD is not invariant to the scale of the coordinates:
        standardise them (see :func:`ksd`) or choose ``c`` on the scale of the draws.
    beta : float, default -0.5
        IMQ exponent, negative (``β ∈ (−1, 0)`` for the convergence guarantees).
    block_size : int, default 256
        Rows of the ``n × n`` kernel matrix computed at once; memory is
        ``O(block_size · n)``, time ``O(n² d)``.

    Returns
    -------
    float

    References
    ----------
    J. Gorham and L. Mackey, "Measuring sample quality with kernels", ICML 2017.
    """
    c, beta = _check_kernel_parameters(c, beta)
    samples, scores = _as_points("samples", samples), _as_points("scores", scores)
    if samples.shape != scores.shape:
        raise ValueError(
            f"`samples` and `scores` must have the same shape, got {samples.shape} and "
            f"{scores.shape}."
        )
    n = samples.shape[0]
    if n == 0:
        raise ValueError("`samples` is empty.")
    total, _ = _stein_kernel_sums(samples, scores, [n], c, beta, block_size)
    return _discrepancy(total, n)


# --------------------------------------------------------------------------------------
# PyMC front end
# --------------------------------------------------------------------------------------


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

    (V-statistic, see :func:`kernel_stein_discrepancy`) with the IMQ Stein kernel
    ``k_0`` of ``k(x, y) = (c² + ‖x − y‖²)^{-1/2}`` (Gorham & Mackey 2017).

    Smaller is better; values are comparable between traces of the same model and
    settings, not across models. For exact draws KSD shrinks like ``1/sqrt(n)`` (``n`` the
    number of draws, more precisely the effective sample size); a biased sampler levels off
    at a positive value.

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
    return _ksd_with(
        _FullDataScore(modelcontext(model)),
        idata,
        var_names=var_names,
        standardize=standardize,
        c=c,
        thin=thin,
        max_draws=max_draws,
        chunk_size=chunk_size,
        random_seed=random_seed,
    )


class _FullDataScore:
    """A model's full-data version with its transform and score functions, compiled once.

    Compiling them is most of the cost of :func:`ksd` on a short trace; one instance
    scores many traces of a model (as :func:`pymc_sgmcmc.select_step_size` does).
    """

    def __init__(self, model):
        self.model = model
        self.full_model = _full_data_model(model)
        self.shapes = self.full_model.eval_rv_shapes()
        self.value_names = [var.name for var in model.value_vars]
        self.rv_names = [model.values_to_rvs[var].name for var in model.value_vars]
        self._unconstrained = None
        self._scores = None

    def unconstrained(self, constrained):
        if self._unconstrained is None:
            self._unconstrained = _unconstrained_function(
                self.full_model, self.rv_names, self.value_names
            )
        return self._unconstrained(constrained)

    def scores(self, positions, chunk_size):
        if self._scores is None:
            self._scores = _score_function(self.full_model, self.value_names, self.shapes)
        return self._scores(positions, chunk_size)


def _ksd_with(
    scorer: _FullDataScore,
    idata,
    *,
    var_names,
    standardize,
    c,
    thin,
    max_draws,
    chunk_size,
    random_seed,
) -> KSDResult:
    """:func:`ksd` with the model's compiled functions given."""
    model = scorer.model
    c, beta = _check_kernel_parameters(c, -0.5)
    thin = optional_positive_int("thin", thin)
    max_draws = optional_positive_int("max_draws", max_draws)
    chunk_size = optional_positive_int("chunk_size", chunk_size)
    if chunk_size is None:
        raise TypeError("`chunk_size` must be a positive integer, got None.")
    if not isinstance(standardize, bool | np.bool_):
        raise TypeError(f"`standardize` must be a bool, got {standardize!r}.")

    discrete = [var.name for var in model.value_vars if var.dtype in discrete_dtypes]
    if discrete:
        raise ValueError(
            f"KSD needs the score of every free variable, but {discrete} are discrete."
        )
    value_names, rv_names = scorer.value_names, scorer.rv_names
    selected = _selected_value_names(var_names, rv_names, value_names)

    posterior = idata if isinstance(idata, xr.Dataset) else idata["posterior"]
    missing = [name for name in rv_names if name not in posterior]
    if missing:
        raise ValueError(f"The posterior lacks the model's free variable(s) {missing}.")
    draw_index = _draw_index(posterior.sizes["draw"], thin, max_draws, random_seed)
    n_chains, n_draws = posterior.sizes["chain"], len(draw_index)

    shapes = scorer.shapes
    constrained = [stacked_draws(posterior, name, shapes[name], draw_index) for name in rv_names]

    unconstrained = scorer.unconstrained(constrained)
    sizes = [int(np.prod(shapes[name], dtype=int)) for name in value_names]
    positions = np.concatenate(
        [u.reshape(n_chains * n_draws, size) for u, size in zip(unconstrained, sizes, strict=True)],
        axis=1,
    ).astype(np.float64)
    scores = scorer.scores(positions, chunk_size)
    if not np.all(np.isfinite(scores)):
        raise ValueError(
            "The full-data log density has a non-finite gradient at some draws (draws "
            "outside the support, or a log density that overflows)."
        )

    offsets = np.concatenate([[0], np.cumsum(sizes)])
    columns = np.concatenate(
        [
            np.arange(offsets[k], offsets[k + 1])
            for k, name in enumerate(value_names)
            if name in selected
        ]
    )
    positions, scores = positions[:, columns], scores[:, columns]
    if standardize:
        sd = positions.std(axis=0)
        sd[sd == 0] = 1.0
        positions = (positions - positions.mean(axis=0)) / sd
        scores = scores * sd

    total, chain_sums = _stein_kernel_sums(
        positions, scores, [n_draws] * n_chains, c, beta, _DEFAULT_BLOCK_SIZE
    )
    return KSDResult(
        pooled=_discrepancy(total, n_chains * n_draws),
        per_chain=np.array([_discrepancy(s, n_draws) for s in chain_sums]),
        draws_per_chain=n_draws,
        c=c,
        beta=beta,
        standardize=bool(standardize),
        var_names=tuple(
            rv for rv, value in zip(rv_names, value_names, strict=True) if value in selected
        ),
    )


def _selected_value_names(var_names, rv_names, value_names) -> set[str]:
    if var_names is None:
        return set(value_names)
    if isinstance(var_names, str):
        var_names = [var_names]
    to_value = dict(zip(rv_names, value_names, strict=True))
    to_value.update({name: name for name in value_names})
    unknown = [name for name in var_names if name not in to_value]
    if unknown:
        raise ValueError(f"{unknown} are not free variables of the model ({rv_names}).")
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


def _full_data_model(model):
    """The model with every ``pm.Minibatch`` replaced by its whole data set.

    Replacing the Minibatch outputs inside ``model.logp()`` is not enough: the log density
    graph is built for the batch's static shape (e.g. ``Alloc(..., 100)``). The model is
    rebuilt on the full data instead (see :func:`pymc_sgmcmc.full_data.full_data_model`),
    so its ``logp()`` is derived anew, without the ``total_size`` scaling.
    """
    return full_data_model(model)


def _batched_function(inputs, outputs):
    """Compile ``outputs`` of ``inputs`` vectorised over a new leading (draw) axis.

    Falls back to a loop over draws of the unbatched function where PyTensor cannot
    vectorise the graph.
    """
    batched = [pt.tensor(dtype=var.dtype, shape=(None, *var.type.shape)) for var in inputs]
    try:
        batched_outputs = vectorize_graph(outputs, dict(zip(inputs, batched, strict=True)))
        return pytensor.function(batched, batched_outputs, on_unused_input="ignore")
    except (NotImplementedError, TypeError, ValueError):
        single = pytensor.function(inputs, outputs, on_unused_input="ignore")

        def looped(*arrays):
            results = [single(*items) for items in zip(*arrays, strict=True)]
            return [np.stack(parts) for parts in zip(*results, strict=True)]

        return looped


def _to_unconstrained(model, rv_names, value_names, constrained) -> list[np.ndarray]:
    """Apply each variable's forward transform to its draws (leading axis: draws)."""
    return _unconstrained_function(model, rv_names, value_names)(constrained)


def _unconstrained_function(model, rv_names, value_names):
    """Compiled :func:`_to_unconstrained` of a model: a function of the constrained draws."""
    rvs = [model[name] for name in rv_names]
    if all(model.rvs_to_transforms.get(rv) is None for rv in rvs):
        return lambda constrained: [np.asarray(a) for a in constrained]
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
    function = _batched_function(inputs, outputs)

    def unconstrained(constrained):
        arrays = [np.asarray(a, dtype=rv.dtype) for a, rv in zip(constrained, rvs, strict=True)]
        return [np.asarray(out) for out in function(*arrays)]

    return unconstrained


def _full_data_scores(model, value_names, shapes, positions, chunk_size) -> np.ndarray:
    """``∇ log π(θ)`` of the full-data model at each raveled position (rows)."""
    return _score_function(model, value_names, shapes)(positions, chunk_size)


def _score_function(model, value_names, shapes):
    """Compiled :func:`_full_data_scores` of a model: a function of positions and chunk size."""
    dtype = pytensor.config.floatX
    position = pt.vector("position", dtype=dtype)
    value_vars = {var.name: var for var in model.value_vars}
    replacements = {}
    offset = 0
    for name in value_names:
        var = value_vars[name]
        shape = tuple(int(size) for size in shapes[name])
        size = int(np.prod(shape, dtype=int))
        replacements[var] = position[offset : offset + size].reshape(shape).astype(var.dtype)
        offset += size
    logp = clone_replace(model.logp(jacobian=True), replacements)
    gradient = pt.grad(logp.astype(dtype), position)
    function = _batched_function([position], [gradient])

    def scores(positions, chunk_size):
        positions = positions.astype(dtype)
        chunks = [
            np.asarray(function(positions[start : start + chunk_size])[0], dtype=np.float64)
            for start in range(0, positions.shape[0], chunk_size)
        ]
        return np.concatenate(chunks, axis=0)

    return scores
