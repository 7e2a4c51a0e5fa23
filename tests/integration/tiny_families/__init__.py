"""One tiny random-weight model per joint-attention family, built the way ComfyUI builds it.

Each module of this package describes one family with a `TinyFamily` named FAMILY (or a
tuple FAMILIES for variants that share code). What a module knows of its family comes from
the family's ComfyUI code, read by the test's author, never from the pack: the tests use it
to write TACA out from its definition and to count the attention calls.

A family whose code a host lacks is simply absent on that host (`available`).
"""

from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass(frozen=True)
class TinyFamily:
    name: str  # the test id, e.g. "flux2"
    available: Callable[[], bool]  # whether this ComfyUI ships the family
    build: Callable[[int], object]  # seed -> comfy.model_patcher.ModelPatcher, fp32, CPU
    # (model, n_text, seed) -> ComfyUI conditioning [[tokens, {...}]] as the family's text encoder gives it
    conditioning: Callable[[object, int, int], list]
    # (model, height, width, batch) -> an empty latent as the family's empty-latent node makes it
    latent: Callable[[object, int, int, int], torch.Tensor]
    # (model, latent, n_text) -> text tokens in the joint sequence (registers and text-side extras included)
    joint_text: Callable[[object, torch.Tensor, int], int]
    # (model, latent, n_text) -> length of the joint text-image attention calls
    joint_length: Callable[[object, torch.Tensor, int], int]
    # (model) -> joint attention calls in one forward
    joint_calls: Callable[[object], int]
    # (model) -> attention calls in one forward that are not joint (refiners, image-only, text-only)
    other_calls: Callable[[object], int]
    text_first: bool = True  # text at the start of the joint sequence, else at its end
    text_queries: bool = True  # the joint calls' queries include the text (HiDream-O1's do not)
    sampling: Optional[dict] = None  # extra keyword arguments for tiny_models.sample (cfg, ...)


def all_families() -> list:
    """Every TinyFamily of this package, available or not, in module order."""
    import importlib
    import pkgutil

    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "FAMILIES", ()) or ([module.FAMILY] if hasattr(module, "FAMILY") else []))
    return found
