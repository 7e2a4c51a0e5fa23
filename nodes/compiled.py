"""What a model's torch.compile nodes compile, and which node pack set them up.

ComfyUI's TorchCompileModel and other packs' compile nodes (KJNodes' among them) compile
modules of the model when the node runs and swap them in for each forward with an
APPLY_MODEL wrapper under ComfyUI's key "torch.compile" (comfy_api.torch_helpers). Which
modules that is can be seen only while those wrappers run; compiled_modules runs them around
a function that looks, outside sampling, without computing anything.
"""

import sys
from pathlib import Path

import comfy.patcher_extension
import torch

COMPILE_KEY = "torch.compile"  # comfy_api.torch_helpers.COMPILE_KEY, which other packs' compile wrappers use too


def compile_wrappers(patcher) -> list:
    return patcher.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, COMPILE_KEY)


def compiled_modules(patcher) -> list:
    """Paths ('diffusion_model', 'diffusion_model.double_blocks.0', ...) of the modules that the
    model's compile wrappers swap in for a forward: empty without such a wrapper."""
    wrappers = compile_wrappers(patcher)
    if not wrappers:
        return []
    base = patcher.model
    found = []

    def look(*args, **kwargs):
        dm = base.diffusion_model
        found.extend(("diffusion_model" + ("." + name if name else "")) for name, module in dm.named_modules()
                     if isinstance(module, torch._dynamo.eval_frame.OptimizedModule) and "._orig_mod" not in name)

    comfy.patcher_extension.WrapperExecutor.new_class_executor(look, base, wrappers).execute()
    return found


def compile_node(patcher) -> str:
    """Who set up the model's torch.compile, for messages: ComfyUI's TorchCompileModel, or the
    node pack (its folder) whose wrapper it is."""
    names = []
    for wrapper in compile_wrappers(patcher):
        module = getattr(wrapper, "__module__", "") or ""
        if module.split(".")[0] in ("comfy", "comfy_api", "comfy_extras"):  # not a pack named comfyui_…
            names.append("ComfyUI's TorchCompileModel")
            continue
        file = getattr(sys.modules.get(module), "__file__", None)
        pack = next((p.name for p in Path(file).parents if p.parent.name == "custom_nodes"), None) if file else None
        pack = pack or Path(module.split(".")[0]).name
        names.append(f"the torch.compile node of {pack} ({getattr(wrapper, '__qualname__', 'its wrapper')})")
    return " and ".join(dict.fromkeys(names)) or "TorchCompileModel"
