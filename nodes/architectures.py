"""The MM-DiT families TACA supports, described once as data.

Each row says how to find one family's diffusion model, how many text tokens lead its
joint attention sequence, and which attention calls are joint. Adding a family means
adding a row.
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

import comfy.ldm.flux.model
import comfy.ldm.modules.diffusionmodules.mmdit


@dataclass(frozen=True)
class TextLayout:
    """Where the text sits in the joint attention calls of one forward pass.

    The first `n_text` tokens are text; everything after them is visual (image tokens,
    and the reference-image tokens of FLUX Kontext and Fill). `joint_length` is the
    sequence length of the joint calls, or None where every attention call is joint.
    """

    n_text: int
    joint_length: Optional[int]

    def is_joint(self, seq_len: int) -> bool:
        if self.joint_length is not None:
            return seq_len == self.joint_length
        return 0 < self.n_text < seq_len


@dataclass(frozen=True)
class Family:
    name: str
    diffusion_model: type
    # (diffusion model, latent x, context) -> TextLayout of one forward pass
    layout: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], TextLayout]


def _flux_layout(dm, x, context):
    # Double blocks attend over cat(txt, img[, reference images]); single blocks over
    # the same sequence. Every attention call is joint.
    return TextLayout(n_text=context.shape[1], joint_length=None)


def _mmdit_layout(dm, x, context):
    # _block_mixing attends over cat(context, x). MMDiT-X (SD3.5 Medium) adds an
    # image-only attention (attn2) in some blocks; its length lacks the text tokens.
    n_text = context.shape[1] + dm.register_length
    p = dm.x_embedder.patch_size[0]
    n_image = math.ceil(x.shape[-2] / p) * math.ceil(x.shape[-1] / p)
    return TextLayout(n_text=n_text, joint_length=n_text + n_image)


FAMILIES = (
    Family("FLUX.1 (dev, schnell, Fill, Kontext)", comfy.ldm.flux.model.Flux, _flux_layout),
    Family("SD3 / SD3.5 (Medium, Large)", comfy.ldm.modules.diffusionmodules.mmdit.MMDiT, _mmdit_layout),
)


def family_of(model) -> Family:
    """The family of a ModelPatcher's diffusion model, or a ValueError a user can act on."""
    base = model.model
    dm = getattr(base, "diffusion_model", None)
    for family in FAMILIES:
        if isinstance(dm, family.diffusion_model):
            return family
    supported = "; ".join(f.name for f in FAMILIES)
    raise ValueError(
        f"TACA does not support this model: {type(base).__name__} "
        f"(diffusion model {type(dm).__name__}). TACA re-weights the joint text-image "
        f"attention of MM-DiT models and supports: {supported}. "
        f"Connect one of those models, or bypass the TACA node for this one."
    )
