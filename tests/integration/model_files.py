"""Model files for running the shipped workflows in a real ComfyUI server, built at test time.

The workflows load their models through ComfyUI's own loader nodes, which detect a model
from the shapes in its file. So the files are real-format files under the names the
workflows use, with seeded random weights, and as small as ComfyUI's detection allows:

    diffusion_models/flux1-dev.safetensors        FLUX.1-dev layout at full width (ComfyUI fixes
                                                  hidden 3072, 24 heads, text 4096), one double
                                                  block, no single blocks: ~400M parameters
    checkpoints/sd3.5_medium.safetensors          SD3.5-Medium (MMDiT-X) two blocks wide 128, and the VAE
    checkpoints/sd3.5_large_fp8_scaled.safetensors  SD3.5-Large layout, the VAE and a CLIP-L text encoder
    text_encoders/clip_l.safetensors              CLIP-L (fixed size)
    vae/ae.safetensors                            the 16-channel FLUX/SD3 VAE (fixed size)
    loras/<the workflows' TACA LoRA names>        TACA LoRAs in the official diffusers/PEFT format

T5-XXL (and CLIP-G) are not built: see SUBSTITUTED_LOADERS.

The files (about 1.7 GB) are cached under the folder TACA_TEST_MODEL_CACHE names, or the system
temp folder, keyed by CACHE_VERSION and the ComfyUI version; bump CACHE_VERSION when a builder changes. Building needs ComfyUI importable in-process (conftest.py arranges that).
"""

import copy
import os
import shutil
import tempfile
from pathlib import Path

import safetensors.torch
import torch

import comfy.ldm.models.autoencoder
import comfy.sd1_clip
import comfy.supported_models
import comfy.utils
from tiny_families.flux import flux_params
from tiny_models import randomize_weights, tiny_sd35_large, tiny_sd35_medium

CACHE_VERSION = "1"


def host_version() -> str:
    """The ComfyUI version the files are built with: hosts save some keys differently (0.33 writes
    FLUX's norm scales as '.weight', which 0.3.64 does not detect), so each keeps its own files."""
    try:
        import comfyui_version
    except ImportError:
        return "unknown"
    return comfyui_version.__version__


CACHE = (Path(os.environ.get("TACA_TEST_MODEL_CACHE", tempfile.gettempdir()))
         / f"comfyui-taca-test-models-v{CACHE_VERSION}-comfyui-{host_version()}")

FLUX_UNET = "diffusion_models/flux1-dev.safetensors"
SD35_MEDIUM = "checkpoints/sd3.5_medium.safetensors"
SD35_LARGE = "checkpoints/sd3.5_large_fp8_scaled.safetensors"
CLIP_L = "text_encoders/clip_l.safetensors"
FLUX_VAE = "vae/ae.safetensors"
# The TACA LoRA file names the shipped workflows default to (the repository's own names
# are not verified; users pick their file, see the workflows' notes).
FLUX_LORA = "loras/taca_flux1-dev_r64.safetensors"
SD35_MEDIUM_LORA = "loras/taca_sd3.5-medium_r64.safetensors"

# T5-XXL has a fixed size in ComfyUI (4.7B parameters, t5_config_xxl.json): one FLUX prompt
# encode took 97 s on a 2-core CPU, whatever the weights hold. So the tests load CLIP-L alone,
# with ComfyUI's "sd3" text encoder type, where a workflow loads T5-XXL (DualCLIPLoader for
# FLUX, TripleCLIPLoader for SD3.5). That gives conditioning of the real shapes: (1, 77, 4096)
# text states, and a pooled vector whose first 768 values, all that FLUX reads, are CLIP-L's.
SUBSTITUTED_LOADERS = ("DualCLIPLoader", "TripleCLIPLoader")
SUBSTITUTE = ("CLIPLoader", ["clip_l.safetensors", "sd3", "default"])
NOT_BUILT = ("t5xxl_fp16.safetensors", "clip_g.safetensors")  # only the substituted loaders name them

# Target modules of diffusers' train_dreambooth_lora_flux.py / train_dreambooth_lora_sd3.py,
# which the TACA LoRAs were trained with.
FLUX_TARGETS = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
)
SD3_TARGETS = FLUX_TARGETS[:8]

FLUX_DEV_CONFIG = {
    "image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16, "patch_size": 2,
    "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 3072, "num_heads": 24, "mlp_ratio": 4.0,
    "depth": 1, "depth_single_blocks": 0, "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True,
}
# The 16-channel VAE of FLUX and SD3, as comfy.sd.VAE builds it for such a state dict.
VAE_CONFIG = {
    "double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
}


def built_folder(folder: Path, version: str, build) -> Path:
    """`folder`, written by build(staging folder) on first use: built beside it and renamed into
    place once complete, so an interrupted run leaves nothing half-written and two runs may race."""
    if (folder / "complete").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)  # TACA_TEST_MODEL_CACHE may name a folder not made yet
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        build(staging)
        (staging / "complete").write_text(version)
        try:
            staging.rename(folder)
        except OSError:  # another run finished first; its files are the same
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def save_all(files: dict, staging: Path) -> None:
    """Write {relative path: (state dict, metadata or None)} as safetensors files under staging."""
    for rel, (sd, metadata) in files.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(sd, str(staging / rel), metadata=metadata)


def model_files() -> Path:
    """The folder of built model files (models/ layout), built on first use."""
    return built_folder(CACHE, CACHE_VERSION, lambda staging: save_all(_build_all(), staging))


def install(models_dir: Path) -> None:
    """Link every built file into a ComfyUI models folder."""
    cache = model_files()
    for path in sorted(cache.rglob("*.safetensors")):
        rel = path.relative_to(cache)
        (models_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (models_dir / rel).symlink_to(path)


def substitute_text_encoders(workflow: dict) -> dict:
    """A copy of a UI-format workflow whose T5-XXL text encoder loaders load CLIP-L alone."""
    workflow = copy.deepcopy(workflow)
    for node in workflow["nodes"]:
        if node["type"] in SUBSTITUTED_LOADERS:
            node["type"], node["widgets_values"] = SUBSTITUTE[0], list(SUBSTITUTE[1])
            node["properties"] = {k: v for k, v in node["properties"].items() if k not in ("models", "Node name for S&R")}
    return workflow


def _build_all() -> dict:
    vae = _prefixed(_vae(seed=3), "")
    clip_l = _clip_l(seed=4)
    flux, flux_config = _flux_dev(seed=5)
    sd35m = tiny_sd35_medium(seed=6)
    sd35l = tiny_sd35_large(seed=7)
    diffusers_lora = {"format": "diffusers/PEFT, as the TACA LoRAs"}
    return {
        FLUX_UNET: (flux, None),
        FLUX_VAE: (vae, None),
        CLIP_L: (clip_l, None),
        SD35_MEDIUM: ({**_prefixed(sd35m.model.diffusion_model.state_dict(), "model.diffusion_model."),
                       **_prefixed(vae, "first_stage_model.")}, None),
        SD35_LARGE: ({**_prefixed(sd35l.model.diffusion_model.state_dict(), "model.diffusion_model."),
                      **_prefixed(vae, "first_stage_model."),
                      **_prefixed(clip_l, "text_encoders.clip_l.transformer.")}, None),
        FLUX_LORA: (official_lora(comfy.utils.flux_to_diffusers(flux_config), flux, FLUX_TARGETS, seed=8), diffusers_lora),
        SD35_MEDIUM_LORA: (official_lora(comfy.utils.mmdit_to_diffusers(sd35m.model.model_config.unet_config),
                                         sd35m.model.diffusion_model.state_dict(), SD3_TARGETS, seed=9), diffusers_lora),
    }


def _prefixed(sd: dict, prefix: str) -> dict:
    return {prefix + k: v.detach().contiguous() for k, v in sd.items()}


def _flux_dev(seed: int):
    config = comfy.supported_models.Flux(flux_params(FLUX_DEV_CONFIG))  # the host's FluxParams fields
    config.set_inference_dtype(torch.float32, None)
    model = randomize_weights(config.get_model({}).diffusion_model, seed)
    return {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, config.unet_config


def _clip_l(seed: int) -> dict:
    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    randomize_weights(clip.transformer, seed)
    return {k: v.to(torch.float16) for k, v in clip.transformer.state_dict().items()}


def _vae(seed: int) -> dict:
    vae = comfy.ldm.models.autoencoder.AutoencodingEngine(
        regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
        encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": VAE_CONFIG},
        decoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Decoder", "params": VAE_CONFIG},
    )
    randomize_weights(vae, seed)
    return {k: v.to(torch.float16) for k, v in vae.state_dict().items()}


def official_lora(diffusers_keys: dict, weights: dict, targets, rank: int = 4, seed: int = 0) -> dict:
    """A LoRA in the official TACA format: `transformer.<diffusers module>.lora_A/lora_B.weight`,
    no alpha. ComfyUI's diffusers key map (`diffusers_keys`, to the model's own keys and,
    for fused qkv, row slices) gives each layer's shape in `weights`."""
    generator = torch.Generator().manual_seed(seed)
    lora = {}
    for name, target in sorted(diffusers_keys.items()):
        module = name[:-len(".weight")]
        if not name.endswith(".weight") or not module.endswith(targets):
            continue
        key, rows = (target[0], target[1][2]) if isinstance(target, tuple) else (target, None)
        if key not in weights:  # e.g. the last SD3 block's context side has no output layers
            continue
        weight = weights[key]
        lora[f"transformer.{module}.lora_A.weight"] = torch.randn(rank, weight.shape[1], generator=generator) * 0.05
        lora[f"transformer.{module}.lora_B.weight"] = torch.randn(rows or weight.shape[0], rank, generator=generator) * 0.05
    if not lora:
        raise ValueError(f"no LoRA target among {len(diffusers_keys)} diffusers keys")
    return lora
