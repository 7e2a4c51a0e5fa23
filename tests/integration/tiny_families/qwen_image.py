"""Qwen-Image and its edit variants: MMDiT double-stream blocks only (supported_models.QwenImage).

comfy/ldm/qwen_image/model.py, Attention.forward: every block attends over
cat(txt, img) in one joint call, text first. The text stream is the conditioning's token
tensor (c_crossattn, Qwen2.5-VL-7B last hidden state with the chat template stripped); in
the edit variants the Qwen2.5-VL vision tokens of the input image sit inside that text
stream. Reference latents (kwarg ref_latents, from the conditioning's "reference_latents")
are patchified like the image and appended after the image tokens:
[txt, img, ref_1, ref_2, ...]. The mask goes positionally (5th argument); 0.3.64 never
builds one, 0.33 adds a (B, 1, L) additive mask when an attention_mask kwarg comes in.

Variants: qwen-image (text to image), qwen-image-edit (vision tokens + a reference latent);
on hosts whose model takes them (0.33) qwen-image-edit-2511 (default_ref_method
"index_timestep_zero": the reference tokens get a timestep-0 modulation) and
qwen-image-layered (use_additional_t_cond, default_ref_method "negative_index", a latent
with layers + 1 frames, all frames in the image part of the joint sequence).
"""

import inspect

import torch

import comfy.sample
import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import HIDDEN, build_from_config, patch_tokens, text_conditioning

TEXT_WIDTH = 3584  # Qwen2.5-VL-7B
REF_SIZE = (4, 6)  # reference latent, latent pixels: 2 x 3 = 6 tokens
LAYERS = 2  # qwen-image-layered: EmptyQwenImageLayeredLatentImage's "layers", layers + 1 frames

CONFIG = {
    "image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16,
    "num_layers": 2, "attention_head_dim": 64, "num_attention_heads": HIDDEN // 64,
    "joint_attention_dim": TEXT_WIDTH, "axes_dims_rope": (16, 24, 24),
}
EDIT_2511 = {"default_ref_method": "index_timestep_zero"}  # model_detection: __index_timestep_zero__
LAYERED = {"use_additional_t_cond": True, "default_ref_method": "negative_index"}  # addition_t_embedding


def _takes(fields: dict) -> bool:
    """Whether this host's QwenImageTransformer2DModel accepts these config fields."""
    import comfy.ldm.qwen_image.model
    params = inspect.signature(comfy.ldm.qwen_image.model.QwenImageTransformer2DModel.__init__).parameters
    return all(k in params for k in fields)


def build(extra: dict):
    return lambda seed=0: build_from_config(comfy.supported_models.QwenImage, {**CONFIG, **extra}, seed)


def latent(frames: int = 1):
    """EmptySD3LatentImage (4D, 16 channels) as KSampler passes it: fix_empty_latent_channels makes it
    (B, 16, 1, H, W) for the Wan 2.1 latent format. Layered: EmptyQwenImageLayeredLatentImage's
    (B, 16, layers + 1, H, W)."""
    def make(model, height, width, batch=1):
        if frames > 1:
            return torch.zeros(batch, 16, frames, height, width)
        return comfy.sample.fix_empty_latent_channels(model, torch.zeros(batch, 16, height, width))
    return make


def conditioning(reference: bool):
    """CLIPTextEncode (qwen_image TE): (1, n, 3584) tokens; the TE drops the attention mask when it
    masks nothing. Edit (TextEncodeQwenImageEdit / EditPlus, ReferenceLatent for layered): the
    vision tokens are part of the n tokens, plus "reference_latents": the VAE (Wan 2.1) latent
    of the input image, (1, 16, 1, h, w)."""
    def make(model, n_text: int, seed: int = 0) -> list:
        cond = text_conditioning(n_text, TEXT_WIDTH, seed)
        if reference:
            g = torch.Generator().manual_seed(seed + 1000)
            cond[0][1]["reference_latents"] = [torch.randn(1, 16, 1, *REF_SIZE, generator=g)]
        return cond
    return make


def image_tokens(latent_: torch.Tensor) -> int:
    frames = latent_.shape[2] if latent_.ndim == 5 else 1
    return frames * patch_tokens(latent_, 2)


REF_TOKENS = patch_tokens(torch.zeros(1, 16, 1, *REF_SIZE), 2)


def family(name, extra, reference, frames=1, available=lambda: True):
    refs = REF_TOKENS if reference else 0
    return TinyFamily(
        name=name,
        available=available,
        build=build(extra),
        conditioning=conditioning(reference),
        latent=latent(frames),
        joint_text=lambda model, lat, n_text: n_text,
        joint_length=lambda model, lat, n_text: n_text + image_tokens(lat) + refs,
        joint_calls=lambda model: len(model.model.diffusion_model.transformer_blocks),
        other_calls=lambda model: 0,
    )


FAMILIES = (
    family("qwen-image", {}, reference=False),
    family("qwen-image-edit", {}, reference=True),
    family("qwen-image-edit-2511", EDIT_2511, reference=True, available=lambda: _takes(EDIT_2511)),
    family("qwen-image-layered", LAYERED, reference=True, frames=LAYERS + 1, available=lambda: _takes(LAYERED)),
)
