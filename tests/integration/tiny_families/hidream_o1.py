"""HiDream-O1-Image (supported_models.HiDreamO1): a pixel-space Qwen3-VL decoder, two layers here.

comfy/ldm/hidream_o1/model.py, HiDreamO1Transformer._forward, runs one sequence
    [text ids (ar_len) | tms token | target image patches | reference patches (edit)]
through the language-model layers; each layer's attention is
comfy/ldm/hidream_o1/attention.py, make_two_pass_attention: the first ar_len rows (the text, causal)
go to plain SDPA, which no override sees; the rest, queries [ar_len, T), attend to ALL T keys in one
optimized_attention call: (B, H, L, D), skip_reshape=True, heads positional, mask=None, enable_gqa.
So the joint call is one-sided: its queries are the image side only (Lq = T - ar_len), its keys are
the whole sequence with the text first (Lk = T). `joint_length` is Lk, `joint_text` is ar_len.
After the first step a K/V cache holds the text rows (the call then gets q of the same length).
ar_len (= len(input_ids) - 1: all ids before the tms token) is itself an APPLY_MODEL kwarg.

Edit (HiDreamO1ReferenceImages): each reference image adds Qwen3-VL vision tokens inside the text
ids ([vision_start, image_pad x N, vision_end] after the 3-token chat prefix) and its 32 px patches
after the target (comfy/ldm/hidream_o1/conditioning.py, build_extra_conds).
"""

import comfy.supported_models
import torch

from tiny_families import TinyFamily
from tiny_models import build_from_config

TEXT = {"vocab_size": 151936, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "rope_dims": [6, 5, 5]}
VISION = {"hidden_size": 64, "num_heads": 2, "intermediate_size": 128, "depth": 1}
TEMPLATE = 10  # <|im_start|>user\n ... <|im_end|>\n<|im_start|>assistant\n<|boi|><|tms|>
REFERENCE = (80, 120)  # the edit reference image, pixels (H, W)
REFERENCE_VISION = 126  # its Qwen3-VL tokens: resized to 288 x 448 (384^2 area), 16 px patches merged 2 x 2


def build(seed: int = 0):
    return build_from_config(comfy.supported_models.HiDreamO1, {
        "image_model": "hidream_o1", "text_config_overrides": TEXT, "vision_config_overrides": VISION}, seed)


def conditioning(model, n_text: int, seed: int = 0, reference: bool = False) -> list:
    """The tokenizer-only HiDreamO1TE: the prompt's ids in the chat template as text_input_ids, and
    the same ids as a float (1, L, 1) stand-in token tensor; edit adds reference_latents (images)."""
    from comfy.text_encoders import hidream_o1 as te
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(1000, 100000, (n_text,), generator=g).tolist()
    ids = torch.tensor([[te.IM_START_ID, te.USER_ID, te.NEWLINE_ID, *prompt, te.IM_END_ID, te.NEWLINE_ID,
                         te.IM_START_ID, te.ASSISTANT_ID, te.NEWLINE_ID, te.BOI_TOKEN_ID, te.TMS_TOKEN_ID]])
    extra = {"pooled_output": None, "text_input_ids": ids}
    if reference:
        extra["reference_latents"] = [torch.rand(1, *REFERENCE, 3, generator=g)]
    return [[ids.unsqueeze(-1).float(), extra]]


def latent(model, height: int, width: int, batch: int = 1) -> torch.Tensor:
    """EmptyHiDreamO1LatentImage: (B, 3, H, W) pixels. A latent of height x width (1/8 scale) would be
    an image of 8*height x 8*width; rounded up to whole 32 px patches at half that, so the image has
    as many patches as a 2 x 2-patch latent model of that size."""
    return torch.zeros(batch, 3, 32 * -(-height // 2), 32 * -(-width // 2))


def reference_patches(image: torch.Tensor) -> int:
    """The reference's 32 px patches: ComfyUI resizes it to the target's longest side squared."""
    from comfy.ldm.hidream_o1.utils import resize_tensor
    size = max(image.shape[-2:])
    resized = resize_tensor(torch.zeros(1, 3, *REFERENCE), size, 32)
    return (resized.shape[-2] // 32) * (resized.shape[-1] // 32)


def _family(name: str, reference: bool) -> TinyFamily:
    def text(n_text):  # ar_len
        return n_text + TEMPLATE - 1 + ((REFERENCE_VISION + 2) if reference else 0)

    def length(model, image, n_text):
        return text(n_text) + 1 + (image.shape[-2] // 32) * (image.shape[-1] // 32) + (
            reference_patches(image) if reference else 0)

    return TinyFamily(
        name=name,
        available=lambda: hasattr(comfy.supported_models, "HiDreamO1"),
        build=build,
        conditioning=lambda model, n_text, seed=0: conditioning(model, n_text, seed, reference),
        latent=latent,
        joint_text=lambda model, image, n_text: text(n_text),
        joint_length=length,
        joint_calls=lambda model: len(model.model.diffusion_model.language_model.layers),
        other_calls=lambda model: 0,  # the causal text rows and the vision tower bypass the override
        text_first=True,
        text_queries=False,
    )


FAMILIES = (
    _family("hidream-o1", reference=False),
    _family("hidream-o1-edit", reference=True),
)
