"""Chroma and Chroma Radiance: one double-stream and one single-stream block.

comfy.supported_models.Chroma -> model_base.Chroma -> comfy.ldm.chroma.model.Chroma, and
comfy.supported_models.ChromaRadiance -> model_base.ChromaRadiance ->
comfy.ldm.chroma_radiance.model.ChromaRadiance: FLUX.1 blocks without per-block modulation (an
"Approximator" MLP, distilled_guidance_layer, makes every block's shift/scale/gate from the
timestep), no pooled vector, T5-XXL text. Radiance works on pixels: a Conv2d patch embedder
(img_in_patch) and a per-patch NeRF MLP head after the transformer, which attends nothing.

Joint attention: Forward_orig of comfy/ldm/chroma/model.py runs the double blocks over
cat(txt, img) and the single blocks over the same joined sequence; text first, every attention
call joint. The blocks are comfy/ldm/chroma/layers.py DoubleStreamBlock / SingleStreamBlock on
ComfyUI 0.3.64 and comfy/ldm/flux/layers.py ones (modulation=False) on 0.33; both call
comfy/ldm/flux/math.py attention. The text is the conditioning's token tensor: the T5 tokens and
end token, unpadded (PixArt tokenizer, min_length 1; the templates' T5TokenizerOptions 0, 0).
"""

import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import HIDDEN, build_from_config, empty_latent, patch_tokens, text_conditioning

RADIANCE_PATCH = 4  # the real model has 16 (read from img_in_patch); 4 keeps tiny images several tokens long

CONFIG = {
    "image_model": "chroma",
    "in_channels": 64, "out_channels": 64, "patch_size": 2,  # 16 latent channels in 2x2 patches
    "context_in_dim": 4096, "hidden_size": HIDDEN, "num_heads": HIDDEN // 64, "mlp_ratio": 4.0,
    "depth": 1, "depth_single_blocks": 1,
    "axes_dim": [16, 24, 24], "theta": 10000, "qkv_bias": True,
    "in_dim": 64, "out_dim": HIDDEN, "hidden_dim": 64, "n_layers": 1,  # Approximator (real: 5120 wide, 5 layers)
}

RADIANCE_CONFIG = {
    **CONFIG, "image_model": "chroma_radiance",
    "in_channels": 3, "out_channels": 3, "patch_size": RADIANCE_PATCH,
    "nerf_hidden_size": 16, "nerf_mlp_ratio": 4, "nerf_depth": 1, "nerf_max_freqs": 8,
    "nerf_tile_size": 512, "nerf_final_head_type": "conv", "nerf_embedder_dtype": None,
}


def with_host_fields(config: dict, params_class) -> dict:
    """The config with the fields this host's params dataclass declares and detection fills:
    0.33 adds txt_ids_dims and vec_in_dim (Chroma) and use_x0, use_sequential_txt_ids (Radiance)."""
    defaults = {"txt_ids_dims": [], "vec_in_dim": None, "use_x0": False, "use_sequential_txt_ids": False}
    fields = params_class.__dataclass_fields__
    return {**config, **{k: v for k, v in defaults.items() if k in fields and k not in config}}


def build(seed: int = 0):
    import comfy.ldm.chroma.model
    return build_from_config(comfy.supported_models.Chroma,
                             with_host_fields(CONFIG, comfy.ldm.chroma.model.ChromaParams), seed)


def build_radiance(seed: int = 0):
    import comfy.ldm.chroma_radiance.model
    return build_from_config(comfy.supported_models.ChromaRadiance,
                             with_host_fields(RADIANCE_CONFIG, comfy.ldm.chroma_radiance.model.ChromaRadianceParams), seed)


def conditioning(model, n_text: int, seed: int = 0) -> list:
    """CLIPTextEncode with the Chroma T5 encoder: tokens only, pooled None, no guidance."""
    return text_conditioning(n_text, 4096, seed, pooled_output=None)


def _calls(model) -> int:
    return len(model.model.diffusion_model.double_blocks) + len(model.model.diffusion_model.single_blocks)


FAMILIES = (
    TinyFamily(
        name="chroma",
        available=lambda: hasattr(comfy.supported_models, "Chroma"),
        build=build,
        conditioning=conditioning,
        latent=lambda model, height, width, batch=1: empty_latent(height, width, batch, channels=16),
        joint_text=lambda model, latent, n_text: n_text,
        joint_length=lambda model, latent, n_text: n_text + patch_tokens(latent, 2),
        joint_calls=_calls,
        other_calls=lambda model: 0,
    ),
    TinyFamily(
        name="chroma-radiance",
        available=lambda: hasattr(comfy.supported_models, "ChromaRadiance"),
        build=build_radiance,
        conditioning=conditioning,
        # EmptyChromaRadianceLatentImage: the RGB image itself, padded to whole patches
        latent=lambda model, height, width, batch=1: empty_latent(height, width, batch, channels=3),
        joint_text=lambda model, latent, n_text: n_text,
        joint_length=lambda model, latent, n_text: n_text + patch_tokens(latent, RADIANCE_PATCH),
        joint_calls=_calls,
        other_calls=lambda model: 0,
    ),
)
