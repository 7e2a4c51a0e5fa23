"""The TACA temperature schedule γ(t) (Lv et al., ICCV 2025, arXiv 2506.07986).

γ(t) = γ₀ while t ≥ t_thresh, else 1, with t on the paper's 0–1000 timestep scale.
For rectified-flow models (FLUX, SD3) that scale is t = 1000·σ.
"""

TIMESTEPS = 1000.0


def timestep_from_sigma(sigma: float) -> float:
    """The paper's 0–1000 timestep for a rectified-flow noise level σ ∈ [0, 1]."""
    return TIMESTEPS * sigma


def gamma_at(t: float, gamma0: float, threshold: float) -> float:
    """γ(t): γ₀ inside the early window t ≥ threshold, 1 (plain attention) after it."""
    return gamma0 if t >= threshold else 1.0
