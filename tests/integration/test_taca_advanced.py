"""TACA Advanced: ramps of γ, a choice of joint blocks and of guidance branches, on every family.

Each setting equals ReferenceTACA written out from its definition; runs outside every window
are bit-identical to the unpatched model; the calls TACA scales are exactly the blocks chosen
times the steps inside; the defaults are the TACA node to the bit; bad settings get errors
that say what the model has.
"""

import math

import pytest

import nodes

from reference import ReferenceTACA, identical, recording
from test_families import FAMILIES, STEPS, assert_matches, run, setup, step_timesteps
from tiny_models import timestep, tiny_flux, tiny_sd3, with_attention_override

GAMMA = 1.6
DEFAULTS = {"gamma": 1.2, "schedule": "step (paper)", "t_start": 970.0, "t_end": 900.0, "blocks": "all",
            "apply_to": "cond and uncond"}


def advanced(model, **inputs):
    return nodes.NODE_CLASS_MAPPINGS["TACAAdvanced"].execute(model=model, **{**DEFAULTS, **inputs}).result[0]


def ramp(gamma0, t_start, t_end, shape):
    """γ(t) of a ramp, written out from its definition."""
    def gamma(t):
        if t >= t_start:
            return gamma0
        if t <= t_end:
            return 1.0
        u = (t - t_end) / (t_start - t_end)
        return 1.0 + (gamma0 - 1.0) * (u if shape == "linear" else (1 - math.cos(math.pi * u)) / 2)
    return gamma


def reference_for(family, model, latent, n_texts, gamma, **options):
    joints = {family.joint_length(model, latent, n): family.joint_text(model, latent, n) for n in n_texts}
    return ReferenceTACA(gamma, joints, family.text_first, family.text_queries,
                         timestep=lambda sigma: timestep(model, sigma), blocks_per_forward=family.joint_calls(model), **options)


def window_over_the_middle(model):
    """t_start and t_end that put the first step above the ramp, the second and third on it
    and the last below it."""
    t = step_timesteps(model)
    return (t[0] + t[1]) / 2, (t[2] + t[3]) / 2


@pytest.mark.parametrize("shape", ["linear", "cosine"])
@pytest.mark.parametrize("family", FAMILIES)
def test_ramps_match_the_reference(family, shape):
    model, latent, positive, negative = setup(family, 21, (9, 9))
    t_start, t_end = window_over_the_middle(model)
    out = run(family, advanced(model, gamma=GAMMA, schedule=shape, t_start=t_start, t_end=t_end), positive, negative, latent)
    reference = reference_for(family, model, latent, (9,), ramp(GAMMA, t_start, t_end, shape))
    ref = run(family, with_attention_override(model, reference), positive, negative, latent)
    assert_matches(out, ref, run(family, model, positive, negative, latent))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_block_selection_and_cond_only_match_the_reference(family):
    model, latent, positive, negative = setup(family, 23, (9, 9))
    blocks = family.joint_calls(model)
    chosen = {0} if blocks == 1 else set(range(1, blocks))  # all but the first: the first block differs
    text = "0" if blocks == 1 else f"1-{blocks - 1}"
    t = step_timesteps(model)
    threshold = (t[1] + t[2]) / 2
    for branch, cond_only in (("cond and uncond", False), ("cond only", True)):
        out = run(family, advanced(model, gamma=GAMMA, t_start=threshold, blocks=text, apply_to=branch), positive, negative, latent)
        reference = reference_for(family, model, latent, (9,), lambda t: GAMMA if t >= threshold else 1.0,
                                  blocks=chosen, cond_only=cond_only)
        ref = run(family, with_attention_override(model, reference), positive, negative, latent)
        assert_matches(out, ref, run(family, model, positive, negative, latent), f"blocks {text}, {branch}: ")


@pytest.mark.parametrize("family", FAMILIES)
def test_outside_every_window_is_bit_identical_and_the_scaled_calls_are_counted(family):
    model, latent, positive, negative = setup(family, 25, (9, 9))
    denoise = 0.6
    first_t = step_timesteps(model, denoise=denoise)[0]
    below = run(family, model, positive, negative, latent, denoise=denoise)
    for schedule in ("step (paper)", "linear", "cosine"):  # every window starts above the first step
        patched = advanced(model, gamma=GAMMA, schedule=schedule, t_start=(first_t + 1000) / 2, t_end=(first_t + 1000) / 2)
        assert identical(run(family, patched, positive, negative, latent, denoise=denoise), below), schedule

    # The calls TACA scales: the blocks chosen × the forwards inside the window. Seen from an
    # override before TACA, each arrives as a visual-query call (keys: the whole sequence).
    if not family.text_queries:
        return  # HiDream-O1's joint calls have visual queries only: scaled or not, they look the same
    n = 40  # more text than image tokens here, so a call's query length says which kind it is
    model, latent, positive, negative = setup(family, 25, (n, n))
    blocks = family.joint_calls(model)
    chosen = [b for b in range(blocks) if b % 2 == 0]
    t = step_timesteps(model)
    threshold = (t[1] + t[2]) / 2
    joint_length, n_text = family.joint_length(model, latent, n), family.joint_text(model, latent, n)
    assert n_text != joint_length - n_text
    seen, unpatched = [], []
    run(family, with_attention_override(model, recording(unpatched)), positive, negative, latent)
    observed = advanced(with_attention_override(model, recording(seen)), gamma=GAMMA, t_start=threshold,
                        blocks=",".join(map(str, chosen)))
    run(family, observed, positive, negative, latent)
    forwards = len([c for c in unpatched if c.k_len == joint_length]) // blocks // STEPS
    scaled = [c for c in seen if c.k_len == joint_length and c.q_len == joint_length - n_text]
    assert len(scaled) == len(chosen) * len([s for s in t if s >= threshold]) * forwards > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_defaults_are_the_taca_node_to_the_bit(family, taca):
    model, latent, positive, negative = setup(family, 27, (9, 9))
    t = step_timesteps(model)
    threshold = (t[1] + t[2]) / 2
    assert identical(run(family, advanced(model, t_start=threshold), positive, negative, latent),
                     run(family, taca(model, 1.2, threshold), positive, negative, latent))


@pytest.mark.parametrize("blocks", ["0-99", "double,7", "single-ish", "3-1", "-1"])
def test_a_malformed_block_string_gets_an_error_with_the_block_count(blocks):
    model = tiny_flux()
    with pytest.raises(ValueError) as error:
        advanced(model, blocks=blocks)
    message = str(error.value)
    assert "2 joint blocks" in message and "double 0" in message and "single 1" in message and repr(blocks) in message


def test_kind_names_exist_only_where_a_family_has_two_kinds_of_block():
    model = tiny_sd3()  # two joint blocks of one kind
    assert advanced(model, blocks="1") is not None
    with pytest.raises(ValueError, match="2 joint blocks"):
        advanced(model, blocks="double")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_t_end_above_t_start_is_an_error_that_says_what_to_do(schedule):
    with pytest.raises(ValueError) as error:
        advanced(tiny_flux(), schedule=schedule, t_start=900.0, t_end=950.0)
    assert "t_end" in str(error.value) and "t_start" in str(error.value) and "lower t_end" in str(error.value)


def test_every_input_has_a_tooltip():
    schema = nodes.NODE_CLASS_MAPPINGS["TACAAdvanced"].GET_SCHEMA()
    assert [i.id for i in schema.inputs] == ["model", *DEFAULTS]
    assert all(i.tooltip for i in schema.inputs)
    defaults = {i.id: i.default for i in schema.inputs if i.id != "model"}
    assert defaults == DEFAULTS


def test_a_reversed_range_is_called_reversed():
    with pytest.raises(ValueError, match=r"the range '1-0' is reversed; write it '0-1'"):
        advanced(tiny_flux(), blocks="1-0")


def test_a_kind_the_model_has_none_of_is_an_error_not_a_no_op():
    from tiny_families.flux import CONFIG, flux_params
    from tiny_models import build_from_config
    import comfy.supported_models

    model = build_from_config(comfy.supported_models.Flux, flux_params({**CONFIG, "depth_single_blocks": 0}), seed=0)
    with pytest.raises(ValueError) as error:
        advanced(model, blocks="single")
    message = str(error.value)
    assert "this model has no single blocks" in message
    # One block: no plural, no range example such as '0-0', and no kind that has no blocks.
    assert "1 joint block," in message and "'0-0'" not in message and "'single'" not in message.split("Give")[1]
    assert advanced(model, blocks="double") is not None
