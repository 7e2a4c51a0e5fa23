"""The attention-balance probe: the image→text attention mass of every joint call, recorded.

The paper's case rests on one quantity: the share of attention the image queries give the
text keys. The probe records it for every joint attention call of every forward of a
sampling run (taca.attention.text_attention_mass, exact, no L×L logits): the mass with the
logits the model used, and, where TACA's temperature was on, the mass without it. A run's
record is kept with the latent it produced, so the plot shows the run that made the latent
it is given.

A run also keeps what sampled it: TACA's settings, whether the TACA LoRA was in the chain and
whether a second probe placed after this one took the recording over, so the plot can say
what it compares; and the sampler's steps, so that a step with no joint call recorded shows
as skipped (a step cache, EasyCache or LazyCache, reused an earlier output), not as a step
of zeros.
"""

import functools
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import List, Optional

import torch

import comfy.patcher_extension

from .architectures import family_of
from .forward_patch import ForwardPatch
from .lora import LowRankForward
from .lora_node import EVERY_STEP, WITH_TACA
from .patch import COND, TACAForward, TACASettings, attach, paper_timesteps, taca_settings

NODE = "TACA Attention Balance Probe"  # its display name, which errors use
KEPT_RUNS = 16


@dataclass
class BalanceRun:
    """One sampling run: each joint call's mass, per forward, for the guidance branches."""

    family: str
    settings: Optional[TACASettings]  # the TACA node's, None without one
    blocks: int
    kinds: tuple  # (kind, count) of the joint blocks in call order
    lora: Optional[str] = None  # the TACA LoRA loader's 'active' ("with TACA", "every step"), None without one
    taken_over: bool = False  # a second probe after this one recorded the run instead
    # (t, block, branch, mass used, mass without TACA, TACA on): a row per batch item of a joint call
    calls: List[tuple] = field(default_factory=list)
    output: Optional[torch.Tensor] = None  # the sampled latent, on the CPU
    # (t, TACA on for the prompt's branch) of each step the sampler took, whether the model ran in it or not
    schedule: List[tuple] = field(default_factory=list)

    def record(self, timesteps: list, branches: list, block: int, used: torch.Tensor, plain: torch.Tensor, active: bool):
        used, plain = used.tolist(), plain.tolist()
        per_branch = max(1, len(used) // max(1, len(branches)))
        for i, (u, p) in enumerate(zip(used, plain)):
            branch = branches[i // per_branch] if branches else COND
            # The call's flag says γ differs from 1 for some batch item; under 'cond only' not for this one.
            on = active and self.settings is not None and self.settings.gamma_for([timesteps[i]], [branch]) != 1
            self.calls.append((timesteps[i], block, branch, u, p, on))


class BalanceProbe:
    """The probe's handle (the TACA_BALANCE output): the records of the runs it saw."""

    def __init__(self):
        self.runs = deque(maxlen=KEPT_RUNS)
        self.current: Optional[BalanceRun] = None

    def forward(self, base_model, transformer_options, sigma):
        """The recorder of one forward: record(block, mass used, mass without TACA)."""
        run = self.current
        if run is None:  # the model ran outside a sampling run (no pre-run): nothing to keep it with
            return None
        timesteps = paper_timesteps(base_model.model_sampling, sigma)
        return functools.partial(run.record, timesteps, list(transformer_options.get("cond_or_uncond") or []))

    def begin(self, family, dm, patcher):
        settings = taca_settings(patcher.model_options.get("transformer_options", {}))
        kinds = family.blocks(dm)
        forward = patcher.object_patches.get("diffusion_model.forward")
        taken_over = isinstance(forward, TACAForward) and forward.state.probe is not self
        self.current = BalanceRun(family.name, settings, sum(n for _, n in kinds), kinds, taca_lora(patcher), taken_over)

    def finish(self, output: torch.Tensor, guider=None, sigmas: Optional[torch.Tensor] = None):
        if self.current is not None:
            self.current.output = output.detach().to("cpu", copy=True)
            if guider is not None and sigmas is not None and len(sigmas) > 1:
                model_sampling = guider.model_patcher.get_model_object("model_sampling")
                settings = self.current.settings
                timesteps = paper_timesteps(model_sampling, sigmas[:-1].detach().cpu())
                self.current.schedule = [(t, settings is not None and settings.gamma_for([t], [COND]) != 1)
                                         for t in timesteps]
            self.runs.append(self.current)
        self.current = None

    def run_for(self, samples: torch.Tensor, other_than: Optional[BalanceRun] = None) -> Optional[BalanceRun]:
        """The newest recorded run that produced `samples`; one other than `other_than` where
        two runs produced the same latent (a baseline and a TACA run with γ₀ = 1, say)."""
        samples = samples.detach().cpu()
        found = [run for run in reversed(self.runs)
                 if run.output.shape == samples.shape and torch.equal(run.output, samples.to(run.output.dtype))]
        return next((run for run in found if run is not other_than), found[0] if found else None)


def taca_lora(patcher) -> Optional[str]:
    """The 'active' setting of the TACA LoRA on a model ("with TACA", "every step"), or None."""
    found = set()
    for patch in patcher.object_patches.values():
        while isinstance(patch, ForwardPatch):
            if isinstance(patch, LowRankForward):
                found.add(EVERY_STEP if patch.window.every_step else WITH_TACA)
            patch = patch.forward
    return " and ".join(sorted(found)) or None


def apply_probe(model):
    """A clone of `model` whose sampling runs are recorded, and the probe holding the records."""
    family_of(model, NODE)  # a model the probe cannot read is refused in the probe's name
    probe = BalanceProbe()
    patched, family = attach(model, probe)
    key = f"taca_probe_{uuid.uuid4().hex}"
    patched.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_PRE_RUN, key,
                                  lambda patcher: probe.begin(family, patcher.model.diffusion_model, patcher))

    def keep_output(executor, *args, **kwargs):  # CFGGuider.outer_sample(noise, latent_image, sampler, sigmas, ...)
        output = executor(*args, **kwargs)
        probe.finish(output, executor.class_obj, args[3] if len(args) > 3 else kwargs.get("sigmas"))
        return output

    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, key, keep_output)
    return patched, probe
