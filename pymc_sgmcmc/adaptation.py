"""Adaptation during tuning: a preconditioner and a step size, as NUTS adapts its own.

NumPy only; the step methods compose these parts (see
:mod:`pymc_sgmcmc.step_methods.base`).

The scheme, for a posterior ``π`` on PyMC's unconstrained space:

1. **A first guess before any draw.** The full-data MAP ``θ̂`` (found anyway for control
   variates) and the curvature there, ``H = −∇² log π(θ̂)`` by central differences of
   full-data gradients. ``Σ₀ = H⁻¹`` is the Laplace approximation's covariance.
2. **Whitening.** With ``Σ = L Lᵀ`` (``L`` the Cholesky factor, or the diagonal of sds),
   every sampler runs in ``z = L⁻¹ θ``, where the posterior is close to ``N(0, I)``: its
   gradient is ``Lᵀ g`` and a move ``Δz`` is ``L Δz`` in ``θ``. For SGLD that is the
   preconditioned Langevin step ``θ + η Σ g + √(2ηT) L ξ``; for SGHMC a mass matrix
   ``M = Σ⁻¹``.
3. **Windows.** As in Stan's and PyMC's NUTS adaptation, tuning is split into a fast
   initial buffer, slow windows that double in length, and a final buffer. At the end of
   each slow window the covariance of its draws, shrunk towards the previous ``Σ``,
   becomes the new ``Σ``. The preconditioner is frozen when sampling starts.
4. **The step size** (on the whitened scale) is set at the start and after every window
   by two limits, the smaller of which wins:

   - *discretisation*: a step ``c / λ`` (SGLD) or ``c / √λ`` (SGHMC, SGNHT), with ``λ``
     the largest eigenvalue of the whitened curvature ``Lᵀ H L`` (1 when ``Σ = H⁻¹``).
     On ``N(0, 1)`` SGLD's stationary variance is ``1 / (1 − η/2)``: at ``η = 0.15`` the
     sd is 4% too wide;
   - *minibatch noise*: the noise ratio the samplers report (minibatch variance added per
     step over the variance injected) at most ``NOISE_RATIO_TARGET``, from the whitened
     gradient variance measured at the chain's position. The chain then runs at most
     10% hotter than its temperature (sds at most 5% too wide).

   Every diverging tuning draw halves it for the rest of tuning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "NOISE_RATIO_TARGET",
    "Preconditioner",
    "curvature_at",
    "limited_step",
    "tuning_windows",
]

#: The noise ratio the step size is held below while it adapts.
NOISE_RATIO_TARGET = 0.1

#: Stan's window layout for 1000 tuning draws: initial buffer, first slow window and
#: final buffer. Shorter tuning scales them down in the same proportions.
INITIAL_BUFFER, FIRST_WINDOW, FINAL_BUFFER = 75, 25, 50

#: The largest number of raveled parameters for which ``mass="auto"`` is dense: below it a
#: d x d product per step costs less than the gradient of a minibatch of 100 rows.
DENSE_LIMIT = 200

#: Prior weight, in draws, of the previous covariance when a window's estimate replaces it.
SHRINKAGE_DRAWS = 10


def tuning_windows(tune: int) -> list[tuple[int, int]]:
    """The slow windows of ``tune`` tuning draws, as ``(start, end)``: draws ``start + 1``
    to ``end`` (1-based) estimate one covariance.

    Stan's layout: a 75-draw initial buffer, slow windows of 25, 50, 100, ... draws, the
    last one stretched to the final 50-draw buffer; for fewer than 150 tuning draws 15%,
    75% and 10% of them. No window under 20 tuning draws.
    """
    if tune < 20:
        return []
    initial, first, final = INITIAL_BUFFER, FIRST_WINDOW, FINAL_BUFFER
    if tune < initial + first + final:
        initial, final = int(0.15 * tune), int(0.1 * tune)
        first = tune - initial - final
    windows = []
    start, width = initial, first
    end_of_slow = tune - final
    while start + width <= end_of_slow:
        # A window that would leave less than its double before the final buffer takes
        # the rest, as Stan's does.
        if start + 3 * width > end_of_slow:
            width = end_of_slow - start
        windows.append((start, start + width))
        start += width
        width *= 2
    return windows


def limited_step(discretisation: float, noise_rate: np.ndarray) -> float:
    """The adapted step: the discretisation limit, unless minibatch noise is reached first.

    ``noise_rate`` per coordinate is the noise ratio per unit step there (SGLD's
    ``V / 2T``), so that a step ``η`` has the noise ratio ``η · rate`` in each coordinate.
    The step is held where that is at most ``NOISE_RATIO_TARGET`` in every coordinate:
    none runs more than 10% hotter than its temperature.
    """
    rate = np.nan_to_num(np.asarray(noise_rate, dtype=float), nan=0.0, posinf=np.inf)
    worst = float(np.max(rate)) if rate.size else 0.0
    if worst <= 0:
        return float(discretisation)
    return float(min(discretisation, NOISE_RATIO_TARGET / worst))


def curvature_at(
    position: np.ndarray, gradient, *, relative_step: float = 1e-5, gradients=None
) -> np.ndarray:
    """``−∇² log π`` at ``position`` by central differences of ``gradient`` (symmetrised).

    ``2d`` gradient evaluations, each step ``relative_step (1 + |θ_i|)``; all in one call
    of ``gradients`` (positions in rows to gradients in rows) where it is given.
    """
    position = np.asarray(position, dtype=float)
    size = position.size
    steps = relative_step * (1.0 + np.abs(position))
    shifts = np.diag(steps)
    if gradients is not None:
        values = gradients(np.concatenate([position + shifts, position - shifts]))
        curvature = -(values[:size] - values[size:]) / (2 * steps[:, None])
    else:
        curvature = np.empty((size, size))
        for i in range(size):
            forward, backward = gradient(position + shifts[i]), gradient(position - shifts[i])
            curvature[i] = -(forward - backward) / (2 * steps[i])
    return 0.5 * (curvature + curvature.T)


def _covariance_from_curvature(curvature: np.ndarray) -> np.ndarray | None:
    """``H⁻¹``, or None if ``H`` has no positive curvature at all.

    ``H`` is first scaled to unit diagonal (``D H D``), so that posteriors whose scales
    differ by many decades keep the precision of their narrow and wide directions alike.
    A coordinate of non-positive curvature gets the median positive curvature; an
    eigenvalue of the scaled matrix that is not clearly positive (a saddle or a flat
    direction, which says nothing of its scale) is raised to the median positive one.
    """
    if not np.all(np.isfinite(curvature)):
        return None
    diagonal = np.diag(curvature).copy()
    if not np.any(diagonal > 0):
        return None
    diagonal[diagonal <= 0] = np.median(diagonal[diagonal > 0])
    scale = 1.0 / np.sqrt(diagonal)
    scaled = scale[:, None] * curvature * scale[None, :]
    values, vectors = np.linalg.eigh(0.5 * (scaled + scaled.T))
    clearly_positive = values > 1e-10 * max(values.max(), 0.0)
    if not np.any(clearly_positive):
        return None
    values = np.where(clearly_positive, values, np.median(values[clearly_positive]))
    return scale[:, None] * ((vectors / values) @ vectors.T) * scale[None, :]


@dataclass
class Preconditioner:
    """The whitening ``θ = L z`` behind an adapted (or given) mass matrix ``M = Σ⁻¹``.

    Attributes
    ----------
    covariance : numpy.ndarray
        ``Σ``: ``(d, d)`` when dense, ``(d,)`` (variances) when diagonal.
    """

    covariance: np.ndarray

    @property
    def dense(self) -> bool:
        return self.covariance.ndim == 2

    @classmethod
    def identity(cls, size: int, dense: bool) -> Preconditioner:
        return cls(np.eye(size) if dense else np.ones(size))

    @classmethod
    def from_curvature(cls, curvature: np.ndarray | None, size: int, dense: bool):
        """``Σ₀ = H⁻¹`` (its diagonal when not dense), identity if ``H`` is unusable."""
        covariance = None if curvature is None else _covariance_from_curvature(curvature)
        if covariance is None:
            return cls.identity(size, dense)
        return cls(covariance if dense else np.diag(covariance).copy())

    @classmethod
    def from_mass(cls, mass: np.ndarray) -> Preconditioner:
        """From a mass matrix ``M`` (``(d, d)``) or its diagonal (``(d,)``)."""
        mass = np.asarray(mass, dtype=float)
        return cls(np.linalg.inv(mass) if mass.ndim == 2 else 1.0 / mass)

    @property
    def factor(self) -> np.ndarray:
        """``L`` with ``L Lᵀ = Σ`` (lower Cholesky factor), or the sds."""
        if self.dense:
            return np.linalg.cholesky(self.covariance)
        return np.sqrt(self.covariance)

    @property
    def mass(self) -> np.ndarray:
        """``M = Σ⁻¹``, what the samplers' ``mass=`` takes to reuse it."""
        return np.linalg.inv(self.covariance) if self.dense else 1.0 / self.covariance

    def whiten(self, vector: np.ndarray) -> np.ndarray:
        """``Lᵀ v``: a gradient (or gradient difference) on the whitened scale."""
        factor = self.factor
        return factor.T @ vector if self.dense else factor * vector

    def whitened_curvature(self, curvature: np.ndarray | None) -> float:
        """The largest eigenvalue of ``Lᵀ H L`` (1 where nothing is known)."""
        if curvature is None or not np.all(np.isfinite(curvature)):
            return 1.0
        factor = self.factor
        whitened = (
            factor.T @ curvature @ factor if self.dense else factor[:, None] * curvature * factor
        )
        largest = float(np.linalg.eigvalsh(0.5 * (whitened + whitened.T)).max())
        return largest if np.isfinite(largest) and largest > 0 else 1.0

    def updated(self, estimate: np.ndarray, count: int) -> Preconditioner:
        """A window's covariance ``estimate`` from ``count`` draws, shrunk towards this one
        by ``SHRINKAGE_DRAWS`` draws.

        Shrinking towards the current estimate (rather than towards a multiple of the
        identity, as Stan does) keeps a window of fewer draws than parameters positive
        definite without imposing a scale that badly scaled posteriors do not have.
        """
        weight = count / (count + SHRINKAGE_DRAWS)
        covariance = weight * estimate + (1 - weight) * self.covariance
        if not np.all(np.isfinite(covariance)):
            return self
        if self.dense:
            try:
                np.linalg.cholesky(covariance)
            except np.linalg.LinAlgError:
                return self
        elif np.any(covariance <= 0):
            return self
        return Preconditioner(covariance)
