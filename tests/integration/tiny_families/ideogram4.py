"""Ideogram 4 (0.33+): a single-stream DiT over one packed [text, image] sequence.

comfy/ldm/ideogram4/model.py: Ideogram4Transformer2DModel._run_conditional packs
cat(text, image) (text first, L_text = context.shape[1], no registers, no truncation) and every
Ideogram4TransformerBlock's Ideogram4Attention.forward runs one joint call
optimized_attention_masked(q, k, v, heads, mask, skip_reshape=True), q/k/v (B, H, L, D). The
mask is None unless the conditioning's attention_mask has padding (model_base.Ideogram4.extra_conds
drops an all-ones mask). The image is the Flux2 latent (128 channels, 1/16 of the image, already
2x2-patchified): one token per latent pixel. A conditioning whose token tensor is None (the
DualModelGuider's unconnected negative) runs an image-only sequence (_run_image_only).

supported_models.Ideogram4.unet_extra_config fixes the real widths (18 heads of 256, 53248-wide
Qwen3-VL features) over whatever detection gives, so the tiny model overrides those fields on the
config instance before building, which ComfyUI's loader never does; the text width stays real.
"""

import torch

import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import as_patcher, randomize_weights, text_conditioning

LLM_FEATURES = 53248  # Qwen3-VL-8B, 13 tapped layers x 4096 (comfy/text_encoders/ideogram4.py)
LATENT_CHANNELS = 128  # latent_formats.Flux2: EmptyFlux2LatentImage gives (B, 128, H/16, W/16)

CONFIG = {"image_model": "ideogram4", "in_channels": LATENT_CHANNELS, "num_layers": 2}
# the fields Ideogram4.unet_extra_config would otherwise force to the real sizes
TINY_WIDTHS = {
    "num_attention_heads": 4, "attention_head_dim": 32, "intermediate_size": 256, "adaln_dim": 64,
    "llm_features_dim": LLM_FEATURES, "rope_theta": 5000000, "mrope_section": [6, 5, 5], "norm_eps": 1e-5,
}


def available() -> bool:
    return hasattr(comfy.supported_models, "Ideogram4")


def build(seed: int = 0):
    """What comfy.sd.load_diffusion_model_state_dict does after detection, with tiny widths."""
    config = comfy.supported_models.Ideogram4(CONFIG)
    config.unet_config.update(TINY_WIDTHS)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    randomize_weights(model.diffusion_model, seed)
    return as_patcher(model)


def conditioning(model, n_text: int, seed: int = 0) -> list:
    # Ideogram4TEModel: (1, n, 53248) tapped hidden states and an attention_mask (no padding for one prompt)
    return text_conditioning(n_text, LLM_FEATURES, seed, attention_mask=torch.ones(1, n_text, dtype=torch.long))


def latent(model, height: int, width: int, batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, LATENT_CHANNELS, height, width)


FAMILY = TinyFamily(
    name="ideogram4",
    available=available,
    build=build,
    conditioning=conditioning,
    latent=latent,
    joint_text=lambda model, latent, n_text: n_text,
    joint_length=lambda model, latent, n_text: n_text + latent.shape[-2] * latent.shape[-1],
    joint_calls=lambda model: len(model.model.diffusion_model.layers),
    other_calls=lambda model: 0,
)
