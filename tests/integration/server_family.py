"""A third model family as files ComfyUI's own loaders detect, for tests through the server.

The shared model files (model_files.py) hold FLUX.1 and SD3.5. The load test cycles a third
family: FLUX.2 where the host has it (ComfyUI 0.33; 0.3.64 lacks it), HunyuanVideo otherwise.
Each file is as narrow as ComfyUI's detection allows, which reads the width from the
weights and fixes the rotary axes: hidden 128 (one head of 128), one double and one single
block, text width 4096 so that CLIP-L loaded as "sd3" conditions it, no guidance input.
FLUX.2 has no pooled-vector input; HunyuanVideo 1.0 reads the first 768 values of CLIP's (without
that input ComfyUI takes the file for HunyuanImage 2.1). A LoRA on every Linear layer ComfyUI's key map
names comes with it.

The files are cached beside the shared ones (TACA_TEST_MODEL_CACHE), keyed by VERSION.
"""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

import comfy.model_detection
import comfy.sd
import comfy.supported_models

import model_files
from model_files import host_version
from tiny_loras import generic_lora
from tiny_models import build_from_config

VERSION = "1"
CACHE = Path(os.environ.get("TACA_TEST_MODEL_CACHE", tempfile.gettempdir()))
HIDDEN = 128


@dataclass(frozen=True)
class ServerFamily:
    name: str  # as the README names the family
    config_class: str  # comfy.supported_models
    config: dict  # what comfy/model_detection.py gives for the file
    latent: tuple  # (node type, inputs) of the empty latent for a 64×64 image

    @property
    def unet(self) -> str:
        return f"taca_test_{self.config_class.lower()}.safetensors"

    @property
    def lora(self) -> str:
        return f"taca_test_{self.config_class.lower()}_lora.safetensors"

    def available(self) -> bool:
        return hasattr(comfy.supported_models, self.config_class)


FLUX2 = ServerFamily(
    "FLUX.2", "Flux2",
    {
        "image_model": "flux2", "in_channels": 128, "out_channels": 128, "patch_size": 1, "vec_in_dim": None,
        "context_in_dim": 4096, "hidden_size": HIDDEN, "num_heads": 1, "mlp_ratio": 3.0, "depth": 1,
        "depth_single_blocks": 1, "axes_dim": [32, 32, 32, 32], "theta": 2000, "qkv_bias": False,
        "guidance_embed": False, "global_modulation": True, "mlp_silu_act": True, "ops_bias": False,
        "default_ref_method": "index", "ref_index_scale": 10.0, "txt_ids_dims": [3], "yak_mlp": False, "txt_norm": False,
    },
    ("EmptyFlux2LatentImage", {"width": 64, "height": 64, "batch_size": 1}),
)
HUNYUAN_VIDEO = ServerFamily(
    "HunyuanVideo", "HunyuanVideo",
    {
        "image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "patch_size": [1, 2, 2],
        "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": HIDDEN, "num_heads": 1, "mlp_ratio": 4.0,
        "depth": 1, "depth_single_blocks": 1, "axes_dim": [16, 56, 56], "theta": 256, "qkv_bias": True,
        "guidance_embed": False, "byt5": False, "meanflow": False,
    },
    ("EmptyHunyuanLatentVideo", {"width": 64, "height": 64, "length": 1, "batch_size": 1}),
)


def third_family() -> ServerFamily:
    """FLUX.2 where this ComfyUI has it, else HunyuanVideo."""
    return FLUX2 if FLUX2.available() else HUNYUAN_VIDEO


def host_fields(family: ServerFamily) -> dict:
    """The config with the fields this host's model parameters declare: HunyuanVideo 1.5's, off for
    1.0, where the host has them; none the host lacks."""
    if family is FLUX2:
        import comfy.ldm.flux.model
        fields = comfy.ldm.flux.model.FluxParams.__dataclass_fields__
    else:
        import comfy.ldm.hunyuan_video.model
        fields = comfy.ldm.hunyuan_video.model.HunyuanVideoParams.__dataclass_fields__
    config = {"use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False, **family.config}
    return {k: v for k, v in config.items() if k in fields or k == "image_model"}


def build(family: ServerFamily, seed: int = 11) -> dict:
    """{relative path: state dict}: the diffusion model file and its LoRA, checked to load back as built."""
    model = build_from_config(getattr(comfy.supported_models, family.config_class), host_fields(family), seed)
    sd = {k: v.detach().contiguous() for k, v in model.model.diffusion_model.state_dict().items()}
    detected = comfy.model_detection.model_config_from_unet(sd, "")
    if type(detected).__name__ != family.config_class:
        raise RuntimeError(f"ComfyUI detects the {family.name} test file as {type(detected).__name__}")
    loaded = comfy.sd.load_diffusion_model_state_dict(dict(sd))
    again = loaded.model.diffusion_model.state_dict()
    if again.keys() != sd.keys() or not all(torch.equal(again[k].float(), sd[k].float()) for k in sd):
        raise RuntimeError(f"the {family.name} test file does not load back as the model built")
    return {f"diffusion_models/{family.unet}": sd, f"loras/{family.lora}": generic_lora(model, seed=seed + 1)}


def files(family: ServerFamily) -> Path:
    """The folder (models/ layout) of the family's files, built on first use."""
    folder = CACHE / f"comfyui-taca-server-family-v{VERSION}-{family.config_class}-comfyui-{host_version()}"
    write = lambda staging: model_files.save_all({rel: (sd, None) for rel, sd in build(family).items()}, staging)  # noqa: E731
    return model_files.built_folder(folder, VERSION, write)


def install(family: ServerFamily, models_dir: Path) -> None:
    """Link the family's files into a ComfyUI models folder."""
    folder = files(family)
    for path in sorted(folder.rglob("*.safetensors")):
        target = models_dir / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
