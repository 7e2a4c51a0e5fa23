"""Microsoft Lens (ComfyUI 0.33+): a dual-stream MMDiT, two blocks.

comfy/ldm/lens/model.py, LensJointAttention.forward: one joint attention per block over
cat(image, text), IMAGE FIRST, text last; q, k, v as (B, H, L, D) with skip_reshape=True, heads
positional, mask by keyword: an additive float (B, 1, 1, L) mask, 0 for the image and the kept
text tokens, float32-min for text tokens whose attention_mask is 0 (_build_joint_attention_mask).
No other attention.

Text: txt_in(RMSNorm per layer(context)), context being c_crossattn, GPT-OSS-20B hidden states of
4 layers stacked on the feature axis (width 4 * 2880), the 97 chat-template tokens dropped, at
most 512 tokens, no padding within one prompt; the conditioning carries "attention_mask" (B, S),
which Lens.extra_conds passes on. An empty prompt gives S = 0 text tokens.
Image tokens: the 128-channel Flux2 latent is already 2x2-packed, one token per latent pixel: H * W.
"""

import torch

import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import text_conditioning, build_from_config

LAYERS, ENC_DIM = 4, 2880  # LENS_SELECTED_LAYERS (5, 11, 17, 23), GPT-OSS hidden size

CONFIG = {
    "image_model": "lens", "in_channels": 128, "out_channels": 32, "num_layers": 2,
    "num_attention_heads": 2, "attention_head_dim": 64, "enc_hidden_dim": ENC_DIM,
    "multi_layer_encoder_feature": True, "selected_layer_index": tuple(range(LAYERS)),
}


def build(seed: int = 0):
    return build_from_config(comfy.supported_models.Lens, CONFIG, seed)


def conditioning(model, n_text: int, seed: int = 0) -> list:
    cond = text_conditioning(n_text, LAYERS * ENC_DIM, seed)
    cond[0][1].update(attention_mask=torch.ones(1, n_text, dtype=torch.long), num_layers_stacked=LAYERS)
    return cond


FAMILY = TinyFamily(
    name="lens",
    available=lambda: hasattr(comfy.supported_models, "Lens"),
    build=build,
    conditioning=conditioning,
    latent=lambda model, height, width, batch=1: torch.zeros(batch, 128, height, width),
    joint_text=lambda model, latent, n_text: n_text,
    joint_length=lambda model, latent, n_text: latent.shape[-2] * latent.shape[-1] + n_text,
    joint_calls=lambda model: len(model.model.diffusion_model.transformer_blocks),
    other_calls=lambda model: 0,
    text_first=False,
)
