"""Lumina 2 (NextDiT) and Z-Image: single-stream DiT with text and image refiners.

comfy/ldm/lumina/model.py, JointAttention.forward is the only attention. NextDiT first runs
the context_refiner over the caption alone and the noise_refiner over the image alone
(both in patchify_and_embed), then every block of `layers` over the joined sequence
[caption, image], text first.

Text in the joint sequence:
- 0.3.64: the first `num_tokens` caption tokens (kwarg num_tokens, the attention mask's sum,
  from model_base.Lumina2.extra_conds; without a mask the forward lacks it and fails). The
  text encoders give an all-ones mask, so that is c_crossattn's length unless the tokens
  outgrew the mask (ConditioningConcat keeps the first mask). A mask with zeros would make
  it attention_mask.sum per sample, but the context refiner fails on such a mask.
- 0.33: the whole of c_crossattn (num_tokens and the mask are not used); Z-Image pads the
  caption with cap_pad_token to a multiple of pad_tokens_multiple (32) and the image with
  x_pad_token likewise: [caption + pads, image + pads]. The caption pads pass the
  context refiner with the caption, so they are text-side.

Variants: lumina2 (Gemma-2-2B captions, GQA), z-image (0.33: Qwen3-4B captions, padding,
Z-Image modulation) and z-image-pixel (0.33: the same backbone on 16x16 RGB patches with a
per-patch MLP decoder, supported_models.ZImagePixelSpace).
"""

import math

import torch

import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import HIDDEN, build_from_config, patch_tokens, text_conditioning

LUMINA2 = {
    "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": HIDDEN, "cap_feat_dim": 2304,
    "n_layers": 2, "n_refiner_layers": 1, "n_heads": HIDDEN // 64, "n_kv_heads": 1, "qk_norm": True,
    "axes_dims": [16, 24, 24], "axes_lens": [300, 512, 512],
}
# model_detection (0.33) for dim 3840: no GQA, rope_theta 256, Z-Image modulation, pad tokens.
# Z-Image modulation needs dim >= 256 (t_embedder gives 256 features, adaLN takes min(dim, 256)),
# so two heads of 128 with the real RoPE axes.
Z_IMAGE = {
    **LUMINA2, "dim": 256, "n_heads": 2, "n_kv_heads": 2, "axes_dims": [32, 48, 48],
    "cap_feat_dim": 2560, "axes_lens": [1536, 512, 512],
    "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0, "z_image_modulation": True, "time_scale": 1000.0,
    "pad_tokens_multiple": 32,
}
PIXEL_PATCH = 16  # detection derives it from x_embedder (patch^2 * 3 inputs); 16 is this test's choice
Z_IMAGE_PIXEL = {
    **Z_IMAGE, "image_model": "zimage_pixel", "patch_size": PIXEL_PATCH, "in_channels": 3,
    "decoder_in_channels": PIXEL_PATCH * PIXEL_PATCH * 3, "decoder_hidden_size": 64, "decoder_num_res_blocks": 1,
    "rope_w_extrapolation_ratio": 2.0, "rope_t_extrapolation_ratio": 0.8333333333333334,
}


def build(config_name: str, config: dict):
    return lambda seed=0: build_from_config(getattr(comfy.supported_models, config_name), config, seed)


def conditioning(width: int):
    """CLIPTextEncode with the Gemma / Qwen3 TE: (1, n, width) tokens and the TE's all-ones
    attention_mask (1, n), from which extra_conds makes num_tokens (0.3.64 requires it)."""
    def make(model, n_text: int, seed: int = 0) -> list:
        return text_conditioning(n_text, width, seed, attention_mask=torch.ones(1, n_text, dtype=torch.long))
    return make


def padded(n: int, model) -> int:
    """n tokens after Z-Image's padding to a multiple of pad_tokens_multiple (0.33; none for Lumina 2)."""
    multiple = getattr(model.model.diffusion_model, "pad_tokens_multiple", None)
    return n if multiple is None else math.ceil(n / multiple) * multiple


def refiner_calls(model) -> int:
    dm = model.model.diffusion_model
    return len(dm.context_refiner) + len(dm.noise_refiner)


def family(name, config_name, config, width, latent, patch, available):
    return TinyFamily(
        name=name,
        available=available,
        build=build(config_name, config),
        conditioning=conditioning(width),
        latent=latent,
        joint_text=lambda model, lat, n_text: padded(n_text, model),
        joint_length=lambda model, lat, n_text: padded(n_text, model) + padded(patch_tokens(lat, patch), model),
        joint_calls=lambda model: len(model.model.diffusion_model.layers),
        other_calls=refiner_calls,
    )


FAMILIES = (
    family("lumina2", "Lumina2", LUMINA2, 2304,
           lambda model, height, width, batch=1: torch.zeros(batch, 16, height, width), 2, lambda: True),
    family("z-image", "ZImage", Z_IMAGE, 2560,
           lambda model, height, width, batch=1: torch.zeros(batch, 16, height, width), 2,
           lambda: hasattr(comfy.supported_models, "ZImage")),
    # pixel space: height and width count 8-pixel units, so the image is the size a VAE latent of
    # height x width would decode to (EmptyChromaRadianceLatentImage-style (B, 3, H, W) pixels)
    family("z-image-pixel", "ZImagePixelSpace", Z_IMAGE_PIXEL, 2560,
           lambda model, height, width, batch=1: torch.zeros(batch, 3, 8 * height, 8 * width), PIXEL_PATCH,
           lambda: hasattr(comfy.supported_models, "ZImagePixelSpace")),
)
