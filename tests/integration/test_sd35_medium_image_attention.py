"""SD3.5-Medium's image-only attention (MMDiT-X attn2) is left alone by TACA.

The calls are observed from outside: an attention override and a forward counter,
installed on the model by "another node" before TACA, see every call TACA makes.
TACA splits a joint call into a text-query call (query length n_text) and a
visual-query call (query length = key length − n_text); a call left alone keeps
query length = key length. test_families.py counts the calls of every family.
"""

import torch

import comfy.patcher_extension

from reference import recording
from tiny_models import conditioning, empty_latent, image_tokens, sample, sigmas, tiny_sd35_medium, with_attention_override

STEPS = 4
GAMMA = 1.3


def counting_forwards(model, sigmas_seen):
    """A clone whose every model forward appends its σ to `sigmas_seen`."""
    def count(executor, x, t, *args, **kwargs):
        sigmas_seen.append(float(t[0]))
        return executor(x, t, *args, **kwargs)

    counted = model.clone()
    counted.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_count_forwards", count)
    return counted


def step_sigmas(model, steps=STEPS, denoise=1.0):
    return sigmas(model, steps, denoise=denoise)[:-1].tolist()


def threshold_after_step(model, n):
    s = step_sigmas(model)
    return 500 * (s[n - 1] + s[n])


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
