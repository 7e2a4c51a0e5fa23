"""Krea 2 / K2 (ComfyUI 0.33+): a single-stream DiT, two blocks, with its text-fusion adapter.

comfy/ldm/krea2/model.py, SingleStreamDiT._forward: combined = cat(text, image), TEXT FIRST, the
image side being the target latent's tokens followed by any reference latents' tokens; every
SingleStreamBlock runs one joint attention (Attention.forward -> optimized_attention_masked) over
it: q, k, v as (B, H, L, D), skip_reshape=True, heads positional, mask=None; GQA k/v heads are
repeated to the query heads BEFORE the call.

Not joint, inside the model, every forward: TextFusionTransformer.forward, 2 "layerwise" blocks
attending across the txtlayers (12) tapped Qwen3-VL layers of each text token (batch B * n_text,
length txtlayers) and 2 "refiner" blocks over the text alone (length n_text).

Text: c_crossattn is (B, n_text, txtlayers * txtdim), 12 Qwen3-VL-4B layers of width 2560 in the
real model; the tiny model keeps 12 layers but narrows txtdim, so its conditioning is narrower.
Image tokens: ceil(H/2) * ceil(W/2) per latent frame. Reference latents count only when the
conditioning also names a "reference_latents_method" (the model has no default method).
"""

import math

import torch

import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import build_from_config, text_conditioning

CONFIG = {
    "image_model": "krea2", "features": 128, "heads": 2, "kvheads": 1, "layers": 2, "patch": 2,
    "channels": 16, "txtlayers": 12, "txtdim": 64, "txtheads": 2, "txtkvheads": 2,
}
REFERENCE_SHAPE = (1, 16, 1, 4, 6)  # one reference latent as the Wan VAE encodes an image


def build(seed: int = 0):
    return build_from_config(comfy.supported_models.Krea2, CONFIG, seed)


def conditioning(model, n_text: int, seed: int = 0) -> list:
    dm = model.model.diffusion_model
    return text_conditioning(n_text, dm.txtlayers * dm.txtdim, seed)


def reference_conditioning(model, n_text: int, seed: int = 0) -> list:
    """ReferenceLatent + FluxKontextMultiReferenceLatentMethod ("index")."""
    cond = conditioning(model, n_text, seed)
    ref = torch.randn(REFERENCE_SHAPE, generator=torch.Generator().manual_seed(seed + 1000))
    cond[0][1].update(reference_latents=[ref], reference_latents_method="index")
    return cond


def tokens(shape) -> int:
    return math.ceil(shape[-2] / 2) * math.ceil(shape[-1] / 2)


def _family(name, cond, refs):
    return TinyFamily(
        name=name,
        available=lambda: hasattr(comfy.supported_models, "Krea2"),
        build=build,
        conditioning=cond,
        latent=lambda model, height, width, batch=1: torch.zeros(batch, 16, 1, height, width),
        joint_text=lambda model, latent, n_text: n_text,
        joint_length=lambda model, latent, n_text: n_text + tokens(latent.shape) + refs,
        joint_calls=lambda model: len(model.model.diffusion_model.blocks),
        other_calls=lambda model: len(model.model.diffusion_model.txtfusion.layerwise_blocks)
        + len(model.model.diffusion_model.txtfusion.refiner_blocks),
    )


FAMILIES = (
    _family("krea2", conditioning, 0),
    _family("krea2-ref", reference_conditioning, tokens(REFERENCE_SHAPE)),
)
