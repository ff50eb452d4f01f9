"""Closed-form targets and Monte Carlo tolerances shared by the statistical tests."""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pymc as pm
import pytest
import scipy.linalg
import xarray as xr

#: Number of Monte Carlo standard errors a statistic may stray from its expected value.
Z_TOLERANCE = 4.0

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1


def seed_for(name: str) -> int:
    """A fixed seed per test, as pymc-extras does."""
    return sum(map(ord, name))


def batch_means_standard_error(values: np.ndarray, batches: int = 20) -> float:
    """Monte Carlo standard error of the mean of ``values`` (chains, draws) by batch means.

    Each chain is cut into ``batches`` consecutive batches; with batches longer than the
    autocorrelation time their means are nearly independent, so the spread of the
    batch means over chains measures the error of the overall mean (and so the
    effective sample size, ``var / se²``).
    """
    chains, draws = values.shape
    size = draws // batches
    means = values[:, : size * batches].reshape(chains, batches, size).mean(axis=2).ravel()
    return float(means.std(ddof=1) / np.sqrt(means.size))


def assert_gaussian_moments(draws, mean, variance, *, label: str = "") -> None:
    """Check every coordinate's mean and variance of ``draws`` (chains, draws, d).

    Tolerances are ``Z_TOLERANCE`` Monte Carlo standard errors, from batch means of
    the draws (for the mean) and of their squared deviations (for the variance).
    """
    draws = np.asarray(draws, dtype=float)
    for j in range(draws.shape[-1]):
        x = draws[..., j]
        mean_error = x.mean() - mean[j]
        mean_se = batch_means_standard_error(x)
        assert abs(mean_error) < Z_TOLERANCE * mean_se, (
            f"{label} coordinate {j}: mean {x.mean():.6g} vs {mean[j]:.6g} "
            f"({mean_error / mean_se:.1f} standard errors)"
        )
        squared = (x - mean[j]) ** 2
        variance_se = batch_means_standard_error(squared)
        variance_error = squared.mean() - variance[j]
        assert abs(variance_error) < Z_TOLERANCE * variance_se, (
            f"{label} coordinate {j}: variance {squared.mean():.6g} vs {variance[j]:.6g} "
            f"({variance_error / variance_se:.1f} standard errors)"
        )


def linear_gaussian_posterior(X, y, noise_sd, prior_sd):
    """Posterior of ``w`` for ``y ~ N(X w, noise_sd²)``, ``w ~ N(0, prior_sd² I)``.

    Returns the mean, covariance and precision ``A`` (the negative Hessian of the log
    posterior, which is constant).
    """
    precision = X.T @ X / noise_sd**2 + np.eye(X.shape[1]) / prior_sd**2
    covariance = np.linalg.inv(precision)
    mean = covariance @ X.T @ y / noise_sd**2
    return mean, covariance, precision


def minibatch_gradient_covariance(X, y, w, noise_sd, batch_size):
    """Covariance ``V`` of the minibatch log-posterior gradient at ``w``.

    The batch is drawn with replacement, so ``V = (N²/B) Cov_i[∇ log p(y_i | w)]``
    with the per-row covariance over the data set.
    """
    per_row = X * ((y - X @ w) / noise_sd**2)[:, None]
    return X.shape[0] ** 2 / batch_size * np.cov(per_row, rowvar=False, ddof=0)


def sgld_stationary_covariance(precision, gradient_covariance, step_size, temperature):
    """Exact stationary covariance of SGLD on a Gaussian target with gradient noise ``V``.

    ``θ' = θ − η A (θ − μ) + sqrt(2ηT) ξ + η ε`` with ``Cov ε = V`` solves
    ``Σ = (I − ηA) Σ (I − ηA)ᵀ + 2ηT I + η² V``.
    """
    d = precision.shape[0]
    transition = np.eye(d) - step_size * precision
    noise = 2 * step_size * temperature * np.eye(d) + step_size**2 * gradient_covariance
    return scipy.linalg.solve_discrete_lyapunov(transition, noise)


def sghmc_stationary_covariance(
    precision, gradient_covariance, step_size, friction, mass, gradient_noise, temperature
):
    """Exact stationary covariance of ``(θ, p)`` under SGHMC (scalar Γ, M, B̂) on a Gaussian.

    With ``p' = (1 − hΓ/M) p − h A (θ − μ) + e`` and ``θ' = θ + h p' / M``, where
    ``Cov e = 2h(TΓ − B̂) I + h² V``, the state ``(θ, p)`` is a linear AR(1) process.
    """
    d = precision.shape[0]
    h, identity = step_size, np.eye(d)
    decay = 1 - h * friction / mass
    momentum_rows = np.hstack([-h * precision, decay * identity])
    position_rows = np.hstack([identity - h**2 / mass * precision, h / mass * decay * identity])
    transition = np.vstack([position_rows, momentum_rows])
    momentum_noise = 2 * h * (temperature * friction - gradient_noise) * identity
    momentum_noise = momentum_noise + h**2 * gradient_covariance
    loading = np.vstack([h / mass * identity, identity])
    covariance = scipy.linalg.solve_discrete_lyapunov(
        transition, loading @ momentum_noise @ loading.T
    )
    return covariance


def make_idata(**groups):
    """``arviz.from_dict`` on both ArviZ lines (1.x takes one dict of groups)."""
    if ARVIZ_1:
        return az.from_dict(groups)
    return az.from_dict(**groups)


def saved_and_loaded(idata, tmp_path):
    """Write ``idata`` with an available backend and read it back."""
    if ARVIZ_1:
        pytest.importorskip("zarr")
        path = tmp_path / "trace.zarr"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            idata.to_zarr(path)
            return xr.open_datatree(path, engine="zarr")
    pytest.importorskip("h5netcdf")
    path = tmp_path / "trace.nc"
    idata.to_netcdf(str(path), engine="h5netcdf")
    return az.from_netcdf(str(path), engine="h5netcdf")


def minibatch_mean_model(data, *, batch_size, prior_sd):
    """``y_i ~ N(mu, 1)`` through ``pm.Minibatch``, ``mu ~ N(0, prior_sd²)``: conjugate, and
    the per-datum score ``y_i − mu`` has the same variance ``var(y)`` at every ``mu``."""
    with pm.Model() as model:
        y_batch = pm.Minibatch(data, batch_size=batch_size)
        mu = pm.Normal("mu", 0, prior_sd)
        pm.Normal("y", mu, 1.0, observed=y_batch, total_size=len(data))
    return model


def assert_restoring_replays_the_next_draw(step, point) -> None:
    """Save the step's state, take two draws, restore it: the next draw comes again."""
    saved = step.sampling_state
    next_point, next_stats = step.step(point)
    step.step(next_point)
    step.sampling_state = saved
    replayed_point, replayed_stats = step.step(point)
    for name in point:
        np.testing.assert_array_equal(replayed_point[name], next_point[name])
    assert replayed_stats == next_stats


# ---- adapted samplers ------------------------------------------------------------------
#: The sd may be this much too wide: 5% from the noise ratio, 4% from discretisation.
SD_BIAS = 0.10
#: And the mean this many sds off, beyond the Monte Carlo error (non-Gaussian posteriors
#: give a discretised chain an O(step) bias in the mean as well).
MEAN_BIAS = 0.1


def assert_close(draws, mean, sd, *, label: str, mean_bias: float = 0.0) -> None:
    """Every coordinate's mean and sd of ``draws`` (chains, draws, d) against the target."""
    draws = np.asarray(draws, dtype=float)
    for j in range(draws.shape[-1]):
        x = draws[..., j]
        error = (x.mean() - mean[j]) / sd[j]
        mean_se = batch_means_standard_error(x) / sd[j]
        assert abs(error) < Z_TOLERANCE * mean_se + mean_bias, (
            f"{label} coordinate {j}: mean off by {error:.3f} sd ({error / mean_se:.1f} "
            "standard errors)"
        )
        ratio = x.std() / sd[j]
        # The sd's standard error from that of the variance, by the delta method.
        ratio_se = batch_means_standard_error((x - x.mean()) ** 2) / (2 * sd[j] ** 2)
        low, high = 1 - Z_TOLERANCE * ratio_se, 1 + SD_BIAS + Z_TOLERANCE * ratio_se
        assert low < ratio < high, f"{label} coordinate {j}: sd ratio {ratio:.3f}"
