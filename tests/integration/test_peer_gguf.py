"""TACA and its LoRA loader on GGUF-quantized models, loaded by ComfyUI-GGUF's own UnetLoaderGGUF.

The models are the tests' FLUX.1-dev (full width, one double block) and SD3.5-Medium files
(model_files.py), quantized to Q8_0 and Q4_0 by ComfyUI-GGUF's rules (gguf_models.py).
ComfyUI-GGUF builds ComfyUI's own model classes with its GGMLOps layers, which dequantize
each weight as a layer runs, so attention goes through ComfyUI's override:
- TACA equals the materialized-softmax reference on the quantized model;
- TACALoraLoader equals GGUF's own LoRA path (LoraLoaderModelOnly, whose patches GGUF applies
  to each dequantized weight) inside the window, and is bit-identical to the model without
  it outside.
"""

import pytest
import torch

import folder_paths
import nodes

from peer_packs import GGUF, require

require(GGUF, module=True)

import gguf_models  # noqa: E402  (imports gguf, which ComfyUI-GGUF needs too)
from test_lora import run, threshold_after_steps  # noqa: E402
from test_taca_reference import assert_matches, reference_taca  # noqa: E402
from tiny_loras import FLUX_TARGETS, SD3_TARGETS, lora_loader, merged_lora, official_lora  # noqa: E402
from tiny_models import (  # noqa: E402
    conditioning, empty_latent, image_tokens, sample, sigmas, with_attention_override,
)

MODELS = {"flux1-dev": FLUX_TARGETS, "sd3.5_medium": SD3_TARGETS}
CASES = [(model, quant) for model in MODELS for quant in gguf_models.QUANT_TYPES]
# ComfyUI-GGUF dequantizes every weight in every forward: about 9 s per forward of the
# full-width FLUX file on one CPU thread. Two steps keep the window (the first) and a step after it.
STEPS = 2
GAMMA = 1.3


@pytest.fixture
def unet_loader_gguf(monkeypatch):
    """load(model, quant): ComfyUI-GGUF's UnetLoaderGGUF node on the test file of that model and type."""
    folder = gguf_models.gguf_files() / "diffusion_models"
    paths, extensions = folder_paths.folder_names_and_paths["diffusion_models"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusion_models", ([*paths, str(folder)], extensions))
    loader = nodes.NODE_CLASS_MAPPINGS["UnetLoaderGGUF"]()

    def load(model, quant):
        (patcher,) = loader.load_unet(gguf_models.file_name(model, quant))
        return patcher

    return load


def loaded_types(patcher) -> dict:
    """The GGML type of each weight the loaded model holds quantized, by its key."""
    return {k: v.tensor_type.name for k, v in patcher.model.diffusion_model.named_parameters()
            if getattr(v, "tensor_type", None) is not None}


@pytest.mark.parametrize("model,quant", CASES)
def test_taca_on_a_gguf_model_matches_the_reference(model, quant, unet_loader_gguf, taca):
    patcher = unet_loader_gguf(model, quant)
    loaded = loaded_types(patcher)
    assert sum(t == quant for t in loaded.values()) >= 4, f"no {quant} weights in the loaded model: {set(loaded.values())}"
    if model == "sd3.5_medium":  # ComfyUI-GGUF's rules keep it in F16
        assert gguf_models.tensor_types(gguf_models.gguf_files() / "diffusion_models" /
                                        gguf_models.file_name(model, quant))["pos_embed"] == "F16"
    latent = empty_latent(6, 8)
    positive, negative = conditioning(patcher, 20, seed=1), conditioning(patcher, 20, seed=2)
    threshold = threshold_after_steps(patcher, STEPS, 1)
    reference = reference_taca(GAMMA, threshold, {20}, image_tokens(patcher, latent))

    def run(m):
        return sample(m, positive, negative, latent, steps=STEPS)

    assert_matches(run(taca(patcher, GAMMA, threshold)), run(with_attention_override(patcher, reference)), run(patcher))


@pytest.mark.parametrize("model,quant", CASES)
def test_lora_loader_on_a_gguf_model_equals_gguf_lora_inside_the_window(model, quant, unet_loader_gguf, taca, loras):
    patcher = unet_loader_gguf(model, quant)
    name = loras(f"taca_{model}.safetensors", official_lora(patcher, MODELS[model]))
    # threshold 0: every step is in the window; one step is enough
    ours = run(taca(lora_loader(patcher, name), GAMMA, 0.0), steps=1)
    gguf_lora = run(taca(merged_lora(patcher, name), GAMMA, 0.0), steps=1)
    without = run(taca(patcher, GAMMA, 0.0), steps=1)
    error, effect = (ours - gguf_lora).abs().max().item(), (ours - without).abs().max().item()
    assert error < 1e-4, f"TACALoraLoader differs from GGUF's LoRA path by {error}"
    assert effect > 1e-3, f"the LoRA changed the output by only {effect}"


@pytest.mark.parametrize("model,quant", CASES)
def test_lora_loader_on_a_gguf_model_outside_the_window_is_the_model_without_it(model, quant, unet_loader_gguf, taca,
                                                                                loras):
    patcher = unet_loader_gguf(model, quant)
    name = loras(f"taca_{model}.safetensors", official_lora(patcher, MODELS[model]))
    steps, k = 2, 1
    threshold = threshold_after_steps(patcher, steps, k)
    later = sigmas(patcher, steps)[k:]  # the step below the threshold
    start = run(patcher, steps=1)  # some latent to continue from
    with_lora = run(taca(lora_loader(patcher, name), GAMMA, threshold), schedule=later, latent=start)
    without = run(taca(patcher, GAMMA, threshold), schedule=later, latent=start)
    assert torch.equal(with_lora, without)


def test_the_server_loads_comfyui_gguf_beside_taca_and_runs_a_gguf_model_with_it(server):
    """ComfyUI's server loads the packs from its custom_nodes folder; a prompt loads a GGUF file
    with UnetLoaderGGUF, and TACA changes what it samples."""
    assert {"UnetLoaderGGUF", "TACA", "TACALoraLoader"} <= set(server.object_info)
    name = gguf_models.file_name("sd3.5_medium", "Q8_0")
    target = server.base / "models" / "diffusion_models" / name
    if not target.exists():
        target.symlink_to(gguf_models.gguf_files() / "diffusion_models" / name)

    def prompt(gamma):
        return {
            "1": {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": name}},
            "2": {"class_type": "TACA", "inputs": {"model": ["1", 0], "gamma": gamma, "threshold": 970.0}},
            "3": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "sd3"}},
            "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "a red cube on a blue ball"}},
            "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": ""}},
            "6": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "7": {"class_type": "KSampler", "inputs": {
                "model": ["2", 0], "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0], "seed": 1,
                "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
            "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "taca_gguf"}},
        }

    with_taca, without = (server.latent(server.run(prompt(gamma)), "8") for gamma in (GAMMA, 1.0))
    assert torch.isfinite(with_taca).all() and (with_taca - without).abs().max() > 1e-3
