"""LoRA files for the tests, written at test time, and the two ways of loading them.

    official_lora(model, targets)   the official TACA format: diffusers/PEFT keys
                                    `transformer.<module>.lora_A/lora_B.weight`, no alpha tensors,
                                    on the target modules of the diffusers training scripts
    generic_lora(model)             `diffusion_model.<module>.lora_A/lora_B.weight` on every Linear
                                    layer ComfyUI's key map knows, for any family (the key map
                                    also names other weights, MoE gates for one, which a LoRA
                                    beside a layer cannot reach)
    lora_loader(model, name, ...)   the pack's TACALoraLoader, as ComfyUI registered it
    merged_lora(model, name, ...)   ComfyUI's own LoraLoaderModelOnly: the reference
"""

import comfy.lora
import comfy.utils
import nodes
import torch

# Target modules of diffusers' train_dreambooth_lora_flux.py and train_dreambooth_lora_sd3.py.
FLUX_TARGETS = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
)
SD3_TARGETS = FLUX_TARGETS[:8]
STRENGTH = 0.8


def _lora(model, select, rank, seed, scale, prefix=None) -> dict:
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    weights = dict(model.model.named_parameters())  # not state_dict(): a GGUF model's is a stand-in of other shapes
    generator = torch.Generator().manual_seed(seed)
    lora = {}
    for name, target in sorted(key_map.items()):
        weight_key, offset = (target[0], target[1]) if isinstance(target, tuple) else (target, None)
        if not select(name) or not weight_key.endswith(".weight") or weight_key not in weights:
            continue
        if not isinstance(comfy.utils.get_attr(model.model, weight_key[:-len(".weight")]), torch.nn.Linear):
            continue
        weight = weights[weight_key]
        stem = name if prefix is None else prefix + name.split(".", 1)[1]
        lora[f"{stem}.lora_A.weight"] = torch.randn(rank, weight.shape[1], generator=generator) * scale
        lora[f"{stem}.lora_B.weight"] = torch.randn(offset[2] if offset else weight.shape[0], rank, generator=generator) * scale
    assert lora, "no LoRA target found in ComfyUI's key map"
    return lora


def official_lora(model, targets, rank=4, seed=0, prefix="transformer.") -> dict:
    """A LoRA in the official TACA format for `model`, on the training scripts' targets."""
    return _lora(model, lambda name: name.startswith("transformer.") and name.endswith(targets), rank, seed, 0.2, prefix)


def generic_lora(model, rank=4, seed=0) -> dict:
    """A LoRA on every Linear layer that ComfyUI's key map names `diffusion_model.<module>`, each once
    (not the diffusers names some maps give the same prefix, which land on slices of fused layers)."""
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    return _lora(model, lambda name: name.startswith("diffusion_model.") and isinstance(key_map[name], str), rank, seed, 0.05)


def lora_loader(model, lora_name, strength=STRENGTH, active="with TACA"):
    node = nodes.NODE_CLASS_MAPPINGS["TACALoraLoader"]
    return node.execute(model=model, lora_name=lora_name, strength=strength, active=active).result[0]


def merged_lora(model, lora_name, strength=STRENGTH):
    return nodes.LoraLoaderModelOnly().load_lora_model_only(model, lora_name, strength)[0]
