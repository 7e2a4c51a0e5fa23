"""TACA with kijai/ComfyUI-KJNodes: its attention override and its FLUX torch.compile nodes.

KJNodes' attention nodes (Patch Sage Attention KJ, Patch Flash Attention KJ, GGUF Loader
KJ's attention_override) set transformer_options["optimized_attention_override"] to a
function that runs their own attention and ignores the function ComfyUI passes: they replace
the override they find, chaining nothing. The one that runs on a CPU is GGUF Loader KJ's
'sdpa' (PyTorch's scaled_dot_product_attention). The tests set that function on a model as
those nodes set theirs, before TACA and after it: TACA then calls KJNodes' attention with its
split rows, in both orders, and equals the materialized reference; counting the calls of
scaled_dot_product_attention shows KJNodes' attention ran for each of them.

GGUF Loader KJ itself needs ComfyUI-GGUF; at the commits the tests name it fails before any
model exists (it unpacks gguf_sd_loader's state dict as a pair, which later ComfyUI-GGUF
returns), so its test skips saying so.

Its compile nodes, on one tiny FLUX.1 for two steps (the first in TACA's window):
- TorchCompileModelFluxAdvancedV2 compiles the blocks through ComfyUI's torch_helpers and
  keeps every guard: it equals eager TACA, with ComfyUI's default CPU attention
  (sub-quadratic, which breaks the graph at each call; measured also with
  --use-pytorch-cross-attention);
- TorchCompileModelAdvanced compiles the blocks and drops the guards on transformer_options:
  TACA stops before sampling, naming KJNodes' compile (measured without that: with PyTorch
  attention, an AttributeError after the window);
- TorchCompileModelFluxAdvanced is kept for old workflows and passes the model through.
"""

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import folder_paths
import nodes

from peer_packs import GGUF, KJNODES, require
from reference import identical, max_difference
from test_taca_reference import assert_matches, reference_taca, threshold_after_step
from tiny_models import MODELS, conditioning, empty_latent, image_tokens, sample, with_attention_override

require(KJNODES, module=True)

GAMMA = 1.3
STEPS = 2  # the first in the window
COMPILE_TOLERANCE = 1e-3  # inductor reorders fp32 arithmetic (test_torch_compile.py)


def kj_sdpa(model):
    """A clone with KJNodes' 'sdpa' attention override, set as its nodes set theirs."""
    override = nodes.NODE_CLASS_MAPPINGS["GGUFLoaderKJ"].ATTENTION_OVERRIDES["sdpa"]
    patched = model.clone()
    patched.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    return patched


class SDPACalls(torch.overrides.TorchFunctionMode):
    """Counts the calls of PyTorch's scaled_dot_product_attention made while it is active."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.scaled_dot_product_attention:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def joint_blocks(model) -> int:
    """The joint attention calls of one forward of the tiny models: one per block."""
    dm = model.model.diffusion_model
    return sum(len(getattr(dm, name, ())) for name in ("double_blocks", "single_blocks", "joint_blocks"))


@pytest.mark.parametrize("order", ["KJNodes then TACA", "TACA then KJNodes"])
@pytest.mark.parametrize("family", ["flux", "sd3.5-medium"])
def test_kjnodes_attention_override_with_taca_in_both_orders(family, order, taca):
    model = MODELS[family](seed=41)
    latent = empty_latent(8, 8)
    positive, negative = conditioning(model, 20, seed=42), conditioning(model, 20, seed=43)
    threshold = threshold_after_step(model, 1, STEPS)
    reference = reference_taca(GAMMA, threshold, {20}, image_tokens(model, latent))
    patched = taca(kj_sdpa(model), GAMMA, threshold) if order == "KJNodes then TACA" else kj_sdpa(
        taca(model, GAMMA, threshold))

    def run(m):
        return sample(m, positive, negative, latent, steps=STEPS)

    with SDPACalls() as kj_alone_calls:
        kj_alone = run(kj_sdpa(model))
    with SDPACalls() as calls:
        out = run(patched)
    assert_matches(out, run(with_attention_override(model, reference)), kj_alone)
    # KJNodes' attention ran every call; TACA split each joint call of the one forward in its
    # window (cond and uncond batched) into two.
    assert kj_alone_calls.calls > 0
    assert calls.calls - kj_alone_calls.calls == joint_blocks(model), (calls.calls, kj_alone_calls.calls)
    other_order = kj_sdpa(taca(model, GAMMA, threshold)) if order == "KJNodes then TACA" else taca(
        kj_sdpa(model), GAMMA, threshold)
    assert identical(out, run(other_order))


def test_gguf_loader_kj_attention_override_with_taca(taca, monkeypatch):
    require(GGUF)
    import gguf_models

    folder = gguf_models.gguf_files() / "diffusion_models"
    paths, extensions = folder_paths.folder_names_and_paths["diffusion_models"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusion_models", ([*paths, str(folder)], extensions))
    loader = nodes.NODE_CLASS_MAPPINGS["GGUFLoaderKJ"]
    try:
        model = loader.execute(model_name=gguf_models.file_name("sd3.5_medium", "Q8_0"), extra_model_name="none",
                               dequant_dtype="default", patch_dtype="default", patch_on_device=False,
                               attention_override="sdpa", enable_fp16_accumulation=False).result[0]
    except ValueError as error:
        if "unpack" not in str(error):
            raise
        pytest.skip(f"GGUF Loader KJ fails with this ComfyUI-GGUF before loading any model ({error}): it expects "
                    "gguf_sd_loader to return (state dict, metadata), which this ComfyUI-GGUF returns as the state "
                    "dict alone. A fault between the two packs, not TACA's.")
    latent = empty_latent(6, 8)
    positive, negative = conditioning(model, 20, seed=44), conditioning(model, 20, seed=45)
    threshold = threshold_after_step(model, 1, STEPS)
    reference = reference_taca(GAMMA, threshold, {20}, image_tokens(model, latent))
    (plain,) = nodes.NODE_CLASS_MAPPINGS["UnetLoaderGGUF"]().load_unet(gguf_models.file_name("sd3.5_medium", "Q8_0"))

    def run(m):
        return sample(m, positive, negative, latent, steps=STEPS)

    assert_matches(run(taca(model, GAMMA, threshold)), run(with_attention_override(plain, reference)), run(model))


def kj_compile(node, **inputs):
    """KJNodes' compile node `node`, inductor, its defaults otherwise: model -> its MODEL output."""
    defaults = {
        "TorchCompileModelFluxAdvancedV2": dict(backend="inductor", mode="default", fullgraph=False, single_blocks=True,
                                                double_blocks=True, dynamic=False),
        "TorchCompileModelAdvanced": dict(backend="inductor", fullgraph=False, mode="default", dynamic="false",
                                          dynamo_cache_size_limit=64, compile_transformer_blocks_only=True,
                                          debug_compile_keys=False),
    }[node]
    instance = nodes.NODE_CLASS_MAPPINGS[node]()
    return lambda model: instance.patch(model, **{**defaults, **inputs})[0]


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def tiny_flux_run():
    model = MODELS["flux"](seed=46)
    latent = empty_latent(8, 8)
    positive, negative = conditioning(model, 20, seed=47), conditioning(model, 20, seed=48)

    def run(m):
        return sample(m, positive, negative, latent, steps=STEPS)

    return model, run, threshold_after_step(model, 1, STEPS)


def test_kjnodes_flux_compile_that_keeps_its_guards_matches_eager_taca(taca, fresh_dynamo):
    model, run, threshold = tiny_flux_run()
    compile_blocks = kj_compile("TorchCompileModelFluxAdvancedV2")
    eager, untouched = run(taca(model, GAMMA, threshold)), run(model)
    for order, patched in (("after the compile node", taca(compile_blocks(model), GAMMA, threshold)),
                           ("before the compile node", compile_blocks(taca(model, GAMMA, threshold)))):
        out = run(patched)
        assert max_difference(out, eager) <= COMPILE_TOLERANCE, f"TACA {order}: {max_difference(out, eager)}"
        assert max_difference(out, untouched) > 50 * COMPILE_TOLERANCE
    assert counters["stats"]["unique_graphs"] > 0  # it did compile
    assert max_difference(run(compile_blocks(model)), untouched) <= COMPILE_TOLERANCE  # and the model without TACA


def test_kjnodes_compile_of_the_blocks_without_guards_stops_before_sampling(taca, fresh_dynamo):
    model, run, threshold = tiny_flux_run()
    compile_blocks = kj_compile("TorchCompileModelAdvanced")
    for patched in (taca(compile_blocks(model), GAMMA, threshold), compile_blocks(taca(model, GAMMA, threshold))):
        with pytest.raises(RuntimeError, match=r"^TACA with the torch\.compile node of ComfyUI-KJNodes .*"
                                               r"compiles parts of the diffusion model \(diffusion_model\.double_blocks"):
            run(patched)
    assert not counters["stats"]["unique_graphs"], "TACA stopped, but only after torch.compile had compiled"


def test_kjnodes_deprecated_flux_compile_passes_the_model_through(taca):
    model, run, threshold = tiny_flux_run()
    deprecated = nodes.NODE_CLASS_MAPPINGS["TorchCompileModelFluxAdvanced"]()
    assert identical(run(deprecated.passthrough(taca(model, GAMMA, threshold))[0]),
                     run(taca(deprecated.passthrough(model)[0], GAMMA, threshold)))
