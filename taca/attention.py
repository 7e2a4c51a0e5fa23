"""Temperature-adjusted cross-modal attention (Lv et al., ICCV 2025, arXiv 2506.07986).

TACA scales only the visual-query × text-key block of the joint attention logits:

    s'[i, j] = γ · q_i·k_j / √d   for a visual query i and a text key j
    s'[i, j] =     q_i·k_j / √d   for every other pair

Since γ · (q_i·k_j) = q_i·(γ k_j), this is exactly plain attention of the visual
queries over keys whose text rows are multiplied by γ. So one TACA attention is two
calls of whatever attention kernel the host chose, with the same FLOPs as one plain
call and no L×L logits:

    out_text   = attend(Q_text,   K,              V)
    out_visual = attend(Q_visual, [γ K_text; K_visual], V)

The text is one contiguous span of the sequence: its first or its last n_text tokens
(MM-DiTs put it first, HiDream, HunyuanVideo and Mochi last). Masks are sliced by query
rows; key masks apply unchanged.
"""

from contextlib import contextmanager
from typing import Callable, Optional, Union

import torch

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]
Gamma = Union[float, torch.Tensor]


def text_start(length: int, n_text: int, text_first: bool) -> int:
    """Where the text span starts in a sequence of `length` tokens."""
    return 0 if text_first else length - n_text


def query_rows(mask: Optional[torch.Tensor], start: int, length: int, seq_len: int) -> Optional[torch.Tensor]:
    """The rows of an attention mask that belong to queries start .. start+length.

    A mask whose query axis is broadcast (size 1, as key-padding masks are) applies to
    every query as it is.
    """
    if mask is None or mask.ndim < 2 or mask.shape[-2] != seq_len:
        return mask
    return mask.narrow(-2, start, length)


@contextmanager
def text_keys_scaled(k: torch.Tensor, start: int, n_text: int, gamma: Gamma, token_dim: int):
    """The keys with their text rows (start .. start+n_text) multiplied by γ, for the `with` block.

    γ is a number or one value per batch item. The text rows are scaled in place and
    restored bit for bit on exit, so the extra memory is one copy of the text keys instead
    of a copy of all keys. Under autograd the keys are cloned first, so the tensors it
    saved are never written.
    """
    if torch.is_tensor(gamma):
        gamma = gamma.to(k.dtype).view(-1, *([1] * (k.ndim - 1)))
    autograd = k.requires_grad and torch.is_grad_enabled()
    if autograd:
        k = k.clone()
    k_text = k.narrow(token_dim, start, n_text)
    saved = None if autograd else k_text.clone()
    k_text.mul_(gamma)
    try:
        yield k
    finally:
        if saved is not None:
            k_text.copy_(saved)


def visual_queries(q: torch.Tensor, mask: Optional[torch.Tensor], n_text: int, token_dim: int, text_first: bool):
    """The visual queries of a joint call whose queries hold the text too, and their mask rows."""
    lq = q.shape[token_dim]
    start, n_visual = (n_text if text_first else 0), lq - n_text
    return q.narrow(token_dim, start, n_visual), query_rows(mask, start, n_visual, lq)


def taca_attention(
    attend: Attend,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_text: int,
    gamma: Gamma,
    token_dim: int,
    out_token_dim: int,
    text_first: bool = True,
    text_queries: bool = True,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Joint attention with the visual→text logits scaled by γ.

    attend(q, k, v, mask) is the host's attention function; q, k and v have the sequence
    on axis `token_dim` and its output has it on `out_token_dim`. The text is the first
    (`text_first`) or the last `n_text` tokens of the keys, and of the queries unless
    `text_queries` is False (a call whose queries are all visual); every other token is
    visual. The keys may be longer than the queries (cached reference tokens). `gamma` is
    a number or one value per batch item. The result equals plain attention over logits
    whose visual-query × text-key block is multiplied by γ.
    """
    lq, lk = q.shape[token_dim], k.shape[token_dim]
    with text_keys_scaled(k, text_start(lk, n_text, text_first), n_text, gamma, token_dim) as k_scaled:
        if not text_queries:
            return attend(q, k_scaled, v, mask)
        q_visual, mask_visual = visual_queries(q, mask, n_text, token_dim, text_first)
        out_visual = attend(q_visual, k_scaled, v, mask_visual)
    q_text = text_start(lq, n_text, text_first)
    out_text = attend(q.narrow(token_dim, q_text, n_text), k, v, query_rows(mask, q_text, n_text, lq))
    parts = (out_text, out_visual) if text_first else (out_visual, out_text)
    return torch.cat(parts, dim=out_token_dim)


def text_attention_mass(
    attend: Attend,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_text: int,
    gamma: Gamma,
    token_dim: int,
    text_first: bool = True,
    text_queries: bool = True,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The image→text attention mass of one joint call, one value per batch item.

    That is the softmax probability the visual queries put on the text keys, with the
    visual-query × text-key logits multiplied by γ, averaged over heads and visual queries.
    It is exact and builds no L×L logits: attending with values that are 1 on the text keys
    and 0 elsewhere gives each query its mass on the text keys. Arguments as for
    taca_attention (the output's layout does not matter: the mean is over all of it); `v`
    only gives the values' layout.
    """
    lk = k.shape[token_dim]
    on_text = torch.zeros_like(v)
    on_text.narrow(token_dim, text_start(lk, n_text, text_first), n_text).fill_(1)
    if text_queries:
        q, mask = visual_queries(q, mask, n_text, token_dim, text_first)
    with text_keys_scaled(k, text_start(lk, n_text, text_first), n_text, gamma, token_dim) as k_scaled:
        mass = attend(q, k_scaled, on_text, mask)
    return mass.float().flatten(1).mean(1)
