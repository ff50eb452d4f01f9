"""Step-size selection by KSD, and the bias-variance rule for other budgets.

On ``x ~ N(0, diag(1, 1.5²))`` with exact gradients SGLD's stationary variance is
``σ² / (1 − η/(2σ²))`` and a chain needs about ``σ²/η`` steps to forget its start: with
1500 steps per chain, ``η = 10⁻⁴`` barely moves (KSD seen 0.41-0.63), ``η ≈ 0.1-0.3``
mixes with a small bias (0.10-0.13), ``η = 1`` doubles the variance of the first
coordinate (0.28-0.32) and ``η = 1.9`` twentyfold (4.7-6.6), over four seeds.
"""

import numpy as np
import pandas as pd
import pymc as pm
import pytest

from helpers import seed_for

import pymc_sgmcmc as sgmc

from pymc_sgmcmc.tuning import _default_grid, _largest_curvature

RUN = {"draws": 300, "tune": 100, "steps_per_draw": 5}


@pytest.fixture(scope="module")
def gaussian():
    with pm.Model() as model:
        pm.Normal("x", 0, np.array([1.0, 1.5]), shape=2)
    return model


@pytest.fixture(scope="module")
def selection(gaussian):
    return sgmc.select_step_size(
        gaussian,
        step_sizes=[1e-4, 1e-2, 0.2, 1.0, 1.9, 10.0],
        random_seed=seed_for("select"),
        **RUN,
    )


def test_chooses_a_step_size_in_the_good_range(selection):
    assert isinstance(selection, sgmc.StepSizeSelection)
    assert 0.05 <= selection.step_size <= 0.5
    table = selection.table.set_index("step_size")
    best = table.loc[selection.step_size, "ksd"]
    assert best == table["ksd"].min()
    # Too small (stuck near the start) and too large (over-dispersed) both score high.
    assert table.loc[1e-4, "ksd"] > 3 * best
    assert table.loc[1.9, "ksd"] > 3 * best
    assert table.loc[1.0, "ksd"] > 1.5 * best


def test_table_records_every_run(selection):
    table = selection.table
    assert isinstance(table, pd.DataFrame)
    assert list(table["step_size"]) == [1e-4, 1e-2, 0.2, 1.0, 1.9, 10.0]
    assert set(table.columns) >= {"round", "step_size", "draws", "ksd", "noise_ratio", "diverged"}
    assert (table["draws"] == RUN["draws"]).all() and (table["round"] == 0).all()
    # η = 10 > 2/λ: the exact-gradient chain grows like 9^k and stops with a divergence.
    diverged = table.set_index("step_size").loc[10.0]
    assert diverged["diverged"] and diverged["ksd"] == np.inf
    finite = table[~table["diverged"]]
    assert np.all(np.isfinite(finite["ksd"])) and (finite["noise_ratio"] == 0).all()
    assert selection.sampler == "SGLD"
    assert selection.steps_per_chain == RUN["draws"] * RUN["steps_per_draw"]


def test_successive_halving_keeps_the_better_half(gaussian):
    selection = sgmc.select_step_size(
        gaussian,
        step_sizes=[1e-4, 0.03, 0.2, 1.9],
        rounds=2,
        random_seed=seed_for("select"),
        **RUN,
    )
    first, second = (selection.table[selection.table["round"] == r] for r in (0, 1))
    assert len(first) == 4 and len(second) == 2
    kept = first.nsmallest(2, "ksd")["step_size"]
    assert sorted(second["step_size"]) == sorted(kept)
    assert (second["draws"] == 2 * RUN["draws"]).all()
    assert selection.step_size == second.loc[second["ksd"].idxmin(), "step_size"]
    assert selection.steps_per_chain == 2 * RUN["draws"] * RUN["steps_per_draw"]


def test_default_grid_comes_from_the_curvature(gaussian):
    # Largest curvature 1/σ² = 1: SGLD's grid runs from 1 down four decades, SGHMC's
    # (h, with η = h²) two.
    np.testing.assert_allclose(
        _default_grid(gaussian, sgmc.SGLD, {}), np.logspace(-4, 0, 9), rtol=1e-6
    )
    np.testing.assert_allclose(
        _default_grid(gaussian, sgmc.SGHMC, {"mass": 4.0}), 2 * np.logspace(-2, 0, 9), rtol=1e-6
    )
    # End to end, with SGHMC's friction set per candidate (Γ = 0.1 M / h).
    selection = sgmc.select_step_size(
        gaussian, sampler="SGHMC", draws=50, tune=10, steps_per_draw=2, random_seed=1
    )
    np.testing.assert_allclose(selection.table["step_size"], np.logspace(-2, 0, 9), rtol=1e-6)
    assert selection.sampler == "SGHMC" and not selection.table["diverged"].any()


def test_curvature_is_the_largest_hessian_eigenvalue():
    rng = np.random.default_rng(seed_for("curvature"))
    X = rng.normal(size=(200, 3)) * np.array([1.0, 2.0, 0.5])
    with pm.Model() as model:
        w = pm.Normal("w", 0, 1, shape=3)
        pm.Bernoulli("y", logit_p=X @ w, observed=rng.integers(0, 2, size=200))
    # At w = 0 every p(1 − p) is 1/4: the negative Hessian is XᵀX/4 + I.
    expected = np.linalg.eigvalsh(X.T @ X / 4 + np.eye(3)).max()
    assert _largest_curvature(model) == pytest.approx(expected, rel=1e-3)


def test_select_errors(gaussian):
    with pytest.raises(ValueError, match="`sampler`"):
        sgmc.select_step_size(gaussian, sampler="NUTS", step_sizes=[0.1])
    with pytest.raises(ValueError, match="step_sizes"):
        sgmc.select_step_size(gaussian, step_sizes=[0.1], sampler_kwargs={"step_size": 0.1})
    with pytest.raises(ValueError, match="positive and finite"):
        sgmc.select_step_size(gaussian, step_sizes=[0.1, -1.0])
    with pytest.raises(ValueError, match="rounds"):
        sgmc.select_step_size(gaussian, step_sizes=[0.1], rounds=0)
    with pytest.raises(RuntimeError, match="Every candidate"):
        sgmc.select_step_size(gaussian, step_sizes=[10.0], **RUN)


def test_budget_rule_is_the_cube_root():
    assert sgmc.scale_step_size_for_budget(0.01, steps_from=1000, steps_to=8000) == (
        pytest.approx(0.005, rel=1e-12)
    )
    assert sgmc.scale_step_size_for_budget(0.01, steps_from=8000, steps_to=1000) == (
        pytest.approx(0.02, rel=1e-12)
    )
    assert sgmc.scale_step_size_for_budget(0.3, steps_from=500, steps_to=500) == 0.3
    with pytest.raises(ValueError, match="steps_to"):
        sgmc.scale_step_size_for_budget(0.1, steps_from=10, steps_to=0)
    with pytest.raises(ValueError, match="step_size"):
        sgmc.scale_step_size_for_budget(-0.1, steps_from=10, steps_to=10)


def test_for_budget_scales_from_the_selection_budget(selection):
    steps = 27 * selection.steps_per_chain
    assert selection.for_budget(steps) == pytest.approx(selection.step_size / 3, rel=1e-12)


def test_default_grids_of_sgnht_and_psgld(gaussian):
    # Both step sizes are lengths on the posterior's scale: from sqrt(1/λ) = 1 down.
    np.testing.assert_allclose(
        _default_grid(gaussian, sgmc.SGNHT, {}), np.logspace(-2, 0, 9), rtol=1e-6
    )
    np.testing.assert_allclose(
        _default_grid(gaussian, sgmc.pSGLD, {}), np.logspace(-3, 0, 9), rtol=1e-6
    )
    np.testing.assert_allclose(
        _default_grid(gaussian, sgmc.SGLD, {"preconditioner": sgmc.RMSprop()}),
        np.logspace(-3, 0, 9),
        rtol=1e-6,
    )


@pytest.mark.parametrize("sampler", ["SGNHT", "pSGLD"])
def test_selects_for_the_new_samplers(gaussian, sampler):
    selection = sgmc.select_step_size(
        gaussian, sampler=sampler, draws=100, tune=30, steps_per_draw=5, random_seed=2
    )
    assert selection.sampler == sampler
    assert np.isfinite(selection.table["ksd"]).any()
    # A chain that barely moves is not chosen: the smallest step loses.
    assert selection.step_size > selection.table["step_size"].min()
