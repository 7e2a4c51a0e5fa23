"""Genmo Mochi 1 preview (supported_models.GenmoMochi): two asymmetric joint blocks (the last one
does not update the text).

comfy/ldm/genmo/joint_model/asymm_models_joint.py, AsymmetricAttention.forward: every block calls
optimized_attention once on cat(image, text[:, :crop_y]) in (B, H, L, D) (skip_reshape=True, heads
positional, no mask): image first, text last. crop_y is the `num_tokens` kwarg, which
model_base.GenmoMochi.extra_conds sets to max(1, attention_mask.sum()) (256 without a mask), so the
text in the joint sequence is min(num_tokens, c_crossattn.shape[1]) tokens: the T5 padding is cut.
The T5 tokens are also attention-pooled (t5_y_embedder, plain SDPA) into the modulation vector, so
the image stream depends on them too.
"""

import comfy.supported_models
import torch

from tiny_families import TinyFamily
from tiny_models import build_from_config

PADDING = 3  # the Mochi T5 tokenizer pads to 256 tokens and masks the padding
HIDDEN_X = 128

CONFIG = {
    "image_model": "mochi_preview", "depth": 2, "patch_size": 2, "num_heads": 2,
    "hidden_size_x": HIDDEN_X, "hidden_size_y": 64,
    "mlp_ratio_x": 1536 * 8 / HIDDEN_X,  # AsymmetricJointBlock asserts an image MLP of 12288
    "mlp_ratio_y": 4.0, "learn_sigma": False, "in_channels": 12, "qk_norm": True, "qkv_bias": False,
    "out_bias": True, "attn_drop": 0.0, "patch_embed_bias": True, "posenc_preserve_area": True,
    "timestep_mlp_bias": True, "attend_to_padding": False, "timestep_scale": 1000.0, "use_t5": True,
    "t5_feat_dim": 4096, "t5_token_length": 256, "rope_theta": 10000.0,
}


def build(seed: int = 0):
    return build_from_config(comfy.supported_models.GenmoMochi, CONFIG, seed)


def conditioning(model, n_text: int, seed: int = 0) -> list:
    """The Mochi T5-XXL encoder: n_text tokens and PADDING masked pad tokens, with their attention mask."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(1, n_text + PADDING, dtype=torch.long)
    mask[:, :n_text] = 1
    return [[torch.randn(1, n_text + PADDING, 4096, generator=g), {"pooled_output": None, "attention_mask": mask}]]


def image_tokens(latent: torch.Tensor) -> int:
    t, h, w = latent.shape[-3:]
    return t * (h // 2) * (w // 2)


FAMILY = TinyFamily(
    name="mochi",
    available=lambda: hasattr(comfy.supported_models, "GenmoMochi"),
    build=build,
    conditioning=conditioning,
    # EmptyMochiLatentVideo: (B, 12, (length - 1) // 6 + 1, H / 8, W / 8); two latent frames here
    latent=lambda model, height, width, batch=1: torch.zeros(batch, 12, 2, height, width),
    joint_text=lambda model, latent, n_text: n_text,
    joint_length=lambda model, latent, n_text: image_tokens(latent) + n_text,
    joint_calls=lambda model: len(model.model.diffusion_model.blocks),
    other_calls=lambda model: 0,
    text_first=False,
)
