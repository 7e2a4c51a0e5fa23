"""TACALoraLoader: the TACA LoRA, active on the same early steps as TACA."""

import folder_paths
from comfy_api.latest import io

from .inputs import number_in_range, one_of
from .lora import NODE, apply_taca_lora

WITH_TACA = "with TACA"
EVERY_STEP = "every step"
ACTIVE = (WITH_TACA, EVERY_STEP)
STRENGTH = {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}


class TACALoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TACALoraLoader",
            display_name=NODE,
            category="model_patches/attention",
            description=(
                "Loads a TACA LoRA (the authors' FLUX.1-dev and SD3.5-Medium files at huggingface.co/ldiex/TACA, "
                "or one trained for another supported family) and keeps it on only while TACA's temperature is "
                "on, as the authors' pipeline does. The base weights are never changed. ComfyUI's ordinary "
                "LoraLoader would apply it on every step. Without a TACA node on the model, 'with TACA' keeps it off."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model the LoRA was trained for: FLUX.1-dev or SD3.5-Medium for the authors' files."),
                io.Combo.Input(
                    "lora_name", options=folder_paths.get_filename_list("loras"),
                    tooltip=(
                        "A TACA LoRA from your models/loras folder: the FLUX.1-dev file for FLUX.1-dev, "
                        "the SD3.5-Medium file for SD3.5-Medium (rank 16 or 64), or any LoRA in a format ComfyUI "
                        "reads, trained for the model connected."
                    ),
                ),
                io.Float.Input(
                    "strength", **STRENGTH,
                    tooltip="How strongly the LoRA corrects TACA's artifacts. 1.0 is the trained strength; 0 turns it off.",
                ),
                io.Combo.Input(
                    "active", options=list(ACTIVE), default=WITH_TACA,
                    tooltip=(
                        "'with TACA': on exactly the steps where a TACA node applies its temperature (in either "
                        "order; with TACA bypassed it stays off, so the result is the baseline). 'every step': on "
                        "for the whole run."
                    ),
                ),
            ],
            outputs=[io.Model.Output(tooltip="The model with the LoRA attached; the input model is unchanged.")],
        )

    @classmethod
    def execute(cls, model, lora_name, strength, active) -> io.NodeOutput:
        strength = number_in_range(NODE, "strength", strength, STRENGTH["min"], STRENGTH["max"])
        active = one_of(NODE, "active", active, ACTIVE)
        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        return io.NodeOutput(apply_taca_lora(model, path, strength, every_step=active == EVERY_STEP))
