"""HunyuanVideo 1.0 (T2V, I2V, SkyReels I2V), HunyuanImage 2.1 (and its refiner), HunyuanVideo 1.5.

All are comfy.ldm.hunyuan_video.model.HunyuanVideo: one double-stream and one single-stream block
here, with Flux's DoubleStreamBlock / SingleStreamBlock (comfy/ldm/flux/layers.py, attention via
comfy/ldm/flux/math.py:attention: (B, H, L, D), skip_reshape=True, heads positional, mask keyword).
Every block's attention is joint. The joint sequence is
    [text stream, ref_latent tokens, image tokens]    where this ComfyUI has text first, and
    [ref_latent tokens, image tokens, text stream]    where it has text last (older ComfyUI: the
                                                      double blocks are built with flipped_img_txt=True),
see HunyuanVideo.forward_orig. The text stream is
    [clip_fea vision tokens (1.5 I2V)] [txt_byt5 (1.5)] c_crossattn [txt_byt5 (2.1)]
so it holds c_crossattn.shape[1] + txt_byt5.shape[1] + clip_fea.shape[1] tokens (those the model
has inputs for). Before the blocks, txt_in (TokenRefiner) runs 2 text-only attention calls.
An attention_mask kwarg (only when the text has padding) becomes an additive (1, 1, L) key mask.
HunyuanVideo I2V puts the llava vision tokens inside c_crossattn itself (TextEncodeHunyuanVideo_ImageToVideo).
"""

import comfy.supported_models
import torch

from tiny_families import TinyFamily
from tiny_models import build_from_config

FRAMES = 2  # latent frames of the video variants
REF = (1, 4, 6)  # HunyuanImageToVideo "custom": the reference latent (T, H, W)
BYT5_TOKENS = 3  # conditioning_byt5small, present when the prompt quotes text
VISION_TOKENS = 4  # 1.5 I2V: CLIP vision (SigLIP) last_hidden_state tokens (729 in the real model)

T2V = {
    "image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "patch_size": [1, 2, 2],
    "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 128, "num_heads": 2, "mlp_ratio": 4.0,
    "depth": 1, "depth_single_blocks": 1, "axes_dim": [16, 24, 24], "theta": 256, "qkv_bias": True,
    "guidance_embed": True, "byt5": False, "meanflow": False,
}
IMAGE21 = {**T2V, "in_channels": 64, "out_channels": 64, "patch_size": [1, 1], "axes_dim": [32, 32],
           "vec_in_dim": None, "context_in_dim": 3584, "byt5": True, "guidance_embed": False}
REFINER = {**T2V, "in_channels": 128, "out_channels": 64, "patch_size": [1, 1, 1], "vec_in_dim": None,
           "context_in_dim": 3584, "meanflow": True}
V15 = {**T2V, "in_channels": 65, "out_channels": 32, "patch_size": [1, 1, 1], "vec_in_dim": None,
       "context_in_dim": 3584, "byt5": True, "guidance_embed": False,
       "use_cond_type_embedding": True, "vision_in_dim": 1152, "meanflow_sum": True}
V15_SR = {**V15, "in_channels": 98, "meanflow": True}
NEW_FIELDS = {"use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False}  # HunyuanVideo 1.5's


def params(config: dict) -> dict:
    """The config with the fields this host's HunyuanVideoParams declares and the config lacks."""
    import comfy.ldm.hunyuan_video.model
    fields = comfy.ldm.hunyuan_video.model.HunyuanVideoParams.__dataclass_fields__
    return {**{k: v for k, v in NEW_FIELDS.items() if k in fields}, **config}


def _text_first() -> bool:
    """Whether this ComfyUI's HunyuanVideo puts the text first: build it on the meta device and ask
    its double block (older ComfyUI builds them with flipped_img_txt=True: image first)."""
    import comfy.ldm.hunyuan_video.model
    import comfy.ops
    model = comfy.ldm.hunyuan_video.model.HunyuanVideo(**params(T2V), device="meta", operations=comfy.ops.disable_weight_init)
    return not getattr(model.double_blocks[0], "flipped_img_txt", False)


TEXT_FIRST = _text_first()


def tokens(shape, patch) -> int:
    """Image tokens of a latent's spatial (T, H, W) or (H, W) shape: HunyuanVideo.img_ids rounds up."""
    n = 1
    for size, p in zip(shape, patch):
        n *= (size + p // 2) // p
    return n


def conditioning(model, n_text: int, seed: int = 0, width=4096, pooled=768, byt5=False, vision=False,
                 **extra) -> list:
    g = torch.Generator().manual_seed(seed)
    options = dict(extra)
    tokens_ = torch.randn(1, n_text, width, generator=g)
    # CLIP-L's pooled output (HunyuanVideo 1.0); the Qwen2.5-VL encoders give pooled_output None
    options["pooled_output"] = torch.randn(1, pooled, generator=g) if pooled else None
    if byt5:
        options["conditioning_byt5small"] = torch.randn(1, BYT5_TOKENS, 1472, generator=g)
    if vision:
        import comfy.clip_vision
        output = comfy.clip_vision.Output()
        output.last_hidden_state = torch.randn(1, VISION_TOKENS, 1152, generator=g)
        options["clip_vision_output"] = output
    return [[tokens_, options]]


def _family(name, config_class, config, latent_shape, cond=None, text_extra=0, ref=False, sampling=None):
    """latent_shape(height, width) -> the latent's shape after (B, C)."""
    cond = cond or {}
    patch = config["patch_size"]
    ref_tokens = tokens(REF, patch) if ref else 0
    if ref:
        cond = {**cond, "ref_latent": lambda g: torch.randn(1, config["out_channels"], *REF, generator=g)}

    def make_conditioning(model, n_text, seed=0):
        g = torch.Generator().manual_seed(seed + 1000)
        static = {k: v for k, v in cond.items() if not callable(v)}
        drawn = {k: v(g) for k, v in cond.items() if callable(v)}
        return conditioning(model, n_text, seed, **static, **drawn)

    return TinyFamily(
        name=name,
        available=lambda: hasattr(comfy.supported_models, config_class) and all(
            k in params({}) for k in config if k in NEW_FIELDS),
        build=lambda seed=0: build_from_config(getattr(comfy.supported_models, config_class), params(config), seed),
        conditioning=make_conditioning,
        latent=lambda model, height, width, batch=1: torch.zeros(batch, config["out_channels"], *latent_shape(height, width)),
        joint_text=lambda model, latent, n_text: n_text + text_extra,
        joint_length=lambda model, latent, n_text: n_text + text_extra + ref_tokens + tokens(latent.shape[2:], patch),
        joint_calls=lambda model: len(model.model.diffusion_model.double_blocks) + len(model.model.diffusion_model.single_blocks),
        other_calls=lambda model: len(model.model.diffusion_model.txt_in.individual_token_refiner.blocks),
        text_first=TEXT_FIRST,
        sampling=sampling,
    )


def video(h, w):
    return (FRAMES, h, w)


def image(h, w):
    return (h, w)


def still(h, w):
    """The refiner's latent: one frame of 64 channels (its empty latent has 32, which KSampler's
    fix_empty_latent_channels repeats to the latent format's 64)."""
    return (1, h, w)


def _refiner_input(g):
    """HunyuanRefinerLatent's concat_latent_image, one image: a 32-channel refiner-VAE latent where the
    refiner's latent format packs two such frames into one of 64 channels (process_in), else 64 channels."""
    import comfy.latent_formats
    packs = "process_in" in vars(comfy.latent_formats.HunyuanImage21Refiner)
    return torch.randn(1, 32 if packs else 64, 1, 4, 6, generator=g)


def _start_image(channels, frames=1):
    """HunyuanImageToVideo "v1 (concat)" / HunyuanVideo15ImageToVideo: the encoded start image (one
    latent frame; 1.5 pads it with zeros to the video's frames) and the mask, 0 on that frame."""
    def draw(g):
        image = torch.zeros(1, channels, frames, 4, 6)
        image[:, :, :1] = torch.randn(1, channels, 1, 4, 6, generator=g)
        return image
    mask = torch.ones(1, 1, FRAMES, 4, 6)
    mask[:, :, :1] = 0.0
    return {"concat_latent_image": draw, "concat_mask": mask}


QWEN = {"width": 3584, "pooled": None}  # Qwen2.5-VL-7B hidden states, no pooled output

FAMILIES = (
    _family("hunyuan-video", "HunyuanVideo", T2V, video),
    # HunyuanImageToVideo "custom" sets ref_latent on the positive only, so ComfyUI never batches it with
    # the negative: batched (B > 1) HunyuanVideo.forward_orig fails writing into ref_latent_ids, an
    # expanded view (einops.repeat). Sampled without CFG (as the guidance-distilled 1.0 models are).
    _family("hunyuan-video-ref", "HunyuanVideo", T2V, video, ref=True, sampling={"cfg": 1.0}),
    _family("hunyuan-video-i2v", "HunyuanVideoI2V", {**T2V, "in_channels": 33}, video,
            cond=_start_image(16)),
    _family("hunyuan-video-skyreels-i2v", "HunyuanVideoSkyreelsI2V", {**T2V, "in_channels": 32}, video,
            cond=_start_image(16)),
    _family("hunyuan-image-2.1", "HunyuanImage21", IMAGE21, image,
            cond={**QWEN, "byt5": True}, text_extra=BYT5_TOKENS),
    _family("hunyuan-image-2.1-refiner", "HunyuanImage21Refiner", REFINER, still,
            cond={**QWEN, "concat_latent_image": _refiner_input}),
    _family("hunyuan-video-1.5", "HunyuanVideo15", V15, video,
            cond={**QWEN, "byt5": True}, text_extra=BYT5_TOKENS),
    _family("hunyuan-video-1.5-i2v", "HunyuanVideo15", V15, video,
            cond={**QWEN, "byt5": True, "vision": True, **_start_image(32, FRAMES)},
            text_extra=BYT5_TOKENS + VISION_TOKENS),
    _family("hunyuan-video-1.5-sr", "HunyuanVideo15_SR_Distilled", V15_SR, video,
            cond={**QWEN, "byt5": True}, text_extra=BYT5_TOKENS),
)
