"""γ(t): γ₀ while t ≥ threshold, 1 after it; t = 1000·σ for flow models."""

import pytest

from taca import gamma_at, timestep_from_sigma


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
