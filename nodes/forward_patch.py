"""Object patches on a module's `forward` that follow the model when ComfyUI rebuilds it.

A patch on `<module>.forward` (ModelPatcher.add_object_patch) calls the module's own
forward, which it holds bound to that module. Some clones carry the object patches onto a
freshly built model: `clone(disable_dynamic=True)` (TorchCompileModel on ComfyUI 0.33 with
dynamic VRAM) and the multi-GPU deep clones. An ON_CLONE callback gives such a clone
patches bound to its own modules, so they never run the old model's weights.
"""

import copy

import comfy.patcher_extension
import comfy.utils

CALLBACK_KEY = "taca_forward_patches"


class ForwardPatch:
    """Base of the pack's forward patches: `self.forward` is the module's forward (or the
    object patch that was there before), to be called around the patch's own work."""

    def __init__(self, module, forward=None):
        self.module = module
        self.forward = forward if forward is not None else type(module).forward.__get__(module)

    def rebound(self, module) -> "ForwardPatch":
        """This patch for another instance of the module."""
        patch = copy.copy(self)
        patch.module = module
        if isinstance(self.forward, ForwardPatch):
            patch.forward = self.forward.rebound(module)
        elif getattr(self.forward, "__self__", None) is self.module:  # the module's own bound forward
            patch.forward = self.forward.__func__.__get__(module)
        return patch


def add_forward_patch(patcher, module_path: str, make) -> None:
    """Put `make(module, forward)` (a ForwardPatch) on `<module_path>.forward` of a ModelPatcher,
    around the object patch already there, if any."""
    key = module_path + ".forward"
    module = comfy.utils.get_attr(patcher.model, module_path)
    patcher.add_object_patch(key, make(module, patcher.object_patches.get(key)))
    callbacks = patcher.callbacks.get(comfy.patcher_extension.CallbacksMP.ON_CLONE, {})
    if CALLBACK_KEY not in callbacks:
        patcher.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_CLONE, CALLBACK_KEY, rebind_forward_patches)


def rebind_forward_patches(original, clone) -> None:
    """ON_CLONE: where the clone holds another model, bind the pack's forward patches to it."""
    if clone.model is original.model:
        return
    for key, patch in list(clone.object_patches.items()):
        if isinstance(patch, ForwardPatch):
            clone.object_patches[key] = patch.rebound(comfy.utils.get_attr(clone.model, key[:-len(".forward")]))
