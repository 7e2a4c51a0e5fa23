"""FLUX.1 (dev layout: guidance input): one double-stream and one single-stream block.

comfy/ldm/flux/model.py: the double blocks attend over cat(txt, img), the single blocks
over the same joined sequence; text first, every attention call joint. The text is the
conditioning's token tensor (c_crossattn).
"""

import comfy.ldm.flux.model
import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import HIDDEN, build_from_config, empty_latent, patch_tokens, text_conditioning

CONFIG = {
    "image_model": "flux", "guidance_embed": True,
    "in_channels": 16, "out_channels": 16, "patch_size": 2,
    "vec_in_dim": 768, "context_in_dim": 4096,
    "hidden_size": HIDDEN, "num_heads": HIDDEN // 64, "mlp_ratio": 4.0,
    "depth": 1, "depth_single_blocks": 1,
    "axes_dim": [16, 24, 24], "theta": 10000, "qkv_bias": True,
}


def flux_params(config: dict) -> dict:
    """The config with the fields this host's FluxParams declares and the config lacks: 0.33 adds
    txt_ids_dims (FLUX.1: none)."""
    fields = comfy.ldm.flux.model.FluxParams.__dataclass_fields__
    return {**config, **({"txt_ids_dims": []} if "txt_ids_dims" in fields and "txt_ids_dims" not in config else {})}


def build(seed: int = 0):
    return build_from_config(comfy.supported_models.Flux, flux_params(CONFIG), seed)


def conditioning(model, n_text: int, seed: int = 0) -> list:
    return text_conditioning(n_text, 4096, seed, pooled=768, guidance=3.5)


FAMILY = TinyFamily(
    name="flux",
    available=lambda: True,
    build=build,
    conditioning=conditioning,
    latent=lambda model, height, width, batch=1: empty_latent(height, width, batch, channels=16),
    joint_text=lambda model, latent, n_text: n_text,
    joint_length=lambda model, latent, n_text: n_text + patch_tokens(latent, 2),
    joint_calls=lambda model: len(model.model.diffusion_model.double_blocks) + len(model.model.diffusion_model.single_blocks),
    other_calls=lambda model: 0,
)
