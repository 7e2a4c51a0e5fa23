"""TACA and its LoRA loader compose with ComfyUI's TorchCompileModel node, before or after it.

ComfyUI 0.33's TorchCompileModel drops every torch.compile guard on transformer_options. TACA
hands each forward's step to the compiled code through a forward patch on the diffusion
model, whose attributes torch.compile guards: entering or leaving the window recompiles
instead of replaying a graph traced on the other side of it. The cases:
- TACA, and TACA with its LoRA ('with TACA'), with TorchCompileModel before or after them;
- TACA Advanced with a cosine ramp, one block and cond only (a γ per batch item);
- a window of two of four steps, so every run crosses the boundary;
- a fresh compile, and a process where the same base model was first compiled and sampled
  without TACA (a graph traced without TACA is cached for it).
Each run equals eager TACA within inductor's fp32 reordering and differs clearly from the
untouched model. With PyTorch SDPA, the attention ComfyUI picks on a GPU, torch.compile meets
no graph break.
"""

import pytest
from torch._dynamo.utils import counters

from reference import max_difference
from tiny_loras import FLUX_TARGETS, SD3_TARGETS, lora_loader, official_lora
from tiny_models import MODELS, conditioning, empty_latent, sample, sigmas, with_attention_backend

STEPS = 4
GAMMA = 1.3
TARGETS = {"flux": FLUX_TARGETS, "sd3.5-medium": SD3_TARGETS}
# Inductor reorders fp32 arithmetic: compiled and eager sampling differ by about 2e-4 on
# these models, with TACA and without it.
TOLERANCE = 1e-3


@pytest.mark.parametrize("history", ["fresh", "compiled-without-taca-first"])
@pytest.mark.parametrize("family", list(TARGETS))
def test_taca_and_its_lora_under_torch_compile_match_eager(family, history, taca, torch_compile, loras):
    model = with_attention_backend(MODELS[family](seed=1), "pytorch")
    latent = empty_latent(8, 8)
    positive, negative = conditioning(model, 20, seed=2), conditioning(model, 20, seed=3)
    s = sigmas(model, STEPS)
    threshold = 500 * float(s[1] + s[2])  # the window is the first two of the four steps
    lora = loras(f"taca_{family}.safetensors", official_lora(model, TARGETS[family]))

    def run(m):
        return sample(m, positive, negative, latent, steps=STEPS)

    def with_taca(m):
        return taca(m, GAMMA, threshold)

    def with_both(m):
        return lora_loader(taca(m, GAMMA, threshold), lora)

    untouched = run(model)
    if history == "compiled-without-taca-first":
        run(torch_compile(model))
    for name, patch in (("TACA", with_taca), ("TACA + LoRA", with_both)):
        assert_compiled_in_both_orders_matches_eager(name, patch, model, run, untouched, torch_compile)
    assert not counters["graph_break"], f"graph breaks: {list(counters['graph_break'])}"


def assert_compiled_in_both_orders_matches_eager(name, patch, model, run, untouched, torch_compile):
    eager = run(patch(model))
    for order, patched in (("after TorchCompileModel", patch(torch_compile(model))),
                           ("before TorchCompileModel", torch_compile(patch(model)))):
        out = run(patched)
        error, effect = max_difference(out, eager), max_difference(out, untouched)
        assert error <= TOLERANCE, f"{name} {order}: differs from eager by {error}"
        assert effect > 50 * TOLERANCE, f"{name} {order}: changed the compiled model's output by only {effect}"


@pytest.mark.parametrize("family", list(TARGETS))
def test_taca_advanced_under_torch_compile_matches_eager(family, torch_compile):
    # A ramp (γ changes every step), a block subset and cond only (γ one value per batch
    # item): what TACA Advanced adds to the state the compiled code must see.
    import nodes

    advanced = nodes.NODE_CLASS_MAPPINGS["TACAAdvanced"]
    model = with_attention_backend(MODELS[family](seed=4), "pytorch")
    latent = empty_latent(8, 8)
    positive, negative = conditioning(model, 20, seed=5), conditioning(model, 20, seed=6)
    s = sigmas(model, STEPS)
    t_start, t_end = 1000 * float(s[0]), 500 * float(s[2] + s[3])  # the ramp spans the first three steps

    def run(m):
        return sample(m, positive, negative, latent, steps=STEPS)

    def shaped(m):
        return advanced.execute(model=m, gamma=GAMMA, schedule="cosine", t_start=t_start, t_end=t_end, blocks="0",
                                apply_to="cond only").result[0]

    assert_compiled_in_both_orders_matches_eager("TACA Advanced", shaped, model, run, run(model), torch_compile)
    assert not counters["graph_break"], f"graph breaks: {list(counters['graph_break'])}"
