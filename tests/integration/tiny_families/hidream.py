"""HiDream-I1 and HiDream-E1 (supported_models.HiDream): one double-stream and one single-stream block.

comfy/ldm/hidream/model.py: HiDreamAttnProcessor_flashattn.__call__ joins cat(image, text) and
calls `attention` (optimized_attention on (B, L, H*D), heads positional, no mask); every attention
call is joint and the image comes first, the text last. The text stream is
    T5 tokens (c_crossattn)  +  Llama layer llama_layers[-1]  +  Llama layer llama_layers[block]
(HiDreamImageTransformer2DModel._forward: `initial_encoder_hidden_states` = cat(T5, last Llama
layer), each block appends its own Llama layer), so it holds
    c_crossattn.shape[1] + 2 * encoder_hidden_states_llama3.shape[2] tokens.
encoder_hidden_states_llama3 is the conditioning's "conditioning_llama3", (B, 32 layers, L, 4096).

HiDream-E1 is the same model fed InstructPixToPixConditioning's "concat_latent_image": the model
concatenates it to the noise along the width (x = cat([x, image_cond], dim=-1)), so the image
stream covers H x (W + W_ref) and the E1 latent must have the reference's height;
InstructPixToPixConditioning makes the latent zeros_like(reference), so does `latent` here.
"""

import comfy.supported_models
import torch

from tiny_families import TinyFamily
from tiny_models import build_from_config, empty_latent, text_conditioning

LLAMA_LAYERS = 32  # the Llama-3.1-8B text encoder gives every layer's output, the embeddings dropped
LLAMA_TOKENS = 5  # the real encoder pads to at least 128; any count works
E1_REFERENCE = (6, 10)  # the E1 reference latent (and so the E1 latent), in latent pixels

CONFIG = {
    "image_model": "hidream", "patch_size": 2, "in_channels": 16, "out_channels": 16,
    "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 32, "num_attention_heads": 4,
    "caption_channels": [4096, 4096], "text_emb_dim": 2048,
    "num_routed_experts": 4, "num_activated_experts": 2,
    "axes_dims_rope": [16, 8, 8], "max_resolution": [128, 128],
    "llama_layers": [0, LLAMA_LAYERS - 1],  # one per block: double, then single
}


def build(seed: int = 0):
    return build_from_config(comfy.supported_models.HiDream, CONFIG, seed)


def conditioning(model, n_text: int, seed: int = 0, reference: bool = False) -> list:
    """What the QuadrupleCLIPLoader's HiDream encoder gives: T5 tokens, CLIP-L+G pooled (2048) and
    every Llama layer; E1 adds InstructPixToPixConditioning's reference latent."""
    g = torch.Generator().manual_seed(seed + 1000)
    extra = {"conditioning_llama3": torch.randn(1, LLAMA_LAYERS, LLAMA_TOKENS, 4096, generator=g)}
    if reference:
        extra["concat_latent_image"] = torch.randn(1, 16, *E1_REFERENCE, generator=g)
    return text_conditioning(n_text, 4096, seed, pooled=2048, **extra)


def image_tokens(latent: torch.Tensor, reference_width: int = 0) -> int:
    h, w = latent.shape[-2], latent.shape[-1] + reference_width
    return -(-h // 2) * -(-w // 2)


def _family(name: str, reference: bool) -> TinyFamily:
    ref_w = E1_REFERENCE[1] if reference else 0
    return TinyFamily(
        name=name,
        available=lambda: hasattr(comfy.supported_models, "HiDream"),
        build=build,
        conditioning=lambda model, n_text, seed=0: conditioning(model, n_text, seed, reference),
        latent=(lambda model, height, width, batch=1: empty_latent(*E1_REFERENCE, batch, channels=16)) if reference
        else (lambda model, height, width, batch=1: empty_latent(height, width, batch, channels=16)),
        joint_text=lambda model, latent, n_text: n_text + 2 * LLAMA_TOKENS,
        joint_length=lambda model, latent, n_text: image_tokens(latent, ref_w) + n_text + 2 * LLAMA_TOKENS,
        joint_calls=lambda model: len(model.model.diffusion_model.double_stream_blocks) + len(model.model.diffusion_model.single_stream_blocks),
        other_calls=lambda model: 0,
        text_first=False,
    )


FAMILIES = (
    _family("hidream", reference=False),
    _family("hidream-e1", reference=True),
)
