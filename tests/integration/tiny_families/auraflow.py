"""AuraFlow (0.1-0.3): one double-stream (MMDiTBlock) and one single-stream (DiTBlock) layer.

comfy/ldm/aura/mmdit.py, MMDiT._forward: the text is cond_seq_linear(context) with the 8
learned register_tokens put IN FRONT of it, c = cat(registers, text); the double layers
(DoubleAttention.forward) attend over cat(c, x), the single layers (SingleAttention.forward)
over the same joined cx = cat(c, x). Every attention call is joint; the sequence is
[8 registers, text, image], so the text side is n_text + 8 tokens at the start. Attention is
handed over as (B, H, L, D) with skip_reshape=True, heads positional, no mask.
The text is the conditioning's token tensor (Pile-T5-XL, width 2048, padded to >= 256 tokens).
"""

import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import HIDDEN, build_from_config, empty_latent, patch_tokens, text_conditioning

REGISTERS = 8  # MMDiT.register_tokens: (1, 8, dim)

CONFIG = {
    "in_channels": 4, "out_channels": 4, "patch_size": 2,
    "dim": HIDDEN, "n_heads": HIDDEN // 64, "global_conddim": HIDDEN,
    "n_layers": 2, "n_double_layers": 1,  # one double, one single layer
    "cond_seq_dim": 2048, "max_seq": 16 * 16,  # max_seq must be a square (pos-embed grid)
}


def build(seed: int = 0):
    return build_from_config(comfy.supported_models.AuraFlow, CONFIG, seed)


def conditioning(model, n_text: int, seed: int = 0) -> list:
    # AuraT5Model: tokens only, no pooled output, no attention mask in the conditioning.
    return text_conditioning(n_text, 2048, seed)


def _layers(model) -> int:
    dm = model.model.diffusion_model
    return len(dm.double_layers) + len(dm.single_layers)


FAMILY = TinyFamily(
    name="auraflow",
    available=lambda: hasattr(comfy.supported_models, "AuraFlow"),
    build=build,
    conditioning=conditioning,
    latent=lambda model, height, width, batch=1: empty_latent(height, width, batch, channels=4),
    joint_text=lambda model, latent, n_text: REGISTERS + n_text,
    joint_length=lambda model, latent, n_text: REGISTERS + n_text + patch_tokens(latent, 2),
    joint_calls=_layers,
    other_calls=lambda model: 0,
)
