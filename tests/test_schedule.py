"""γ(t): γ₀ while t ≥ threshold, 1 after it; t = 1000·σ for flow models. And the ramps."""

import math

import pytest

from taca import Ramp, Step, gamma_at, timestep_from_sigma


@pytest.mark.parametrize("t,expected", [(1000.0, 1.2), (970.0, 1.2), (969.999, 1.0), (500.0, 1.0), (0.0, 1.0)])
def test_window_boundary_is_inclusive(t, expected):
    assert gamma_at(t, 1.2, 970.0) == expected


def test_threshold_zero_keeps_gamma_on_every_step():
    assert gamma_at(0.0, 1.5, 0.0) == 1.5


def test_threshold_above_every_timestep_turns_taca_off():
    assert gamma_at(1000.0, 1.5, 1000.5) == 1.0


def test_flow_timestep_scale():
    assert timestep_from_sigma(1.0) == 1000.0
    assert timestep_from_sigma(0.97) == pytest.approx(970.0)
    assert timestep_from_sigma(0.0) == 0.0


@pytest.mark.parametrize("shape,middle", [("linear", 1.25), ("cosine", 1.25)])
def test_ramp_goes_from_gamma0_at_t_start_to_one_at_t_end(shape, middle):
    ramp = Ramp(1.5, t_start=900.0, t_end=700.0, shape=shape)
    assert ramp(1000.0) == ramp(900.0) == 1.5
    assert ramp(700.0) == ramp(0.0) == 1.0
    assert ramp(800.0) == pytest.approx(middle)  # halfway, both shapes are halfway


def test_cosine_ramp_is_flat_at_its_ends_and_linear_is_not():
    linear, cosine = Ramp(2.0, 1000.0, 0.0, "linear"), Ramp(2.0, 1000.0, 0.0, "cosine")
    assert linear(900.0) == pytest.approx(1.9)
    assert cosine(900.0) == pytest.approx(1.0 + (1 - math.cos(math.pi * 0.9)) / 2)
    assert cosine(900.0) > linear(900.0) and cosine(100.0) < linear(100.0)


def test_ramp_with_t_end_above_t_start_is_refused():
    with pytest.raises(ValueError, match="t_end must not exceed t_start"):
        Ramp(1.2, t_start=900.0, t_end=950.0, shape="linear")


def test_ramp_with_equal_ends_is_the_step():
    ramp, step = Ramp(1.2, 970.0, 970.0, "cosine"), Step(1.2, 970.0)
    assert [ramp(t) for t in (1000.0, 970.0, 969.9, 0.0)] == [step(t) for t in (1000.0, 970.0, 969.9, 0.0)]


def test_unknown_ramp_shape_is_refused():
    with pytest.raises(ValueError, match="linear, cosine"):
        Ramp(1.2, 970.0, 900.0, "quadratic")
