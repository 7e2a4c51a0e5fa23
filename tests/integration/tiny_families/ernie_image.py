"""ERNIE-Image (ComfyUI 0.33+): a single-stream DiT, two shared-AdaLN blocks.

comfy/ldm/ernie/model.py, ErnieImageModel.forward: hidden_states = cat(image, text), IMAGE FIRST,
the text last; every block (ErnieImageSharedAdaLNBlock -> ErnieImageAttention.forward) runs one
self-attention over the whole sequence, q, k, v as (B, L, H*D), heads positional, mask=None.
The text is text_proj(context), context being c_crossattn (Ministral-3 3B hidden states, width
3072, no padding); image tokens are (H/p) * (W/p) with p = 1 on the 128-channel Flux2 latent.

ErnieImageAttention calls optimized_attention(q, k, v, heads, mask=...) WITHOUT
transformer_options, so transformer_options["optimized_attention_override"] never sees its calls.
TACA cannot reach them and refuses the model: this module builds it for that test only and
defines no FAMILY.
"""

import comfy.supported_models

from tiny_models import build_from_config

CONFIG = {
    "image_model": "ernie",
    "hidden_size": 128, "num_attention_heads": 2, "num_layers": 2, "ffn_hidden_size": 256,
    "in_channels": 128, "out_channels": 128, "patch_size": 1, "text_in_dim": 3072,
    "rope_axes_dim": (16, 24, 24),  # sums to the head size (real: 4096 / 32 heads, (32, 48, 48))
}


def build(seed: int = 0):
    return build_from_config(comfy.supported_models.ErnieImage, CONFIG, seed)


def available() -> bool:
    return hasattr(comfy.supported_models, "ErnieImage")
