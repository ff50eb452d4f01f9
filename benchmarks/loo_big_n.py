"""Time and memory of ``pymc_sgmcmc.loo`` on a linear regression with a million rows.

The model is ``y ~ N(X w, 1)``, ``w ~ N(0, 10² I)`` fed through ``pm.Minibatch``; its
posterior is Gaussian in closed form, and its draws are made directly from it (no
sampler). The exact elpd_loo is known in closed form too: with ``A`` the posterior
precision, ``m`` the posterior mean and ``h_i = x_iᵀ A⁻¹ x_i`` (unit noise),
``p(y_i | y_-i) = N(x_iᵀ m + r_i h_i / (1 − h_i), 1 / (1 − h_i))`` with ``r_i = y_i − x_iᵀ m``
(Sherman–Morrison). The benchmark reports the estimate's distance to it, which adds the
Monte Carlo error of PSIS with finitely many draws (about ``N`` times a per-observation
bias of order ``1/draws``) to the subsampling error.

With ArviZ ≥ 1 the ``draws × N`` log-likelihood matrix (16 GB here) exceeds the default
memory budget and ``loo`` subsamples (``arviz_stats.loo_subsample``); ArviZ 0.x has no
subsampling and ``loo`` raises its error, which is printed.

    python benchmarks/loo_big_n.py [--n 1000000] [--draws 2000] [--subsample 1000]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import arviz as az
import numpy as np
import pymc as pm
import xarray as xr

from pymc_sgmcmc.cross_validation import loo

PRIOR_SD = 10.0
CHAINS = 2


def exact_posterior(X, y):
    """Mean, covariance and closed-form elpd_loo of ``y ~ N(X w, 1)``, ``w ~ N(0, PRIOR_SD²)``."""
    precision = X.T @ X + np.eye(X.shape[1]) / PRIOR_SD**2
    covariance = np.linalg.inv(precision)
    mean = covariance @ X.T @ y
    leverage = np.einsum("ij,jk,ik->i", X, covariance, X)
    loo_residual = (y - X @ mean) / (1 - leverage)
    loo_variance = 1 / (1 - leverage)
    elpd_i = -0.5 * (np.log(2 * np.pi * loo_variance) + loo_residual**2 / loo_variance)
    return mean, covariance, float(elpd_i.sum())


def posterior_idata(mean, covariance, draws, rng):
    """``draws`` exact posterior draws of ``w`` in ``CHAINS`` chains, as an ArviZ object."""
    per_chain = draws // CHAINS
    w = rng.multivariate_normal(mean, covariance, size=(CHAINS, per_chain))
    posterior = xr.Dataset(
        {"w": (("chain", "draw", "w_dim_0"), w)},
        coords={"chain": np.arange(CHAINS), "draw": np.arange(per_chain)},
    )
    if int(az.__version__.split(".")[0]) >= 1:
        return xr.DataTree.from_dict({"posterior": posterior})
    return az.InferenceData(posterior=posterior)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=2)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--subsample", type=int, default=None, help="forced subsample size")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    X = rng.normal(size=(args.n, args.features))
    y = X @ rng.normal(size=args.features) + rng.normal(size=args.n)
    mean, covariance, exact_elpd = exact_posterior(X, y)
    idata = posterior_idata(mean, covariance, args.draws, rng)
    with pm.Model() as model:
        x_batch, y_batch = pm.Minibatch(X, y, batch_size=100)
        w = pm.Normal("w", 0.0, PRIOR_SD, shape=args.features)
        pm.Normal("y", x_batch @ w, 1.0, observed=y_batch, total_size=args.n)

    print(
        f"PyMC {pm.__version__}, ArviZ {az.__version__}; N={args.n:_}, "
        f"{args.features} coefficients, {args.draws} draws; log-likelihood matrix "
        f"{8 * args.draws * args.n / 2**30:.1f} GiB"
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = loo(idata, model, subsample=args.subsample, random_seed=args.seed)
    except ValueError as error:
        seconds = time.perf_counter() - start
        print(f"loo raised after {seconds:.1f} s: {error}")
        return
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    subsample = getattr(result, "subsample_size", None)
    print(f"path: {'subsampled, ' + str(subsample) + ' observations' if subsample else 'exact'}")
    print(f"time: {seconds:.1f} s (compiling included)")
    print(f"peak traced allocations during loo: {traced_peak / 2**20:.0f} MiB")
    print(
        f"peak RSS of the process: {rss_after / 2**10:.0f} MiB "
        f"(was {rss_before / 2**10:.0f} MiB before loo)"
    )
    elpd = float(result.elpd)
    se = float(result.se)
    subsampling_se = float(getattr(result, "subsampling_se", 0.0))
    print(
        f"elpd_loo {elpd:.1f} (SE {se:.1f}, subsampling SE {subsampling_se:.2f}); "
        f"closed-form exact {exact_elpd:.1f}: difference {elpd - exact_elpd:+.2f}"
    )


if __name__ == "__main__":
    main()
