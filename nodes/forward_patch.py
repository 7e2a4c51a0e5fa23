"""Object patches on a module's `forward` that follow the model when ComfyUI rebuilds it.

A patch on `<module>.forward` (ModelPatcher.add_object_patch) calls the module's own
forward, which it holds bound to that module. Some clones carry the object patches onto a
freshly built model: `clone(disable_dynamic=True)` (TorchCompileModel on ComfyUI 0.33 with
dynamic VRAM) and the multi-GPU deep clones. An ON_CLONE callback gives such a clone
patches bound to its own modules, so they never run the old model's weights. An ON_DETACH
callback undoes the reference cycle ComfyUI's restore of a patched forward would leave.
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
    for call, callback in ((comfy.patcher_extension.CallbacksMP.ON_CLONE, rebind_forward_patches),
                           (comfy.patcher_extension.CallbacksMP.ON_DETACH, drop_restored_forwards)):
        if CALLBACK_KEY not in patcher.callbacks.get(call, {}):
            patcher.add_callback_with_key(call, CALLBACK_KEY, callback)


def rebind_forward_patches(original, clone) -> None:
    """ON_CLONE: where the clone holds another model, bind the pack's forward patches to it."""
    if clone.model is original.model:
        return
    for key, patch in list(clone.object_patches.items()):
        if isinstance(patch, ForwardPatch):
            clone.object_patches[key] = patch.rebound(comfy.utils.get_attr(clone.model, key[:-len(".forward")]))


def is_own_forward(forward, module) -> bool:
    """Whether `forward` is the module's class forward bound to it (also as ComfyUI's
    unpatching puts it back)."""
    return getattr(forward, "__func__", None) is type(module).forward and getattr(forward, "__self__", None) is module


def drop_restored_forwards(patcher, unpatch_all=True) -> None:
    """ON_DETACH: ComfyUI restores an object-patched `forward` by setting the module's own bound
    method on the instance. That method refers back to the module: a reference cycle that keeps
    the model's weights alive until Python's next garbage collection, after the model is unloaded.
    Where that is what was restored, remove it; the class's forward is the same method."""
    for key, patch in patcher.object_patches.items():
        if not isinstance(patch, ForwardPatch):
            continue
        module = comfy.utils.get_attr(patcher.model, key[:-len(".forward")])
        if is_own_forward(vars(module).get("forward"), module):
            del vars(module)["forward"]
