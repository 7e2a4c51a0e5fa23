"""The TACA core agrees with an independent materialized-softmax reference."""

import math

import pytest
import torch

from taca import taca_attention, text_attention_mass

# (B, heads, L, d) with the output as (B, L, heads·d), as FLUX calls it (skip_reshape=True),
# and (B, L, heads·d) in and out, as SD3's MMDiT calls it.
LAYOUTS = ("bhld", "blc")


def split_heads(x, heads, layout):
    if layout == "bhld":
        return x
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def host_attention(q, k, v, mask, heads, layout):
    """A host attention function in ComfyUI's calling convention, built on SDPA."""
    q, k, v = (split_heads(t, heads, layout) for t in (q, k, v))
    if mask is not None and mask.ndim == 3:
        mask = mask.unsqueeze(1)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


def reference(q, k, v, mask, heads, layout, n_text, gamma):
    """Materialize the logits, multiply the visual-query × text-key block by γ, softmax."""
    q, k, v = (split_heads(t, heads, layout).double() for t in (q, k, v))
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scale = torch.ones(logits.shape[-2:], dtype=logits.dtype)
    scale[n_text:, :n_text] = gamma
    logits = logits * scale
    if mask is not None:
        m = mask.unsqueeze(1) if mask.ndim == 3 else mask
        logits = logits.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else logits + m.double()
    out = logits.softmax(-1) @ v
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1).float()


def make_qkv(batch, heads, seq_len, dim, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, heads, seq_len, dim) if layout == "bhld" else (batch, seq_len, heads * dim)
    return [torch.randn(shape, generator=g) for _ in range(3)]


def run_taca(q, k, v, mask, heads, layout, n_text, gamma):
    token_dim = 2 if layout == "bhld" else 1
    return taca_attention(
        lambda q_, k_, v_, m: host_attention(q_, k_, v_, m, heads, layout),
        q, k, v, n_text=n_text, gamma=gamma, token_dim=token_dim, out_token_dim=1, mask=mask,
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("gamma", [0.7, 1.2, 2.0])
@pytest.mark.parametrize("batch,heads,n_text,n_visual,dim", [(1, 1, 1, 1, 8), (2, 3, 7, 33, 16), (3, 4, 77, 61, 32)])
def test_matches_materialized_reference(layout, gamma, batch, heads, n_text, n_visual, dim):
    q, k, v = make_qkv(batch, heads, n_text + n_visual, dim, layout)
    out = run_taca(q, k, v, None, heads, layout, n_text, gamma)
    ref = reference(q, k, v, None, heads, layout, n_text, gamma)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["additive", "boolean"])
@pytest.mark.parametrize("mask_dims", [2, 3, 4])
def test_masks_follow_the_query_rows(layout, kind, mask_dims):
    batch, heads, n_text, n_visual = 2, 3, 9, 23
    seq_len = n_text + n_visual
    q, k, v = make_qkv(batch, heads, seq_len, 16, layout, seed=1)
    g = torch.Generator().manual_seed(2)
    shape = {2: (seq_len, seq_len), 3: (batch, seq_len, seq_len), 4: (batch, heads, seq_len, seq_len)}[mask_dims]
    if kind == "boolean":
        mask = torch.rand(shape, generator=g) > 0.3
        mask[..., 0] = True  # every query keeps at least one key
    else:
        mask = torch.randn(shape, generator=g) * 2
    out = run_taca(q, k, v, mask, heads, layout, n_text, 1.3)
    ref = reference(q, k, v, mask, heads, layout, n_text, 1.3)
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)


def test_mask_broadcast_over_queries_is_kept_whole():
    heads, n_text, n_visual = 2, 5, 11
    q, k, v = make_qkv(2, heads, n_text + n_visual, 8, "bhld", seed=3)
    mask = torch.randn(2, 1, 1, n_text + n_visual)  # one key bias for all queries
    out = run_taca(q, k, v, mask, heads, "bhld", n_text, 1.2)
    ref = reference(q, k, v, mask.expand(2, heads, n_text + n_visual, -1), heads, "bhld", n_text, 1.2)
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)


def test_gamma_per_batch_item():
    heads, n_text, n_visual = 2, 6, 10
    q, k, v = make_qkv(2, heads, n_text + n_visual, 8, "blc", seed=4)
    out = run_taca(q, k, v, None, heads, "blc", n_text, torch.tensor([1.0, 1.5]))
    for i, gamma in enumerate((1.0, 1.5)):
        ref = reference(q[i:i + 1], k[i:i + 1], v[i:i + 1], None, heads, "blc", n_text, gamma)
        assert torch.allclose(out[i:i + 1], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inputs_are_left_as_they_were(layout):
    q, k, v = make_qkv(2, 3, 40, 16, layout, seed=5)
    before = [t.clone() for t in (q, k, v)]
    run_taca(q, k, v, None, 3, layout, 12, 1.7)
    for t, b in zip((q, k, v), before):
        assert torch.equal(t, b)


def test_keys_restored_when_the_backend_fails():
    q, k, v = make_qkv(1, 2, 20, 8, "bhld", seed=6)
    k_before = k.clone()
    calls = []

    def failing(q_, k_, v_, m):
        calls.append(q_.shape[2])
        if len(calls) == 2:
            raise RuntimeError("backend out of memory")
        return host_attention(q_, k_, v_, m, 2, "bhld")

    with pytest.raises(RuntimeError, match="out of memory"):
        taca_attention(failing, q, k, v, n_text=4, gamma=1.5, token_dim=2, out_token_dim=1)
    assert torch.equal(k, k_before)


def test_gradients_flow_and_match_reference():
    q, k, v = (t.requires_grad_() for t in make_qkv(1, 2, 18, 8, "bhld", seed=7))
    run_taca(q, k, v, None, 2, "bhld", 5, 1.4).sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    reference(q, k, v, None, 2, "bhld", 5, 1.4).sum().backward()
    for g, t in zip(grads, (q, k, v)):
        assert torch.allclose(g, t.grad, atol=1e-5, rtol=0)


def test_gamma_one_is_plain_attention():
    q, k, v = make_qkv(2, 3, 50, 16, "blc", seed=8)
    out = run_taca(q, k, v, None, 3, "blc", 13, 1.0)
    assert torch.allclose(out, host_attention(q, k, v, None, 3, "blc"), atol=1e-6, rtol=0)


def reference_mass(q, k, v, mask, heads, layout, n_text, gamma):
    """Materialize the scaled logits and sum the softmax over the text keys, per visual query."""
    q, k = (split_heads(t, heads, layout).double() for t in (q, k))
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    logits[..., n_text:, :n_text] *= gamma
    if mask is not None:
        m = mask.unsqueeze(1) if mask.ndim == 3 else mask
        logits = logits.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else logits + m.double()
    return logits.softmax(-1)[..., n_text:, :n_text].sum(-1).mean((1, 2)).float()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("gamma", [1.0, 1.3])
def test_text_attention_mass_matches_the_materialized_softmax(layout, gamma):
    batch, heads, n_text, n_visual = 2, 3, 9, 23
    q, k, v = make_qkv(batch, heads, n_text + n_visual, 16, layout, seed=9)
    g = torch.Generator().manual_seed(10)
    mask = torch.randn(batch, n_text + n_visual, n_text + n_visual, generator=g)
    k_before = k.clone()
    mass = text_attention_mass(lambda q_, k_, v_, m: host_attention(q_, k_, v_, m, heads, layout),
                               q, k, v, n_text=n_text, gamma=gamma, token_dim=2 if layout == "bhld" else 1, mask=mask)
    assert mass.shape == (batch,)
    assert torch.allclose(mass, reference_mass(q, k, v, mask, heads, layout, n_text, gamma), atol=1e-6, rtol=0)
    assert torch.equal(k, k_before)


def test_text_last_matches_the_reference_with_the_span_at_the_end():
    # HiDream, HunyuanVideo (0.3.64) and Mochi put the text last: flipping the sequence puts
    # it first, and attention does not care about the order of the keys.
    heads, n_text, n_visual = 2, 6, 14
    q, k, v = make_qkv(2, heads, n_text + n_visual, 8, "bhld", seed=11)
    out = taca_attention(lambda q_, k_, v_, m: host_attention(q_, k_, v_, m, heads, "bhld"),
                         q, k, v, n_text=n_text, gamma=1.4, token_dim=2, out_token_dim=1, text_first=False)
    flipped = [t.flip(2) for t in (q, k, v)]
    ref = reference(*flipped, None, heads, "bhld", n_text, 1.4).flip(1)
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)


def test_visual_queries_only():
    # HiDream-O1 hands the override only the image side's queries, over all keys, text first.
    heads, n_text, n_visual = 2, 5, 12
    q, k, v = make_qkv(1, heads, n_text + n_visual, 8, "bhld", seed=12)
    out = taca_attention(lambda q_, k_, v_, m: host_attention(q_, k_, v_, m, heads, "bhld"),
                         q[:, :, n_text:], k, v, n_text=n_text, gamma=1.6, token_dim=2, out_token_dim=1, text_queries=False)
    ref = reference(q, k, v, None, heads, "bhld", n_text, 1.6)[:, n_text:]
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)


def test_keys_longer_than_the_queries():
    # FLUX's KV cache (0.33) keeps the reference images' keys: the queries are text + image.
    heads, n_text, n_image, n_cached = 2, 4, 9, 6
    q, k, v = make_qkv(1, heads, n_text + n_image + n_cached, 8, "bhld", seed=13)
    out = taca_attention(lambda q_, k_, v_, m: host_attention(q_, k_, v_, m, heads, "bhld"),
                         q[:, :, :n_text + n_image], k, v, n_text=n_text, gamma=1.3, token_dim=2, out_token_dim=1)
    ref = reference(q, k, v, None, heads, "bhld", n_text, 1.3)[:, :n_text + n_image]
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)
