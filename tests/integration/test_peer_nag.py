"""TACA with Normalized Attention Guidance: ComfyUI's NAGuidance node and the ChenDarYen/ComfyUI-NAG pack.

ComfyUI's NAGuidance (ComfyUI 0.33; 0.3.64 has no such node) patches the output of FLUX's
attention (attn1_output_patch); TACA changes the attention inside. In both orders of the two
nodes: at γ₀ = 1 the result is NAG's to the bit; above 1 it equals NAG applied to the
materialized TACA reference, and differs from either alone; and the balance probe counts, in
each forward inside the window, one scaled joint call per joint block.

ComfyUI-NAG (the pack) has no model node: its samplers (KSamplerWithNAG, NAGCFGGuider) take
the model, so TACA comes before them, the one order there is. As sampling starts, the pack sets
the diffusion model's forward, and its blocks' forwards, to its own copies of ComfyUI's code
(FLUX.1, SD3, ...), outside ComfyUI's model patching. TACA calls that forward for the run
instead of undoing it: at γ₀ = 1 the result is the pack's NAG to the bit. The pack's blocks
call ComfyUI's attention without transformer_options, so no attention override reaches
them, TACA's included: above γ₀ = 1, TACA cannot act, and says so, and the result is still
the pack's NAG. ComfyUI-NAG does not load on ComfyUI 0.33 (its module imports a class 0.33
no longer has); its tests skip there with that reason.
"""


import pytest

import nodes

from peer_packs import NAG, require
from reference import identical, max_difference
from test_taca_reference import TOLERANCE, reference_taca, threshold_after_step
from tiny_models import MODELS, conditioning, empty_latent, image_tokens, sample, with_attention_override

GAMMA = 1.3
STEPS = 2  # the first in the window
NO_JOINT_CALL = "no joint text-image attention call of this .* reached TACA"


def probe(model):
    return nodes.NODE_CLASS_MAPPINGS["TACABalanceProbe"].execute(model=model).result


def joint_blocks(model) -> int:
    dm = model.model.diffusion_model
    return sum(len(getattr(dm, name, ())) for name in ("double_blocks", "single_blocks", "joint_blocks"))


def scaled_calls_per_forward(balance, threshold) -> list:
    """For each forward of the probed run inside TACA's window: the joint blocks whose call TACA scaled."""
    (run,) = balance.runs
    per_forward = {}
    for t, block, _, _, _, active in run.calls:
        if t >= threshold:
            per_forward.setdefault(t, set())
            if active:
                per_forward[t].add(block)
    return [len(blocks) for _, blocks in sorted(per_forward.items())]


def setup(seed):
    model = MODELS["flux"](seed=seed)
    latent = empty_latent(8, 8)
    positive, negative = conditioning(model, 20, seed=seed + 1), conditioning(model, 20, seed=seed + 2)
    return model, latent, positive, negative, threshold_after_step(model, 1, STEPS)


# ComfyUI's NAGuidance

def nag_guidance(model):
    try:
        from comfy_extras.nodes_nag import NAGuidance
    except ImportError:
        pytest.skip("this ComfyUI has no NAGuidance node (comfy_extras/nodes_nag.py; ComfyUI 0.33 has it)")
    return NAGuidance.execute(model=model, nag_scale=5.0, nag_alpha=0.5, nag_tau=1.5).result[0]


ORDERS = {
    "NAGuidance then TACA": lambda model, taca: taca(nag_guidance(model)),
    "TACA then NAGuidance": lambda model, taca: nag_guidance(taca(model)),
}


@pytest.mark.parametrize("order", ORDERS)
def test_nag_guidance_with_taca_at_gamma_one_is_nag_alone(order, taca):
    model, latent, positive, negative, threshold = setup(51)
    out = sample(ORDERS[order](model, lambda m: taca(m, 1.0, threshold)), positive, negative, latent, steps=STEPS)
    nag_alone = sample(nag_guidance(model), positive, negative, latent, steps=STEPS)
    assert identical(out, nag_alone)
    assert max_difference(nag_alone, sample(model, positive, negative, latent, steps=STEPS)) > 1e-2  # NAG acts


@pytest.mark.parametrize("order", ORDERS)
def test_nag_guidance_with_taca_is_nag_on_the_reference(order, taca):
    model, latent, positive, negative, threshold = setup(54)
    reference = reference_taca(GAMMA, threshold, {20}, image_tokens(model, latent))

    def run(m):
        return sample(m, positive, negative, latent, steps=STEPS)

    out = run(ORDERS[order](model, lambda m: taca(m, GAMMA, threshold)))
    nag_on_reference = run(with_attention_override(nag_guidance(model), reference))
    assert max_difference(out, nag_on_reference) <= TOLERANCE
    for alone in (run(nag_guidance(model)), run(taca(model, GAMMA, threshold))):
        assert max_difference(out, alone) > 100 * TOLERANCE


@pytest.mark.parametrize("order", ORDERS)
def test_nag_guidance_with_taca_scales_every_joint_block(order, taca):
    model, latent, positive, negative, threshold = setup(57)
    probed, balance = probe(ORDERS[order](model, lambda m: taca(m, GAMMA, threshold)))
    sample(probed, positive, negative, latent, steps=STEPS)
    assert scaled_calls_per_forward(balance, threshold) == [joint_blocks(model)]  # one forward in the window


# The ComfyUI-NAG pack

def nag_pack(model, positive, negative, latent, nag_scale=3.0):
    """KSamplerWithNAG (ComfyUI-NAG) with NAG's own negative prompt: the sampled latent."""
    require(NAG)
    nag_negative = conditioning(model, 12, seed=99)
    (out,) = nodes.NODE_CLASS_MAPPINGS["KSamplerWithNAG"]().sample(
        model, 0, STEPS, 3.0, nag_scale, 2.5, 0.25, 0.0, "euler", "simple", positive, negative, nag_negative,
        {"samples": latent})
    return out["samples"]


def pack_setup(family: str, seed: int):
    """A tiny model of the family, an 8×8 latent, positive and negative prompts, and a threshold
    that ends TACA's window after the first step."""
    model = MODELS[family](seed=seed)
    positive, negative = conditioning(model, 20, seed=seed + 1), conditioning(model, 20, seed=seed + 2)
    return model, empty_latent(8, 8), positive, negative, threshold_after_step(model, 1, STEPS)


@pytest.mark.parametrize("family", ["flux", "sd3.5-medium"])
def test_nag_pack_with_taca_at_gamma_one_is_nag_alone(family, taca):
    model, latent, positive, negative, threshold = pack_setup(family, 61)
    without_nag = nag_pack(model, positive, negative, latent, nag_scale=1.0)  # the pack's sampler, NAG off
    nag_alone = nag_pack(model, positive, negative, latent)
    assert max_difference(nag_alone, without_nag) > 1e-2  # NAG acts
    assert identical(nag_pack(taca(model, 1.0, threshold), positive, negative, latent), nag_alone)
    # The run left no trace: the model without TACA and NAG samples as before it.
    assert identical(nag_pack(model, positive, negative, latent, nag_scale=1.0), without_nag)


@pytest.mark.parametrize("family", ["flux", "sd3.5-medium"])
def test_nag_pack_blocks_reach_no_attention_override_and_taca_stops(family, taca):
    # The pack's blocks call attention without transformer_options: TACA could not act, so it
    # stops at the first step inside its window instead of sampling as if it had.
    model, latent, positive, negative, threshold = pack_setup(family, 64)
    nag_alone = nag_pack(model, positive, negative, latent)
    with pytest.raises(RuntimeError, match=NO_JOINT_CALL):
        nag_pack(taca(model, GAMMA, threshold), positive, negative, latent)
    # The pack's run right after a TACA model's misses NAG (the pack's own caveat, README); the
    # one after it is NAG's again: nothing of TACA stays.
    nag_pack(model, positive, negative, latent)
    assert identical(nag_pack(model, positive, negative, latent), nag_alone)
