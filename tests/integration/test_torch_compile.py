"""TACA and its LoRA loader compose with ComfyUI's TorchCompileModel node, before or after it.

ComfyUI 0.33's TorchCompileModel drops every torch.compile guard on transformer_options. TACA
hands each forward's step to the compiled code through state that torch.compile guards (a
forward patch on the diffusion model, and the override's own attributes): entering or leaving
the window recompiles instead of replaying a graph traced on the other side of it. The cases:
- TACA, and TACA with its LoRA ('with TACA'), with TorchCompileModel before or after them;
- TACA Advanced with a cosine ramp, one block and cond only (a γ per batch item);
- a window of two of four steps, so every run crosses the boundary;
- a fresh compile, and a process where the same base model was first compiled and sampled
  without TACA (a graph traced without TACA is cached for it);
- attention that breaks torch.compile's graph (sub-quadratic, split), chosen by a node before
  TACA: dynamo then compiles TACA's override as a frame of its own;
- the same attention as ComfyUI's own choice (its default on a CPU): on a host whose
  TorchCompileModel drops those guards, TACA stops before sampling with an error naming the
  backend, and the next compile without TACA is as in a fresh process.
Each run equals eager TACA within inductor's fp32 reordering and differs clearly from the
untouched model. With PyTorch SDPA, the attention ComfyUI picks on a GPU, torch.compile meets
no graph break.
"""

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import comfy.ldm.modules.attention

import nodes

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


@pytest.mark.parametrize("family,backend", [("flux", "sub_quad"), ("sd3.5-medium", "split")])
def test_taca_under_torch_compile_with_attention_that_breaks_the_graph(family, backend, taca, torch_compile):
    # A node before TACA picked an attention that torch.compile cannot trace whole: the
    # override is compiled as a frame of its own, where the guards on transformer_options are
    # gone, and the window still ends mid-run.
    model = with_attention_backend(MODELS[family](seed=7), backend)
    latent = empty_latent(8, 8)
    positive, negative = conditioning(model, 20, seed=8), conditioning(model, 20, seed=9)
    s = sigmas(model, STEPS)
    threshold = 500 * float(s[1] + s[2])

    def run(m):
        return sample(m, positive, negative, latent, steps=STEPS)

    assert_compiled_in_both_orders_matches_eager("TACA", lambda m: taca(m, GAMMA, threshold), model, run, run(model),
                                                 torch_compile)
    assert counters["graph_break"], f"{backend} attention compiled without a graph break: the test proves nothing"
    # The model without TACA after it, in the same process: FLUX's block, compiled as a frame of
    # its own (ComfyUI 0.33 drops the guards on transformer_options), saw no key of TACA's to replay.
    assert max_difference(run(torch_compile(model)), run(model)) <= TOLERANCE


def drops_guards_on_transformer_options() -> bool:
    """Whether this host's TorchCompileModel compiles with ComfyUI 0.33's guard filter, which
    drops every guard on transformer_options."""
    import comfy_extras.nodes_torch_compile

    return hasattr(comfy_extras.nodes_torch_compile, "skip_torch_compile_dict")


@pytest.mark.parametrize("family", list(TARGETS))
def test_with_comfyuis_own_graph_breaking_attention_it_stops_before_sampling(family, taca, torch_compile):
    # ComfyUI's own choice on a CPU is sub-quadratic attention. On a host whose TorchCompileModel
    # drops the guards on transformer_options, a TACA run would compile ComfyUI's attention
    # wrapper with TACA's override in it and break the next compile without TACA; so TACA stops
    # before anything is compiled, and the next prompt is as in a fresh process.
    if comfy.ldm.modules.attention.optimized_attention is not comfy.ldm.modules.attention.attention_sub_quad:
        pytest.skip("this ComfyUI process does not run sub-quadratic attention by default")
    advanced = nodes.NODE_CLASS_MAPPINGS["TACAAdvanced"]
    model = MODELS[family](seed=10)
    latent = empty_latent(8, 8)
    positive, negative = conditioning(model, 20, seed=11), conditioning(model, 20, seed=12)
    s = sigmas(model, STEPS)
    threshold = 500 * float(s[1] + s[2])

    def run(m):
        return sample(m, positive, negative, latent, steps=STEPS)

    def shaped(m):
        return advanced.execute(model=m, gamma=GAMMA, schedule="linear", t_start=threshold, t_end=0.0, blocks="all",
                                apply_to="cond only").result[0]

    eager = run(taca(model, GAMMA, threshold))
    if not drops_guards_on_transformer_options():  # ComfyUI 0.3.64: every guard kept
        assert_compiled_in_both_orders_matches_eager("TACA", lambda m: taca(m, GAMMA, threshold), model, run,
                                                     run(model), torch_compile)
        return
    for patched in (taca(torch_compile(model), GAMMA, threshold), torch_compile(taca(model, GAMMA, threshold)),
                    shaped(torch_compile(model)), torch_compile(shaped(model))):
        with pytest.raises(RuntimeError, match=r"'sub_quad' function.*--use-pytorch-cross-attention"):
            run(patched)
    assert not counters["stats"]["unique_graphs"], "TACA stopped, but only after torch.compile had compiled"
    after = run(torch_compile(model))  # the same process, no reset
    torch._dynamo.reset()
    assert torch.equal(after, run(torch_compile(model))), "the compile after TACA's error differs from a fresh one"
    assert max_difference(after, run(model)) <= TOLERANCE and max_difference(eager, run(model)) > 50 * TOLERANCE


@pytest.mark.parametrize("backend,refused", [("sub_quad", True), ("split", True), ("pytorch", False)])
def test_the_refusal_names_comfyuis_attention_and_spares_pytorch_attention(backend, refused, taca, torch_compile,
                                                                             monkeypatch):
    # The check reads the attention ComfyUI selected at start-up; ComfyUI's pre-run callbacks run it.
    monkeypatch.setattr(comfy.ldm.modules.attention, "optimized_attention",
                        comfy.ldm.modules.attention.get_attention_function(backend))
    compiled = torch_compile(taca(MODELS["flux"](seed=13), GAMMA, 970.0))
    if not drops_guards_on_transformer_options():
        compiled.pre_run()  # every guard kept: nothing to refuse
        return
    if refused:
        with pytest.raises(RuntimeError, match=f"its '{backend}' function"):
            compiled.pre_run()
    else:
        compiled.pre_run()
    # A node before TACA that picks the attention is trusted: every model it feeds has an override.
    with_node = torch_compile(taca(with_attention_backend(MODELS["flux"](seed=13), backend), GAMMA, 970.0))
    with_node.pre_run()
