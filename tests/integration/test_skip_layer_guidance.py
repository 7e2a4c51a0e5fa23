"""Skip-layer guidance (ComfyUI's SkipLayerGuidanceDiT and SkipLayerGuidanceSD3) with TACA Advanced and the probe.

Each step, skip-layer guidance runs one more forward (the prompt's branch) in which the
blocks it names are replaced by a no-op, so their joint attention calls never happen there.
TACA Advanced's blocks and the probe's numbers must still name the blocks that ran, not the
n-th joint call. The reference (ReferenceTACA) is told before each forward which blocks run:
those whose replace-patch key ComfyUI's FLUX and MMDiT forwards find in that forward's
transformer_options["patches_replace"]["dit"] are skipped.
"""

import pytest

import comfy.patcher_extension
import nodes
from comfy_extras.nodes_sd3 import SkipLayerGuidanceSD3
from comfy_extras.nodes_slg import SkipLayerGuidanceDiT

from reference import ReferenceTACA, max_difference, step_gamma
from test_balance import chained, probe
from tiny_models import (conditioning, empty_latent, image_tokens, sample, sigmas, timestep, tiny_flux,
                         tiny_sd35_medium, with_attention_override)

STEPS = 4
GAMMA = 1.6
N_TEXT = 9
TOLERANCE = 1e-4
MASS_TOLERANCE = 1e-5


def slg_dit(model):
    """SkipLayerGuidanceDiT on every step, skipping FLUX's double block 0 in its pass."""
    return SkipLayerGuidanceDiT.execute(model=model, scale=3.0, start_percent=0.0, end_percent=1.0,
                                        double_layers="0", single_layers="", rescaling_scale=0.0).result[0]


def slg_sd3(model):
    """SkipLayerGuidanceSD3 on every step, skipping joint block 0 in its pass."""
    return SkipLayerGuidanceSD3.execute(model=model, layers="0", scale=3.0, start_percent=0.0,
                                        end_percent=1.0).result[0]


# model, skip-layer guidance, and each joint block's replace-patch key in call order (as the
# model's forward looks it up: FLUX's double then single blocks, MMDiT's joint blocks as "double_block")
CASES = {
    "flux": (tiny_flux, slg_dit, [("double_block", 0), ("single_block", 0)]),
    "sd3.5-medium": (tiny_sd35_medium, slg_sd3, [("double_block", 0), ("double_block", 1)]),
}


def advanced(model, blocks, t_start):
    return nodes.NODE_CLASS_MAPPINGS["TACAAdvanced"].execute(
        model=model, gamma=GAMMA, schedule="step (paper)", t_start=t_start, t_end=t_start, blocks=blocks,
        apply_to="cond and uncond").result[0]


def announcing(model, reference, keys, announced):
    """A clone that tells `reference`, before each forward, which joint blocks that forward runs."""
    patched = model.clone()

    def announce(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        replaced = transformer_options.get("patches_replace", {}).get("dit", {})
        running = [n for n, key in enumerate(keys) if key not in replaced]
        announced.append(running)
        reference.begin_forward(running)
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "reference_blocks", announce)
    return patched


def setup(case, seed):
    build, slg, keys = CASES[case]
    model = build(seed=seed)
    latent = empty_latent(8, 10)
    positive, negative = conditioning(model, N_TEXT, seed + 1), conditioning(model, N_TEXT, seed + 2)
    t = [timestep(model, s) for s in sigmas(model, STEPS)[:-1].tolist()]
    threshold = (t[1] + t[2]) / 2  # the window: the first two of four steps
    reference = lambda **options: ReferenceTACA(step_gamma(GAMMA, threshold), {N_TEXT + image_tokens(model, latent): N_TEXT},
                                                timestep=lambda sigma: timestep(model, sigma), **options)
    return model, slg, keys, threshold, reference, lambda m: sample(m, positive, negative, latent, steps=STEPS)


@pytest.mark.parametrize("order", ["TACA Advanced, then SLG", "SLG, then TACA Advanced"])
@pytest.mark.parametrize("case", list(CASES))
def test_taca_advanced_scales_the_blocks_it_names_in_slgs_pass(case, order):
    model, slg, keys, threshold, reference_with, run = setup(case, 51)
    slg_alone = run(slg(model))
    for chosen in (0, 1):  # the block SLG's pass skips, and the one it runs
        if order == "TACA Advanced, then SLG":
            out = run(slg(advanced(model, str(chosen), threshold)))
        else:
            out = run(advanced(slg(model), str(chosen), threshold))
        reference, announced = reference_with(blocks={chosen}), []
        routed = with_attention_override(model, lambda func, *args, **kwargs: reference(func, *args, **kwargs))
        ref = run(slg(announcing(routed, reference, keys, announced)))
        assert [1] in announced and [0, 1] in announced, f"SLG's pass did not skip block 0: {announced}"
        error, effect = max_difference(out, ref), max_difference(out, slg_alone)
        assert error <= TOLERANCE, f"blocks '{chosen}': TACA Advanced differs from the reference by {error}"
        assert effect > 10 * TOLERANCE, f"blocks '{chosen}': TACA changed the output by only {effect}"


@pytest.mark.parametrize("case", list(CASES))
def test_the_probe_attributes_slgs_pass_to_the_blocks_that_ran(case, taca):
    model, slg, keys, threshold, reference_with, run = setup(case, 53)
    probed, balance = probe(taca(model, GAMMA, threshold))
    masses, announced = [], []
    reference = reference_with(masses=masses)
    out = run(slg(announcing(chained(probed, reference), reference, keys, announced)))

    (recorded,) = balance.runs
    expected = [(block, used, plain) for block, per_call in zip(reference.blocks_seen, masses)
                for used, plain in zip(*per_call)]  # per batch item
    assert [1] in announced and len(recorded.calls) == len(expected) > 0
    assert [row[1] for row in recorded.calls] == [block for block, _, _ in expected]
    for (_, _, _, used, plain, _), (_, ref_used, ref_plain) in zip(recorded.calls, expected):
        assert abs(used - ref_used) <= MASS_TOLERANCE and abs(plain - ref_plain) <= MASS_TOLERANCE
    # The probe only looks: with it, the run is the run without it.
    assert max_difference(out, run(slg(taca(model, GAMMA, threshold)))) == 0
