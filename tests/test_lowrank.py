"""Forward-time low-rank adds equal the merged weight W + s·B A, slices included."""

import torch

from taca.lowrank import LowRankAdd, LowRankAdds


def factors(rank, rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rank, cols, generator=g), torch.randn(rows, rank, generator=g)


def test_full_width_adapter_matches_merged_weight():
    g = torch.Generator().manual_seed(0)
    weight, x = torch.randn(24, 16, generator=g), torch.randn(3, 5, 16, generator=g)
    down, up = factors(4, 24, 16, seed=1)
    adds = LowRankAdds([LowRankAdd(down, up, scale=0.75)])
    y = adds.add_to(x @ weight.T, x)
    assert torch.allclose(y, x @ (weight + 0.75 * up @ down).T, atol=1e-5, rtol=0)


def test_row_slices_of_a_fused_layer():
    # qkv fused as rows [q; k; v], each with its own adapter and rank, as FLUX's img_attn.qkv
    g = torch.Generator().manual_seed(2)
    weight, x = torch.randn(30, 8, generator=g), torch.randn(7, 8, generator=g)
    parts = [(0, factors(2, 10, 8, 3), 1.0), (10, factors(3, 10, 8, 4), 0.5), (20, factors(1, 10, 8, 5), 2.0)]
    adds = LowRankAdds([LowRankAdd(d, u, scale=s, row_start=r) for r, (d, u), s in parts])
    merged = weight.clone()
    for row, (d, u), s in parts:
        merged[row:row + 10] += s * u @ d
    assert torch.allclose(adds.add_to(x @ weight.T, x), x @ merged.T, atol=1e-5, rtol=0)


def test_factors_are_cast_once_per_device_and_dtype():
    down, up = factors(2, 6, 4, seed=6)
    adds = LowRankAdds([LowRankAdd(down, up, scale=1.0)])
    x = torch.randn(2, 4, dtype=torch.bfloat16)
    adds.add_to(torch.zeros(2, 6, dtype=torch.bfloat16), x)
    first = adds._factors(x.device, x.dtype)
    adds.add_to(torch.zeros(2, 6, dtype=torch.bfloat16), x)
    assert adds._factors(x.device, x.dtype) is first
    adds.release()
    assert adds._factors(x.device, x.dtype) is not first
