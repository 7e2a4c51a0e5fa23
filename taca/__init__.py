"""Pure PyTorch core of ComfyUI-TACA. Nothing here imports ComfyUI."""

from .attention import taca_attention, text_attention_mass
from .schedule import Ramp, Step, gamma_at, ramp_at, timestep_from_sigma

__all__ = ["taca_attention", "text_attention_mass", "Ramp", "Step", "gamma_at", "ramp_at", "timestep_from_sigma"]
