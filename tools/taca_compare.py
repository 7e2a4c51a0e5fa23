"""Baseline and TACA side by side, headless: run a shipped workflow through ComfyUI's HTTP API.

    python tools/taca_compare.py --comfyui /path/to/ComfyUI --prompt "a blue cube on a red sphere" --seed 42 --out side_by_side.png

Without --server it starts ComfyUI (the main.py in --comfyui, with --comfyui-args) for the run
and stops it by its PID afterwards; with --server URL it uses a ComfyUI that is already
running. The default workflow is workflows/taca_flux_dev_side_by_side.json: one FLUX.1-dev
loader, the same prompt and seed in two branches, without and with TACA (+ its LoRA), the two
images stitched into one, which the tool labels "Baseline" and "TACA" above each half.
Progress (nodes, sampler steps, images done) goes to stderr. Standard library only, and Pillow
for the labels: run it with ComfyUI's Python (it has Pillow) or any Python 3.10+.
"""

import argparse
import difflib
import io
import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from comfy_http import ComfyClient, ComfyError, server_for  # noqa: E402
from workflow_api import WorkflowError, to_api_prompt  # noqa: E402

PACK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WORKFLOW = os.path.join(PACK, "workflows", "taca_flux_dev_side_by_side.json")
PROMPT_TITLE = "Prompt"
TACA_CLASSES = ("TACA", "TACAAdvanced")
# Options whose value is a string of other options: argparse takes a lone value that starts
# with '-' (--comfyui-args "--cpu") for an option of its own and stops with "expected one argument".
PASS_THROUGH = ("--comfyui-args",)


def joined_pass_through(argv: list) -> list:
    """argv with `--comfyui-args VALUE` written `--comfyui-args=VALUE`, which argparse reads whatever VALUE starts with."""
    joined, i = [], 0
    while i < len(argv):
        if argv[i] in PASS_THROUGH and i + 1 < len(argv):
            joined.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    return joined


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--comfyui", help="ComfyUI folder (with main.py): start a server there for this run")
    where.add_argument("--server", help="URL of a running ComfyUI, e.g. http://127.0.0.1:8188")
    p.add_argument("--prompt", required=True, help="the text prompt, for both branches")
    p.add_argument("--seed", type=int, required=True, help="the noise seed, for both branches")
    p.add_argument("--out", default="side_by_side.png", help="where to write the image (default: %(default)s)")
    p.add_argument("--workflow", default=DEFAULT_WORKFLOW, help="a UI-format workflow (default: the FLUX.1-dev side-by-side one)")
    p.add_argument("--steps", type=int, help="sampling steps (the workflow has 30)")
    p.add_argument("--width", type=int, help="image width (the workflow has 1024)")
    p.add_argument("--height", type=int, help="image height (the workflow has 1024)")
    p.add_argument("--gamma", type=float, help="TACA's gamma (the workflow has the paper's 1.2)")
    p.add_argument("--threshold", type=float, help="TACA's threshold (the workflow has the paper's 970)")
    p.add_argument("--lora", help="the TACA LoRA file in models/loras, as ComfyUI lists it")
    p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="set any input; NODE is a node title or type, e.g. --set UNETLoader.unet_name=flux1-dev-fp8.safetensors")
    p.add_argument("--python", default=sys.executable, help="Python that runs ComfyUI (default: this one)")
    p.add_argument("--comfyui-args", default="", metavar="ARGS",
                   help='extra arguments for ComfyUI\'s main.py, as one string, e.g. --comfyui-args "--cpu" or "--lowvram --preview-method auto"')
    p.add_argument("--no-labels", action="store_true", help='write the stitched image as ComfyUI saved it, without the "Baseline" and "TACA" labels')
    p.add_argument("--port", type=int, default=0, help="port for the started server (default: a free one)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the images (default: %(default)s)")
    return p.parse_args(joined_pass_through(sys.argv[1:] if argv is None else list(argv)))


def nodes_where(prompt: dict, match) -> list:
    return [node for node in prompt.values() if match(node)]


def set_inputs(prompt: dict, match, name: str, value, what: str) -> None:
    hits = [node for node in nodes_where(prompt, match) if name in node["inputs"]]
    if not hits:
        raise WorkflowError(f"the workflow has no {what} to set '{name}' on")
    for node in hits:
        node["inputs"][name] = value


def is_empty_latent(node: dict) -> bool:
    return node["class_type"].startswith("Empty") and "Latent" in node["class_type"]


def node_name(node: dict) -> str:
    title, class_type = node["_meta"]["title"], node["class_type"]
    return f"'{title}'" if title == class_type else f"'{title}' ({class_type})"


def input_names(node: dict, object_info=None) -> list:
    """The inputs a node takes: all of its definition's where /object_info is given, else those in the prompt."""
    node_def = (object_info or {}).get(node["class_type"])
    if node_def is None:
        return list(node["inputs"])
    return [name for section in ("required", "optional") for name in node_def["input"].get(section, {})]


def set_input(prompt: dict, assignment: str, object_info=None) -> None:
    """One --set NODE.INPUT=VALUE; NODE is a node's title or type. Errors name what the workflow has."""
    target, equals, value = assignment.partition("=")
    wanted, dot, name = target.rpartition(".")
    if not (equals and dot and wanted and name):
        raise WorkflowError(f"--set {assignment!r}: write NODE.INPUT=VALUE, e.g. TACA.gamma=1.3")
    try:
        value = json.loads(value)
    except ValueError:
        pass
    nodes = nodes_where(prompt, lambda n: wanted in (n["_meta"]["title"], n["class_type"]))
    if not nodes:
        names = sorted({node_name(n) for n in prompt.values()})
        close = difflib.get_close_matches(wanted, [n["_meta"]["title"] for n in prompt.values()] + [n["class_type"] for n in prompt.values()], 1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise WorkflowError(f"--set {assignment!r}: the workflow has no node titled or of type '{wanted}'.{hint} Its nodes: {', '.join(names)}")
    hits = [n for n in nodes if name in n["inputs"] or name in input_names(n, object_info)]
    if not hits:
        inputs = {node_name(n): input_names(n, object_info) for n in nodes}
        close = difflib.get_close_matches(name, [i for names in inputs.values() for i in names], 1)
        hint = f" Did you mean '{wanted}.{close[0]}'?" if close else ""
        listed = "; ".join(f"{node} takes {', '.join(names)}" for node, names in inputs.items())
        raise WorkflowError(f"--set {assignment!r}: node '{wanted}' has no input '{name}'.{hint} {listed}")
    for node in hits:
        node["inputs"][name] = value


def apply_options(prompt: dict, args, object_info=None) -> dict:
    """The prompt with the command line's prompt text, seed and overrides set; `object_info`
    (the server's node definitions) lets --set name and set inputs the prompt leaves unset."""
    texts = nodes_where(prompt, lambda n: n["_meta"]["title"] == PROMPT_TITLE and "text" in n["inputs"])
    if len(texts) != 1:
        raise WorkflowError(f"the workflow needs exactly one text node titled '{PROMPT_TITLE}'; it has {len(texts)}")
    texts[0]["inputs"]["text"] = args.prompt
    for name in ("seed", "noise_seed"):
        for node in nodes_where(prompt, lambda n: name in n["inputs"]):
            node["inputs"][name] = args.seed
    options = [
        (args.steps, lambda n: True, "steps", "sampler or scheduler"),
        (args.width, is_empty_latent, "width", "empty latent"),
        (args.height, is_empty_latent, "height", "empty latent"),
        (args.gamma, lambda n: n["class_type"] == "TACA", "gamma", "TACA node"),
        (args.threshold, lambda n: n["class_type"] == "TACA", "threshold", "TACA node"),
        (args.lora, lambda n: n["class_type"] == "TACALoraLoader", "lora_name", "TACA LoRA loader"),
    ]
    for value, match, name, what in options:
        if value is not None:
            set_inputs(prompt, match, name, value, what)
    for assignment in args.set:
        set_input(prompt, assignment, object_info)
    return prompt


# --- the labels of the stitched image ---------------------------------------------------------

def upstream(prompt: dict, node_id: str) -> set:
    """The ids of the nodes a node's inputs come from, all the way up."""
    seen, todo = set(), [node_id]
    while todo:
        for value in prompt[todo.pop()]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] in prompt and value[0] not in seen:
                seen.add(value[0])
                todo.append(value[0])
    return seen


def branch_label(prompt: dict, image_link) -> tuple:
    """What an image is, longest first: ("Baseline",) when no TACA node leads to it, else
    ("TACA: gamma 1.2, threshold 970", "TACA")."""
    nodes = [prompt[i] for i in {image_link[0]} | upstream(prompt, image_link[0])]
    taca = [n for n in nodes if n["class_type"] in TACA_CLASSES]
    if not taca:
        return ("Baseline",)
    inputs = taca[0]["inputs"]
    if len(taca) == 1 and taca[0]["class_type"] == "TACA" and not isinstance(inputs["gamma"], list) and not isinstance(inputs["threshold"], list):
        return (f"TACA: gamma {inputs['gamma']:g}, threshold {inputs['threshold']:g}", "TACA")
    return ("TACA",)


def stitch_labels(prompt: dict, save_id: str):
    """For a Save Image fed by an Image Stitch of a baseline and a TACA image: (direction,
    spacing in pixels, labels of the first part, labels of the second part); None otherwise."""
    source = prompt[save_id]["inputs"].get("images")
    if not isinstance(source, list) or prompt.get(source[0], {}).get("class_type") != "ImageStitch":
        return None
    inputs = prompt[source[0]]["inputs"]
    if not isinstance(inputs.get("image2"), list):
        return None
    labels = [branch_label(prompt, inputs[name]) for name in ("image1", "image2")]
    if sorted(label == ("Baseline",) for label in labels) != [False, True]:
        return None  # not one baseline and one TACA image: nothing to tell apart
    spacing = inputs["spacing_width"] + inputs["spacing_width"] % 2  # ImageStitch rounds it up to even
    first, second = labels if inputs["direction"] in ("right", "down") else labels[::-1]
    return inputs["direction"], spacing, first, second


def fitting_label(draw, labels: tuple, width: int, size: int):
    """(text, font): the longest of `labels` that fits `width` at `size` px, else the shortest, smaller."""
    from PIL import ImageFont

    def font_of(px):
        try:
            return ImageFont.load_default(size=px)
        except TypeError:  # Pillow before 10.1: one small bitmap font
            return ImageFont.load_default()

    font = font_of(size)
    for text in labels:
        if draw.textlength(text, font=font) <= width:
            return text, font
    text = labels[-1]
    while size > 6 and draw.textlength(text, font=font) > width:
        size -= 1
        font = font_of(size)
    return text, font


def labeled(png: bytes, direction: str, spacing: int, first: tuple, second: tuple) -> bytes:
    """The stitched image with a white band above each part (one band across both when they
    are side by side) that names the part in black; ComfyUI's PNG metadata kept."""
    from PIL import Image, ImageDraw, PngImagePlugin

    image = Image.open(io.BytesIO(png))
    image.load()
    width, height = image.size
    horizontal = direction in ("left", "right")
    part = ((width - spacing) // 2, height) if horizontal else (width, (height - spacing) // 2)
    band = max(20, round(0.05 * part[1]))
    if horizontal:
        out = Image.new(image.mode, (width, height + band), "white")
        out.paste(image, (0, band))
        boxes = [(0, 0, part[0], band), (part[0] + spacing, 0, width, band)]
    else:
        out = Image.new(image.mode, (width, height + 2 * band), "white")
        out.paste(image.crop((0, 0, width, part[1] + spacing)), (0, band))
        out.paste(image.crop((0, part[1] + spacing, width, height)), (0, 2 * band + part[1] + spacing))
        boxes = [(0, 0, width, band), (0, band + part[1] + spacing, width, 2 * band + part[1] + spacing)]
    draw = ImageDraw.Draw(out)
    for labels, (x0, y0, x1, y1) in zip((first, second), boxes):
        text, font = fitting_label(draw, labels, x1 - x0 - 4, round(0.6 * band))
        draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, fill="black", font=font, anchor="mm")
    metadata = PngImagePlugin.PngInfo()
    for key, value in image.info.items():
        if isinstance(value, str):
            metadata.add_text(key, value)
    buffer = io.BytesIO()
    out.save(buffer, format="PNG", pnginfo=metadata)
    return buffer.getvalue()


class Progress:
    """Prints what ComfyUI reports about a run: nodes as they start, sampler steps, images done."""

    def __init__(self, prompt: dict, stream=sys.stderr):
        self.titles = {node_id: node["_meta"]["title"] for node_id, node in prompt.items()}
        self.decoders = [node_id for node_id, node in prompt.items() if node["class_type"].startswith("VAEDecode")]
        self.done = []
        self.stream = stream
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", file=self.stream, flush=True)

    def image_done(self, node_id: str, how: str = "") -> None:
        if node_id in self.decoders and node_id not in self.done:
            self.done.append(node_id)
            self.say(f"image {len(self.done)}/{len(self.decoders)} done: {self.titles[node_id]}{how}")

    def __call__(self, kind: str, data: dict) -> None:
        if kind == "execution_start":
            self.say("running")
        elif kind == "execution_cached":
            for node_id in data.get("nodes", []):
                self.image_done(node_id, " (cached)")
        elif kind == "executing" and data.get("node") is not None:
            self.say(self.titles.get(data["node"], data["node"]))
        elif kind == "progress":
            self.say(f"  {self.titles.get(data.get('node'), 'sampling')}: step {data['value']}/{data['max']}")
        elif kind == "progress_state":
            for node_id, state in data.get("nodes", {}).items():
                if state.get("state") == "finished":
                    self.image_done(node_id)
        elif kind == "executed":
            for image in (data.get("output") or {}).get("images", []):
                self.say(f"saved {image['filename']} in ComfyUI's {image['type']} folder")


def save_images(client: ComfyClient, entry: dict, prompt: dict, out: str, labels: bool = True) -> list:
    """Download the workflow's saved images: one to `out`, several to out-1, out-2, ...; a
    stitched baseline and TACA image with its labels (unless `labels` is false)."""
    images = [(node_id, image) for node_id, output in entry["outputs"].items() if prompt.get(node_id, {}).get("class_type") == "SaveImage"
              for image in output.get("images", [])]
    if not images:
        raise ComfyError("the run saved no image; does the workflow end in a Save Image node?")
    stem, ext = os.path.splitext(out)
    paths = [out] if len(images) == 1 else [f"{stem}-{i}{ext}" for i in range(1, len(images) + 1)]
    for (node_id, image), path in zip(images, paths):
        data = client.view(image)
        parts = stitch_labels(prompt, node_id) if labels else None
        if parts is not None:
            try:
                data = labeled(data, *parts)
            except ImportError:
                print(f"taca_compare: this Python has no Pillow, so {path} has no labels: {parts[2][-1]!r} is the "
                      f"{'left' if parts[0] in ('left', 'right') else 'top'} image. Run the tool with ComfyUI's Python "
                      "or pip install Pillow.", file=sys.stderr)
        with open(path, "wb") as f:
            f.write(data)
    return paths


def main(argv=None) -> int:
    args = parse_args(argv)
    with open(args.workflow, encoding="utf-8") as f:
        workflow = json.load(f)
    log = os.path.join(os.path.dirname(os.path.abspath(args.out)) or ".", "taca_compare_comfyui.log")
    try:
        with server_for(args.server, args.comfyui, args.port, shlex.split(args.comfyui_args), args.python, log) as server:
            client = ComfyClient(server.url)
            object_info = client.object_info()
            prompt = apply_options(to_api_prompt(workflow, object_info), args, object_info)
            entry = client.run(prompt, on_event=Progress(prompt), timeout=args.timeout)
            for path in save_images(client, entry, prompt, args.out, labels=not args.no_labels):
                print(f"wrote {path}")
        return 0
    except (ComfyError, WorkflowError, OSError) as e:
        print(f"taca_compare: {e}", file=sys.stderr)
        return 1

if __name__ == "__main__":
    sys.exit(main())
