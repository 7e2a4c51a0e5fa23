"""The joint-attention families TACA supports, described once as data.

Each row says how to recognise one family, how many text tokens its joint attention
sequence holds (from what the APPLY_MODEL wrapper receives), where the text sits, how to
tell its joint calls from its other attention calls, and the module lists that hold its
joint blocks, in call order.
Adding a family means adding a row.

A family is recognised exactly: by the class name of its ComfyUI model configuration
(comfy.supported_models), never by isinstance, so a new family that subclasses a known one
is refused until it has a row. Rows name classes as strings, so a ComfyUI that lacks a
family simply never matches its row.

Everything except the text span is visual: image or video tokens, reference images,
audio. Register tokens and text-side extras (byT5, Llama layers, vision tokens the text
encoder put inside the prompt) count as text.
"""

import inspect
import math
import re
from dataclasses import dataclass
from typing import Callable, FrozenSet, Iterator, Optional, Tuple, Union

import torch

Blocks = Tuple[Tuple[str, int], ...]  # (kind, count) of joint attention calls, in the order of a forward


@dataclass(frozen=True)
class TextLayout:
    """Where the text sits in the joint attention calls of one forward pass.

    The text is the first (`text_first`) or the last `n_text` tokens of the keys, and of the
    queries where `text_queries`; everything else is visual. `joint_length` is the key
    length of the joint calls, where the family has other attention calls of lengths that
    could pass for joint ones; otherwise every call whose keys hold more than the text is
    joint.
    """

    n_text: int
    text_first: bool = True
    joint_length: Optional[int] = None
    text_queries: bool = True

    def is_joint(self, q_len: int, k_len: int) -> bool:
        if self.n_text <= 0:
            return False
        if self.joint_length is not None:
            return k_len == self.joint_length
        return k_len > self.n_text and (q_len > self.n_text or not self.text_queries)


@dataclass(frozen=True)
class BlockLists:
    """A family's joint blocks as its diffusion model holds them: ModuleLists, by attribute
    path, in the order a forward runs them, each block making one joint attention call.
    Called with the diffusion model, it gives the (kind, count) of each list the model has:
    lengths("double_blocks", "single_blocks") → (("double", 19), ("single", 38))."""

    paths: Tuple[str, ...]

    def __call__(self, dm) -> Blocks:
        return tuple((kind, len(blocks)) for _, kind, blocks in self.lists(dm))

    def lists(self, dm):
        """(path, kind, ModuleList) of each list this model has."""
        for path in self.paths:
            blocks = dm
            for name in path.split("."):
                blocks = getattr(blocks, name, None)
            if blocks is not None:
                yield path, path.rsplit(".", 1)[-1].split("_")[0], blocks

    def modules(self, dm) -> Iterator[Tuple[str, int]]:
        """Each joint block's module path and its number in call order (as the blocks input counts)."""
        number = 0
        for path, _, blocks in self.lists(dm):
            for i in range(len(blocks)):
                yield f"{path}.{i}", number
                number += 1


# What a row reads: the diffusion model, the latent x as apply_model gets it, the text
# conditioning (c_crossattn) and the other conditioning entries (the wrapper's kwargs).
Count = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, dict], int]


@dataclass(frozen=True)
class Family:
    name: str  # as users know it
    configs: Tuple[str, ...]  # comfy.supported_models class names
    text: Count  # text tokens in the joint sequence
    blocks: BlockLists
    text_first: Union[bool, Callable[[torch.nn.Module], bool]] = True
    visual: Optional[Count] = None  # visual tokens, for families with other calls to tell apart
    text_queries: bool = True  # False where the text queries never reach the override
    unet: Callable[[dict], bool] = lambda unet_config: True  # for a configuration class shared by two families

    def layout(self, dm, x, context, kwargs) -> TextLayout:
        n_text = self.text(dm, x, context, kwargs)
        text_first = self.text_first(dm) if callable(self.text_first) else self.text_first
        joint_length = None if self.visual is None else n_text + self.visual(dm, x, context, kwargs)
        return TextLayout(n_text, text_first, joint_length, self.text_queries)

    def select_blocks(self, dm, text: str) -> Optional[FrozenSet[int]]:
        """The joint blocks a string picks, numbered in call order: 'all', numbers and ranges
        ('0-18', '3,5,7-9') and, where the family has several kinds, kind names ('double')."""
        return select_blocks(text, self.blocks(dm), self.name)


def select_blocks(text: str, kinds: Blocks, name: str) -> Optional[FrozenSet[int]]:
    text = text.strip().lower()
    if text in ("", "all"):
        return None
    total, spans, start = sum(n for _, n in kinds), {}, 0
    for kind, n in kinds:
        spans[kind] = range(start, start + n)
        start += n
    named = spans if len(kinds) > 1 else {}
    chosen = set()
    for part in (p.strip() for p in text.split(",")):
        numbers = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        first, last = (int(numbers[1]), int(numbers[2] or numbers[1])) if numbers else (None, None)
        if part in named and len(named[part]):
            chosen.update(named[part])
        elif numbers and first <= last < total:
            chosen.update(range(first, last + 1))
        else:
            raise ValueError(f"TACA Advanced: blocks {text!r}: {block_problem(part, first, last, named)} "
                             f"{blocks_help(kinds, spans, named, name)}")
    return frozenset(chosen)


def block_problem(part: str, first: Optional[int], last: Optional[int], named: dict) -> str:
    """What is wrong with one entry of a block string."""
    if part in named:
        return f"this model has no {part} blocks."
    if first is not None and first > last:
        return f"the range {part!r} is reversed; write it '{last}-{first}'."
    return f"{part!r} is not a block of this model."


def blocks_help(kinds: Blocks, spans: dict, named: dict, name: str) -> str:
    """The model's joint blocks and what the blocks input takes, for an error message."""
    total = sum(n for _, n in kinds)
    layout = ", ".join(f"{kind} {r.start}" + (f"–{r.stop - 1}" if len(r) > 1 else "") for kind, r in spans.items() if len(r))
    numbered = "numbered 0" if total == 1 else f"numbered 0–{total - 1}"
    examples = "'0'" if total == 1 else f"block numbers or ranges such as '0-{min(total, 19) - 1}' or '0,{total - 1}'"
    present = [repr(kind) for kind, r in named.items() if len(r)]
    kinds_hint = f", or {' / '.join(present)}" if present else ""
    return (f"This {name} model has {total} joint block{'s' if total != 1 else ''}, {numbered} in the order they run "
            f"({layout}). Give 'all', {examples}{kinds_hint}, separated by commas.")


# --- what the rows read ------------------------------------------------------------------

def context_tokens(dm, x, context, kwargs) -> int:
    return context.shape[1]


def patch_grid(x: torch.Tensor, patch) -> int:
    """Tokens of a latent cut into patches (one patch size per trailing axis), padded to whole patches."""
    patch = (patch,) * 2 if isinstance(patch, int) else tuple(patch)
    return math.prod(math.ceil(size / p) for size, p in zip(x.shape[-len(patch):], patch))


def padded(n: int, multiple: Optional[int]) -> int:
    return n if not multiple else math.ceil(n / multiple) * multiple


def reference_tokens(kwargs, patch) -> int:
    return sum(patch_grid(ref, patch) for ref in kwargs.get("ref_latents") or ())


def lengths(*paths: str) -> BlockLists:
    return BlockLists(paths)


def mmdit_text(dm, x, context, kwargs) -> int:
    # SD3's _block_mixing attends over cat(context, x); context carries the register tokens.
    return context.shape[1] + dm.register_length


def nextdit_text(dm, x, context, kwargs) -> int:
    # NextDiT with Z-Image padding puts the whole caption in, padded to pad_tokens_multiple;
    # the NextDiT without it keeps the first num_tokens caption tokens.
    if hasattr(dm, "pad_tokens_multiple"):
        return padded(context.shape[1], dm.pad_tokens_multiple)
    return int(kwargs["num_tokens"])


def nextdit_visual(dm, x, context, kwargs) -> int:
    if kwargs.get("ref_latents"):
        raise ValueError(
            "TACA does not support Z-Image with reference latents yet: their layout puts a caption per "
            "reference into the joint sequence. Remove the reference latents, or bypass the TACA node."
        )
    return padded(patch_grid(x, dm.patch_size), getattr(dm, "pad_tokens_multiple", None))


def hidream_text(dm, x, context, kwargs) -> int:
    # T5 tokens, then the last Llama layer, then each block's own Llama layer (_forward).
    return context.shape[1] + 2 * kwargs["encoder_hidden_states_llama3"].shape[2]


def hunyuan_text(dm, x, context, kwargs) -> int:
    # forward_orig joins byT5 tokens and vision tokens (1.5 I2V) to the text stream.
    n = context.shape[1]
    if getattr(dm, "byt5_in", None) is not None and kwargs.get("txt_byt5") is not None:
        n += kwargs["txt_byt5"].shape[1]
    if getattr(dm, "vision_in", None) is not None and kwargs.get("clip_fea") is not None:
        n += kwargs["clip_fea"].shape[1]
    return n


def hunyuan_text_first(dm) -> bool:
    # Older ComfyUI builds the double blocks with flipped_img_txt: image first, text last.
    return not getattr(dm.double_blocks[0], "flipped_img_txt", False)


def krea2_visual(dm, x, context, kwargs) -> int:
    method = kwargs.get("ref_latents_method", getattr(dm, "default_ref_method", None))
    return patch_grid(x, 2) + (reference_tokens(kwargs, 2) if method is not None else 0)


FAMILIES = (
    Family("FLUX.1 (dev, schnell, Fill, Kontext)", ("Flux", "FluxSchnell", "FluxInpaint"), context_tokens,
           lengths("double_blocks", "single_blocks"), unet=lambda c: not c.get("yak_mlp")),
    Family("Ovis-Image", ("FluxSchnell",), context_tokens, lengths("double_blocks", "single_blocks"),
           unet=lambda c: bool(c.get("yak_mlp"))),
    Family("FLUX.2 (dev, klein)", ("Flux2",), context_tokens, lengths("double_blocks", "single_blocks")),
    Family("LongCat-Image", ("LongCatImage",), context_tokens, lengths("double_blocks", "single_blocks")),
    Family("Chroma, Chroma Radiance", ("Chroma", "ChromaRadiance"), context_tokens,
           lengths("double_blocks", "single_blocks")),
    Family("SD3 / SD3.5 (Medium, Large)", ("SD3",), mmdit_text, lengths("joint_blocks"),
           visual=lambda dm, x, context, kwargs: patch_grid(x, dm.x_embedder.patch_size)),
    Family("AuraFlow", ("AuraFlow",), lambda dm, x, context, kwargs: dm.register_tokens.shape[1] + context.shape[1],
           lengths("double_layers", "single_layers")),
    Family("Qwen-Image (and Edit, Layered)", ("QwenImage",), context_tokens, lengths("transformer_blocks")),
    Family("Mage-Flow", ("MageFlow",), context_tokens, lengths("transformer_blocks")),
    Family("Lumina 2, Z-Image", ("Lumina2", "ZImage", "ZImagePixelSpace"), nextdit_text, lengths("layers"),
           visual=nextdit_visual),
    Family("OmniGen2, Boogu", ("Omnigen2", "Boogu"), context_tokens,
           lengths("layers", "double_stream_layers", "single_stream_layers"),
           visual=lambda dm, x, context, kwargs: patch_grid(x, 2) + reference_tokens(kwargs, 2)),
    Family("HiDream (I1, E1)", ("HiDream",), hidream_text, lengths("double_stream_blocks", "single_stream_blocks"),
           text_first=False),
    Family("HiDream-O1", ("HiDreamO1",), lambda dm, x, context, kwargs: int(kwargs["ar_len"]),
           lengths("language_model.layers"), text_queries=False),
    Family("HunyuanVideo (1.0, I2V, 1.5), HunyuanImage 2.1",
           ("HunyuanVideo", "HunyuanVideoI2V", "HunyuanVideoSkyreelsI2V", "HunyuanImage21", "HunyuanImage21Refiner",
            "HunyuanVideo15", "HunyuanVideo15_SR_Distilled"),
           hunyuan_text, lengths("double_blocks", "single_blocks"), text_first=hunyuan_text_first),
    Family("Mochi", ("GenmoMochi",), lambda dm, x, context, kwargs: min(int(kwargs["num_tokens"]), context.shape[1]),
           lengths("blocks"), text_first=False),
    Family("CogVideoX", ("CogVideoX_T2V", "CogVideoX_I2V", "CogVideoX_Inpaint"), context_tokens, lengths("blocks")),
    Family("JoyImage", ("JoyImage",), context_tokens, lengths("double_blocks"), text_first=False),
    Family("Lens", ("Lens",), context_tokens, lengths("transformer_blocks"), text_first=False),
    Family("Krea 2", ("Krea2",), context_tokens, lengths("blocks"), visual=krea2_visual),
    Family("Ideogram 4", ("Ideogram4",), context_tokens, lengths("layers")),
    Family("PixelDiT, PiD", ("PixelDiTT2I", "PiD"),
           lambda dm, x, context, kwargs: min(context.shape[1], dm.txt_max_length), lengths("patch_blocks"),
           visual=lambda dm, x, context, kwargs: patch_grid(x, dm.patch_size)),
    Family("MiniMax H3", ("MiniMaxH3",), context_tokens, lengths("blocks")),
)

# Models whose text never shares one attention with the image: nothing for TACA to rebalance.
CROSS_ATTENTION = {
    "SD15": "SD1.5", "SD20": "SD2", "SD21UnclipL": "SD2.1 unCLIP", "SD21UnclipH": "SD2.1 unCLIP",
    "SDXL": "SDXL", "SDXLRefiner": "SDXL Refiner", "SSD1B": "SSD-1B", "Segmind_Vega": "Segmind Vega",
    "KOALA_700M": "KOALA", "KOALA_1B": "KOALA", "SD15_instructpix2pix": "SD1.5 InstructPix2Pix",
    "SDXL_instructpix2pix": "SDXL InstructPix2Pix", "PixArtAlpha": "PixArt-α", "PixArtSigma": "PixArt-Σ",
    "HunyuanDiT": "Hunyuan-DiT", "HunyuanDiT1": "Hunyuan-DiT", "LTXV": "LTX-Video", "LTXAV": "LTX-2",
    "CosmosT2V": "Cosmos", "CosmosI2V": "Cosmos", "CosmosT2IPredict2": "Cosmos Predict2",
    "CosmosI2VPredict2": "Cosmos Predict2", "Anima": "Anima", "Kandinsky5": "Kandinsky 5",
    "Kandinsky5Image": "Kandinsky 5", "WAN21_T2V": "Wan 2.1", "WAN21_I2V": "Wan 2.1 I2V",
    "WAN21_CausalAR_T2V": "Wan 2.1 (causal)", "WAN21_FunControl2V": "Wan 2.1 Fun Control",
    "WAN21_Camera": "Wan 2.1 Camera", "WAN22_Camera": "Wan 2.2 Camera", "WAN21_Vace": "Wan VACE",
    "WAN21_HuMo": "Wan HuMo", "WAN22_S2V": "Wan 2.2 S2V", "WAN22_Animate": "Wan 2.2 Animate",
    "WAN_Animate2": "Wan Animate 2", "WAN22_T2V": "Wan 2.2", "WAN21_FlowRVS": "Wan 2.1 FlowRVS",
    "WAN21_SCAIL": "Wan SCAIL", "WAN21_SCAIL2": "Wan SCAIL", "WAN22_WanDancer": "WanDancer",
}
# Joint attention that TACA does not reach: the model's name, and why.
OUT_OF_REACH = {
    "ErnieImage": ("ERNIE-Image", "runs a joint text-image attention, but its attention calls bypass ComfyUI's "
                                  "attention override, through which TACA works."),
    **dict.fromkeys(("Stable_Cascade_C", "Stable_Cascade_B"), (
        "Stable Cascade", "is a UNet whose image queries attend over image and text keys joined, with no text "
                          "queries; TACA covers the MM-DiT transformers' joint attention, not this layout yet.")),
}


def describe(model) -> str:
    """What the user loaded, in their words: 'SDXL', 'Wan 2.1', or the configuration's class name."""
    config = type(model.model.model_config).__name__
    for family in FAMILIES:
        if config in family.configs and family.unet(model.model.model_config.unet_config):
            return family.name
    return CROSS_ATTENTION.get(config) or OUT_OF_REACH.get(config, (None,))[0] or f"a {config} model"


def family_of(model, node: str = "TACA") -> Family:
    """The family of a ModelPatcher's model, or a ValueError a user can act on that names `node`,
    the node given the model."""
    config = type(model.model.model_config).__name__
    unet_config = model.model.model_config.unet_config
    for family in FAMILIES:
        if config in family.configs and family.unet(unet_config):
            refuse_attention_outside_comfy(model.model.diffusion_model, family, node)
            return family
    loaded = describe(model)
    if config in CROSS_ATTENTION:
        why = (f"{loaded} reads the prompt through cross-attention only: its image tokens never share one "
               f"attention with the text tokens, which is the balance TACA re-weights.")
    elif config in OUT_OF_REACH:
        why = f"{loaded} {OUT_OF_REACH[config][1]}"
    else:
        why = f"TACA does not know {loaded} ({type(model.model).__name__}); it has no joint text-image attention TACA knows of."
    supported = "; ".join(f.name for f in FAMILIES)
    raise ValueError(
        f"{node} cannot be applied to this model: {why} TACA supports the MM-DiT families {supported}. "
        f"Connect one of those, or bypass the {node} node for this model."
    )


def refuse_attention_outside_comfy(dm: torch.nn.Module, family: Family, node: str = "TACA") -> None:
    """A ValueError for a diffusion model whose attention cannot reach ComfyUI's override: a
    class from outside ComfyUI's own models (comfy.ldm) whose forward does not take the
    transformer_options that carry it (Nunchaku-style wrappers around another library's
    model), naming `node`. One that takes them may hand them on; TACA's first step inside its
    window tells."""
    cls = type(dm)
    if any(c.__module__.startswith("comfy.ldm.") for c in cls.__mro__):
        return
    try:
        parameters = inspect.signature(cls.forward).parameters.values()
    except (TypeError, ValueError):
        return
    if any(p.name == "transformer_options" or p.kind == p.VAR_POSITIONAL for p in parameters):
        return
    raise ValueError(
        f"{node} cannot be applied to this model: its diffusion model is {cls.__name__} from the module "
        f"{cls.__module__}, not ComfyUI's own {family.name} model, and its forward takes no transformer_options, "
        f"so its attention does not go through ComfyUI's attention, whose override {node} works through: it would "
        f"have no effect. Load the model with ComfyUI's own loader (Load Diffusion Model, or a loader that builds "
        f"ComfyUI's model classes), or bypass the {node} node for this model."
    )
