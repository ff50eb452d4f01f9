"""The kernel Stein discrepancy (KSD) with the inverse multiquadric (IMQ) kernel, in NumPy.

The KSD of Gorham & Mackey (2017) measures how far a set of draws :math:`x_1, …, x_n` is
from a target density :math:`π` known up to a constant, using only the score
:math:`b(x) = ∇ \\log π(x)` at the draws. It needs no samples from :math:`π` and, unlike
ESS or R-hat, sees the *bias* of an approximate sampler such as SGLD or SGHMC with a
constant step (too wide or shifted draws), not only its mixing.

With the IMQ base kernel :math:`k(x, y) = (c^2 + ‖x − y‖^2)^β`, :math:`β ∈ (−1, 0)` (here
:math:`β = −1/2` by default), the Langevin Stein kernel is, with :math:`r = x − y` and
:math:`s = c^2 + ‖r‖^2`,

.. math::

    k_0(x, y) = ⟨b(x), b(y)⟩ s^β + 2β s^{β−1} ⟨b(y) − b(x), r⟩
                − 2βd s^{β−1} − 4β(β−1) s^{β−2} ‖r‖^2,

which is :math:`⟨b(x), b(y)⟩ k + ⟨b(x), ∇_y k⟩ + ⟨b(y), ∇_x k⟩ + ∇_x·∇_y k` for
:math:`∇_x k = 2β s^{β−1} r = −∇_y k` and
:math:`∇_x·∇_y k = −2βd s^{β−1} − 4β(β−1) s^{β−2} ‖r‖^2`. Every :math:`k_0` has mean zero
under :math:`π` (Stein's identity), and

.. math::

    \\mathrm{KSD} = \\sqrt{\\frac{1}{n^2} \\sum_{i=1}^n \\sum_{j=1}^n k_0(x_i, x_j)}

(the V-statistic, diagonal :math:`i = j` included, so always :math:`≥ 0`) tends to 0
exactly when the empirical distribution of the draws converges weakly to :math:`π` (for
distantly dissipative targets, :math:`β ∈ (−1, 0)`).

This module is the NumPy core, without PyMC: :func:`pymc_sgmcmc.diagnostics.ksd` maps a
PyMC trace to draws and scores and calls :func:`stein_kernel_sums` on them.

References
----------
J. Gorham and L. Mackey, "Measuring sample quality with kernels", ICML 2017.
"""

from __future__ import annotations

import numbers

from collections.abc import Sequence

import numpy as np

__all__ = [
    "check_kernel_parameters",
    "imq_stein_kernel_matrix",
    "kernel_stein_discrepancy",
    "stein_kernel_sums",
    "v_statistic_discrepancy",
]

# Rows of the n × n kernel matrix computed at once: 256 · n floats stay small for any trace.
_DEFAULT_BLOCK_SIZE = 256


def check_kernel_parameters(c, beta) -> tuple[float, float]:
    """The IMQ kernel's length scale and exponent, checked.

    Parameters
    ----------
    c : float
        Length scale of :math:`k(x, y) = (c^2 + ‖x − y‖^2)^β`, positive and finite.
    beta : float
        Exponent, negative and finite.

    Returns
    -------
    tuple of float
        ``(c, beta)``.

    Raises
    ------
    TypeError
        If either is not a real number.
    ValueError
        If ``c ≤ 0``, ``beta ≥ 0`` or either is not finite.
    """
    for name, value in (("c", c), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    if not (np.isfinite(c) and c > 0):
        raise ValueError(f"`c` must be positive and finite, got {c!r}.")
    if not (np.isfinite(beta) and beta < 0):
        raise ValueError(f"`beta` must be negative and finite (IMQ kernel), got {beta!r}.")
    return float(c), float(beta)


def imq_stein_kernel_matrix(x, y, score_x, score_y, *, c=1.0, beta=-0.5) -> np.ndarray:
    """Matrix of the IMQ Langevin Stein kernel :math:`k_0(x_i, y_j)`.

    .. math::

        k_0(x_i, y_j) = ⟨b_i, b_j⟩ s^β + 2β s^{β−1} ⟨b_j − b_i, r⟩ − 2βd s^{β−1}
                        − 4β(β−1) s^{β−2} ‖r‖^2,
        \\qquad r = x_i − y_j, \\quad s = c^2 + ‖r‖^2,

    with :math:`b_i` and :math:`b_j` the scores at :math:`x_i` and :math:`y_j`.

    Parameters
    ----------
    x, y : array_like, shapes (m, d) and (n, d)
        Points.
    score_x, score_y : array_like, shapes (m, d) and (n, d)
        The score :math:`b = ∇ \\log π` of the target at ``x`` and at ``y``.
    c : float, default 1.0
        Length scale of the IMQ kernel :math:`k(x, y) = (c^2 + ‖x − y‖^2)^β`.
    beta : float, default -0.5
        Exponent of the IMQ kernel, negative; the convergence guarantees of Gorham &
        Mackey (2017) need :math:`β ∈ (−1, 0)`.

    Returns
    -------
    ndarray, shape (m, n)

    Notes
    -----
    Uses Gram matrices (:math:`O(m n)` memory, no ``(m, n, d)`` array). :math:`k_0`
    depends on the points only through :math:`x − y`: centring both sets by the same
    vector before the call improves the accuracy of :math:`‖r‖^2` for points far from
    the origin.
    """
    c, beta = check_kernel_parameters(c, beta)
    x, y = _as_points("x", x), _as_points("y", y)
    score_x, score_y = _as_points("score_x", score_x), _as_points("score_y", score_y)
    if x.shape != score_x.shape or y.shape != score_y.shape or x.shape[1] != y.shape[1]:
        raise ValueError(
            "`x`/`score_x` and `y`/`score_y` must have shapes (m, d) and (n, d), got "
            f"{x.shape}, {score_x.shape}, {y.shape}, {score_y.shape}."
        )
    return _stein_kernel_block(x, y, score_x, score_y, c, beta)


def stein_kernel_sums(
    samples,
    scores,
    group_sizes: Sequence[int] | None = None,
    *,
    c: float = 1.0,
    beta: float = -0.5,
    block_size: int = _DEFAULT_BLOCK_SIZE,
) -> tuple[float, np.ndarray]:
    """Sum of :math:`k_0` over all pairs of draws, and over the pairs inside each group.

    .. math::

        S = \\sum_{i=1}^n \\sum_{j=1}^n k_0(x_i, x_j), \\qquad
        S_g = \\sum_{i ∈ g} \\sum_{j ∈ g} k_0(x_i, x_j),

    for consecutive groups of rows :math:`g` (e.g. the chains of a trace), from one pass
    over the kernel matrix, ``block_size`` rows at a time.
    :func:`v_statistic_discrepancy` turns :math:`S` into the KSD of all draws and
    :math:`S_g` into that of group :math:`g` alone.

    Parameters
    ----------
    samples, scores : array_like, shape (n, d)
        Draws :math:`x_i` and :math:`∇ \\log π(x_i)` (a 1-D array is read as ``d = 1``).
    group_sizes : sequence of int, optional
        Sizes of consecutive groups of rows, summing to ``n``; one group by default.
    c, beta : float, default 1.0 and -0.5
        IMQ kernel parameters (see :func:`imq_stein_kernel_matrix`).
    block_size : int, default 256
        Rows of the kernel matrix computed at once: memory :math:`O(\\text{block\\_size}
        · n)`, time :math:`O(n^2 d)`.

    Returns
    -------
    total : float
        :math:`S`.
    group_sums : ndarray, shape (n_groups,)
        :math:`S_g`.
    """
    c, beta = check_kernel_parameters(c, beta)
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral):
        raise TypeError(f"`block_size` must be a positive integer, got {block_size!r}.")
    if block_size < 1:
        raise ValueError(f"`block_size` must be a positive integer, got {block_size!r}.")
    samples, scores = _checked_samples_and_scores(samples, scores)
    n = samples.shape[0]
    group_sizes = [n] if group_sizes is None else [int(size) for size in group_sizes]
    if any(size < 1 for size in group_sizes) or sum(group_sizes) != n:
        raise ValueError(
            f"`group_sizes` must be positive and sum to the {n} draws, got {group_sizes}."
        )
    # k_0 depends on x − y only: centring keeps ‖x − y‖² accurate far from the origin.
    samples = samples - samples.mean(axis=0)
    bounds = np.concatenate([[0], np.cumsum(group_sizes)])
    total = 0.0
    group_sums = np.zeros(len(group_sizes))
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        block = _stein_kernel_block(
            samples[start:stop], samples, scores[start:stop], scores, c, beta
        )
        total += float(block.sum())
        for group in range(len(group_sizes)):
            low, high = max(bounds[group], start), min(bounds[group + 1], stop)
            if low < high:
                columns = slice(bounds[group], bounds[group + 1])
                group_sums[group] += block[low - start : high - start, columns].sum()
    return total, group_sums


def v_statistic_discrepancy(kernel_sum: float, count: int) -> float:
    """The KSD from the sum of :math:`k_0` over all pairs of ``count`` draws.

    .. math::

        \\mathrm{KSD} = \\sqrt{\\max(S / n^2, 0)}

    The V-statistic :math:`S / n^2` is :math:`≥ 0` in exact arithmetic; rounding below
    zero is clipped.
    """
    return float(np.sqrt(max(kernel_sum / count**2, 0.0)))


def kernel_stein_discrepancy(
    samples, scores, *, c=1.0, beta=-0.5, block_size=_DEFAULT_BLOCK_SIZE
) -> float:
    """Kernel Stein discrepancy of draws from their scores, IMQ kernel (V-statistic).

    .. math::

        \\mathrm{KSD} = \\sqrt{\\frac{1}{n^2} \\sum_{i=1}^n \\sum_{j=1}^n k_0(x_i, x_j)},

    with :math:`k_0` the Langevin Stein kernel of :math:`k(x, y) = (c^2 + ‖x − y‖^2)^β`
    (see :func:`imq_stein_kernel_matrix`). This is the *V-statistic*: the diagonal
    :math:`i = j` is included, so the value is always :math:`≥ 0` and is biased upwards
    by :math:`O(1/n)` in KSD²; for exact draws it shrinks like :math:`1/\\sqrt{n}`. (The
    U-statistic, which drops the diagonal, is unbiased for KSD² but can be negative.)

    Parameters
    ----------
    samples : array_like, shape (n, d)
        Draws :math:`x_i` (a 1-D array is read as ``d = 1``).
    scores : array_like, shape (n, d)
        :math:`∇ \\log π(x_i)`, the gradient of the log target density at each draw.
    c : float, default 1.0
        IMQ length scale. KSD is not invariant to the scale of the coordinates:
        standardise them (see :func:`pymc_sgmcmc.diagnostics.ksd`) or choose ``c`` on the
        scale of the draws.
    beta : float, default -0.5
        IMQ exponent, negative (:math:`β ∈ (−1, 0)` for the convergence guarantees).
    block_size : int, default 256
        Rows of the :math:`n × n` kernel matrix computed at once; memory is
        :math:`O(\\text{block\\_size} · n)`, time :math:`O(n^2 d)`.

    Returns
    -------
    float

    References
    ----------
    J. Gorham and L. Mackey, "Measuring sample quality with kernels", ICML 2017.
    """
    total, _ = stein_kernel_sums(samples, scores, c=c, beta=beta, block_size=block_size)
    return v_statistic_discrepancy(total, np.shape(samples)[0])


def _as_points(name: str, value) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"`{name}` must have shape (n, d), got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` contains non-finite values.")
    return array


def _checked_samples_and_scores(samples, scores) -> tuple[np.ndarray, np.ndarray]:
    samples, scores = _as_points("samples", samples), _as_points("scores", scores)
    if samples.shape != scores.shape:
        raise ValueError(
            f"`samples` and `scores` must have the same shape, got {samples.shape} and "
            f"{scores.shape}."
        )
    if samples.shape[0] == 0:
        raise ValueError("`samples` is empty.")
    return samples, scores


def _stein_kernel_block(x, y, score_x, score_y, c, beta) -> np.ndarray:
    """:math:`k_0(x_i, y_j)` of checked arrays, from Gram matrices."""
    dimension = x.shape[1]
    squared_distance = (
        np.einsum("ij,ij->i", x, x)[:, None] + np.einsum("ij,ij->i", y, y)[None, :] - 2 * x @ y.T
    )
    # Rounding can make the Gram-matrix form of ‖x − y‖² slightly negative.
    np.maximum(squared_distance, 0.0, out=squared_distance)
    s = c**2 + squared_distance
    s_beta = s**beta
    s_beta_minus_one = s_beta / s
    # ⟨b(y) − b(x), x − y⟩ = ⟨x, b(y)⟩ − ⟨y, b(y)⟩ − ⟨x, b(x)⟩ + ⟨b(x), y⟩
    drift = (
        x @ score_y.T
        - np.einsum("ij,ij->i", y, score_y)[None, :]
        - np.einsum("ij,ij->i", x, score_x)[:, None]
        + score_x @ y.T
    )
    return (
        (score_x @ score_y.T) * s_beta
        + 2 * beta * s_beta_minus_one * drift
        - 2 * beta * dimension * s_beta_minus_one
        - 4 * beta * (beta - 1) * (s_beta_minus_one / s) * squared_distance
    )
