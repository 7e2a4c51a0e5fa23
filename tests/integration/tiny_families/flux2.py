"""FLUX.2 dev and klein: one double-stream and one single-stream block, global modulation.

Both are comfy.supported_models.Flux2 -> model_base.Flux2 -> comfy.ldm.flux.model.Flux, the
FLUX.1 code with the FLUX.2 switches (global_modulation, mlp_silu_act, no biases, 4 RoPE axes,
txt_ids_dims=[3]: text positions counted along the 4th axis). The variants differ only in
unet_config (guidance_embed, context_in_dim and sizes), not in attention layout:
  dev:   Mistral-3 24B text encoder, 3 layers stacked -> 3 * 5120 = 15360 wide, guidance input;
  klein: Qwen3 4B (3 * 2560 = 7680) or 8B (3 * 4096 = 12288), no guidance input.

Joint attention (comfy/ldm/flux/layers.py, DoubleStreamBlock.forward and SingleStreamBlock.forward,
through comfy/ldm/flux/math.py attention): cat(txt, img, reference images), text first; every
attention call is joint. model_base.Flux2.extra_conds left-pads the text with zero rows to 512
tokens, so the joint text is max(512, tokens) long. The klein tokenizer pads the prompt itself to
at least 512 tokens (right, pad-token states and an attention mask the model ignores); the dev
(Mistral) tokenizer does not pad, so dev text shorter than 512 starts with zero rows.
"""

import comfy.supported_models
import torch

from tiny_families import TinyFamily
from tiny_models import HIDDEN, build_from_config, empty_latent, text_conditioning

TEXT_LEN = 512  # model_base.Flux2.extra_conds: target_text_len
KLEIN_MIN_TOKENS = 512  # comfy/text_encoders/flux.py Qwen3Tokenizer: min_length=512
DEV_WIDTH = 3 * 5120  # Flux2TEModel stacks 3 Mistral-3 24B hidden states
KLEIN_WIDTH = 3 * 2560  # ... or 3 Qwen3-4B hidden states


def config(context_in_dim: int, guidance_embed: bool) -> dict:
    """What comfy/model_detection.py gives for a FLUX.2 state dict, narrowed."""
    return {
        "image_model": "flux2", "guidance_embed": guidance_embed,
        "in_channels": 128, "out_channels": 128, "patch_size": 1,
        "vec_in_dim": None, "context_in_dim": context_in_dim,
        "hidden_size": HIDDEN, "num_heads": HIDDEN // 64, "mlp_ratio": 3.0,
        "depth": 1, "depth_single_blocks": 1,
        "axes_dim": [16, 16, 16, 16], "theta": 2000, "qkv_bias": False,
        "global_modulation": True, "mlp_silu_act": True, "ops_bias": False,
        "default_ref_method": "index", "ref_index_scale": 10.0, "txt_ids_dims": [3],
        "yak_mlp": False, "txt_norm": False,
    }


def available() -> bool:
    return hasattr(comfy.supported_models, "Flux2")


def dev_conditioning(model, n_text: int, seed: int = 0) -> list:
    """CLIPTextEncode with the Mistral encoder (no padding, all-ones mask), then FluxGuidance 4."""
    return text_conditioning(n_text, DEV_WIDTH, seed, pooled_output=None, guidance=4.0,
                             attention_mask=torch.ones(1, n_text, dtype=torch.long))


def klein_conditioning(model, n_text: int, seed: int = 0) -> list:
    """CLIPTextEncode with the Qwen3 encoder: padded to 512 tokens, the mask marks the pads."""
    length = max(n_text, KLEIN_MIN_TOKENS)
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[:, :n_text] = 1
    return text_conditioning(length, KLEIN_WIDTH, seed, pooled_output=None, attention_mask=mask)


def joint_text(model, latent, n_text: int) -> int:
    return max(TEXT_LEN, n_text)


def _family(name, context_in_dim, guidance_embed, conditioning):
    return TinyFamily(
        name=name,
        available=available,
        build=lambda seed=0: build_from_config(comfy.supported_models.Flux2, config(context_in_dim, guidance_embed), seed),
        conditioning=conditioning,
        # EmptyFlux2LatentImage: 128 channels at 1/16 of the image; patch size 1
        latent=lambda model, height, width, batch=1: empty_latent(height, width, batch, channels=128),
        joint_text=joint_text,
        joint_length=lambda model, latent, n_text: joint_text(model, latent, n_text) + latent.shape[-2] * latent.shape[-1],
        joint_calls=lambda model: len(model.model.diffusion_model.double_blocks) + len(model.model.diffusion_model.single_blocks),
        other_calls=lambda model: 0,
    )


FAMILIES = (
    _family("flux2", DEV_WIDTH, True, dev_conditioning),
    _family("flux2-klein", KLEIN_WIDTH, False, klein_conditioning),
)
