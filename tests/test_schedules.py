import numpy as np
import pytest

from pymc_sgmcmc import schedules


def test_constant_is_constant_on_scalars_and_arrays():
    schedule = schedules.constant(0.25)
    assert schedule(7) == 0.25
    np.testing.assert_array_equal(schedule(np.arange(4)), np.full(4, 0.25))


def test_polynomial_follows_its_formula():
    schedule = schedules.polynomial(0.3, b=2.0, gamma=0.75)
    steps = np.array([0, 1, 10, 1000])
    np.testing.assert_allclose(schedule(steps), 0.3 * (2.0 + steps) ** -0.75)


def test_polynomial_satisfies_robbins_monro_numerically():
    # Partial sums of η grow without bound while those of η² converge (γ = 0.55).
    schedule = schedules.polynomial(1.0)
    steps = np.arange(10**6)
    values = schedule(steps)
    assert values[: 10**5].sum() * 2 < values.sum()
    squares = values**2
    assert squares.sum() - squares[: 10**5].sum() < 0.2 * squares.sum()


@pytest.mark.parametrize("gamma", [0.5, 0.3, 1.01, -1.0])
def test_polynomial_rejects_gamma_outside_robbins_monro(gamma):
    with pytest.raises(ValueError, match=r"gamma.*\(0.5, 1\]"):
        schedules.polynomial(0.1, gamma=gamma)


@pytest.mark.parametrize("value", [0.0, -1e-3, np.inf, np.nan])
def test_step_sizes_must_be_positive_and_finite(value):
    with pytest.raises(ValueError, match="positive and finite"):
        schedules.constant(value)
    with pytest.raises(ValueError, match="positive and finite"):
        schedules.polynomial(value)


def test_a_plain_callable_is_a_schedule_and_is_checked():
    schedule = schedules.as_schedule(lambda k: 1.0 / (k + 1))
    np.testing.assert_allclose(schedules.evaluate_schedule(schedule, np.arange(3)), [1, 0.5, 1 / 3])
    with pytest.raises(ValueError, match="at step 0"):
        schedules.as_schedule(lambda k: -1.0)
    late_failure = schedules.as_schedule(lambda k: 1.0 if k < 5 else 0.0)
    with pytest.raises(ValueError, match="at step 5"):
        schedules.evaluate_schedule(late_failure, np.arange(3, 8))


def test_cyclical_follows_the_cosine_formula_and_phases():
    schedule = schedules.cyclical(0.2, cycle_length=10, exploration_fraction=0.3)
    steps = np.arange(25)
    position = (steps % 10) / 10
    np.testing.assert_allclose(schedule(steps), 0.1 * (np.cos(np.pi * position) + 1))
    np.testing.assert_array_equal(schedule.in_sampling_phase(steps), position >= 0.3)
    # Every cycle starts at the largest step and every step stays positive.
    assert schedule(0) == schedule(10) == 0.2
    assert np.all(schedule(steps) > 0)
    # A cycle of one step is a constant step size.
    np.testing.assert_allclose(schedules.cyclical(0.2, cycle_length=1)(steps), 0.2)


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"cycle_length": 0}, "`cycle_length` must be an integer >= 1"),
        ({"cycle_length": -3}, "`cycle_length` must be an integer >= 1"),
        ({"cycle_length": 2.5}, "`cycle_length` must be an integer >= 1"),
        ({"cycle_length": True}, "`cycle_length` must be an integer >= 1"),
        ({"cycle_length": 10, "exploration_fraction": 1.0}, r"must lie in \[0, 1\)"),
        ({"cycle_length": 10, "exploration_fraction": -0.1}, r"must lie in \[0, 1\)"),
        ({"cycle_length": 10, "initial_step_size": 0.0}, "must be positive"),
    ],
)
def test_cyclical_rejects_bad_arguments(arguments, match):
    arguments = {"initial_step_size": 0.1, **arguments}
    with pytest.raises(ValueError, match=match):
        schedules.cyclical(**arguments)
