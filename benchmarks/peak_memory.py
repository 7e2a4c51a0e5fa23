"""Peak tensor memory of one call, for the benchmarks."""

import gc

import torch


def allocation_peak_cpu(fn, x):
    """Peak of tensor memory allocated during fn(x) above what was live before, in bytes.

    torch.profiler(profile_memory=True) records every allocation and free of PyTorch's CPU
    allocator with a timestamp; the running sum's maximum is the peak. The output counts.
    Also returns the attention operators that ran (which SDPA kernel was chosen), and fn's output.
    """
    from torch._C._profiler import _EventType

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn(x)
    events, ops, stack = [], [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        stack.extend(e.children)
        if e.tag == _EventType.Allocation:
            events.append((e.start_time_ns, e.extra_fields.alloc_size))
        elif e.tag == _EventType.TorchOp and ("scaled_dot_product" in e.name or "flex" in e.name):
            ops.append((e.start_time_ns, e.name))
    running = peak = 0
    for _, size in sorted(events):
        running += size
        peak = max(peak, running)
    return peak, [name for _, name in sorted(ops)], out


def allocation_peak_cuda(fn, x):
    torch.cuda.synchronize()
    gc.collect()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn(x)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    return peak, [], out
