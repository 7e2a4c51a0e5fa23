"""JoyImage / JoyAI-Image-Edit (ComfyUI 0.33+): a double-stream MMDiT, two blocks.

comfy/ldm/joyimage/model.py, JoyImageAttention.forward: one joint attention per block over
cat(image, text), IMAGE FIRST, text last; the image side is the target latent's tokens followed by
the tokens of every reference latent (JoyImageTransformer3DModel._forward: img = cat(target, ref0,
ref1, ...)). q, k, v as (B, L, H*D), heads by keyword, no mask. No other attention.

Text: condition_embedder.text_embedder(context), context being c_crossattn (Qwen3-VL-8B last hidden
layer, width 4096, the first 34 template tokens dropped, no padding). For the edit model the
prompt's images are Qwen3-VL vision tokens INSIDE that text sequence (TextEncodeJoyImageEdit), and
their VAE latents come as "reference_latents" (model kwarg ref_latents).
Image tokens: the (B, 16, T, H, W) Wan-2.1 latent in 1x2x2 patches: T * ceil(H/2) * ceil(W/2).
"""

import math

import torch

import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import build_from_config, text_conditioning

# JoyImage.unet_extra_config forces rope_dim_list [16, 56, 56] (sum 128): the head size must be 128.
CONFIG = {
    "image_model": "joyimage", "in_channels": 16, "hidden_size": 256, "num_attention_heads": 2,
    "patch_size": [1, 2, 2], "num_layers": 2, "text_dim": 4096,
}
REFERENCE_SHAPE = (1, 16, 1, 4, 6)  # one reference image latent, as the Wan VAE encodes it


def build(seed: int = 0):
    return build_from_config(comfy.supported_models.JoyImage, CONFIG, seed)


def conditioning(model, n_text: int, seed: int = 0) -> list:
    cond = text_conditioning(n_text, 4096, seed)
    cond[0][1]["attention_mask"] = torch.ones(1, n_text, dtype=torch.long)  # the TE returns it; unused by the model
    return cond


def edit_conditioning(model, n_text: int, seed: int = 0) -> list:
    """TextEncodeJoyImageEdit: n_text tokens (vision tokens of the images among them) and the images' latents."""
    cond = conditioning(model, n_text, seed)
    cond[0][1]["reference_latents"] = [torch.randn(REFERENCE_SHAPE, generator=torch.Generator().manual_seed(seed + 1000))]
    return cond


def tokens(shape) -> int:
    t, h, w = shape[-3:]
    return t * math.ceil(h / 2) * math.ceil(w / 2)


def latent(model, height, width, batch=1):
    return torch.zeros(batch, 16, 1, height, width)  # 5-D: what KSampler hands a Wan-2.1-latent model


def _family(name, cond, refs):
    return TinyFamily(
        name=name,
        available=lambda: hasattr(comfy.supported_models, "JoyImage"),
        build=build,
        conditioning=cond,
        latent=latent,
        joint_text=lambda model, latent, n_text: n_text,
        joint_length=lambda model, latent, n_text: tokens(latent.shape) + refs + n_text,
        joint_calls=lambda model: len(model.model.diffusion_model.double_blocks),
        other_calls=lambda model: 0,
        text_first=False,
    )


FAMILIES = (
    _family("joyimage", conditioning, 0),
    _family("joyimage-edit", edit_conditioning, tokens(REFERENCE_SHAPE)),
)
