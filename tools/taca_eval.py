"""Measure TACA on your model: baseline and TACA images through ComfyUI, scored as T2I-CompBench scores them.

    python tools/taca_eval.py --comfyui /path/to/ComfyUI --out eval-flux --gamma 1.2,1.3 --threshold 970,950

Three phases, run in order by default (or one at a time: generate, score, report):

  generate  Every prompt x seed x setting through ComfyUI's HTTP API, as tools/taca_compare.py
            runs it: its own server (--comfyui, stopped by its PID afterwards) or --server URL.
            The baseline is the workflow with its TACA nodes and TACA LoRA Loader bypassed; each
            setting of the grid (--gamma x --threshold x --lora x --advanced) runs TACA, with the
            same seeds, so that every image pairs with a baseline image. Images go to OUT/images,
            and a line of OUT/index.jsonl records each one once its file is complete: rerunning
            the command skips what is done, a killed run loses at most the image in flight, and
            a grid with a setting added makes only the new images.
  score     No server: attribute binding (BLIP-VQA) for colour, shape and texture, the spatial rule
            with a zero-shot detector, CLIPScore on every prompt (tools/eval_scorers.py). Scores
            are kept per image and per scorer models in OUT/scores.jsonl; only new images are scored.
  report    The table in the paper's layout (report.md, printed): each setting's mean, its paired
            difference from the baseline with a 95 % bootstrap interval, and the share of pairs
            where it scored higher; report.html, a gallery of every prompt and seed side by side;
            report.png, the score against gamma; every number in report.json and CSV files.

Prompts (--prompts, several allowed): 'quick' (the built-in set of 40, the default), a
T2I-CompBench dataset file such as examples/dataset/color_val.txt (the category from its
name), or a text file with one prompt per line. The workflow (default: the FLUX.1-dev one)
needs a TACA or TACA Advanced node and a text node titled 'Prompt'. The generate phase needs
only the Python standard library; score and report need torch, transformers, Pillow and
matplotlib (ComfyUI's Python has them).
"""

import argparse
import copy
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from comfy_http import ComfyClient, ComfyError, log_tail, server_for  # noqa: E402
from taca_compare import PROMPT_TITLE, apply_options  # noqa: E402
from workflow_api import BYPASSED, WorkflowError, combo_options, input_spec, to_api_prompt, widget_inputs  # noqa: E402

PACK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WORKFLOW = os.path.join(PACK, "workflows", "taca_flux_dev.json")
TACA_TYPES = ("TACA", "TACAAdvanced")
LORA_TYPE = "TACALoraLoader"
THRESHOLD_INPUT = {"TACA": "threshold", "TACAAdvanced": "t_start"}
ADVANCED_OPTIONS = ("schedule", "t_end", "blocks", "apply_to")  # gamma and t_start come from --gamma, --threshold
BASELINE = {"taca": "bypassed"}
PHASES = ("all", "generate", "score", "report")
ACTIVE = 0


class EvalError(RuntimeError):
    """A problem the user can fix; the message says what to do."""


# --- the command line ---------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("phase", nargs="?", choices=PHASES, default="all", help="what to run (default: all three phases in order)")
    p.add_argument("--out", required=True, help="the evaluation's folder: images, index, scores and report; rerun with the same folder to resume")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--comfyui", help="ComfyUI folder (with main.py): start a server there to generate, stop it after")
    where.add_argument("--server", help="URL of a running ComfyUI, e.g. http://127.0.0.1:8188")

    g = p.add_argument_group("what to generate")
    g.add_argument("--prompts", nargs="+", default=["quick"], metavar="SOURCE",
                   help="'quick' (built-in, 40 prompts), T2I-CompBench files such as color_val.txt, or text files with one prompt a line")
    g.add_argument("--limit", type=int, help="take only the first N prompts of each source (a quick look at a 300-prompt file)")
    g.add_argument("--workflow", default=DEFAULT_WORKFLOW,
                   help="a UI-format workflow with a TACA node and a text node titled 'Prompt' (default: the FLUX.1-dev one)")
    g.add_argument("--seeds", type=int, default=1, help="images per prompt and setting, seeds FIRST..FIRST+N-1 (default: %(default)s)")
    g.add_argument("--first-seed", type=int, default=0, help="the first seed (default: %(default)s)")
    g.add_argument("--gamma", help="TACA's γ₀ values, comma-separated, e.g. 1.2,1.3 (default: the workflow's)")
    g.add_argument("--threshold", help="TACA's thresholds (t_start of TACA Advanced), e.g. 970,950 (default: the workflow's)")
    g.add_argument("--lora", help="'on', 'off' or 'on,off': the workflow's TACA LoRA Loader in the settings (default: on where it has one)")
    g.add_argument("--advanced", action="append", default=[], metavar="NAME=VALUE",
                   help="a TACA Advanced option to try (schedule, t_end, blocks, apply_to); repeat a name for more values, e.g. "
                        "--advanced schedule=cosine --advanced 'schedule=step (paper)'. A plain TACA node becomes TACA Advanced")
    g.add_argument("--steps", type=int, help="sampling steps (the workflow's by default)")
    g.add_argument("--width", type=int, help="image width (the workflow's by default)")
    g.add_argument("--height", type=int, help="image height (the workflow's by default)")
    g.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="set any input, as in taca_compare.py, e.g. --set TACALoraLoader.lora_name=taca_flux_r64.safetensors")
    g.add_argument("--python", default=sys.executable, help="Python that runs ComfyUI (default: this one)")
    g.add_argument("--comfyui-args", default="", help='extra arguments for ComfyUI\'s main.py, e.g. "--lowvram"')
    g.add_argument("--port", type=int, default=0, help="port for the started server (default: a free one)")
    g.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for one image (default: %(default)s)")

    s = p.add_argument_group("how to score")
    s.add_argument("--blip", help="BLIP-VQA model: a Hugging Face id or a local folder (default: T2I-CompBench's capfilt-large)")
    s.add_argument("--clip", help="CLIP model for CLIPScore: a Hugging Face id or a local folder")
    s.add_argument("--detector", help="zero-shot detector for the spatial rule (OWLv2 or Grounding DINO): a Hugging Face id or a local folder")
    s.add_argument("--device", help="torch device for scoring (default: cuda when there is one)")
    s.add_argument("--batch-size", type=int, default=8, help="images per scoring batch (default: %(default)s)")

    r = p.add_argument_group("the report")
    r.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the intervals (default: %(default)s)")
    r.add_argument("--html-size", type=int, default=256, help="longest side of the images in report.html, in pixels (default: %(default)s)")
    r.add_argument("--gallery", type=int, default=500,
                   help="most prompt-and-seed rows in report.html; beyond it, those whose scores moved most (default: %(default)s)")
    args = p.parse_args(argv)
    if args.phase in ("all", "generate") and not (args.comfyui or args.server):
        p.error(f"the {args.phase} phase needs --comfyui PATH (start a ComfyUI) or --server URL (use a running one)")
    if args.seeds < 1:
        p.error("--seeds takes 1 or more")
    return args


def number_list(text, what: str) -> list:
    """'1.2,1.3' as [1.2, 1.3]: the values of one grid axis."""
    values = []
    for part in text.split(","):
        try:
            values.append(float(part))
        except ValueError:
            raise EvalError(f"--{what} {text!r}: give numbers separated by commas, e.g. --{what} {'1.2,1.3' if what == 'gamma' else '970,950'}") from None
    return sorted(set(values), key=values.index)


def lora_list(text) -> list:
    values = [part.strip() for part in text.split(",")]
    if not values or any(v not in ("on", "off") for v in values):
        raise EvalError(f"--lora {text!r}: give 'on', 'off' or 'on,off'")
    return sorted(set(values), key=values.index)


def advanced_axes(assignments) -> dict:
    """--advanced NAME=VALUE flags as {name: [values]}, values in the order given."""
    axes = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        name = name.strip()
        if not equals or name not in ADVANCED_OPTIONS:
            raise EvalError(f"--advanced {assignment!r}: write NAME=VALUE with NAME one of {', '.join(ADVANCED_OPTIONS)} "
                            "(γ₀ and the threshold have --gamma and --threshold)")
        try:
            value = json.loads(value)
        except ValueError:
            pass
        if value not in axes.setdefault(name, []):
            axes[name].append(value)
    return axes


# --- settings and keys --------------------------------------------------------------------

def grid(gammas, thresholds, loras, advanced) -> list:
    """The TACA settings to compare with the baseline: every combination of the axes."""
    settings = [{}]
    for name, values in (("gamma", gammas), ("threshold", thresholds), ("lora", loras)):
        if values:
            settings = [{**s, name: v} for s in settings for v in values]
    for name, values in advanced.items():
        settings = [{**s, "advanced": {**s.get("advanced", {}), name: v}} for s in settings for v in values]
    return settings


def is_baseline(setting: dict) -> bool:
    return setting == BASELINE


def setting_label(setting: dict) -> str:
    if is_baseline(setting):
        return "baseline (TACA bypassed)"
    parts = [f"γ₀ {setting['gamma']:g}", f"threshold {setting['threshold']:g}"]
    if "lora" in setting:
        parts.append(f"LoRA {setting['lora']}")
    parts += [f"{name} {value}" for name, value in sorted(setting.get("advanced", {}).items())]
    return ", ".join(parts)


def canonical(data) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def workflow_hash(prompt: dict) -> str:
    """The identity of an API-format prompt (with --set applied): the same hash, the same images."""
    return hashlib.sha256(canonical(prompt).encode()).hexdigest()[:16]


def image_key(workflow: str, text: str, seed: int, setting: dict) -> str:
    """One image's key: its workflow's hash, prompt text, seed and setting."""
    return hashlib.sha256(canonical([workflow, text, seed, setting]).encode()).hexdigest()[:24]


def plan_jobs(plan: dict) -> list:
    """Every image of a plan, in the order they are made: seed, then prompt, then setting (baseline first).
    Each is (key, prompt text, category, seed, setting index)."""
    return [(image_key(plan["workflow"], text, seed, setting), text, category, seed, i)
            for seed in plan["seeds"] for text, category in plan["prompts"] for i, setting in enumerate(plan["settings"])]


# --- the evaluation folder -----------------------------------------------------------------

class Store:
    """OUT/: images/<key>.png, index.jsonl (one line per finished image, append-only), scores.jsonl
    (one line per scored image and scorer), scorers.json, plan.json (the latest generate's grid)."""

    def __init__(self, out: str):
        self.out = out
        self.images = os.path.join(out, "images")
        self.index_path = os.path.join(out, "index.jsonl")
        self.scores_path = os.path.join(out, "scores.jsonl")
        self.scorers_path = os.path.join(out, "scorers.json")
        self.plan_path = os.path.join(out, "plan.json")
        self.locks = {}

    def hold(self, phase: str) -> None:
        """Make the folder and hold the phase's lock: one generate and one score at a time, each beside the
        other (a report of what is there can run any time). Generating first drops the files a killed run
        left half-written."""
        os.makedirs(self.images, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            fcntl = None
        if fcntl is not None and phase not in self.locks:
            lock = open(os.path.join(self.out, f".{phase}.lock"), "a+")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                raise EvalError(f"another taca_eval {phase} is running on {self.out}; wait for it to finish or use another --out") from None
            self.locks[phase] = lock
        if phase == "generate":
            for name in os.listdir(self.images):
                if name.endswith(".partial"):
                    os.remove(os.path.join(self.images, name))

    def close(self) -> None:
        for lock in self.locks.values():
            lock.close()
        self.locks = {}

    def image_path(self, key: str) -> str:
        return os.path.join(self.images, f"{key}.png")

    def index(self) -> dict:
        """{key: record} of the finished images whose file is there; a later line wins."""
        return {r["key"]: r for r in read_jsonl(self.index_path) if os.path.isfile(self.image_path(r["key"]))}

    def add_image(self, record: dict, png: bytes) -> None:
        """The image file first, complete under its final name, then its index line."""
        path = self.image_path(record["key"])
        write_atomically(path, png)
        append_jsonl(self.index_path, [record])

    def scores(self, scorer: str) -> dict:
        """{image key: scores} from the scorer models named `scorer`."""
        return {r["key"]: r["scores"] for r in read_jsonl(self.scores_path) if r.get("scorer") == scorer}

    def add_scores(self, scorer: str, described: dict, scored: dict) -> None:
        known = self.scorers()
        if scorer not in known:
            known[scorer] = described
            write_atomically(self.scorers_path, json.dumps(known, indent=1, ensure_ascii=False).encode())
        append_jsonl(self.scores_path, [{"key": key, "scorer": scorer, "scores": scores} for key, scores in scored.items()])

    def scorers(self) -> dict:
        if not os.path.isfile(self.scorers_path):
            return {}
        with open(self.scorers_path, encoding="utf-8") as f:
            return json.load(f)

    def save_plan(self, plan: dict) -> None:
        write_atomically(self.plan_path, json.dumps(plan, indent=1, ensure_ascii=False).encode())

    def plan(self) -> dict:
        if not os.path.isfile(self.plan_path):
            raise EvalError(f"{self.out} has no plan.json: run the generate phase into it first")
        with open(self.plan_path, encoding="utf-8") as f:
            return json.load(f)


def write_atomically(path: str, data: bytes) -> None:
    partial = path + ".partial"
    with open(partial, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def append_jsonl(path: str, records: list) -> None:
    """Whole lines in one write, so a killed writer leaves at most a torn last line, which readers skip."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.lseek(fd, 0, os.SEEK_END) > 0:
            with open(path, "rb") as f:  # a torn last line from a killed writer: end it, so ours stays whole
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str) -> list:
    if not os.path.isfile(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line torn by a killed writer
    return records


# --- the workflow --------------------------------------------------------------------------

def load_workflow(path: str) -> dict:
    """A UI-format workflow, checked for what the evaluation needs before any server starts."""
    try:
        with open(path, encoding="utf-8") as f:
            workflow = json.load(f)
    except (OSError, ValueError) as e:
        raise EvalError(f"cannot read the workflow {path}: {e}") from None
    if not isinstance(workflow, dict) or "nodes" not in workflow:
        raise EvalError(f"{path} is not a UI-format ComfyUI workflow (File → Save in ComfyUI writes one)")
    types = {node["type"] for node in workflow["nodes"]}
    if not types & set(TACA_TYPES):
        raise EvalError(f"{path} has no TACA node (TACA or TACA Advanced). Add one between the model loader and the "
                        "sampler: the evaluation compares the workflow with it bypassed (the baseline) and with each setting.")
    if not any(node.get("title") == PROMPT_TITLE for node in workflow["nodes"]):
        raise EvalError(f"{path} has no node titled '{PROMPT_TITLE}'. Give the text node that holds the prompt that title "
                        "(right-click it → Title): the evaluation writes each prompt into it.")
    return workflow


def with_modes(workflow: dict, setting: dict) -> dict:
    """The UI workflow with TACA and its LoRA loader bypassed or active, as the setting wants."""
    workflow = copy.deepcopy(workflow)
    for node in workflow["nodes"]:
        if node["type"] in TACA_TYPES:
            node["mode"] = BYPASSED if is_baseline(setting) else ACTIVE
        elif node["type"] == LORA_TYPE:
            node["mode"] = BYPASSED if is_baseline(setting) or setting.get("lora") == "off" else ACTIVE
    return workflow


def filled(prompt: dict, args, text: str, seed: int, every_set: bool = True) -> dict:
    """The API prompt with the prompt text, seed, size, steps and --set applied (taca_compare's rules).
    With every_set False, a --set whose node the prompt lacks (bypassed in this setting) is left out."""
    assignments = args.set if every_set else [a for a in args.set if names_node_in(a, prompt)]
    options = SimpleNamespace(prompt=text, seed=seed, steps=args.steps, width=args.width, height=args.height,
                              gamma=None, threshold=None, lora=None, set=assignments)
    return apply_options(prompt, options)


def names_node_in(assignment: str, prompt: dict) -> bool:
    node_name = assignment.partition("=")[0].rpartition(".")[0]
    return any(node_name in (node["_meta"]["title"], node["class_type"]) for node in prompt.values())


def taca_nodes(prompt: dict) -> list:
    return [node for node in prompt.values() if node["class_type"] in TACA_TYPES]


def workflow_value(prompt: dict, what: str) -> float:
    """γ₀ or the threshold as the workflow (after --set) has it on its TACA nodes."""
    values = {node["inputs"][what if what == "gamma" else THRESHOLD_INPUT[node["class_type"]]] for node in taca_nodes(prompt)}
    if len(values) != 1:
        raise EvalError(f"the workflow's TACA nodes have different {what} values {sorted(values)}: give --{what}")
    return float(values.pop())


def input_defaults(node_def: dict) -> dict:
    """A node type's widget inputs with their defaults (a combo's first choice where it names none)."""
    defaults = {}
    for name, type_, options in widget_inputs(node_def):
        choices = combo_options(type_, options)
        defaults[name] = options.get("default", choices[0] if choices else None)
    return defaults


def check_advanced(axes: dict, object_info: dict) -> None:
    node_def = object_info.get("TACAAdvanced")
    if axes and node_def is None:
        raise EvalError("--advanced needs the TACA Advanced node, which this ComfyUI's TACA pack lacks: update the pack")
    for name, values in axes.items():
        type_, options = input_spec(node_def, name)
        choices = combo_options(type_, options)
        if type_ == "STRING":
            values[:] = [str(v) for v in values]  # blocks=0 is the string '0'
        for value in values:
            if choices and value not in choices:
                raise EvalError(f"--advanced {name}={value}: TACA Advanced's {name} takes one of {', '.join(map(repr, choices))}")
            if type_ in ("FLOAT", "INT") and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise EvalError(f"--advanced {name}={value}: {name} takes a number")


def apply_setting(prompt: dict, setting: dict, object_info: dict) -> dict:
    """TACA's inputs set to one setting; a TACA node becomes TACA Advanced where the setting has Advanced options."""
    for node in taca_nodes(prompt):
        inputs = node["inputs"]
        if setting.get("advanced") and node["class_type"] == "TACA":
            inputs = {**input_defaults(object_info["TACAAdvanced"]), "model": inputs["model"]}
            node["class_type"], node["inputs"] = "TACAAdvanced", inputs
        inputs["gamma"] = setting["gamma"]
        inputs[THRESHOLD_INPUT[node["class_type"]]] = setting["threshold"]
        inputs.update(setting.get("advanced", {}))
    return prompt


def image_output(prompt: dict) -> str:
    """The id of the node whose image is scored; every Save Image becomes a Preview Image (ComfyUI's temp
    folder), so an evaluation fills no output folder."""
    savers = [i for i, node in prompt.items() if node["class_type"] in ("SaveImage", "PreviewImage")]
    decoded = [i for i in savers if isinstance(prompt[i]["inputs"].get("images"), list)
               and prompt.get(prompt[i]["inputs"]["images"][0], {}).get("class_type", "").startswith("VAEDecode")]
    chosen = savers if len(savers) == 1 else decoded
    if len(chosen) != 1:
        raise EvalError(f"the workflow saves {len(savers)} images ({len(decoded)} straight from a VAE Decode); the evaluation "
                        "scores one image per run: bypass the other Save Image nodes")
    for i in savers:
        prompt[i] = {"class_type": "PreviewImage", "inputs": {"images": prompt[i]["inputs"]["images"]}, "_meta": prompt[i]["_meta"]}
    return chosen[0]


class Generator:
    """Builds each job's API prompt from the workflow, and makes its image through a ComfyUI server."""

    def __init__(self, workflow: dict, client: ComfyClient, args):
        self.workflow, self.client, self.args = workflow, client, args
        self.object_info = client.object_info()
        self.has_lora = any(node["type"] == LORA_TYPE for node in workflow["nodes"])
        try:
            reference = filled(to_api_prompt(with_modes(workflow, {}), self.object_info), args, "", 0)
        except WorkflowError as e:
            raise EvalError(f"{args.workflow}: {e}") from None
        self.reference = reference
        self.hash = workflow_hash(reference)
        self.api = {}

    def settings(self) -> list:
        args = self.args
        if args.lora and not self.has_lora:
            raise EvalError(f"--lora {args.lora}: {args.workflow} has no TACA LoRA Loader; leave --lora out or add the loader")
        axes = advanced_axes(args.advanced)
        check_advanced(axes, self.object_info)
        gammas = number_list(args.gamma, "gamma") if args.gamma else [workflow_value(self.reference, "gamma")]
        thresholds = number_list(args.threshold, "threshold") if args.threshold else [workflow_value(self.reference, "threshold")]
        loras = lora_list(args.lora) if args.lora else (["on"] if self.has_lora else [])
        return [BASELINE] + grid(gammas, thresholds, loras, axes)

    def prompt(self, text: str, seed: int, setting: dict) -> tuple:
        """(API prompt, id of the node whose image is kept)."""
        key = canonical(setting)
        if key not in self.api:
            self.api[key] = to_api_prompt(with_modes(self.workflow, setting), self.object_info)
        prompt = filled(copy.deepcopy(self.api[key]), self.args, text, seed, every_set=False)  # checked on the reference
        if not is_baseline(setting):
            apply_setting(prompt, setting, self.object_info)
        return prompt, image_output(prompt)

    def make(self, text: str, seed: int, setting: dict) -> bytes:
        prompt, output = self.prompt(text, seed, setting)
        entry = self.client.run(prompt, timeout=self.args.timeout)
        images = entry["outputs"].get(output, {}).get("images", [])
        if len(images) != 1:
            raise EvalError(f"the run gave {len(images)} images where the evaluation takes one: set the latent's batch size to 1")
        return self.client.view(images[0])


# --- progress ------------------------------------------------------------------------------

def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02}:{seconds % 60:02}"


class Progress:
    """A progress line per image: images done of the plan, a bar, the rate and the ETA. The first image
    loads the models, so the rate and the estimate of the total time come from the images after it."""

    def __init__(self, total: int, done: int, todo: int, stream=sys.stderr, earlier=None, width: int = 24):
        self.total, self.done, self.todo = total, done, todo
        self.stream, self.width = stream, width
        self.times = []
        self.start = time.monotonic()
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.say(f"{total} images in the plan: {done} done before, {todo} to make")
        if earlier and todo:
            per = statistics.median(earlier)
            self.say(f"earlier images of this workflow took {per:.1f} s each (median of {len(earlier)}): "
                     f"about {duration(per * todo)} for the {todo} to make")

    def say(self, text: str) -> None:
        print(("\n" if self.tty and self.times else "") + text, file=self.stream, flush=True)

    def rate(self):
        """Seconds per image, from the images after the first; None until there are some."""
        if len(self.times) < 2:
            return None
        return (self.times[-1] - self.times[0]) / (len(self.times) - 1)

    def image_done(self, what: str) -> None:
        self.times.append(time.monotonic())
        self.done += 1
        made = len(self.times)
        per = self.rate()
        if made == 2 or (made == 1 and self.todo == 1):
            first = self.times[0] - self.start
            if per is None:
                self.say(f"the image took {first:.1f} s")
            else:
                self.say(f"estimate: the first image took {first:.1f} s (loading the models), the next {per:.1f} s: "
                         f"about {duration(first + per * (self.todo - 1))} for all {self.todo}")
        filled_ = int(self.width * self.done / max(self.total, 1))
        bar = "█" * filled_ + "░" * (self.width - filled_)
        timing = f"{per:.1f} s/image, ETA {duration(per * (self.todo - made))}" if per else "rate after the next image"
        line = f"[{self.done:>{len(str(self.total))}}/{self.total}] {bar} {100 * self.done / max(self.total, 1):3.0f}%  {timing}  {what}"
        if self.tty:
            columns = shutil.get_terminal_size().columns - 1
            print("\r" + line[:columns].ljust(columns), end="" if made < self.todo else "\n", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)


# --- the phases ----------------------------------------------------------------------------

def load_prompt_list(sources, limit=None) -> list:
    """[(text, category)] from every source, in order, without repeats."""
    from eval_prompts import load_prompts

    prompts = []
    for source in sources:
        if source in PHASES and not os.path.exists(source):
            raise EvalError(f"--prompts {source}: no such file. Name the phase first: taca_eval.py {source} --prompts ...")
        try:
            loaded = load_prompts(None if source == "quick" else source)
        except (OSError, ValueError) as e:
            raise EvalError(f"--prompts {source}: {e}") from None
        if not loaded:
            raise EvalError(f"--prompts {source}: no prompts in it; give a file with one prompt per line")
        for prompt in loaded[:limit]:
            if (prompt.text, prompt.category) not in prompts:
                prompts.append((prompt.text, prompt.category))
    return prompts


def generate(args, store: Store, workflow: dict, prompts: list) -> dict:
    """Make every image of the plan that the folder lacks; the plan."""
    log = os.path.join(os.path.abspath(args.out), "comfyui.log")
    with server_for(args.server, args.comfyui, args.port, shlex.split(args.comfyui_args), args.python, log) as server:
        client = ComfyClient(server.url)
        generator = Generator(workflow, client, args)
        plan = {
            "workflow": generator.hash, "workflow_file": os.path.abspath(args.workflow),
            "comfyui": client.get("/system_stats").get("system", {}).get("comfyui_version"),
            "prompts": prompts, "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
            "settings": generator.settings(),
        }
        store.save_plan(plan)
        write_atomically(os.path.join(args.out, f"workflow-{generator.hash}.json"),
                         json.dumps(generator.reference, indent=1, ensure_ascii=False).encode())
        index = store.index()
        jobs = plan_jobs(plan)
        todo = [job for job in jobs if job[0] not in index]
        earlier = [r["seconds"] for r in index.values() if r.get("workflow") == plan["workflow"] and "seconds" in r]
        progress = Progress(len(jobs), len(jobs) - len(todo), len(todo), earlier=earlier)
        for key, text, category, seed, i in todo:
            setting = plan["settings"][i]
            started = time.monotonic()
            try:
                png = generator.make(text, seed, setting)
            except (ComfyError, OSError) as e:
                died = ""
                if server.process is not None:
                    try:  # a server that died: its exit code and the end of its log say why
                        server.process.wait(timeout=5 if isinstance(e, OSError) else 0.1)
                        died = f" ComfyUI (pid {server.process.pid}) exited with code {server.process.returncode}{log_tail(log)}"
                    except subprocess.TimeoutExpired:
                        pass
                what = f"lost the connection to ComfyUI at {server.url} ({e})" if isinstance(e, OSError) else str(e).rstrip(".")
                raise EvalError(f"{what}.{died}\n{progress.done} of {len(jobs)} images are done and kept in {args.out}; "
                                "run the same command again to make the rest") from None
            store.add_image({"key": key, "workflow": plan["workflow"], "prompt": text, "category": category, "seed": seed,
                             "setting": setting, "seconds": round(time.monotonic() - started, 3),
                             "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}, png)
            progress.image_done(f"{setting_label(setting)} · seed {seed} · {text[:60]}")
        return plan


def scorer_id(described: dict) -> str:
    return hashlib.sha256(canonical(described).encode()).hexdigest()[:12]


def score(args, store: Store, plan: dict) -> str:
    """Score the plan's images that the scorer models have not scored yet; the scorers' id."""
    try:
        from eval_prompts import Prompt
        from eval_scorers import Scorers, ScorerLoadError
        from PIL import Image
    except ImportError as e:
        raise EvalError(f"scoring needs torch, transformers and Pillow ({e}): run it with ComfyUI's Python, e.g. "
                        f"'python tools/taca_eval.py score --out {args.out}'") from None

    chosen = {name: getattr(args, name) for name in ("blip", "clip", "detector") if getattr(args, name)}
    scorers = Scorers(**chosen, device=args.device, batch_size=args.batch_size)
    described = scorers.describe()
    sid = scorer_id(described)
    index, done = store.index(), store.scores(sid)
    todo = [job for job in plan_jobs(plan) if job[0] in index and job[0] not in done]
    models = ", ".join(f"{name} {described[name].get('model') or described[name].get('detector')}"
                       for name in ("attribute", "spatial", "clip") if isinstance(described.get(name), dict))
    print(f"scoring {len(todo)} images ({len(done)} scored before) on {described.get('device')}: {models}", file=sys.stderr, flush=True)
    chunk = max(args.batch_size, 1) * 4
    started = time.monotonic()
    for at in range(0, len(todo), chunk):
        part = todo[at:at + chunk]
        items = []
        for key, text, category, _, _ in part:
            with Image.open(store.image_path(key)) as image:
                items.append((image.convert("RGB"), Prompt(text, category)))
        try:
            results = scorers.score(items)  # the models load on first use
        except ScorerLoadError as e:  # the scores of earlier chunks are kept
            raise EvalError(f"could not load the scorer models: {e}\nThe images are kept in {args.out}; once the model "
                            f"is there, run 'taca_eval.py score --out {args.out}' with the same options.") from None
        store.add_scores(sid, described, {job[0]: result for job, result in zip(part, results)})
        n = at + len(part)
        per = (time.monotonic() - started) / n
        print(f"scored {n}/{len(todo)}  {per:.2f} s/image, ETA {duration(per * (len(todo) - n))}", file=sys.stderr, flush=True)
    return sid


def report(args, store: Store, plan: dict, sid=None) -> int:
    import eval_report

    scorers = store.scorers()
    if sid is None:  # the report phase alone: the scores of the scorer models used last
        lines = read_jsonl(store.scores_path)
        sid = lines[-1]["scorer"] if lines else None
    index, scores = store.index(), store.scores(sid) if sid else {}
    rows = [{"key": key, "prompt": text, "category": category, "seed": seed, "setting": i,
             "file": os.path.relpath(store.image_path(key), store.out) if key in index else None, "scores": scores.get(key)}
            for key, text, category, seed, i in plan_jobs(plan)]
    meta = {"workflow": plan["workflow"], "workflow_file": plan.get("workflow_file"), "comfyui": plan.get("comfyui"),
            "seeds": plan["seeds"], "scorers": scorers.get(sid, {}), "bootstrap": args.bootstrap}
    written = eval_report.write_report(store.out, plan["settings"], [setting_label(s) for s in plan["settings"]],
                                       rows, meta, n_boot=args.bootstrap, html_size=args.html_size, gallery=args.gallery)
    print(written["markdown"])
    for path in written["files"].values():
        print(f"wrote {path}", file=sys.stderr)
    for problem in written["problems"]:
        print(f"taca_eval: {problem}", file=sys.stderr)
    return 1 if written["problems"] else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    store = Store(args.out)
    try:
        if args.phase in ("all", "generate"):
            workflow = load_workflow(args.workflow)
            prompts = load_prompt_list(args.prompts, args.limit)
            store.hold("generate")
            plan = generate(args, store, workflow, prompts)
        else:
            plan = store.plan()
        if args.phase == "generate":
            return 0
        if args.phase in ("all", "score"):
            store.hold("score")
            sid = score(args, store, plan)
        else:
            sid = None
        if args.phase == "score":
            return 0
        return report(args, store, plan, sid)
    except (EvalError, ComfyError, WorkflowError, OSError) as e:
        print(f"taca_eval: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ntaca_eval: interrupted; what is done is kept in {args.out}: run the same command again to go on", file=sys.stderr)
        return 130
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
