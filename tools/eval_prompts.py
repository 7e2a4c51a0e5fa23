"""The prompts of a prompt-adherence evaluation: a built-in quick set, T2I-CompBench files, plain lists.

`load_prompts(None)` or `load_prompts("quick")` gives QUICK_SET: 40 prompts written for this
pack in the style of T2I-CompBench's categories, 10 each for colour, shape, texture and
spatial, so that a first run takes minutes. `load_prompts(path)` reads a T2I-CompBench
dataset file such as `examples/dataset/color_val.txt` from its repository (MIT license),
with the category taken from the file name, or any text file with one prompt per line.
"""

import os
import re
from dataclasses import dataclass

try:
    from .eval_phrases import SPATIAL_RELATIONS, spatial_relation
except ImportError:  # run from tools/, as the command-line tools are
    from eval_phrases import SPATIAL_RELATIONS, spatial_relation

CATEGORIES = ("color", "shape", "texture", "spatial", "other")


@dataclass(frozen=True)
class Prompt:
    """One prompt and its T2I-CompBench category, which decides how it is scored."""

    text: str
    category: str  # one of CATEGORIES

    def __post_init__(self):
        if self.category not in CATEGORIES:
            raise ValueError(f"prompt category '{self.category}' is not one of {', '.join(CATEGORIES)}")
        if not self.text.strip():
            raise ValueError("a prompt's text is empty")


def _quick(category: str, texts: str) -> tuple:
    return tuple(Prompt(line.strip(), category) for line in texts.strip().splitlines())


# Two objects, each with its own attribute (the binding is what is tested), or two objects
# in a relation from T2I-CompBench's spatial vocabulary, all of them things a detector knows.
QUICK_SET = (
    _quick("color", """
        a red book and a yellow vase
        a blue car and a green bicycle
        a purple umbrella and an orange chair
        a white cat and a black dog
        a pink cup and a blue plate
        a yellow bus and a red fire hydrant
        a green apple and a brown basket
        a black guitar and a white piano
        an orange backpack and a purple bench
        a brown horse and a blue barn
    """)
    + _quick("shape", """
        a round bagel and a rectangular cutting board
        a square clock and a circular mirror
        a triangular sign and a round table
        a cubic box and a spherical lamp
        an oval rug and a rectangular sofa
        a cylindrical vase and a square pillow
        a round plate and a triangular slice of pizza
        a tall giraffe and a short zebra
        a big elephant and a small mouse
        a conical hat and a cubic gift box
    """)
    + _quick("texture", """
        a leather bag and a wooden table
        a fluffy towel and a glass bottle
        a metallic robot and a fabric sofa
        a rubber ball and a wooden chair
        a plastic bucket and a leather boot
        a glass vase and a fluffy pillow
        a wooden spoon and a metallic bowl
        a fabric hat and a rubber boot
        a leather sofa and a plastic lamp
        a fluffy dog and a metallic car
    """)
    + _quick("spatial", """
        a dog on the left of a chair
        a cat on the right of a lamp
        a bird on the top of a car
        a book on the bottom of a table
        a horse next to a bicycle
        a cup near a laptop
        a clock on the left of a vase
        a ball on the right of a bench
        a bowl on the top of a suitcase
        a backpack on side of a sofa
    """)
)

# T2I-CompBench's dataset files, by the start of their names (color_val.txt, spatial.txt, ...).
# Its other categories have scorers of their own (3-D spatial, numeracy, complex), not here.
DATASET_PREFIXES = (
    ("non_spatial", "other"), ("3d_spatial", "other"), ("complex", "other"), ("numeracy", "other"),
    ("color", "color"), ("shape", "shape"), ("texture", "texture"), ("spatial", "spatial"),
)
NAME_WORDS = {"color": "color", "colour": "color", "shape": "shape", "texture": "texture", "spatial": "spatial"}

ACCEPTED = ('"quick" (the built-in set of 40), a T2I-CompBench dataset file such as '
            "examples/dataset/color_val.txt (category from the name: color, shape, texture, spatial; "
            "non_spatial, complex and the rest count as other), or a UTF-8 text file with one prompt "
            "per line (category other, unless its name holds color, shape, texture or spatial)")


def category_from_name(path: str) -> str:
    """The category a prompt file's name gives: T2I-CompBench's prefix, or a category word in it."""
    stem = os.path.splitext(os.path.basename(path))[0].lower()
    for prefix, category in DATASET_PREFIXES:
        if stem.startswith(prefix):
            return category
    words = re.split(r"[^a-z0-9]+", stem)
    if "non" in words or "3d" in words:
        return "other"
    found = {NAME_WORDS[w] for w in words if w in NAME_WORDS}
    return found.pop() if len(found) == 1 else "other"


def load_prompts(source=None) -> list:
    """The prompts of `source`: None or "quick" for QUICK_SET, else a prompt file (see ACCEPTED)."""
    if source is None or source == "quick":
        return list(QUICK_SET)
    path = os.fspath(source)
    if not os.path.isfile(path):
        what = "is a folder" if os.path.isdir(path) else "does not exist"
        raise ValueError(f"prompt file {path} {what}. Accepted: {ACCEPTED}.")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except UnicodeDecodeError as e:
        raise ValueError(f"prompt file {path} is not UTF-8 text ({e}). Accepted: {ACCEPTED}.") from None
    category = category_from_name(path)
    prompts = [Prompt(line, category) for line in lines if line]
    if not prompts:
        raise ValueError(f"prompt file {path} holds no prompt (every line is empty). Accepted: {ACCEPTED}.")
    if category == "spatial":
        unparsed = [f"line {n}: {line}" for n, line in enumerate(lines, 1) if line and spatial_relation(line) is None]
        if unparsed:
            raise ValueError(
                f"prompt file {path} is read as spatial (from its name), but {len(unparsed)} prompt(s) name no two "
                f"objects around a relation ({', '.join(SPATIAL_RELATIONS)}), as in 'a dog on the left of a chair': "
                + "; ".join(unparsed[:5]) + (" ..." if len(unparsed) > 5 else "")
                + ". Fix those lines, or rename the file so that its name does not say spatial.")
    return prompts
