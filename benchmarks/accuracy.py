"""Accuracy of SGLD and SGHMC on a conjugate Bayesian linear regression.

The posterior of ``w`` for ``y ~ N(X w, 1)``, ``w ~ N(0, I)`` is Gaussian in closed form.
This script samples it with minibatches through ``pm.sample`` and reports, per
coordinate, the error of the posterior mean in posterior standard deviations and the
ratio of the sampled to the exact posterior sd.

    python benchmarks/accuracy.py [--n 10000] [--draws 4000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pymc as pm

import pymc_sgmcmc as sgmc


def exact_posterior(X, y):
    precision = X.T @ X + np.eye(X.shape[1])
    covariance = np.linalg.inv(precision)
    return covariance @ X.T @ y, np.sqrt(np.diag(covariance))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--draws", type=int, default=4000)
    args = parser.parse_args()

    rng = np.random.default_rng(2026)
    X = rng.normal(size=(args.n, args.features))
    y = X @ rng.normal(size=args.features) + rng.normal(size=args.n)
    mean, sd = exact_posterior(X, y)
    # Posterior sd ~ 1/sqrt(N); step sizes are set relative to the posterior variance.
    variance = 1.0 / args.n
    samplers = {
        "SGLD": lambda: sgmc.SGLD(step_size=0.003 * variance, steps_per_draw=50),
        "SGLD (polynomial decay)": lambda: sgmc.SGLD(
            step_size=sgmc.schedules.polynomial(0.006 * variance * 1e4**0.55, b=1e4, gamma=0.55),
            steps_per_draw=50,
        ),
        "SGHMC (estimated B̂)": lambda: sgmc.SGHMC(
            step_size=0.05 * np.sqrt(variance),
            friction=5.0 / np.sqrt(variance),
            gradient_noise="estimate",
            steps_per_draw=10,
        ),
    }
    print(f"PyMC {pm.__version__}; N={args.n}, d={args.features}, batch={args.batch_size}")
    print(
        f"{'sampler':26s} {'max |mean err|/sd':>18s} {'mean |mean err|/sd':>19s} "
        f"{'sd ratio (min-max)':>19s} {'seconds':>8s}"
    )
    for name, make_step in samplers.items():
        with pm.Model():
            X_batch, y_batch = pm.Minibatch(X, y, batch_size=args.batch_size)
            w = pm.Normal("w", 0, 1, shape=args.features)
            pm.Normal("y", X_batch @ w, 1.0, observed=y_batch, total_size=args.n)
            start = time.perf_counter()
            idata = pm.sample(
                draws=args.draws,
                tune=1000,
                step=make_step(),
                chains=2,
                cores=1,
                random_seed=1,
                progressbar=False,
                compute_convergence_checks=False,
            )
            seconds = time.perf_counter() - start
        draws = np.asarray(idata.posterior["w"]).reshape(-1, args.features)
        error = np.abs(draws.mean(axis=0) - mean) / sd
        ratio = draws.std(axis=0) / sd
        print(
            f"{name:26s} {error.max():18.3f} {error.mean():19.3f} "
            f"{ratio.min():9.3f}-{ratio.max():.3f} {seconds:8.1f}"
        )


if __name__ == "__main__":
    main()
