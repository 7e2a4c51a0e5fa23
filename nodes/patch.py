"""Attach TACA to a ModelPatcher clone: settings, a per-forward step and an attention override.

Data flows one way. The node clones the model and stores TACASettings in its
transformer_options. Once per forward, an APPLY_MODEL wrapper turns them into a TACAStep
(γ for this σ, and where the text sits) and puts it in the TACAState that the attention
override and a forward patch on the diffusion model share. The override reads the step and
calls the pure core in taca.attention. Outside the window the step is None and the host's
attention runs untouched. A probe (nodes/probe.py) rides the same step: the override also
measures each joint call's image→text attention mass.

Why the step lives in the state and not in transformer_options: torch.compile may drop every
guard on transformer_options (ComfyUI 0.33's TorchCompileModel does). An attention backend
that breaks the graph (sub-quadratic and split attention do) makes dynamo compile the override
on its own, as a frame of its own; what that frame read from transformer_options would then be
replayed unchecked in every later call: a step from inside the window, the keys of one block's
options. What it reads of the override's own attributes is guarded, so it recompiles or runs
eagerly instead. In a graph traced whole, the forward patch reads the same state first, through
the diffusion model, so the step is guarded there too. For the same reason the diffusion model
receives its transformer_options without TACA's settings (only the APPLY_MODEL wrappers read
them): a block compiled as a frame of its own replays the keys it saw, and a later model
without TACA would lack them (KeyError in the compiled block).

Which joint block is running, where TACA Advanced's blocks or the probe need it, comes from
the blocks themselves: a patch on each joint block's forward (the family's module lists)
puts its number on the step while it runs. Counting joint calls would go wrong in a forward
that skips blocks (skip-layer guidance's extra pass); the host's transformer_options
["block_index"] is not set by every family and host (not by MMDiT, nor by FLUX on 0.3.64),
and read in the override it would be replayed stale by a compiled frame (see above).
Counting remains only for a call no block patch announced.
"""

import functools
import logging
from dataclasses import dataclass
from typing import Callable, FrozenSet, Optional, Union

import torch

import comfy.ldm.modules.attention
import comfy.model_sampling
import comfy.patcher_extension

from ..taca.attention import taca_attention, text_attention_mass
from ..taca.schedule import timestep_from_sigma
from .architectures import Family, TextLayout, family_of
from .compiled import compile_node, compiled_modules
from .forward_patch import ForwardPatch, add_forward_patch, is_own_forward
from .foreign_patches import StepHidden, follow_a_replaced_forward, forget_a_replaced_forward, reaches

SETTINGS_KEY = "taca"
WRAPPER_KEY = "taca"
FORWARD_KEY = "taca_forward"  # the callbacks that follow a forward replaced outside ComfyUI's patching
COMPILE_KWARGS = "torch_compile_kwargs"  # where comfy_api.torch_helpers keeps TorchCompileModel's settings
# ComfyUI's attention functions that torch.compile traces without a graph break (measured:
# PyTorch SDPA; sub-quadratic and split attention break it; the GPU-only ones were not measured).
UNBROKEN_BY_COMPILE = ("pytorch",)
OVERRIDE_KEY = "optimized_attention_override"
COND, UNCOND = 0, 1  # transformer_options["cond_or_uncond"], as ComfyUI's sampler sets it


@dataclass(frozen=True)
class TACASettings:
    """What a TACA node asked for: γ(t), which joint blocks, which guidance branches."""

    schedule: Callable[[float], float]  # t on the 0–1000 scale → γ
    blocks: Optional[FrozenSet[int]] = None  # joint attention calls, in their order in a forward; None: all
    cond_only: bool = False
    description: str = ""  # for the attention-balance plot: "γ₀ 1.2, threshold 970"

    def gamma_for(self, timesteps: list, cond_or_uncond=None) -> Union[float, list]:
        """γ for each batch item's timestep: a number when they all agree (they do in ordinary sampling)."""
        gammas = [self.schedule(t) for t in timesteps]
        if self.cond_only:
            branches = cond_or_uncond or [COND]
            per_branch = len(gammas) // len(branches)
            gammas = [g if branches[i // per_branch] == COND else 1.0 for i, g in enumerate(gammas)]
        return gammas[0] if all(g == gammas[0] for g in gammas) else gammas


def paper_timesteps(model_sampling, sigma: torch.Tensor) -> list:
    """Each batch item's t on the paper's 0–1000 scale: 1000·σ (in double precision) for
    rectified flow, the DDPM timestep for the others."""
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        return [timestep_from_sigma(s) for s in sigma.flatten().tolist()]
    return model_sampling.timestep(sigma).flatten().tolist()


def taca_settings(transformer_options: dict) -> Optional[TACASettings]:
    """The TACA settings of a model, if a TACA node is on it (used by the LoRA window too)."""
    return transformer_options.get(SETTINGS_KEY)


def window_gamma(base_model, transformer_options: dict, sigma: torch.Tensor) -> Union[float, torch.Tensor]:
    """γ for this forward of a BaseModel at noise level σ: 1 without a TACA node or outside its window."""
    settings = taca_settings(transformer_options)
    if settings is None:
        return 1.0
    gamma = settings.gamma_for(paper_timesteps(base_model.model_sampling, sigma), transformer_options.get("cond_or_uncond"))
    return torch.tensor(gamma, device=sigma.device) if isinstance(gamma, list) else gamma


def is_identity(gamma) -> bool:
    return bool((gamma == 1).all()) if torch.is_tensor(gamma) else gamma == 1


@dataclass
class TACAStep:
    """What the override needs for one forward pass inside the window, or under a probe."""

    layout: TextLayout
    gamma: Union[float, torch.Tensor]
    active: bool  # γ differs from 1 for some batch item
    blocks: Optional[FrozenSet[int]] = None
    probe: Optional[Callable] = None  # probe(block, mass used, mass without TACA, TACA on)
    block: Optional[int] = None  # the joint block running now, as its JointBlockMark says
    joint_calls: int = 0  # the next joint call's number where no block says it: counted from the last block that did
    reached: bool = False  # a joint call reached the override in this forward


class TACAOverride:
    """transformer_options["optimized_attention_override"]: TACA around the host's attention.

    ComfyUI calls it as override(func, q, k, v, heads, [mask], **kwargs) with func the
    attention function it selected; heads and mask come positionally or by keyword. An
    override installed before TACA (SageAttention patches and the like) is kept and called
    with TACA's arguments. The override reads nothing of transformer_options but hands them on.
    """

    def __init__(self, state: "TACAState", previous=None):
        self.state = state
        self.previous = previous

    def __call__(self, func, *args, **kwargs):
        attend = func if self.previous is None else functools.partial(self.previous, func)
        step = self.state.step
        if step is None:
            return attend(*args, **kwargs)
        q, k = args[:2]
        token_dim = 2 if kwargs.get("skip_reshape", False) else 1
        if not step.layout.is_joint(q.shape[token_dim], k.shape[token_dim]):
            return attend(*args, **kwargs)
        step.reached = True
        block = None
        if step.blocks is not None or step.probe is not None:  # only then is the call's block needed
            block = step.block
            if block is None:  # no block patch announced this call: count
                block = step.joint_calls
                step.joint_calls += 1
        active = step.active and (step.blocks is None or block in step.blocks)
        if not active and step.probe is None:
            return attend(*args, **kwargs)
        mask_position = 4 if len(args) > 4 else None

        def attend_rows(q_rows, k_rows, v, mask):
            if mask_position is None:
                return attend(q_rows, k_rows, v, *args[3:], **{**kwargs, "mask": mask})
            return attend(q_rows, k_rows, v, *args[3:mask_position], mask, *args[mask_position + 1:], **kwargs)

        layout = step.layout
        call = dict(n_text=layout.n_text, token_dim=token_dim, text_first=layout.text_first,
                    text_queries=layout.text_queries,
                    mask=args[mask_position] if mask_position is not None else kwargs.get("mask"))
        if step.probe is not None:
            used = text_attention_mass(attend_rows, q, k, args[2], gamma=step.gamma if active else 1.0, **call)
            plain = text_attention_mass(attend_rows, q, k, args[2], gamma=1.0, **call) if active else used
            step.probe(block, used, plain, active)
        if not active:
            return attend(*args, **kwargs)
        return taca_attention(attend_rows, q, k, args[2], gamma=step.gamma,
                              out_token_dim=2 if kwargs.get("skip_output_reshape", False) else 1, **call)


@dataclass
class TACAState:
    """Shared by the wrapper, the forward patch and the override of one model: the step of the
    forward pass running now, and the attention-balance probe, if one is attached.

    It is never copied: ComfyUI 0.3.64's clones deep-copy model_options, the override with
    them, and the copy must still see the steps this model's wrapper records."""

    probe: Optional[object] = None  # probe.BalanceProbe
    step: Optional[TACAStep] = None
    reached: bool = False  # a joint call of this model has reached the override
    # For one sampling run: a forward that code outside ComfyUI's model patching put on the
    # diffusion model (ComfyUI-NAG's sampler does, as it starts), which TACA's patch displaced.
    replaced_forward: Optional[Callable] = None

    def __deepcopy__(self, memo):
        return self


class TACAForward(ForwardPatch):
    """diffusion_model.forward: the model's forward, reading this pass's step through the
    diffusion model, where torch.compile keeps its guards."""

    def __init__(self, module, forward, state: TACAState):
        super().__init__(module, forward)
        self.state = state
        self.around = (None, None)  # (an override set after TACA, TACA's override around it)

    def __call__(self, *args, **kwargs):
        options = kwargs.get("transformer_options")
        if options is not None:  # BaseModel.apply_model always passes them
            # Read here first, a graph traced whole guards the step by this patch's path (the
            # override reaches the same state through transformer_options, whose guards may be dropped).
            self.state.step  # noqa: B018
            # TACA's settings stay with the wrappers that read them: the diffusion model gets the
            # options without them, so a block compiled without guards never replays a key of TACA's.
            options = {key: value for key, value in options.items() if key != SETTINGS_KEY}
            override = options.get(OVERRIDE_KEY)
            if not (isinstance(override, TACAOverride) and override.state is self.state):
                options[OVERRIDE_KEY] = self.override_around(override)
            kwargs = {**kwargs, "transformer_options": options}
        replaced = self.state.replaced_forward
        if replaced is not None and is_own_forward(self.forward, self.module):
            return replaced(*args, **kwargs)
        return self.forward(*args, **kwargs)

    def override_around(self, override):
        """The override for this forward where a node after TACA set its own: that one where
        it calls TACA's in turn (it chains), else TACA's around it (foreign_patches.py). The
        same object for the same override, so compiled code sees one."""
        if self.around[0] is not override or self.around[1] is None:
            around = override if reaches(override, self.state) else TACAOverride(
                self.state, None if override is None else StepHidden(override, self.state))
            self.around = (override, around)
        return self.around[1]


class JointBlockMark(ForwardPatch):
    """<joint block>.forward: the block's forward, with its number (in call order) on the step
    while it runs, so a skipped block (skip-layer guidance replaces some) moves no other
    block's number."""

    def __init__(self, module, forward, state: TACAState, number: int):
        super().__init__(module, forward)
        self.state = state
        self.number = number

    def __call__(self, *args, **kwargs):
        step = self.state.step
        if step is not None:
            step.block = self.number
        out = self.forward(*args, **kwargs)
        if step is not None:
            step.block = None
            step.joint_calls = self.number + 1
        return out


def mark_joint_blocks(patched, family: Family, state: Optional[TACAState]) -> None:
    """Put a JointBlockMark for `state` on each joint block of a clone, replacing the marks of an
    earlier attach; with no state, take the earlier marks off."""
    dm = patched.model.diffusion_model
    for path, number in family.blocks.modules(dm):
        key = f"diffusion_model.{path}.forward"
        earlier = patched.object_patches.get(key)
        if isinstance(earlier, JointBlockMark):
            if is_own_forward(earlier.forward, earlier.module):
                del patched.object_patches[key]
            else:
                patched.object_patches[key] = earlier.forward
        if state is not None:
            add_forward_patch(patched, f"diffusion_model.{path}",
                              lambda module, forward, n=number: JointBlockMark(module, forward, state, n))


def record_step(family: Family, state: TACAState, executor, x, t, c_concat, c_crossattn, control,
                transformer_options, **kwargs):
    """APPLY_MODEL wrapper: decide γ for this σ and where the text sits, for this forward."""
    gamma = window_gamma(executor.class_obj, transformer_options, t)
    recorder = state.probe.forward(executor.class_obj, transformer_options, t) if state.probe else None
    active = not is_identity(gamma)
    if not (active or recorder) or c_crossattn is None:
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    settings = taca_settings(transformer_options)
    layout = family.layout(executor.class_obj.diffusion_model, x, c_crossattn, kwargs)
    step = TACAStep(layout, gamma, active, settings.blocks if settings else None, recorder)
    state.step = step
    try:
        out = executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    finally:
        state.step = None
    if step.reached:
        state.reached = True
    elif not state.reached:  # once joint calls have reached TACA, a forward without any was skipped (a step cache)
        dm = executor.class_obj.diffusion_model
        dm = getattr(dm, "_orig_mod", dm)  # torch.compile's wrapper: the model it compiled
        if active:
            raise RuntimeError(
                f"TACA: no joint text-image attention call of this {family.name} model reached TACA in the first step "
                f"inside its window, so TACA would have no effect. The diffusion model is {type(dm).__name__} from the "
                f"module {type(dm).__module__}: its attention does not go through ComfyUI's attention with the "
                f"transformer_options that carry TACA's override (or another node replaced the model's attention or "
                f"blocks). Load the model with ComfyUI's own loader, place TACA after the node that replaced the "
                f"attention, or bypass TACA for this model."
            )
        logging.warning(
            f"TACA: no joint text-image attention call reached TACA in this step of {family.name} "
            f"({type(dm).__name__} from {type(dm).__module__}), so the probe recorded nothing. Another node may have "
            f"replaced the model's attention or blocks; place TACA after it."
        )
    return out


def attention_backend() -> str:
    """The name under which ComfyUI registered the attention function it selected at start-up."""
    selected = comfy.ldm.modules.attention.optimized_attention
    registered = getattr(comfy.ldm.modules.attention, "REGISTERED_ATTENTION_FUNCTIONS", {})
    return next((name for name, func in registered.items() if func is selected), selected.__name__)


def refuse_a_compile_that_breaks_in_attention(patcher) -> None:
    """ON_PRE_RUN: stop before sampling where torch.compile would break its graph inside the
    attention and drop the guards on transformer_options.

    ComfyUI 0.33's TorchCompileModel keeps no guard on transformer_options. A backend that
    breaks the graph makes dynamo compile ComfyUI's attention wrapper as a frame of its own,
    whose test for an attention override is then not guarded: compiled with TACA's override
    there, it would call an override that a later model without TACA lacks (a KeyError), and
    compiled without one first, it would skip TACA's. Dynamo shares these frames between
    compiles. Where another node's override picks the attention, every model that node feeds
    has an override, and TACA's own frames guard what they read, so that runs.

    Other packs' compile nodes may drop the same guards (KJNodes' TorchCompileModelAdvanced
    does, on every host) and compile only the blocks: then no graph holds TACA's forward
    patch, and with any attention the compiled blocks cannot see the window move.
    """
    # TorchCompileModel on 0.33 passes options={"guard_filter_fn": …} (torch.compile pops the
    # function out of that dict); on 0.3.64 it passes none and every guard is kept.
    filtered = (patcher.model_options.get(COMPILE_KWARGS) or {}).get("options") is not None
    override = patcher.model_options.get("transformer_options", {}).get(OVERRIDE_KEY)
    if not filtered or not isinstance(override, TACAOverride):
        return
    node = compile_node(patcher)
    pieces = compiled_modules(patcher)
    if pieces and "diffusion_model" not in pieces:
        # TACA's forward patch on the diffusion model, which reads each forward's step where
        # dynamo guards it, stays outside these graphs: they would replay a step traced on the
        # other side of the window (measured: KJNodes' TorchCompileModelAdvanced stopped
        # mid-run with an AttributeError).
        raise RuntimeError(
            f"TACA with {node}: it compiles parts of the diffusion model ({pieces[0]}"
            f"{f' and {len(pieces) - 1} more' if len(pieces) > 1 else ''}) and keeps no guard on the attention "
            f"settings it compiles, so the compiled parts would not see TACA's window begin or end. Nothing was "
            f"compiled or sampled. Compile the whole diffusion model instead (KJNodes' TorchCompileModelAdvanced: "
            f"compile_transformer_blocks_only off; or ComfyUI's TorchCompileModel), use a compile node that keeps "
            f"its guards (KJNodes' TorchCompileModelFluxAdvancedV2), or bypass TACA for this run."
        )
    backend = attention_backend()
    if override.previous is not None or backend in UNBROKEN_BY_COMPILE:
        return
    raise RuntimeError(
        f"TACA with {node}: ComfyUI runs attention with its '{backend}' function, which breaks "
        f"torch.compile's graph inside every attention call, and this compile keeps no guard on the "
        f"attention settings it compiles, so a compiled step could reuse another model's attention and a later "
        f"compile without TACA could fail. Nothing was compiled or sampled. Start ComfyUI with "
        f"--use-pytorch-cross-attention (PyTorch attention compiles without a break), or remove the compile node "
        f"or bypass TACA for this run."
    )


def attach(model, probe=None, blocks_named=False):
    """A clone of `model` with TACA's override, forward patch and wrapper, the family's row
    and the clone. TACA nodes and the probe share them; attaching again replaces them and
    keeps the probe attached before. Where blocks are named or a probe is attached, each joint
    block says its number while it runs (JointBlockMark)."""
    family = family_of(model)
    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    earlier = patched.object_patches.get("diffusion_model.forward")
    state = TACAState(probe or (earlier.state.probe if isinstance(earlier, TACAForward) else None))
    previous = options.get(OVERRIDE_KEY)
    options[OVERRIDE_KEY] = TACAOverride(state, previous.previous if isinstance(previous, TACAOverride) else previous)

    def make_forward(module, previous_patch):
        if isinstance(previous_patch, TACAForward):  # attached before on this model: replaced
            previous_patch = previous_patch.forward
        return TACAForward(module, previous_patch, state)

    add_forward_patch(patched, "diffusion_model", make_forward)
    mark_joint_blocks(patched, family, state if blocks_named or state.probe is not None else None)
    for call_type, callback in ((comfy.patcher_extension.CallbacksMP.ON_PRE_RUN, follow_a_replaced_forward),
                                (comfy.patcher_extension.CallbacksMP.ON_CLEANUP, forget_a_replaced_forward)):
        patched.remove_callbacks_with_key(call_type, FORWARD_KEY)
        patched.add_callback_with_key(call_type, FORWARD_KEY, functools.partial(callback, state))
    if WRAPPER_KEY not in patched.callbacks.get(comfy.patcher_extension.CallbacksMP.ON_PRE_RUN, {}):
        patched.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_PRE_RUN, WRAPPER_KEY,
                                      refuse_a_compile_that_breaks_in_attention)
    patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY)
    patched.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, functools.partial(record_step, family, state)
    )
    return patched, family


def apply_taca(model, settings: TACASettings):
    """A clone of `model` (a ModelPatcher) with TACA attached. The input is not modified.

    Applying it again replaces the earlier settings; an attention override set by
    another node is chained, not replaced.
    """
    patched, _ = attach(model, blocks_named=settings.blocks is not None)
    patched.model_options["transformer_options"][SETTINGS_KEY] = settings
    return patched
