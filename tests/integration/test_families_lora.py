"""TACALoraLoader on every joint-attention family: any LoRA ComfyUI's key map understands.

Each family's tiny model gets a LoRA on every Linear layer ComfyUI's key map names
(tiny_loras.generic_lora). On every step it equals ComfyUI's own merged LoRA. The window
('with TACA') is the same mechanism on every family; test_lora.py tests it on FLUX.1 and
SD3.5-Medium.
"""

import pytest

from reference import max_difference
from test_families import FAMILIES, run, setup
from tiny_loras import generic_lora, lora_loader, merged_lora

# In fp32, x·(W + s·B·A)ᵀ (merged) and x·Wᵀ + s·(x·Aᵀ)·Bᵀ round differently; these LoRAs touch
# every Linear layer of the model, so the difference after four CFG steps reaches about 1.3e-4.
TOLERANCE = 5e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_every_step_equals_comfyui_merged_lora(family, loras):
    model, latent, positive, negative = setup(family, 11, (9, 9))
    name = loras(f"lora_{family.name}.safetensors", generic_lora(model))
    ours = run(family, lora_loader(model, name, active="every step"), positive, negative, latent)
    merged = run(family, merged_lora(model, name), positive, negative, latent)
    assert max_difference(ours, merged) < TOLERANCE
    assert max_difference(ours, run(family, model, positive, negative, latent)) > 10 * TOLERANCE  # the LoRA does something
