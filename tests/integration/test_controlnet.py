"""TACA with a ControlNet applied: a FLUX.1 ControlNet and an SD3 ControlNet, loaded by ComfyUI's own loader.

Each ControlNet is a file with random weights in a format ComfyUI's loader recognises, written
by the test and loaded with comfy.controlnet.load_controlnet, which detects the ControlNet from
its keys and shapes; the loaded ControlNet holds exactly the weights written. It is applied
with ComfyUI's ControlNetApplyAdvanced (the SD3 one encodes its hint with a VAE, as ComfyUI's
SD3 ControlNets need). TACA then equals ReferenceTACA on the same controlled run: the
ControlNet's own attention never receives the model's transformer_options, so TACA, like the
reference, scales the model's joint calls and leaves the ControlNet's alone.

- FLUX.1, XLabs format (double blocks, controlnet_blocks, an image hint). ComfyUI 0.33 reads
  the ControlNet's width from its file, so it is as narrow as the tests' tiny FLUX.1; 0.3.64
  fixes FLUX's width at 3072 in its detection, so there both the model and the ControlNet are
  full width with one double block (about 400M parameters each).
- SD3, the diffusers format (transformer_blocks, pos_embed_input, controlnet_blocks), on the
  tests' tiny SD3.
"""

import math
import os
import re

import pytest
import safetensors.torch
import torch

import comfy.cldm.mmdit
import comfy.controlnet
import comfy.ldm.flux.controlnet
import comfy.model_detection
import comfy.ops
import comfy.sd
import comfy.supported_models
import comfy.utils
import nodes

from model_files import FLUX_DEV_CONFIG, _vae
from reference import ReferenceTACA, max_difference, step_gamma
from tiny_families.flux import CONFIG, flux_params
from tiny_models import (build_from_config, conditioning, empty_latent, image_tokens, randomize_weights, sample, sigmas,
                         timestep, tiny_flux, tiny_sd3, with_attention_override)

STEPS = 4
GAMMA = 1.6
N_TEXT = 9
TOLERANCE = 1e-4


def flux_controlnet_weights(config: dict, seed: int):
    """ComfyUI's ControlNetFlux with random weights, and its XLabs-format file (BFL's key names:
    the QK-norms' weights named `scale`, as ComfyUI's loader recognises the format by)."""
    control = comfy.ldm.flux.controlnet.ControlNetFlux(operations=comfy.ops.disable_weight_init, device="cpu",
                                                       dtype=torch.float32, **flux_params(config))
    own = {k: v.detach().clone() for k, v in randomize_weights(control, seed).state_dict().items()}
    return own, {re.sub(r"_norm\.weight$", "_norm.scale", k): v for k, v in own.items()}


def flux_pair(seed: int):
    """FLUX.1 and a ControlNet file's weights for it, as narrow as this ComfyUI's ControlNet loader allows."""
    # FLUX.1's RoPE axes and 128-wide heads, one double block: what ComfyUI's detection assumes of a ControlNet file
    control_config = {**CONFIG, "axes_dim": [16, 56, 56], "num_heads": 1, "depth": 1, "depth_single_blocks": 0}
    own, weights = flux_controlnet_weights(control_config, seed + 1)
    if comfy.model_detection.detect_unet_config(weights, "")["hidden_size"] == CONFIG["hidden_size"]:
        return tiny_flux(seed), own, weights
    del own, weights  # this ComfyUI builds every FLUX ControlNet 3072 wide: the model must be as wide
    model = build_from_config(comfy.supported_models.Flux, flux_params(FLUX_DEV_CONFIG), seed)
    return (model, *flux_controlnet_weights(FLUX_DEV_CONFIG, seed + 1))


def sd3_controlnet_weights(model, seed: int) -> dict:
    """A diffusers-format SD3 ControlNet for `model`: ComfyUI's SD3 ControlNet with random weights,
    its keys renamed by ComfyUI's own diffusers ↔ MMDiT map (fused qkv split back into q, k, v)."""
    unet_config = {k: v for k, v in model.model.model_config.unet_config.items() if k not in ("dtype", "device", "operations")}
    control = comfy.cldm.mmdit.ControlNet(num_blocks=unet_config["depth"], operations=comfy.ops.disable_weight_init,
                                          device="cpu", dtype=torch.float32, **unet_config)
    own = {k: v.detach().clone() for k, v in randomize_weights(control, seed).state_dict().items()}
    diffusers, used = {}, set()
    for name, target in comfy.utils.mmdit_to_diffusers({"depth": unet_config["depth"]}).items():
        key, rows, convert = (target, None, None) if isinstance(target, str) else (*target[:2], (target[2:] or (None,))[0])
        if key not in own:
            continue
        weight = own[key] if rows is None else own[key].narrow(*rows)
        diffusers[name] = (convert(weight) if convert else weight).clone()  # the map's conversions swap halves: their own inverse
        used.add(key)
    return own, {**diffusers, **{k: v for k, v in own.items() if k not in used}}


def written_and_loaded(tmp_path, name: str, weights: dict, expected: dict):
    """Write a ControlNet file, load it with ComfyUI's loader and check it holds `expected`."""
    path = str(tmp_path / name)
    safetensors.torch.save_file({k: v.contiguous() for k, v in weights.items()}, path)
    control = comfy.controlnet.load_controlnet(path)
    os.remove(path)  # up to 1.5 GB at full width; the loader has read it
    loaded = control.control_model.state_dict()
    assert set(loaded) == set(expected), f"{name}: ComfyUI built {sorted(set(loaded) ^ set(expected))} differently"
    assert all(torch.equal(loaded[k].float(), expected[k].float()) for k in expected), f"{name}: weights differ"
    return control


def controlled(control, positive, negative, image, vae=None):
    return nodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control, image, 1.0, 0.0, 1.0, vae=vae)


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_taca_with_a_controlnet_equals_the_reference(family, taca, tmp_path):
    if family == "flux":
        model, own, weights = flux_pair(81)
        control, vae = written_and_loaded(tmp_path, "flux_controlnet.safetensors", weights, own), None
    else:
        model = tiny_sd3(81)
        own, weights = sd3_controlnet_weights(model, 82)
        control = written_and_loaded(tmp_path, "sd3_controlnet.safetensors", weights, own)
        vae = comfy.sd.VAE(sd=_vae(seed=83))
    del own, weights

    latent = empty_latent(8, 10)
    positive, negative = conditioning(model, N_TEXT, 84), conditioning(model, N_TEXT, 85)
    image = torch.rand(1, 8 * latent.shape[-2], 8 * latent.shape[-1], 3, generator=torch.Generator().manual_seed(86))
    with_control = controlled(control, positive, negative, image, vae)
    s = sigmas(model, STEPS)
    threshold = 500 * float(s[1] + s[2])  # the window: the first two of four steps

    def run(m, conds=with_control):
        return sample(m, *conds, latent, steps=STEPS)

    reference = ReferenceTACA(step_gamma(GAMMA, threshold), {N_TEXT + image_tokens(model, latent): N_TEXT},
                              timestep=lambda sigma: timestep(model, sigma))
    out, ref = run(taca(model, GAMMA, threshold)), run(with_attention_override(model, reference))
    untouched = run(model)
    assert reference.calls > 0
    assert max_difference(untouched, run(model, (positive, negative))) > 1e-3, "the ControlNet changed nothing"
    error, effect = max_difference(out, ref), max_difference(out, untouched)
    assert error <= TOLERANCE, f"TACA with the ControlNet differs from the reference by {error}"
    assert effect > 10 * TOLERANCE, f"TACA changed the controlled output by only {effect}"
    assert math.isfinite(error)
