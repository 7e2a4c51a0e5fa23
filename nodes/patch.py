"""Attach TACA to a ModelPatcher clone: settings, a per-forward wrapper and an attention override.

Data flows one way: the node clones the model and stores TACASettings in its
transformer_options; an APPLY_MODEL wrapper turns them, once per forward, into a TACAStep
(γ for this σ and where the text sits); the attention override reads that step and calls
the pure core in taca.attention. Outside the window no step is recorded and the host's
attention runs untouched.
"""

import functools
import logging
from dataclasses import dataclass
from typing import Optional, Union

import torch

import comfy.patcher_extension

from ..taca.attention import taca_attention
from ..taca.schedule import gamma_at, timestep_from_sigma
from .architectures import Family, TextLayout, family_of

SETTINGS_KEY = "taca"
STEP_KEY = "taca_step"
WRAPPER_KEY = "taca"
OVERRIDE_KEY = "optimized_attention_override"


@dataclass(frozen=True)
class TACASettings:
    gamma: float
    threshold: float

    def gamma_for(self, sigma: torch.Tensor) -> Union[float, torch.Tensor]:
        """γ for each batch item's σ: a number when they agree (they do in ordinary sampling)."""
        gammas = [gamma_at(timestep_from_sigma(s), self.gamma, self.threshold) for s in sigma.flatten().tolist()]
        if all(g == gammas[0] for g in gammas):
            return gammas[0]
        return torch.tensor(gammas, device=sigma.device)


def taca_settings(transformer_options: dict) -> Optional[TACASettings]:
    """The TACA settings of a model, if a TACA node is on it (used by the LoRA window too)."""
    return transformer_options.get(SETTINGS_KEY)


def window_gamma(transformer_options: dict, sigma: torch.Tensor) -> Union[float, torch.Tensor]:
    settings = taca_settings(transformer_options)
    return 1.0 if settings is None else settings.gamma_for(sigma)


def is_identity(gamma) -> bool:
    return bool((gamma == 1).all()) if torch.is_tensor(gamma) else gamma == 1


@dataclass
class TACAStep:
    """What the override needs for one forward pass inside the window."""

    layout: TextLayout
    gamma: Union[float, torch.Tensor]
    joint_calls: int = 0


class TACAOverride:
    """transformer_options["optimized_attention_override"]: TACA around the host's attention.

    ComfyUI calls it as override(func, q, k, v, heads, **kwargs) with func the attention
    function it selected. An override installed before TACA (SageAttention patches and
    the like) is kept and called with TACA's arguments.
    """

    def __init__(self, previous=None):
        self.previous = previous

    def __call__(self, func, *args, **kwargs):
        attend = func if self.previous is None else functools.partial(self.previous, func)
        step = kwargs["transformer_options"].get(STEP_KEY)
        if step is None:
            return attend(*args, **kwargs)
        q, k, v = args[:3]
        token_dim = 2 if kwargs.get("skip_reshape", False) else 1
        # A joint call attends the whole sequence to itself. Shorter queries are rows TACA
        # already split off (an override between two TACA nodes hands them on), not text.
        if q.shape[token_dim] != k.shape[token_dim] or not step.layout.is_joint(q.shape[token_dim]):
            return attend(*args, **kwargs)
        step.joint_calls += 1

        def attend_rows(q_rows, k_, v_, mask):
            return attend(q_rows, k_, v_, *args[3:], **{**kwargs, "mask": mask})

        return taca_attention(
            attend_rows, q, k, v,
            n_text=step.layout.n_text,
            gamma=step.gamma,
            token_dim=token_dim,
            out_token_dim=2 if kwargs.get("skip_output_reshape", False) else 1,
            mask=kwargs.get("mask"),
        )


def record_step(family: Family, executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
    """APPLY_MODEL wrapper: decide γ for this σ and record where the text sits."""
    gamma = window_gamma(transformer_options, t)
    if is_identity(gamma) or c_crossattn is None:
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    step = TACAStep(family.layout(executor.class_obj.diffusion_model, x, c_crossattn), gamma)
    out = executor(x, t, c_concat, c_crossattn, control, {**transformer_options, STEP_KEY: step}, **kwargs)
    if step.joint_calls == 0:
        logging.warning(
            "TACA: no joint text-image attention call reached TACA in this step, so it had no effect. "
            "Another node may have replaced the model's attention or blocks; place TACA after it."
        )
    return out


def apply_taca(model, gamma: float, threshold: float):
    """A clone of `model` (a ModelPatcher) with TACA attached. The input is not modified.

    Applying it again replaces the earlier settings; an attention override set by
    another node is chained, not replaced.
    """
    family = family_of(model)
    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    options[SETTINGS_KEY] = TACASettings(float(gamma), float(threshold))
    previous = options.get(OVERRIDE_KEY)
    if not isinstance(previous, TACAOverride):
        options[OVERRIDE_KEY] = TACAOverride(previous)
    patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY)
    patched.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, functools.partial(record_step, family)
    )
    return patched
