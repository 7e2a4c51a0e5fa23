"""OmniGen2 and Boogu-Image (supported_models.Omnigen2, Boogu): Lumina-style refiners, then joint blocks.

comfy/ldm/omnigen/omnigen2.py, Attention.forward is every attention call. The forward
(OmniGen2Transformer2DModel.forward) refines the caption alone (context_refiner), the
image alone (noise_refiner) and, when the conditioning has "reference_latents" (kwarg
ref_latents), all reference images together (ref_image_refiner); then every block of
`layers` attends over [text, references, image], text first. The text is the whole
c_crossattn (Qwen2.5-VL-3B last hidden state); num_tokens (the TE mask's sum) must equal
its length, as it sizes the RoPE table. The mask goes positionally (5th argument).

Boogu (comfy/ldm/boogu/model.py, 0.33) adds double-stream blocks before the single-stream
ones: BooguDoubleStreamProcessor.forward makes a joint call over [instruction, references,
image] (separate q/k/v projections per stream) and the block's img_self_attn an
image-only call over [references, image]; then single_stream_layers attend over
[text, references, image] like OmniGen2's layers. Its text is Qwen3-VL-8B's last hidden
state, and in the edit variant (TextEncodeBooguEdit) the vision tokens of the input image
are inside it (positive only).
"""

import torch

import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import HIDDEN, build_from_config, patch_tokens, text_conditioning

REF_SIZE = (4, 6)  # reference latent (Flux VAE), latent pixels: 6 tokens

OMNIGEN2 = {
    "image_model": "omnigen2", "patch_size": 2, "in_channels": 16, "out_channels": None,
    "hidden_size": HIDDEN, "num_layers": 2, "num_refiner_layers": 1,
    "num_attention_heads": HIDDEN // 64, "num_kv_heads": 1, "multiple_of": 256, "ffn_dim_multiplier": None,
    "norm_eps": 1e-5, "axes_dim_rope": [16, 24, 24], "axes_lens": [1024, 1664, 1664],
    "text_feat_dim": 2048, "timestep_scale": 1000.0,
}
BOOGU = {
    "image_model": "boogu", "patch_size": 2, "in_channels": 16, "hidden_size": HIDDEN,
    "num_layers": 1, "num_double_stream_layers": 1, "num_refiner_layers": 1,
    "num_attention_heads": HIDDEN // 64, "num_kv_heads": 1, "axes_dim_rope": [16, 24, 24],
    "axes_lens": [2048, 1664, 1664], "instruction_feat_dim": 4096, "timestep_scale": 1000.0,
}


def build(config_name: str, config: dict):
    return lambda seed=0: build_from_config(getattr(comfy.supported_models, config_name), config, seed)


def conditioning(width: int, reference: bool):
    """CLIPTextEncode (Qwen2.5-VL-3B / Qwen3-VL-8B TE): (1, n, width) tokens and the TE's all-ones
    attention_mask (1, n), which extra_conds turns into num_tokens (required). Edit: ReferenceLatent /
    TextEncodeBooguEdit add "reference_latents" [(1, 16, h, w)] (to positive and negative)."""
    def make(model, n_text: int, seed: int = 0) -> list:
        cond = text_conditioning(n_text, width, seed, attention_mask=torch.ones(1, n_text, dtype=torch.long))
        if reference:
            g = torch.Generator().manual_seed(seed + 1000)
            cond[0][1]["reference_latents"] = [torch.randn(1, 16, *REF_SIZE, generator=g)]
        return cond
    return make


REF_TOKENS = patch_tokens(torch.zeros(1, 16, *REF_SIZE), 2)


def family(name, config_name, config, width, reference, available):
    refs = REF_TOKENS if reference else 0

    def joint_calls(model):
        dm = model.model.diffusion_model
        return len(dm.layers) if hasattr(dm, "layers") else len(dm.double_stream_layers) + len(dm.single_stream_layers)

    def other_calls(model):
        dm = model.model.diffusion_model
        refiners = len(dm.context_refiner) + len(dm.noise_refiner) + (len(dm.ref_image_refiner) if reference else 0)
        return refiners + len(getattr(dm, "double_stream_layers", ()))  # Boogu: one image-only call per double block

    return TinyFamily(
        name=name,
        available=available,
        build=build(config_name, config),
        conditioning=conditioning(width, reference),
        latent=lambda model, height, width_, batch=1: torch.zeros(batch, 16, height, width_),
        joint_text=lambda model, lat, n_text: n_text,
        joint_length=lambda model, lat, n_text: n_text + refs + patch_tokens(lat, 2),
        joint_calls=joint_calls,
        other_calls=other_calls,
    )


FAMILIES = (
    family("omnigen2", "Omnigen2", OMNIGEN2, 2048, False, lambda: True),
    family("omnigen2-edit", "Omnigen2", OMNIGEN2, 2048, True, lambda: True),
    family("boogu", "Boogu", BOOGU, 4096, False, lambda: hasattr(comfy.supported_models, "Boogu")),
    family("boogu-edit", "Boogu", BOOGU, 4096, True, lambda: hasattr(comfy.supported_models, "Boogu")),
)
