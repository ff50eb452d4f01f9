"""No silent wrong answer, no lost run: odd models and ordinary PyMC habits.

Each test reproduces one case of the reliability issue: before the fix it sampled
garbage silently, lost the run, or failed with an obscure error.
"""

import warnings

import numpy as np
import pymc as pm
import pytensor
import pytest

from helpers import batch_means_standard_error, seed_for

import pymc_sgmcmc as sgmc

N = 200
BATCH = 20


def sample(step, *, draws=100, tune=50, chains=1, seed=1, **kwargs):
    return pm.sample(
        draws=draws,
        tune=tune,
        chains=chains,
        cores=1,
        step=step,
        random_seed=seed,
        progressbar=False,
        compute_convergence_checks=False,
        **kwargs,
    )


def regression(seed=0, **observed_kwargs):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, 2))
    y = X @ np.array([1.0, -0.5]) + rng.normal(size=N)
    with pm.Model() as model:
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH)
        w = pm.Normal("w", 0, 1, shape=2)
        sigma = pm.HalfNormal("sigma", 1)
        pm.Normal("y", X_batch @ w, sigma, observed=y_batch, **{"total_size": N, **observed_kwargs})
    return model


# ---- 1: a log density that is -inf at the start --------------------------------------
def test_a_start_outside_the_support_is_refused_naming_the_term():
    y = np.random.default_rng(0).uniform(0, 8, size=N)
    with pm.Model():
        batch = pm.Minibatch(y, batch_size=BATCH)
        upper = pm.Uniform("upper", 0, 10)
        pm.Uniform("obs", 0, upper, observed=batch, total_size=N)
        with pytest.raises(sgmc.InitialEvaluationError, match=r"(?s)not finite.*obs: -inf"):
            sample(sgmc.SGLD(step_size=1e-4))


def test_a_single_row_outside_the_support_is_found_on_the_full_data():
    # One row in 200 breaks the start: a single minibatch would most likely miss it.
    y = np.r_[np.full(N - 1, 1.0), 9.0]
    with pm.Model():
        batch = pm.Minibatch(y, batch_size=BATCH)
        upper = pm.Uniform("upper", 0, 10, initval=5.0)
        pm.Uniform("obs", 0, upper, observed=batch, total_size=N)
        with pytest.raises(sgmc.InitialEvaluationError, match="obs"):
            sample(sgmc.SGLD(step_size=1e-4, initial_jitter=0))


def test_jittered_starts_outside_the_support_are_drawn_again():
    # upper must exceed 4.9: at U(-1, 1) jitter of its interval-transformed start (5),
    # about half the jittered starts are outside the support; a start inside is found.
    y = np.r_[np.full(N - 1, 1.0), 4.9]
    with pm.Model():
        batch = pm.Minibatch(y, batch_size=BATCH)
        upper = pm.Uniform("upper", 0, 10)
        pm.Uniform("obs", 0, upper, observed=batch, total_size=N)
        step = sgmc.SGLD(step_size=1e-5)
        idata = sample(step, draws=20, tune=0, chains=4)
    assert np.all(idata.posterior["upper"].values > 4.9)
    first = idata.posterior["upper"].values[:, 0]
    assert len(np.unique(np.round(first, 6))) == 4  # still dispersed


# ---- 2 and 3: blow-ups are divergences, and the run goes on -------------------------
POSITIVE = {
    "HalfNormal": lambda: pm.HalfNormal("scale", 1),
    "Exponential": lambda: pm.Exponential("scale", 1),
    "LogNormal": lambda: pm.LogNormal("scale", 0, 1),
}
SAMPLERS = {
    "SGLD": lambda h: sgmc.SGLD(step_size=h, steps_per_draw=5),
    # RMSprop scales each step to about step_size: only huge ones leave the support.
    "pSGLD": lambda h: sgmc.pSGLD(step_size=2000 * h, steps_per_draw=5),
    "SGHMC": lambda h: sgmc.SGHMC(step_size=np.sqrt(h), friction=0.5, steps_per_draw=5),
    "SGNHT": lambda h: sgmc.SGNHT(step_size=np.sqrt(h), diffusion=0.5, steps_per_draw=5),
}


def scale_model(prior):
    x = np.random.default_rng(1).normal(0, 2.0, size=N)
    with pm.Model() as model:
        batch = pm.Minibatch(x, batch_size=BATCH)
        scale = POSITIVE[prior]()
        pm.Normal("obs", 0, scale, observed=batch, total_size=N)
    return model


@pytest.mark.parametrize("prior", sorted(POSITIVE))
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_blow_ups_with_positive_parameters_are_divergences(prior, sampler):
    with scale_model(prior):
        step = SAMPLERS[sampler](0.5)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            idata = sample(step, draws=60, tune=20)
    diverging = idata.sample_stats["diverging"].values.astype(bool)
    assert diverging.any()
    scale = idata.posterior["scale"].values
    assert np.all(np.isfinite(scale)) and np.all(scale > 0)
    # A diverging draw repeats the chain's last finite state.
    index = np.flatnonzero(diverging[0])
    index = index[index > 0]
    np.testing.assert_array_equal(scale[0, index], scale[0, index - 1])
    assert np.all(np.isfinite(idata.sample_stats["minibatch_logp"].values))
    (warning,) = [w for w in record if issubclass(w.category, sgmc.SamplerDivergenceWarning)]
    assert f"{step.divergences} of 80 draws diverged" in str(warning.message)
    assert step.divergences >= diverging.sum()


def test_the_divergence_warning_counts_each_chain_once_with_its_own_count():
    with scale_model("HalfNormal"):
        step = SAMPLERS["SGLD"](0.5)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            idata = sample(step, draws=60, tune=20, chains=2)
    messages = [
        str(w.message) for w in record if issubclass(w.category, sgmc.SamplerDivergenceWarning)
    ]
    assert len(messages) == 2
    for chain in range(2):
        (message,) = [m for m in messages if f"chain {chain}:" in m]
        # The warning counts tuning draws too; the trace keeps the draws after tuning.
        after_tuning = int(idata.sample_stats["diverging"].values[chain].sum())
        total = int(message.split(": ")[1].split(" of ")[0])
        assert total >= after_tuning > 0
        assert "of 80 draws diverged" in message
        assert "step_size=0.5" in message and "Lower step_size" in message


def test_after_a_divergence_the_chain_goes_on_from_its_last_finite_state():
    # Inject non-finite kernel outputs at chosen draws: each is marked diverging, keeps the
    # previous draw, and the chain then samples the closed-form posterior as usual.
    rng = np.random.default_rng(8)
    x = rng.normal(1.0, 1.0, size=N)
    with pm.Model():
        batch = pm.Minibatch(x, batch_size=BATCH)
        mu = pm.Normal("mu", 0, 10)
        pm.Normal("obs", mu, 1.0, observed=batch, total_size=N)
        step = sgmc.SGHMC(step_size=0.02, friction=50.0, steps_per_draw=5)
        kernel, calls, broken = step._kernel, [0], {30, 31, 200, 555}

        class Faulty:
            set_fixed = kernel.set_fixed

            def __call__(self, **inputs):
                outputs = kernel(**inputs)
                calls[0] += 1
                if calls[0] in broken:
                    outputs["momentum"] = np.full_like(outputs["momentum"], np.nan)
                return outputs

        step._kernel = Faulty()
        with pytest.warns(sgmc.SamplerDivergenceWarning, match="4 of 1100 draws diverged"):
            idata = sample(step, draws=1000, tune=100)
    diverging = idata.sample_stats["diverging"].values[0].astype(bool)
    # Kernel calls 30, 31, 200 and 555 are draws 29, 30, 199 and 554: 99 and 454 after tuning.
    np.testing.assert_array_equal(np.flatnonzero(diverging), [99, 454])
    draws = idata.posterior["mu"].values[0]
    np.testing.assert_array_equal(draws[diverging], draws[np.flatnonzero(diverging) - 1])
    assert np.all(np.diff(draws[~diverging]) != 0)
    posterior_sd = 1 / np.sqrt(N + 0.01)
    posterior_mean = x.sum() / (N + 0.01)
    standard_error = batch_means_standard_error(draws[None, :])
    assert abs(draws.mean() - posterior_mean) < 4 * standard_error + 0.1 * posterior_sd


def test_on_divergence_raise_stops_with_the_chain_draw_and_step_size():
    with scale_model("Exponential"):
        with pytest.raises(sgmc.SamplerDivergenceError) as error:
            sample(sgmc.SGHMC(step_size=0.8, friction=0.5, steps_per_draw=5, on_divergence="raise"))
    message = str(error.value)
    for part in ("chain 0", "draw", "SG steps", "step_size=0.8", "raise"):
        assert part in message


def test_on_divergence_is_checked():
    with regression(), pytest.raises(ValueError, match='"warn".*"raise"'):
        sgmc.SGLD(step_size=0.1, on_divergence="ignore")


# ---- 4: step-size selection survives blow-ups ----------------------------------------
@pytest.mark.parametrize("sampler", ["SGLD", "SGHMC"])
def test_select_step_size_scores_blow_ups_as_inf_and_goes_on(sampler):
    with scale_model("HalfNormal") as model:
        steps = [1e-4, 1e-3, 1.0] if sampler == "SGLD" else [0.01, 0.03, 1.0]
        selection = sgmc.select_step_size(
            model,
            sampler=sampler,
            step_sizes=steps,
            draws=60,
            tune=20,
            steps_per_draw=5,
            random_seed=seed_for(sampler),
        )
    table = selection.table.set_index("step_size")
    assert np.isinf(table.loc[1.0, "ksd"]) and table.loc[1.0, "diverged"]
    assert np.isfinite(table["ksd"]).sum() == 2
    assert selection.step_size < 1.0


# ---- 5 and 8: total_size ---------------------------------------------------------------
def test_a_total_size_unlike_the_data_warns_by_how_much_it_scales():
    with regression(total_size=100 * N):
        with pytest.warns(sgmc.SGMCMCWarning, match=r"weighted 100 times.*total_size=200"):
            sgmc.SGLD(step_size=1e-3)


def test_batches_fed_by_hand_with_total_size_warn():
    rng = np.random.default_rng(2)
    with pm.Model():
        y = pm.Data("y", rng.normal(size=BATCH))
        mu = pm.Normal("mu", 0, 1)
        pm.Normal("obs", mu, 1, observed=y, total_size=N)
        with pytest.warns(sgmc.SGMCMCWarning, match="does not come from pm.Minibatch"):
            sgmc.SGLD(step_size=1e-3)


# ---- 7: pm.set_data after the step is built -----------------------------------------
def test_chains_follow_the_current_size_of_the_data():
    rng = np.random.default_rng(3)
    with pm.Model() as model:
        x = pm.Data("x", rng.normal(size=N))
        batch = pm.Minibatch(x, batch_size=BATCH)
        mu = pm.Normal("mu", 0, 1)
        pm.Normal("obs", mu, 1, observed=batch, total_size=N // 4)
        with pytest.warns(sgmc.SGMCMCWarning, match="total_size=50"):
            step = sgmc.SGLD(step_size=1e-3)
        pm.set_data({"x": rng.normal(3.0, 1.0, size=N // 4)})
        idata = sample(step, draws=200, tune=100)
    assert step._target.streams[0].data_size == N // 4
    # Reading past the 50 rows would have given garbage or an IndexError; the posterior
    # is the new data's (mean 3, sd 1/sqrt(50)).
    assert abs(float(idata.posterior["mu"].mean()) - 3.0) < 0.5
    del model


def test_a_control_variate_step_refuses_resized_data():
    rng = np.random.default_rng(3)
    with pm.Model():
        x = pm.Data("x", rng.normal(size=N))
        batch = pm.Minibatch(x, batch_size=BATCH)
        mu = pm.Normal("mu", 0, 1)
        pm.Normal("obs", mu, 1, observed=batch, total_size=N)
        step = sgmc.SGLD(step_size=1e-3, control_variate=True)
        pm.set_data({"x": rng.normal(size=N // 2)})
        with pytest.raises(ValueError, match=r"changed size.*\[200\] rows, now \[100\]"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", sgmc.SGMCMCWarning)
                sample(step, draws=5, tune=0)


# ---- 9: float32 ------------------------------------------------------------------------
FLOAT32_STEPS = {
    "SGLD": lambda: sgmc.SGLD(step_size=2e-4, steps_per_draw=5),
    "SGLD+cv": lambda: sgmc.SGLD(step_size=2e-4, steps_per_draw=5, control_variate=True),
    "SGHMC+cv": lambda: sgmc.SGHMC(
        step_size=0.01,
        friction=20.0,
        steps_per_draw=5,
        control_variate=True,
        gradient_noise="estimate",
    ),
    "SGNHT+cv": lambda: sgmc.SGNHT(
        step_size=0.01, diffusion=20.0, steps_per_draw=5, control_variate=True
    ),
    "pSGLD+cv": lambda: sgmc.pSGLD(step_size=0.003, steps_per_draw=5, control_variate=True),
    # Zero configuration: the MAP, curvature, preconditioner and step size in float32.
    "SGLD()": sgmc.SGLD,
    "SGHMC()": sgmc.SGHMC,
}


@pytest.mark.parametrize("name", sorted(FLOAT32_STEPS))
def test_every_feature_works_in_float32(name):
    with pytensor.config.change_flags(floatX="float32"):
        rng = np.random.default_rng(4)
        X = rng.normal(size=(N, 2)).astype("float32")
        y = (X @ np.array([1.0, -0.5]) + rng.normal(size=N)).astype("float32")
        with pm.Model() as model:
            X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH)
            w = pm.Normal("w", 0, 1, shape=2)
            pm.Normal("y", X_batch @ w, 1.0, observed=y_batch, total_size=N)
            step = FLOAT32_STEPS[name]()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", sgmc.MinibatchNoiseWarning)
                idata = sample(step, draws=400, tune=200, chains=2)
        draws = idata.posterior["w"].values
        assert draws.dtype == np.float32 and np.all(np.isfinite(draws))
        precision = X.T.astype(float) @ X + np.eye(2)
        mean = np.linalg.solve(precision, X.T.astype(float) @ y)
        sd = np.sqrt(np.diag(np.linalg.inv(precision)))
        # Within 5 posterior sds of the exact mean (of about 20 effective draws).
        assert np.all(np.abs(draws.mean(axis=(0, 1)) - mean) < 5 * sd / np.sqrt(20) + sd)
        result = sgmc.diagnostics.ksd(idata, model)
        assert np.isfinite(result.pooled)


def test_select_step_size_works_in_float32():
    with pytensor.config.change_flags(floatX="float32"):
        rng = np.random.default_rng(5)
        x = rng.normal(size=N).astype("float32")
        with pm.Model() as model:
            batch = pm.Minibatch(x, batch_size=BATCH)
            mu = pm.Normal("mu", 0, 1)
            pm.Normal("obs", mu, 1, observed=batch, total_size=N)
        selection = sgmc.select_step_size(
            model, step_sizes=[1e-4, 1e-3], draws=50, tune=20, random_seed=1
        )
    assert np.isfinite(selection.table["ksd"]).all()


# ---- 11: NaN in minibatch data ---------------------------------------------------------
def test_nan_in_minibatch_data_is_named_before_sampling():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(N, 2))
    y = rng.normal(size=N)
    y[[7, 30]] = np.nan
    with pm.Model():
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH)
        w = pm.Normal("w", 0, 1, shape=2)
        pm.Normal("y", X_batch @ w, 1.0, observed=y_batch, total_size=N)
        with pytest.raises(
            ValueError, match=r"input 2 of 2.*'y'.*NaN in 2 of its 200 rows.*\[7, 30\]"
        ):
            sample(sgmc.SGLD(step_size=1e-3))


# ---- 12: tune=0, and the noise estimate from late tuning -----------------------------
def test_tune_zero_warns_for_estimated_noise_and_measures_it_at_the_start():
    with regression():
        step = sgmc.SGHMC(step_size=0.001, friction=500.0, gradient_noise="estimate")
        with pytest.warns(sgmc.SGMCMCWarning, match='tune=0: gradient_noise="estimate"'):
            sample(step, draws=5, tune=0)
        start = step.chain_start.default_start
        # Measured at the chain's (jittered) start, not the un-jittered initial point.
        assert np.all(step.gradient_variance > 0)
        assert step._last_position is not None and not np.allclose(step._last_position, start)


def test_tune_zero_warns_that_the_preconditioner_does_not_adapt():
    with regression():
        with pytest.warns(sgmc.SGMCMCWarning, match="adapts only while tuning"):
            sample(sgmc.pSGLD(step_size=1e-3, noise_estimate_interval=0), draws=5, tune=0)


def test_the_noise_estimate_uses_the_second_half_of_tuning():
    with regression():
        step = sgmc.SGHMC(step_size=0.01, friction=50.0, gradient_noise="estimate")
        step.counts = []
        monitor = step.noise_monitor
        add_pairs = monitor.add_pairs

        def recording(position, pairs):
            add_pairs(position, pairs)
            step.counts.append((step._draw, bool(step.tune), monitor.pair_count))

        monitor.add_pairs = recording
        sample(step, draws=5, tune=40)
    tuning = [(draw, count) for draw, tune, count in step.counts if tune]
    # Pairs after draws 21-40 only enter the frozen estimate.
    assert dict(tuning)[40] == 20


# ---- 13: the smaller ones --------------------------------------------------------------
def test_the_sampling_state_keeps_the_tuning_flag():
    with regression():
        step = sgmc.SGLD(step_size=1e-3)
        sample(step, draws=3, tune=2)
        state = step.sampling_state
        assert state.tune is False
        step.tune = True
        step.sampling_state = state
        assert step.tune is False


def test_blocked_false_is_refused_clearly():
    with regression(), pytest.raises(ValueError, match="blocked=True"):
        sgmc.SGLD(step_size=1e-3, blocked=False)


@pytest.mark.parametrize("value", [0, 1, 0.5, np.float64(0.0)])
def test_a_bare_number_is_no_control_variate_centre(value):
    with regression(), pytest.raises(TypeError, match="control_variate.*number"):
        sgmc.SGLD(step_size=1e-3, control_variate=value)


def test_a_schedule_may_return_a_one_element_array_but_not_more():
    with regression():
        step = sgmc.SGLD(step_size=lambda k: np.array([1e-5]))
        idata = sample(step, draws=3, tune=0)
        assert np.allclose(idata.sample_stats["step_size"].values, 1e-5)
        with pytest.raises(ValueError, match="one real number per SG step"):
            sgmc.SGLD(step_size=lambda k: np.array([1e-3, 2e-3]))


def test_initvals_equal_to_the_initial_point_are_not_jittered():
    with regression() as model:
        default = model.initial_point()
        given = {"w": default["w"], "sigma": 1.0}
        step = sgmc.SGLD(step_size=1e-12)
        kept = sample(step, draws=2, tune=0, chains=2, initvals=given)
        jittered = sample(step, draws=2, tune=0, chains=2)
    np.testing.assert_allclose(kept.posterior["w"].values[:, 0], [default["w"]] * 2, atol=1e-4)
    assert not np.allclose(jittered.posterior["w"].values[:, 0], default["w"], atol=1e-2)


def test_one_very_noisy_coordinate_is_reported_by_name():
    # Ten coefficients, one of them on a feature 30 times wider: its minibatch noise is
    # about 900 times the others', so it runs hot while the mean over coordinates is low.
    rng = np.random.default_rng(7)
    scales = np.r_[np.ones(9), 30.0]
    X = rng.normal(size=(N, 10)) * scales
    y = X @ (0.1 / scales) + rng.normal(size=N)
    with pm.Model():
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=BATCH)
        w = pm.Normal("w", 0, 1, shape=10)
        pm.Normal("y", X_batch @ w, 1.0, observed=y_batch, total_size=N)
        step = sgmc.SGLD(step_size=2e-6)
        with pytest.warns(sgmc.MinibatchNoiseWarning, match=r"noisiest, w\[9\]"):
            sample(step, draws=40, tune=20)


def test_warnings_point_at_the_users_call_and_share_a_base_class():
    for category in (sgmc.MinibatchNoiseWarning, sgmc.SamplerDivergenceWarning):
        assert issubclass(category, sgmc.SGMCMCWarning)
    assert issubclass(sgmc.SGMCMCWarning, UserWarning)
    with scale_model("HalfNormal"):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            sample(SAMPLERS["SGLD"](0.5), draws=30, tune=0)
    (warning,) = [w for w in record if issubclass(w.category, sgmc.SamplerDivergenceWarning)]
    assert warning.filename == __file__
