"""Single benchmark measurements, each meant to run in a fresh process.

Every task takes keyword arguments, returns a dict of numbers (with the process's peak
resident memory added by :func:`main`), and is run by ``run.py`` as

    python benchmarks/tasks.py TASK '{"n": 100000, ...}'

so that memory, JIT caches and imports of one measurement do not leak into another.
BlackJAX, JAX and nutpie are imported here only: never by the package.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time

import numpy as np

FEATURES = 20
DATA_SEED = 2026


def logistic_data(n: int):
    """Synthetic logistic regression data: X ~ N(0, 1), w ~ N(0, 0.5²), y ~ Bernoulli."""
    rng = np.random.default_rng(DATA_SEED)
    X = rng.standard_normal((n, FEATURES))
    true_w = rng.normal(0.0, 0.5, FEATURES)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(X @ true_w)))).astype(np.int32)
    return X, y, true_w


def logistic_model(X, y, batch_size: int | None):
    """The PyMC model: Normal(0, 1) priors, Bernoulli likelihood, minibatches if asked."""
    import pymc as pm

    with pm.Model() as model:
        if batch_size is None:
            X_data, y_data, total_size = X, y, None
        else:
            X_data, y_data = pm.Minibatch(X, y, batch_size=batch_size)
            total_size = len(y)
        w = pm.Normal("w", 0.0, 1.0, shape=FEATURES)
        pm.Bernoulli("y", logit_p=X_data @ w, observed=y_data, total_size=total_size)
    return model


def quiet_pymc():
    logging.getLogger("pymc").setLevel(logging.ERROR)


# ---- start-up ---------------------------------------------------------------------------
def startup(*, sampler: str, n: int, batch: int):
    """The step's construction and the first ``pm.sample`` (defaults, one chain), timed
    separately; run with cold compile caches (``run.py``), as a first session would be.

    ``sampler="NUTS"`` is PyMC's default NUTS on the full data (no minibatches): its
    ``build_seconds`` is 0, since pm.sample builds and compiles it inside.
    """
    import pymc as pm

    import pymc_sgmcmc as sgmc

    quiet_pymc()
    X, y, _ = logistic_data(n)
    options = {"chains": 1, "cores": 1, "progressbar": False, "compute_convergence_checks": False}
    model = logistic_model(X, y, None if sampler == "NUTS" else batch)
    start = time.perf_counter()
    with model:
        step = None if sampler == "NUTS" else getattr(sgmc, sampler)()
    build = time.perf_counter() - start
    start = time.perf_counter()
    pm.sample(step=step, model=model, random_seed=1, **options)
    first_sample = time.perf_counter() - start
    return {
        "build_seconds": build,
        "sample_seconds": first_sample,
        "seconds": build + first_sample,
        "control_variate": step is not None and step.control_variate is not None,
    }


# ---- throughput -------------------------------------------------------------------------
def pymc_sgmcmc(*, sampler: str, n: int, batch: int, steps_per_draw: int, steps: int):
    """SG steps per second through ``pm.sample`` (one chain), and ``step()`` alone."""
    import pymc as pm

    import pymc_sgmcmc as sgmc

    quiet_pymc()
    X, y, _ = logistic_data(n)
    model = logistic_model(X, y, batch)
    start = time.perf_counter()
    with model:
        if sampler == "SGLD":
            step = sgmc.SGLD(step_size=0.1 / n**2, steps_per_draw=steps_per_draw)
        else:
            step = sgmc.SGHMC(step_size=1e-3 / n, friction=10.0, steps_per_draw=steps_per_draw)
    build = time.perf_counter() - start
    draws = max(steps // steps_per_draw, 10)
    options = {"tune": 0, "chains": 1, "cores": 1, "progressbar": False}
    options["compute_convergence_checks"] = False
    start = time.perf_counter()
    pm.sample(draws=10, step=step, model=model, random_seed=0, **options)  # JIT warm-up
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    pm.sample(draws=draws, step=step, model=model, random_seed=1, **options)
    sample_seconds = time.perf_counter() - start

    step.setup_chain(np.random.default_rng(2), 0, draws)
    point = model.initial_point()
    start = time.perf_counter()
    for _ in range(draws):
        point, _ = step.step(point)
    step_seconds = time.perf_counter() - start
    return {
        "steps_per_second": draws * steps_per_draw / sample_seconds,
        "step_only_steps_per_second": draws * steps_per_draw / step_seconds,
        "pm_sample_overhead_us_per_draw": (sample_seconds - step_seconds) / draws * 1e6,
        "build_seconds": build,
        "warm_up_seconds": warm_up,
    }


def pymc_sgmcmc_defaults(
    *,
    sampler: str,
    n: int,
    batch: int,
    draws: int | None = None,
    mode: str | None = None,
    float_type: str = "float64",
):
    """What a user following the quick start gets: ``SGLD()`` / ``SGHMC()`` and
    ``pm.sample``'s own tune and draws, one chain.

    ``float_type="float32"`` runs it all under ``pytensor.config.floatX = "float32"``,
    the data cast to float32 (the labels to ``intX``, as PyMC casts them).

    SG steps are counted from the ``n_steps`` stat, so tuning's changing
    ``steps_per_draw`` counts too. ``steps_per_second`` is end to end (tuning included,
    the step's construction not); ``sampling_steps_per_second`` is the adapted settings
    (``step.adapted_settings()``) sampled again without tuning.
    """
    import pytensor

    from pymc.pytensorf import intX

    with pytensor.config.change_flags(floatX=float_type):
        X, y, _ = logistic_data(n)
        if float_type != "float64":
            X, y = X.astype(float_type), intX(y)
        return _defaults_run(sampler, X, y, batch, draws, mode)


def _defaults_run(sampler, X, y, batch, draws, mode):
    import pymc as pm

    import pymc_sgmcmc as sgmc

    quiet_pymc()
    model = logistic_model(X, y, batch)
    options = {"chains": 1, "cores": 1, "progressbar": False, "compute_convergence_checks": False}
    # Every SG step counts, tuning's too.
    options["discard_tuned_samples"] = False
    if draws is not None:
        options["draws"] = draws
    compile_options = {} if mode is None else {"compile_kwargs": {"mode": mode}}
    start = time.perf_counter()
    with model:
        step = getattr(sgmc, sampler)(**compile_options)
    build = time.perf_counter() - start
    start = time.perf_counter()
    trace = pm.sample(step=step, model=model, random_seed=1, **options)
    seconds = time.perf_counter() - start
    sg_steps = int(trace.sample_stats["n_steps"].sum()) + int(
        trace.warmup_sample_stats["n_steps"].sum() if "warmup_sample_stats" in trace else 0
    )
    settings = step.adapted_settings()
    with model:
        fixed = getattr(sgmc, sampler)(**settings, **compile_options)
    fixed_draws = max(draws or 1000, 10)
    rest = {key: value for key, value in options.items() if key != "draws"}
    # Compiled (JAX: traced) once before the timed run.
    pm.sample(step=fixed, model=model, random_seed=3, tune=0, draws=5, **rest)
    start = time.perf_counter()
    pm.sample(step=fixed, model=model, random_seed=2, tune=0, draws=fixed_draws, **rest)
    fixed_seconds = time.perf_counter() - start
    return {
        "steps_per_second": sg_steps / seconds,
        "sampling_steps_per_second": fixed_draws * fixed.steps_per_draw / fixed_seconds,
        "steps_per_draw": step.steps_per_draw,
        "sg_steps": sg_steps,
        "sample_seconds": seconds,
        "build_seconds": build,
        "control_variate": step.control_variate is not None,
    }


def bare_gradient(*, n: int, batch: int, steps: int):
    """Calls per second of the compiled minibatch gradient alone, fresh rows each call."""
    import pytensor

    from pymc_sgmcmc.gradients.minibatch import MinibatchLogPosterior

    X, y, _ = logistic_data(n)
    model = logistic_model(X, y, batch)
    target = MinibatchLogPosterior(model, model.value_vars)
    gradient = pytensor.function(
        [target.position, *target.indices], target.gradient, trust_input=True
    )
    position = np.zeros(target.size)
    [indices] = target.draw_indices(np.random.default_rng(0), steps)
    gradient(position, indices[0])
    start = time.perf_counter()
    for index in indices:
        gradient(position, index)
    return {"steps_per_second": steps / (time.perf_counter() - start)}


def numpy_sgld(*, n: int, batch: int, steps: int):
    """A hand-written NumPy SGLD loop: the interpreted-loop floor."""
    X, y, _ = logistic_data(n)
    rng = np.random.default_rng(0)
    w, step_size, scale = np.zeros(FEATURES), 0.1 / n**2, n / batch
    start = time.perf_counter()
    for _ in range(steps):
        index = rng.integers(0, n, batch)
        X_batch = X[index]
        probability = 1.0 / (1.0 + np.exp(-(X_batch @ w)))
        gradient = scale * (X_batch.T @ (y[index] - probability)) - w
        w = w + step_size * gradient + np.sqrt(2 * step_size) * rng.standard_normal(FEATURES)
    return {"steps_per_second": steps / (time.perf_counter() - start)}


def blackjax(*, sampler: str, n: int, batch: int, steps: int):
    """BlackJAX's SGLD kernel / SGHMC diffusion, jitted in one ``lax.scan``, float64."""
    import blackjax as bj
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    X, y, _ = logistic_data(n)
    X, y = jnp.asarray(X), jnp.asarray(y, dtype=jnp.float64)

    def logprior(w):
        return -0.5 * jnp.sum(w**2)

    def loglikelihood(w, row):
        x, label = row
        logit = x @ w
        return label * logit - jnp.logaddexp(0.0, logit)

    grad_estimator = bj.sgmcmc.gradients.grad_estimator(logprior, loglikelihood, n)

    def minibatch(key):
        index = jax.random.randint(key, (batch,), 0, n)
        return X[index], y[index]

    if sampler == "SGLD":
        kernel, step_size = bj.sgld(grad_estimator), 0.1 / n**2

        def body(state, key):
            batch_key, step_key = jax.random.split(key)
            position = kernel.step(step_key, state, minibatch(batch_key), step_size)
            return position, position

        initial = jnp.zeros(FEATURES)
    else:
        # The SGHMC diffusion with momentum kept across steps and a fresh minibatch per
        # step, as pymc-sgmcmc's SGHMC (BlackJAX's top-level SGHMC resamples momentum).
        # BlackJAX 1.x's diffusion is the momentum form with unit mass: step h, alpha Γ.
        h, friction = 1e-3 / n, 10.0
        diffusion = bj.sgmcmc.diffusions.sghmc(alpha=friction, beta=0.0)
        learning_rate = h

        def body(state, key):
            batch_key, step_key = jax.random.split(key)
            position, momentum = state
            gradient = grad_estimator(position, minibatch(batch_key))
            state = diffusion(step_key, position, momentum, gradient, learning_rate)
            return state, state[0]

        initial = (jnp.zeros(FEATURES), jnp.zeros(FEATURES))

    @jax.jit
    def run(key, state):
        return jax.lax.scan(body, state, jax.random.split(key, steps))

    start = time.perf_counter()
    jax.block_until_ready(run(jax.random.key(0), initial))
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(run(jax.random.key(1), initial))
    seconds = time.perf_counter() - start
    return {"steps_per_second": steps / seconds, "build_seconds": compile_seconds}


# ---- time to accuracy ---------------------------------------------------------------------
def reference(*, n: int, draws: int, chains: int):
    """Long nutpie NUTS run on the full data: the posterior means and sds to reach."""
    import nutpie

    X, y, _ = logistic_data(n)
    compiled = nutpie.compile_pymc_model(logistic_model(X, y, None))
    trace = nutpie.sample(
        compiled, draws=draws, tune=1000, chains=chains, seed=1, progress_bar=False
    )
    w = np.asarray(trace.posterior["w"]).reshape(-1, FEATURES)
    return {"mean": w.mean(axis=0).tolist(), "sd": w.std(axis=0).tolist()}


def accuracy(draws: np.ndarray, reference_result: dict) -> dict:
    mean, sd = np.asarray(reference_result["mean"]), np.asarray(reference_result["sd"])
    draws = draws.reshape(-1, FEATURES)
    mean_error = float(np.max(np.abs(draws.mean(axis=0) - mean) / sd))
    sd_ratio = draws.std(axis=0) / sd
    return {
        "max_mean_error_sd": mean_error,
        "sd_ratio_min": float(sd_ratio.min()),
        "sd_ratio_max": float(sd_ratio.max()),
        "accurate": bool(mean_error < 0.1 and np.all(np.abs(sd_ratio - 1) < 0.2)),
    }


def timed_result(trace, reference_result: dict | None, **timings) -> dict:
    """Timings, the draws' means and sds, and their accuracy where a reference is given."""
    w = np.asarray(trace.posterior["w"]).reshape(-1, FEATURES)
    result = {**timings, "mean": w.mean(axis=0).tolist(), "sd": w.std(axis=0).tolist()}
    if reference_result is not None:
        result.update(accuracy(w, reference_result))
    return result


def nuts(*, n: int, reference_result: dict | None, engine: str):
    """PyMC's default NUTS or nutpie's default, on the full data, compile time included.

    Returns the draws' means and sds too: without a reference (at N = 1e6, where a long
    run is out of reach) the default run is itself the reference.
    """
    import pymc as pm

    quiet_pymc()
    X, y, _ = logistic_data(n)
    start = time.perf_counter()
    model = logistic_model(X, y, None)
    if engine == "pymc":
        with model:
            trace = pm.sample(random_seed=1, progressbar=False, compute_convergence_checks=False)
    else:
        import nutpie

        trace = nutpie.sample(nutpie.compile_pymc_model(model), seed=1, progress_bar=False)
    seconds = time.perf_counter() - start
    # CPU seconds of this process and its finished workers: on a loaded machine the wall
    # time overstates what the run needs, this does not.
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu_seconds = sum(u.ru_utime + u.ru_stime for u in usage)
    return timed_result(trace, reference_result, seconds=seconds, cpu_seconds=cpu_seconds)


def sgmcmc_accuracy(*, n: int, reference_result: dict | None, sampler: str, config: dict):
    """One pymc-sgmcmc run from scratch (model, compile, sampling), with its accuracy.

    ``build_seconds`` is the part spent before sampling (model, compilation and, with
    control variates, the MAP search and the full-data gradient at the centre).
    """
    import pymc as pm

    import pymc_sgmcmc as sgmc

    quiet_pymc()
    X, y, _ = logistic_data(n)
    start = time.perf_counter()
    model = logistic_model(X, y, config["batch"])
    step_options = dict(config["step"])
    with model:
        step = getattr(sgmc, sampler)(**step_options)
        build_seconds = time.perf_counter() - start
        trace = pm.sample(
            draws=config["draws"],
            tune=config["tune"],
            chains=config.get("chains", 2),
            cores=1,
            step=step,
            random_seed=1,
            progressbar=False,
            compute_convergence_checks=False,
        )
    seconds = time.perf_counter() - start
    return timed_result(trace, reference_result, seconds=seconds, build_seconds=build_seconds)


def laplace(*, n: int):
    """Laplace approximation at the exact MAP (Newton's method): a check of the reference.

    At large N the logistic posterior is close to Gaussian, so this is close to NUTS.
    """
    X, y, _ = logistic_data(n)
    w = np.zeros(FEATURES)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        gradient = X.T @ (y - p) - w
        hessian = (X * (p * (1 - p))[:, None]).T @ X + np.eye(FEATURES)
        step = np.linalg.solve(hessian, gradient)
        w = w + step
        if np.max(np.abs(step)) < 1e-12:
            break
    covariance = np.linalg.inv(hessian)
    return {"mean": w.tolist(), "sd": np.sqrt(np.diag(covariance)).tolist()}


def gradient_cost(*, n: int, evaluations: int = 20):
    """Seconds per full-data log density and gradient evaluation (PyMC's compiled one).

    NUTS' cost is this times the number of gradients it needs, which barely depends on N
    here (the posterior's shape, standardised, is about the same): the ratio of this cost
    at two N projects a NUTS timing from one N to the other.
    """
    quiet_pymc()
    X, y, _ = logistic_data(n)
    model = logistic_model(X, y, None)
    function = model.logp_dlogp_function(ravel_inputs=True)
    function.set_extra_values({})
    point = np.zeros(FEATURES)
    function(point)
    start = time.perf_counter()
    for _ in range(evaluations):
        function(point)
    return {"seconds_per_gradient": (time.perf_counter() - start) / evaluations}


TASKS = {
    "startup": startup,
    "pymc_sgmcmc_defaults": pymc_sgmcmc_defaults,
    "pymc_sgmcmc": pymc_sgmcmc,
    "bare_gradient": bare_gradient,
    "numpy_sgld": numpy_sgld,
    "blackjax": blackjax,
    "reference": reference,
    "nuts": nuts,
    "sgmcmc_accuracy": sgmcmc_accuracy,
    "laplace": laplace,
    "gradient_cost": gradient_cost,
}


def main() -> None:
    task, arguments = sys.argv[1], json.loads(sys.argv[2])
    result = TASKS[task](**arguments)
    # ru_maxrss is in KiB on Linux.
    result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
