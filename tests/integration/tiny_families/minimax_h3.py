"""MiniMax H3 (0.33+): an audio-video single-stream DiT over one packed sequence, text first.

comfy/ldm/minimax/model.py: MiniMaxH3Model._forward assembles, in PackedLayout order,
[text | keyframe / reference rows | audio (2 stereo rows per audio frame) | video (one row per
1x2x2 patch)], and every DiTBlock's Attention.forward runs one joint call
optimized_attention(AttentionTensorContainer q, k, v of (1, H, L, D), heads, mask=None,
skip_reshape=True). ComfyUI's wrap_attn unwraps the containers into tensors before it calls an
override that has no `container_function`. The text rows are the conditioning's Qwen3-VL states
after condition_proj and the 2-block token refiner, which model_base.MiniMaxH3.extra_conds runs
once per sampling run, outside any transformer_options: the refiner's attention calls never reach
the override. Batch size 1 only (_forward raises otherwise); the positive and negative never batch
(each carries its own PackedLayout in the minimax_payload constant), and the templates sample at
cfg 1 (BasicGuider), as this family does.

Latents are NestedTensor((video (B, 24, T, H/16, W/16), audio (B, 32, 2, T_audio))); the sampler
packs them into (B, 1, N) with a latent_shapes entry (comfy/samplers.py, comfy/utils.pack_latents).
"""

import math

import torch

import comfy.supported_models

from tiny_families import TinyFamily
from tiny_models import build_from_config, text_conditioning

TEXT_WIDTH = 5120  # Qwen3-VL-32B (comfy/text_encoders/minimax.py)
# nodes_minimax_h3.temporal_shape(5), the node's shortest clip: 5 frames -> 2 video latent frames, 8 audio frames
VIDEO_FRAMES, AUDIO_FRAMES = 2, 8

CONFIG = {
    "image_model": "minimax_h3", "hidden_size": 128, "num_layers": 2, "token_refiner_num_layers": 1,
    "num_attention_heads": 4, "attention_head_dim": 32, "ffn_hidden_size": 256,
    "latents_dim": 24, "audio_latents_dim": 32, "patch_size": [1, 2, 2], "text_dim": TEXT_WIDTH,
    "timestep_input_dim": 256, "time_embed_hidden_size": 128, "time_embed_dim": 64,
    "rope_inv_freq_len": 4,  # 3 axes x 4 frequencies x 2 = 24 rotated dims of 32 (real: 96 of 128)
}


def available() -> bool:
    return hasattr(comfy.supported_models, "MiniMaxH3")


def conditioning(model, n_text: int, seed: int = 0) -> list:
    # MiniMaxH3TEModel: (1, n, 5120) states and the per-token modality tags (1 = text; 0 on vision blocks)
    return text_conditioning(n_text, TEXT_WIDTH, seed, minimax_token_tags=torch.ones(n_text, dtype=torch.long))


def latent(model, height: int, width: int, batch: int = 1):
    import comfy.nested_tensor

    video = torch.zeros(batch, 24, VIDEO_FRAMES, height, width)
    audio = torch.zeros(batch, 32, 2, AUDIO_FRAMES)
    return comfy.nested_tensor.NestedTensor((video, audio))


def visual_rows(latent) -> int:
    """Audio rows then video rows: 2 per audio frame, one per 1x2x2 video patch (padded)."""
    video, audio = latent.unbind()[:2]
    return 2 * audio.shape[-1] + video.shape[2] * math.ceil(video.shape[3] / 2) * math.ceil(video.shape[4] / 2)


FAMILY = TinyFamily(
    name="minimax-h3",
    available=available,
    build=lambda seed=0: build_from_config(comfy.supported_models.MiniMaxH3, CONFIG, seed),
    conditioning=conditioning,
    latent=latent,
    joint_text=lambda model, latent, n_text: n_text,
    joint_length=lambda model, latent, n_text: n_text + visual_rows(latent),
    joint_calls=lambda model: len(model.model.diffusion_model.blocks),
    other_calls=lambda model: 0,
    sampling={"cfg": 1.0},
)
