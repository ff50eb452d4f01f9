"""The diagnostic plots draw what they say (Agg backend, no display)."""

import matplotlib
import numpy as np
import pandas as pd
import pytest

from helpers import make_idata

import pymc_sgmcmc as sgmc

from pymc_sgmcmc.diagnostics import plot_ksd_by_step_size, plot_noise_ratio

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_noise_ratio_draws_one_line_per_chain():
    ratio = np.random.default_rng(1).uniform(0, 2, size=(3, 50))
    idata = make_idata(posterior={"mu": np.zeros((3, 50))}, sample_stats={"noise_ratio": ratio})
    ax = plot_noise_ratio(idata)
    chain_lines = [line for line in ax.get_lines() if line.get_label().startswith("chain")]
    assert len(chain_lines) == 3
    for chain, line in enumerate(chain_lines):
        np.testing.assert_array_equal(line.get_ydata(), ratio[chain])
        np.testing.assert_array_equal(line.get_xdata(), np.arange(50))
    # The reference line where minibatch noise equals injected noise.
    assert any(np.all(np.asarray(line.get_ydata()) == 1.0) for line in ax.get_lines()[3:])
    _, given = plt.subplots()
    assert plot_noise_ratio(idata, ax=given) is given


def test_ksd_by_step_size_draws_rounds_divergences_and_the_choice():
    table = pd.DataFrame(
        {
            "round": [0, 0, 0, 0, 1, 1],
            "step_size": [1e-3, 1e-2, 1e-1, 1.0, 1e-2, 1e-1],
            "draws": [100, 100, 100, 100, 200, 200],
            "ksd": [0.8, 0.2, 0.3, np.inf, 0.15, 0.25],
            "diverged": [False, False, False, True, False, False],
        }
    )
    selection = sgmc.StepSizeSelection(
        step_size=1e-2, table=table, sampler="SGLD", steps_per_chain=200
    )
    _, given = plt.subplots()
    ax = plot_ksd_by_step_size(selection, ax=given)
    assert ax is given
    rounds = [line for line in ax.get_lines() if line.get_label().startswith("round")]
    assert len(rounds) == 2
    np.testing.assert_array_equal(rounds[0].get_xdata(), [1e-3, 1e-2, 1e-1])
    np.testing.assert_array_equal(rounds[0].get_ydata(), [0.8, 0.2, 0.3])
    np.testing.assert_array_equal(rounds[1].get_ydata(), [0.15, 0.25])
    [chosen] = [line for line in ax.get_lines() if line.get_label().startswith("chosen")]
    assert np.all(np.asarray(chosen.get_xdata()) == 1e-2)
    [diverged] = ax.collections
    assert diverged.get_offsets()[0][0] == 1.0
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    # The table alone works too (no chosen line then).
    bare = plot_ksd_by_step_size(table)
    assert not [line for line in bare.get_lines() if line.get_label().startswith("chosen")]
