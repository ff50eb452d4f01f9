"""PSIS-LOO on the full data of minibatch models, against ArviZ on NUTS's own log-likelihood.

NUTS samples each model written on the full data; ``loo`` gets its posterior and the
minibatch model. On the same draws, the exact path must reproduce ``az.loo`` on the
log-likelihood of ``pm.compute_log_likelihood`` up to rounding, and the subsampled path
(ArviZ ≥ 1) must agree with it at the subsampled observations exactly, and in total
within its subsampling error.
"""

import arviz as az
import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest
import xarray as xr

from helpers import ARVIZ_1, make_idata, seed_for

from pymc_sgmcmc import SGMCMCWarning
from pymc_sgmcmc.cross_validation import loo, pointwise_log_likelihood

N, B = 300, 30
RNG = np.random.default_rng(seed_for("loo"))
X = RNG.normal(size=(N, 2))
Y = 0.5 + X @ np.array([1.0, -0.7]) + RNG.normal(scale=0.8, size=N)
LABELS = (RNG.uniform(size=N) < 1 / (1 + np.exp(-(0.3 + X @ np.array([1.5, -1.0]))))).astype(float)
N_MV = 150
COV = np.array([[1.0, 0.5], [0.5, 2.0]])
Y_MV = RNG.multivariate_normal([1.0, -1.0], COV, size=N_MV)

needs_arviz_1 = pytest.mark.skipif(not ARVIZ_1, reason="subsampled PSIS-LOO needs ArviZ ≥ 1")


# ------------------------------------------------------------------------------ the models
# Each builder returns the model on minibatches (minibatch=True) or on the full data.


def linear_model(minibatch, *, with_slope=True, initval=None):
    with pm.Model() as model:
        x, y = pm.Minibatch(X, Y, batch_size=B) if minibatch else (X, Y)
        intercept = pm.Normal("intercept", 0, 10)
        mean = intercept
        if with_slope:
            mean = mean + x @ pm.Normal("w", 0, 10, shape=2)
        sigma = pm.HalfNormal("sigma", 2, initval=initval)
        pm.Normal("y", mean, sigma, observed=y, total_size=N if minibatch else None)
    return model


def logistic_model(minibatch):
    with pm.Model() as model:
        x, labels = pm.Minibatch(X, LABELS, batch_size=B) if minibatch else (X, LABELS)
        intercept = pm.Normal("intercept", 0, 5)
        w = pm.Normal("w", 0, 2, shape=2)
        pm.Bernoulli(
            "y", logit_p=intercept + x @ w, observed=labels, total_size=N if minibatch else None
        )
    return model


def mvnormal_model(minibatch):
    with pm.Model() as model:
        mu = pm.Normal("mu", 0, 10, shape=2)
        data = pm.Minibatch(Y_MV, batch_size=B) if minibatch else Y_MV
        pm.MvNormal("y", mu, cov=COV, observed=data, total_size=N_MV if minibatch else None)
    return model


BUILDERS = {"linear": linear_model, "logistic": logistic_model, "mvnormal": mvnormal_model}


def nuts(model, name):
    """NUTS on the full-data model, with the log-likelihood group ArviZ reads."""
    with model:
        idata = pm.sample(
            draws=500,
            tune=500,
            chains=2,
            cores=1,
            random_seed=seed_for(name),
            progressbar=False,
            compute_convergence_checks=False,
        )
        return pm.compute_log_likelihood(idata, progressbar=False)


@pytest.fixture(scope="module")
def linear_fit():
    return nuts(linear_model(False), "linear")


@pytest.fixture(scope="module")
def logistic_fit():
    return nuts(logistic_model(False), "logistic")


@pytest.fixture(scope="module")
def mvnormal_fit():
    return nuts(mvnormal_model(False), "mvnormal")


@pytest.fixture(scope="module")
def intercept_only_fit():
    return nuts(linear_model(False, with_slope=False), "intercept only")


# ------------------------------------------------------------------------------ helpers


def summary(result):
    """elpd, its SE, p_loo and the pointwise elpd and Pareto k, on both ArviZ lines."""
    if ARVIZ_1:
        return {
            "elpd": float(result.elpd),
            "se": float(result.se),
            "p": float(result.p),
            "elpd_i": np.asarray(result.elpd_i).ravel(),
            "pareto_k": np.asarray(result.pareto_k).ravel(),
        }
    return {
        "elpd": float(result["elpd_loo"]),
        "se": float(result["se"]),
        "p": float(result["p_loo"]),
        "elpd_i": np.asarray(result["loo_i"]).ravel(),
        "pareto_k": np.asarray(result["pareto_k"]).ravel(),
    }


def assert_same_loo(result, reference):
    ours, theirs = summary(result), summary(reference)
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value, rtol=1e-9, atol=1e-9, err_msg=key)


def posterior_of(idata):
    """The posterior group alone (no log_likelihood group to fall back on)."""
    posterior = idata["posterior"]
    return posterior if isinstance(posterior, xr.Dataset) else posterior.to_dataset()


# ------------------------------------------------------------------------------ exact path


@pytest.mark.parametrize("minibatch", [True, False], ids=["minibatch model", "full-data model"])
@pytest.mark.parametrize("case", ["linear", "logistic"])
def test_exact_loo_equals_arviz_on_the_nuts_log_likelihood(case, minibatch, request):
    idata = request.getfixturevalue(f"{case}_fit")
    model = BUILDERS[case](minibatch)
    result = loo(posterior_of(idata), model, pointwise=True, chunk_size=37)
    assert_same_loo(result, az.loo(idata, pointwise=True))


def test_model_with_initial_values(linear_fit):
    # PyMC's own log-likelihood refuses models with initial values (it rebuilds them).
    result = loo(linear_fit, linear_model(True, initval=1.0), pointwise=True)
    assert_same_loo(result, az.loo(linear_fit, pointwise=True))


def test_pointwise_log_likelihood_equals_pymc(linear_fit, mvnormal_fit):
    for idata, model in ((linear_fit, linear_model(True)), (mvnormal_fit, mvnormal_model(True))):
        ours = pointwise_log_likelihood(idata, model, chunk_size=13)
        theirs = idata["log_likelihood"]["y"]
        assert ours.dims == theirs.dims
        np.testing.assert_allclose(ours.values, theirs.values, rtol=1e-10, atol=1e-10)


def transposed_model():
    # The rows of the data on the second axis: the data cannot be sliced by rows.
    with pm.Model() as model:
        w = pm.Normal("w", 0, 1, shape=2)
        sigma = pm.HalfNormal("sigma", 1)
        pm.Normal("y", pt.dot(w, X.T), sigma, observed=Y)
    return model


def prior_draws():
    return make_idata(
        posterior={"w": RNG.normal(size=(1, 200, 2)), "sigma": RNG.uniform(0.5, 2, size=(1, 200))}
    )


def test_likelihoods_the_row_slicing_does_not_handle():
    # Data not sliced by rows and a symbolic (censored) distribution are evaluated on all
    # rows for chunks of draws; a likelihood reading only data has no draw axis of its own.
    idata = prior_draws()
    with pm.Model() as censored:
        w = pm.Normal("w", 0, 1, shape=2)
        sigma = pm.HalfNormal("sigma", 1)
        pm.Censored(
            "y", pm.Normal.dist(X @ w, sigma), lower=-1, upper=1, observed=np.clip(Y, -1, 1)
        )
    with pm.Model() as chained:
        w = pm.Normal("w", 0, 1, shape=2)
        sigma = pm.HalfNormal("sigma", 1)
        first = pm.Normal("first", X @ w, sigma, observed=Y)
        pm.Normal("y", first, 1.0, observed=Y + 1)
    for model in (transposed_model(), censored, chained):
        expected = pm.compute_log_likelihood(
            idata, var_names=["y"], model=model, extend_inferencedata=False, progressbar=False
        )
        ours = pointwise_log_likelihood(idata, model, var_name="y", chunk_size=50)
        np.testing.assert_allclose(ours.values, expected["y"].values, rtol=1e-10, atol=1e-10)


def test_mvnormal_loo(mvnormal_fit):
    result = loo(mvnormal_fit, mvnormal_model(True), pointwise=True)
    assert_same_loo(result, az.loo(mvnormal_fit, pointwise=True))
    assert summary(result)["elpd_i"].shape == (N_MV,)


def test_thin_and_max_draws(linear_fit):
    thinned = linear_fit.isel(draw=slice(None, None, 3))
    result = loo(linear_fit, linear_model(True), thin=3, pointwise=True)
    assert_same_loo(result, az.loo(thinned, pointwise=True))

    fewer = loo(linear_fit, linear_model(True), max_draws=100, random_seed=1)
    assert (fewer.n_samples if ARVIZ_1 else fewer["n_samples"]) == 2 * 100


def test_compare_two_fits(linear_fit, intercept_only_fit):
    fits = {
        "linear": loo(linear_fit, linear_model(True), pointwise=True),
        "intercept only": loo(
            intercept_only_fit, linear_model(True, with_slope=False), pointwise=True
        ),
    }
    table = az.compare(fits)
    assert list(table.index) == ["linear", "intercept only"]
    assert abs(float(table["elpd_diff"].iloc[1])) > 10


# ------------------------------------------------------------------------------ subsampling


@needs_arviz_1
@pytest.mark.parametrize("case", ["linear", "logistic", "mvnormal"])
def test_subsampled_loo_agrees_with_the_exact_one(case, request):
    from arviz_stats.utils import ELPDDataLOOSubsample

    idata = request.getfixturevalue(f"{case}_fit")
    model = BUILDERS[case](True)
    exact = summary(az.loo(idata, pointwise=True))
    result = loo(idata, model, subsample=60, pointwise=True, random_seed=seed_for(case))
    assert isinstance(result, ELPDDataLOOSubsample)
    assert result.subsample_size == 60

    # Same draws: PSIS-LOO of the subsampled observations is the exact one.
    observations = np.asarray(result.loo_subsample_observations)
    np.testing.assert_allclose(
        summary(result)["elpd_i"][observations], exact["elpd_i"][observations], rtol=1e-9
    )
    np.testing.assert_allclose(
        summary(result)["pareto_k"][observations], exact["pareto_k"][observations], rtol=1e-9
    )
    # The difference estimator errs by its subsampling error only.
    assert abs(result.elpd - exact["elpd"]) < 2 * result.subsampling_se
    assert result.se == pytest.approx(exact["se"], rel=0.2)

    # Its control variate: each observation's log-likelihood at the posterior mean.
    posterior = posterior_of(idata)
    at_mean = posterior.mean(("chain", "draw")).expand_dims(chain=1, draw=1)
    plpd = pointwise_log_likelihood(at_mean, model).values.ravel()
    np.testing.assert_allclose(np.asarray(result.elpd_loo_approx).ravel(), plpd, rtol=1e-10)


@needs_arviz_1
def test_a_small_memory_budget_subsamples(linear_fit):
    from arviz_stats.utils import ELPDDataLOOSubsample

    result = loo(linear_fit, linear_model(True), memory_budget=1000)
    assert isinstance(result, ELPDDataLOOSubsample)
    # The default subsample (1000) exceeds N: every observation is in it, no error left.
    assert result.subsample_size == N
    assert result.elpd == pytest.approx(summary(az.loo(linear_fit))["elpd"], rel=1e-10)
    assert result.subsampling_se == pytest.approx(0.0, abs=1e-8)


@needs_arviz_1
def test_compare_subsampled_fits_on_a_shared_subsample(linear_fit, intercept_only_fit):
    fits = {
        "linear": loo(linear_fit, linear_model(True), subsample=80, pointwise=True, random_seed=5),
        "intercept only": loo(
            intercept_only_fit,
            linear_model(True, with_slope=False),
            subsample=80,
            pointwise=True,
            random_seed=5,
        ),
    }
    np.testing.assert_array_equal(
        fits["linear"].loo_subsample_observations,
        fits["intercept only"].loo_subsample_observations,
    )
    table = az.compare(fits)
    assert list(table.index) == ["linear", "intercept only"]
    assert "subsampling_dse" in table.columns


@needs_arviz_1
@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto")
def test_subsampling_data_that_cannot_be_sliced_warns():
    with pytest.warns(SGMCMCWarning, match="saves memory but not time"):
        result = loo(prior_draws(), transposed_model(), subsample=20, random_seed=1)
    assert result.subsample_size == 20


@pytest.mark.skipif(ARVIZ_1, reason="ArviZ 0.x has no subsampled PSIS-LOO")
def test_past_the_budget_arviz_0_says_what_to_do(linear_fit):
    with pytest.raises(ValueError, match=r"memory_budget.*ArviZ ≥ 1.*thin=.*max_draws="):
        loo(linear_fit, linear_model(True), memory_budget=1000)
    with pytest.raises(ValueError, match=r"subsample=50.*ArviZ ≥ 1"):
        loo(linear_fit, linear_model(True), subsample=50)


# ------------------------------------------------------------------------------ errors


def test_errors(linear_fit):
    model = linear_model(True)
    with pytest.raises(ValueError, match="no posterior group"):
        loo(make_idata(prior={"w": np.zeros((1, 5, 2))}), model)
    with pytest.raises(ValueError, match=r"lacks the model's free variable\(s\) \['sigma'\]"):
        loo(posterior_of(linear_fit).drop_vars("sigma"), model)
    with pm.Model() as no_observed:
        pm.Normal("w", 0, 1)
    with pytest.raises(ValueError, match="no observed variable"):
        loo(linear_fit, no_observed)
    with pm.Model() as two_observed:
        mu = pm.Normal("intercept", 0, 1)
        pm.Normal("y", mu, 1, observed=Y)
        pm.Normal("z", mu, 1, observed=Y + 1)
    with pytest.raises(ValueError, match=r"several observed variables \['y', 'z'\]"):
        loo(linear_fit, two_observed)
    with pytest.raises(ValueError, match="'intercept' is not an observed variable"):
        loo(linear_fit, two_observed, var_name="intercept")
    assert np.isfinite(summary(loo(linear_fit, two_observed, var_name="z", pointwise=True))["elpd"])
    with pytest.raises(ValueError, match="`memory_budget` must be a positive number"):
        loo(linear_fit, model, memory_budget=0)
    with pytest.raises(ValueError, match="`thin` must be a positive integer"):
        loo(linear_fit, model, thin=0)
    if ARVIZ_1:
        with pytest.raises(ValueError, match="exceeds the number of observations"):
            loo(linear_fit, model, subsample=N + 1)
