"""Pure PyTorch core of ComfyUI-TACA. Nothing here imports ComfyUI."""

from .attention import taca_attention
from .schedule import gamma_at, timestep_from_sigma

__all__ = ["taca_attention", "gamma_at", "timestep_from_sigma"]
