"""Tiny random-weight models, built and sampled by a real ComfyUI, and the tests' sampling helpers.

The models have the real ComfyUI classes and forward code, only narrow (hidden size 128,
two heads of 64, two joint attention blocks) and with seeded random weights, so a sampling
run takes well under a second on a CPU. Nothing is downloaded and nothing is written to disk.
One module per joint-attention family lives in tiny_families/; this module keeps the FLUX.1
and SD3 shortcuts the FLUX- and SD3-specific tests use, and the helpers all of them share.

ComfyUI must be importable before this module is imported. `conftest.py` in this folder
arranges that for the tests; a script does the same in this order:

    sys.path.insert(0, COMFYUI_PATH)
    from comfy.cli_args import args; args.cpu = True   # before comfy.model_management
    import utils.extra_config                          # before ComfyUI's nodes.py

Models, each a fresh `comfy.model_patcher.ModelPatcher` in fp32:

    tiny_flux(seed)          FLUX.1-dev layout: one double and one single block, guidance input
    tiny_sd3(seed)           SD3 layout, no QK-norm
    tiny_sd35_large(seed)    SD3.5-Large layout: RMS QK-norm
    tiny_sd35_medium(seed)   SD3.5-Medium layout (MMDiT-X): QK-norm and an image-only attn2 in every block
    tiny_sd15(seed)          an SD1.5 UNet, and
    tiny_wan(seed)           a Wan 2.1 DiT: models TACA does not support
    MODELS                   {name: builder} of the four supported layouts

The SD3 family goes through `comfy.sd.load_diffusion_model_state_dict`, so ComfyUI's own
detection reads them from the state-dict shapes. The other detections fix the real sizes, so
those models are built from their `comfy.supported_models` config with the steps that loader
takes after detection (build_from_config).

Inputs and sampling:

    conditioning(model, n_text, seed)    random [[cond, {"pooled_output", ("guidance")}]] sized for `model`
    image_tokens(model, latent)          how many image tokens `latent` gives in the joint attention
    sigmas(model, steps, ...)            the noise levels `sample` steps through
    empty_latent(height, width)          a zero latent, sizes in latent pixels
    sample(model, positive, negative, latent, ...)   comfy.sample.sample with seeded noise, no progress bar
    with_attention_override(model, fn)   a clone whose attention calls go through fn, as another node would set it
    with_attention_backend(model, name)  a clone whose attention runs ComfyUI's backend `name`
    randomize_weights(module, seed)      fill every parameter and stored buffer: norms 1 and 0, the rest random
    build_from_config(config, unet, seed)  a model of a comfy.supported_models class, random weights
    text_conditioning(n_text, width, ...)  conditioning as a text encoder gives it
    patch_tokens(latent, patch)          image tokens of a latent cut into patches
    timestep(model, sigma)               t on the paper's 0–1000 scale for the model's sampling
"""

import math

import torch

import comfy.ldm.modules.attention
import comfy.model_management
import comfy.model_sampling
import comfy.model_patcher
import comfy.sample
import comfy.samplers
import comfy.sd
import comfy.supported_models

HIDDEN = 128  # MMDiT fixes the head size at 64 and the head count at hidden / 64
TEXT_WIDTH = 4096  # T5-XXL, as in the real models
FLUX_POOLED_WIDTH = 768  # CLIP-L
SD3_POOLED_WIDTH = 2048  # CLIP-L + CLIP-G
LATENT_CHANNELS = 16
FLUX_GUIDANCE = 3.5


def randomize_weights(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill every parameter, and every buffer a checkpoint carries, in place.

    ComfyUI allocates layers with torch.empty, so anything left unfilled is garbage.
    Normalization layers get weight (or scale) 1 and bias 0. Other weights are drawn with
    standard deviation 1/sqrt(fan_in), so attention logits are of order one and a change to
    them shows in the output; biases are small. Persistent buffers (MMDiT's pos_embed) are
    standard normal, like the sin-cos tables they replace.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            is_norm = "Norm" in type(layer).__name__
            for name, p in layer.named_parameters(recurse=False):
                if is_norm:
                    p.fill_(0.0 if name == "bias" else 1.0)
                elif p.ndim == 1:
                    p.copy_(0.02 * torch.randn(p.shape, generator=generator))
                else:
                    p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(p[0].numel()))
            for name, b in layer.named_buffers(recurse=False):
                if b.is_floating_point() and name not in layer._non_persistent_buffers_set:
                    b.copy_(torch.randn(b.shape, generator=generator))
    return module


def build_from_config(config_class, unet_config: dict, seed: int) -> comfy.model_patcher.ModelPatcher:
    """What comfy.sd.load_diffusion_model_state_dict does once it has a config, with random weights."""
    config = config_class(unet_config)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    randomize_weights(model.diffusion_model, seed)
    return as_patcher(model)


def as_patcher(model) -> comfy.model_patcher.ModelPatcher:
    """A BaseModel in the ModelPatcher ComfyUI's loaders hand out."""
    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def text_conditioning(n_text: int, width: int, seed: int = 0, pooled=None, **extra) -> list:
    """ComfyUI conditioning as a text encoder gives it: (1, n_text, width) tokens, a pooled
    vector of size `pooled` (if any) and further entries (guidance, ...)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(1, n_text, width, generator=generator)
    options = dict(extra)
    if pooled:
        options["pooled_output"] = torch.randn(1, pooled, generator=generator)
    return [[tokens, options]]


def patch_tokens(latent: torch.Tensor, patch: int) -> int:
    """Image tokens of a (B, C, H, W) latent cut into patch × patch pieces, padded to whole patches."""
    return math.ceil(latent.shape[-2] / patch) * math.ceil(latent.shape[-1] / patch)


def tiny_flux(seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    from tiny_families import flux
    return flux.build(seed)


def tiny_sd3(seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    from tiny_families import sd3
    return sd3.build(seed, qk_norm=False, x_block_self_attn_layers=[])


def tiny_sd35_large(seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    from tiny_families import sd3
    return sd3.build(seed, qk_norm=True, x_block_self_attn_layers=[])


def tiny_sd35_medium(seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    from tiny_families import sd3
    return sd3.build(seed, qk_norm=True, x_block_self_attn_layers=list(range(HIDDEN // 64)))


def tiny_sd15(seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    return build_from_config(comfy.supported_models.SD15, {
        "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32,
        "num_res_blocks": [1], "channel_mult": [1], "transformer_depth": [1], "transformer_depth_output": [1, 1],
        "transformer_depth_middle": 1, "context_dim": 768, "use_linear_in_transformer": False,
        "use_spatial_transformer": True, "legacy": False, "adm_in_channels": None, "use_temporal_attention": False,
    }, seed)


def tiny_wan(seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    return build_from_config(comfy.supported_models.WAN21_T2V, {
        "image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2),
        "in_dim": LATENT_CHANNELS, "out_dim": LATENT_CHANNELS, "dim": HIDDEN, "ffn_dim": 2 * HIDDEN,
        "freq_dim": 256, "text_dim": TEXT_WIDTH, "num_heads": HIDDEN // 64, "num_layers": 1,
    }, seed)


MODELS = {
    "flux": tiny_flux,
    "sd3": tiny_sd3,
    "sd3.5-large": tiny_sd35_large,
    "sd3.5-medium": tiny_sd35_medium,
}


def _is_flux(model) -> bool:
    return model.model.model_config.unet_config.get("image_model") == "flux"


def conditioning(model, n_text: int, seed: int = 0) -> list:
    """Random ComfyUI conditioning for `model`, as a text encoder would give it: n_text tokens."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(1, n_text, TEXT_WIDTH, generator=generator)
    if _is_flux(model):
        pooled = torch.randn(1, FLUX_POOLED_WIDTH, generator=generator)
        return [[tokens, {"pooled_output": pooled, "guidance": FLUX_GUIDANCE}]]
    pooled = torch.randn(1, SD3_POOLED_WIDTH, generator=generator)
    return [[tokens, {"pooled_output": pooled}]]


def image_tokens(model, latent: torch.Tensor) -> int:
    """Image tokens of `latent` in the joint attention: the latent is padded to whole patches."""
    p = model.model.model_config.unet_config["patch_size"]
    return math.ceil(latent.shape[-2] / p) * math.ceil(latent.shape[-1] / p)


def empty_latent(height: int, width: int, batch: int = 1, channels: int = LATENT_CHANNELS) -> torch.Tensor:
    """An empty latent of height × width latent pixels (1/8 of the image size)."""
    return torch.zeros(batch, channels, height, width)


def sigmas(model, steps: int, scheduler: str = "simple", sampler_name: str = "euler",
           denoise: float = 1.0) -> torch.Tensor:
    """The noise levels `sample` steps through: steps + 1 values, the last 0."""
    return comfy.samplers.KSampler(
        model, steps=steps, device=model.load_device, sampler=sampler_name, scheduler=scheduler, denoise=denoise,
    ).sigmas


def timestep(model, sigma: float) -> float:
    """t on the paper's 0–1000 scale: 1000·σ for rectified-flow models, the DDPM timestep for others."""
    model_sampling = model.get_model_object("model_sampling")
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        return 1000 * float(sigma)
    return float(model_sampling.timestep(torch.tensor([float(sigma)])))


def sample(model, positive, negative, latent, steps: int = 4, cfg: float = 3.0, seed: int = 0,
           sampler_name: str = "euler", scheduler: str = "simple", denoise: float = 1.0) -> torch.Tensor:
    """Sample with ComfyUI's own sampler, as KSampler does, from noise seeded by `seed`."""
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(
        model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent,
        denoise=denoise, disable_pbar=True, seed=seed,
    )


def with_attention_override(model, override):
    """A clone of `model` with transformer_options["optimized_attention_override"] set, as a node sets it.

    ComfyUI calls override(func, q, k, v, heads, **kwargs), func being the attention it chose.
    Model clones deep-copy model_options: to observe calls from outside, make `override` a
    function (a closure), which deepcopy keeps, not an object, which it copies.
    """
    patched = model.clone()
    patched.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    return patched


def with_attention_backend(model, backend: str):
    """A clone of `model` whose attention runs ComfyUI's `backend` ("pytorch", "sub_quad", "split"),
    as an attention-selection node in front would set it."""
    attention = comfy.ldm.modules.attention.get_attention_function(backend)
    return with_attention_override(model, lambda func, *args, **kwargs: attention(*args, **kwargs))
