"""Mage-Flow (supported_models.MageFlow, ComfyUI 0.33): Qwen-Image double-stream blocks, patch size 1.

comfy/ldm/mage_flow/model.py, MageFlowTransformer2DModel._forward runs
comfy.ldm.qwen_image.model.QwenImageTransformerBlock, whose Attention.forward makes one
joint call per block over cat(txt, img), text first. The text stream is the conditioning's
token tensor (c_crossattn, Qwen3-VL-4B last hidden state, template stripped); in the edit
variant the Qwen3-VL vision tokens of the reference images are inside it. Reference
latents ("reference_latents" -> kwarg ref_latents) follow the image tokens:
[txt, img, ref_1, ...]. Each latent pixel is one token (no 2x2 packing).
"""

import torch

import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import HIDDEN, build_from_config, text_conditioning

TEXT_WIDTH = 2560  # Qwen3-VL-4B
CHANNELS = 128  # Flux2 latent format, 16x downscale
REF_SIZE = (3, 5)  # reference latent, latent pixels: 15 tokens

CONFIG = {
    "image_model": "mage_flow", "in_channels": CHANNELS, "out_channels": CHANNELS, "num_layers": 2,
    "attention_head_dim": 64, "num_attention_heads": HIDDEN // 64, "joint_attention_dim": TEXT_WIDTH,
    "axes_dims_rope": (16, 24, 24),
}


def build(seed: int = 0):
    return build_from_config(comfy.supported_models.MageFlow, CONFIG, seed)


def conditioning(reference: bool):
    """CLIPTextEncode / TextEncodeMageFlowEdit: (1, n, 2560) tokens (the TE drops an all-ones mask);
    edit: vision tokens among the n, plus "reference_latents" [(1, 128, h, w)] (the node resizes
    each reference to the output size; any size works in the model)."""
    def make(model, n_text: int, seed: int = 0) -> list:
        cond = text_conditioning(n_text, TEXT_WIDTH, seed)
        if reference:
            g = torch.Generator().manual_seed(seed + 1000)
            cond[0][1]["reference_latents"] = [torch.randn(1, CHANNELS, *REF_SIZE, generator=g)]
        return cond
    return make


def family(name, reference):
    refs = REF_SIZE[0] * REF_SIZE[1] if reference else 0
    return TinyFamily(
        name=name,
        available=lambda: hasattr(comfy.supported_models, "MageFlow"),
        build=build,
        conditioning=conditioning(reference),
        # TextEncodeMageFlowEdit's latent: (B, 128, H/16, W/16)
        latent=lambda model, height, width, batch=1: torch.zeros(batch, CHANNELS, height, width),
        joint_text=lambda model, lat, n_text: n_text,
        joint_length=lambda model, lat, n_text: n_text + lat.shape[-2] * lat.shape[-1] + refs,
        joint_calls=lambda model: len(model.model.diffusion_model.transformer_blocks),
        other_calls=lambda model: 0,
    )


FAMILIES = (family("mageflow", reference=False), family("mageflow-edit", reference=True))
