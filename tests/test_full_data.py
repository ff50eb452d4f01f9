"""Full-data copies of minibatch models: exact log density, initial values, KSD, refusals.

Every case has a conjugate Gaussian posterior (known noise), so KSD runs on exact draws;
the ordered means are far apart, so the ordering barely truncates their Gaussian.
"""

import numpy as np
import pymc as pm
import pytest

from helpers import linear_gaussian_posterior, make_idata, seed_for

import pymc_sgmcmc as sgmc

from pymc_sgmcmc.diagnostics import ksd
from pymc_sgmcmc.full_data import full_data_model
from pymc_sgmcmc.tuning import _largest_curvature

N, M, B, K = 240, 90, 20, 3
PRIOR_SD = 10.0
RNG = np.random.default_rng(seed_for("full data"))
X = RNG.normal(size=(N, 2))
W_TRUE = np.array([[1.0, -0.5, 2.0], [0.3, 1.2, -1.0]])
Y = X @ W_TRUE + RNG.normal(size=(N, K))  # multi-output regression, unit noise
COV = np.array([[1.0, 0.4, 0.0], [0.4, 1.5, 0.3], [0.0, 0.3, 0.8]])
Y_MV = RNG.multivariate_normal([0.5, -1.0, 2.0], COV, size=N)
Z = RNG.normal(3.0, 1.0, size=M)  # a second data set, of another length


def gaussian_mean_posterior(data_mean, n, noise_precision):
    """Posterior of ``mu`` for ``n`` draws ``N(mu, noise_precision⁻¹)``, ``mu ~ N(0, PRIOR_SD²)``."""
    precision = n * noise_precision + np.eye(len(np.atleast_1d(data_mean))) / PRIOR_SD**2
    covariance = np.linalg.inv(precision)
    return covariance @ (n * noise_precision @ np.atleast_1d(data_mean)), covariance


# ------------------------------------------------------------------------------ the cases
# Each returns (minibatch model, the same model written on the full data, a point of the
# value variables, the exact posterior as {name: (mean, covariance, shape)}).


def mvnormal_case():
    with pm.Model() as model:
        mu = pm.Normal("mu", 0, PRIOR_SD, shape=K)
        pm.MvNormal("y", mu, cov=COV, observed=pm.Minibatch(Y_MV, batch_size=B), total_size=N)
    with pm.Model() as explicit:
        mu = pm.Normal("mu", 0, PRIOR_SD, shape=K)
        pm.MvNormal("y", mu, cov=COV, observed=Y_MV)
    mean, cov = gaussian_mean_posterior(Y_MV.mean(axis=0), N, np.linalg.inv(COV))
    point = {"mu": np.array([0.4, -0.9, 2.2])}
    return model, explicit, point, {"mu": (mean, cov, (K,))}


def regression_case(total_size):
    with pm.Model() as model:
        x_batch, y_batch = pm.Minibatch(X, Y, batch_size=B)
        w = pm.Normal("W", 0, PRIOR_SD, shape=(2, K))
        pm.Normal("y", x_batch @ w, 1.0, observed=y_batch, total_size=total_size)
    with pm.Model() as explicit:
        w = pm.Normal("W", 0, PRIOR_SD, shape=(2, K))
        pm.Normal("y", X @ w, 1.0, observed=Y)
    # Columns of W are independent a posteriori: stack them, raveled in C order (2, K).
    columns = [linear_gaussian_posterior(X, Y[:, j], 1.0, PRIOR_SD) for j in range(K)]
    mean = np.stack([c[0] for c in columns], axis=1).ravel()
    cov = np.zeros((2 * K, 2 * K))
    for j, (_, column_cov, _) in enumerate(columns):
        index = np.arange(2) * K + j
        cov[np.ix_(index, index)] = column_cov
    point = {"W": W_TRUE + 0.1}
    return model, explicit, point, {"W": (mean, cov, (2, K))}


def ordered_case():
    a, b = Y_MV[:, 1], Z  # means about -1 and 3
    ordered = pm.distributions.transforms.ordered

    def build(first, second):
        with pm.Model() as model:
            mu = pm.Normal("mu", 0, PRIOR_SD, shape=2, transform=ordered, initval=[-1.0, 1.0])
            sigma = pm.HalfNormal("sigma", 2.0, initval=1.3)
            pm.Normal("a", mu[0], 1.5, **first)
            pm.Normal("b", mu[1], 1.0, **second)
            pm.Normal("s", 0.0, sigma, observed=0.5)  # sigma's posterior is exact too
        return model

    model = build(
        {"observed": pm.Minibatch(a, batch_size=B), "total_size": N},
        {"observed": pm.Minibatch(b, batch_size=10), "total_size": M},
    )
    explicit = build({"observed": a}, {"observed": b})
    first_mean, first_cov = gaussian_mean_posterior(a.mean(), N, np.eye(1) / 1.5**2)
    second_mean, second_cov = gaussian_mean_posterior(b.mean(), M, np.eye(1))
    mean = np.concatenate([first_mean, second_mean])
    cov = np.diag([first_cov[0, 0], second_cov[0, 0]])
    point = {"mu_ordered__": np.array([-0.8, np.log(3.5)]), "sigma_log__": np.array(0.2)}
    return model, explicit, point, {"mu": (mean, cov, (2,)), "sigma": None}


def streams_case():
    y = X @ W_TRUE[:, 0] + RNG.normal(size=N)

    def build(data_x, data_y, data_z, **total):
        with pm.Model() as model:
            w = pm.Normal("w", 0, PRIOR_SD, shape=2)
            mu_z = pm.Normal("mu_z", 0, PRIOR_SD)
            pm.Deterministic("fit", data_x @ w)
            pm.Normal("y", data_x @ w, 1.0, observed=data_y, total_size=total.get("y"))
            pm.Normal("z", mu_z, 1.0, observed=data_z, total_size=total.get("z"))
        return model

    x_batch, y_batch = pm.Minibatch(X, y, batch_size=B)
    model = build(x_batch, y_batch, pm.Minibatch(Z, batch_size=10), y=N, z=M)
    explicit = build(X, y, Z)
    w_mean, w_cov, _ = linear_gaussian_posterior(X, y, 1.0, PRIOR_SD)
    z_mean, z_cov = gaussian_mean_posterior(Z.mean(), M, np.eye(1))
    point = {"w": np.array([0.9, 0.4]), "mu_z": np.array(2.8)}
    return model, explicit, point, {"w": (w_mean, w_cov, (2,)), "mu_z": (z_mean, z_cov, ())}


def data_dims_case():
    coords = {"obs": np.arange(N), "feature": ["a", "b"]}
    y = X @ W_TRUE[:, 1] + RNG.normal(size=N)

    def build(batched):
        with pm.Model(coords=coords) as model:
            data_x = pm.Data("X", X, dims=("obs", "feature"))
            data_y = pm.Data("y_data", y, dims="obs")
            if batched:
                data_x, data_y = pm.Minibatch(data_x, data_y, batch_size=B)
            w = pm.Normal("w", 0, PRIOR_SD, dims="feature")
            pm.Normal("y", data_x @ w, 1.0, observed=data_y, total_size=N if batched else None)
        return model

    mean, cov, _ = linear_gaussian_posterior(X, y, 1.0, PRIOR_SD)
    point = {"w": np.array([0.2, 1.1])}
    return build(True), build(False), point, {"w": (mean, cov, (2,))}


CASES = {
    "mvnormal": mvnormal_case,
    "regression_total_size_N": lambda: regression_case(N),
    "regression_total_size_N_None": lambda: regression_case((N, None)),
    "ordered_initval": ordered_case,
    "streams": streams_case,
    "data_dims": data_dims_case,
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return CASES[request.param]()


# ---------------------------------------------------------------------------------- tests


def test_logp_equals_the_explicit_full_data_model(case):
    model, explicit, point, _ = case
    full = full_data_model(model)
    assert full is not model
    assert [v.name for v in full.value_vars] == [v.name for v in explicit.value_vars]
    for shift in (0.0, 0.05):
        moved = {name: value + shift for name, value in point.items()}
        np.testing.assert_allclose(
            full.compile_logp()(moved), explicit.compile_logp()(moved), rtol=1e-10
        )
        np.testing.assert_allclose(
            full.compile_dlogp()(moved), explicit.compile_dlogp()(moved), rtol=1e-10, atol=1e-8
        )
    # Observed variables now have the full data's shape, and the original still batches.
    for rv in explicit.observed_RVs:
        expected = tuple(explicit[rv.name].shape.eval())
        assert tuple(full[rv.name].shape.eval()) == expected
        if expected:  # not the scalar observation of the ordered case
            assert tuple(model[rv.name].shape.eval()) != expected


def test_ksd_of_exact_draws_is_finite_and_small(case):
    model, _, _, posterior = case
    rng = np.random.default_rng(seed_for("exact draws"))
    chains, draws = 2, 200
    exact, wide = {}, {}
    for name, moments in posterior.items():
        if moments is None:  # sigma of the ordered case: prior HalfNormal(2) times N(0.5|0, σ)
            sigma = np.abs(rng.normal(0, 2.0, size=(chains, 20 * draws)))
            weights = np.exp(-0.125 / sigma**2) / sigma
            keep = rng.choice(sigma.size, size=chains * draws, p=(weights / weights.sum()).ravel())
            exact[name] = wide[name] = sigma.ravel()[keep].reshape(chains, draws)
            continue
        mean, cov, shape = moments
        z = rng.multivariate_normal(np.zeros(len(mean)), cov, size=(chains, draws))
        exact[name] = (mean + z).reshape(chains, draws, *shape)
        wide[name] = (mean + 1.5 * z).reshape(chains, draws, *shape)
    exact_ksd = ksd(make_idata(posterior=exact), model)
    wide_ksd = ksd(make_idata(posterior=wide), model)
    assert np.isfinite(exact_ksd.pooled) and np.all(np.isfinite(exact_ksd.per_chain))
    # Seen: exact 0.11-0.18 (the V-statistic's diagonal, about sqrt(2d/n), dominates),
    # 1.5× wide 0.51-0.61. A wrongly scaled likelihood in the score would reject exact draws.
    assert exact_ksd.pooled < 0.3
    assert wide_ksd.pooled > 2 * exact_ksd.pooled


def test_initial_values_are_kept():
    model, explicit, _, _ = ordered_case()
    full = full_data_model(model)
    np.testing.assert_array_equal(full.rvs_to_initial_values[full["mu"]], [-1.0, 1.0])
    np.testing.assert_array_equal(full.rvs_to_initial_values[full["sigma"]], 1.3)
    expected = explicit.initial_point()
    for name, value in full.initial_point().items():
        np.testing.assert_allclose(value, expected[name])
    # The original model keeps its own initial values.
    np.testing.assert_array_equal(model.rvs_to_initial_values[model["mu"]], [-1.0, 1.0])
    # select_step_size's default grid starts from the full-data model's initial point.
    assert np.isfinite(_largest_curvature(full))


def test_select_step_size_runs_on_a_model_with_initial_values():
    model, *_ = ordered_case()
    selection = sgmc.select_step_size(
        model, step_sizes=[1e-4, 1e-3], draws=50, tune=20, random_seed=seed_for("select")
    )
    assert selection.step_size in (1e-4, 1e-3)
    assert np.all(np.isfinite(selection.table["ksd"]))


def test_dims_coords_and_data_are_kept():
    model, *_ = data_dims_case()
    full = full_data_model(model)
    assert full.coords["feature"] == ("a", "b")
    assert len(full.coords["obs"]) == N
    assert tuple(full.named_vars_to_dims["w"]) == ("feature",)
    assert {var.name for var in full.data_vars} == {"X", "y_data"}
    np.testing.assert_array_equal(full["X"].get_value(), X)


def test_model_without_minibatch_is_returned_as_is():
    _, explicit, _, _ = mvnormal_case()
    assert full_data_model(explicit) is explicit


@pytest.fixture(scope="module")
def potential_model():
    data = Z
    with pm.Model() as model:
        mu = pm.Normal("mu", 0, PRIOR_SD)
        batch = pm.Minibatch(data, batch_size=B)
        pm.Potential("lik", (M / B) * pm.logp(pm.Normal.dist(mu, 1), batch).sum())
    return model


def test_minibatch_potential_is_refused(potential_model):
    idata = make_idata(posterior={"mu": np.full((2, 10), 3.0)})
    with pytest.raises(ValueError, match="Potential 'lik'.*total_size"):
        full_data_model(potential_model)
    with pytest.raises(ValueError, match="Potential"):
        ksd(idata, potential_model)
    with pytest.raises(ValueError, match="Potential"):
        sgmc.select_step_size(potential_model, step_sizes=[1e-3], draws=10, tune=0)


def test_minibatched_free_variable_is_refused():
    with pm.Model() as model:
        pm.Normal("latent", pm.Minibatch(Z, batch_size=B))
    with pytest.raises(ValueError, match="Free variable 'latent'"):
        full_data_model(model)
