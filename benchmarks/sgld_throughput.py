"""Throughput of SGLD through ``pm.sample``: stochastic-gradient steps per second.

The model is a minibatch logistic regression (N=100_000 rows, 20 features, batch 100).
For each ``steps_per_draw`` K, one SGLD step method is built (timed separately: graph
construction and compilation), warmed up by a short ``pm.sample`` (which also covers
PyTensor's lazy JIT compilation on the Numba backend), and then one chain is timed
through ``pm.sample`` with ``draws = steps / K``. Throughput is ``draws * K / time``.

For reference it also times, outside ``pm.sample``:

* ``dlogp``: one call of ``model.compile_dlogp()``, the minibatch log-posterior gradient
  with PyMC's own ``pm.Minibatch`` row sampling (one SG step's worth of gradient work);
* ``step()``: the step method's ``step(point)`` in a Python loop, i.e. the compiled
  K-step kernel plus the per-draw work of the step method, without PyMC's sampling loop
  and trace.

Run ``python benchmarks/sgld_throughput.py [--steps-per-draw 1 20] [--steps 50000]``.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pymc as pm
import pytensor

import pymc_sgmcmc

N, N_FEATURES, BATCH_SIZE = 100_000, 20, 100
STEP_SIZE = 1e-6


def build_model(seed: int = 0) -> pm.Model:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, N_FEATURES))
    true_beta = rng.normal(0.0, 0.5, N_FEATURES)
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-(X @ true_beta)))).astype(np.int32)
    with pm.Model() as model:
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH_SIZE)
        intercept = pm.Normal("intercept", 0.0, 5.0)
        beta = pm.Normal("beta", 0.0, 1.0, shape=N_FEATURES)
        pm.Bernoulli("y", logit_p=intercept + X_batch @ beta, observed=y_batch, total_size=N)
    return model


def run_sample(model, step, draws: int) -> float:
    start = time.perf_counter()
    pm.sample(
        draws=draws,
        tune=0,
        chains=1,
        cores=1,
        step=step,
        model=model,
        random_seed=1,
        progressbar=False,
        compute_convergence_checks=False,
    )
    return time.perf_counter() - start


def calls_per_second(function, min_seconds: float) -> float:
    """Call ``function()`` in batches until ``min_seconds`` have passed; return calls/s."""
    calls, batch, start = 0, 100, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        for _ in range(batch):
            function()
        calls += batch
    return calls / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps-per-draw", type=int, nargs="+", default=[1, 20], help="values of K (1 20)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="SG steps per timed run (default max(50_000, 10_000 K))",
    )
    parser.add_argument(
        "--reference-seconds", type=float, default=2.0, help="duration of each reference timing"
    )
    args = parser.parse_args()
    logging.getLogger("pymc").setLevel(logging.ERROR)

    model = build_model()
    point = model.initial_point()
    dlogp = model.compile_dlogp()
    dlogp(point)
    dlogp_rate = calls_per_second(lambda: dlogp(point), args.reference_seconds)

    rows = []
    for k in args.steps_per_draw:
        start = time.perf_counter()
        with model:
            step = pymc_sgmcmc.SGLD(step_size=STEP_SIZE, steps_per_draw=k)
        build_time = time.perf_counter() - start
        warmup_time = run_sample(model, step, draws=10)
        step_rate = calls_per_second(lambda step=step: step.step(point), args.reference_seconds)
        steps = args.steps or max(50_000, 10_000 * k)
        draws = max(1, steps // k)
        sample_time = run_sample(model, step, draws)
        rows.append((k, build_time, warmup_time, draws, sample_time, step_rate))

    linker = type(pytensor.compile.mode.get_default_mode().linker).__name__
    print(
        f"SGLD throughput: N={N:_}, {N_FEATURES} features, batch {BATCH_SIZE}, 1 chain, tune=0; "
        f"PyMC {pm.__version__}, PyTensor {pytensor.__version__} ({linker} linker)"
    )
    print(f"bare dlogp call (model.compile_dlogp): {dlogp_rate:,.0f} gradients/s\n")
    header = (
        f"{'K':>3} {'build s':>8} {'warm-up s':>9} {'draws':>7} {'sample s':>9} "
        f"{'draws/s':>9} {'SG steps/s':>11} {'us/SG step':>10} {'step() SG steps/s':>17}"
    )
    print(header)
    print("-" * len(header))
    for k, build_time, warmup_time, draws, sample_time, step_rate in rows:
        rate = draws * k / sample_time
        print(
            f"{k:>3} {build_time:>8.2f} {warmup_time:>9.2f} {draws:>7} {sample_time:>9.2f} "
            f"{draws / sample_time:>9,.0f} {rate:>11,.0f} {1e6 / rate:>10.1f} "
            f"{step_rate * k:>17,.0f}"
        )


if __name__ == "__main__":
    main()
