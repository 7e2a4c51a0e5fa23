"""Attention-call benchmark: TACA against plain host attention and the official approaches.

One joint attention call, at the shapes FLUX.1 and SD3.5-Medium use, timed side by side:

    plain            the host's attention: torch SDPA in ComfyUI's calling convention
    taca             taca.taca_attention around that host function (two host calls)
    taca_one_copy    prototype: the same two calls, asking the host for heads-first output
                     (ComfyUI's skip_output_reshape=True) and writing both parts into one
                     (B, L, heads·d) buffer, instead of two reshapes and a torch.cat
    taca_low_memory  prototype: the visual queries in chunks written into one preallocated
                     buffer that also holds the saved text keys (--low-memory-chunk rows)
    flex_eager       the official FLUX approach: flex_attention with a score_mod, not compiled
    flex_compiled    the same, torch.compile'd
    materialized     the official SD3 approach: L×L logits, block scaled, softmax

Each case reports its median time and extra peak memory as ratios to plain, measured in
the same run with the cases interleaved. Needs only torch; nothing from ComfyUI is
imported. Run from the repository root:

    python benchmarks/attention.py            # full run, about 13 minutes on 2 CPU cores
    python benchmarks/attention.py --quick    # FLUX 512² and 1024² only, a few minutes
    python benchmarks/attention.py --device cuda   # bf16 on a GPU
    python benchmarks/attention.py --shapes flux-1024 --cases plain taca --breakdown
                                              # also time the pieces of a TACA call

Results go to benchmarks/results/attention-<device>[-quick][-breakdown].{json,md};
benchmarks/plot_attention.py draws the PNG from the JSON.
"""

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from taca.attention import query_rows, taca_attention, text_keys_scaled  # noqa: E402

from peak_memory import allocation_peak_cpu, allocation_peak_cuda  # noqa: E402  (this folder)

GAMMA = 1.2  # the paper's γ₀
MB = 2**20
QUIET = 0.15  # a timing is "quiet" when other processes used less than this share of all cores


@dataclass(frozen=True)
class Shape:
    name: str
    model: str
    resolution: int
    heads: int
    head_dim: int
    n_text: int
    n_visual: int
    layout: str  # "bhld": FLUX, (B, heads, L, d) with skip_reshape=True; "blc": SD3, (B, L, heads·d)
    batch: int = 1

    @property
    def seq_len(self):
        return self.n_text + self.n_visual


SHAPES = {
    s.name: s
    for s in (
        Shape("flux-512", "FLUX.1", 512, 24, 128, 512, 1024, "bhld"),
        Shape("sd35m-1024", "SD3.5-Medium", 1024, 24, 64, 333, 4096, "blc"),
        Shape("flux-1024", "FLUX.1", 1024, 24, 128, 512, 4096, "bhld"),
        Shape("flux-2048", "FLUX.1", 2048, 24, 128, 512, 16384, "bhld"),
        # cond and uncond in one batch, as ComfyUI runs CFG: for TACA Advanced's 'cond only'
        Shape("flux-1024-cfg", "FLUX.1", 1024, 24, 128, 512, 4096, "bhld", batch=2),
        Shape("sd35m-1024-cfg", "SD3.5-Medium", 1024, 24, 64, 333, 4096, "blc", batch=2),
    )
}
DEFAULT_SHAPES = [name for name in SHAPES if not name.endswith("-cfg")]
# Small shapes for the exactness check against a float64 reference, one per layout.
EXACT_SHAPES = (
    Shape("small-bhld", "FLUX layout", 0, 3, 32, 37, 91, "bhld", batch=2),
    Shape("small-blc", "SD3 layout", 0, 3, 32, 37, 91, "blc", batch=2),
)


# ----------------------------------------------------------------------------- host


def host_attention(q, k, v, heads, mask=None, skip_reshape=False, skip_output_reshape=False):
    """ComfyUI's attention_pytorch (comfy/ldm/modules/attention.py), without ComfyUI.

    FLUX passes (B, heads, L, d) with skip_reshape=True; SD3 passes (B, L, heads·d).
    The output is (B, L, heads·d), or SDPA's (B, heads, L, d) with skip_output_reshape.
    """
    if skip_reshape:
        b, _, _, dim_head = q.shape
    else:
        b, _, dim_head = q.shape
        dim_head //= heads
        q, k, v = (t.view(b, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).reshape(b, -1, heads * dim_head)


# ----------------------------------------------------------------------------- cases


class Inputs:
    """q, k, v in a shape's host layout, plus what the cases need to call into it."""

    def __init__(self, shape, device, dtype, seed=0):
        self.shape = shape
        self.flux = shape.layout == "bhld"
        self.token_dim = 2 if self.flux else 1
        g = torch.Generator(device="cpu").manual_seed(seed)
        b, h, n, d = shape.batch, shape.heads, shape.seq_len, shape.head_dim
        size = (b, h, n, d) if self.flux else (b, n, h * d)
        self.q, self.k, self.v = (torch.randn(size, generator=g).to(device, dtype) for _ in range(3))
        self.compiled_flex = None

    def heads_first(self):
        """(B, heads, L, d) views, as the official diffusers-based code holds them."""
        if self.flux:
            return self.q, self.k, self.v
        b, n, _ = self.q.shape
        h = self.shape.heads
        return tuple(t.view(b, n, h, -1).transpose(1, 2) for t in (self.q, self.k, self.v))

    def attend(self, q, k, v, mask, **kwargs):
        return host_attention(q, k, v, self.shape.heads, mask=mask, skip_reshape=self.flux, **kwargs)


def case_plain(x):
    return host_attention(x.q, x.k, x.v, x.shape.heads, skip_reshape=x.flux)


def case_taca(x):
    return taca_attention(
        x.attend, x.q, x.k, x.v, n_text=x.shape.n_text, gamma=GAMMA, token_dim=x.token_dim, out_token_dim=1
    )


def cond_only_gamma(batch):
    """TACA Advanced's 'cond only' on a batch of cond then uncond (ComfyUI's CFG batch): γ per item."""
    return torch.tensor([GAMMA] * ((batch + 1) // 2) + [1.0] * (batch // 2))


def case_taca_cond_only(x):
    return taca_attention(
        x.attend, x.q, x.k, x.v, n_text=x.shape.n_text, gamma=cond_only_gamma(x.shape.batch).to(x.q.device),
        token_dim=x.token_dim, out_token_dim=1,
    )


def taca_attention_one_copy(attend_heads_first, q, k, v, n_text, gamma, token_dim, mask=None):
    """Prototype of a faster taca_attention: same two host calls, one output copy.

    attend_heads_first returns SDPA's (B, heads, Lq, d) (ComfyUI: skip_output_reshape=True).
    Both parts are written straight into the (B, L, heads·d) result, so the output is copied
    once, as plain attention's own reshape does, instead of two reshapes plus a torch.cat.
    A host that ignores the flag and returns (B, Lq, heads·d) still works, through a cat.
    """
    seq_len = q.shape[token_dim]
    n_visual = seq_len - n_text
    out_text = attend_heads_first(q.narrow(token_dim, 0, n_text), k, v, query_rows(mask, 0, n_text, seq_len))
    with text_keys_scaled(k, 0, n_text, gamma, token_dim) as k_scaled:
        out_visual = attend_heads_first(
            q.narrow(token_dim, n_text, n_visual), k_scaled, v, query_rows(mask, n_text, n_visual, seq_len)
        )
    if out_text.ndim == 3:  # the host gave (B, Lq, heads·d) after all
        return torch.cat((out_text, out_visual), dim=1)
    b, heads, _, dim_head = out_visual.shape
    out = torch.empty((b, seq_len, heads, dim_head), dtype=out_visual.dtype, device=out_visual.device)
    out.narrow(1, 0, n_text).copy_(out_text.transpose(1, 2))
    out.narrow(1, n_text, n_visual).copy_(out_visual.transpose(1, 2))
    return out.view(b, seq_len, heads * dim_head)


def taca_attention_low_memory(attend, q, k, v, n_text, gamma, token_dim, chunk):
    """Prototype of a taca_attention whose extra memory stays within one copy of the text keys.

    The result buffer is allocated first. The text keys are saved into its text rows, then
    the visual queries run `chunk` rows at a time over the γ-scaled keys, each part copied
    into place; the keys are restored from the buffer and the text rows computed last. The
    price is ⌈n_visual / chunk⌉ host calls instead of one.
    """
    seq_len = q.shape[token_dim]
    batch, heads, dim_head = q.shape[0], (q.shape[1] if token_dim == 2 else 1), q.shape[-1]
    out = q.new_empty(batch, seq_len, heads * dim_head)
    k_text = k.narrow(token_dim, 0, n_text)
    saved = out.narrow(1, 0, n_text)
    if token_dim == 2:  # (B, heads, L, d) keys: the text rows seen as (B, heads, n_text, d)
        saved = saved.view(batch, n_text, heads, dim_head).transpose(1, 2)
    saved.copy_(k_text)
    k_text.mul_(gamma)
    try:
        for start in range(n_text, seq_len, chunk):
            rows = min(chunk, seq_len - start)
            out.narrow(1, start, rows).copy_(attend(q.narrow(token_dim, start, rows), k, v, None))
    finally:
        k_text.copy_(saved)
    out.narrow(1, 0, n_text).copy_(attend(q.narrow(token_dim, 0, n_text), k, v, None))
    return out


LOW_MEMORY_CHUNK = None  # rows per visual call; None: as many as there are text tokens (--low-memory-chunk)


def case_taca_low_memory(x):
    return taca_attention_low_memory(
        x.attend, x.q, x.k, x.v, n_text=x.shape.n_text, gamma=GAMMA, token_dim=x.token_dim,
        chunk=LOW_MEMORY_CHUNK or x.shape.n_text,
    )


def case_taca_one_copy(x):
    return taca_attention_one_copy(
        lambda q, k, v, m: x.attend(q, k, v, m, skip_output_reshape=True),
        x.q, x.k, x.v, n_text=x.shape.n_text, gamma=GAMMA, token_dim=x.token_dim,
    )


def make_score_mod(n_text, gamma):
    """The official FLUX score_mod: scale image-query × text-key scores by γ."""

    def score_mod(score, b, h, q_idx, kv_idx):
        return torch.where((q_idx >= n_text) & (kv_idx < n_text), score * gamma, score)

    return score_mod


def to_tokens_last(out):
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


def case_flex_eager(x):
    from torch.nn.attention.flex_attention import flex_attention

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "called without torch.compile()": that is the point here
        return to_tokens_last(flex_attention(*x.heads_first(), score_mod=make_score_mod(x.shape.n_text, GAMMA)))


def case_flex_compiled(x):
    if x.compiled_flex is None:
        from torch.nn.attention.flex_attention import flex_attention

        torch._dynamo.reset()  # one static-shape compile per shape
        x.compiled_flex = torch.compile(flex_attention, dynamic=False)
        x.score_mod = make_score_mod(x.shape.n_text, GAMMA)
    return to_tokens_last(x.compiled_flex(*x.heads_first(), score_mod=x.score_mod))


def case_materialized(x):
    """The official SD3 approach: logits, image→text block × γ, softmax, @ V."""
    q, k, v = x.heads_first()
    n_text = x.shape.n_text
    logits = torch.matmul(q, k.transpose(-1, -2)).mul_(1 / math.sqrt(q.shape[-1]))
    logits[..., n_text:, :n_text] *= GAMMA
    return to_tokens_last(torch.matmul(logits.softmax(-1), v))


CASES = {
    "plain": case_plain,
    "taca": case_taca,
    "taca_cond_only": case_taca_cond_only,
    "taca_one_copy": case_taca_one_copy,
    "taca_low_memory": case_taca_low_memory,
    "flex_eager": case_flex_eager,
    "flex_compiled": case_flex_compiled,
    "materialized": case_materialized,
}


# --breakdown: the pieces of one TACA call, timed beside it, to see where its overhead goes.
def part_text_call(x):
    return x.attend(x.q.narrow(x.token_dim, 0, x.shape.n_text), x.k, x.v, None)


def part_visual_call(x):
    return x.attend(x.q.narrow(x.token_dim, x.shape.n_text, x.shape.n_visual), x.k, x.v, None)


def part_cat(x):
    if getattr(x, "parts", None) is None:
        x.parts = (part_text_call(x), part_visual_call(x))
    return torch.cat(x.parts, dim=1)


def part_text_keys(x):
    with text_keys_scaled(x.k, 0, x.shape.n_text, GAMMA, x.token_dim) as k_scaled:
        return k_scaled


PARTS = {
    "part_text_call": part_text_call,
    "part_visual_call": part_visual_call,
    "part_cat": part_cat,
    "part_text_keys": part_text_keys,
}
CASES.update(PARTS)
GAMMA_OF_CASE = {"taca_cond_only": cond_only_gamma}  # γ per batch item, when not GAMMA for every item
HEAVY = {"flex_eager", "materialized"}  # many times plain: fewer rounds
CASE_LABELS = {
    "plain": "plain (host SDPA)",
    "taca": "TACA core (taca_attention)",
    "taca_cond_only": "TACA core, γ per batch item (TACA Advanced, cond only)",
    "taca_one_copy": "TACA, one output copy (prototype)",
    "taca_low_memory": "TACA, visual queries in chunks into one buffer (prototype)",
    "flex_eager": "official FLUX: flex_attention, eager",
    "flex_compiled": "official FLUX: flex_attention, compiled",
    "materialized": "official SD3: materialized logits",
    "part_text_call": "part: host call, text queries",
    "part_visual_call": "part: host call, visual queries",
    "part_cat": "part: torch.cat of the two outputs",
    "part_text_keys": "part: save, scale, restore text keys",
}


def bytes_needed(case, shape, dtype):
    """Rough peak of the O(L²) cases, to skip those that cannot fit."""
    ll = shape.batch * shape.heads * shape.seq_len**2
    itemsize = torch.tensor([], dtype=dtype).element_size()
    if case == "materialized":
        return 2 * ll * itemsize  # logits and probabilities
    if case == "flex_eager":
        return 3.5 * ll * 4  # measured 3.4 × L×L fp32 at FLUX-512 (scores, score_mod temporaries)
    return 0


def reference(x, gamma):
    """Float64 materialized reference, independent of every case. γ: a number, or one per batch item."""
    q, k, v = (t.double() for t in x.heads_first())
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scale = torch.ones(logits.shape[0], 1, *logits.shape[-2:], dtype=logits.dtype, device=logits.device)
    scale[:, :, x.shape.n_text:, : x.shape.n_text] = torch.as_tensor(gamma, dtype=logits.dtype).view(-1, 1, 1, 1).to(logits.device)
    return to_tokens_last((logits * scale).softmax(-1) @ v)


# ----------------------------------------------------------------------------- measuring


class Clock:
    """Wall time of one call, how busy the rest of the machine was meanwhile, and CPU time.

    The process CPU time (all threads) is a secondary measure that other processes disturb
    less than wall time: it counts this process's work, not the time it waited for a core.
    """

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.proc = Path("/proc/stat").exists() and not self.cuda

    @staticmethod
    def _ticks():
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        total = sum(int(f) for f in fields)
        busy = total - int(fields[3]) - int(fields[4])  # less idle and iowait
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return total, busy, int(own[11]) + int(own[12])  # utime + stime

    def wait_quiet(self, limit_s):
        """Wait up to limit_s for a second in which other processes use < QUIET of the machine."""
        deadline = time.perf_counter() + limit_s
        while self.proc and time.perf_counter() < deadline:
            before = self._ticks()
            time.sleep(1.0)
            after = self._ticks()
            total = after[0] - before[0]
            if total > 0 and ((after[1] - before[1]) - (after[2] - before[2])) / total < QUIET:
                return

    def time(self, fn, x, inner=1):
        if self.cuda:
            torch.cuda.synchronize()
        before = self._ticks() if self.proc else None
        cpu_start = time.process_time()
        start = time.perf_counter()
        for _ in range(inner):
            out = fn(x)
        if self.cuda:
            torch.cuda.synchronize()
        elapsed = (time.perf_counter() - start) / inner
        cpu = (time.process_time() - cpu_start) / inner
        del out
        foreign = 0.0
        if before is not None:
            after = self._ticks()
            total = after[0] - before[0]
            if total > 0:
                foreign = max(0.0, ((after[1] - before[1]) - (after[2] - before[2])) / total)
        return elapsed, foreign, cpu


def available_bytes(device):
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 8 * 2**30


def rss_child(shape_name, case_name):
    """Child process: resident-set peak of one call, a check on the allocator accounting.

    Allocations of 64 KiB and more are served by mmap, so freed memory goes back to the
    system at once and the high-water mark (reset through /proc/self/clear_refs) is live
    memory, as the operating system sees it (oneDNN and MKL scratch included).
    """
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD (also stops its dynamic growth)
    libc.mallopt(-1, 64 * 1024)  # M_TRIM_THRESHOLD
    shape = SHAPES[shape_name]
    fn = CASES[case_name]
    x = Inputs(shape, torch.device("cpu"), torch.float32)
    if case_name == "flex_compiled":
        fn(x)  # compile at this shape before the measurement
    else:  # load kernels and libraries on a tiny call of the same layout
        fn(Inputs(Shape("tiny", "", 0, shape.heads, shape.head_dim, 8, 24, shape.layout), x.q.device, x.q.dtype))
    gc.collect()

    def status(key):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = status("VmRSS")
    out = fn(x)
    peak = status("VmHWM") - before
    del out
    print(json.dumps({"extra_peak_bytes": peak}))


def rss_peaks(shape, cases):
    results = {}
    for case in cases:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", shape.name, case]
        if LOW_MEMORY_CHUNK:
            cmd += ["--low-memory-chunk", str(LOW_MEMORY_CHUNK)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            results[case] = {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
            continue
        results[case] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


# ----------------------------------------------------------------------------- running


def summarize(times, foreign, cpu, plain_times, plain_foreign, plain_cpu, rounds_run):
    """Median time, and the median of per-round ratios to plain over quiet rounds.

    A round counts as quiet when other processes used < QUIET of the machine during both
    this case's call and plain's. With fewer than 3 quiet rounds all rounds are used.
    """
    paired = [(times[r] / plain_times[r], max(foreign[r], plain_foreign[r]) < QUIET) for r in rounds_run]
    quiet = [ratio for ratio, ok in paired if ok]
    use_quiet = len(quiet) >= 3
    ratios = quiet if use_quiet else [ratio for ratio, _ in paired]
    quiet_times = [times[r] for r in rounds_run if foreign[r] < QUIET]
    t = quiet_times if len(quiet_times) >= 3 else [times[r] for r in rounds_run]
    return {
        "median_s": statistics.median(t),
        "min_s": min(times[r] for r in rounds_run),
        "time_ratio": statistics.median(ratios),
        "time_ratio_all_rounds": statistics.median(ratio for ratio, _ in paired),
        "time_ratio_of_minima": min(times[r] for r in rounds_run) / min(plain_times[r] for r in rounds_run),
        "cpu_time_ratio": statistics.median(cpu[r] / plain_cpu[r] for r in rounds_run),
        "cpu_s": [cpu[r] for r in rounds_run],
        "rounds": len(rounds_run),
        "quiet_rounds": len(quiet),
        "ratio_from": "quiet rounds" if use_quiet else "all rounds (machine busy)",
        "times_s": [times[r] for r in rounds_run],
        "foreign_load": [foreign[r] for r in rounds_run],
    }


def run_shape(shape, cases, rounds, heavy_rounds, device, dtype, clock, log, wait_quiet=0):
    x = Inputs(shape, device, dtype)
    result = {"shape": asdict(shape), "seq_len": shape.seq_len, "cases": {}}
    sizes = {
        "text_keys_mb": shape.batch * shape.heads * shape.n_text * shape.head_dim * x.q.element_size() / MB,
        "output_mb": shape.batch * shape.seq_len * shape.heads * shape.head_dim * x.q.element_size() / MB,
        "lxl_mb": shape.batch * shape.heads * shape.seq_len**2 * x.q.element_size() / MB,
    }
    result["sizes"] = sizes
    # Warm-up on a tiny call of the same layout (flex_compiled: compile at this shape), then
    # one full-size call each under the memory measurement, which also warms the timings.
    tiny = Inputs(Shape("tiny", "", 0, shape.heads, shape.head_dim, 8, 24, shape.layout), device, dtype)
    peak_fn = allocation_peak_cuda if device.type == "cuda" else allocation_peak_cpu
    active, core_out = [], None
    avail = available_bytes(device)
    for case in sorted(cases, key=lambda c: c != "taca"):  # the core first: the others are compared to it
        need = bytes_needed(case, shape, dtype)
        if need > 0.8 * avail:
            result["cases"][case] = {"skipped": f"would need {need / 2**30:.1f} GB ({avail / 2**30:.1f} GB available)"}
            log(f"  {case}: skipped, would need {need / 2**30:.1f} GB")
            continue
        try:
            start = time.perf_counter()
            CASES[case](x if case == "flex_compiled" else tiny)
            warm = time.perf_counter() - start
            peak, ops, out = peak_fn(CASES[case], x)
        except Exception as error:  # report unsupported paths plainly, with the error
            text = str(error).strip()
            message = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
            result["cases"][case] = {"unsupported": message[:300]}
            log(f"  {case}: unsupported: {message[:200]}")
            continue
        info = result["cases"][case] = {"warm_up_s": warm, "extra_peak_mb": peak / MB}
        if ops:
            info["attention_ops"] = ops
        if case == "taca":
            core_out = out
        elif core_out is not None and case not in PARTS and case not in GAMMA_OF_CASE:
            info["max_abs_diff_vs_taca"] = (out.float() - core_out.float()).abs().max().item()
            info["bitwise_equal_to_taca"] = bool(torch.equal(out, core_out))
        del out
        active.append(case)
        log(f"  {case}: warm-up {warm:.2f} s, extra peak {peak / MB:.1f} MB")
    del core_out, tiny
    gc.collect()
    active.sort(key=cases.index)
    plain_peak = result["cases"].get("plain", {}).get("extra_peak_mb")
    for case in active:
        info = result["cases"][case]
        if plain_peak:
            info["mem_ratio"] = info["extra_peak_mb"] / plain_peak
            info["extra_vs_plain_mb"] = info["extra_peak_mb"] - plain_peak

    # Timing: interleaved rounds, the order rotated each round.
    inner = 1
    if device.type == "cuda":  # make one sample last about 20 ms
        t, _, _ = clock.time(CASES["plain"], x)
        inner = max(1, math.ceil(0.02 / max(t, 1e-6)))
    times = {c: {} for c in active}
    foreign = {c: {} for c in active}
    cpu = {c: {} for c in active}
    for r in range(rounds):
        clock.wait_quiet(wait_quiet)
        this_round = [c for c in active if c not in HEAVY or r < heavy_rounds]
        shift = r % len(this_round)
        for case in this_round[shift:] + this_round[:shift]:
            times[case][r], foreign[case][r], cpu[case][r] = clock.time(
                CASES[case], x, inner=1 if case in HEAVY else inner
            )
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{c} {times[c][r]:.3f}s" for c in this_round))
    result["cases"] = {c: result["cases"][c] for c in cases if c in result["cases"]}
    if "plain" in active:
        for case in active:
            result["cases"][case].update(
                summarize(
                    times[case], foreign[case], cpu[case], times["plain"], foreign["plain"], cpu["plain"],
                    sorted(times[case]),
                )
            )
    del x
    gc.collect()
    return result


def exactness(cases, device, dtype, log):
    """Max |case − float64 materialized reference| on small shapes, both layouts, γ = 1.2."""
    table = {}
    for shape in EXACT_SHAPES:
        x = Inputs(shape, device, dtype, seed=1)
        ref = reference(x, GAMMA)
        row = {}
        for case in cases:
            try:
                expected = reference(x, GAMMA_OF_CASE[case](shape.batch)) if case in GAMMA_OF_CASE else ref
                row[case] = (CASES[case](x).double() - expected).abs().max().item()
            except Exception as error:
                row[case] = f"unsupported: {type(error).__name__}"
        table[shape.name] = row
        log(f"  {shape.name}: " + ", ".join(f"{c} {v:.2e}" if isinstance(v, float) else f"{c} {v}" for c, v in row.items()))
    return table


def environment(device, dtype):
    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "gamma": GAMMA,
    }
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        env["cpu"] = names[0] if names else platform.processor()
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    try:
        env["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return env


def fmt(value, spec):
    return "—" if value is None else format(value, spec)


def markdown(report):
    env = report["environment"]
    lines = [
        f"# Attention-call benchmark ({env['device']}, {env['dtype']})",
        "",
        f"{env['date']} · torch {env['torch']} · {env.get('gpu') or env.get('cpu', '')} · "
        f"{env['threads']} threads · γ = {env['gamma']} · commit {env.get('commit', '?')} · "
        f"total {report['total_s'] / 60:.1f} min"
        + (f" · taca_low_memory chunk: {report['low_memory_chunk']} visual rows" if "low_memory_chunk" in report else ""),
        "",
        "Time: median over interleaved rounds of (case time / plain time in the same round), "
        "using the rounds where other processes used < 15 % of the machine when there were at "
        "least 3; (of minima): fastest case call / fastest plain call; CPU time: median per-round ratio of "
        "this process's CPU time (all threads), less disturbed by other processes. Memory: peak tensor memory "
        "allocated during the call above the inputs "
        f"({report['memory_method']}), output included.",
        "",
        "| shape | L | case | median ms | time × plain | (of minima) | CPU time × plain | extra peak MB | memory × plain | rounds (quiet) | max abs diff vs core |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for res in report["shapes"]:
        for case, info in res["cases"].items():
            label = CASE_LABELS[case]
            if "skipped" in info or "unsupported" in info:
                why = info.get("skipped") and f"skipped: {info['skipped']}" or f"unsupported: {info['unsupported']}"
                lines.append(f"| {res['shape']['name']} | {res['seq_len']} | {label} | {why} | | | | | | | |")
                continue
            diff = info.get("max_abs_diff_vs_taca")
            diff_text = "bitwise equal" if info.get("bitwise_equal_to_taca") and case != "taca" else fmt(diff, ".1e")
            if case == "taca":
                diff_text = "—"
            lines.append(
                f"| {res['shape']['name']} | {res['seq_len']} | {label} | {fmt(info.get('median_s', 0) * 1e3, '.1f')} | "
                f"{fmt(info.get('time_ratio'), '.3f')} | {fmt(info.get('time_ratio_of_minima'), '.3f')} | "
                f"{fmt(info.get('cpu_time_ratio'), '.3f')} | {fmt(info.get('extra_peak_mb'), '.1f')} | "
                f"{fmt(info.get('mem_ratio'), '.2f')} | {info.get('rounds', 0)} ({info.get('quiet_rounds', 0)}) | {diff_text} |"
            )
    lines += ["", "Sizes for reading the memory column (MB): one copy of the text keys, the output, one L×L matrix.", ""]
    lines += ["| shape | text keys | output | L×L |", "| --- | ---: | ---: | ---: |"]
    for res in report["shapes"]:
        s = res["sizes"]
        lines.append(f"| {res['shape']['name']} | {s['text_keys_mb']:.1f} | {s['output_mb']:.1f} | {s['lxl_mb']:.0f} |")
    if report.get("rss_check"):
        check = report["rss_check"]
        lines += [
            "",
            f"Check of the memory column with the operating system's view, {check['shape']}: resident-set "
            "high-water mark of one call in a fresh process, above the RSS before it (MB).",
            "",
            "| case | RSS extra peak MB | allocator extra peak MB |",
            "| --- | ---: | ---: |",
        ]
        allocator = next(r for r in report["shapes"] if r["shape"]["name"] == check["shape"])["cases"]
        for case, info in check["cases"].items():
            rss = fmt(info.get("extra_peak_bytes") and info["extra_peak_bytes"] / MB, ".1f") if "error" not in info else info["error"]
            lines.append(f"| {CASE_LABELS[case]} | {rss} | {fmt(allocator.get(case, {}).get('extra_peak_mb'), '.1f')} |")
    if report.get("exactness"):
        cases = list(next(iter(report["exactness"].values())))
        lines += [
            "",
            f"Exactness: max |case − float64 materialized reference|, γ = {env['gamma']}, "
            "B=2, 3 heads, 37 text + 91 visual tokens, head dim 32. "
            "(plain ignores γ: its difference is the size of the TACA effect.)",
            "",
            "| layout | " + " | ".join(cases) + " |",
            "| --- |" + " ---: |" * len(cases),
        ]
        for name, row in report["exactness"].items():
            lines.append(f"| {name} | " + " | ".join(fmt(v, ".1e") if isinstance(v, float) else str(v) for v in row.values()) + " |")
    ops = {}
    for res in report["shapes"]:
        for case in ("plain", "taca", "taca_one_copy"):
            if res["cases"].get(case, {}).get("attention_ops"):
                ops.setdefault(case, res["cases"][case]["attention_ops"])
    if ops:
        lines += ["", "Attention operators each case ran (torch.profiler):", ""]
        lines += [f"- {case}: {', '.join(names)}" for case, names in ops.items()]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (bf16)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: fp32 on CPU, bf16 on CUDA")
    parser.add_argument("--quick", action="store_true", help="FLUX 512² and 1024² only, fewer rounds")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), help="default: all but the -cfg ones (batch 2; quick: flux-512 flux-1024)")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=[c for c in CASES if c not in PARTS])
    parser.add_argument("--breakdown", action="store_true", help="also time the parts of a TACA call")
    parser.add_argument("--tag", help="appended to the result files' names")
    parser.add_argument("--low-memory-chunk", type=int, help="visual rows per host call in taca_low_memory "
                        "(default: the number of text tokens)")
    parser.add_argument("--rounds", type=int, help="override the rounds per shape")
    parser.add_argument("--no-compile", action="store_true", help="leave out flex_compiled")
    parser.add_argument("--no-rss-check", action="store_true", help="leave out the CPU resident-set memory check")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="before each round, wait up to S seconds for other processes to go quiet")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--rss-child", nargs=2, metavar=("SHAPE", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    global LOW_MEMORY_CHUNK
    LOW_MEMORY_CHUNK = args.low_memory_chunk
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        return rss_child(*args.rss_child)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float32 if device.type == "cpu" else torch.bfloat16)
    cases = [c for c in args.cases if not (args.no_compile and c == "flex_compiled")]
    if args.breakdown:
        cases += [c for c in PARTS if c not in cases]
    if "plain" not in cases:
        cases.insert(0, "plain")
    shape_names = args.shapes or (["flux-512", "flux-1024"] if args.quick else DEFAULT_SHAPES)
    # (rounds, rounds for the heavy O(L²) cases) per shape; many more on a GPU, where calls are short
    plan = {"flux-512": (15, 5), "sd35m-1024": (9, 3), "flux-1024": (11, 3), "flux-2048": (3, 3),
            "flux-1024-cfg": (9, 3), "sd35m-1024-cfg": (9, 3)}
    if args.quick:
        plan = {name: (5, 2) for name in SHAPES}
    if device.type == "cuda":
        plan = {name: (30, 10) for name in SHAPES}

    def log(message):
        print(message, flush=True)

    started = time.perf_counter()
    clock = Clock(device)
    report = {
        "environment": environment(device, dtype),
        "memory_method": "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "torch.profiler allocation events, running sum",
        "shapes": [],
    }
    if "taca_low_memory" in cases:
        report["low_memory_chunk"] = LOW_MEMORY_CHUNK or "n_text"
    log(f"environment: {json.dumps(report['environment'])}")
    log("exactness on small shapes")
    report["exactness"] = exactness([c for c in cases if c not in PARTS], device, dtype, log)
    for name in shape_names:
        rounds, heavy = plan[name]
        if args.rounds:
            rounds, heavy = args.rounds, min(heavy, args.rounds)
        log(f"{name}: L = {SHAPES[name].seq_len}, {rounds} rounds")
        report["shapes"].append(run_shape(SHAPES[name], cases, rounds, heavy, device, dtype, clock, log, args.wait_quiet))
    rss_shape = "flux-1024"
    if device.type == "cpu" and not args.no_rss_check and rss_shape in shape_names and Path("/proc/self/clear_refs").exists():
        log(f"resident-set check at {rss_shape}")
        measured = next(r for r in report["shapes"] if r["shape"]["name"] == rss_shape)
        check_cases = [c for c in cases if "extra_peak_mb" in measured["cases"].get(c, {})]
        report["rss_check"] = {"shape": rss_shape, "cases": rss_peaks(SHAPES[rss_shape], check_cases)}
    report["total_s"] = time.perf_counter() - started

    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"attention-{device.type}" + ("-quick" if args.quick else "") + ("-breakdown" if args.breakdown else "")
    stem += f"-{args.tag}" if args.tag else ""
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (args.out / f"{stem}.md").write_text(table)
    print(table)
    log(f"wrote {args.out / stem}.json and .md in {report['total_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
