"""Forward-time low-rank (LoRA) adds, without touching the base weight.

For a Linear layer y = x Wᵀ and LoRA factors A (rank × in) and B (rows × rank):

    y[..., rows] += s · (x Aᵀ) Bᵀ

which equals the output of the merged weight W + s·B A (Hu et al., 2021). `rows` is the
slice of output features the adapter lands on: fused layers such as FLUX's qkv hold
several diffusers-side layers (to_q, to_k, to_v) as row slices of one weight.
"""

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class LowRankAdd:
    down: torch.Tensor  # A: (rank, in_features)
    up: torch.Tensor  # B: (rows, rank)
    scale: float  # strength · alpha / rank
    row_start: int = 0  # first output feature the adapter writes to


class LowRankAdds:
    """All low-rank adds that land on one Linear layer.

    The factors are moved and cast once per (device, dtype) and kept until `release()`.
    All the adapters' A factors are stacked so x is read once, in a single matmul.
    """

    def __init__(self, adds: Sequence[LowRankAdd]):
        self.adds = tuple(adds)
        self._cast = {}

    def release(self) -> None:
        self._cast.clear()

    def _factors(self, device, dtype):
        key = (device, dtype)
        if key not in self._cast:
            down = torch.cat([a.down.float() for a in self.adds]).to(device=device, dtype=dtype)
            ups, rank_start = [], 0
            for a in self.adds:
                rank = a.down.shape[0]
                up = (a.up.float() * a.scale).to(device=device, dtype=dtype)
                ups.append((rank_start, rank_start + rank, a.row_start, up))
                rank_start += rank
            self._cast[key] = (down, tuple(ups))
        return self._cast[key]

    def add_to(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """y (the layer's output for input x) plus every adapter's low-rank term, in place."""
        down, ups = self._factors(x.device, x.dtype)
        h = torch.nn.functional.linear(x, down)
        for rank_start, rank_end, row_start, up in ups:
            y[..., row_start:row_start + up.shape[0]] += torch.nn.functional.linear(h[..., rank_start:rank_end], up)
        return y
