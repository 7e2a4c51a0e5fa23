"""Load through the real server: hundreds of prompts, interrupts inside TACA's window, then the checks.

Opt-in (it runs for tens of minutes on a CPU): TACA_SOAK=1. TACA_SOAK_PROMPTS sets the number
of prompts (default 210).

A ComfyUI server of its own, with the tiny model files (model_files.py, server_family.py)
and one more custom node folder that only this server loads (liveness_node/: weak
references, by HTTP). The prompts go through POST /prompt in blocks of BLOCK, each block one
model, the models in turn: FLUX.1, SD3.5-Medium and FLUX.2 (ComfyUI 0.33; HunyuanVideo on
hosts without FLUX.2, such as 0.3.64). Each prompt is a UI-format graph converted as the
frontend converts it, with the TACA LoRA Loader, TACA or TACA Advanced and the Attention
Balance Probe each on or bypassed (mode 4), γ₀, threshold, schedule, blocks, branches and
LoRA settings varied, and now and then the balance plot. In every block one prompt, with
TACA's window over its whole run, is interrupted (POST /interrupt) once the websocket
reports its first step; the prompt queued after it is kept to be run again on a fresh server.

Afterwards, each a test: every prompt ended as a success or as interrupted; the server still
answers; its resident memory grew by at most 5 % after warm-up; after /free no diffusion
model or LoRA tensor is still referenced; the runs after an interrupt equal the same runs on
a fresh server, bit for bit. The figures go to test-artifacts/soak-<ComfyUI version>.json.
"""

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import psutil
import pytest
import torch

import model_files
import server_family
from comfy_server import ARTIFACTS, SharedComfyUI
from comfy_http import WebSocket
from workflow_api import BYPASSED, combo_options, input_spec, to_api_prompt, widget_inputs

pytestmark = pytest.mark.skipif(
    not os.environ.get("TACA_SOAK"), reason="the load test runs for tens of minutes: set TACA_SOAK=1 to run it",
)

PROMPTS = int(os.environ.get("TACA_SOAK_PROMPTS") or 210)
BLOCK = 7  # prompts queued at once, all for one model
INTERRUPTED_AT = 2  # the block's prompt that is interrupted; the next one is run again on a fresh server
WARM_UP_CYCLES = 2  # cycles through the models before the memory baseline
GC_WAIT = 11.0  # ComfyUI's prompt worker collects garbage 10 s after its last prompt (main.py)
MAX_GROWTH = 0.05
LIVENESS_NODE = Path(__file__).resolve().parent / "liveness_node"
SD3_LATENT = ("EmptySD3LatentImage", {"width": 64, "height": 64, "batch_size": 1})
GAMMAS = (1.2, 1.0, 1.5, 0.8, 2.0, 1.1, 3.0)
THRESHOLDS = (970.0, 500.0, 0.0, 1000.0, 900.0)


@dataclass(frozen=True)
class Model:
    name: str
    loader: tuple  # (node type, widget values); its output 0 is the MODEL
    lora: str
    latent: tuple  # (node type, widget values)
    cfg: float
    guidance: Optional[float] = None  # FluxGuidance, for FLUX.1
    blocks: tuple = ("all", "0", "0-1", "double", "single")  # TACA Advanced's block choices this model has
    steps: int = 3
    interrupt_steps: int = 40  # enough that step 1's progress arrives well before the end


def host_models() -> tuple:
    third = server_family.third_family()
    return (
        Model("FLUX.1", ("UNETLoader", {"unet_name": Path(model_files.FLUX_UNET).name, "weight_dtype": "default"}),
              Path(model_files.FLUX_LORA).name, SD3_LATENT, cfg=1.0, guidance=3.5, blocks=("all", "0", "double"),
              steps=2, interrupt_steps=8),  # one double block
        Model("SD3.5-Medium", ("CheckpointLoaderSimple", {"ckpt_name": Path(model_files.SD35_MEDIUM).name}),
              Path(model_files.SD35_MEDIUM_LORA).name, SD3_LATENT, cfg=3.0, blocks=("all", "0", "0-1", "1")),
        Model(third.name, ("UNETLoader", {"unet_name": third.unet, "weight_dtype": "default"}), third.lora,
              third.latent, cfg=2.0),
    )


# --- prompts ------------------------------------------------------------------------------

class Graph:
    """A UI-format workflow as the frontend saves it, built node by node against /object_info."""

    def __init__(self, object_info: dict):
        self.info, self.nodes, self.links = object_info, [], []

    def add(self, type_: str, widgets: Optional[dict] = None, inputs: Optional[dict] = None, on: bool = True) -> int:
        node_id, node_def, widgets = len(self.nodes) + 1, self.info[type_], widgets or {}
        values = []
        for name, kind, options in widget_inputs(node_def):
            values.append(widgets[name] if name in widgets else default(kind, options, f"{type_}.{name}"))
            if options.get("control_after_generate"):
                values.append("fixed")
        slots = []
        for name, (origin, slot) in (inputs or {}).items():
            kind = input_spec(node_def, name)[0]
            link = [len(self.links) + 1, origin, slot, node_id, len(slots), kind]
            self.links.append(link)
            self.nodes[origin - 1]["outputs"][slot]["links"].append(link[0])
            slots.append({"name": name, "type": kind, "link": link[0]})
        outputs = [{"name": n, "type": t, "links": []} for n, t in zip(node_def["output_name"], node_def["output"])]
        self.nodes.append({"id": node_id, "type": type_, "mode": 0 if on else BYPASSED, "inputs": slots,
                           "outputs": outputs, "widgets_values": values, "properties": {}})
        return node_id

    def api_prompt(self) -> dict:
        return to_api_prompt({"nodes": self.nodes, "links": self.links}, self.info)


def default(kind, options: dict, what: str):
    if "default" in options:
        return options["default"]
    choices = combo_options(kind, options)
    if choices:
        return choices[0]
    raise KeyError(f"no value and no default for {what}")


@dataclass
class Settings:
    """What one prompt runs: the model, which pack nodes are on, and their inputs."""

    model: Model
    seed: int
    steps: int
    advanced: bool = False
    taca: bool = True
    lora: bool = True
    probe: bool = True
    plot: bool = False
    gamma: float = 1.2
    threshold: float = 970.0
    schedule: str = "step (paper)"
    t_end: float = 900.0
    blocks: str = "all"
    apply_to: str = "cond and uncond"
    strength: float = 1.0
    active: str = "with TACA"


SAMPLER = "10"  # node ids of the graph below, the same in every prompt so that ComfyUI caches
SAVE = "11"


def prompt(info: dict, s: Settings, name: str) -> dict:
    g = Graph(info)
    loader = g.add(s.model.loader[0], s.model.loader[1])
    clip = g.add("CLIPLoader", dict(zip(("clip_name", "type", "device"), model_files.SUBSTITUTE[1])))
    positive = g.add("CLIPTextEncode", {"text": "a red cube to the left of a blue sphere"}, {"clip": (clip, 0)})
    negative = g.add("CLIPTextEncode", {"text": ""}, {"clip": (clip, 0)})
    guided = g.add("FluxGuidance", {"guidance": s.model.guidance or 3.5}, {"conditioning": (positive, 0)},
                   on=s.model.guidance is not None)
    lora = g.add("TACALoraLoader", {"lora_name": s.model.lora, "strength": s.strength, "active": s.active},
                 {"model": (loader, 0)}, on=s.lora)
    if s.advanced:
        taca = g.add("TACAAdvanced", {"gamma": s.gamma, "schedule": s.schedule, "t_start": s.threshold,
                                      "t_end": min(s.t_end, s.threshold), "blocks": s.blocks, "apply_to": s.apply_to},
                     {"model": (lora, 0)}, on=s.taca)
    else:
        taca = g.add("TACA", {"gamma": s.gamma, "threshold": s.threshold}, {"model": (lora, 0)}, on=s.taca)
    probe = g.add("TACABalanceProbe", {}, {"model": (taca, 0)}, on=s.probe)
    latent = g.add(s.model.latent[0], s.model.latent[1])
    sampler = g.add("KSampler", {"seed": s.seed, "steps": s.steps, "cfg": s.model.cfg, "sampler_name": "euler",
                                 "scheduler": "simple", "denoise": 1.0},
                    {"model": (probe, 0), "positive": (guided, 0), "negative": (negative, 0), "latent_image": (latent, 0)})
    save = g.add("SaveLatent", {"filename_prefix": f"soak/{name}"}, {"samples": (sampler, 0)})
    assert (str(sampler), str(save)) == (SAMPLER, SAVE)
    if s.plot and s.probe:
        plot = g.add("TACABalancePlot", {"filename_prefix": f"soak/balance_{name}"}, {"balance": (probe, 1), "samples": (sampler, 0)})
        g.add("PreviewImage", {}, {"images": (plot, 0)})
    return g.api_prompt()


def side_by_side(prompts: list) -> dict:
    """One API prompt that runs several: prompt i's node n becomes node 'i.n'."""
    out = {}
    for i, p in enumerate(prompts):
        for node_id, node in p.items():
            inputs = {k: [f"{i}.{v[0]}", v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
            out[f"{i}.{node_id}"] = {**node, "inputs": inputs}
    return out


def soak_settings(models: tuple, n: int) -> list:
    """Prompt i's settings and its role: 'interrupt', 'after interrupt' or ''. Every input the
    pack's nodes take varies on its own period, so the combinations differ from block to block."""
    out = []
    for i in range(n):
        block, at = divmod(i, BLOCK)
        model = models[block % len(models)]
        s = Settings(model, seed=1000 + i, steps=model.steps, advanced=i % 2 == 1, taca=i % 5 != 4, lora=i % 3 != 2,
                     probe=i % 4 != 3, plot=i % 11 == 0, gamma=GAMMAS[i % len(GAMMAS)],
                     threshold=THRESHOLDS[i % len(THRESHOLDS)], schedule=("step (paper)", "linear", "cosine")[i // 2 % 3],
                     t_end=(900.0, 300.0)[i % 2], blocks=model.blocks[block // len(models) % len(model.blocks)],
                     apply_to=("cond and uncond", "cond only")[i // 3 % 2], strength=(1.0, 0.5, 1.5)[i % 3],
                     active=("with TACA", "every step")[i // 4 % 2])
        role = ""
        if at == INTERRUPTED_AT:
            # TACA's window covers the whole run (t ≥ 0), so the interrupt lands inside it.
            s.taca, s.lora, s.probe, s.steps, s.threshold = True, True, True, model.interrupt_steps, 0.0
            s.schedule, s.gamma = "step (paper)", (1.5, 2.0, 1.2)[block % 3]
            role = "interrupt"
        elif at == INTERRUPTED_AT + 1:
            s.taca, s.lora, s.probe, s.threshold = True, True, True, 500.0
            role = "after interrupt"
        out.append((s, role))
    return out


# --- running them -------------------------------------------------------------------------

@dataclass
class Outcome:
    role: str
    model: str
    status: str = ""  # success, interrupted or error
    last_step: int = 0  # the last progress value the websocket reported
    steps: int = 0
    error: str = ""
    latent: Optional[torch.Tensor] = None


def run_block(server, prompts: list, interrupt: set, timeout: float = 1800.0) -> dict:
    """Queue the prompts at once and follow them on the websocket; interrupt those in `interrupt`
    (indices) at their first reported step. {prompt_id: (index, last progress value)}."""
    client = server.client
    ws = WebSocket(server.url.replace("http", "ws", 1) + f"/ws?clientId={client.client_id}", 5.0)
    try:
        ids = [client.queue(p) for p in prompts]
        index = {pid: i for i, pid in enumerate(ids)}
        progress, pending, sent = dict.fromkeys(ids, 0), set(ids), set()
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            try:
                message = ws.recv()
            except socket.timeout:
                pending -= {pid for pid in pending if finished(client.history(pid))}
                continue
            if not isinstance(message, str):
                continue
            event = json.loads(message)
            data, kind = event.get("data", {}), event["type"]
            pid = data.get("prompt_id")
            if pid not in index:
                continue
            if kind == "progress":
                progress[pid] = max(progress[pid], data["value"])
                if index[pid] in interrupt and pid not in sent and data["value"] >= 1:
                    client.post("/interrupt", {"prompt_id": pid})
                    sent.add(pid)
            elif kind in ("execution_success", "execution_interrupted", "execution_error") or (
                    kind == "executing" and data.get("node") is None):
                pending.discard(pid)
        assert not pending, f"{len(pending)} prompts did not finish within {timeout:.0f} s"
        return {pid: (index[pid], progress[pid]) for pid in ids}
    finally:
        ws.close()


def finished(entry) -> bool:
    return bool(entry) and entry.get("status", {}).get("completed") is not None


def outcome_of(client, prompt_id: str) -> tuple:
    """(success | interrupted | error, error text) from the prompt's /history entry."""
    entry = client.history(prompt_id)
    for _ in range(120):  # the history is written just after the last message
        if finished(entry):
            break
        time.sleep(0.25)
        entry = client.history(prompt_id)
    status = entry["status"]
    kinds = [kind for kind, _ in status.get("messages", [])]
    if status.get("status_str") == "success" and status.get("completed"):
        return "success", ""
    errors = [data for kind, data in status.get("messages", []) if kind == "execution_error"]
    if "execution_interrupted" in kinds and not errors:
        return "interrupted", ""
    return "error", "; ".join(f"{e.get('node_type')}: {e.get('exception_message')}" for e in errors) or json.dumps(status)[:500]


def resident(server) -> tuple:
    """(resident bytes, resident bytes once glibc returned its free heap pages, the most resident bytes
    the process ever had), after ComfyUI's own garbage collection. Untrimmed, the figure follows the
    heap's fragmentation (glibc keeps the pages of freed model weights), up or down from run to run;
    the trim cannot hide memory in use. The kernel's high-water mark (VmHWM) is the peak as the
    operating system counted it, trim or no trim: it grows only when the server needs more than ever."""
    time.sleep(GC_WAIT)
    process = psutil.Process(server.process.pid)
    before, peak = process.memory_info().rss, high_water_mark(server.process.pid)
    server.client.post("/taca-test/trim", {})
    return before, process.memory_info().rss, peak


def high_water_mark(pid: int) -> int:
    """The process's peak resident memory in bytes, as Linux keeps it (/proc/<pid>/status, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status: the load test measures memory on Linux")


def with_liveness_node(base: Path) -> None:
    (base / "custom_nodes" / "taca_test_liveness").symlink_to(LIVENESS_NODE)
    server_family.install(server_family.third_family(), base / "models")


@dataclass
class Soak:
    server: SharedComfyUI
    models: tuple
    outcomes: list = field(default_factory=list)
    checks: list = field(default_factory=list)  # (API prompt, latent) of each run after an interrupt
    memory: list = field(default_factory=list)  # (prompts done, resident bytes, after the trim, peak) after each cycle
    per_block: list = field(default_factory=list)  # right after each block: prompts done, resident, file-backed, heap
    seconds: float = 0.0


@pytest.fixture(scope="module")
def soak():
    server = SharedComfyUI(setup=with_liveness_node)
    try:
        models = host_models()
        result = Soak(server, models)
        (ARTIFACTS / f"soak-{server.comfyui_version}.json").unlink(missing_ok=True)  # this run's figures only
        plan = soak_settings(models, PROMPTS)
        cycle = BLOCK * len(models)
        start = time.monotonic()
        for first in range(0, len(plan), BLOCK):
            block = plan[first:first + BLOCK]
            prompts = [prompt(server.object_info, s, f"{first + i:04}") for i, (s, _) in enumerate(block)]
            interrupt = {i for i, (_, role) in enumerate(block) if role == "interrupt"}
            followed = run_block(server, prompts, interrupt)
            for pid, (i, last_step) in followed.items():
                s, role = block[i]
                status, error = outcome_of(server.client, pid)
                outcome = Outcome(role, s.model.name, status, last_step, s.steps, error)
                if role == "after interrupt" and status == "success":
                    outcome.latent = server.latent(server.client.history(pid), SAVE)
                    result.checks.append((prompts[i], outcome.latent))
                result.outcomes.append(outcome)
            info = psutil.Process(server.process.pid).memory_info()
            result.per_block.append((first + BLOCK, info.rss, info.shared, server.client.get("/taca-test/memory")))
            if (first + BLOCK) % cycle == 0:
                result.memory.append((first + BLOCK, *resident(server)))
        result.seconds = time.monotonic() - start
        yield result
    finally:
        server.stop()


def report(soak: Soak, **figures) -> dict:
    """Add figures to test-artifacts/soak-<version>.json, and return them all."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"soak-{soak.server.comfyui_version}.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    table.update(figures, comfyui=soak.server.comfyui_version, models=[m.name for m in soak.models])
    path.write_text(json.dumps(table, indent=1, ensure_ascii=False))
    print(f"soak figures, ComfyUI {soak.server.comfyui_version}: {json.dumps(table, ensure_ascii=False)}")
    return table


# --- afterwards ----------------------------------------------------------------------------

def test_every_prompt_ended_as_success_or_interrupted(soak):
    outcomes = soak.outcomes
    failed = [o for o in outcomes if o.status not in ("success", "interrupted")]
    assert not failed, f"{len(failed)} prompts failed, for example: {failed[0].model}: {failed[0].error}"
    attempts = [o for o in outcomes if o.role == "interrupt"]
    interrupted = [o for o in outcomes if o.status == "interrupted"]
    report(soak, prompts=len(outcomes), interrupted=len(interrupted), seconds=round(soak.seconds),
           per_model={m.name: sum(o.model == m.name for o in outcomes) for m in soak.models},
           interrupted_after_step={m.name: sorted(f"{o.last_step}/{o.steps}" for o in interrupted if o.model == m.name)
                                   for m in soak.models})
    # Only the prompts meant to be were interrupted, each before its last step, so inside the window.
    assert all(o.role == "interrupt" for o in interrupted)
    assert all(o.last_step < o.steps for o in interrupted), [(o.last_step, o.steps) for o in interrupted]
    assert len(interrupted) >= 0.1 * len(outcomes), f"{len(interrupted)} of {len(attempts)} interrupts landed"
    assert {o.model for o in interrupted} == {m.name for m in soak.models}


def test_the_server_still_answers(soak):
    client = soak.server.client
    assert client.get("/system_stats")["system"]["comfyui_version"] == soak.server.comfyui_version
    queue = client.get("/queue")
    assert queue["queue_running"] == [] and queue["queue_pending"] == []


def test_resident_memory_grew_at_most_5_percent_after_warm_up(soak):
    assert len(soak.memory) > WARM_UP_CYCLES, (
        f"too few prompts ({len(soak.outcomes)}) to measure after {WARM_UP_CYCLES} warm-up cycles of {BLOCK * len(soak.models)}")
    _, raw_baseline, baseline, peak_baseline = soak.memory[WARM_UP_CYCLES - 1]
    after = soak.memory[WARM_UP_CYCLES:]
    _, raw_end, end, peak_end = after[-1]
    growth, peak_growth, raw_growth = end / baseline - 1, peak_end / peak_baseline - 1, raw_end / raw_baseline - 1
    mib = lambda b: round(b / 2**20)  # noqa: E731
    report(soak, warm_up_prompts=soak.memory[WARM_UP_CYCLES - 1][0],
           memory_mib=[(n, mib(raw), mib(trimmed), mib(peak)) for n, raw, trimmed, peak in soak.memory],
           memory_growth_percent=round(100 * growth, 2),
           memory_trimmed_peak_growth_percent=round(100 * (max(t for _, _, t, _ in after) / baseline - 1), 2),
           memory_high_water_mark_growth_percent=round(100 * peak_growth, 2),
           memory_growth_untrimmed_percent=round(100 * raw_growth, 2),
           per_block_mib=[(n, mib(r), mib(f), {k: mib(v) for k, v in heap.items()}) for n, r, f, heap in soak.per_block])
    # In use after garbage collection, and the most the server ever held: both within 5 % of warm-up's.
    assert growth <= MAX_GROWTH, f"resident memory grew {100 * growth:.1f} % after warm-up: {soak.memory}"
    assert peak_growth <= MAX_GROWTH, f"peak resident memory grew {100 * peak_growth:.1f} % after warm-up: {soak.memory}"


def test_no_diffusion_model_or_lora_tensor_is_referenced_after_free(soak):
    server = soak.server
    # One prompt that holds every model, each with its LoRA (on every step, so its factors are cast), TACA and the probe.
    chains = [prompt(server.object_info, Settings(m, seed=77, steps=m.steps, active="every step"), f"free_{i}")
              for i, m in enumerate(soak.models)]
    assert server.run(side_by_side(chains))["status"]["status_str"] == "success"
    watched = server.client.post("/taca-test/watch", {})
    # Exactly the prompt's models are alive: none of the soak's earlier prompts left one behind.
    assert watched["diffusion model"] == len(soak.models) and watched["LoRA tensor"] > 0, watched
    server.forget_results()  # ComfyUI's /free (unload_models, free_memory), then a prompt so the worker reads it
    server.run({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1}},
                "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})  # the worker is past the flags
    alive = server.client.get("/taca-test/alive")
    report(soak, watched_after_run=watched, alive_after_free=alive["alive"])
    assert not any(alive["alive"].values()), alive


def test_a_run_after_an_interrupt_equals_the_same_run_on_a_fresh_server(soak):
    assert len(soak.checks) >= len(soak.models), "too few runs after an interrupt to compare"
    fresh = SharedComfyUI(setup=with_liveness_node)
    try:
        for api_prompt, latent in soak.checks:
            again = fresh.latent(fresh.run(api_prompt), SAVE)
            assert torch.equal(again, latent), f"differs by {(again - latent).abs().max()}"
    finally:
        fresh.stop()
    report(soak, runs_after_interrupt_equal_to_fresh_server=len(soak.checks))
