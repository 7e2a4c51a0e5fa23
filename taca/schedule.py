"""The TACA temperature schedule γ(t) (Lv et al., ICCV 2025, arXiv 2506.07986).

The paper's schedule is a step: γ(t) = γ₀ while t ≥ t_thresh, else 1, with t on the
paper's 0–1000 timestep scale. For rectified-flow models that scale is t = 1000·σ.

A ramp (not evaluated in the paper) goes from γ₀ at t_start down to 1 at t_end, linearly
or along a half cosine, and is γ₀ above t_start and 1 below t_end.
"""

import math
from dataclasses import dataclass

TIMESTEPS = 1000.0
RAMPS = ("linear", "cosine")


def timestep_from_sigma(sigma: float) -> float:
    """The paper's 0–1000 timestep for a rectified-flow noise level σ ∈ [0, 1]."""
    return TIMESTEPS * sigma


def gamma_at(t: float, gamma0: float, threshold: float) -> float:
    """The paper's γ(t): γ₀ inside the early window t ≥ threshold, 1 (plain attention) after it."""
    return gamma0 if t >= threshold else 1.0


def ramp_at(t: float, gamma0: float, t_start: float, t_end: float, shape: str) -> float:
    """A ramp from γ₀ at t_start down to 1 at t_end (t_end ≤ t_start; equal ones make a step)."""
    if t >= t_start:
        return gamma0
    if t <= t_end:
        return 1.0
    u = (t - t_end) / (t_start - t_end)  # 1 at t_start, 0 at t_end
    weight = u if shape == "linear" else (1.0 - math.cos(math.pi * u)) / 2.0
    return 1.0 + (gamma0 - 1.0) * weight


@dataclass(frozen=True)
class Step:
    """The paper's schedule."""

    gamma0: float
    threshold: float

    def __call__(self, t: float) -> float:
        return gamma_at(t, self.gamma0, self.threshold)


@dataclass(frozen=True)
class Ramp:
    """γ₀ down to 1 between t_start and t_end, `shape` one of RAMPS."""

    gamma0: float
    t_start: float
    t_end: float
    shape: str

    def __post_init__(self):
        if self.shape not in RAMPS:
            raise ValueError(f"unknown ramp shape {self.shape!r}; the ramps are {', '.join(RAMPS)}")
        if self.t_end > self.t_start:
            raise ValueError(
                f"a ramp runs from γ₀ at t_start down to 1 at t_end, so t_end must not exceed t_start; "
                f"got t_start {self.t_start}, t_end {self.t_end}"
            )

    def __call__(self, t: float) -> float:
        return ramp_at(t, self.gamma0, self.t_start, self.t_end, self.shape)
