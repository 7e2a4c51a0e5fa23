"""The TACA node patches a clone: the model it was given, and every other branch of the graph, stay as they were.

And a clone that rebuilds the model (ComfyUI 0.33's TorchCompileModel with dynamic VRAM, the
multi-GPU deep clones) runs TACA and its LoRA on its own model, not the one it was cloned from.
"""

import copy
import inspect

import pytest
import safetensors.torch
import torch

import comfy.model_patcher
import comfy.sd

from reference import plain
from tiny_loras import SD3_TARGETS, lora_loader, official_lora
from tiny_models import MODELS, conditioning, empty_latent, sample, sigmas, tiny_sd35_medium, with_attention_override

STEPS = 4


@pytest.mark.parametrize("family", ["flux", "sd3.5-medium"])
def test_input_model_and_sibling_branch_are_untouched(family, taca):
    # The input already carries another node's attention override, which TACA must leave on it.
    loaded = MODELS[family](seed=0)
    model = with_attention_override(loaded, plain)
    sibling = loaded.clone()  # another branch from the same loader
    latent = empty_latent(8, 8)
    positive, negative = conditioning(model, 50, seed=1), conditioning(model, 50, seed=2)
    s = sigmas(model, STEPS)
    threshold = 500 * float(s[1] + s[2])

    def run(m):
        return sample(m, positive, negative, latent, steps=STEPS)

    before, sibling_before = run(model), run(sibling)
    options, wrappers = copy.deepcopy(model.model_options), copy.deepcopy(model.wrappers)
    object_patches = dict(model.object_patches)

    patched = taca(model, 1.3, threshold)
    with_taca = run(patched)

    assert isinstance(patched, comfy.model_patcher.ModelPatcher) and patched is not model
    assert patched.model is model.model  # a clone shares the weights, it does not copy them
    assert model.model_options == options
    assert model.model_options["transformer_options"]["optimized_attention_override"] is plain
    assert model.wrappers == wrappers and model.object_patches == object_patches
    assert torch.equal(run(model), before)
    assert torch.equal(run(sibling), sibling_before)
    assert not torch.allclose(with_taca, before, atol=1e-2, rtol=0)


def test_a_clone_that_rebuilds_the_model_runs_taca_and_the_lora_on_its_own_model(taca, loras, tmp_path):
    if "force_deepcopy" not in inspect.signature(comfy.model_patcher.ModelPatcher.clone).parameters:
        pytest.skip("this ComfyUI's clones always share their model")
    path = tmp_path / "sd35m.safetensors"
    safetensors.torch.save_file(tiny_sd35_medium(seed=3).model.diffusion_model.state_dict(), str(path))
    model = comfy.sd.load_diffusion_model(str(path), model_options={"dtype": torch.float32})  # as UNETLoader loads it
    lora = loras("taca.safetensors", official_lora(model, SD3_TARGETS))
    latent = empty_latent(8, 8)
    positive, negative = conditioning(model, 20, seed=4), conditioning(model, 20, seed=5)
    s = sigmas(model, STEPS)
    patched = lora_loader(taca(model, 1.3, 500 * float(s[1] + s[2])), lora)
    expected = sample(patched, positive, negative, latent, steps=STEPS)

    rebuilt = patched.clone(force_deepcopy=True)
    assert rebuilt.model is not patched.model
    with torch.no_grad():  # the model it was cloned from is no longer the right one
        for p in patched.model.diffusion_model.parameters():
            p.zero_()
    assert torch.equal(sample(rebuilt, positive, negative, latent, steps=STEPS), expected)
