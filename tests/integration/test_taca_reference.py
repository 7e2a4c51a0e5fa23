"""FLUX.1 and SD3: sampling with the TACA node equals sampling with TACA written out from its definition.

The reference (reference.ReferenceTACA) materializes the joint logits, multiplies the
image-query × text-key block by γ(t) and takes the softmax; it knows the text lengths and
the visual token count from the test's own inputs. test_families.py checks every family the
same way; this module adds what is particular to FLUX.1 and SD3: odd latent sizes padded to
whole patches, Kontext reference images, attention backends, and nodes stacked around TACA.
"""

import pytest
import torch

from reference import ReferenceTACA, plain, scaled, step_gamma
from tiny_models import (
    MODELS, conditioning, empty_latent, image_tokens, sample, sigmas, with_attention_backend, with_attention_override,
)

STEPS = 4
GAMMA = 1.3
TOLERANCE = 1e-4


def reference_taca(gamma, threshold, text_lengths, n_visual):
    """ReferenceTACA for FLUX.1 and SD3: the text first, joint calls text + n_visual long."""
    return ReferenceTACA(step_gamma(gamma, threshold), {n + n_visual: n for n in text_lengths})


def threshold_after_step(model, n, steps=STEPS):
    """A threshold whose window is the first n steps: 1000·σ halfway between step n and n + 1."""
    s = sigmas(model, steps)
    return 500 * float(s[n - 1] + s[n])


def chaining_node(model, factor):
    """Another node applied after TACA: it wraps the override it finds, as chaining patch nodes do."""
    previous = model.model_options["transformer_options"].get("optimized_attention_override", plain)
    return with_attention_override(model, scaled(previous, factor))


def assert_matches(out, ref, baseline):
    assert out.shape == ref.shape
    error = (out - ref).abs().max().item()
    effect = (out - baseline).abs().max().item()
    assert error <= TOLERANCE, f"TACA differs from the reference by {error}"
    assert effect > 100 * TOLERANCE, f"TACA changed the output by only {effect}: the test would prove nothing"


def assert_taca_matches_reference(taca, model, positive, negative, latent, after_step, text_lengths, n_visual=None,
                                  gamma=GAMMA):
    """Sample with TACA and with the materialized reference (window: the first `after_step`
    steps) and check that they agree, and that TACA changed the output."""
    threshold = threshold_after_step(model, after_step)
    n_visual = image_tokens(model, latent) if n_visual is None else n_visual
    reference = reference_taca(gamma, threshold, text_lengths, n_visual)
    out = sample(taca(model, gamma, threshold), positive, negative, latent, steps=STEPS)
    ref = sample(with_attention_override(model, reference), positive, negative, latent, steps=STEPS)
    assert_matches(out, ref, sample(model, positive, negative, latent, steps=STEPS))


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("height,width,text_lengths", [(13, 7, (77, 154)), (9, 16, (5, 33))])
def test_matches_reference_at_odd_sizes_and_unequal_prompt_lengths(family, height, width, text_lengths, taca):
    # Unequal cond and uncond lengths cannot be batched, so each step runs two forwards
    # with different text lengths; odd latents are padded to whole patches.
    model = MODELS[family](seed=4)
    latent = empty_latent(height, width)
    n_pos, n_neg = text_lengths
    positive, negative = conditioning(model, n_pos, seed=5), conditioning(model, n_neg, seed=6)
    assert_taca_matches_reference(taca, model, positive, negative, latent, after_step=1, text_lengths=text_lengths)


def test_flux_kontext_reference_image_tokens_count_as_visual(taca):
    # Kontext appends the reference image's tokens after the image tokens: TACA treats
    # them as visual queries too.
    model = MODELS["flux"](seed=19)
    latent, reference_image = empty_latent(8, 8), torch.randn(1, 16, 6, 10, generator=torch.Generator().manual_seed(20))
    positive, negative = conditioning(model, 24, seed=21), conditioning(model, 24, seed=22)
    for cond in (positive, negative):
        cond[0][1]["reference_latents"] = [reference_image]
    n_visual = image_tokens(model, latent) + image_tokens(model, reference_image)
    assert_taca_matches_reference(taca, model, positive, negative, latent, after_step=2, text_lengths={24},
                                  n_visual=n_visual)


@pytest.mark.parametrize("gamma", [0.0, 0.7])
def test_gamma_below_one_is_the_same_exact_scaling(gamma, taca):
    # γ₀ < 1 weakens the prompt's hold, an ablation the node accepts down to 0, where the image
    # tokens' logits on the prompt are all 0: they attend to every prompt token alike.
    model = MODELS["flux"](seed=23)
    latent = empty_latent(8, 8)
    positive, negative = conditioning(model, 20, seed=24), conditioning(model, 20, seed=25)
    assert_taca_matches_reference(taca, model, positive, negative, latent, after_step=2, text_lengths={20}, gamma=gamma)


@pytest.mark.parametrize("family", ["flux", "sd3.5-medium"])
def test_chains_an_override_installed_before_it(family, taca):
    # Another node patched attention first (here: scales every attention output). TACA
    # must call through it, so the result is the reference with that node's effect.
    model = MODELS[family](seed=7)
    latent = empty_latent(8, 6)
    positive, negative = conditioning(model, 20, seed=8), conditioning(model, 20, seed=9)
    threshold = threshold_after_step(model, 2)
    reference = reference_taca(GAMMA, threshold, {20}, image_tokens(model, latent))
    other_node = with_attention_override(model, scaled(plain, 0.8))

    out = sample(taca(other_node, GAMMA, threshold), positive, negative, latent, steps=STEPS)
    ref = sample(with_attention_override(model, scaled(reference, 0.8)), positive, negative, latent, steps=STEPS)
    other_only = sample(other_node, positive, negative, latent, steps=STEPS)
    taca_only = sample(taca(model, GAMMA, threshold), positive, negative, latent, steps=STEPS)

    assert_matches(out, ref, other_only)  # TACA took effect on top of the other node
    assert_matches(out, ref, taca_only)  # and the other node's patch still ran


@pytest.mark.parametrize("backend", ["pytorch", "sub_quad", "split"])
@pytest.mark.parametrize("family", ["flux", "sd3.5-medium"])
def test_matches_reference_on_each_attention_backend(family, backend, taca):
    # An attention-selection node in front picks ComfyUI's backend; TACA runs through it.
    model = with_attention_backend(MODELS[family](seed=16), backend)
    latent = empty_latent(6, 10)
    positive, negative = conditioning(model, 24, seed=17), conditioning(model, 24, seed=18)
    assert_taca_matches_reference(taca, model, positive, negative, latent, after_step=2, text_lengths={24})


def test_second_taca_node_replaces_the_first_settings(taca):
    model = MODELS["sd3"](seed=10)
    latent = empty_latent(8, 8)
    positive, negative = conditioning(model, 77, seed=11), conditioning(model, 77, seed=12)
    first, second = (1.8, threshold_after_step(model, 3)), (GAMMA, threshold_after_step(model, 1))

    twice = sample(taca(taca(model, *first), *second), positive, negative, latent, steps=STEPS)
    once = sample(taca(model, *second), positive, negative, latent, steps=STEPS)
    first_only = sample(taca(model, *first), positive, negative, latent, steps=STEPS)
    assert torch.equal(twice, once)
    assert not torch.allclose(twice, first_only, atol=100 * TOLERANCE, rtol=0)


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_second_taca_node_after_a_chaining_node_still_applies_once(family, taca):
    # TACA, then a node that chains the override, then TACA again: the later settings win,
    # and the rows the outer TACA split off must reach the inner one's override untouched.
    model = MODELS[family](seed=13)
    latent = empty_latent(12, 12)
    assert image_tokens(model, latent) > 20  # more image than text tokens
    positive, negative = conditioning(model, 20, seed=14), conditioning(model, 20, seed=15)
    threshold = threshold_after_step(model, 2)
    reference = reference_taca(GAMMA, threshold, {20}, image_tokens(model, latent))

    stacked = taca(chaining_node(taca(model, 1.8, threshold_after_step(model, 1)), 0.8), GAMMA, threshold)
    out = sample(stacked, positive, negative, latent, steps=STEPS)
    ref = sample(with_attention_override(model, scaled(reference, 0.8)), positive, negative, latent, steps=STEPS)
    assert_matches(out, ref, sample(model, positive, negative, latent, steps=STEPS))
