"""TACALoraLoader on every joint-attention family: any LoRA ComfyUI's key map understands.

Each family's tiny model gets a LoRA on every Linear layer ComfyUI's key map names
(tiny_loras.generic_lora). On every step it equals ComfyUI's own merged LoRA; with 'with TACA'
and the window over the first two of four steps it equals the merged LoRA on those steps and
no LoRA after them.
"""

import pytest

from reference import max_difference
from test_families import FAMILIES, run, setup, threshold_after_step
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
