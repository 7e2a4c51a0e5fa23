"""The TACA LoRA: file → forward-time low-rank adds, switched on per forward.

Keys, fused-qkv row slices and alpha scales are resolved by ComfyUI's own LoRA key map
and loader (comfy.lora), exactly as LoraLoader resolves them. The adds run beside the
layer (taca.lowrank), so the base weights are never modified: lowvram partial loading and
fp8 weights work unchanged, and outside the window the layer's output is untouched.
"""

import functools
import json
import logging
import os
import uuid
from dataclasses import dataclass

import comfy.lora
import comfy.lora_convert
import comfy.patcher_extension
import comfy.utils
import comfy.weight_adapter
import torch

from ..taca.lowrank import LowRankAdd, LowRankAdds
from .forward_patch import ForwardPatch, add_forward_patch
from .architectures import describe
from .patch import is_identity, taca_settings, window_gamma

NODE = "TACA LoRA Loader"  # its display name, which errors use

# Prefixes the diffusers/PEFT training scripts put before the transformer's module names.
PEFT_PREFIXES = ("transformer.", "base_model.model.")

# What a LoRA's key names say about the model it was trained for, for error messages.
KEY_HINTS = (
    ("single_transformer_blocks", "FLUX.1 (diffusers keys)"),
    ("single_blocks", "FLUX.1"),
    ("double_blocks", "FLUX.1"),
    ("joint_blocks", "SD3 / SD3.5"),
    ("transformer_blocks", "a diffusers-format transformer, as FLUX.1, SD3 / SD3.5 and others have"),
    ("lora_unet_down", "an SD1.5 / SDXL UNet (kohya keys)"),
    ("down_blocks", "an SD1.5 / SDXL UNet (diffusers keys)"),
    ("input_blocks", "an SD1.5 / SDXL UNet"),
    ("blocks.0.cross_attn", "Wan"),
)

LORA_SOURCE = "the TACA LoRAs: huggingface.co/ldiex/TACA"
DOWNLOAD_AGAIN = f"Download it again ({LORA_SOURCE}) and compare its size with the source's."
MAX_HEADER = 100_000_000  # safetensors' own limit on a header's size


def load_lora_file(path: str):
    """The LoRA's tensors and safetensors metadata, or an error that names the file.

    Checked here, before any sampling: the file is whole (a cut-off download is named as
    such) and every value is finite (one NaN would turn every image it touches black)."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{NODE}: LoRA file '{name}' was not found at {path}.")
    if path.lower().endswith((".safetensors", ".sft")):
        check_complete(path, name)
    try:
        sd, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    except Exception as e:
        raise ValueError(
            f"{NODE}: could not read LoRA file '{name}': it is corrupt, incomplete or not a "
            f"LoRA checkpoint ({type(e).__name__}: {e}). {DOWNLOAD_AGAIN}"
        ) from e
    check_finite(sd, name)
    return sd, metadata or {}


def check_complete(path: str, name: str) -> None:
    """A safetensors file holds 8 bytes of header size, the JSON header, then the tensors at the
    offsets the header lists: a file shorter than that was cut off (an unfinished download)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        header_size = int.from_bytes(head, "little") if len(head) == 8 else None
        if header_size is None or 8 + header_size > size:
            if header_size is not None and header_size > MAX_HEADER:
                return  # not a safetensors header at all: the loader says so
            raise ValueError(
                f"{NODE}: LoRA file '{name}' is cut off inside its header ({size:,} bytes in all): the download or "
                f"copy did not finish. {DOWNLOAD_AGAIN}"
            )
        try:
            header = json.loads(f.read(header_size))
            ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return  # a malformed header: the loader's own error says what is wrong
    expected = 8 + header_size + max(ends, default=0)
    if size < expected:
        raise ValueError(
            f"{NODE}: LoRA file '{name}' is cut off: it holds {size:,} bytes, its header lists {expected:,} "
            f"({len(ends)} tensors). The download or copy did not finish. {DOWNLOAD_AGAIN}"
        )


def check_finite(sd: dict, name: str) -> None:
    """Every floating-point value of the LoRA is finite, or an error naming the tensors that are not."""
    bad = {}
    for key, tensor in sd.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            continue
        values = tensor if tensor.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) else tensor.float()
        # min and max carry any NaN or infinity, in one pass without a temporary (isfinite(...).all()
        # took 7-13x as long, measured on a CPU with rank-64 factors in fp32, bf16 and fp16)
        if values.numel() and not all(torch.isfinite(x) for x in torch.aminmax(values.reshape(-1))):
            bad[key] = (int(torch.isnan(values).sum()), int(torch.isinf(values).sum()))
    if bad:
        key, (nan, inf) = sorted(bad.items())[0]
        raise ValueError(
            f"{NODE}: LoRA file '{name}' holds values that are not numbers: {len(bad)} of its {len(sd)} tensors contain "
            f"NaN or infinity (for example '{key}': {nan} NaN, {inf} infinite). Sampling with it would give a black "
            f"or noise image. The file is damaged, or it was saved from a training run that diverged: download it "
            f"again ({LORA_SOURCE}), or use another checkpoint of the LoRA."
        )


def module_of(key: str) -> str:
    """The module a LoRA tensor belongs to: 'a.b.lora_A.weight' → 'a.b', 'a.b.alpha' → 'a.b'."""
    return key.split(".lora", 1)[0] if ".lora" in key else key.rsplit(".", 1)[0]


def with_mapped_prefix(sd: dict, key_map: dict) -> dict:
    """Give bare PEFT keys ('transformer_blocks.0…') and 'base_model.model.' keys the
    'transformer.' prefix ComfyUI's key map knows, where that is what makes them map."""
    out = {}
    for key, tensor in sd.items():
        stem = key
        for prefix in PEFT_PREFIXES:
            stem = stem[len(prefix):] if stem.startswith(prefix) else stem
        candidates = (key, "transformer." + stem)
        out[next((c for c in candidates if module_of(c) in key_map), key)] = tensor
    return out


def metadata_alpha(metadata: dict):
    """lora_alpha from a diffusers/PEFT safetensors header, if it has one."""
    fields = dict(metadata)
    packed = metadata.get("lora_adapter_metadata")
    if packed:
        try:
            fields.update(json.loads(packed))
        except ValueError:
            pass
    for key in ("transformer.lora_alpha", "lora_alpha"):
        if key in fields:
            return float(fields[key])
    return None


def describe_target(sd: dict) -> str:
    """What a LoRA seems to be for, from its key names and input width."""
    keys = sorted(sd)
    family = next((label for hint, label in KEY_HINTS if any(hint in k for k in keys)), "an unknown model")
    downs = [t for k, t in sd.items() if k.endswith(("lora_A.weight", "lora_down.weight")) and t.ndim == 2]
    width = f", layer width {downs[0].shape[1]}" if downs else ""
    return f"{family}{width} (keys like '{keys[0]}')" if keys else "nothing (the file holds no tensors)"


def lowrank_adds(model, sd: dict, metadata: dict, strength: float, name: str) -> dict:
    """module path → LowRankAdds for a ModelPatcher, resolved through comfy.lora."""
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    sd = with_mapped_prefix(comfy.lora_convert.convert_lora(sd), key_map)
    alpha = metadata_alpha(metadata)
    modules = {module_of(k) for k in sd}
    mapped = {m for m in modules if m in key_map}
    if not mapped:
        raise ValueError(
            f"{NODE}: '{name}' has no layer that maps onto the model connected, {describe(model)}. Its keys are those of "
            f"{describe_target(sd)}. The TACA LoRAs come "
            f"per base model: use the FLUX.1-dev file with FLUX.1-dev and the SD3.5-Medium file with SD3.5-Medium."
        )
    if len(mapped) < len(modules):
        logging.warning(
            f"{NODE}: '{name}': {len(mapped)} of {len(modules)} LoRA layers map onto this model; "
            f"{len(modules) - len(mapped)} do not and are ignored (for example '{sorted(modules - mapped)[0]}')."
        )
    if alpha is not None:
        sd = {**sd, **{f"{m}.alpha": torch.tensor(alpha) for m in mapped if f"{m}.alpha" not in sd}}

    per_module, misfits = {}, {}
    for target, patch in comfy.lora.load_lora(sd, key_map, log_missing=False).items():
        # A target is a weight key, or (key, offset, function) as in ModelPatcher.add_patches: offset
        # (dim, start, size) is a row slice of a fused layer; function reorders the rows of the delta.
        key, offset, function = (target + (None, None))[:3] if isinstance(target, tuple) else (target, None, None)
        dim, row_start = offset[:2] if offset is not None else (0, 0)
        if not isinstance(patch, comfy.weight_adapter.LoRAAdapter) or any(w is not None for w in patch.weights[3:]) or dim != 0:
            is_lora = isinstance(patch, comfy.weight_adapter.LoRAAdapter)
            kind = "DoRA / conv LoRA" if is_lora else getattr(patch, "name", None) or patch[0]
            raise ValueError(
                f"{NODE}: '{name}' holds a '{kind}' patch for {key}; this loader applies plain "
                f"low-rank LoRA layers only (the format of the TACA LoRAs). Load this file with ComfyUI's LoraLoader."
            )
        module = comfy.utils.get_attr(model.model, key.rsplit(".", 1)[0])
        if not key.endswith(".weight") or not isinstance(module, torch.nn.Linear):
            raise ValueError(
                f"{NODE}: '{name}' has a LoRA for {key}, which is not the weight of a Linear layer "
                f"({type(module).__name__}); this loader adds LoRA beside Linear layers, as the TACA LoRAs are. "
                f"Load this file with ComfyUI's LoraLoader."
            )
        up, down, file_alpha = patch.weights[:3]
        up, down = up.flatten(1), down.flatten(1)
        weight = comfy.utils.get_attr(model.model, key)
        rows = offset[2] if offset is not None else weight.shape[0]  # the layer's rows, or its slice's
        misfit = shape_misfit(weight, down, up, row_start, rows)
        if misfit:
            misfits.setdefault(key[:-len(".weight")], misfit)
            continue
        if function is not None:
            up = function(up)  # a row permutation of B·A (swap_scale_shift) is the same one of B
        scale = strength * (file_alpha / down.shape[0] if file_alpha is not None else 1.0)
        per_module.setdefault(key[:-len(".weight")], []).append(LowRankAdd(down, up, scale, row_start))
    if misfits:
        path, misfit = next(iter(misfits.items()))
        raise ValueError(
            f"{NODE}: '{name}' does not fit the model connected, {describe(model)}: {len(misfits)} of its "
            f"{len(misfits) + len(per_module.keys() - misfits.keys())} layers {'has' if len(misfits) == 1 else 'have'} other sizes (for example {path}: "
            f"{misfit}). Its keys are those of {describe_target(sd)}. A LoRA fits only the model it was trained "
            f"for: use the one trained for the model connected ({LORA_SOURCE}, one per base model), or check that "
            f"the file is not damaged."
        )
    return {path: LowRankAdds(adds) for path, adds in per_module.items()}


def shape_misfit(weight: torch.Tensor, down: torch.Tensor, up: torch.Tensor, row_start: int, rows: int):
    """Why LoRA factors A (rank × in) and B (rows × rank) do not fit a Linear weight (out × in)
    at output rows row_start…row_start + rows, or None where they fit."""
    if down.shape[1] != weight.shape[1]:
        return f"the LoRA's input width is {down.shape[1]}, the model's layer is {tuple(weight.shape)}"
    if up.shape[1] != down.shape[0]:
        return f"its lora_A has rank {down.shape[0]} and its lora_B rank {up.shape[1]}"
    if up.shape[0] != rows or row_start + rows > weight.shape[0]:
        where = f"rows {row_start}–{row_start + rows - 1} of " if rows != weight.shape[0] else ""
        return f"the LoRA's output width is {up.shape[0]}, the model's layer gives {rows} ({where}{tuple(weight.shape)})"
    return None


@dataclass
class LoRAWindow:
    """Whether the LoRA is on: on every use of its layers (as a merged LoRA is, also where a
    model runs some of them outside its forward passes, as MiniMax H3's text refiner does), or
    in the forward passes where TACA's temperature is on."""

    every_step: bool
    active: bool = False


class LowRankForward(ForwardPatch):
    """A Linear layer's forward plus the LoRA's low-rank adds while the window is active."""

    def __init__(self, module, forward, adds: LowRankAdds, window: LoRAWindow):
        super().__init__(module, forward)
        self.adds, self.window = adds, window

    def __call__(self, x, *args, **kwargs):
        y = self.forward(x, *args, **kwargs)
        return self.adds.add_to(y, x) if self.window.every_step or self.window.active else y


def switch_window(window: LoRAWindow, executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
    """APPLY_MODEL wrapper: turn the LoRA on for this forward if its window covers σ = t.

    'with TACA' follows the TACA node's temperature; without a TACA node (bypassed, say)
    the temperature is never on, so neither is the LoRA.
    """
    window.active = not window.every_step and not is_identity(window_gamma(executor.class_obj, transformer_options, t))
    try:
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    finally:
        window.active = False


def warn_without_taca(window: LoRAWindow, patcher) -> None:
    """ON_PRE_RUN: once per sampling run, say that a 'with TACA' LoRA will stay off."""
    if not window.every_step and taca_settings(patcher.model_options.get("transformer_options", {})) is None:
        logging.warning(
            f"{NODE}: 'active' is 'with TACA' but this model has no TACA node (bypassed or not "
            "connected), so the LoRA stays off for this run, as TACA's temperature does. Add a TACA node "
            "to the model to use it, or set 'active' to 'every step'."
        )


def apply_taca_lora(model, path: str, strength: float, every_step: bool):
    """A clone of `model` with the LoRA attached at forward time. The input is not modified."""
    name = os.path.basename(path)
    sd, metadata = load_lora_file(path)
    adds = lowrank_adds(model, sd, metadata, strength, name)
    patched = model.clone()
    window = LoRAWindow(every_step)
    for module_path, module_adds in adds.items():
        add_forward_patch(patched, module_path, functools.partial(LowRankForward, adds=module_adds, window=window))

    key = f"taca_lora_{uuid.uuid4().hex}"
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, key, functools.partial(switch_window, window))
    patched.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_PRE_RUN, key, functools.partial(warn_without_taca, window))

    def release(patcher, unpatch_all=True):
        for module_adds in adds.values():
            module_adds.release()

    patched.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_DETACH, key, release)
    return patched
