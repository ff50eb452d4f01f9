"""The trace is an ordinary ArviZ object: summaries, diagnostics and plots accept it."""

import warnings

import arviz as az
import matplotlib
import numpy as np
import pymc as pm
import pytest

import pymc_sgmcmc as sgmc

matplotlib.use("Agg")

FLOAT_STATS = {"step_size", "minibatch_logp", "grad_norm", "noise_ratio"}
ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1


@pytest.fixture(scope="module", params=["SGLD", "SGHMC"])
def idata(request):
    rng = np.random.default_rng(42)
    X = rng.normal(size=(300, 2))
    y = X @ np.array([1.0, -0.5]) + rng.normal(size=300)
    with pm.Model():
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=30)
        w = pm.Normal("w", 0, 1, shape=2)
        sigma = pm.HalfNormal("sigma", 1)
        pm.Normal("y", X_batch @ w, sigma, observed=y_batch, total_size=300)
        if request.param == "SGLD":
            step = sgmc.SGLD(step_size=2e-4, steps_per_draw=5)
        else:
            step = sgmc.SGHMC(step_size=0.01, friction=60.0, steps_per_draw=5)
        return pm.sample(draws=300, tune=100, chains=2, step=step, random_seed=3, progressbar=False)


def test_summary_ess_and_rhat(idata):
    summary = az.summary(idata)
    assert list(summary.index) == ["w[0]", "w[1]", "sigma"]
    ess, rhat = az.ess(idata), az.rhat(idata)
    for name in ("w", "sigma"):
        assert np.all(np.asarray(ess[name]) > 50), name
        assert np.all(np.asarray(rhat[name]) < 1.05), name


def test_sampler_stats_are_scalar_floats(idata):
    stats = idata.sample_stats
    names = set(stats.data_vars)
    assert FLOAT_STATS | {"diverging"} <= names
    for name in names - {"diverging"}:
        assert stats[name].dtype == np.float64, name
        assert stats[name].dims == ("chain", "draw"), name
    # Float where ArviZ 1.x would choke on bools; bool where ArviZ 0.x's plot_trace needs it.
    assert stats["diverging"].dtype == (np.float64 if ARVIZ_1 else bool)
    assert float(stats["diverging"].sum()) == 0.0
    with warnings.catch_warnings():
        # Constant stats (step_size, diverging) have zero variance: ESS/R-hat divide by 0.
        warnings.simplefilter("ignore", RuntimeWarning)
        summary = az.summary(idata, group="sample_stats")
    assert "grad_norm" in summary.index
    assert np.all(np.asarray(stats["grad_norm"]) > 0)


def test_plot_trace(idata):
    import matplotlib.pyplot as plt

    figure = az.plot_trace(idata)
    assert figure is not None
    plt.close("all")
