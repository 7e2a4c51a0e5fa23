"""The TACA nodes (Temperature-Adjusted Cross-modal Attention, Lv et al., ICCV 2025).

TACA is the paper's node: γ₀ and a threshold. TACA Advanced shapes the same mechanism:
smooth ramps of γ, a choice of joint blocks and of guidance branches. With its defaults it
is TACA, to the bit.
"""

from comfy_api.latest import io

from ..taca.schedule import RAMPS, Ramp, Step
from .architectures import family_of
from .inputs import number_in_range, one_of
from .patch import TACASettings, apply_taca

GAMMA = {"default": 1.2, "min": 0.0, "max": 4.0, "step": 0.01}
THRESHOLD = {"default": 970.0, "min": 0.0, "max": 1000.0, "step": 1.0}
T_END = {**THRESHOLD, "default": 900.0}
STEP = "step (paper)"
SCHEDULES = (STEP, *RAMPS)
BOTH, COND_ONLY = "cond and uncond", "cond only"
BRANCHES = (BOTH, COND_ONLY)
BELOW_ONE = ("Below 1 it weakens the prompt's hold instead, as an ablation; at 0 the image attends to every prompt "
             "token alike, whatever the words.")


def model_input() -> io.Model.Input:
    return io.Model.Input("model", tooltip=(
        "A model with a joint text-image attention: FLUX.1, FLUX.2, SD3/SD3.5, Qwen-Image, Z-Image, Lumina 2, "
        "Chroma, HiDream, HunyuanImage/Video, AuraFlow and the other families the README lists. Other models "
        "get an error that says why TACA does not apply."
    ))


def gamma_input(tooltip: str) -> io.Float.Input:
    return io.Float.Input("gamma", **GAMMA, display_mode=io.NumberDisplay.slider, tooltip=tooltip)


def model_output() -> io.Model.Output:
    return io.Model.Output(tooltip="The model with TACA attached; the input model is unchanged.")


class TACA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TACA",
            display_name="TACA (Temperature-Adjusted Cross-modal Attention)",
            category="model_patches/attention",
            description=(
                "Strengthens the prompt's hold on the image in MM-DiT models (FLUX, SD3, Qwen-Image, ...): during the early, "
                "layout-deciding steps the image-to-text attention logits are multiplied by gamma. "
                "Fewer missing objects, wrong colors and wrong spatial relations. Pair it with the "
                "TACA LoRA for the same model (TACA LoRA Loader). A second TACA node on the same model "
                "replaces the first one's settings."
            ),
            inputs=[
                model_input(),
                gamma_input(
                    "γ₀: the temperature on image-query × text-key attention logits during the window. "
                    "1.0 turns TACA off. The paper uses 1.2; higher follows the prompt more strongly "
                    "but can add artifacts (the TACA LoRA removes them). " + BELOW_ONE
                ),
                io.Float.Input(
                    "threshold", **THRESHOLD, display_mode=io.NumberDisplay.slider,
                    tooltip=(
                        "TACA applies while the timestep t ≥ threshold, on the 0–1000 scale (t = 1000·σ; "
                        "CogVideoX: its DDPM timestep). "
                        "The paper's 970 covers the first few steps, where the layout is decided "
                        "(3 of 30 steps for FLUX.1-dev at 1024²). Lower it to keep TACA on for longer; "
                        "1000 keeps it only on a step that starts at σ = 1."
                    ),
                ),
            ],
            outputs=[model_output()],
        )

    @classmethod
    def execute(cls, model, gamma, threshold) -> io.NodeOutput:
        gamma = number_in_range("TACA", "gamma", gamma, GAMMA["min"], GAMMA["max"])
        threshold = number_in_range("TACA", "threshold", threshold, THRESHOLD["min"], THRESHOLD["max"])
        return io.NodeOutput(apply_taca(model, TACASettings(Step(gamma, threshold), description=f"γ₀ {gamma:g}, threshold {threshold:g}")))


class TACAAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TACAAdvanced",
            display_name="TACA Advanced",
            category="model_patches/attention",
            description=(
                "TACA with its schedule, blocks and guidance branches to shape. With the defaults it is the TACA "
                "node, to the bit. The paper evaluated only those defaults: its step schedule, every block and "
                "both guidance branches."
            ),
            inputs=[
                model_input(),
                gamma_input("γ₀: the temperature on image-query × text-key attention logits where TACA is fully on. 1.0 turns it "
                            "off. " + BELOW_ONE),
                io.Combo.Input(
                    "schedule", options=list(SCHEDULES), default=STEP,
                    tooltip=(
                        "How γ follows the timestep t (0–1000, t = 1000·σ). 'step (paper)': γ₀ while t ≥ t_start, then 1. "
                        "'linear' and 'cosine': γ₀ above t_start, easing down to 1 at t_end and staying 1 below it; "
                        "cosine starts and ends the ramp gently. The ramps were not evaluated in the paper."
                    ),
                ),
                io.Float.Input(
                    "t_start", **THRESHOLD, display_mode=io.NumberDisplay.slider,
                    tooltip="The step's threshold (as the TACA node's), or where a ramp starts to fall from γ₀.",
                ),
                io.Float.Input(
                    "t_end", **T_END, display_mode=io.NumberDisplay.slider,
                    tooltip="Where a ramp reaches 1 (t_end ≤ t_start). The step schedule does not use it.",
                ),
                io.String.Input(
                    "blocks", default="all",
                    tooltip=(
                        "Which joint blocks get the temperature, numbered from 0 in the order they run: 'all', numbers "
                        "and ranges such as '0-18' or '0,2,5-7', and for models with two kinds of block 'double' or "
                        "'single'. A wrong entry gets an error that gives the model's block count. Not evaluated in the paper."
                    ),
                ),
                io.Combo.Input(
                    "apply_to", options=list(BRANCHES), default=BOTH,
                    tooltip=(
                        "'cond and uncond': the paper's behaviour, the temperature on both guidance branches. 'cond only': "
                        "the negative prompt's branch keeps plain attention, so guidance pushes toward the boosted "
                        "prompt. Not evaluated in the paper."
                    ),
                ),
            ],
            outputs=[model_output()],
        )

    @classmethod
    def execute(cls, model, gamma, schedule, t_start, t_end, blocks, apply_to) -> io.NodeOutput:
        node = "TACA Advanced"
        gamma = number_in_range(node, "gamma", gamma, GAMMA["min"], GAMMA["max"])
        schedule = one_of(node, "schedule", schedule, SCHEDULES)
        t_start = number_in_range(node, "t_start", t_start, THRESHOLD["min"], THRESHOLD["max"])
        t_end = number_in_range(node, "t_end", t_end, T_END["min"], T_END["max"])
        apply_to = one_of(node, "apply_to", apply_to, BRANCHES)
        if not isinstance(blocks, str):
            raise ValueError(f"{node}: 'blocks' is {blocks!r}; it takes text such as 'all', '0-18' or 'double'.")
        if schedule == STEP:
            gamma_of_t, words = Step(gamma, t_start), f"γ₀ {gamma:g}, threshold {t_start:g}"
        else:
            if t_end > t_start:
                raise ValueError(
                    f"{node}: t_end ({t_end:g}) is above t_start ({t_start:g}). A {schedule} ramp runs from γ₀ at "
                    f"t_start down to 1 at t_end, so t_end must not exceed t_start: lower t_end or raise t_start."
                )
            gamma_of_t, words = Ramp(gamma, t_start, t_end, schedule), f"γ₀ {gamma:g}, {schedule} ramp {t_start:g}→{t_end:g}"
        chosen = family_of(model).select_blocks(model.model.diffusion_model, blocks)
        if chosen is not None:
            words += f", blocks {blocks.strip()}"
        if apply_to == COND_ONLY:
            words += ", cond only"
        return io.NodeOutput(apply_taca(model, TACASettings(gamma_of_t, chosen, apply_to == COND_ONLY, words)))
