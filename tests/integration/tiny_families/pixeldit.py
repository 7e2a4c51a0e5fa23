"""PixelDiT T2I and PiD (0.33+): a pixel-space MMDiT, then pixel-level blocks.

comfy/ldm/pixeldit/model.py: PixDiT_T2I._forward runs the patch blocks (MMDiTBlockT2I), each one
joint call in MMDiTJointAttention.forward: optimized_attention(cat(txt, img) q/k/v (B, H, L, D),
heads, mask=None, skip_reshape=True, skip_output_reshape=True), text first. The text is
context[:, :txt_max_length] (300): Gemma-2 states, the attention_mask the encoder gives is not used.
The image is the RGB picture itself (latent_formats.PixelDiTPixel, EmptyChromaRadianceLatentImage
gives (B, 3, H, W)), one token per 16x16 patch, padded to whole patches. Then every PiTBlock
(comfy/ldm/pixeldit/modules.py RotaryAttention.forward) runs one image-only call over the same
patch grid. PiD (comfy/ldm/pixeldit/pid.py PidNet) is the same network plus a low-quality latent
(the lq_latent / degrade_sigma entries PiDConditioning adds) gated into the patch stream before
some patch blocks; it adds no tokens and no attention calls.

The tests' latent sizes are latent pixels (1/8 of the image): the pixel image is 8x as large.
"""

import torch

import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import as_patcher, patch_tokens, randomize_weights, text_conditioning

TEXT_WIDTH = 2304  # Gemma-2-2B (comfy/text_encoders/pixeldit.py)
TEXT_MAX = 300  # PixDiT_T2I.txt_max_length: the learned y_pos_embedding rows
PIXELS_PER_LATENT = 8

CONFIG = {
    "image_model": "pixeldit_t2i", "in_channels": 3, "patch_size": 16,
    "hidden_size": 128, "num_groups": 4, "patch_depth": 2,
    "pixel_hidden_size": 16, "pixel_attn_hidden_size": 64, "pixel_num_groups": 2, "pixel_depth": 1,
    "txt_embed_dim": TEXT_WIDTH, "txt_max_length": TEXT_MAX,
}
# model_detection.py: PiD v1 with a Flux / SD3 (16-channel, 1/8) low-quality latent
PID_CONFIG = {
    **CONFIG, "image_model": "pid", "lq_latent_channels": 16, "latent_spatial_down_factor": 8,
    "lq_hidden_dim": 32, "lq_num_res_blocks": 1, "lq_interval": 2,
}


def build(config_class, unet_config: dict, seed: int):
    """tiny_models.build_from_config, except that PiD's scalar parameters (SigmaAwareGate.log_alpha)
    are filled as 1-element vectors, which randomize_weights cannot index."""
    config = config_class(unet_config)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    scalars = [(m, n) for m in model.diffusion_model.modules() for n, p in m.named_parameters(recurse=False) if p.ndim == 0]
    for m, n in scalars:
        m._parameters[n] = torch.nn.Parameter(m._parameters[n].data.reshape(1))
    randomize_weights(model.diffusion_model, seed)
    for m, n in scalars:
        m._parameters[n] = torch.nn.Parameter(m._parameters[n].data.reshape(()))
    return as_patcher(model)


def conditioning(model, n_text: int, seed: int = 0) -> list:
    # PixelDiTGemma2TE: (1, n, 2304) states and the attention_mask (all ones here)
    return text_conditioning(n_text, TEXT_WIDTH, seed, attention_mask=torch.ones(1, n_text, dtype=torch.long))


def pid_conditioning(model, n_text: int, seed: int = 0) -> list:
    # nodes_pid.PiDConditioning: the processed source latent and degrade_sigma
    generator = torch.Generator().manual_seed(seed + 1000)
    cond = conditioning(model, n_text, seed)
    cond[0][1]["lq_latent"] = torch.randn(1, 16, 4, 6, generator=generator)
    cond[0][1]["degrade_sigma"] = torch.tensor([0.0])
    return cond


def latent(model, height: int, width: int, batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, 3, height * PIXELS_PER_LATENT, width * PIXELS_PER_LATENT)


def _family(name, config_name, config, conditioning_fn):
    return TinyFamily(
        name=name,
        available=lambda: hasattr(comfy.supported_models, config_name),
        build=lambda seed=0: build(getattr(comfy.supported_models, config_name), config, seed),
        conditioning=conditioning_fn,
        latent=latent,
        joint_text=lambda model, latent, n_text: min(n_text, model.model.diffusion_model.txt_max_length),
        joint_length=lambda model, latent, n_text: (
            min(n_text, model.model.diffusion_model.txt_max_length)
            + patch_tokens(latent, model.model.diffusion_model.patch_size)),
        joint_calls=lambda model: len(model.model.diffusion_model.patch_blocks),
        other_calls=lambda model: len(model.model.diffusion_model.pixel_blocks),
    )


FAMILIES = (
    _family("pixeldit", "PixelDiTT2I", CONFIG, conditioning),
    _family("pid", "PiD", PID_CONFIG, pid_conditioning),
)
