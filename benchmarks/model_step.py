"""Model-step benchmark: TACA and the TACA LoRA inside a real ComfyUI sampling run.

Times ComfyUI's own sampler (comfy.sample.sample, euler, CFG 3 so cond and uncond run
as one batch) on random-weight models with the real FLUX.1 and SD3.5-Medium classes,
narrowed so a step takes a fraction of a second on a CPU but with real head sizes and real
token counts:

    flux    FLUX.1 blocks, 6 heads of 128, 1 double + 1 single block, 256² (256 image
            tokens) and 256 text tokens
    sd3.5m  SD3.5-Medium (MMDiT-X) blocks, 4 heads of 64, 4 joint blocks, 256² and 154
            text tokens

Each comparison runs its variants interleaved, several times, and reports medians and
the ratio to the baseline of the same run:

    per step, window on every step     TACA (threshold 0) against no TACA
    per step, LoRA                     TACA + TACALoraLoader inside its window (threshold 0)
                                       and outside it (threshold above every step)
                                       against TACA alone
    30 steps, default window           TACA (γ₀ 1.2, threshold 970) against no TACA

Needs a ComfyUI: COMFYUI_PATH=/path/to/ComfyUI python benchmarks/model_step.py [--quick]
Results go to benchmarks/results/model_step-<device>[-quick].{json,md}.
"""

import argparse
import asyncio
import json
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

from comfy.cli_args import args  # noqa: E402

if not torch.cuda.is_available():
    args.cpu = True
import utils.extra_config  # noqa: E402,F401  before ComfyUI's nodes.py
import comfy.lora  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.supported_models  # noqa: E402
import folder_paths  # noqa: E402
import nodes  # noqa: E402
import safetensors.torch  # noqa: E402

from tiny_models import randomize_weights  # noqa: E402

TEXT_WIDTH = 4096
LATENT = (32, 32)  # 256² images: 256 image tokens
MODELS = {
    "flux": dict(
        config=comfy.supported_models.Flux,
        unet={
            "image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16, "patch_size": 2,
            "vec_in_dim": 768, "context_in_dim": TEXT_WIDTH, "hidden_size": 768, "num_heads": 6, "mlp_ratio": 4.0,
            "depth": 1, "depth_single_blocks": 1, "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True,
        },
        n_text=256, pooled=768, extra={"guidance": 3.5},
        lora_targets=("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                      "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                      "ff_context.net.2"),
    ),
    "sd3.5m": dict(
        config=comfy.supported_models.SD3,
        unet={
            "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 4, "adm_in_channels": 2048,
            "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": TEXT_WIDTH, "out_features": 256}},
            "pos_embed_max_size": 32, "num_patches": 32 * 32, "pos_embed_scaling_factor": None, "qk_norm": "rms",
            "x_block_self_attn_layers": list(range(4)),
        },
        n_text=154, pooled=2048, extra={},
        lora_targets=("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                      "attn.add_v_proj", "attn.to_add_out"),
    ),
}


def build(spec, seed=0):
    config = spec["config"](spec["unet"])
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    randomize_weights(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, comfy.model_management.get_torch_device(),
                                            comfy.model_management.unet_offload_device())


def conditioning(spec, seed):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, spec["n_text"], TEXT_WIDTH, generator=g),
             {"pooled_output": torch.randn(1, spec["pooled"], generator=g), **spec["extra"]}]]


def write_lora(model, spec, folder: Path, rank=64) -> str:
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
    path = folder / "taca_bench.safetensors"
    safetensors.torch.save_file(lora, str(path))
    return path.name


def timed_run(model, spec, steps):
    latent = torch.zeros(1, 16, *LATENT)
    noise = comfy.sample.prepare_noise(latent, 0)
    start = time.perf_counter()
    comfy.sample.sample(model, noise, steps, 3.0, "euler", "simple", conditioning(spec, 1), conditioning(spec, 2),
                        latent, disable_pbar=True, seed=0)
    return time.perf_counter() - start


def compare(variants: dict, spec, steps, repeats):
    """Seconds per step of each variant (median), and its ratio to the first variant:
    the median over rounds of the two times taken in the same round, variants interleaved."""
    for model in variants.values():
        timed_run(model, spec, 1)  # warm up: load, allocate
    times = {name: [] for name in variants}
    for round_ in range(repeats):
        order = list(variants)[round_ % len(variants):] + list(variants)[:round_ % len(variants)]
        for name in order:
            times[name].append(timed_run(variants[name], spec, steps) / steps)
    return times


def ratio(times, name, baseline):
    return statistics.median(t / b for t, b in zip(times[name], times[baseline]))


def window_steps(model, steps, threshold):
    sigmas = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler="euler", scheduler="simple").sigmas
    return int((1000 * sigmas[:-1] >= threshold).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    opts = parser.parse_args()
    repeats = 3 if opts.quick else 11

    asyncio.run(nodes.load_custom_node(str(ROOT)))
    taca_node, lora_node = nodes.NODE_CLASS_MAPPINGS["TACA"], nodes.NODE_CLASS_MAPPINGS["TACALoraLoader"]

    def taca(model, threshold):
        return taca_node.execute(model=model, gamma=1.2, threshold=threshold).result[0]

    def lora(model, name):
        return lora_node.execute(model=model, lora_name=name, strength=1.0, active="with TACA").result[0]

    folder = Path(folder_paths.get_temp_directory()) / "taca-bench-loras"
    folder.mkdir(parents=True, exist_ok=True)
    folder_paths.folder_names_and_paths["loras"] = ([str(folder)], {".safetensors"})

    rows = []
    for family, spec in MODELS.items():
        model = build(spec)
        name = write_lora(model, spec, folder)
        print(f"[{family}] per step, TACA on every step vs off", flush=True)
        r = compare({"off": model, "taca": taca(model, 0.0)}, spec, steps=4, repeats=repeats)
        rows.append((family, "per step: TACA on (every step in window) / off", r, "taca", "off"))
        print(f"[{family}] per step, LoRA inside / outside its window vs TACA alone", flush=True)
        r = compare({"taca": taca(model, 0.0), "lora_in": lora(taca(model, 0.0), name),
                     "taca_out": taca(model, 1001.0), "lora_out": lora(taca(model, 1001.0), name)},
                    spec, steps=4, repeats=repeats)
        rows.append((family, "per step: + LoRA inside its window / TACA alone", r, "lora_in", "taca"))
        rows.append((family, "per step: + LoRA outside its window / TACA alone", r, "lora_out", "taca_out"))
        print(f"[{family}] 30 steps, default window vs off", flush=True)
        in_window = window_steps(model, 30, 970.0)
        r = compare({"off": model, "taca": taca(model, 970.0)}, spec, steps=30, repeats=repeats)
        rows.append((family, f"30 steps: TACA default window ({in_window} of 30 steps) / off", r, "taca", "off"))
        comfy.model_management.unload_all_models()

    device = str(comfy.model_management.get_torch_device())
    result = {
        "device": device, "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "repeats": repeats, "latent": LATENT,
        "rows": [{"model": m, "case": c, "seconds_per_step": statistics.median(r[v]),
                  "baseline_seconds_per_step": statistics.median(r[b]), "ratio": ratio(r, v, b),
                  "ratio_min": min(r[v]) / min(r[b]), "runs": len(r[v])}
                 for m, c, r, v, b in rows],
    }
    out = ROOT / "benchmarks" / "results" / f"model_step-{device.split(':')[0]}{'-quick' if opts.quick else ''}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [f"Device {device}, torch {torch.__version__}, {result['threads']} threads. Ratio: median over interleaved "
             f"rounds of variant time / baseline time in the same round; (of minima): fastest / fastest.", "",
             "| model | comparison | s/step | baseline s/step | ratio | (of minima) | rounds |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['model']} | {r['case']} | {r['seconds_per_step']:.4f} | {r['baseline_seconds_per_step']:.4f} | "
              f"{r['ratio']:.3f} | {r['ratio_min']:.3f} | {r['runs']} |" for r in result["rows"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
