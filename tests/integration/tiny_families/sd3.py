"""SD3 Medium, SD3.5 Large (QK-norm) and SD3.5 Medium (MMDiT-X): two joint blocks wide 128.

comfy/ldm/modules/diffusionmodules/mmdit.py, _block_mixing: one joint call per block over
cat(context, x), text first; (B, L, H·D), heads by keyword. MMDiT-X (SD3.5 Medium) adds an
image-only attention (x_block.attn2) in the listed blocks. ComfyUI's detection reads these
models' sizes from the state-dict shapes, so they load through comfy.sd as real files do.
"""

import comfy.sd
import comfy.supported_models
import torch

from tiny_families import TinyFamily
from tiny_models import HIDDEN, build_from_config, empty_latent, patch_tokens, text_conditioning


def build(seed: int, qk_norm: bool, x_block_self_attn_layers: list):
    depth = HIDDEN // 64  # detection: depth = x_embedder width / 64, heads = depth
    weights = build_from_config(comfy.supported_models.SD3, {
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": depth, "adm_in_channels": 2048,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": HIDDEN}},
        "pos_embed_max_size": 32, "num_patches": 32 * 32, "pos_embed_scaling_factor": None,
        "qk_norm": "rms" if qk_norm else None, "x_block_self_attn_layers": x_block_self_attn_layers,
    }, seed).model.diffusion_model.state_dict()
    model = comfy.sd.load_diffusion_model_state_dict(weights, model_options={"dtype": torch.float32})
    detected = model.model.model_config.unet_config
    assert (detected["depth"], detected.get("qk_norm"), detected["x_block_self_attn_layers"]) == (
        depth, "rms" if qk_norm else None, x_block_self_attn_layers), f"ComfyUI detected another MMDiT: {detected}"
    return model


def _family(name: str, qk_norm: bool, attn2: bool) -> TinyFamily:
    layers = list(range(HIDDEN // 64)) if attn2 else []
    return TinyFamily(
        name=name,
        available=lambda: True,
        build=lambda seed=0: build(seed, qk_norm, layers),
        conditioning=lambda model, n_text, seed=0: text_conditioning(n_text, 4096, seed, pooled=2048),
        latent=lambda model, height, width, batch=1: empty_latent(height, width, batch, channels=16),
        joint_text=lambda model, latent, n_text: n_text,
        joint_length=lambda model, latent, n_text: n_text + patch_tokens(latent, 2),
        joint_calls=lambda model: len(model.model.diffusion_model.joint_blocks),
        other_calls=lambda model: len(model.model.model_config.unet_config["x_block_self_attn_layers"]),
    )


FAMILIES = (
    _family("sd3", qk_norm=False, attn2=False),
    _family("sd3.5-large", qk_norm=True, attn2=False),
    _family("sd3.5-medium", qk_norm=True, attn2=True),
)
