"""TACA acts on every joint attention call inside its window, and on nothing else.

The calls are observed from outside: an attention override and a forward counter,
installed on the model by "another node" before TACA, see every call TACA makes.
TACA splits a joint call into a text-query call (query length n_text) and a
visual-query call (query length = key length − n_text); a call left alone keeps
query length = key length.
"""

from collections import namedtuple

import pytest
import torch

import comfy.patcher_extension

from tiny_models import (
    MODELS, conditioning, empty_latent, image_tokens, sample, sigmas, tiny_sd35_medium, with_attention_override,
)

STEPS = 4
GAMMA = 1.3

Call = namedtuple("Call", "sigma q_len k_len q k v")


def recording(calls):
    """An attention override that records each call it sees and runs it unchanged."""
    def record(func, *args, **kwargs):
        q, k, v = args[:3]
        token_dim = 2 if kwargs.get("skip_reshape", False) else 1
        sigma = float(kwargs["transformer_options"]["sigmas"][0])
        calls.append(Call(sigma, q.shape[token_dim], k.shape[token_dim], q.clone(), k.clone(), v.clone()))
        return func(*args, **kwargs)
    return record


def counting_forwards(model, sigmas_seen):
    """A clone whose every model forward appends its σ to `sigmas_seen`."""
    def count(executor, x, t, *args, **kwargs):
        sigmas_seen.append(float(t[0]))
        return executor(x, t, *args, **kwargs)

    counted = model.clone()
    counted.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_count_forwards", count)
    return counted


def joint_attention_blocks(model) -> int:
    """Joint text-image attention calls in one forward: one per MMDiT joint block, FLUX double and single block."""
    dm = model.model.diffusion_model
    if hasattr(dm, "joint_blocks"):
        return len(dm.joint_blocks)
    return len(dm.double_blocks) + len(dm.single_blocks)


def step_sigmas(model, steps=STEPS, denoise=1.0):
    return sigmas(model, steps, denoise=denoise)[:-1].tolist()


def threshold_after_step(model, n):
    s = step_sigmas(model)
    return 500 * (s[n - 1] + s[n])


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("text_lengths", [(77, 77), (77, 154)], ids=["cond-uncond-batched", "separate-forwards"])
def test_every_joint_call_in_the_window_and_no_other(family, text_lengths, taca):
    model = MODELS[family](seed=0)
    latent = empty_latent(10, 6)
    n_image = image_tokens(model, latent)
    assert n_image not in text_lengths  # so a call's lengths say which kind it is
    positive, negative = (conditioning(model, n, seed=i) for i, n in enumerate(text_lengths))
    threshold = threshold_after_step(model, 2)
    calls, forwards = [], []
    observed = counting_forwards(with_attention_override(model, recording(calls)), forwards)

    sample(taca(observed, GAMMA, threshold), positive, negative, latent, steps=STEPS)

    window = [s for s in step_sigmas(model) if 1000 * s >= threshold]
    assert 0 < len(window) < STEPS
    forwards_per_step = len(forwards) // STEPS
    assert len(forwards) == forwards_per_step * STEPS
    assert forwards_per_step == len(set(text_lengths))  # unequal prompt lengths cannot be batched

    visual = [c for c in calls if c.q_len != c.k_len and c.k_len - c.q_len in text_lengths]
    text = [c for c in calls if c.q_len != c.k_len and c.q_len in text_lengths]
    assert len(visual) == len(window) * joint_attention_blocks(model) * forwards_per_step
    assert len(text) == len(visual)
    assert {c.sigma for c in visual} == set(window)
    assert len(calls) == len(visual) + len(text) + len([c for c in calls if c.q_len == c.k_len])
    assert all(c.q_len == c.k_len for c in calls if c.sigma not in window)


def test_sd35_medium_image_only_attention_is_left_alone(taca):
    model = tiny_sd35_medium(seed=3)
    latent = empty_latent(12, 10)
    n_image, n_text = image_tokens(model, latent), 20
    assert n_image > n_text  # so an image-only call could be mistaken for a joint one
    positive, negative = conditioning(model, n_text, seed=4), conditioning(model, n_text, seed=5)
    threshold = threshold_after_step(model, 2)
    plain_calls, taca_calls, forwards = [], [], []

    sample(with_attention_override(model, recording(plain_calls)), positive, negative, latent, steps=STEPS)
    observed = counting_forwards(with_attention_override(model, recording(taca_calls)), forwards)
    sample(taca(observed, GAMMA, threshold), positive, negative, latent, steps=STEPS)

    assert any(c.k_len - c.q_len == n_text for c in taca_calls)  # TACA was on
    image_only = [c for c in taca_calls if c.k_len == n_image]
    attn2_layers = model.model.model_config.unet_config["x_block_self_attn_layers"]
    assert len(image_only) == len(forwards) * len(attn2_layers) > 0
    assert all(c.q_len == n_image for c in image_only)  # never split
    # The first forward's first attn2 call precedes any joint attention output: TACA must
    # hand it exactly the tensors the unpatched model makes.
    first, plain_first = image_only[0], next(c for c in plain_calls if c.k_len == n_image)
    assert all(torch.equal(a, b) for a, b in zip(first[3:], plain_first[3:]))


@pytest.mark.parametrize("family", MODELS)
def test_gamma_one_is_bit_identical_to_the_unpatched_model(family, taca):
    model = MODELS[family](seed=6)
    latent = empty_latent(8, 8)
    positive, negative = conditioning(model, 30, seed=7), conditioning(model, 30, seed=8)

    plain = sample(model, positive, negative, latent, steps=STEPS)
    assert torch.equal(sample(taca(model, 1.0, 0.0), positive, negative, latent, steps=STEPS), plain)


@pytest.mark.parametrize("family", MODELS)
def test_window_ending_before_the_first_step_is_bit_identical(family, taca):
    # Partial denoise starts below σ = 1, so a threshold inside the node's range can lie
    # above the first step's t: TACA then never fires.
    model = MODELS[family](seed=9)
    latent = empty_latent(8, 8)
    positive, negative = conditioning(model, 30, seed=10), conditioning(model, 30, seed=11)
    denoise = 0.6
    first_t = 1000 * step_sigmas(model, denoise=denoise)[0]
    threshold = (first_t + 1000) / 2
    assert first_t < threshold <= 1000

    def run(m):
        return sample(m, positive, negative, latent, steps=STEPS, denoise=denoise)

    plain = run(model)
    assert torch.equal(run(taca(model, GAMMA, threshold)), plain)
    assert not torch.equal(run(taca(model, GAMMA, first_t)), plain)  # the same run with the first step inside
