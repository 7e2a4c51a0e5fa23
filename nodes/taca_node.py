"""The TACA node (Temperature-Adjusted Cross-modal Attention, Lv et al., ICCV 2025)."""

from comfy_api.latest import io

from ..taca.schedule import Step
from .inputs import number_in_range
from .patch import TACASettings, apply_taca

GAMMA = {"default": 1.2, "min": 0.0, "max": 4.0, "step": 0.01}
THRESHOLD = {"default": 970.0, "min": 0.0, "max": 1000.0, "step": 1.0}


class TACA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TACA",
            display_name="TACA (Temperature-Adjusted Cross-modal Attention)",
            category="model_patches/attention",
            description=(
                "Strengthens the prompt's hold on the image in FLUX.1 and SD3/SD3.5: during the early, "
                "layout-deciding steps the image-to-text attention logits are multiplied by gamma. "
                "Fewer missing objects, wrong colors and wrong spatial relations. Pair it with the "
                "TACA LoRA for the same model (TACALoraLoader). A second TACA node on the same model "
                "replaces the first one's settings."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A FLUX.1 (dev, schnell, Fill, Kontext), SD3 or SD3.5 model."),
                io.Float.Input(
                    "gamma", **GAMMA, display_mode=io.NumberDisplay.slider,
                    tooltip=(
                        "γ₀: the temperature on image-query × text-key attention logits during the window. "
                        "1.0 turns TACA off. The paper uses 1.2; higher follows the prompt more strongly "
                        "but can add artifacts (the TACA LoRA removes them)."
                    ),
                ),
                io.Float.Input(
                    "threshold", **THRESHOLD, display_mode=io.NumberDisplay.slider,
                    tooltip=(
                        "TACA applies while the timestep t ≥ threshold, on the 0–1000 scale (t = 1000·σ). "
                        "The paper's 970 covers the first few steps, where the layout is decided "
                        "(3 of 30 steps for FLUX.1-dev at 1024²). Lower it to keep TACA on for longer; "
                        "1000 keeps it only on a step that starts at σ = 1."
                    ),
                ),
            ],
            outputs=[io.Model.Output(tooltip="The model with TACA attached; the input model is unchanged.")],
        )

    @classmethod
    def execute(cls, model, gamma, threshold) -> io.NodeOutput:
        gamma = number_in_range("TACA", "gamma", gamma, GAMMA["min"], GAMMA["max"])
        threshold = number_in_range("TACA", "threshold", threshold, THRESHOLD["min"], THRESHOLD["max"])
        return io.NodeOutput(apply_taca(model, TACASettings(Step(gamma, threshold))))
