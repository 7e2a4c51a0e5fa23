"""LongCat-Image and LongCat-Image-Edit: one double-stream and one single-stream block.

comfy.supported_models.LongCatImage -> model_base.LongCatImage -> comfy.ldm.flux.model.Flux: the
FLUX.1 code without pooled vector or guidance input, a 3584-wide Qwen2.5-VL-7B text input, text
positions on RoPE axes 1 and 2 (txt_ids_dims=[1, 2]), and model_base.LongCatImage._apply_model
shifting the image positions past the text (rope_options shift_t=1, shift_y=shift_x=text length).

Joint attention (comfy/ldm/flux/layers.py, DoubleStreamBlock.forward and SingleStreamBlock.forward,
through comfy/ldm/flux/math.py attention): cat(txt, img, reference latents), text first; every
attention call is joint.

Text (comfy/text_encoders/longcat_image.py): the prompt is padded (and cut) to 512 tokens, the
chat template removed, so T2I text is 512 rows whose pad rows carry an attention mask that the
model does not use. The edit variant (TextEncodeQwenImageEdit with an image and a VAE) puts the
image's vision tokens inside the text stream, in front of the prompt:
<|vision_start|>, the Qwen2.5-VL image embeddings, <|vision_end|>, then the 512 prompt rows; and
it adds the VAE latent of the image as reference_latents, which the model appends after the
image tokens ("index" method, as the LongCat edit template sets it).
"""

import comfy.supported_models
import torch

from tiny_families import TinyFamily
from tiny_models import HIDDEN, build_from_config, empty_latent, patch_tokens, text_conditioning

WIDTH = 3584  # Qwen2.5-VL-7B hidden size
PROMPT_TOKENS = 512  # LongCatImageBaseTokenizer.max_length: pad and cut to 512
VISION_TOKENS = 4  # Qwen2.5-VL merged patches of the edit image: round(H/28) * round(W/28) in the real model
REF_SHAPE = (4, 6)  # the edit image's VAE latent (H/8, W/8), tiny

CONFIG = {
    "image_model": "flux", "guidance_embed": False, "vec_in_dim": None,
    "context_in_dim": WIDTH, "txt_ids_dims": [1, 2],
    "in_channels": 16, "out_channels": 16, "patch_size": 2,
    "hidden_size": HIDDEN, "num_heads": HIDDEN // 64, "mlp_ratio": 4.0,
    "depth": 1, "depth_single_blocks": 1,
    "axes_dim": [16, 24, 24], "theta": 10000, "qkv_bias": True,
    "yak_mlp": False, "txt_norm": False,
}


def available() -> bool:
    return hasattr(comfy.supported_models, "LongCatImage")


def build(seed: int = 0):
    return build_from_config(comfy.supported_models.LongCatImage, CONFIG, seed)


def _prompt_rows(n_text: int) -> int:
    return max(n_text, PROMPT_TOKENS)


def _encoded(rows: int, real: int, seed: int, **extra) -> list:
    mask = torch.zeros(1, rows, dtype=torch.long)
    mask[:, :real] = 1
    return text_conditioning(rows, WIDTH, seed, pooled_output=None, attention_mask=mask, **extra)


def conditioning(model, n_text: int, seed: int = 0) -> list:
    """CLIPTextEncode: n_text prompt tokens padded to 512, mask 0 on the pads; FluxGuidance (dropped)."""
    return _encoded(_prompt_rows(n_text), n_text, seed, guidance=4.0)


def edit_conditioning(model, n_text: int, seed: int = 0) -> list:
    """TextEncodeQwenImageEdit with image and VAE, then FluxKontextMultiReferenceLatentMethod 'index'."""
    rows = 2 + VISION_TOKENS + _prompt_rows(n_text)
    cond = _encoded(rows, 2 + VISION_TOKENS + n_text, seed, guidance=4.5)
    generator = torch.Generator().manual_seed(seed + 1000)
    cond[0][1]["reference_latents"] = [torch.randn(1, 16, *REF_SHAPE, generator=generator)]
    cond[0][1]["reference_latents_method"] = "index"
    return cond


def _calls(model) -> int:
    return len(model.model.diffusion_model.double_blocks) + len(model.model.diffusion_model.single_blocks)


def _latent(model, height, width, batch=1):
    return empty_latent(height, width, batch, channels=16)  # EmptySD3LatentImage, as the template


FAMILIES = (
    TinyFamily(
        name="longcat-image",
        available=available,
        build=build,
        conditioning=conditioning,
        latent=_latent,
        joint_text=lambda model, latent, n_text: _prompt_rows(n_text),
        joint_length=lambda model, latent, n_text: _prompt_rows(n_text) + patch_tokens(latent, 2),
        joint_calls=_calls,
        other_calls=lambda model: 0,
    ),
    TinyFamily(
        name="longcat-image-edit",
        available=available,
        build=build,
        conditioning=edit_conditioning,
        latent=_latent,
        # vision tokens are text-side: rows 1 .. VISION_TOKENS of the text
        joint_text=lambda model, latent, n_text: 2 + VISION_TOKENS + _prompt_rows(n_text),
        joint_length=lambda model, latent, n_text: (2 + VISION_TOKENS + _prompt_rows(n_text) + patch_tokens(latent, 2)
                                                    + patch_tokens(torch.zeros(REF_SHAPE), 2)),  # reference tokens last
        joint_calls=_calls,
        other_calls=lambda model: 0,
    ),
)
