"""Bad input gets a clear error before sampling; a diverging chain stops with one."""

import numpy as np
import pymc as pm
import pytest

import pymc_sgmcmc as sgmc

from pymc_sgmcmc import schedules


@pytest.fixture
def model():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 2))
    y = X @ np.array([1.0, 2.0]) + rng.normal(size=100)
    with pm.Model() as model:
        X_batch, y_batch = pm.Minibatch(X, y, batch_size=10)
        w = pm.Normal("w", 0, 1, shape=2)
        pm.Normal("y", X_batch @ w, 1.0, observed=y_batch, total_size=100)
    return model


def sghmc(**kwargs):
    return sgmc.SGHMC(**{"step_size": 0.01, "friction": 1.0, **kwargs})


@pytest.mark.parametrize("step_size", [0.0, -1e-3, np.inf, np.nan])
@pytest.mark.parametrize("make", [lambda **kw: sgmc.SGLD(**kw), sghmc])
def test_step_size_must_be_positive_and_finite(model, make, step_size):
    with model, pytest.raises(ValueError, match="positive and finite"):
        make(step_size=step_size)


def test_schedule_parameters_are_checked(model):
    with model, pytest.raises(ValueError, match="gamma"):
        sgmc.SGLD(step_size=schedules.polynomial(0.1, gamma=0.4))
    with model, pytest.raises(ValueError, match="at step 0"):
        sgmc.SGLD(step_size=lambda k: 0.0)


@pytest.mark.parametrize("temperature", [-0.1, np.nan, np.inf])
def test_temperature_must_be_finite_and_non_negative(model, temperature):
    with model, pytest.raises(ValueError, match="temperature"):
        sgmc.SGLD(step_size=0.1, temperature=temperature)


@pytest.mark.parametrize("name", ["friction", "mass"])
@pytest.mark.parametrize("value", [0.0, -1.0, np.nan, np.inf, np.array([1.0, -1.0])])
def test_friction_and_mass_must_be_positive_and_finite(model, name, value):
    with model, pytest.raises(ValueError, match=f"`{name}` must be positive and finite"):
        sghmc(**{name: value})


def test_per_coordinate_arrays_must_match_the_parameters(model):
    with model, pytest.raises(ValueError, match=r"one entry per raveled parameter \(2\)"):
        sghmc(friction=np.ones(3))
    with model:
        sghmc(friction=np.array([1.0, 2.0]), mass=np.array([0.5, 1.0]))


def test_friction_below_gradient_noise_names_the_smallest_valid_friction(model):
    with model, pytest.raises(ValueError, match=r"Use friction >= 4 \(gradient_noise / temp"):
        sghmc(friction=1.0, gradient_noise=2.0, temperature=0.5)
    with model, pytest.raises(ValueError, match=r"Use friction >= 3"):
        sghmc(friction=np.array([5.0, 1.0]), gradient_noise=np.array([1.0, 3.0]))
    with model:
        sghmc(friction=4.0, gradient_noise=2.0, temperature=0.5)


def test_gradient_noise_options_are_checked(model):
    with model, pytest.raises(ValueError, match="needs gradient_noise=0"):
        sghmc(temperature=0.0, gradient_noise=0.1)
    with model, pytest.raises(ValueError, match='"estimate"'):
        sghmc(gradient_noise="auto")
    with model, pytest.raises(ValueError, match="non-negative"):
        sghmc(gradient_noise=-1.0)


@pytest.mark.parametrize("steps_per_draw", [0, -2, 1.5, True])
def test_steps_per_draw_must_be_a_positive_integer(model, steps_per_draw):
    with model, pytest.raises(ValueError, match="steps_per_draw"):
        sgmc.SGLD(step_size=0.1, steps_per_draw=steps_per_draw)


def test_discrete_free_variables_are_refused():
    with pm.Model():
        pm.Normal("x", 0, 1)
        pm.Poisson("k", 3.0)
        with pytest.raises(ValueError, match=r"discrete free variable\(s\) \['k'\]"):
            sgmc.SGLD(step_size=0.1)


def test_a_step_over_some_variables_only_is_refused():
    with pm.Model():
        x = pm.Normal("x", 0, 1)
        pm.HalfNormal("s", 1)
        with pytest.raises(ValueError, match=r"every free variable.*\['s_log__'\]"):
            sgmc.SGLD([x], step_size=0.1)


@pytest.mark.filterwarnings("ignore::pymc_sgmcmc.MinibatchNoiseWarning")
def test_a_diverging_chain_stops_with_a_clear_error(model):
    with model, pytest.raises(sgmc.SamplerDivergenceError) as error:
        pm.sample(
            draws=200,
            tune=0,
            chains=1,
            step=sgmc.SGLD(step_size=1.0, on_divergence="raise"),
            random_seed=1,
            progressbar=False,
        )
    message = str(error.value)
    assert "chain 0" in message
    assert "at draw" in message
    assert "step_size=1" in message
    assert "Lower step_size" in message


def test_samplers_are_never_chosen_by_pymc(model):
    assert sgmc.SGLD.competence(model.value_vars[0], has_grad=True) == (
        pm.step_methods.compound.Competence.COMPATIBLE
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"step_size": "fast"}, r'`step_size` must be "auto"'),
        ({"mass": "full"}, r'`mass` must be "auto", "dense", "diag"'),
        ({"mass": np.ones(3)}, r"`mass` must be a scalar, a vector of 2"),
        ({"mass": np.array([[1.0, 2.0], [2.0, 1.0]])}, "symmetric positive definite"),
        ({"mass": np.array([1.0, -1.0])}, "must be positive"),
        ({"step_size": 0.01, "steps_per_draw": "auto"}, r'"auto" with step_size="auto"'),
        ({"steps_per_draw": "many"}, r'"auto" with step_size="auto"'),
    ],
)
def test_adaptation_options_are_checked(model, options, message):
    with model, pytest.raises(ValueError, match=message):
        sgmc.SGLD(**options)


def test_friction_and_diffusion_accept_only_auto_as_text(model):
    with model, pytest.raises(ValueError, match=r'`friction` must be "auto" or positive'):
        sgmc.SGHMC(friction="high")
    with model, pytest.raises(ValueError, match=r'`diffusion` must be "auto" or non-negative'):
        sgmc.SGNHT(diffusion="high")
