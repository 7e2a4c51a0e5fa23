"""TACA on every joint-attention family this ComfyUI ships, each a tiny model built as ComfyUI builds it.

For each family (tests/integration/tiny_families), with ComfyUI's own sampler:
- TACA equals ReferenceTACA, the materialized-softmax reference that knows the family's text
  span from the test's family description, with cond and uncond batched or apart, at two
  text lengths, on a non-square latent, with a window that ends mid-run;
- γ₀ = 1 and a run that starts below the window are bit-identical to the unpatched model;
- the calls that are not joint are handed on untouched, and counted;
- an attention override installed before TACA still runs.
A family this ComfyUI lacks is skipped, saying so.
"""

import pytest
import torch

from reference import ReferenceTACA, identical, max_difference, plain, recording, scaled, step_gamma
from tiny_families import all_families
from tiny_models import sample, sigmas, timestep, with_attention_override

STEPS = 4
GAMMA = 1.6
TOLERANCE = 1e-4
HEIGHT, WIDTH = 6, 10  # latent pixels: a non-square latent


def family_params():
    return [pytest.param(f, id=f.name, marks=() if f.available() else pytest.mark.skip(reason=f"{f.name}: not in this ComfyUI"))
            for f in all_families()]


FAMILIES = family_params()


def step_timesteps(model, steps=STEPS, denoise=1.0) -> list:
    """Each step's t on the paper's 0–1000 scale."""
    return [timestep(model, s) for s in sigmas(model, steps, denoise=denoise)[:-1].tolist()]


def threshold_after_step(model, n, steps=STEPS):
    """A threshold whose window is the first n steps: halfway between step n's t and step n + 1's."""
    t = step_timesteps(model, steps)
    return (t[n - 1] + t[n]) / 2


def setup(family, seed, n_texts):
    model = family.build(seed)
    latent = family.latent(model, HEIGHT, WIDTH, 1)
    positive, negative = (family.conditioning(model, n, seed + 1 + i) for i, n in enumerate(n_texts))
    return model, latent, positive, negative


def run(family, model, positive, negative, latent, **kwargs):
    return sample(model, positive, negative, latent, **{"steps": STEPS, **(family.sampling or {}), **kwargs})


def reference_for(family, model, latent, n_texts, gamma, threshold):
    joints = {family.joint_length(model, latent, n): family.joint_text(model, latent, n) for n in n_texts}
    return ReferenceTACA(step_gamma(gamma, threshold), joints, family.text_first, family.text_queries,
                         timestep=lambda sigma: timestep(model, sigma))


def assert_matches(out, ref, baseline, what=""):
    error, effect = max_difference(out, ref), max_difference(out, baseline)
    assert error <= TOLERANCE, f"{what}TACA differs from the reference by {error}"
    assert effect > 10 * TOLERANCE, f"{what}TACA changed the output by only {effect}: the test would prove nothing"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("n_texts", [(9, 9), (13, 6)], ids=["cond-uncond-batched", "two-lengths"])
def test_matches_reference(family, n_texts, taca):
    model, latent, positive, negative = setup(family, 1, n_texts)
    threshold = threshold_after_step(model, 2)  # the window ends after the second of four steps
    reference = reference_for(family, model, latent, n_texts, GAMMA, threshold)
    out = run(family, taca(model, GAMMA, threshold), positive, negative, latent)
    ref = run(family, with_attention_override(model, reference), positive, negative, latent)
    assert reference.calls > 0, "the reference saw no joint call: the family description is wrong"
    assert_matches(out, ref, run(family, model, positive, negative, latent))


@pytest.mark.parametrize("family", FAMILIES)
def test_gamma_one_and_a_run_below_the_window_are_bit_identical(family, taca):
    model, latent, positive, negative = setup(family, 3, (9, 9))
    plain_run = run(family, model, positive, negative, latent)
    assert identical(run(family, taca(model, 1.0, 0.0), positive, negative, latent), plain_run)

    # Partial denoise starts below σ = 1: a threshold above the first step's t never fires.
    denoise = 0.6
    first_t = step_timesteps(model, denoise=denoise)[0]
    below = run(family, model, positive, negative, latent, denoise=denoise)
    assert identical(run(family, taca(model, GAMMA, (first_t + 1000) / 2), positive, negative, latent, denoise=denoise), below)
    assert not identical(run(family, taca(model, GAMMA, first_t), positive, negative, latent, denoise=denoise), below)


@pytest.mark.parametrize("family", FAMILIES)
def test_other_calls_are_handed_on_untouched_and_counted(family, taca):
    # "Another node" before TACA records every call TACA makes: a joint call inside the
    # window arrives split (text queries, then visual queries over the same keys), any
    # other call arrives whole, with the tensors the unpatched model gives it.
    model, latent, positive, negative = setup(family, 5, (9, 9))
    threshold = threshold_after_step(model, 2)
    joint_length = family.joint_length(model, latent, 9)
    window = [s for s in sigmas(model, STEPS)[:-1].tolist() if timestep(model, s) >= threshold]
    seen, unpatched = [], []
    run(family, with_attention_override(model, recording(unpatched)), positive, negative, latent)
    run(family, taca(with_attention_override(model, recording(seen)), GAMMA, threshold), positive, negative, latent)

    forwards = len([c for c in unpatched if c.k_len == joint_length]) // family.joint_calls(model) // STEPS
    assert forwards >= 1
    other = [c for c in seen if c.k_len != joint_length]
    assert len(other) == family.other_calls(model) * forwards * STEPS
    assert [(c.q_len, c.k_len) for c in other] == [(c.q_len, c.k_len) for c in unpatched if c.k_len != joint_length]
    joint = [c for c in seen if c.k_len == joint_length]
    split = [c for c in joint if c.sigma in window]
    whole = family.joint_calls(model) * forwards * (STEPS - len(window))
    per_call = 2 if family.text_queries else 1
    assert len(split) == family.joint_calls(model) * forwards * len(window) * per_call
    assert len(joint) - len(split) == whole
    # The calls before the first joint one see exactly what they see without TACA.
    first_joint = next(i for i, c in enumerate(unpatched) if c.k_len == joint_length)
    for before, after in zip(unpatched[:first_joint], seen[:first_joint]):
        assert all(torch.equal(a, b) for a, b in zip(before[3:], after[3:]))


@pytest.mark.parametrize("family", FAMILIES)
def test_chains_an_override_installed_before_it(family, taca):
    model, latent, positive, negative = setup(family, 7, (9, 9))
    threshold = threshold_after_step(model, 2)
    reference = reference_for(family, model, latent, (9,), GAMMA, threshold)
    other_node = with_attention_override(model, scaled(plain, 0.8))
    out = run(family, taca(other_node, GAMMA, threshold), positive, negative, latent)
    ref = run(family, with_attention_override(model, scaled(reference, 0.8)), positive, negative, latent)
    assert_matches(out, ref, run(family, other_node, positive, negative, latent), "over another node's override: ")
