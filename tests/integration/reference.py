"""TACA written out from its definition, and observers of attention calls, for the tests.

ReferenceTACA is an attention override that knows nothing of the pack. For a joint call it
materializes the logits Q Kᵀ/√d in float64, multiplies the visual-query × text-key block by
γ(t), adds the mask as ComfyUI's attention does, takes the softmax and multiplies by V. It
knows the joint calls by their key length and the text span from the test's own family
description (tiny_families), and hands every other call to ComfyUI untouched.
"""

from collections import namedtuple
from typing import Callable, Dict

import torch

Call = namedtuple("Call", "sigma q_len k_len q k v")


def heads_first(t: torch.Tensor, head_dim: int, bhld: bool) -> torch.Tensor:
    """(B, H, L, D) from the layout ComfyUI's attention takes: (B, H, L, D), (B, L, H·D) or (B, L, H, D)."""
    if bhld:
        return t
    return t.reshape(t.shape[0], t.shape[1], -1, head_dim).transpose(1, 2)


class ReferenceTACA:
    """TACA with the logits materialized (Lv et al., ICCV 2025, arXiv 2506.07986).

    joints: key length of a joint call → its text tokens. gamma(t): γ for the 0–1000
    timestep t, which timestep(σ) gives (1000·σ for rectified flow). The text is the first
    (text_first) or the last tokens of the keys, and of the queries unless text_queries is False.
    With blocks_per_forward and blocks, only those joint calls of each forward (numbered in
    call order) get γ; with cond_only, only the batch items of the prompt's guidance branch.
    A forward that skips some blocks (skip-layer guidance's) is announced by begin_forward
    with the numbers of the blocks it runs, in order; its joint calls are those blocks. Each
    joint call's block number is appended to `blocks_seen`.
    Where `masses` is a list, each joint call appends, per batch item, the image→text
    attention mass with γ and without it, and the call is then handed on to ComfyUI.
    """

    def __init__(self, gamma: Callable[[float], float], joints: Dict[int, int], text_first=True, text_queries=True,
                 timestep: Callable[[float], float] = lambda sigma: 1000 * sigma,
                 blocks_per_forward=None, blocks=None, cond_only=False, masses=None):
        self.gamma, self.joints, self.timestep = gamma, dict(joints), timestep
        self.text_first, self.text_queries = text_first, text_queries
        self.blocks_per_forward, self.blocks, self.cond_only, self.masses = blocks_per_forward, blocks, cond_only, masses
        self.calls = 0
        self.running, self.position, self.blocks_seen = None, 0, []

    def begin_forward(self, running_blocks):
        """The next forward runs these joint blocks (numbered in call order), in this order."""
        self.running, self.position = list(running_blocks), 0

    def gammas(self, kwargs, batch: int, block: int) -> torch.Tensor:
        options = kwargs["transformer_options"]
        sigmas = options["sigmas"].flatten().tolist()  # the latent batch's: repeated for each guidance branch
        gammas = [self.gamma(self.timestep(sigmas[i % len(sigmas)])) for i in range(batch)]
        if self.blocks is not None and block not in self.blocks:
            gammas = [1.0] * batch
        if self.cond_only:
            branches = options["cond_or_uncond"]
            gammas = [g if branches[i * len(branches) // batch] == 0 else 1.0 for i, g in enumerate(gammas)]
        return torch.tensor(gammas, dtype=torch.float64).view(-1, 1, 1, 1)

    def __call__(self, func, *args, **kwargs):
        q, k, v = args[:3]
        bhld = kwargs.get("skip_reshape", False)
        token_dim = 2 if bhld else 1
        lq, lk = q.shape[token_dim], k.shape[token_dim]
        if lk not in self.joints:
            return func(*args, **kwargs)
        if self.running is not None:
            block = self.running[self.position]
            self.position += 1
        else:
            block = self.calls % self.blocks_per_forward if self.blocks_per_forward else self.calls
        self.calls += 1
        self.blocks_seen.append(block)
        n_text = self.joints[lk]
        heads = args[3] if len(args) > 3 else kwargs["heads"]
        mask = args[4] if len(args) > 4 else kwargs.get("mask")
        head_dim = q.shape[-1] if bhld else q.shape[-1] // heads
        q, k, v = (heads_first(t, head_dim, bhld).double() for t in (q, k, v))
        if k.shape[1] != q.shape[1]:  # grouped-query attention: kv head h // group serves query head h
            k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
        logits = q @ k.transpose(-1, -2) * kwargs.get("scale", head_dim ** -0.5)
        if mask is not None:  # as comfy.ldm.modules.attention.attention_pytorch broadcasts it
            m = mask.unsqueeze(0) if mask.ndim == 2 else mask
            m = m.unsqueeze(1) if m.ndim == 3 else m
            bias = torch.where(m, 0.0, float("-inf")).double() if m.dtype == torch.bool else m.double()
        else:
            bias = 0.0

        keys = slice(0, n_text) if self.text_first else slice(lk - n_text, lk)
        if not self.text_queries:
            visual = slice(0, lq)
        else:
            visual = slice(n_text, lq) if self.text_first else slice(0, lq - n_text)
        gamma = self.gammas(kwargs, q.shape[0], block)

        def probabilities(gamma):
            scale = torch.ones(q.shape[0], 1, lq, lk, dtype=torch.float64)
            scale[:, :, visual, keys] = gamma.expand(-1, 1, visual.stop - visual.start, n_text)
            return (logits * scale + bias).softmax(-1)

        if self.masses is not None:
            def mass(p):
                return p[:, :, visual, keys].sum(-1).mean((1, 2)).tolist()
            self.masses.append((mass(probabilities(gamma)), mass(probabilities(torch.ones_like(gamma)))))
            return func(*args, **kwargs)
        out = probabilities(gamma) @ v
        if kwargs.get("skip_output_reshape", False):
            return out.to(args[0].dtype)
        return out.transpose(1, 2).flatten(2).to(args[0].dtype)  # (B, L, H·D), as ComfyUI returns it


def step_gamma(gamma0: float, threshold: float) -> Callable[[float], float]:
    return lambda t: gamma0 if t >= threshold else 1.0


def recording(calls: list):
    """An attention override that records each call it sees and runs it unchanged."""
    def record(func, *args, **kwargs):
        q, k, v = args[:3]
        token_dim = 2 if kwargs.get("skip_reshape", False) else 1
        sigma = float(kwargs["transformer_options"]["sigmas"].flatten()[0])
        calls.append(Call(sigma, q.shape[token_dim], k.shape[token_dim], q.clone(), k.clone(), v.clone()))
        return func(*args, **kwargs)
    return record


def scaled(override, factor: float):
    """An override that scales whatever `override` returns, standing in for another node's patch."""
    def scaled_override(func, *args, **kwargs):
        return override(func, *args, **kwargs) * factor
    return scaled_override


def plain(func, *args, **kwargs):
    return func(*args, **kwargs)


def max_difference(a, b) -> float:
    """Largest absolute difference of two sampled latents (NestedTensor ones too)."""
    if hasattr(a, "unbind") and not isinstance(a, torch.Tensor):
        return max(max_difference(x, y) for x, y in zip(a.unbind(), b.unbind()))
    return (a - b).abs().max().item()


def identical(a, b) -> bool:
    if hasattr(a, "unbind") and not isinstance(a, torch.Tensor):
        return all(identical(x, y) for x, y in zip(a.unbind(), b.unbind()))
    return torch.equal(a, b)
