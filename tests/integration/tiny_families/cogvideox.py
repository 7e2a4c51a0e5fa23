"""CogVideoX (ComfyUI 0.33+): text-to-video, image-to-video and inpainting (VOID / Fun), one block each.

comfy/ldm/cogvideo/model.py, CogVideoXBlock.forward: ONE joint self-attention per block over
cat(text, video) = cat(norm_encoder, norm_hidden), text first; the text is
patch_embed.text_proj(context), context being c_crossattn (T5-XXL, width 4096, padded to >= 226
tokens by CogVideoXT5Tokenizer, not truncated). q and k are handed over as (B, L, H*D), v likewise,
heads by keyword, no mask. RoPE, when used, rotates the video tokens only. No other attention.

Video tokens: the latent (B, C, T, H, W) is padded to whole patches, then
T/p_t * H/2 * W/2 tokens (p_t = patch_size_t, 1 for CogVideoX 1.0, 2 for 1.5). The I2V and
inpaint models see the same tokens: their conditioning latent is concatenated on the channel
axis (model_base.CogVideoX.concat_cond), not on the sequence.
"""

import math

import torch

import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import build_from_config, text_conditioning

FRAMES = 2  # latent frames of the test latents (even, for patch_size_t = 2)

BASE = {
    "image_model": "cogvideox", "num_attention_heads": 2, "attention_head_dim": 64,
    "time_embed_dim": 64, "num_layers": 1, "text_embed_dim": 4096, "patch_size": 2,
    "use_rotary_positional_embeddings": True, "use_learned_positional_embeddings": False,  # the 5B layout
}
T2V = {**BASE, "in_channels": 16}  # CogVideoX 1.0 (5B): Conv2d patch embedding, patch_size_t None
I2V = {**BASE, "in_channels": 32, "patch_size_t": 2, "ofs_embed_dim": 64}  # CogVideoX 1.5 I2V: ofs embedding
INPAINT = {**BASE, "in_channels": 48, "patch_size_t": 2}  # CogVideoX-Fun V1.5 (VOID): 16 noise + 32 condition


def _has(name):
    return lambda: hasattr(comfy.supported_models, name)


def _build(config_name, config):
    return lambda seed=0: build_from_config(getattr(comfy.supported_models, config_name), config, seed)


def _conditioning(concat_channels):
    """T5-XXL tokens; the I2V / inpaint conditioning nodes add "concat_latent_image" (VOIDInpaintConditioning:
    16 mask + 16 masked-video channels), which concat_cond resizes to the noise latent."""
    def conditioning(model, n_text: int, seed: int = 0) -> list:
        cond = text_conditioning(n_text, 4096, seed)
        if concat_channels:
            generator = torch.Generator().manual_seed(seed + 1000)
            cond[0][1]["concat_latent_image"] = torch.randn(1, concat_channels, FRAMES, 6, 10, generator=generator)
        return cond
    return conditioning


def latent(model, height, width, batch=1):
    return torch.zeros(batch, 16, FRAMES, height, width)


def video_tokens(model, latent):
    dm = model.model.diffusion_model
    p, pt = dm.patch_size, dm.patch_size_t or 1
    t, h, w = latent.shape[-3:]
    return math.ceil(t / pt) * math.ceil(h / p) * math.ceil(w / p)


def _family(name, config_name, config, concat_channels):
    return TinyFamily(
        name=name,
        available=_has(config_name),
        build=_build(config_name, config),
        conditioning=_conditioning(concat_channels),
        latent=latent,
        joint_text=lambda model, latent, n_text: n_text,
        joint_length=lambda model, latent, n_text: n_text + video_tokens(model, latent),
        joint_calls=lambda model: len(model.model.diffusion_model.blocks),
        other_calls=lambda model: 0,
    )


FAMILIES = (
    _family("cogvideox", "CogVideoX_T2V", T2V, 0),
    _family("cogvideox-i2v", "CogVideoX_I2V", I2V, 16),
    _family("cogvideox-inpaint", "CogVideoX_Inpaint", INPAINT, 32),
)
