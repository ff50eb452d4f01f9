"""Kernel Stein discrepancy: exact algebra, Gaussian behaviour, PyMC models, storage."""

import warnings

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
import xarray as xr

from helpers import make_idata, minibatch_mean_model, saved_and_loaded, seed_for

from pymc_sgmcmc import _vectorize
from pymc_sgmcmc.diagnostics import (
    KernelSteinDiscrepancy,
    KSDResult,
    add_ksd_to_idata,
    imq_stein_kernel_matrix,
    kernel_stein_discrepancy,
    ksd,
)
from pymc_sgmcmc.diagnostics.stein import stein_kernel_sums, v_statistic_discrepancy
from pymc_sgmcmc.gradients.full_data import FullDataLogPosterior
from pymc_sgmcmc.gradients.minibatch import MinibatchLogPosterior


def standardized(x, b):
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / sd, b * sd


# ---------------------------------------------------------------- reference implementation


def imq(x, y, c, beta):
    return (c**2 + np.sum((x - y) ** 2, axis=-1)) ** beta


def reference_stein_matrix(x, y, bx, by, c, beta):
    """k_0 by full broadcasting, with the mixed second derivative as a Hessian trace.

    d/dx k = 2β s^(β−1) r; d/dy k = −d/dx k; the mixed Hessian ∂²k/∂x∂yᵀ is
    −2β s^(β−1) I − 4β(β−1) s^(β−2) r rᵀ, and ∇x·∇y k is its trace.
    """
    r = x[:, None, :] - y[None, :, :]
    s = c**2 + np.sum(r**2, axis=-1)
    k = s**beta
    grad_x = 2 * beta * s[..., None] ** (beta - 1) * r
    grad_y = -grad_x
    d = x.shape[1]
    hessian = -2 * beta * s[..., None, None] ** (beta - 1) * np.eye(d) - 4 * beta * (beta - 1) * s[
        ..., None, None
    ] ** (beta - 2) * (r[..., :, None] * r[..., None, :])
    trace = np.trace(hessian, axis1=-2, axis2=-1)
    return (
        np.einsum("id,jd->ij", bx, by) * k
        + np.einsum("id,ijd->ij", bx, grad_y)
        + np.einsum("jd,ijd->ij", by, grad_x)
        + trace
    )


@pytest.mark.parametrize("beta", [-0.5, -0.25])
@pytest.mark.parametrize("c", [0.3, 1.0, 2.5])
def test_blocked_ksd_equals_direct_reference(c, beta):
    rng = np.random.default_rng(seed_for(f"reference{c}{beta}"))
    x = rng.normal(size=(37, 3)) * np.array([1.0, 0.2, 3.0]) + 2.0
    b = rng.normal(size=(37, 3))
    expected_matrix = reference_stein_matrix(x, x, b, b, c, beta)
    expected = np.sqrt(expected_matrix.mean())
    for block_size in (1, 5, 36, 37, 100):
        value = kernel_stein_discrepancy(x, b, c=c, beta=beta, block_size=block_size)
        assert value == pytest.approx(expected, rel=1e-10, abs=0)
    y, by = rng.normal(size=(11, 3)), rng.normal(size=(11, 3))
    np.testing.assert_allclose(
        imq_stein_kernel_matrix(x, y, b, by, c=c, beta=beta),
        reference_stein_matrix(x, y, b, by, c, beta),
        rtol=1e-10,
        atol=1e-12,
    )


def test_group_sums_are_the_sums_of_the_diagonal_blocks():
    rng = np.random.default_rng(seed_for("group sums"))
    x, b = rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    sizes = [7, 13, 10]
    matrix = reference_stein_matrix(x, x, b, b, 1.0, -0.5)
    bounds = np.cumsum([0, *sizes])
    for block_size in (1, 4, 30):
        total, group_sums = stein_kernel_sums(x, b, sizes, block_size=block_size)
        assert total == pytest.approx(matrix.sum(), rel=1e-10)
        expected = [
            matrix[low:high, low:high].sum()
            for low, high in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        np.testing.assert_allclose(group_sums, expected, rtol=1e-10)
    assert v_statistic_discrepancy(total, 30) == pytest.approx(kernel_stein_discrepancy(x, b))
    with pytest.raises(ValueError, match="group_sizes"):
        stein_kernel_sums(x, b, [7, 13])


def test_stein_kernel_signs_match_finite_differences():
    """k_0 = Σ_j (∂/∂x_j + b_j(x)) (∂/∂y_j + b_j(y)) k, derivatives by central differences."""
    rng = np.random.default_rng(seed_for("finite differences"))
    d, c, beta, h = 3, 0.7, -0.5, 1e-4
    x, y, bx, by = (rng.normal(size=d) for _ in range(4))
    eye = np.eye(d)
    value = imq(x, y, c, beta)
    grad_x = np.array(
        [(imq(x + h * e, y, c, beta) - imq(x - h * e, y, c, beta)) / (2 * h) for e in eye]
    )
    grad_y = np.array(
        [(imq(x, y + h * e, c, beta) - imq(x, y - h * e, c, beta)) / (2 * h) for e in eye]
    )
    mixed = sum(
        (
            imq(x + h * e, y + h * e, c, beta)
            - imq(x + h * e, y - h * e, c, beta)
            - imq(x - h * e, y + h * e, c, beta)
            + imq(x - h * e, y - h * e, c, beta)
        )
        / (4 * h**2)
        for e in eye
    )
    expected = bx @ by * value + bx @ grad_y + by @ grad_x + mixed
    got = imq_stein_kernel_matrix(x[None], y[None], bx[None], by[None], c=c, beta=beta)[0, 0]
    assert got == pytest.approx(expected, rel=1e-6)


def test_stein_kernel_diagonal_closed_form():
    # k_0(x, x) = ‖b‖² c^(2β) − 2βd c^(2β−2)
    rng = np.random.default_rng(seed_for("diagonal"))
    x, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    c, beta = 1.7, -0.5
    diagonal = np.diag(imq_stein_kernel_matrix(x, x, b, b, c=c, beta=beta))
    expected = np.sum(b**2, axis=1) * c ** (2 * beta) - 2 * beta * 4 * c ** (2 * beta - 2)
    np.testing.assert_allclose(diagonal, expected, rtol=1e-12)


def test_numpy_core_rejects_bad_input():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="same shape"):
        kernel_stein_discrepancy(x, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        kernel_stein_discrepancy(np.full((4, 2), np.nan), x)
    with pytest.raises(ValueError, match="`c`"):
        kernel_stein_discrepancy(x, x, c=0.0)
    with pytest.raises(ValueError, match="`beta`"):
        kernel_stein_discrepancy(x, x, beta=0.5)
    with pytest.raises(ValueError, match="block_size"):
        kernel_stein_discrepancy(x, x, block_size=0)


# ---------------------------------------------------------------- Gaussian targets, NumPy


def gaussian(seed, d=3, variance_scale=1.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    covariance = (a @ a.T / d + 0.5 * np.eye(d)) * variance_scale
    return rng, rng.normal(size=d), np.linalg.cholesky(covariance), np.linalg.inv(covariance)


def gaussian_draws(rng, mean, chol, precision, n, width=1.0):
    x = mean + width * rng.normal(size=(n, mean.size)) @ chol.T
    return x, -(x - mean) @ precision.T


def test_exact_gaussian_draws_shrink_like_one_over_sqrt_n():
    rng, mean, chol, precision = gaussian(seed_for("shrink"))
    small = gaussian_draws(rng, mean, chol, precision, 200)
    large = gaussian_draws(rng, mean, chol, precision, 2000)
    for transform in (lambda x, b: (x, b), standardized):
        ksd_small = kernel_stein_discrepancy(*transform(*small))
        ksd_large = kernel_stein_discrepancy(*transform(*large))
        # Seen (both forms, 10 seeds): n=200 median 0.18, n=2000 median 0.06 (1/sqrt(10) = 0.32).
        assert ksd_large < 0.1
        assert ksd_large < 0.5 * ksd_small


@pytest.mark.parametrize("variance_scale", [1.0, 1e-4])
def test_too_wide_draws_score_higher_when_standardized(variance_scale):
    """1.5× too-wide draws of N(μ, Σ): standardised KSD is ~7× that of exact draws.

    Medians over 10 seeds, d=3, n=1000 (exact → 1.5× wide):
    - Σ of order 1:          raw 0.078 → 0.30,  standardised 0.080 → 0.54;
    - Σ × 1e-4 (sd ≈ 0.01):  raw 5.2 → 6.3 (ranges 0.9–11 and 3.0–14 overlap: the raw form
      only sees the noisy mean score), standardised unchanged, 0.080 → 0.54.
    Hence ``standardize=True`` is the default of ``ksd``.
    """
    rng, mean, chol, precision = gaussian(seed_for("wide"), variance_scale=variance_scale)
    exact = kernel_stein_discrepancy(
        *standardized(*gaussian_draws(rng, mean, chol, precision, 1000))
    )
    wide = kernel_stein_discrepancy(
        *standardized(*gaussian_draws(rng, mean, chol, precision, 1000, width=1.5))
    )
    assert exact < 0.15
    assert wide > 3 * exact


# ---------------------------------------------------------------- PyMC models

N, BATCH, PRIOR_SD = 2000, 100, 10.0


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(seed_for("data")).normal(0.7, 1.3, size=N)


@pytest.fixture(scope="module")
def mean_model(data):
    """y_i ~ N(mu, 1) through pm.Minibatch; conjugate, posterior known exactly."""
    return minibatch_mean_model(data, batch_size=BATCH, prior_sd=PRIOR_SD)


def mean_posterior(data):
    precision = N + 1 / PRIOR_SD**2
    return data.sum() / precision, precision**-0.5


def test_ksd_of_minibatch_model_separates_exact_from_wide_draws(data, mean_model):
    rng = np.random.default_rng(seed_for("pymc exact"))
    mean, sd = mean_posterior(data)
    z = rng.normal(size=(4, 250))
    exact = ksd(make_idata(posterior={"mu": mean + sd * z}), mean_model)
    wide = ksd(make_idata(posterior={"mu": mean + 1.5 * sd * z}), mean_model)
    assert isinstance(exact, KSDResult)
    assert exact.per_chain.shape == (4,) and exact.draws_per_chain == 250
    assert exact.var_names == ("mu",) and exact.standardize
    # Seen: exact 0.064 (per chain 0.07–0.11), 1.5× wide 0.47 (per chain 0.47–0.50).
    # Raw form (standardize=False, posterior sd 0.022): 1.45 vs 2.49, per chain 0.43–4.4.
    assert exact.pooled < 0.1
    assert wide.pooled > 3 * exact.pooled
    assert np.all(wide.per_chain > 2 * exact.per_chain)
    # Pooled draws of 4 chains are 4× as many as one chain's.
    assert exact.pooled < np.median(exact.per_chain)


def test_full_data_score_of_minibatch_model(data, mean_model):
    """The score is the full-data gradient: Minibatch replaced, total_size scaling N/N."""
    mean, _ = mean_posterior(data)
    positions = np.array([[mean - 0.05], [mean], [mean + 0.02]])
    scores = KernelSteinDiscrepancy(mean_model).scores(positions, chunk_size=2)
    precision = N + 1 / PRIOR_SD**2
    np.testing.assert_allclose(
        scores[:, 0], -precision * (positions[:, 0] - mean), rtol=1e-9, atol=1e-9
    )


def test_many_position_gradients_equal_one_position_passes(data, mean_model):
    """``FullDataLogPosterior.gradients`` (vectorised over positions) on a minibatch model,
    in chunks of rows, equals a loop of ``gradient``."""
    full_data = FullDataLogPosterior(
        MinibatchLogPosterior(mean_model, mean_model.value_vars), chunk_size=3 * BATCH
    )
    positions = np.linspace(0.5, 0.9, 7)[:, None]
    expected = np.stack([full_data.gradient(position) for position in positions])
    for per_call in (1, 3, 16):
        np.testing.assert_allclose(
            full_data.gradients(positions, positions_per_call=per_call), expected, rtol=1e-12
        )
    with pytest.raises(ValueError, match="positions"):
        full_data.gradients(positions.ravel())


@pytest.fixture(scope="module")
def scale_model(data):
    """mu, sigma ~ HalfNormal (transformed: sigma_log__) with y_i ~ N(mu, sigma)."""
    with pm.Model() as model:
        y_batch = pm.Minibatch(data, batch_size=BATCH)
        mu = pm.Normal("mu", 0, PRIOR_SD)
        sigma = pm.HalfNormal("sigma", 5.0)
        pm.Normal("y", mu, sigma, observed=y_batch, total_size=N)
    return model


def test_score_on_unconstrained_space_matches_finite_differences(data, scale_model):
    with pm.Model() as full_data_model:
        mu = pm.Normal("mu", 0, PRIOR_SD)
        sigma = pm.HalfNormal("sigma", 5.0)
        pm.Normal("y", mu, sigma, observed=data)
    logp = full_data_model.compile_logp()  # Jacobian included, on the unconstrained space
    discrepancy = KernelSteinDiscrepancy(scale_model)
    names = list(discrepancy.value_names)
    assert names == ["mu", "sigma_log__"]
    theta = np.array([0.71, np.log(1.28)])
    score = discrepancy.scores(theta[None], chunk_size=1)[0]
    h = 1e-5
    expected = [
        (
            logp(dict(zip(names, theta + h * e, strict=True)))
            - logp(dict(zip(names, theta - h * e, strict=True)))
        )
        / (2 * h)
        for e in np.eye(2)
    ]
    np.testing.assert_allclose(score, expected, rtol=1e-6)


@pytest.mark.parametrize("vectorizable", [True, False])
def test_vectorized_function_over_a_leading_axis(monkeypatch, vectorizable):
    """One call per batch; an output that ignores the batched input is repeated; where
    PyTensor cannot vectorise, a loop over the batch gives the same."""
    if not vectorizable:

        def refuse(*args, **kwargs):
            raise NotImplementedError

        monkeypatch.setattr(_vectorize, "vectorize_graph", refuse)
    x, a = pt.vector("x"), pt.scalar("a")
    outputs = [pt.exp(x) * a, 2.0 * a]
    function = _vectorize.vectorized_function([x, a], outputs, [x], pytensor.function)
    batch = np.arange(6.0).reshape(3, 2)
    scaled, constant = function(batch, 3.0)
    np.testing.assert_allclose(scaled, 3.0 * np.exp(batch))
    np.testing.assert_allclose(constant, [6.0, 6.0, 6.0])


def test_ksd_with_transformed_variable(data, scale_model):
    """Near-exact draws from the (at N=2000 Gaussian) posterior in (mu, log sigma)."""
    rng = np.random.default_rng(seed_for("pymc transformed"))
    sigma_hat = data.std()
    mean = np.array([data.mean(), np.log(sigma_hat)])
    sd = np.array([sigma_hat / np.sqrt(N), 1 / np.sqrt(2 * N)])
    z = rng.normal(size=(2, 500, 2))

    def idata_for(width):
        theta = mean + width * sd * z
        return make_idata(posterior={"mu": theta[..., 0], "sigma": np.exp(theta[..., 1])})

    exact = ksd(idata_for(1.0), scale_model)
    wide = ksd(idata_for(1.5), scale_model)
    # Seen: exact 0.080, 1.5× wide 0.45 (raw form: 3.4 vs 6.2); sigma alone: 0.073 vs 0.34.
    assert exact.pooled < 0.12
    assert wide.pooled > 3 * exact.pooled
    only_sigma = ksd(idata_for(1.5), scale_model, var_names=["sigma"])
    assert only_sigma.var_names == ("sigma",)
    assert only_sigma.pooled > 3 * exact.pooled


def test_forward_transforms_invert_pymc_backward_transforms():
    with pm.Model() as model:
        a = pm.HalfNormal("a", 1.0)
        pm.Uniform("b", 0.0, a, shape=3)  # interval bounds depend on another variable
        pm.Dirichlet("d", np.ones(3))
    discrepancy = KernelSteinDiscrepancy(model)
    assert discrepancy.var_names == ("a", "b", "d")
    backward = pytensor.function(model.value_vars, model.replace_rvs_by_values(model.free_RVs))
    rng = np.random.default_rng(seed_for("transforms"))
    shapes = model.eval_rv_shapes()
    unconstrained = [rng.normal(size=(6, *shapes[name])) for name in discrepancy.value_names]
    per_draw = [backward(*(u[i] for u in unconstrained)) for i in range(6)]
    constrained = {name: np.stack([draw[k] for draw in per_draw]) for k, name in enumerate("abd")}
    recovered = discrepancy.unconstrained_positions(constrained)
    expected = np.concatenate([u.reshape(6, -1) for u in unconstrained], axis=1)
    np.testing.assert_allclose(recovered, expected, rtol=1e-8, atol=1e-10)


def test_thin_and_max_draws(data, mean_model):
    rng = np.random.default_rng(seed_for("thin"))
    mean, sd = mean_posterior(data)
    idata = make_idata(posterior={"mu": mean + sd * rng.normal(size=(2, 300))})
    thinned = ksd(idata, mean_model, thin=3)
    assert thinned.draws_per_chain == 100
    first = ksd(idata, mean_model, max_draws=50, random_seed=5)
    again = ksd(idata, mean_model, max_draws=50, random_seed=5)
    assert first.draws_per_chain == 50
    assert first.pooled == again.pooled
    np.testing.assert_array_equal(first.per_chain, again.per_chain)
    raw = ksd(idata, mean_model, standardize=False)
    assert not raw.standardize and raw.pooled > 0
    posterior = idata["posterior"]
    posterior = posterior if isinstance(posterior, xr.Dataset) else posterior.to_dataset()
    assert ksd(posterior, mean_model).pooled == pytest.approx(ksd(idata, mean_model).pooled)
    assert ksd(idata, mean_model, chunk_size=1).pooled == pytest.approx(
        ksd(idata, mean_model, chunk_size=7).pooled, rel=1e-12
    )


def test_one_instance_scores_many_traces_as_ksd_does(data, mean_model):
    rng = np.random.default_rng(seed_for("instance"))
    mean, sd = mean_posterior(data)
    discrepancy = KernelSteinDiscrepancy(mean_model)
    for width in (1.0, 1.5):
        idata = make_idata(posterior={"mu": mean + width * sd * rng.normal(size=(2, 100))})
        reused, fresh = discrepancy(idata, thin=2), ksd(idata, mean_model, thin=2)
        assert reused.pooled == fresh.pooled
        np.testing.assert_array_equal(reused.per_chain, fresh.per_chain)


def test_ksd_of_a_model_without_minibatch_does_not_warn(data):
    """A full-data model (a NUTS trace), one with total_size on a fixed subset of rows (the
    samplers warn of it, KSD keeps its scaling), and a deterministic of the data."""
    rng = np.random.default_rng(seed_for("no minibatch"))
    subset = data[:500]
    with pm.Model() as model:
        mu = pm.Normal("mu", 0, PRIOR_SD)
        pm.Normal("y", mu, 1.0, observed=data)
        pm.Normal("y_subset", mu, 1.0, observed=subset, total_size=N)
        pm.Deterministic("centred", mu - subset.mean())
    precision = N + N + 1 / PRIOR_SD**2
    mean = (data.sum() + subset.sum() * N / subset.size) / precision
    draws = mean + precision**-0.5 * rng.normal(size=(2, 300))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ksd(make_idata(posterior={"mu": draws}), model)
        scores = KernelSteinDiscrepancy(model).scores(np.array([[mean + 0.01]]))
    assert result.pooled < 0.15
    np.testing.assert_allclose(scores[0, 0], -precision * 0.01, rtol=1e-8)


def test_ksd_refuses_a_potential_on_a_minibatch(data):
    with pm.Model() as model:
        batch = pm.Minibatch(data, batch_size=BATCH)
        mu = pm.Normal("mu", 0, PRIOR_SD)
        pm.Potential("likelihood", pm.logp(pm.Normal.dist(mu, 1.0), batch).sum())
    with pytest.raises(ValueError, match="Potential 'likelihood' uses pm.Minibatch"):
        ksd(make_idata(posterior={"mu": np.zeros((2, 10))}), model)


def test_ksd_errors(data, mean_model):
    idata = make_idata(posterior={"nu": np.zeros((2, 10))})
    with pytest.raises(ValueError, match="lacks"):
        ksd(idata, mean_model)
    idata = make_idata(posterior={"mu": np.zeros((2, 10))})
    with pytest.raises(ValueError, match="not free variables"):
        ksd(idata, mean_model, var_names=["nu"])
    with pytest.raises(ValueError, match="thin"):
        ksd(idata, mean_model, thin=0)
    with pytest.raises(ValueError, match="contain non-finite values"):
        ksd(make_idata(posterior={"mu": np.full((2, 10), np.nan)}), mean_model)
    # A finite draw whose full-data score overflows: N · 1e306 = inf.
    with pytest.raises(ValueError, match="non-finite gradient"):
        ksd(make_idata(posterior={"mu": np.full((2, 10), 1e306)}), mean_model)
    with pm.Model() as discrete:
        pm.Poisson("k", 3.0)
    with pytest.raises(ValueError, match="discrete"):
        ksd(make_idata(posterior={"k": np.ones((2, 10))}), discrete)


# ---------------------------------------------------------------- storage in the trace


@pytest.mark.parametrize("with_sample_stats", [True, False])
def test_add_ksd_to_idata_round_trip(tmp_path, with_sample_stats):
    rng = np.random.default_rng(seed_for("round trip"))
    groups = {"posterior": {"mu": rng.normal(size=(3, 20))}}
    if with_sample_stats:
        groups["sample_stats"] = {"lp": rng.normal(size=(3, 20))}
    idata = make_idata(**groups)
    result = KSDResult(
        pooled=0.125,
        per_chain=np.array([0.5, 0.25, 0.75]),
        draws_per_chain=20,
        c=1.0,
        beta=-0.5,
        standardize=True,
        var_names=("mu",),
    )
    assert add_ksd_to_idata(idata, result) is idata
    group = "sample_stats" if with_sample_stats else "posterior"
    for trace in (idata, saved_and_loaded(idata, tmp_path)):
        attrs = trace[group].attrs
        assert float(attrs["ksd"]) == 0.125
        np.testing.assert_array_equal(np.asarray(attrs["ksd_per_chain"]), [0.5, 0.25, 0.75])
        assert int(attrs["ksd_draws_per_chain"]) == 20
        assert int(attrs["ksd_standardize"]) == 1
        assert list(np.atleast_1d(attrs["ksd_var_names"])) == ["mu"]
    with pytest.raises(ValueError, match="no group"):
        add_ksd_to_idata(idata, result, group="prior")
