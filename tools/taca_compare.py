"""Baseline and TACA side by side, headless: run a shipped workflow through ComfyUI's HTTP API.

    python tools/taca_compare.py --comfyui /path/to/ComfyUI --prompt "a blue cube on a red sphere" --seed 42 --out side_by_side.png

Without --server it starts ComfyUI (the main.py in --comfyui, with --comfyui-args) for the run
and stops it by its PID afterwards; with --server URL it uses a ComfyUI that is already
running. The default workflow is workflows/taca_flux_dev_side_by_side.json: one FLUX.1-dev
loader, the same prompt and seed in two branches, without and with TACA (+ its LoRA), the two
images stitched into one. Progress (nodes, sampler steps, images done) goes to stderr.
Standard library only: run it with ComfyUI's Python or any Python 3.10+.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from comfy_http import ComfyClient, ComfyError, start_server, stop_server  # noqa: E402
from workflow_api import WorkflowError, to_api_prompt  # noqa: E402

PACK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WORKFLOW = os.path.join(PACK, "workflows", "taca_flux_dev_side_by_side.json")
PROMPT_TITLE = "Prompt"


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
    p.add_argument("--comfyui-args", default="", help='extra arguments for ComfyUI\'s main.py, e.g. "--cpu" or "--lowvram"')
    p.add_argument("--port", type=int, default=0, help="port for the started server (default: a free one)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the images (default: %(default)s)")
    return p.parse_args(argv)


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


def apply_options(prompt: dict, args) -> dict:
    """The prompt with the command line's prompt text, seed and overrides set."""
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
        target, equals, value = assignment.partition("=")
        node_name, dot, name = target.rpartition(".")
        if not (equals and dot and node_name and name):
            raise WorkflowError(f"--set {assignment!r}: write NODE.INPUT=VALUE")
        try:
            value = json.loads(value)
        except ValueError:
            pass
        set_inputs(prompt, lambda n: node_name in (n["_meta"]["title"], n["class_type"]), name, value, f"node '{node_name}'")
    return prompt


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


def save_images(client: ComfyClient, entry: dict, prompt: dict, out: str) -> list:
    """Download the workflow's saved images: one to `out`, several to out-1, out-2, ..."""
    images = [image for node_id, output in entry["outputs"].items() if prompt.get(node_id, {}).get("class_type") == "SaveImage"
              for image in output.get("images", [])]
    if not images:
        raise ComfyError("the run saved no image; does the workflow end in a Save Image node?")
    stem, ext = os.path.splitext(out)
    paths = [out] if len(images) == 1 else [f"{stem}-{i}{ext}" for i in range(1, len(images) + 1)]
    for image, path in zip(images, paths):
        with open(path, "wb") as f:
            f.write(client.view(image))
    return paths


def main(argv=None) -> int:
    args = parse_args(argv)
    with open(args.workflow, encoding="utf-8") as f:
        workflow = json.load(f)
    process = None
    try:
        if args.server:
            url = args.server
            ComfyClient(url).wait_until_ready(10)
        else:
            log = os.path.join(os.path.dirname(os.path.abspath(args.out)) or ".", "taca_compare_comfyui.log")
            print(f"starting ComfyUI in {args.comfyui} (log: {log})", file=sys.stderr, flush=True)
            process, url = start_server(args.comfyui, args.port, args.comfyui_args.split(), args.python, log)
            print(f"started ComfyUI (pid {process.pid}) at {url}", file=sys.stderr, flush=True)
        client = ComfyClient(url)
        prompt = apply_options(to_api_prompt(workflow, client.object_info()), args)
        entry = client.run(prompt, on_event=Progress(prompt), timeout=args.timeout)
        for path in save_images(client, entry, prompt, args.out):
            print(f"wrote {path}")
        return 0
    except (ComfyError, WorkflowError, OSError) as e:
        print(f"taca_compare: {e}", file=sys.stderr)
        return 1
    finally:
        if process is not None:
            stop_server(process)
            print(f"stopped ComfyUI (pid {process.pid})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
