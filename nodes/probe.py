"""The attention-balance probe: the image→text attention mass of every joint call, recorded.

The paper's case rests on one quantity: the share of attention the image queries give the
text keys. The probe records it for every joint attention call of every forward of a
sampling run (taca.attention.text_attention_mass, exact, no L×L logits): the mass with the
logits the model used, and, where TACA's temperature was on, the mass without it. A run's
record is kept with the latent it produced, so the plot shows the run that made the latent
it is given. The run also keeps the sampler's steps: a step with no joint call recorded was
skipped (a step cache, EasyCache or LazyCache, reused an earlier output), not a step of zeros.
"""

import functools
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import List, Optional

import torch

import comfy.patcher_extension

from .patch import COND, attach, paper_timesteps, taca_settings

KEPT_RUNS = 16


@dataclass
class BalanceRun:
    """One sampling run: each joint call's mass, per forward, for the guidance branches."""

    family: str
    settings: str  # TACA's settings in words, or "" without TACA
    blocks: int
    kinds: tuple  # (kind, count) of the joint blocks in call order
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
            self.calls.append((timesteps[i], block, branch, u, p, active))


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
        self.current = BalanceRun(family.name, settings.description if settings else "", sum(n for _, n in kinds), kinds)

    def finish(self, output: torch.Tensor, guider=None, sigmas: Optional[torch.Tensor] = None):
        if self.current is not None:
            self.current.output = output.detach().to("cpu", copy=True)
            if guider is not None and sigmas is not None and len(sigmas) > 1:
                model_sampling = guider.model_patcher.get_model_object("model_sampling")
                settings = taca_settings(guider.model_options.get("transformer_options", {}))
                timesteps = paper_timesteps(model_sampling, sigmas[:-1].detach().cpu())
                self.current.schedule = [(t, settings is not None and settings.gamma_for([t], [COND]) != 1)
                                         for t in timesteps]
            self.runs.append(self.current)
        self.current = None

    def run_for(self, samples: torch.Tensor) -> Optional[BalanceRun]:
        """The newest recorded run that produced `samples`."""
        samples = samples.detach().cpu()
        for run in reversed(self.runs):
            if run.output.shape == samples.shape and torch.equal(run.output, samples.to(run.output.dtype)):
                return run
        return None


def apply_probe(model):
    """A clone of `model` whose sampling runs are recorded, and the probe holding the records."""
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
