"""Ovis-Image: one double-stream and one single-stream block.

comfy/model_detection.py (the Flux branch) marks Ovis by SwiGLU MLPs (yak_mlp: img_mlp.gate_proj)
and an RMSNorm on the text input (txt_norm); it has neither guidance input nor pooled vector, so
detection gives guidance_embed=False and the first matching config is
comfy.supported_models.FluxSchnell (image_model "flux", guidance_embed False), not Flux ->
model_base.Flux (ModelType.FLOW) -> comfy.ldm.flux.model.Flux. Text positions lie on RoPE axes 1
and 2 (txt_ids_dims=[1, 2]); image positions are not shifted (unlike LongCat).

Joint attention (comfy/ldm/flux/layers.py, DoubleStreamBlock.forward and SingleStreamBlock.forward,
through comfy/ldm/flux/math.py attention): cat(txt, img), text first; every call is joint.

Text (comfy/text_encoders/ovis.py): Qwen3-2B (Ovis 2.5) hidden states, 2048 wide; the tokenizer
pads the templated prompt to 284 tokens and the encoder zeroes the pads (zero_out_masked) and cuts
the 28-token template head, so a short prompt gives 256 text rows, zero rows at the end.
"""

import comfy.ldm.flux.model
import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import HIDDEN, build_from_config, empty_latent, patch_tokens, text_conditioning

WIDTH = 2048  # Qwen3-2B hidden size
MIN_ROWS = 284 - 28  # Qwen3Tokenizer min_length=284, less the template head OvisTEModel cuts

CONFIG = {
    "image_model": "flux", "guidance_embed": False, "vec_in_dim": None,
    "context_in_dim": WIDTH, "txt_ids_dims": [1, 2], "yak_mlp": True, "txt_norm": True,
    "in_channels": 16, "out_channels": 16, "patch_size": 2,
    "hidden_size": HIDDEN, "num_heads": HIDDEN // 64, "mlp_ratio": 4.0,
    "depth": 1, "depth_single_blocks": 1,
    "axes_dim": [16, 24, 24], "theta": 10000, "qkv_bias": True,
}


def available() -> bool:
    fields = comfy.ldm.flux.model.FluxParams.__dataclass_fields__
    return "yak_mlp" in fields and "txt_norm" in fields


def build(seed: int = 0):
    return build_from_config(comfy.supported_models.FluxSchnell, CONFIG, seed)


def rows(n_text: int) -> int:
    return max(n_text, MIN_ROWS)


def conditioning(model, n_text: int, seed: int = 0) -> list:
    """CLIPTextEncode with the Ovis encoder: n_text tokens, then zero rows up to 256."""
    cond = text_conditioning(rows(n_text), WIDTH, seed, pooled_output=None)
    cond[0][0][:, n_text:] = 0.0
    return cond


FAMILY = TinyFamily(
    name="ovis-image",
    available=available,
    build=build,
    conditioning=conditioning,
    latent=lambda model, height, width, batch=1: empty_latent(height, width, batch, channels=16),
    joint_text=lambda model, latent, n_text: rows(n_text),
    joint_length=lambda model, latent, n_text: rows(n_text) + patch_tokens(latent, 2),
    joint_calls=lambda model: len(model.model.diffusion_model.double_blocks) + len(model.model.diffusion_model.single_blocks),
    other_calls=lambda model: 0,
)
