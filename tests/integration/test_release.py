"""A model the pack patched is freed as soon as ComfyUI unloads it, as a model without the pack is.

ComfyUI restores an object-patched `forward` by setting the module's own bound method on the
instance, and that method refers back to the module: a reference cycle that would keep the
weights alive until Python's next garbage collection (ComfyUI's log calls such a model a
"potential memory leak"). With garbage collection off, each node of the pack, alone and all
together, on SD3.5-Medium and FLUX.1: after sampling and unloading, no weight is referenced.
"""

import gc
import weakref

import pytest

import comfy.model_management
import nodes

from tiny_loras import FLUX_TARGETS, SD3_TARGETS, lora_loader, official_lora
from tiny_models import conditioning, empty_latent, sample, tiny_flux, tiny_sd35_medium

MODELS = {"sd3.5-medium": (tiny_sd35_medium, SD3_TARGETS), "flux": (tiny_flux, FLUX_TARGETS)}


def taca(model):
    return nodes.NODE_CLASS_MAPPINGS["TACA"].execute(model=model, gamma=1.2, threshold=0.0).result[0]


def taca_advanced(model):
    return nodes.NODE_CLASS_MAPPINGS["TACAAdvanced"].execute(
        model=model, gamma=1.5, schedule="linear", t_start=1000.0, t_end=0.0, blocks="0", apply_to="cond only").result[0]


def probe(model):
    return nodes.NODE_CLASS_MAPPINGS["TACABalanceProbe"].execute(model=model).result[0]


PATCHES = {
    "none": (),
    "TACA": (taca,),
    "TACA Advanced": (taca_advanced,),
    "probe": (probe,),
    "LoRA": ("lora",),
    "all": ("lora", taca, probe),
}


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("patches", PATCHES)
def test_weights_are_freed_when_the_model_is_unloaded(family, patches, loras):
    build, targets = MODELS[family]
    gc.collect()
    gc.disable()
    try:
        model = build()
        weights = [weakref.ref(p) for p in model.model.diffusion_model.parameters()]
        patched = model
        for patch in PATCHES[patches]:
            patched = lora_loader(patched, loras("l.safetensors", official_lora(model, targets)), active="every step") \
                if patch == "lora" else patch(patched)
        sample(patched, conditioning(model, 9, seed=1), conditioning(model, 9, seed=2), empty_latent(8, 8), steps=2)
        comfy.model_management.unload_all_models()
        del model, patched
        alive = sum(w() is not None for w in weights)
        assert alive == 0, f"{alive} of {len(weights)} weights are still referenced after unloading"
    finally:
        gc.enable()
