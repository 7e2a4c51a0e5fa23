"""The TACA node patches a clone: the model it was given, and every other branch of the graph, stay as they were."""

import copy

import pytest
import torch

import comfy.model_patcher

from tiny_models import MODELS, conditioning, empty_latent, sample, sigmas, with_attention_override

STEPS = 4


def plain(func, *args, **kwargs):
    return func(*args, **kwargs)


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
