"""What other nodes put on a model that TACA meets, and how TACA runs with it.

- An attention override set by a node after TACA. A node that chains keeps the override it
  found (TACA's) and calls it: that stays as it is. A node that replaces it (KJNodes' Sage and
  Flash attention patches, GGUF Loader KJ's attention_override) would leave TACA out: TACA's
  override goes around it instead (patch.TACAForward), calling it with StepHidden.
- A forward set on the diffusion model outside ComfyUI's model patching, for one sampling
  run (ComfyUI-NAG's samplers do this as they start). TACA's forward patch, set by ComfyUI when
  it loads the model, would displace it: TACA calls it for that run instead.

`state` is the TACAState shared by one TACA attachment's override, forward patch and wrapper.
"""

import functools

import torch

from .forward_patch import ForwardPatch, is_own_forward

FORWARD = "diffusion_model.forward"


class StepHidden:
    """An override that a node after TACA set in place of TACA's, called with TACA's step
    hidden: where it calls TACA's own override in turn after all, that one hands the call on
    untouched, so TACA applies once, around both."""

    def __init__(self, override, state):
        self.override, self.state = override, state

    def __call__(self, func, *args, **kwargs):
        step, self.state.step = self.state.step, None
        try:
            return self.override(func, *args, **kwargs)
        finally:
            self.state.step = step


def reaches(override, state, depth: int = 4, seen=None) -> bool:
    """Whether an override holds TACA's override of `state` (an object whose `state` is it),
    so that calling it calls TACA's: directly, in a closure, a functools.partial, a bound
    method or a callable object's attributes, a few levels deep (where chaining nodes keep
    the override they found)."""
    if getattr(override, "state", None) is state:
        return True
    seen = set() if seen is None else seen
    if depth == 0 or override is None or id(override) in seen or isinstance(override, (torch.Tensor, torch.nn.Module)):
        return False
    seen.add(id(override))
    held = []
    if isinstance(override, functools.partial):
        held += [override.func, *override.args, *override.keywords.values()]
    elif isinstance(override, (list, tuple)):
        held += list(override)
    elif isinstance(override, dict):
        held += list(override.values())
    elif callable(override):
        held += [getattr(override, "__self__", None), getattr(override, "__func__", None)]
        held += [cell.cell_contents for cell in getattr(override, "__closure__", None) or () if is_full(cell)]
        if not isinstance(override, type) and not hasattr(override, "__code__"):
            held += list(getattr(override, "__dict__", {}).values())
    return any(reaches(h, state, depth - 1, seen) for h in held)


def is_full(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def follow_a_replaced_forward(state, patcher) -> None:
    """ON_PRE_RUN: where TACA's forward patch displaced a forward that other code set on the
    diffusion model outside ComfyUI's model patching, TACA calls that one for this run.

    ComfyUI-NAG's sampler sets the diffusion model's forward as sampling starts, before ComfyUI
    loads the model and sets the object patches, TACA's among them, and puts back what it found
    when sampling ends. ComfyUI keeps what TACA's patch displaced, to put it back when it
    unpatches the model: that would carry this run's forward into later runs without it, so
    ComfyUI is left the model's own forward to put back instead."""
    displaced = patcher.object_patches_backup.get(FORWARD)
    module = patcher.model.diffusion_model
    foreign = displaced is not None and not isinstance(displaced, ForwardPatch) and not is_own_forward(displaced, module)
    state.replaced_forward = displaced if foreign else None
    if foreign:
        patcher.object_patches_backup[FORWARD] = type(module).forward.__get__(module)


def forget_a_replaced_forward(state, patcher) -> None:
    """ON_CLEANUP: the replaced forward belongs to the run that found it."""
    state.replaced_forward = None
