"""Model-step benchmark: TACA and the TACA LoRA inside a real ComfyUI sampling run.

Times ComfyUI's own sampler (comfy.sample.sample, euler, CFG 3 so cond and uncond run
as one batch) on random-weight models built from the real FLUX.1 and SD3.5-Medium classes.

By default the models are narrowed so a step takes a fraction of a second on a CPU, with
real head sizes and real token counts:

    flux    FLUX.1 blocks, 6 heads of 128, 1 double + 1 single block, 256² (256 image
            tokens) and 256 text tokens
    sd3.5m  SD3.5-Medium (MMDiT-X) blocks, 4 heads of 64, 4 joint blocks, 256² and 154
            text tokens

With --real they have the real architectures and sizes instead (for a GPU): FLUX.1-dev
(3072 wide, 24 heads of 128, 19 double + 38 single blocks, 512 text tokens) and
SD3.5-Medium (1536 wide, 24 heads of 64, 24 blocks, 333 text tokens), at 1024², in bf16
on CUDA. --blocks N keeps only the first N blocks of each kind (a quick check of the
set-up), and --size the image side in pixels.

Each comparison runs its variants interleaved, several times, and reports medians and
the ratio to the baseline of the same run:

    per step, TACA                     TACA inside its window on every step (threshold 0), and
                                       outside it on every step (γ₀ = 1, the same path), against
                                       no TACA
    per step, LoRA                     TACA + TACALoraLoader inside its window and outside it,
                                       against TACA alone
    30 steps, default window           TACA (γ₀ 1.2, threshold 970) against no TACA
    overhead                           TACA outside its window against no TACA, and the LoRA
                                       outside its window against TACA alone, on the same blocks
                                       at the least width with one image and one text token: the
                                       per-step difference in microseconds
    compiled                           ComfyUI's TorchCompileModel (inductor) on TACA inside and
                                       outside its window, against TorchCompileModel without TACA
                                       (use --attention pytorch: ComfyUI's CPU default, sub-quadratic
                                       attention, breaks torch.compile's graph at every call)
    probe                              TACA Attention Balance Probe on TACA inside and outside its
                                       window, against TACA alone, and on the model alone
    advanced                           TACA Advanced on every step: its defaults, cond only (γ per
                                       batch item) and a linear ramp, against TACA
    gguf                               (only when named) the model quantized to Q8_0 by ComfyUI-GGUF's
                                       rules (tests/integration/gguf_models.py) and loaded by its
                                       UnetLoaderGGUF: TACA on every step against off; and GGUF off
                                       against the unquantized model. Needs ComfyUI-GGUF under
                                       TACA_PEER_PACKS and `gguf`; the narrowed FLUX loads on ComfyUI
                                       0.33, whose detection reads FLUX's width from the file

and the peak memory of a one-step run with TACA on against no TACA.

Needs a ComfyUI: COMFYUI_PATH=/path/to/ComfyUI python benchmarks/model_step.py [--quick] [--real]
[--comparisons memory per-step 30-steps overhead compiled probe advanced gguf]. Results go to
benchmarks/results/model_step-<device>[-real][-<attention>][-<comparisons>][-<N>-threads][-quick].{json,md}.
"""

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
COMFYUI = Path(os.environ.get("COMFYUI_PATH", ROOT.parents[1]))
sys.path.insert(0, str(COMFYUI))
sys.path.insert(0, str(ROOT / "tests" / "integration"))


def parse_options():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--rounds", type=int, default=11, help="rounds per comparison (default 11)")
    parser.add_argument("--real", action="store_true", help="the real FLUX.1-dev and SD3.5-Medium sizes (for a GPU)")
    parser.add_argument("--blocks", type=int, help="keep only the first N blocks of each kind")
    parser.add_argument("--size", type=int, help="image side in pixels (default 256, or 1024 with --real)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="weights (default bfloat16 with --real on CUDA, else float32)")
    parser.add_argument("--comparisons", nargs="+", choices=COMPARISONS, default=list(DEFAULT_COMPARISONS),
                        help="which comparisons to run (default all but gguf)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    parser.add_argument("--models", nargs="+", choices=["flux", "sd3.5m"], default=["flux", "sd3.5m"])
    parser.add_argument("--attention", choices=list(ATTENTION_FLAGS), default="comfyui",
                        help="ComfyUI's attention backend: its own choice (default) or one forced by its flag")
    return parser.parse_args()


COMPARISONS = ("memory", "per-step", "30-steps", "overhead", "compiled", "probe", "advanced", "gguf")
DEFAULT_COMPARISONS = COMPARISONS[:-1]  # gguf needs another pack
ATTENTION_FLAGS = {"comfyui": None, "pytorch": "use_pytorch_cross_attention", "sub_quad": "use_quad_cross_attention",
                   "split": "use_split_cross_attention"}
OPTIONS = parse_options()

from comfy.cli_args import args  # noqa: E402

if not torch.cuda.is_available():
    args.cpu = True
if ATTENTION_FLAGS[OPTIONS.attention]:
    setattr(args, ATTENTION_FLAGS[OPTIONS.attention], True)
import utils.extra_config  # noqa: E402,F401  before ComfyUI's nodes.py
import comfy.ldm.modules.attention  # noqa: E402
import comfy.lora  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.supported_models  # noqa: E402
import folder_paths  # noqa: E402
import nodes  # noqa: E402
import safetensors.torch  # noqa: E402

from peak_memory import allocation_peak_cpu, allocation_peak_cuda  # noqa: E402  (this folder)
from tiny_families.flux import flux_params  # noqa: E402  (0.33's FluxParams needs txt_ids_dims)
from tiny_models import randomize_weights  # noqa: E402

TEXT_WIDTH = 4096
OVERHEAD_ROUNDS_PER_ROUND = 20  # the overhead comparison's runs are short: 20 times the rounds
FLUX_LORA_TARGETS = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj",
    "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
)
SD3_LORA_TARGETS = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj",
    "attn.to_add_out",
)
FLUX_COMMON = {
    "image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16, "patch_size": 2,
    "vec_in_dim": 768, "context_in_dim": TEXT_WIDTH, "mlp_ratio": 4.0, "axes_dim": [16, 56, 56], "theta": 10000,
    "qkv_bias": True,
}
SD3_COMMON = {
    "in_channels": 16, "out_channels": 16, "patch_size": 2, "adm_in_channels": 2048, "pos_embed_scaling_factor": None,
    "qk_norm": "rms",
}


def flux_spec(size, n_text, **unet):
    return dict(config=comfy.supported_models.Flux, size=size, n_text=n_text, pooled=768, extra={"guidance": 3.5},
                unet=flux_params({**FLUX_COMMON, **unet}), lora_targets=FLUX_LORA_TARGETS)


def sd35m_spec(size, n_text, depth, self_attn_blocks, pos_embed_max_size):
    """SD3.5-Medium (MMDiT-X): 64·depth wide, with image self-attention in the first blocks."""
    unet = {**SD3_COMMON, "depth": depth, "pos_embed_max_size": pos_embed_max_size, "num_patches": pos_embed_max_size**2,
            "context_embedder_config": {"target": "torch.nn.Linear",
                                        "params": {"in_features": TEXT_WIDTH, "out_features": 64 * depth}},
            "x_block_self_attn_layers": list(range(self_attn_blocks))}
    return dict(config=comfy.supported_models.SD3, size=size, n_text=n_text, pooled=2048, extra={}, unet=unet,
                lora_targets=SD3_LORA_TARGETS)


NARROW = {  # real head sizes and token counts, few and narrow blocks, 256²
    "flux": flux_spec(256, 256, hidden_size=768, num_heads=6, depth=1, depth_single_blocks=1),
    "sd3.5m": sd35m_spec(256, 154, depth=4, self_attn_blocks=4, pos_embed_max_size=32),
}
REAL = {  # FLUX.1-dev and SD3.5-Medium as released (ComfyUI's detected configs), 1024²
    "flux": flux_spec(1024, 512, hidden_size=3072, num_heads=24, depth=19, depth_single_blocks=38),
    "sd3.5m": sd35m_spec(1024, 333, depth=24, self_attn_blocks=13, pos_embed_max_size=384),
}


def first_blocks(spec, blocks):
    """The spec with only the first `blocks` blocks of each kind (the width stays)."""
    unet = dict(spec["unet"])
    if "depth_single_blocks" in unet:
        unet["depth"], unet["depth_single_blocks"] = min(unet["depth"], blocks), min(unet["depth_single_blocks"], blocks)
    else:  # MMDiT's width is 64·depth, so the depth stays and num_blocks drops
        unet["num_blocks"] = min(unet["depth"], blocks)
        unet["x_block_self_attn_layers"] = [i for i in unet["x_block_self_attn_layers"] if i < blocks]
    return {**spec, "unet": unet}


def minimal(spec):
    """The spec's blocks at the least width (one head), one image token and one text token:
    a step is almost all bookkeeping, so TACA's own per-step cost shows in microseconds."""
    unet = dict(spec["unet"])
    if "depth_single_blocks" in unet:
        unet.update(hidden_size=128, num_heads=1)
    else:  # MMDiT's width is 64·depth: one head of 64, with the spec's blocks
        unet.update(num_blocks=unet.get("num_blocks", unet["depth"]), depth=1, pos_embed_max_size=4, num_patches=16,
                    context_embedder_config={**unet["context_embedder_config"],
                                             "params": {"in_features": TEXT_WIDTH, "out_features": 64}})
    return {**spec, "unet": unet, "size": 16, "n_text": 1}


def build(spec, dtype, seed=0):
    config = spec["config"](spec["unet"])
    config.set_inference_dtype(dtype, None)
    model = config.get_model({})
    randomize_weights(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, comfy.model_management.get_torch_device(),
                                            comfy.model_management.unet_offload_device())


def conditioning(spec, seed):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, spec["n_text"], TEXT_WIDTH, generator=g),
             {"pooled_output": torch.randn(1, spec["pooled"], generator=g), **spec["extra"]}]]


def write_lora(model, spec, folder: Path, rank=64, filename="taca_bench.safetensors") -> str:
    """A rank-64 LoRA in the official format on the training scripts' target modules."""
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    weights = model.model.state_dict()
    g = torch.Generator().manual_seed(1)
    lora = {}
    for name, target in key_map.items():
        key, offset = (target[0], target[1]) if isinstance(target, tuple) else (target, None)
        if name.startswith("transformer.") and name.endswith(spec["lora_targets"]) and key in weights:
            lora[f"{name}.lora_A.weight"] = torch.randn(rank, weights[key].shape[1], generator=g) * 0.01
            lora[f"{name}.lora_B.weight"] = torch.randn(offset[2] if offset else weights[key].shape[0], rank, generator=g) * 0.01
    path = folder / filename
    safetensors.torch.save_file(lora, str(path))
    return path.name


def sample(model, spec, steps):
    latent = torch.zeros(1, 16, spec["size"] // 8, spec["size"] // 8)
    noise = comfy.sample.prepare_noise(latent, 0)
    comfy.sample.sample(model, noise, steps, 3.0, "euler", "simple", conditioning(spec, 1), conditioning(spec, 2),
                        latent, disable_pbar=True, seed=0)
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_run(model, spec, steps):
    """Wall and process CPU seconds per step of one sampling run."""
    cpu, start = time.process_time(), time.perf_counter()
    sample(model, spec, steps)
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps


def compare(variants: dict, spec, steps, rounds):
    """Per-step wall and CPU seconds of each variant in every round; the variants run
    interleaved, their order rotating from round to round."""
    for model in variants.values():
        sample(model, spec, 1)  # warm up: load, allocate
    times = {name: [] for name in variants}
    for round_ in range(rounds):
        order = list(variants)[round_ % len(variants):] + list(variants)[:round_ % len(variants)]
        for name in order:
            times[name].append(timed_run(variants[name], spec, steps))
    return times


def median_interval(values, level=0.95):
    """A distribution-free interval for the median: order statistics chosen by the binomial law."""
    xs, n = sorted(values), len(values)
    k, below = 0, 0.0
    while below + math.comb(n, k) / 2**n <= (1 - level) / 2:
        below += math.comb(n, k) / 2**n
        k += 1
    k = max(k, 1)
    return xs[k - 1], xs[n - k]


def per_round(times, name, baseline):
    """Both variants' per-step wall times in every round, and their medians."""
    wall, base = [t[0] for t in times[name]], [b[0] for b in times[baseline]]
    return {
        "seconds_per_step": statistics.median(wall), "baseline_seconds_per_step": statistics.median(base),
        "runs": len(wall), "rounds_seconds_per_step": wall, "rounds_baseline_seconds_per_step": base,
    }


def summarize(times, name, baseline):
    """Medians, and the median and its 95 % interval of the per-round ratio to the baseline."""
    wall = [t[0] / b[0] for t, b in zip(times[name], times[baseline])]
    cpu = [t[1] / b[1] for t, b in zip(times[name], times[baseline])]
    low, high = median_interval(wall)
    return {
        **per_round(times, name, baseline),
        "ratio": statistics.median(wall), "ratio_low": low, "ratio_high": high,
        "ratio_cpu_time": statistics.median(cpu),
        "ratio_min": min(t[0] for t in times[name]) / min(b[0] for b in times[baseline]),
    }


def summarize_difference(times, name, baseline):
    """Medians, and the median and its 95 % interval of the per-round difference to the baseline,
    in seconds per step."""
    wall = [t[0] - b[0] for t, b in zip(times[name], times[baseline])]
    low, high = median_interval(wall)
    return {**per_round(times, name, baseline),
            "difference": statistics.median(wall), "difference_low": low, "difference_high": high}


def peak_bytes(model, spec):
    """Peak memory allocated by a one-step sampling run, above what was allocated before it."""
    sample(model, spec, 1)  # load it first, so loading is not counted
    allocation_peak = allocation_peak_cuda if torch.cuda.is_available() else allocation_peak_cpu
    peak, _, _ = allocation_peak(lambda _: sample(model, spec, 1), None)
    return peak


def window_steps(model, steps, threshold):
    sigmas = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler="euler", scheduler="simple").sigmas
    return int((1000 * sigmas[:-1] >= threshold).sum())


GGUF_ARCH = {"flux": "flux", "sd3.5m": "sd3"}


def load_gguf(model, family, folder: Path):
    """`model` quantized to Q8_0 by ComfyUI-GGUF's rules, as its UnetLoaderGGUF loads the file."""
    import gguf_models  # noqa: E402  (tests/integration; imports gguf)

    if "UnetLoaderGGUF" not in nodes.NODE_CLASS_MAPPINGS:
        raise SystemExit("The gguf comparison needs ComfyUI-GGUF: set TACA_PEER_PACKS to the folder holding it "
                         "(tests/run_peers.py --fetch gets it) and pip install gguf.")
    name = f"taca_bench_{family}-Q8_0.gguf"
    weights = {k: v.detach().float() for k, v in model.model.diffusion_model.state_dict().items()}
    gguf_models.write_quantized(weights, GGUF_ARCH[family], "Q8_0", folder / name)
    paths, extensions = folder_paths.folder_names_and_paths["diffusion_models"]
    folder_paths.folder_names_and_paths["diffusion_models"] = ([*paths, str(folder)], extensions)
    return nodes.NODE_CLASS_MAPPINGS["UnetLoaderGGUF"]().load_unet(name)[0]


def main(opts):
    rounds = 3 if opts.quick else opts.rounds
    if opts.threads:
        torch.set_num_threads(opts.threads)
    cuda = torch.cuda.is_available()
    dtype = getattr(torch, opts.dtype or ("bfloat16" if opts.real and cuda else "float32"))

    asyncio.run(nodes.load_custom_node(str(ROOT)))
    if "gguf" in opts.comparisons:
        from peer_packs import GGUF, pack_path  # noqa: E402  (tests/integration)

        if pack_path(GGUF) is not None:
            asyncio.run(nodes.load_custom_node(str(pack_path(GGUF))))
    taca_node, lora_node = nodes.NODE_CLASS_MAPPINGS["TACA"], nodes.NODE_CLASS_MAPPINGS["TACALoraLoader"]
    advanced_node, probe_node = nodes.NODE_CLASS_MAPPINGS["TACAAdvanced"], nodes.NODE_CLASS_MAPPINGS["TACABalanceProbe"]

    def taca(model, threshold):
        return taca_node.execute(model=model, gamma=1.2, threshold=threshold).result[0]

    def taca_outside(model):
        # Outside its window on every step. γ₀ = 1 takes the same path as a step below the
        # threshold (γ(t) = 1: the host's attention runs untouched) and needs no threshold
        # beyond the node's range.
        return taca_node.execute(model=model, gamma=1.0, threshold=0.0).result[0]

    def advanced(model, schedule="step (paper)", t_start=0.0, t_end=0.0, apply_to="cond and uncond"):
        return advanced_node.execute(model=model, gamma=1.2, schedule=schedule, t_start=t_start, t_end=t_end,
                                     blocks="all", apply_to=apply_to).result[0]

    def probed(model):
        return probe_node.execute(model=model).result[0]

    def lora(model, name):
        return lora_node.execute(model=model, lora_name=name, strength=1.0, active="with TACA").result[0]

    folder = Path(folder_paths.get_temp_directory()) / "taca-bench-loras"
    folder.mkdir(parents=True, exist_ok=True)
    folder_paths.folder_names_and_paths["loras"] = ([str(folder)], {".safetensors"})

    rows, memory, overheads = [], [], []
    for family in opts.models:
        spec = (REAL if opts.real else NARROW)[family]
        if opts.blocks:
            spec = first_blocks(spec, opts.blocks)
        if opts.size:
            spec = {**spec, "size": opts.size}
        # every comparison but the overhead one runs the model at the spec's width
        model = build(spec, dtype) if set(opts.comparisons) - {"overhead"} else None
        if "memory" in opts.comparisons:
            print(f"[{family}] peak memory of a step, TACA on vs off", flush=True)
            peaks = {variant: peak_bytes(m, spec) for variant, m in {"off": model, "taca": taca(model, 0.0)}.items()}
            memory.append({"model": family, "peak_off_bytes": peaks["off"], "peak_taca_bytes": peaks["taca"]})
        if "per-step" in opts.comparisons:
            print(f"[{family}] per step: TACA inside / outside its window, with and without the LoRA", flush=True)
            name = write_lora(model, spec, folder)
            r = compare({"off": model, "taca": taca(model, 0.0), "lora_in": lora(taca(model, 0.0), name),
                         "taca_out": taca_outside(model), "lora_out": lora(taca_outside(model), name)},
                        spec, steps=4, rounds=rounds)
            rows.append((family, "per step: TACA on (every step in window) / off", summarize(r, "taca", "off")))
            rows.append((family, "per step: TACA outside its window / off", summarize(r, "taca_out", "off")))
            rows.append((family, "per step: + LoRA inside its window / TACA alone", summarize(r, "lora_in", "taca")))
            rows.append((family, "per step: + LoRA outside its window / TACA alone", summarize(r, "lora_out", "taca_out")))
        if "30-steps" in opts.comparisons:
            print(f"[{family}] 30 steps, default window vs off", flush=True)
            in_window = window_steps(model, 30, 970.0)
            r = compare({"off": model, "taca": taca(model, 970.0)}, spec, steps=30, rounds=rounds)
            rows.append((family, f"30 steps: TACA default window ({in_window} of 30 steps) / off", summarize(r, "taca", "off")))
        if "overhead" in opts.comparisons:
            print(f"[{family}] TACA's and the LoRA's own cost outside their window, on a minimal model", flush=True)
            small = minimal(spec)
            base = build(small, dtype)
            name = write_lora(base, small, folder, filename="taca_bench_minimal.safetensors")
            r = compare({"off": base, "taca_out": taca_outside(base), "lora_out": lora(taca_outside(base), name)},
                        small, steps=4, rounds=OVERHEAD_ROUNDS_PER_ROUND * rounds)
            overheads.append((family, "TACA outside its window − off", summarize_difference(r, "taca_out", "off")))
            overheads.append((family, "+ LoRA outside its window − TACA alone",
                              summarize_difference(r, "lora_out", "taca_out")))
            del base
        if "compiled" in opts.comparisons:
            print(f"[{family}] TorchCompileModel: TACA inside / outside its window vs no TACA", flush=True)
            from comfy_extras.nodes_torch_compile import TorchCompileModel

            def compiled(m):
                return TorchCompileModel.execute(model=m, backend="inductor").result[0]

            r = compare({"off": compiled(model), "taca": compiled(taca(model, 0.0)), "taca_out": compiled(taca_outside(model))},
                        spec, steps=4, rounds=rounds)
            rows.append((family, "compiled, per step: TACA on (every step in window) / off", summarize(r, "taca", "off")))
            rows.append((family, "compiled, per step: TACA outside its window / off", summarize(r, "taca_out", "off")))
        if "probe" in opts.comparisons:
            print(f"[{family}] per step: the attention-balance probe on TACA inside / outside its window, and alone", flush=True)
            r = compare({"off": model, "probe": probed(model), "taca": taca(model, 0.0), "probe_in": probed(taca(model, 0.0)),
                         "taca_out": taca_outside(model), "probe_out": probed(taca_outside(model))},
                        spec, steps=4, rounds=rounds)
            rows.append((family, "per step: probe on TACA inside its window / TACA alone", summarize(r, "probe_in", "taca")))
            rows.append((family, "per step: probe on TACA outside its window / TACA alone", summarize(r, "probe_out", "taca_out")))
            rows.append((family, "per step: probe, no TACA / off", summarize(r, "probe", "off")))
        if "advanced" in opts.comparisons:
            print(f"[{family}] per step: TACA Advanced (cond only; a linear ramp) vs TACA, every step in the window", flush=True)
            r = compare({"taca": taca(model, 0.0), "advanced": advanced(model), "cond_only": advanced(model, apply_to="cond only"),
                         "ramp": advanced(model, "linear", 1000.0, 0.0)},
                        spec, steps=4, rounds=rounds)
            rows.append((family, "per step: TACA Advanced, defaults but threshold 0 / TACA", summarize(r, "advanced", "taca")))
            rows.append((family, "per step: TACA Advanced, cond only / TACA", summarize(r, "cond_only", "taca")))
            rows.append((family, "per step: TACA Advanced, linear ramp 1000→0 / TACA", summarize(r, "ramp", "taca")))
        if "gguf" in opts.comparisons:
            print(f"[{family}] per step: a GGUF Q8_0 model, TACA on (every step in window) vs off", flush=True)
            quantized = load_gguf(model, family, folder)
            r = compare({"off": model, "gguf_off": quantized, "gguf_taca": taca(quantized, 0.0)}, spec, steps=4,
                        rounds=rounds)
            rows.append((family, "per step, GGUF Q8_0: TACA on (every step in window) / off", summarize(r, "gguf_taca", "gguf_off")))
            rows.append((family, "per step: GGUF Q8_0 off / unquantized off", summarize(r, "gguf_off", "off")))
            del quantized
        del model
        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()

    device = str(comfy.model_management.get_torch_device())
    result = {
        "device": device, "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rounds": rounds, "real": opts.real,
        "comparisons": opts.comparisons, "blocks": opts.blocks, "size": opts.size or (REAL if opts.real else NARROW)["flux"]["size"],
        "attention": comfy.ldm.modules.attention.optimized_attention.__name__,
        "rows": [{"model": m, "case": c, **s} for m, c, s in rows],
        "memory": memory,
        "overhead": [{"model": m, "case": c, **d} for m, c, d in overheads],
    }
    suffix = ("-real" if opts.real else "") + (f"-{opts.attention}" if ATTENTION_FLAGS[opts.attention] else "")
    if opts.comparisons != list(DEFAULT_COMPARISONS):
        suffix += "".join(f"-{c}" for c in COMPARISONS if c in opts.comparisons)
    suffix += (f"-{opts.threads}-threads" if opts.threads else "") + ("-quick" if opts.quick else "")
    out = ROOT / "benchmarks" / "results" / f"model_step-{device.split(':')[0]}{suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    mb = 2**20
    lines = [f"Device {device} ({result['device_name']}), torch {torch.__version__}, {result['dtype']}, "
             f"{result['threads']} threads, attention {result['attention']}, {'real' if opts.real else 'narrowed'} models"
             f"{f' (first {opts.blocks} blocks)' if opts.blocks else ''}, {result['size']}².", ""]
    if result["rows"]:
        lines += ["Ratio: median over interleaved rounds of variant time / baseline time in the same round, with a "
                  "95 % interval for that median; also the same median of process CPU times, and fastest / fastest.", "",
                  "| model | comparison | s/step | baseline s/step | ratio | 95 % interval | CPU-time ratio | (of minima) "
                  "| rounds |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['model']} | {r['case']} | {r['seconds_per_step']:.4f} | {r['baseline_seconds_per_step']:.4f} | "
                  f"{r['ratio']:.3f} | {r['ratio_low']:.3f}–{r['ratio_high']:.3f} | {r['ratio_cpu_time']:.3f} | "
                  f"{r['ratio_min']:.3f} | {r['runs']} |" for r in result["rows"]]
        lines.append("")
    if memory:
        lines += ["Peak memory allocated during a one-step sampling run (above what was allocated before it):", "",
                  "| model | TACA off | TACA on | difference |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {m['model']} | {m['peak_off_bytes'] / mb:.1f} MB | {m['peak_taca_bytes'] / mb:.1f} MB | "
              f"{(m['peak_taca_bytes'] - m['peak_off_bytes']) / mb:+.1f} MB |" for m in memory]
    if overheads:
        lines += ["", "Own cost outside the window, on the same blocks at the least width (one head, one image and "
                  "one text token), where a step is almost all bookkeeping: median over interleaved rounds of the "
                  "per-step time difference to the baseline of the same round, with its 95 % interval.", "",
                  "| model | comparison | baseline ms/step | extra µs per step | 95 % interval | rounds |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {d['model']} | {d['case']} | {1e3 * d['baseline_seconds_per_step']:.2f} | "
                  f"{1e6 * d['difference']:+.1f} | {1e6 * d['difference_low']:+.1f} to {1e6 * d['difference_high']:+.1f} | "
                  f"{d['runs']} |" for d in result["overhead"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(OPTIONS)
